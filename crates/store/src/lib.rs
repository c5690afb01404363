//! `syncbase-store`: the storage layer of Syncbase (mirrors Go `services/syncbase/store`).
//!
//! Key types: the [`Store`], [`Snapshot`], [`Transaction`] and [`Stream`] model; the
//! [`Engine`] trait an embedded storage engine implements; [`TxnStore`], which turns any engine
//! into a store with optimistic transactions and group commit (written once, shared by every
//! engine); [`MemStore`], the in-memory engine; [`StoreSet`], named stores sharing one engine instance
//! (the service store and one per database); and [`Watchable`], the layer that versions managed
//! keys and appends every commit touching them to a watch log in the same atomic commit. The
//! [`Clock`] and [`Rng`] seams live here because the watchable layer is the lowest code that needs
//! a timestamp or a random id.
//!
//! This crate knows nothing about rows, sync or async runtimes, and depends on no other
//! `syncbase-*` crate. With the `testing` feature it exports the conformance suite every engine
//! runs ([`testing`]).

mod engine;
mod error;
mod memstore;
mod model;
mod seams;
mod set;
mod txn;
pub mod watchable;

#[cfg(feature = "testing")]
pub mod testing;

pub use engine::{Durability, Engine, EngineSnapshot, scan_bounds, take_chunk};
pub use error::{Error, Result};
pub use memstore::{MemEngine, MemStore, open_memstore};
pub use model::{
    CommitHook, KeyValue, Snapshot, Store, StoreReader, StoreWriter, Stream, StreamCanceler,
    TRANSACTION_ATTEMPTS_DEFAULT, Transaction, WriteOp, prefix_limit, run_in_transaction,
    visit_at_most,
};
pub use seams::{Clock, EntropyRng, ManualClock, Rng, SeededRng, SystemClock};
pub use set::{MemStoreSet, StoreSet, validate_store_name};
pub use txn::{CommitStats, TxnStore};
pub use watchable::{
    Head, LogEntry, LogEvent, LogNotifier, LogOp, Origin, PruneOutcome, Pruner, Retention, Stored,
    StoredVersion, Version, VersionHolder, Watchable, WatchableOptions, WatchableSnapshot,
    WatchableTransaction,
};
