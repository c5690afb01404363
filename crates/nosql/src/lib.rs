//! `syncbase-nosql`: the data model of Syncbase (mirrors Go `server/nosql` and the service parts
//! of `server/service.go`): a [`Service`] holds apps, each app databases, each database
//! collections of rows. It checks [`Permissions`](syncbase_wire::Permissions) on every call,
//! runs batches (optimistic transactions with an idle timeout), and serves watch streams from the
//! database's watch log.
//!
//! Storage: one service store (apps and database records) plus one [`Watchable`] store per
//! database, where rows and collection permissions are managed (versioned and logged) keys, all
//! in one set of stores on one engine instance, opened through a [`StoreSetOpener`], so this
//! crate is engine-agnostic. It depends on
//! `store`, `util` and `wire`; callers arrive already authenticated, as a [`Caller`].
//!
//! A [`Database`] needs no service: it opens on its store with [`DatabaseOptions`], and the
//! sync engine, which acts for the device, reads it with a [`DeviceReader`], which checks no
//! permissions. Every call that takes a [`Caller`] checks it.
//!
//! Errors say what happened: only a missing object, or one the caller may not see, becomes
//! `nosql.no_exist` (or false for an exists call); an I/O error, an undecodable record or a
//! malformed key keeps its own code.
//!
//! [`Watchable`]: syncbase_store::Watchable

mod auth;
mod database;
mod device;
mod error;
mod service;
mod sync;
mod transact;
mod watch;

pub use auth::Caller;
pub use database::{CollectionData, Database, DatabaseOptions, RowStream};
pub use device::DeviceReader;
pub use error::{Error, Result};
pub use service::{IDLE_DATABASES_MAX_DEFAULT, KeepOpen, Service, ServiceOptions};
pub use syncbase_util::{GivenSetOpener, MemoryStoreSetOpener, StoreSetOpener};
pub use watch::Watcher;

/// The default idle time after which an abandoned batch is aborted: 5 minutes.
pub const BATCH_IDLE_TIMEOUT_NS_DEFAULT: u64 = 5 * 60 * 1_000_000_000;
