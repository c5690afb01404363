//! Tests of `syncbase-util`: key encoding, typed access, the hybrid clock and the layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use syncbase_store::{
    Clock, ManualClock, MemStoreSet, Store, StoreReader, StoreSet, StoreWriter, open_memstore,
};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{
    HybridClock, StoreLayout, StoreSetOpener, get_typed, load_clock_floor, put_typed,
    save_clock_floor,
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
        assert!(!keys::is_well_formed(bad), "{bad:?}");
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
    fn a_key_is_well_formed_exactly_when_it_parses(
        bytes in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), Just(b'r'), any::<u8>()],
            0..10,
        ),
    ) {
        prop_assert_eq!(keys::is_well_formed(&bytes), keys::parse(&bytes).is_ok());
    }

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

    #[test]
    fn a_row_key_names_the_prefix_of_its_collection_alone(
        collection in proptest::collection::vec(any::<u8>(), 0..6),
        other in proptest::collection::vec(any::<u8>(), 0..6),
        row in component(),
        other_row in component(),
    ) {
        let key = keys::key(Prefix::Row, &[&collection, &row]);
        let prefix = keys::row_collection_prefix(&key).unwrap();
        let expected = keys::key(Prefix::Row, &[&collection]);
        prop_assert_eq!(prefix, expected.as_slice());
        let neighbour = keys::key(Prefix::Row, &[&other, &other_row]);
        prop_assert_eq!(neighbour.starts_with(prefix), other == collection);
        let record = keys::key(Prefix::Collection, &[&collection]);
        prop_assert_eq!(keys::row_collection_prefix(&record), None);
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

/// An engine for layout tests: one in-memory set per directory (kept across reopens), and
/// layout-1 stores planted by the test, one of which can be made to fail once.
#[derive(Default)]
struct TestOpener {
    sets: parking_lot::Mutex<BTreeMap<PathBuf, Arc<MemStoreSet>>>,
    layout_1: parking_lot::Mutex<BTreeMap<PathBuf, Arc<dyn Store>>>,
    fail_once: parking_lot::Mutex<Option<PathBuf>>,
}

impl StoreSetOpener for TestOpener {
    fn open_set(&self, dir: &Path) -> syncbase_store::Result<Arc<dyn StoreSet>> {
        let set = self
            .sets
            .lock()
            .entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(MemStoreSet::new()))
            .clone();
        Ok(set)
    }

    fn open_layout_1_store(&self, dir: &Path) -> syncbase_store::Result<Option<Arc<dyn Store>>> {
        if self
            .fail_once
            .lock()
            .take_if(|failing| failing == dir)
            .is_some()
        {
            return Err(syncbase_store::Error::Io(std::io::Error::other(
                "the disk hiccuped",
            )));
        }
        Ok(self.layout_1.lock().get(dir).cloned())
    }
}

#[test]
fn the_layout_stamps_its_format_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let opener = TestOpener::default();
    let layout = StoreLayout::open(dir.path(), &opener).unwrap();
    layout.service_store().unwrap();
    let stamp = std::fs::read_to_string(dir.path().join("FORMAT")).unwrap();
    assert_eq!(stamp.trim(), "syncbase-layout 3");
    StoreLayout::open(dir.path(), &opener).unwrap();
    std::fs::write(dir.path().join("FORMAT"), "syncbase-layout 4\n").unwrap();
    let error = StoreLayout::open(dir.path(), &opener).unwrap_err();
    assert_eq!(error.code(), "store.format_too_new");
    assert!(error.to_string().contains("upgrade"), "{error}");
    std::fs::write(dir.path().join("FORMAT"), "garbage").unwrap();
    assert_eq!(
        StoreLayout::open(dir.path(), &opener).unwrap_err().code(),
        "store.corrupt"
    );
}

#[test]
fn destroying_a_database_removes_its_store_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let layout = StoreLayout::open(dir.path(), &TestOpener::default()).unwrap();
    for id in [1, 2] {
        layout.database_store(id).unwrap().put(b"k", b"v").unwrap();
    }
    assert_eq!(layout.database_ids().unwrap(), vec![1, 2]);
    layout.destroy_database(1).unwrap();
    assert_eq!(layout.database_ids().unwrap(), vec![2]);
    layout.destroy_database(1).unwrap();
    assert_eq!(
        layout.database_store(2).unwrap().get(b"k").unwrap(),
        Some(b"v".to_vec())
    );
}

/// A root of layout 1 (a directory per store) is copied into the set, store by store; a
/// failure part-way leaves a root the next open finishes, and the stamp is written last.
#[test]
fn a_layout_1_root_is_migrated_and_an_interrupted_migration_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("FORMAT"), "syncbase-layout 1\n").unwrap();
    let opener = TestOpener::default();
    let mut expected = Vec::new();
    for (name, sub) in [
        ("service", "service".to_string()),
        ("db_0000000000000001", format!("databases/{:016x}", 1)),
        ("db_000000000000002a", format!("databases/{:016x}", 42)),
    ] {
        let path = root.join(&sub);
        std::fs::create_dir_all(&path).unwrap();
        let store: Arc<dyn Store> = Arc::new(open_memstore());
        // Enough bytes for several migration commits in one store.
        let rows = if name == "service" { 3 } else { 2_000 };
        for row in 0..rows {
            store
                .put(format!("{name}/{row:05}").as_bytes(), &[7; 4_096])
                .unwrap();
        }
        opener.layout_1.lock().insert(path, store);
        expected.push((name, rows));
    }
    std::fs::create_dir_all(root.join("trash/0000000000000005")).unwrap();

    *opener.fail_once.lock() = Some(root.join("databases/000000000000002a"));
    let error = StoreLayout::open(root, &opener).unwrap_err();
    assert_eq!(error.code(), "store.io");
    assert_eq!(
        std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
        "syncbase-layout 1"
    );

    let layout = StoreLayout::open(root, &opener).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
        "syncbase-layout 3"
    );
    assert_eq!(layout.database_ids().unwrap(), vec![1, 42]);
    for (name, rows) in expected {
        let store = layout.stores().open(name).unwrap();
        let copied = store.scan(b"", b"").unwrap().collect_entries().unwrap();
        assert_eq!(copied.len(), rows, "{name}");
        assert!(
            copied
                .iter()
                .all(|(key, value)| key.starts_with(name.as_bytes()) && value == &vec![7; 4_096])
        );
    }
    // Nothing of layout 1 is left (this engine keeps its set in memory, so no `stores/`).
    let left: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["FORMAT"]);
}

#[test]
fn every_util_error_has_its_own_registered_code() {
    let errors = [
        syncbase_util::Error::Decode {
            key: String::new(),
            message: String::new(),
        },
        syncbase_util::Error::Encode(String::new()),
        syncbase_util::Error::MalformedKey(String::new()),
        syncbase_util::Error::ClockDrift {
            remote_ns: 2,
            local_ns: 1,
            drift_max_ns: 0,
        },
    ];
    let mut seen = std::collections::BTreeSet::new();
    for error in &errors {
        let entry = syncbase_error_code::lookup(error.code())
            .unwrap_or_else(|| panic!("{} is not registered", error.code()));
        assert_eq!(entry.layer, "util");
        assert!(seen.insert(error.code()), "{} maps twice", error.code());
    }
    // Errors from the store pass through with the store's code.
    let store = syncbase_util::Error::Store(syncbase_store::Error::StoreClosed);
    assert_eq!(store.code(), syncbase_error_code::store::CLOSED);
}

/// An engine that keeps nothing on disk (memory) opening a root of layout 1 migrates it only
/// when the old directories hold nothing; data it cannot read is left alone, with an error.
#[test]
fn an_engine_that_cannot_read_layout_1_data_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("FORMAT"), "syncbase-layout 1\n").unwrap();
    let store_file = root.join("databases/0000000000000001/store/0.jnl");
    std::fs::create_dir_all(store_file.parent().unwrap()).unwrap();
    std::fs::write(&store_file, b"a journal of the persistent engine").unwrap();
    std::fs::create_dir_all(root.join("service")).unwrap();
    let error = StoreLayout::open(root, &syncbase_util::MemoryStoreSetOpener).unwrap_err();
    assert_eq!(error.code(), "store.misuse");
    assert!(error.to_string().contains("persistent engine"), "{error}");
    assert!(store_file.exists());
    assert_eq!(
        std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
        "syncbase-layout 1"
    );
    // Directories a memory daemon of layout 1 left (empty) migrate.
    std::fs::remove_dir_all(root.join("databases")).unwrap();
    std::fs::create_dir_all(root.join("databases/0000000000000002")).unwrap();
    StoreLayout::open(root, &syncbase_util::MemoryStoreSetOpener).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
        "syncbase-layout 3"
    );
}
