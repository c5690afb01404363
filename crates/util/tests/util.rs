//! Tests of `syncbase-util`: key encoding, typed access, the hybrid clock and the layout.

use std::sync::Arc;

use proptest::prelude::*;
use syncbase_store::{Clock, ManualClock, StoreReader, StoreWriter, open_memstore};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{
    HybridClock, StoreLayout, get_typed, load_clock_floor, put_typed, save_clock_floor,
};

fn check_key(prefix: Prefix, components: &[&[u8]], expected: &[u8]) {
    let encoded = keys::key(prefix, components);
    assert_eq!(encoded, expected, "{components:?}");
    let (parsed_prefix, parsed) = keys::parse(&encoded).unwrap();
    assert_eq!(parsed_prefix, prefix);
    assert_eq!(
        parsed,
        components.iter().map(|c| c.to_vec()).collect::<Vec<_>>()
    );
}

#[test]
fn key_encoding_examples() {
    check_key(Prefix::Row, &[b"coll", b"k"], b"rcoll\x00\x01k\x00\x01");
    check_key(Prefix::Row, &[b"a/b", b""], b"ra/b\x00\x01\x00\x01");
    check_key(Prefix::Collection, &[b"x\x00y"], b"cx\x00\xffy\x00\x01");
    check_key(Prefix::Service, &[], b"s");
    check_key(Prefix::Sync, &[b"\xff\x01"], b"y\xff\x01\x00\x01");
}

#[test]
fn malformed_keys_are_errors_not_panics() {
    for bad in [&b""[..], b"Q", b"ra", b"ra\x00", b"ra\x00\x02"] {
        let error = keys::parse(bad).unwrap_err();
        assert_eq!(error.code(), "util.malformed_key", "{bad:?}");
    }
}

fn refs(components: &[Vec<u8>]) -> Vec<&[u8]> {
    components.iter().map(Vec::as_slice).collect()
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), Just(b'/'), any::<u8>()],
        0..6,
    )
}

proptest! {
    #[test]
    fn keys_round_trip_and_sort_like_their_tuples(
        a in proptest::collection::vec(component(), 0..4),
        b in proptest::collection::vec(component(), 0..4),
    ) {
        let (key_a, key_b) = (keys::key(Prefix::Row, &refs(&a)), keys::key(Prefix::Row, &refs(&b)));
        prop_assert_eq!(keys::parse(&key_a).unwrap().1, a.clone());
        prop_assert_eq!(key_a.cmp(&key_b), a.cmp(&b));
    }

    #[test]
    fn row_prefix_ranges_hold_exactly_the_rows_with_that_prefix(
        collection in "[a-z/]{0,3}",
        other in "[a-z/]{0,3}",
        prefix in component(),
        row in component(),
    ) {
        let (start, limit) = keys::row_prefix_range(&collection, &prefix);
        let inside = |key: &[u8]| key >= start.as_slice() && (limit.is_empty() || key < limit.as_slice());
        prop_assert_eq!(inside(&keys::row(&collection, &row)), row.starts_with(&prefix));
        if other != collection {
            prop_assert!(!inside(&keys::row(&other, &row)));
        }
    }
}

#[test]
fn typed_values_round_trip_and_bad_bytes_are_a_decode_error() {
    let store = open_memstore();
    put_typed(&store, b"k", &(7u32, String::from("seven"))).unwrap();
    let value: Option<(u32, String)> = get_typed(&store, b"k").unwrap();
    assert_eq!(value, Some((7, "seven".to_string())));
    assert_eq!(get_typed::<u32, _>(&store, b"absent").unwrap(), None);
    store
        .put(b"bad", &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    assert_eq!(
        get_typed::<u32, _>(&store, b"bad").unwrap_err().code(),
        "util.decode"
    );
    assert!(store.get(b"bad").unwrap().is_some());
}

#[test]
fn the_hybrid_clock_never_goes_backwards_and_passes_observed_times() {
    let physical = Arc::new(ManualClock::new(1_000));
    let clock = HybridClock::new(physical.clone(), 0);
    assert_eq!(clock.now_ns(), 1_000);
    assert_eq!(clock.now_ns(), 1_001);
    physical.set(500);
    assert_eq!(clock.now_ns(), 1_002);
    clock.observe(5_000).unwrap();
    assert_eq!(clock.now_ns(), 5_001);
    physical.set(10_000);
    assert_eq!(clock.now_ns(), 10_000);
    let far = 10_000 + syncbase_util::CLOCK_DRIFT_MAX_NS + 1;
    assert_eq!(clock.observe(far).unwrap_err().code(), "util.clock_drift");
    assert_eq!(clock.now_ns(), 10_001);
}

#[test]
fn the_hybrid_clock_stays_monotonic_across_a_restart() {
    let store = open_memstore();
    let physical = Arc::new(ManualClock::new(1_000_000));
    let before = HybridClock::new(
        physical.clone(),
        load_clock_floor(&store, b"clock").unwrap(),
    );
    save_clock_floor(&store, b"clock", &before, 1_000).unwrap();
    let issued: Vec<u64> = (0..100).map(|_| before.now_ns()).collect();
    // The machine's clock jumps back before the restart.
    physical.set(10);
    let after = HybridClock::new(physical, load_clock_floor(&store, b"clock").unwrap());
    assert!(after.now_ns() > *issued.last().unwrap());
}

#[test]
fn the_layout_stamps_its_format_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let layout = StoreLayout::open(dir.path()).unwrap();
    assert!(layout.service_dir().is_dir());
    let stamp = std::fs::read_to_string(dir.path().join("FORMAT")).unwrap();
    assert_eq!(stamp.trim(), "syncbase-layout 1");
    StoreLayout::open(dir.path()).unwrap();
    std::fs::write(dir.path().join("FORMAT"), "syncbase-layout 2\n").unwrap();
    let error = StoreLayout::open(dir.path()).unwrap_err();
    assert_eq!(error.code(), "store.format_too_new");
    assert!(error.to_string().contains("upgrade"), "{error}");
    std::fs::write(dir.path().join("FORMAT"), "garbage").unwrap();
    assert_eq!(
        StoreLayout::open(dir.path()).unwrap_err().code(),
        "store.corrupt"
    );
}

#[test]
fn destroying_a_database_removes_its_files_and_the_trash_is_emptied_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let layout = StoreLayout::open(dir.path()).unwrap();
    for id in [1, 2] {
        std::fs::create_dir_all(layout.database_dir(id)).unwrap();
        std::fs::write(layout.database_dir(id).join("data"), b"data").unwrap();
    }
    layout.destroy_database(1).unwrap();
    assert!(!layout.database_dir(1).exists());
    assert!(layout.database_dir(2).exists());
    layout.destroy_database(1).unwrap();
    // A destroy interrupted after the move: the next open finishes it.
    std::fs::create_dir_all(dir.path().join("trash/0000000000000009")).unwrap();
    StoreLayout::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("trash")).unwrap().count(),
        0
    );
}
