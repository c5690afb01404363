//! `syncbase-vsync`: the sync engine (mirrors Go `services/syncbase/vsync`): generation vectors,
//! the per-object version DAG, the initiator and responder of GetDeltas, the watcher that turns
//! the watch log into sync log records, conflict resolution, syncgroups and blobs.
//!
//! Its protocol core does no I/O and reads no clock directly (time and randomness come through
//! the `Clock` and `Rng` seams), so the simulator can drive it.
//!
//! Status: the version DAG ([`dag`], with the Go DAG replay scenarios as data files in
//! `testdata/dag/`), knowledge ([`knowledge`]: generation vectors) and the conflict-resolution
//! seam ([`conflict`]: last-writer-wins by batch closure) are built, and the [`watcher`] turns
//! local commits on collections of a [`syncgroup`] record into log records and DAG nodes, which
//! the [`responder`] serves by generation range; the initiator (apply), the service and the
//! simulator come with the rest of the sync core issue. It depends
//! only on `syncbase-store`, `syncbase-util` and the error codes.

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
