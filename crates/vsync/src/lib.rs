//! `syncbase-vsync`: the sync engine (mirrors Go `services/syncbase/vsync`): generation vectors,
//! the per-object version DAG, the initiator and responder of GetDeltas, the watcher that turns
//! the watch log into sync log records, conflict resolution, syncgroups and blobs.
//!
//! Its protocol core will do no I/O and read no clock directly (time and randomness come through
//! the `Clock` and `Rng` seams re-exported by `syncbase-util`), so the simulator can drive it.
//!
//! Status: empty. This crate holds its place in the layering (`store ← util ← vsync ← nosql ←
//! server`); the sync issues fill it in. It depends only on `syncbase-store` and `syncbase-util`.
