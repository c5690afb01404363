//! Bounded growth of the watchable layer: the retention window (by commits and by age), pins,
//! holders, the background pruner, and a property test against a model.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use syncbase_store::watchable::RESERVED_BYTE;
use syncbase_store::{
    ManualClock, MemStore, Origin, Pruner, Retention, SeededRng, StoreReader, StoreWriter, Stored,
    Transaction, Version, VersionHolder, Watchable, WatchableOptions, open_memstore,
};

const SECOND_NS: u64 = 1_000_000_000;

fn options(clock: &Arc<ManualClock>, retention: Retention) -> WatchableOptions {
    WatchableOptions {
        retention,
        ..WatchableOptions::new(
            vec![b"r/".to_vec()],
            clock.clone(),
            Arc::new(SeededRng::new(3)),
        )
    }
}

fn commits(commits_min: u64) -> Retention {
    Retention {
        commits_min,
        age_min_ns: 0,
    }
}

/// Sequence numbers and ref seqs of every history record (old versions) in the store.
fn history(store: &Watchable<Arc<MemStore>>) -> Vec<(Vec<u8>, u64)> {
    store
        .inner()
        .scan(&[RESERVED_BYTE, b'h'], &[RESERVED_BYTE, b'h' + 1])
        .unwrap()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            (key, u64::from_be_bytes(value[..8].try_into().unwrap()))
        })
        .collect()
}

fn check_versions(store: &Watchable<Arc<MemStore>>) {
    syncbase_store::testing::assert_versions_bounded(store, "memstore");
}

fn open(retention: Retention) -> (Watchable<Arc<MemStore>>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000));
    let store = Watchable::open(Arc::new(open_memstore()), options(&clock, retention)).unwrap();
    (store, clock)
}

/// Below the last N commits, entries go, and with them the versions only they referred to;
/// the values current and those of entries inside the window stay.
#[test]
fn the_window_by_commits_removes_old_entries_and_their_versions() {
    let (store, _) = open(commits(5));
    for round in 0..20u32 {
        store.put(b"r/k", &round.to_be_bytes()).unwrap();
        store
            .put(format!("r/other{}", round % 3).as_bytes(), b"v")
            .unwrap();
    }
    assert_eq!(store.latest_log_seq(), 40);
    assert!(!store.log_retains(35).unwrap());
    assert!(store.log_retains(36).unwrap());
    assert_eq!(history(&store).len(), 19 + 17);
    let outcome = store.prune(1_000).unwrap();
    assert_eq!(outcome.entries_removed, 35);
    assert!(!outcome.more);
    assert_eq!(store.log_start().unwrap(), 36);
    check_versions(&store);
    // Entries 36..=40 replaced two versions of r/k and three of r/other*.
    assert_eq!(history(&store).len(), 5);
    assert_eq!(
        store.get(b"r/k").unwrap(),
        Some(19u32.to_be_bytes().to_vec())
    );
    // Steps are bounded: two entries a step.
    for _ in 0..10 {
        store.put(b"r/k", b"more").unwrap();
    }
    let outcome = store.prune(2).unwrap();
    assert_eq!((outcome.entries_removed, outcome.more), (2, true));
    while store.prune(2).unwrap().more {}
    assert_eq!(store.log_start().unwrap(), 46);
    check_versions(&store);
}

/// Entries younger than the minimum age stay whatever their number; the age is measured by
/// the physical clock, not by the log's (hybrid) timestamps.
#[test]
fn the_window_by_age_keeps_young_entries() {
    let physical = Arc::new(ManualClock::new(1_000));
    // A log clock far in the future (a peer's fast clock it followed) ages nothing.
    let log_clock = Arc::new(ManualClock::new(1_000 + 3_600 * SECOND_NS));
    let store = Watchable::open(
        Arc::new(open_memstore()),
        WatchableOptions {
            physical_clock: physical.clone(),
            ..options(
                &log_clock,
                Retention {
                    commits_min: 0,
                    age_min_ns: 10 * SECOND_NS,
                },
            )
        },
    )
    .unwrap();
    for round in 0..4u32 {
        store.put(b"r/k", &round.to_be_bytes()).unwrap();
    }
    physical.advance(5 * SECOND_NS);
    store.put(b"r/k", b"later").unwrap();
    let outcome = store.prune(100).unwrap();
    assert_eq!(outcome.entries_removed, 0);
    assert_eq!(outcome.not_before_ns, Some(1_000 + 10 * SECOND_NS));
    assert!(store.log_retains(1).unwrap());
    physical.advance(5 * SECOND_NS);
    assert!(!store.log_retains(1).unwrap());
    assert!(store.log_retains(5).unwrap());
    let outcome = store.prune(100).unwrap();
    assert_eq!(outcome.entries_removed, 4);
    assert_eq!(store.log_start().unwrap(), 5);
    check_versions(&store);
    physical.advance(5 * SECOND_NS);
    store.prune(100).unwrap();
    assert_eq!(store.log_start().unwrap(), 6);
    assert!(store.log_entries(0, 10).unwrap().is_empty());
    assert!(history(&store).is_empty());
}

/// A pin keeps the log from its position on, durably; moving or removing it lets pruning go on.
#[test]
fn pins_hold_the_log_and_survive_a_reopen() {
    let clock = Arc::new(ManualClock::new(1_000));
    let inner = Arc::new(open_memstore());
    let store = Watchable::open(inner.clone(), options(&clock, commits(0))).unwrap();
    for round in 0..10u32 {
        store.put(b"r/k", &round.to_be_bytes()).unwrap();
    }
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.set_pin("sync-watcher", 4).unwrap();
    transaction.set_pin("slow", 7).unwrap();
    assert_eq!(
        transaction.set_pin("", 1).unwrap_err().code(),
        "store.misuse"
    );
    transaction.commit().unwrap();
    drop(store);
    let store = Watchable::open(inner, options(&clock, commits(0))).unwrap();
    assert_eq!(
        store.pins().unwrap(),
        [("slow".to_string(), 7), ("sync-watcher".to_string(), 4)]
    );
    store.prune(100).unwrap();
    assert_eq!(store.log_start().unwrap(), 4);
    check_versions(&store);
    // A pin also holds a forced advance of the log start.
    store.advance_log_start(9).unwrap();
    assert_eq!(store.log_start().unwrap(), 4);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.remove_pin("sync-watcher").unwrap();
    transaction.commit().unwrap();
    store.prune(100).unwrap();
    assert_eq!(store.log_start().unwrap(), 7);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.remove_pin("slow").unwrap();
    transaction.commit().unwrap();
    store.prune(100).unwrap();
    assert_eq!(store.log_start().unwrap(), 11);
    assert!(history(&store).is_empty());
}

/// Holds the versions put in it.
#[derive(Default)]
struct Held(Mutex<HashSet<(Vec<u8>, Version)>>);

impl VersionHolder for Held {
    fn holds(
        &self,
        _reader: &dyn syncbase_store::StoreReader,
        key: &[u8],
        version: Version,
    ) -> syncbase_store::Result<bool> {
        Ok(self.0.lock().contains(&(key.to_vec(), version)))
    }
}

/// A holder keeps a version past its entries; released, it goes (but not while an entry in the
/// log still refers to it).
#[test]
fn a_holder_keeps_versions_until_it_releases_them() {
    let clock = Arc::new(ManualClock::new(1_000));
    let held = Arc::new(Held::default());
    let store = Watchable::open(
        Arc::new(open_memstore()),
        WatchableOptions {
            holder: Some(held.clone()),
            ..options(&clock, commits(1))
        },
    )
    .unwrap();
    store.put(b"r/k", b"first").unwrap();
    let first = store.log_entries(1, 1).unwrap()[0].ops[0].version();
    held.0.lock().insert((b"r/k".to_vec(), first));
    store.put(b"r/k", b"second").unwrap();
    let transaction = store.begin(Origin::default()).unwrap();
    assert!(!transaction.release_version(b"r/k", first).unwrap());
    transaction.abort().unwrap();
    store.put(b"r/k", b"third").unwrap();
    store.prune(100).unwrap();
    assert_eq!(store.log_start().unwrap(), 3);
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.get_at_version(b"r/k", first).unwrap(),
        Some(Stored::Value(b"first".to_vec()))
    );
    held.0.lock().clear();
    let transaction = store.begin(Origin::default()).unwrap();
    assert!(transaction.release_version(b"r/k", first).unwrap());
    transaction.commit().unwrap();
    assert_eq!(
        store
            .versioned_snapshot()
            .unwrap()
            .get_at_version(b"r/k", first)
            .unwrap(),
        None
    );
    check_versions(&store);
}

/// The background pruner keeps every store that shares it near its window, in bounded steps,
/// without being asked.
#[test]
fn the_background_pruner_keeps_logs_near_their_window() {
    let clock = Arc::new(ManualClock::new(1_000));
    let pruner = Pruner::start().unwrap();
    let stores: Vec<_> = (0..3)
        .map(|_| {
            Watchable::open(
                Arc::new(open_memstore()),
                WatchableOptions {
                    pruner: Some(pruner.clone()),
                    ..options(&clock, commits(10))
                },
            )
            .unwrap()
        })
        .collect();
    for round in 0..500u32 {
        for store in &stores {
            store.put(b"r/k", &round.to_be_bytes()).unwrap();
        }
    }
    pruner.wait_idle();
    assert!(pruner.steps() > 0);
    for store in &stores {
        let kept = store.latest_log_seq() + 1 - store.log_start().unwrap();
        // The window, plus at most the slack before a step is queued.
        assert!((10..=10 + 64 + 1).contains(&kept), "{kept}");
        check_versions(store);
        assert!(history(store).len() as u64 <= kept);
    }
    // A pin that holds the log stops the steps (no spinning on a store that cannot shrink)
    // until it moves.
    let store = &stores[0];
    let transaction = store.begin(Origin::default()).unwrap();
    transaction
        .set_pin("p", store.latest_log_seq() + 1)
        .unwrap();
    transaction.commit().unwrap();
    pruner.wait_idle();
    let steps = pruner.steps();
    for round in 0..1_000u32 {
        store.put(b"r/k", &round.to_be_bytes()).unwrap();
    }
    pruner.wait_idle();
    assert!(
        pruner.steps() <= steps + 3,
        "{} steps",
        pruner.steps() - steps
    );
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.remove_pin("p").unwrap();
    transaction.commit().unwrap();
    pruner.wait_idle();
    let kept = store.latest_log_seq() + 1 - store.log_start().unwrap();
    assert!(kept <= 10 + 64 + 1, "{kept}");
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Store(u8, u8),
    Adopt(u8),
    Prune,
    Pin(Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..6u8).prop_map(Op::Delete),
        1 => (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::Store(k, v)),
        1 => (0..6u8).prop_map(Op::Adopt),
        2 => Just(Op::Prune),
        1 => proptest::option::of(0..40u8).prop_map(Op::Pin),
    ]
}

proptest! {
    /// Against a model of the current values: every read agrees, every logged change names
    /// the version it replaced, pruning never goes below a pin or the window, and no old
    /// version outlives the entries that referred to it.
    #[test]
    fn the_layer_agrees_with_a_model_under_pruning(ops in proptest::collection::vec(op(), 1..120)) {
        let (store, _) = open(commits(4));
        let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let mut heads: BTreeMap<u8, Version> = BTreeMap::new();
        let mut stored: Vec<(u8, Version, Vec<u8>)> = Vec::new();
        let mut pin: Option<u64> = None;
        let key = |k: u8| format!("r/{k}").into_bytes();
        for op in ops {
            let before = store.latest_log_seq();
            match op {
                Op::Put(k, v) => {
                    store.put(&key(k), &[v]).unwrap();
                    model.insert(k, vec![v]);
                }
                Op::Delete(k) => {
                    store.delete(&key(k)).unwrap();
                    if model.remove(&k).is_none() {
                        prop_assert_eq!(store.latest_log_seq(), before);
                    }
                }
                Op::Store(k, v) => {
                    let version = Version(1_000_000 + stored.len() as u64);
                    let transaction = store.begin(Origin::default()).unwrap();
                    transaction.put_at_version(&key(k), version, &[v]).unwrap();
                    transaction.commit().unwrap();
                    stored.push((k, version, vec![v]));
                }
                Op::Adopt(k) => {
                    let Some((_, version, value)) = stored.iter().rev().find(|(sk, version, _)| {
                        *sk == k && store.versioned_snapshot().unwrap()
                            .get_at_version(&key(k), *version).unwrap().is_some()
                    }).cloned() else { continue };
                    let transaction = store.begin(Origin::default()).unwrap();
                    transaction.put_version(&key(k), version).unwrap();
                    transaction.commit().unwrap();
                    model.insert(k, value);
                }
                Op::Prune => {
                    let start = store.log_start().unwrap();
                    store.prune(3).unwrap();
                    let new_start = store.log_start().unwrap();
                    prop_assert!(new_start >= start);
                    prop_assert!(new_start + 4 <= store.latest_log_seq() + 1 || new_start == start);
                    if let Some(pin) = pin {
                        prop_assert!(new_start <= pin.max(start));
                    }
                }
                Op::Pin(at) => {
                    let transaction = store.begin(Origin::default()).unwrap();
                    match at {
                        Some(at) => transaction.set_pin("p", u64::from(at)).unwrap(),
                        None => transaction.remove_pin("p").unwrap(),
                    }
                    transaction.commit().unwrap();
                    pin = at.map(u64::from);
                }
            }
            // Each new entry's ops name the heads they replaced.
            for entry in store.log_entries(before + 1, 10).unwrap() {
                for op in &entry.ops {
                    let k = op.key()[2..].iter().fold(0u8, |_, c| c - b'0');
                    prop_assert_eq!(op.parent(), heads.get(&k).copied());
                    heads.insert(k, op.version());
                }
            }
            for k in 0..6u8 {
                prop_assert_eq!(store.get(&key(k)).unwrap(), model.get(&k).cloned());
            }
            let rows = store.scan(b"r/", b"r0").unwrap().collect_entries().unwrap();
            prop_assert_eq!(rows.len(), model.len());
            check_versions(&store);
        }
    }
}
