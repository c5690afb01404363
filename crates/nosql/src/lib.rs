//! `syncbase-nosql`: databases, collections, rows, batches and watch, and the database-level
//! syncgroup and blob calls (mirrors Go `server/nosql`, including the seed's `database_sgm.go`),
//! delegating sync work to `syncbase-vsync`.
//!
//! Status: empty. This crate holds its place in the layering; the service issue fills it in.
//! It depends only on `syncbase-store`, `syncbase-util` and `syncbase-vsync`.
