//! The conformance suite on memstore and on the watchable layer over memstore.

mod memstore {
    syncbase_store::conformance_tests!(syncbase_store::open_memstore());
}

mod watchable_over_memstore {
    use syncbase_store::testing::watchable_options_all_managed;
    use syncbase_store::{Watchable, open_memstore};

    syncbase_store::conformance_tests!(versioned
        Watchable::open(open_memstore(), watchable_options_all_managed()).expect("open watchable")
    );
}

mod memstore_set {
    syncbase_store::store_set_tests!((syncbase_store::MemStoreSet::new(), ()));
}
