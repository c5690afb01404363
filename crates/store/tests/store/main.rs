//! Tests of `syncbase-store` (one binary): the conformance suite and the watchable layer.

// Tests bound waits on real time.
#![allow(clippy::disallowed_methods)]

mod conformance;
mod retention;
mod versions;
mod watchable;

/// Every error maps to a code listed in the registry, and each variant to its own.
#[test]
fn every_store_error_has_its_own_registered_code() {
    use syncbase_store::Error;
    let errors = [
        Error::ConcurrentTransaction,
        Error::StoreClosed,
        Error::SnapshotAborted,
        Error::TransactionCommitted,
        Error::TransactionAborted,
        Error::StreamCanceled,
        Error::ReservedKey(String::new()),
        Error::KeyTooLarge {
            bytes: 2,
            bytes_max: 1,
        },
        Error::ValueTooLarge {
            bytes: 2,
            bytes_max: 1,
        },
        Error::Misuse(String::new()),
        Error::NotManaged(String::new()),
        Error::MixedScan(String::new()),
        Error::FormatTooNew {
            found: 2,
            supported: 1,
        },
        Error::Corrupt(String::new()),
        Error::VersionConflict(String::new()),
        Error::Io(std::io::Error::other("x")),
        Error::Engine(String::new()),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for error in &errors {
        let entry = syncbase_error_code::lookup(error.code())
            .unwrap_or_else(|| panic!("{} is not registered", error.code()));
        assert_eq!(entry.layer, "store");
        assert!(seen.insert(error.code()), "{} maps twice", error.code());
    }
}
