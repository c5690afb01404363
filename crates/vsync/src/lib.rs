//! `syncbase-vsync`: the sync engine (mirrors Go `services/syncbase/vsync`): generation vectors,
//! the per-object version DAG, the initiator and responder of GetDeltas, the watcher that turns
//! the watch log into sync log records, conflict resolution, syncgroups and blobs.
//!
//! Its protocol core does no I/O and reads no clock directly (time and randomness come through
//! the `Clock` and `Rng` seams), so the simulator can drive it.
//!
//! Status: the version DAG ([`dag`]) and knowledge ([`knowledge`]: generation vectors) are built, with the Go DAG replay scenarios as data files
//! (`testdata/dag/`); the rest of the core comes with the sync core issue. It depends only on
//! `syncbase-store`, `syncbase-util` and the error codes.

pub mod dag;
mod error;
pub mod knowledge;

pub use error::{Error, Result};
