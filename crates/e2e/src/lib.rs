//! `syncbase-e2e`: end-to-end tests only (see `tests/`). They start real `syncbased` processes
//! on loopback ports and drive them with `sb` and with the client library; the binaries come from
//! the same target directory, built by `cargo test --workspace`.
