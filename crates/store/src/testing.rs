//! The conformance suite every store runs (mirrors Go `store/test/`). Use
//! [`conformance_tests!`](crate::conformance_tests) in a test file with an expression that opens
//! a fresh, empty store; it expands to one `#[test]` per check.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use syncbase_error_code::store as codes;

use crate::{Error, Result, Rng, SeededRng, Store, StoreReader, Transaction, run_in_transaction};

/// Expands to one `#[test]` per conformance check, each opening a store with `$open`.
#[macro_export]
macro_rules! conformance_tests {
    ($open:expr) => {
        $crate::conformance_tests!(@each $open;
            read_write_basic, read_write_random_against_model, snapshot_isolation,
            stream_order_and_cancel, transaction_state, transaction_reads_own_writes,
            store_state_after_close, concurrent_transactions, concurrent_counters,
            model_property, blind_writes_never_conflict);
    };
    // A versioning layer (the watchable one) reads a key's current version to write it, so its
    // writes are never blind: it runs every check but that one, and the opposite one instead.
    (versioned $open:expr) => {
        $crate::conformance_tests!(@each $open;
            read_write_basic, read_write_random_against_model, snapshot_isolation,
            stream_order_and_cancel, transaction_state, transaction_reads_own_writes,
            store_state_after_close, concurrent_transactions, concurrent_counters,
            model_property, versioned_writes_conflict_with_concurrent_ones);
    };
    (@each $open:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::testing::$name(&|| $open);
            }
        )*
    };
}

fn collect<R: StoreReader + ?Sized>(
    reader: &R,
    start: &[u8],
    limit: &[u8],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    reader
        .scan(start, limit)
        .and_then(|stream| stream.collect_entries())
        .expect("scan")
}

fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    limit: &[u8],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|(key, _)| crate::model::in_range(key, start, limit))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn assert_code<T: std::fmt::Debug>(result: Result<T>, code: &str) {
    match result {
        Err(error) => assert_eq!(error.code(), code, "unexpected error {error}"),
        Ok(value) => panic!("expected error {code}, got Ok({value:?})"),
    }
}

/// Put, get, delete, exists and scan on the store itself.
pub fn read_write_basic<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    assert_eq!(store.get(b"a").unwrap(), None);
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"2").unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert!(store.exists(b"b").unwrap());
    store.put(b"a", b"3").unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"3".to_vec()));
    store.delete(b"a").unwrap();
    store.delete(b"never-there").unwrap();
    assert_eq!(store.get(b"a").unwrap(), None);
    assert!(!store.exists(b"a").unwrap());
    assert_eq!(
        collect(&store, b"", b""),
        vec![(b"b".to_vec(), b"2".to_vec())]
    );
    store.put(b"", b"empty key").unwrap();
    assert_eq!(store.get(b"").unwrap(), Some(b"empty key".to_vec()));
    // A very long key is stored or refused with a clear error, never a panic.
    let long_key = vec![b'x'; 70_000];
    match store.put(&long_key, b"v") {
        Ok(()) => assert_eq!(store.get(&long_key).unwrap(), Some(b"v".to_vec())),
        Err(error) => assert_eq!(error.code(), codes::KEY_TOO_LARGE, "{error}"),
    }
    let transaction = store.transaction().unwrap();
    if let Err(error) = transaction.put(&long_key, b"v") {
        assert_eq!(error.code(), codes::KEY_TOO_LARGE, "{error}");
    }
    transaction.abort().unwrap();
    assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
    store.close().unwrap();
}

/// 10,000 random puts and deletes over 50 keys, checked against a `BTreeMap` after every step,
/// with reads through snapshots taken along the way.
pub fn read_write_random_against_model<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    let rng = SeededRng::new(0x5eed);
    let mut model = BTreeMap::new();
    let mut snapshots = Vec::new();
    for step in 0..10_000u64 {
        let key = format!("key{:02}", rng.next_u64() % 50).into_bytes();
        if rng.next_u64().is_multiple_of(3) {
            store.delete(&key).unwrap();
            model.remove(&key);
        } else {
            let value = format!("value{}", rng.next_u64()).into_bytes();
            store.put(&key, &value).unwrap();
            model.insert(key.clone(), value);
        }
        assert_eq!(
            store.get(&key).unwrap(),
            model.get(&key).cloned(),
            "step {step}"
        );
        if step % 500 == 0 {
            assert_eq!(collect(&store, b"", b""), model_range(&model, b"", b""));
            snapshots.push((store.snapshot().unwrap(), model.clone()));
        }
    }
    for (snapshot, old_model) in &snapshots {
        assert_eq!(
            collect(snapshot.as_ref(), b"", b""),
            model_range(old_model, b"", b"")
        );
        assert_eq!(
            collect(snapshot.as_ref(), b"key10", b"key20"),
            model_range(old_model, b"key10", b"key20")
        );
        for index in 0..50 {
            let key = format!("key{index:02}").into_bytes();
            assert_eq!(snapshot.get(&key).unwrap(), old_model.get(&key).cloned());
        }
    }
}

/// A snapshot sees the store as of its creation; after abort every call fails.
pub fn snapshot_isolation<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    store.put(b"k1", b"v1").unwrap();
    let snapshot = store.snapshot().unwrap();
    store.put(b"k2", b"v2").unwrap();
    store.put(b"k1", b"changed").unwrap();
    assert_eq!(snapshot.get(b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(snapshot.get(b"k2").unwrap(), None);
    assert_eq!(
        collect(snapshot.as_ref(), b"", b""),
        vec![(b"k1".to_vec(), b"v1".to_vec())]
    );
    let stream = snapshot.scan(b"", b"").unwrap();
    snapshot.abort().unwrap();
    assert_code(snapshot.get(b"k1"), codes::SNAPSHOT_ABORTED);
    assert_code(snapshot.scan(b"", b"").map(|_| ()), codes::SNAPSHOT_ABORTED);
    assert_code(snapshot.abort(), codes::SNAPSHOT_ABORTED);
    assert_code(stream.collect_entries(), codes::SNAPSHOT_ABORTED);
}

/// Scans return keys in order within `[start, limit)`, across many engine chunks; cancel stops
/// a stream with a canceled error.
#[allow(clippy::disallowed_methods)] // a conformance check cancels a stream from another thread.
pub fn stream_order_and_cancel<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    let rng = SeededRng::new(7);
    let mut model = BTreeMap::new();
    for _ in 0..1_500 {
        let key = format!("{:06}", rng.next_u64() % 100_000).into_bytes();
        let value = rng.next_u64().to_be_bytes().to_vec();
        store.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    let scanned = collect(&store, b"", b"");
    assert_eq!(scanned, model_range(&model, b"", b""));
    assert!(scanned.windows(2).all(|pair| pair[0].0 < pair[1].0));
    for (start, limit) in [
        (&b"02"[..], &b"05"[..]),
        (b"050000", b"050001"),
        (b"9", b""),
        (b"5", b"4"),
    ] {
        assert_eq!(
            collect(&store, start, limit),
            model_range(&model, start, limit)
        );
    }
    let mut stream = store.scan(b"", b"").unwrap();
    assert!(stream.next().unwrap().is_ok());
    let canceler = stream.canceler();
    std::thread::spawn(move || canceler.cancel())
        .join()
        .unwrap();
    assert_code(stream.next().unwrap(), codes::STREAM_CANCELED);
    assert!(stream.next().is_none());
    stream.cancel();
}

/// Every call on a finished transaction fails with the state it finished in.
pub fn transaction_state<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    let committed = store.transaction().unwrap();
    committed.put(b"a", b"1").unwrap();
    let stream = committed.scan(b"", b"").unwrap();
    committed.commit().unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_code(committed.get(b"a"), codes::TRANSACTION_COMMITTED);
    assert_code(committed.put(b"a", b"2"), codes::TRANSACTION_COMMITTED);
    assert_code(committed.delete(b"a"), codes::TRANSACTION_COMMITTED);
    assert_code(
        committed.scan(b"", b"").map(|_| ()),
        codes::TRANSACTION_COMMITTED,
    );
    assert_code(committed.commit(), codes::TRANSACTION_COMMITTED);
    assert_code(committed.abort(), codes::TRANSACTION_COMMITTED);
    assert_code(stream.collect_entries(), codes::TRANSACTION_COMMITTED);

    let aborted = store.transaction().unwrap();
    aborted.put(b"b", b"1").unwrap();
    aborted.abort().unwrap();
    assert_eq!(store.get(b"b").unwrap(), None);
    assert_code(aborted.get(b"a"), codes::TRANSACTION_ABORTED);
    assert_code(aborted.put(b"a", b"2"), codes::TRANSACTION_ABORTED);
    assert_code(aborted.commit(), codes::TRANSACTION_ABORTED);
    assert_code(aborted.abort(), codes::TRANSACTION_ABORTED);

    let failed = store.transaction().unwrap();
    failed.get(b"a").unwrap();
    failed.put(b"a", b"from failed").unwrap();
    store.put(b"a", b"concurrent").unwrap();
    assert_code(failed.commit(), codes::CONCURRENT_TRANSACTION);
    assert_code(failed.get(b"a"), codes::TRANSACTION_COMMITTED);
    assert_eq!(store.get(b"a").unwrap(), Some(b"concurrent".to_vec()));
}

/// Reads in a transaction see its snapshot plus its own puts and deletes, scans included.
pub fn transaction_reads_own_writes<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    for key in ["a", "c", "e", "g"] {
        store.put(key.as_bytes(), b"old").unwrap();
    }
    let transaction = store.transaction().unwrap();
    transaction.put(b"b", b"new").unwrap();
    transaction.put(b"c", b"new").unwrap();
    transaction.delete(b"e").unwrap();
    transaction.put(b"h", b"new").unwrap();
    store.put(b"f", b"outside").unwrap();
    assert_eq!(transaction.get(b"c").unwrap(), Some(b"new".to_vec()));
    assert_eq!(transaction.get(b"e").unwrap(), None);
    assert_eq!(transaction.get(b"f").unwrap(), None);
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(String, String)> {
        entries
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        keys(collect(transaction.as_ref(), b"", b"")),
        pairs(&[
            ("a", "old"),
            ("b", "new"),
            ("c", "new"),
            ("g", "old"),
            ("h", "new")
        ])
    );
    assert_eq!(
        keys(collect(transaction.as_ref(), b"b", b"g")),
        pairs(&[("b", "new"), ("c", "new")])
    );
    transaction.abort().unwrap();
}

/// After close every call fails, including on streams, snapshots and transactions opened before.
pub fn store_state_after_close<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    store.put(b"a", b"1").unwrap();
    let stream = store.scan(b"", b"").unwrap();
    let snapshot = store.snapshot().unwrap();
    let transaction = store.transaction().unwrap();
    transaction.put(b"b", b"2").unwrap();
    store.close().unwrap();
    store.close().unwrap();
    assert_code(store.get(b"a"), codes::CLOSED);
    assert_code(store.put(b"a", b"2"), codes::CLOSED);
    assert_code(store.delete(b"a"), codes::CLOSED);
    assert_code(store.scan(b"", b"").map(|_| ()), codes::CLOSED);
    assert_code(store.snapshot().map(|_| ()), codes::CLOSED);
    assert_code(store.transaction().map(|_| ()), codes::CLOSED);
    assert_code(stream.collect_entries(), codes::CLOSED);
    assert_code(snapshot.get(b"a"), codes::CLOSED);
    assert_code(transaction.get(b"a"), codes::CLOSED);
    assert_code(transaction.commit(), codes::CLOSED);
}

/// The three conflict cases of Go's suite.
pub fn concurrent_transactions<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    // Both read and write `a`: the second to commit fails.
    store.put(b"a", b"0").unwrap();
    let first = store.transaction().unwrap();
    let second = store.transaction().unwrap();
    for transaction in [&first, &second] {
        transaction.get(b"a").unwrap();
        transaction.put(b"a", b"x").unwrap();
    }
    first.commit().unwrap();
    assert_code(second.commit(), codes::CONCURRENT_TRANSACTION);

    // Both scan [a, z) and insert distinct keys: the second fails.
    let first = store.transaction().unwrap();
    let second = store.transaction().unwrap();
    collect(first.as_ref(), b"a", b"z");
    collect(second.as_ref(), b"a", b"z");
    first.put(b"m1", b"1").unwrap();
    second.put(b"m2", b"2").unwrap();
    first.commit().unwrap();
    assert_code(second.commit(), codes::CONCURRENT_TRANSACTION);

    // Disjoint scans plus a shared read of `c`, writing `a` and `b`: both commit.
    let first = store.transaction().unwrap();
    let second = store.transaction().unwrap();
    collect(first.as_ref(), b"a", b"b");
    collect(second.as_ref(), b"b", b"c");
    first.get(b"c").unwrap();
    second.get(b"c").unwrap();
    first.put(b"a", b"1").unwrap();
    second.put(b"b", b"1").unwrap();
    first.commit().unwrap();
    second.commit().unwrap();
}

/// A transaction that only writes (blind write) never conflicts.
pub fn blind_writes_never_conflict<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    let blind = store.transaction().unwrap();
    blind.put(b"a", b"blind").unwrap();
    store.put(b"a", b"meanwhile").unwrap();
    blind.commit().unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"blind".to_vec()));
}

/// In a versioning store a write records the version it replaces, so it reads it: a write of a
/// key that another commit wrote meanwhile conflicts (and the other value stays), where a write
/// of another key does not.
pub fn versioned_writes_conflict_with_concurrent_ones<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    let writer = store.transaction().unwrap();
    writer.put(b"a", b"first").unwrap();
    store.put(b"a", b"meanwhile").unwrap();
    assert_code(writer.commit(), codes::CONCURRENT_TRANSACTION);
    assert_eq!(store.get(b"a").unwrap(), Some(b"meanwhile".to_vec()));
    let writer = store.transaction().unwrap();
    writer.put(b"b", b"mine").unwrap();
    store.put(b"a", b"again").unwrap();
    writer.commit().unwrap();
    assert_eq!(store.get(b"b").unwrap(), Some(b"mine".to_vec()));
}

/// 100 concurrent workers each add 1 to three of ten counters and 3 to an eleventh, retrying on
/// conflict: the eleventh ends equal to the sum of the others.
pub fn concurrent_counters<S: Store>(open: &dyn Fn() -> S) {
    let store = open();
    let counter_key = |index: u64| format!("counter{index:02}").into_bytes();
    for index in 0..11 {
        store.put(&counter_key(index), &0u64.to_be_bytes()).unwrap();
    }
    let conflicts = AtomicUsize::new(0);
    let add = |transaction: &dyn Transaction, index: u64, amount: u64| -> Result<()> {
        let key = counter_key(index);
        let bytes = transaction
            .get(&key)?
            .ok_or(Error::Corrupt("missing counter".into()))?;
        let value = u64::from_be_bytes(bytes.try_into().map_err(|_| Error::Corrupt("len".into()))?);
        transaction.put(&key, &(value + amount).to_be_bytes())
    };
    std::thread::scope(|scope| {
        for worker in 0..100u64 {
            let store = &store;
            let conflicts = &conflicts;
            scope.spawn(move || {
                let rng = SeededRng::new(worker);
                let picks: Vec<u64> = (0..3).map(|_| rng.next_u64() % 10).collect();
                let mut attempts = 0;
                run_in_transaction(store, 1_000, |transaction| {
                    attempts += 1;
                    for &index in &picks {
                        add(transaction, index, 1)?;
                    }
                    add(transaction, 10, 3)
                })
                .unwrap();
                conflicts.fetch_add(attempts - 1, Ordering::Relaxed);
            });
        }
    });
    let read = |index: u64| {
        u64::from_be_bytes(
            store
                .get(&counter_key(index))
                .unwrap()
                .unwrap()
                .try_into()
                .unwrap(),
        )
    };
    let sum: u64 = (0..10).map(read).sum();
    assert_eq!(sum, 300);
    assert_eq!(read(10), sum);
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, u8),
    Delete(u8),
    Transaction(Vec<(u8, Option<u8>)>),
    Snapshot,
    Scan(u8, u8),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0u8..20, any::<u8>()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        2 => (0u8..20).prop_map(ModelOp::Delete),
        2 => proptest::collection::vec((0u8..20, proptest::option::of(any::<u8>())), 1..6)
            .prop_map(ModelOp::Transaction),
        1 => Just(ModelOp::Snapshot),
        1 => (0u8..21, 0u8..21).prop_map(|(a, b)| ModelOp::Scan(a, b)),
    ]
}

/// Random sequences of puts, deletes, transactions, snapshots and scans agree with a `BTreeMap`
/// model, and every snapshot keeps agreeing with the model as of its creation.
pub fn model_property<S: Store>(open: &dyn Fn() -> S) {
    let key = |index: u8| format!("k{index:02}").into_bytes();
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(model_op(), 1..60))| {
        let store = open();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut snapshots = Vec::new();
        for op in ops {
            match op {
                ModelOp::Put(k, v) => {
                    store.put(&key(k), &[v]).unwrap();
                    model.insert(key(k), vec![v]);
                }
                ModelOp::Delete(k) => {
                    store.delete(&key(k)).unwrap();
                    model.remove(&key(k));
                }
                ModelOp::Transaction(writes) => {
                    let transaction = store.transaction().unwrap();
                    for (k, v) in &writes {
                        match v {
                            Some(v) => transaction.put(&key(*k), &[*v]).unwrap(),
                            None => transaction.delete(&key(*k)).unwrap(),
                        }
                    }
                    transaction.commit().unwrap();
                    for (k, v) in writes {
                        match v {
                            Some(v) => { model.insert(key(k), vec![v]); }
                            None => { model.remove(&key(k)); }
                        }
                    }
                }
                ModelOp::Snapshot => snapshots.push((store.snapshot().unwrap(), model.clone())),
                ModelOp::Scan(a, b) => {
                    let (start, limit) = (key(a), if b == 20 { Vec::new() } else { key(b) });
                    prop_assert_eq!(collect(&store, &start, &limit), model_range(&model, &start, &limit));
                }
            }
        }
        prop_assert_eq!(collect(&store, b"", b""), model_range(&model, b"", b""));
        for (snapshot, old) in &snapshots {
            prop_assert_eq!(collect(snapshot.as_ref(), b"", b""), model_range(old, b"", b""));
        }
    });
}

/// A store that keeps something alive (typically its temporary directory) as long as it lives.
pub struct WithGuard<S, G> {
    /// The store.
    pub store: S,
    /// What must outlive it.
    pub guard: G,
}

impl<S: StoreReader, G> StoreReader for WithGuard<S, G> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<crate::Stream> {
        self.store.scan(start, limit)
    }
}

impl<S: crate::StoreWriter, G> crate::StoreWriter for WithGuard<S, G> {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.store.put(key, value)
    }

    fn put_owned(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.store.put_owned(key, value)
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.store.delete(key)
    }
}

impl<S: Store, G: Send + Sync> Store for WithGuard<S, G> {
    fn snapshot(&self) -> Result<Box<dyn crate::Snapshot>> {
        self.store.snapshot()
    }

    fn transaction(&self) -> Result<Box<dyn Transaction>> {
        self.store.transaction()
    }

    fn close(&self) -> Result<()> {
        self.store.close()
    }
}

/// Checks the watchable layer's bound on stored versions (`context` prefixes a failure): every
/// version that an entry still in the log made current can be read, and no replaced version
/// outlived the last entry that referred to it (its record names an entry below the log start).
pub fn assert_versions_bounded<S: Store + 'static>(store: &crate::Watchable<S>, context: &str) {
    use crate::watchable::RESERVED_BYTE;
    let start = store.log_start().unwrap();
    let history = store
        .inner()
        .scan(&[RESERVED_BYTE, b'h'], &[RESERVED_BYTE, b'h' + 1])
        .unwrap();
    for item in history {
        let (key, value) = item.unwrap();
        let ref_seq = u64::from_be_bytes(value[..8].try_into().unwrap());
        assert!(
            ref_seq >= start,
            "{context}: {key:?} of entry {ref_seq} outlived the log start {start}"
        );
    }
    let snapshot = store.versioned_snapshot().unwrap();
    for entry in store.log_entries(start, usize::MAX).unwrap() {
        for op in &entry.ops {
            let stored = snapshot.get_at_version(op.key(), op.version()).unwrap();
            assert!(
                stored.is_some(),
                "{context}: version {:?} of entry {} is gone",
                op.version(),
                entry.seq
            );
        }
    }
}

/// Watchable options for tests: every key managed, a manual clock and a seeded generator.
pub fn watchable_options_all_managed() -> crate::WatchableOptions {
    crate::WatchableOptions::new(
        vec![Vec::new()],
        std::sync::Arc::new(crate::ManualClock::new(1)),
        std::sync::Arc::new(SeededRng::new(1)),
    )
}

/// Expands to one `#[test]` per check of a [`StoreSet`](crate::StoreSet), each opening a fresh,
/// empty set with `$open`: an expression giving the set and what must outlive it.
#[macro_export]
macro_rules! store_set_tests {
    ($open:expr) => {
        $crate::store_set_tests!(@each $open;
            set_opens_each_name_once, set_keeps_stores_apart, set_destroy_removes_one_store,
            set_refuses_bad_names, set_close_closes_its_stores, set_reopens_a_closed_store);
    };
    (@each $open:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (set, _guard) = $open;
                $crate::testing::$name(&set);
            }
        )*
    };
}

/// Opening a name twice gives the same store (one commit queue); names lists what exists.
pub fn set_opens_each_name_once(set: &dyn crate::StoreSet) {
    assert!(set.names().expect("names").is_empty());
    let first = set.open("db_1").expect("open");
    first.put(b"k", b"v").expect("put");
    let again = set.open("db_1").expect("open again");
    assert_eq!(again.get(b"k").expect("get"), Some(b"v".to_vec()));
    // A transaction through one handle conflicts with a commit through the other.
    let transaction = first.transaction().expect("transaction");
    transaction.get(b"k").expect("read");
    transaction.put(b"k", b"mine").expect("write");
    again.put(b"k", b"theirs").expect("put");
    assert!(matches!(
        transaction.commit(),
        Err(Error::ConcurrentTransaction)
    ));
    set.open("service").expect("open");
    assert_eq!(set.names().expect("names"), vec!["db_1", "service"]);
}

/// Keys written to one store are invisible in another, in gets and in full scans.
pub fn set_keeps_stores_apart(set: &dyn crate::StoreSet) {
    let a = set.open("a").expect("open a");
    let b = set.open("b").expect("open b");
    a.put(b"k", b"in a").expect("put");
    b.put(b"k", b"in b").expect("put");
    b.put(b"only_b", b"x").expect("put");
    assert_eq!(a.get(b"k").expect("get"), Some(b"in a".to_vec()));
    assert_eq!(a.get(b"only_b").expect("get"), None);
    assert_eq!(
        collect(a.as_ref(), b"", b""),
        vec![(b"k".to_vec(), b"in a".to_vec())]
    );
    assert_eq!(collect(b.as_ref(), b"", b"").len(), 2);
}

/// Destroying a store closes it, drops its data and leaves the others alone; the name can be
/// opened again, empty.
pub fn set_destroy_removes_one_store(set: &dyn crate::StoreSet) {
    let doomed = set.open("doomed").expect("open");
    let kept = set.open("kept").expect("open");
    doomed.put(b"k", b"v").expect("put");
    kept.put(b"k", b"v").expect("put");
    set.destroy("doomed").expect("destroy");
    assert!(matches!(doomed.get(b"k"), Err(Error::StoreClosed)));
    assert_eq!(set.names().expect("names"), vec!["kept"]);
    assert_eq!(kept.get(b"k").expect("get"), Some(b"v".to_vec()));
    set.destroy("doomed").expect("destroying an absent store");
    let fresh = set.open("doomed").expect("reopen");
    assert_eq!(fresh.get(b"k").expect("get"), None);
}

/// Names outside the alphabet, empty or too long are refused, never passed to the engine.
pub fn set_refuses_bad_names(set: &dyn crate::StoreSet) {
    let long = "a".repeat(crate::set::STORE_NAME_BYTES_MAX + 1);
    for name in ["", "Upper", "with space", "dot.", "../x", long.as_str()] {
        assert!(matches!(set.open(name), Err(Error::Misuse(_))), "{name:?}");
        assert!(
            matches!(set.destroy(name), Err(Error::Misuse(_))),
            "{name:?}"
        );
    }
    set.open(&"a".repeat(crate::set::STORE_NAME_BYTES_MAX))
        .expect("the longest name");
}

/// Closing the set closes its stores; a closed set refuses to open more.
pub fn set_close_closes_its_stores(set: &dyn crate::StoreSet) {
    let store = set.open("s").expect("open");
    store.put(b"k", b"v").expect("put");
    set.close().expect("close");
    set.close().expect("close twice");
    assert!(matches!(store.get(b"k"), Err(Error::StoreClosed)));
    assert!(matches!(set.open("s"), Err(Error::StoreClosed)));
}

/// A store its user closed is opened anew, working (the persistent set's own tests check that
/// its data is still there).
pub fn set_reopens_a_closed_store(set: &dyn crate::StoreSet) {
    let store = set.open("s").expect("open");
    store.close().expect("close the store");
    let again = set.open("s").expect("reopen");
    again.put(b"k", b"v").expect("put");
    assert_eq!(again.get(b"k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(set.names().expect("names"), vec!["s"]);
}
