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
//! [`Watchable`]: syncbase_store::Watchable

mod auth;
mod database;
mod error;
mod service;
mod watch;

pub use auth::Caller;
pub use database::{Database, RowStream};
pub use error::{Error, Result};
pub use service::{IDLE_DATABASES_MAX_DEFAULT, KeepOpen, Service, ServiceOptions};
pub use syncbase_util::{MemoryStoreSetOpener, StoreSetOpener};
pub use watch::Watcher;

/// The default idle time after which an abandoned batch is aborted: 5 minutes.
pub const BATCH_IDLE_TIMEOUT_NS_DEFAULT: u64 = 5 * 60 * 1_000_000_000;
