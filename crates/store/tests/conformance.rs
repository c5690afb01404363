//! The conformance suite on memstore and on the watchable layer over memstore.

mod memstore {
    syncbase_store::conformance_tests!(syncbase_store::open_memstore());
}

mod watchable_over_memstore {
    use std::sync::Arc;

    use syncbase_store::{ManualClock, SeededRng, Watchable, WatchableOptions, open_memstore};

    fn open() -> Watchable<syncbase_store::MemStore> {
        let options = WatchableOptions {
            managed_prefixes: vec![Vec::new()],
            clock: Arc::new(ManualClock::new(1)),
            rng: Arc::new(SeededRng::new(1)),
        };
        Watchable::open(open_memstore(), options).expect("open watchable")
    }

    syncbase_store::conformance_tests!(open());
}
