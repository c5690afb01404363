//! `syncbase-server`: the service as a [`Handler`](syncbase_wire::Handler) — engine selection,
//! the dispatcher that routes every [`Request`](syncbase_wire::Request) to the object it names,
//! and the in-process handler that embedded apps and the daemon's connections use (mirrors Go
//! `server/service.go` and `dispatcher.go`), and the daemon's sync engine driver ([`sync`]).
//!
//! It may depend on every layer below it, and never on a client.

mod coalesce;
pub mod daemon;
mod dispatch;
mod engine;
mod handler;
pub mod process;
pub mod sync;

pub use dispatch::{Outcome, dispatch};
pub use engine::{EngineKind, EngineOpener, STORE_DIR_NAME};
pub use handler::ServiceHandler;
