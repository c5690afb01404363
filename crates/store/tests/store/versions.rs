//! Format 2 of the watchable layer: tombstone versions, replaced-version parents, authors,
//! version operations for sync, and the migration of a format-1 store.

use std::sync::Arc;

use syncbase_store::watchable::{RESERVED_BYTE, WATCHABLE_FORMAT_VERSION};
use syncbase_store::{
    Head, LogOp, ManualClock, MemStore, Origin, SeededRng, Store, StoreReader, StoreWriter, Stored,
    Transaction, Version, Watchable, WatchableOptions, open_memstore,
};

fn options() -> WatchableOptions {
    WatchableOptions::new(
        vec![b"r/".to_vec()],
        Arc::new(ManualClock::new(1_000)),
        Arc::new(SeededRng::new(11)),
    )
}

fn open() -> Watchable<MemStore> {
    Watchable::open(open_memstore(), options()).unwrap()
}

fn code<T>(result: syncbase_store::Result<T>) -> &'static str {
    match result {
        Err(error) => error.code(),
        Ok(_) => "ok",
    }
}

fn last_ops<S: Store + 'static>(store: &Watchable<S>) -> Vec<LogOp> {
    let latest = store.latest_log_seq();
    store.log_entries(latest, 1).unwrap().remove(0).ops
}

/// Every change of a key has a version and names the one it replaced: put, overwrite, delete
/// (a tombstone), put again over the tombstone. Each replaced version stays readable.
#[test]
fn every_change_records_its_version_and_the_one_it_replaced() {
    let store = open();
    store.put(b"r/k", b"one").unwrap();
    let [
        LogOp::Put {
            version: one,
            parent: None,
            ..
        },
    ] = last_ops(&store)[..]
    else {
        panic!("{:?}", last_ops(&store));
    };
    store.put(b"r/k", b"two").unwrap();
    let [
        LogOp::Put {
            version: two,
            parent: Some(parent),
            ..
        },
    ] = last_ops(&store)[..]
    else {
        panic!("{:?}", last_ops(&store));
    };
    assert_eq!(parent, one);
    store.delete(b"r/k").unwrap();
    let [
        LogOp::Delete {
            version: tombstone,
            parent: Some(parent),
            ..
        },
    ] = last_ops(&store)[..]
    else {
        panic!("{:?}", last_ops(&store));
    };
    assert_eq!(parent, two);
    assert_ne!(tombstone, two);
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.head(b"r/k").unwrap(),
        Some(Head {
            version: tombstone,
            deleted: true
        })
    );
    assert_eq!(snapshot.get(b"r/k").unwrap(), None);
    assert_eq!(
        snapshot.get_at_version(b"r/k", two).unwrap(),
        Some(Stored::Value(b"two".to_vec()))
    );
    assert_eq!(
        snapshot.get_at_version(b"r/k", tombstone).unwrap(),
        Some(Stored::Tombstone)
    );
    // A delete of a deleted key is no change.
    let before = store.latest_log_seq();
    store.delete(b"r/k").unwrap();
    assert_eq!(store.latest_log_seq(), before);
    store.put(b"r/k", b"three").unwrap();
    let [
        LogOp::Put {
            parent: Some(parent),
            ..
        },
    ] = last_ops(&store)[..]
    else {
        panic!("{:?}", last_ops(&store));
    };
    assert_eq!(parent, tombstone);
    assert_eq!(
        store
            .versioned_snapshot()
            .unwrap()
            .get_at_version(b"r/k", tombstone)
            .unwrap(),
        Some(Stored::Tombstone)
    );
    assert_eq!(store.get(b"r/k").unwrap(), Some(b"three".to_vec()));
}

/// A log entry carries who made the change and on which device; a change sync applies carries
/// the original author, device and timestamp.
#[test]
fn entries_carry_author_device_and_the_given_timestamp() {
    let store = open();
    let local = store.begin(Origin::local("alice:laptop", 7)).unwrap();
    local.put(b"r/a", b"v").unwrap();
    local.commit().unwrap();
    let synced = store
        .begin(Origin {
            author: "bob:phone".into(),
            device: 9,
            from_sync: true,
            timestamp_ns: Some(55),
        })
        .unwrap();
    synced.put(b"r/b", b"v").unwrap();
    synced.commit().unwrap();
    let entries = store.log_entries(0, 10).unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.author.as_str(), e.device, e.from_sync, e.timestamp_ns))
        .collect();
    assert_eq!(
        summary,
        [
            ("alice:laptop", 7, false, 1_000),
            ("bob:phone", 9, true, 55)
        ]
    );
    assert!(entries.iter().all(|e| e.committed_ns == 1_000));
}

/// Sync's operations: a received version is stored (listed in the entry, not current), then
/// made current with its parent recorded; a received tombstone likewise; applying what is
/// already current changes nothing; a value version is not a tombstone and the reverse.
#[test]
fn sync_stores_versions_and_makes_values_and_tombstones_current() {
    let store = open();
    store.put(b"r/k", b"local").unwrap();
    let local = last_ops(&store)[0].version();
    let remote = Version(0xabc);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction
        .put_at_version(b"r/k", remote, b"remote")
        .unwrap();
    transaction.commit().unwrap();
    let entry = store
        .log_entries(store.latest_log_seq(), 1)
        .unwrap()
        .remove(0);
    assert!(entry.ops.is_empty());
    assert_eq!(entry.stored.len(), 1);
    assert_eq!(store.get(b"r/k").unwrap(), Some(b"local".to_vec()));

    let transaction = store.begin(Origin::default()).unwrap();
    transaction.put_version(b"r/k", remote).unwrap();
    transaction.commit().unwrap();
    assert_eq!(
        last_ops(&store),
        [LogOp::Put {
            key: b"r/k".to_vec(),
            version: remote,
            parent: Some(local)
        }]
    );
    assert_eq!(store.get(b"r/k").unwrap(), Some(b"remote".to_vec()));
    let before = store.latest_log_seq();
    let again = store.begin(Origin::default()).unwrap();
    again.put_version(b"r/k", remote).unwrap();
    assert_eq!(
        code(again.delete_version(b"r/k", remote)),
        "store.version_conflict"
    );
    again.commit().unwrap();
    assert_eq!(store.latest_log_seq(), before);

    let gone = Version(0xdead);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.delete_version(b"r/k", gone).unwrap();
    transaction.delete_version(b"r/k", gone).unwrap();
    assert_eq!(
        code(transaction.put_at_version(b"r/k", gone, b"x")),
        "store.version_conflict"
    );
    transaction.commit().unwrap();
    assert_eq!(
        last_ops(&store),
        [LogOp::Delete {
            key: b"r/k".to_vec(),
            version: gone,
            parent: Some(remote)
        }]
    );
    // The local value it replaced long ago is still there (inside the window).
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.get_at_version(b"r/k", local).unwrap(),
        Some(Stored::Value(b"local".to_vec()))
    );
    // A delete that is the first news of a key has no parent.
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.delete_version(b"r/new", Version(5)).unwrap();
    transaction.commit().unwrap();
    assert_eq!(last_ops(&store)[0].parent(), None);
    assert_eq!(
        code(
            store
                .begin(Origin::default())
                .unwrap()
                .put_version(b"r/k", Version(404))
        ),
        "store.corrupt"
    );
}

/// A received version that wins as it arrives is stored and made current in one step: a new
/// key (no parent), over a value and over a tombstone (each kept, named as the parent); the
/// same version again with the same bytes changes nothing, with other bytes (or over its own
/// tombstone) is refused; a version this very transaction stored goes the two-step way.
#[test]
fn a_received_version_is_stored_and_made_current_in_one_step() {
    let store = open();
    let one = Version(0x11);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction
        .put_current_version(b"r/a", one, b"one")
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(
        last_ops(&store),
        [LogOp::Put {
            key: b"r/a".to_vec(),
            version: one,
            parent: None
        }]
    );
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"one".to_vec()));

    let before = store.latest_log_seq();
    let again = store.begin(Origin::default()).unwrap();
    again.put_current_version(b"r/a", one, b"one").unwrap();
    assert_eq!(
        code(again.put_current_version(b"r/a", one, b"other")),
        "store.version_conflict"
    );
    again.commit().unwrap();
    assert_eq!(store.latest_log_seq(), before);

    let two = Version(0x22);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction
        .put_current_version(b"r/a", two, b"two")
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(last_ops(&store)[0].parent(), Some(one));
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.get_at_version(b"r/a", one).unwrap(),
        Some(Stored::Value(b"one".to_vec()))
    );

    let gone = Version(0x33);
    let three = Version(0x44);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.delete_version(b"r/a", gone).unwrap();
    transaction.commit().unwrap();
    let transaction = store.begin(Origin::default()).unwrap();
    assert_eq!(
        code(transaction.put_current_version(b"r/a", gone, b"x")),
        "store.version_conflict"
    );
    drop(transaction);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction
        .put_current_version(b"r/a", three, b"three")
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(last_ops(&store)[0].parent(), Some(gone));
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"three".to_vec()));
    assert_eq!(
        store.versioned_snapshot().unwrap().head(b"r/a").unwrap(),
        Some(Head {
            version: three,
            deleted: false
        })
    );

    let four = Version(0x55);
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.put_at_version(b"r/a", four, b"four").unwrap();
    assert_eq!(
        code(transaction.put_current_version(b"r/a", four, b"not four")),
        "store.version_conflict"
    );
    transaction
        .put_current_version(b"r/a", four, b"four")
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"four".to_vec()));
    assert_eq!(last_ops(&store)[0].parent(), Some(three));
}

/// A version this store keeps but never made current (stored by an earlier round) may become
/// current in one step only with its own bytes, whether the keys are read one by one or, for
/// many keys, by range reads over their span.
#[test]
fn a_kept_version_becomes_current_only_with_its_own_bytes() {
    for count in [1usize, 100] {
        let store = open();
        let keys: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("r/k{i:03}").into_bytes())
            .collect();
        let kept = Version(0x77);
        let transaction = store.begin(Origin::default()).unwrap();
        for key in &keys {
            transaction.put(key, b"local").unwrap();
            transaction.put_at_version(key, kept, b"kept").unwrap();
        }
        transaction.commit().unwrap();
        let items = |value: &'static [u8]| -> Vec<(&[u8], Version, &[u8])> {
            keys.iter()
                .map(|key| (key.as_slice(), kept, value))
                .collect()
        };
        let transaction = store.begin(Origin::default()).unwrap();
        assert_eq!(
            code(transaction.put_current_versions(&items(b"other"))),
            "store.version_conflict",
            "{count} keys"
        );
        drop(transaction);
        let transaction = store.begin(Origin::default()).unwrap();
        transaction.put_current_versions(&items(b"kept")).unwrap();
        transaction.commit().unwrap();
        for key in &keys {
            assert_eq!(store.get(key).unwrap(), Some(b"kept".to_vec()));
        }
        let ops = last_ops(&store);
        assert_eq!(ops.len(), count);
        assert!(
            ops.iter()
                .all(|op| op.version() == kept && op.parent().is_some())
        );
    }
}

/// A purge (a destroyed collection) removes the old values of keys under a prefix, those this
/// very transaction retired included, and no value elsewhere.
#[test]
fn a_purge_removes_old_values_under_its_prefix_only() {
    let store = open();
    store.put(b"r/c/a", b"old").unwrap();
    store.put(b"r/c/a", b"new").unwrap();
    store.put(b"r/d/a", b"old").unwrap();
    store.put(b"r/d/a", b"new").unwrap();
    let versions: Vec<Version> = store
        .log_entries(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.ops[0].version())
        .collect();
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.delete(b"r/c/a").unwrap();
    assert_eq!(transaction.purge_versions(b"r/c/").unwrap(), 2);
    transaction.commit().unwrap();
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.get_at_version(b"r/c/a", versions[0]).unwrap(),
        None
    );
    assert_eq!(
        snapshot.get_at_version(b"r/c/a", versions[1]).unwrap(),
        None
    );
    assert_eq!(
        snapshot.get_at_version(b"r/d/a", versions[2]).unwrap(),
        Some(Stored::Value(b"old".to_vec()))
    );
    assert!(snapshot.head(b"r/c/a").unwrap().unwrap().deleted);
}

/// Raw keys of format 1, as the previous build wrote them.
fn v1_key(tag: u8, key: &[u8], version: Option<u64>) -> Vec<u8> {
    let mut out = vec![RESERVED_BYTE, tag];
    out.extend_from_slice(key);
    if let Some(version) = version {
        out.extend_from_slice(&version.to_be_bytes());
    }
    out
}

/// A format-1 store (current values behind pointers, every old value kept, log entries of the
/// old shape) opens migrated: current values read back, old values and the old log are gone,
/// the log continues after the old one's end, and a reopen finds format 2.
#[test]
fn a_format_1_store_is_migrated_on_open() {
    let inner = Arc::new(open_memstore());
    inner
        .put(&[RESERVED_BYTE, b'm', b'f'], &1u32.to_be_bytes())
        .unwrap();
    // `r/a` had versions 1 then 2; `r/b` version 3; `r/gone` version 4 then deleted.
    for (key, version, value) in [
        (&b"r/a"[..], 1u64, &b"a1"[..]),
        (b"r/a", 2, b"a2"),
        (b"r/b", 3, b"b3"),
        (b"r/gone", 4, b"g4"),
    ] {
        inner.put(&v1_key(b'r', key, Some(version)), value).unwrap();
    }
    inner
        .put(&v1_key(b'v', b"r/a", None), &2u64.to_be_bytes())
        .unwrap();
    inner
        .put(&v1_key(b'v', b"r/b", None), &3u64.to_be_bytes())
        .unwrap();
    for seq in 3u64..=9 {
        inner
            .put(&v1_key(b'l', &seq.to_be_bytes(), None), b"old entry")
            .unwrap();
    }
    inner.put(b"unmanaged", b"stays").unwrap();
    inner
        .put(&[RESERVED_BYTE, b'm', b's'], &3u64.to_be_bytes())
        .unwrap();

    let store = Watchable::open(inner.clone(), options()).unwrap();
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"a2".to_vec()));
    assert_eq!(store.get(b"r/b").unwrap(), Some(b"b3".to_vec()));
    assert_eq!(store.get(b"r/gone").unwrap(), None);
    assert_eq!(store.get(b"unmanaged").unwrap(), Some(b"stays".to_vec()));
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.head(b"r/a").unwrap(),
        Some(Head {
            version: Version(2),
            deleted: false
        })
    );
    assert_eq!(snapshot.get_at_version(b"r/a", Version(1)).unwrap(), None);
    let rows = store.scan(b"r/", b"r0").unwrap().collect_entries().unwrap();
    assert_eq!(
        rows,
        [
            (b"r/a".to_vec(), b"a2".to_vec()),
            (b"r/b".to_vec(), b"b3".to_vec())
        ]
    );
    assert_eq!(store.latest_log_seq(), 9);
    assert_eq!(store.log_start().unwrap(), 10);
    assert!(store.log_entries(0, 100).unwrap().is_empty());
    assert!(!store.log_retains(9).unwrap());
    assert!(store.log_retains(10).unwrap());
    // Nothing of format 1 is left among the reserved keys.
    let reserved: Vec<Vec<u8>> = inner
        .scan(&[RESERVED_BYTE], &[])
        .unwrap()
        .map(|entry| entry.unwrap().0)
        .collect();
    assert!(
        reserved.iter().all(|key| matches!(key[1], b'c' | b'm')),
        "{reserved:?}"
    );
    store.put(b"r/a", b"a3").unwrap();
    assert_eq!(last_ops(&store)[0].parent(), Some(Version(2)));
    assert_eq!(store.latest_log_seq(), 10);
    drop(store);
    let reopened = Watchable::open(inner.clone(), options()).unwrap();
    assert_eq!(reopened.get(b"r/a").unwrap(), Some(b"a3".to_vec()));
    assert_eq!(
        inner.get(&[RESERVED_BYTE, b'm', b'f']).unwrap(),
        Some(WATCHABLE_FORMAT_VERSION.to_be_bytes().to_vec())
    );
}

/// A migration that stops part-way (here: a pointer whose value is missing, as a crash between
/// commits cannot leave but a damaged disk can) leaves the store at format 1 with a clear
/// error, and nothing it already moved is lost.
#[test]
fn a_format_1_store_with_a_dangling_pointer_is_refused_clearly() {
    let inner = Arc::new(open_memstore());
    inner
        .put(&[RESERVED_BYTE, b'm', b'f'], &1u32.to_be_bytes())
        .unwrap();
    inner
        .put(&v1_key(b'v', b"r/x", None), &8u64.to_be_bytes())
        .unwrap();
    let error = Watchable::open(inner.clone(), options()).err().unwrap();
    assert_eq!(error.code(), "store.corrupt");
    assert!(error.to_string().contains("no value"), "{error}");
    assert_eq!(
        inner.get(&[RESERVED_BYTE, b'm', b'f']).unwrap(),
        Some(1u32.to_be_bytes().to_vec())
    );
}
