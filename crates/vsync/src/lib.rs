//! `syncbase-vsync`: the sync engine (mirrors Go `services/syncbase/vsync`): generation vectors,
//! the per-object version DAG, the initiator and responder of GetDeltas, the watcher that turns
//! the watch log into sync log records, conflict resolution, syncgroups and blobs.
//!
//! Its protocol core does no I/O and reads no clock directly (time and randomness come through
//! the `Clock` and `Rng` seams), so the simulator can drive it.
//!
//! Parts: [`dag`] (with the Go DAG replay scenarios as data files in `testdata/dag/`),
//! [`knowledge`], [`watcher`], [`responder`], [`initiator`], [`conflict`], [`syncgroup`], and
//! [`service`], the state machine a driver runs (events in, messages out), with [`service::DataModel`],
//! the trait the data model implements for sync. [`mutant`] holds the simulator's planted bugs
//! (feature `mutants`). Blobs come with a later issue. It depends only on `syncbase-store`,
//! `syncbase-util` and the error codes.

pub mod conflict;
pub mod dag;
mod error;
pub mod initiator;
pub mod knowledge;
pub mod mutant;
pub mod responder;
pub mod service;
pub mod syncgroup;
pub mod watcher;

pub use error::{Error, Result};
