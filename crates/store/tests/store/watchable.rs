//! The watchable layer: versions, the watch log, its notifier and its reserved range.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use syncbase_store::{
    Clock, Head, LogEvent, LogOp, ManualClock, MemStore, Origin, SeededRng, Store, StoreReader,
    StoreWriter, Stored, Transaction, Version, Watchable, WatchableOptions, open_memstore,
};

/// The origin of a change sync applies.
fn synced() -> Origin {
    Origin {
        from_sync: true,
        ..Origin::default()
    }
}

fn open_with_clock(clock: Arc<dyn Clock>) -> Watchable<MemStore> {
    let options = WatchableOptions::new(
        vec![b"r/".to_vec(), b"c/".to_vec()],
        clock,
        Arc::new(SeededRng::new(42)),
    );
    Watchable::open(open_memstore(), options).unwrap()
}

fn open() -> (Watchable<MemStore>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000));
    (open_with_clock(clock.clone()), clock)
}

fn code<T>(result: syncbase_store::Result<T>) -> &'static str {
    match result {
        Err(error) => error.code(),
        Ok(_) => "ok",
    }
}

#[test]
fn each_commit_touching_managed_keys_appends_one_entry() {
    let (store, clock) = open();
    // `c/x` exists, so its delete below is a change (deleting an absent key logs nothing).
    store.put(b"c/x", b"0").unwrap();
    let base = store.latest_log_seq();
    let transaction = store.begin(Origin::default()).unwrap();
    transaction.put(b"r/a", b"1").unwrap();
    transaction.put(b"r/b", b"2").unwrap();
    transaction.delete(b"c/x").unwrap();
    transaction.put(b"s/unmanaged", b"3").unwrap();
    transaction.commit().unwrap();
    clock.advance(500);
    let from_sync = store.begin(synced()).unwrap();
    from_sync.put(b"r/a", b"4").unwrap();
    from_sync.commit().unwrap();
    // Unmanaged-only and read-only commits write no entry.
    store.put(b"s/other", b"5").unwrap();
    let reader = store.begin(Origin::default()).unwrap();
    reader.get(b"r/a").unwrap();
    reader.commit().unwrap();

    let entries = store.log_entries(base + 1, 100).unwrap();
    assert_eq!(entries.len(), 2);
    let (first, second) = (&entries[0], &entries[1]);
    assert_eq!(
        (first.seq, first.timestamp_ns, first.from_sync),
        (base + 1, 1_000, false)
    );
    assert_eq!(
        (second.seq, second.timestamp_ns, second.from_sync),
        (base + 2, 1_500, true)
    );
    let keys: Vec<&[u8]> = first.ops.iter().map(LogOp::key).collect();
    assert_eq!(keys, vec![&b"r/a"[..], b"r/b", b"c/x"]);
    assert!(matches!(first.ops[2], LogOp::Delete { .. }));
    assert_eq!(store.latest_log_seq(), base + 2);
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"4".to_vec()));
    assert_eq!(store.get(b"s/unmanaged").unwrap(), Some(b"3".to_vec()));
}

#[test]
fn a_failed_commit_leaves_no_entry() {
    let (store, _clock) = open();
    store.put(b"r/a", b"0").unwrap();
    let loser = store.begin(Origin::default()).unwrap();
    loser.get(b"r/a").unwrap();
    loser.put(b"r/a", b"loser").unwrap();
    store.put(b"r/a", b"winner").unwrap();
    assert_eq!(code(loser.commit()), "store.concurrent_transaction");
    let entries = store.log_entries(0, 100).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"winner".to_vec()));
}

/// A transaction reading the log's settled tail (as sync's watcher does) sees the entries
/// committed before it began, and commits although other commits appended entries meanwhile;
/// the range it read ends where the log ended when it began. A read of the whole tail, or of a
/// key another commit writes, still conflicts.
#[test]
fn reading_the_log_tail_does_not_conflict_with_later_appends() {
    let (store, _clock) = open();
    store.put(b"r/a", b"0").unwrap();
    let seen = store.latest_log_seq();
    let tail = store.begin(Origin::default()).unwrap();
    let entries = tail.log_entries_seen(1, usize::MAX).unwrap();
    assert_eq!(entries.last().map(|entry| entry.seq), Some(seen));
    assert!(tail.log_entries_seen(seen + 1, 10).unwrap().is_empty());
    store.put(b"r/b", b"1").unwrap();
    assert!(
        tail.log_entries_seen(seen + 1, 10).unwrap().is_empty(),
        "an entry committed after the transaction began is not in it"
    );
    tail.put(b"s/pin", b"done").unwrap();
    tail.commit().unwrap();
    // Reading the whole tail covers the log's open end: an append conflicts.
    let whole = store.begin(Origin::default()).unwrap();
    whole.log_entries(1, usize::MAX).unwrap();
    whole.put(b"s/pin", b"whole").unwrap();
    store.put(b"r/c", b"3").unwrap();
    assert_eq!(code(whole.commit()), "store.concurrent_transaction");
    // A write to a key the transaction read still conflicts.
    let reader = store.begin(Origin::default()).unwrap();
    reader.log_entries_seen(1, usize::MAX).unwrap();
    reader.get(b"r/a").unwrap();
    reader.put(b"s/pin", b"again").unwrap();
    store.put(b"r/a", b"2").unwrap();
    assert_eq!(code(reader.commit()), "store.concurrent_transaction");
}

#[test]
fn puts_mint_versions_and_keep_old_values() {
    let (store, _clock) = open();
    store.put(b"r/a", b"one").unwrap();
    store.put(b"r/a", b"two").unwrap();
    let entries = store.log_entries(0, 10).unwrap();
    let version_of = |index: usize| match &entries[index].ops[0] {
        LogOp::Put { version, .. } => *version,
        LogOp::Delete { .. } => panic!("expected a put"),
    };
    let (first, second) = (version_of(0), version_of(1));
    assert_ne!(first, second);
    let snapshot = store.versioned_snapshot().unwrap();
    assert_eq!(
        snapshot.head(b"r/a").unwrap(),
        Some(Head {
            version: second,
            deleted: false
        })
    );
    assert_eq!(
        snapshot.get_at_version(b"r/a", first).unwrap(),
        Some(Stored::Value(b"one".to_vec()))
    );
    assert_eq!(
        snapshot.get_at_version(b"r/a", second).unwrap(),
        Some(Stored::Value(b"two".to_vec()))
    );
    assert_eq!(snapshot.get_at_version(b"r/a", Version(7)).unwrap(), None);
    assert_eq!(code(snapshot.head(b"s/x")), "store.not_managed");
}

#[test]
fn sync_puts_at_a_version_then_makes_it_current() {
    let (store, _clock) = open();
    store.put(b"r/a", b"local").unwrap();
    let remote = Version(0xabcd);
    let transaction = store.begin(synced()).unwrap();
    transaction
        .put_at_version(b"r/a", remote, b"remote")
        .unwrap();
    assert_eq!(transaction.get(b"r/a").unwrap(), Some(b"local".to_vec()));
    assert_eq!(
        transaction.get_at_version(b"r/a", remote).unwrap(),
        Some(Stored::Value(b"remote".to_vec()))
    );
    assert_eq!(
        code(transaction.put_version(b"r/a", Version(1))),
        "store.corrupt"
    );
    transaction.put_version(b"r/a", remote).unwrap();
    assert_eq!(
        transaction.head(b"r/a").unwrap().map(|head| head.version),
        Some(remote)
    );
    transaction.commit().unwrap();
    assert_eq!(store.get(b"r/a").unwrap(), Some(b"remote".to_vec()));
    let last = store.log_entries(2, 10).unwrap();
    assert_eq!(last.len(), 1);
    assert!(last[0].from_sync);
    let local = store.log_entries(1, 1).unwrap()[0].ops[0].version();
    assert_eq!(
        last[0].ops,
        vec![LogOp::Put {
            key: b"r/a".to_vec(),
            version: remote,
            parent: Some(local),
        }]
    );
}

#[test]
fn reserved_keys_and_mixed_scans_are_refused() {
    let (store, _clock) = open();
    assert_eq!(code(store.put(b"\xffl", b"x")), "store.reserved_key");
    assert_eq!(code(store.get(b"\xffv")), "store.reserved_key");
    assert_eq!(code(store.scan(b"a", b"z").map(|_| ())), "store.mixed_scan");
    store.put(b"a", b"unmanaged").unwrap();
    store.put(b"r/x", b"managed").unwrap();
    // An unmanaged scan to the end stops before the reserved range.
    store.put(b"s", b"last").unwrap();
    let tail = store.scan(b"s", b"").unwrap().collect_entries().unwrap();
    assert_eq!(tail, vec![(b"s".to_vec(), b"last".to_vec())]);
    let head = store.scan(b"", b"c/").unwrap().collect_entries().unwrap();
    assert_eq!(head, vec![(b"a".to_vec(), b"unmanaged".to_vec())]);
    let rows = store.scan(b"r/", b"r0").unwrap().collect_entries().unwrap();
    assert_eq!(rows, vec![(b"r/x".to_vec(), b"managed".to_vec())]);
}

#[test]
fn the_log_start_only_moves_forward_and_prunes() {
    let (store, _clock) = open();
    for index in 0..5 {
        store.put(format!("r/{index}").as_bytes(), b"v").unwrap();
    }
    assert_eq!(store.log_start().unwrap(), 1);
    store.advance_log_start(4).unwrap();
    assert_eq!(store.log_start().unwrap(), 4);
    let seqs: Vec<u64> = store
        .log_entries(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    store.advance_log_start(2).unwrap();
    assert_eq!(store.log_start().unwrap(), 4);
    store.advance_log_start(100).unwrap();
    assert_eq!(store.log_start().unwrap(), 6);
    assert!(store.log_entries(0, 10).unwrap().is_empty());
    store.put(b"r/after", b"v").unwrap();
    assert_eq!(store.log_entries(0, 10).unwrap()[0].seq, 6);
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_notifier_wakes_an_async_waiter_on_commit() {
    let (store, _clock) = open();
    let notifier = store.notifier();
    let mut wait = std::pin::pin!(notifier.wait_after(0));
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut context = Context::from_waker(&waker);
    assert!(wait.as_mut().poll(&mut context).is_pending());
    store.put(b"s/unmanaged", b"no entry").unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    store.put(b"r/a", b"v").unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        wait.as_mut().poll(&mut context),
        Poll::Ready(LogEvent::Advanced(1))
    );
    let mut after_close = std::pin::pin!(notifier.wait_after(1));
    assert!(after_close.as_mut().poll(&mut context).is_pending());
    store.close().unwrap();
    assert_eq!(
        after_close.as_mut().poll(&mut context),
        Poll::Ready(LogEvent::Closed)
    );
}

#[test]
fn the_notifier_wakes_a_blocked_thread() {
    let (store, _clock) = open();
    let notifier = store.notifier();
    let waiter =
        std::thread::spawn(move || notifier.wait_after_blocking(0, Duration::from_secs(60)));
    store.put(b"r/a", b"v").unwrap();
    assert_eq!(waiter.join().unwrap(), Some(LogEvent::Advanced(1)));
}

/// A clock that ticks on every reading, so timestamps reveal the order entries were made in.
struct TickingClock(AtomicU64);

impl Clock for TickingClock {
    fn now_ns(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
}

#[test]
fn concurrent_commits_get_log_positions_in_commit_order() {
    let store = open_with_clock(Arc::new(TickingClock(AtomicU64::new(1))));
    std::thread::scope(|scope| {
        for writer in 0..8 {
            let store = &store;
            scope.spawn(move || {
                for round in 0..50 {
                    store
                        .put(format!("r/{writer}/{round}").as_bytes(), b"v")
                        .unwrap();
                }
            });
        }
    });
    let entries = store.log_entries(0, 1_000).unwrap();
    assert_eq!(entries.len(), 400);
    assert!(
        entries
            .windows(2)
            .all(|pair| pair[0].seq < pair[1].seq && pair[0].timestamp_ns < pair[1].timestamp_ns)
    );
}

#[test]
fn watchable_over_a_shared_store_reopens_at_the_end_of_the_log() {
    let inner = Arc::new(open_memstore());
    let options = || {
        WatchableOptions::new(
            vec![b"r/".to_vec()],
            Arc::new(ManualClock::new(5)),
            Arc::new(SeededRng::new(9)),
        )
    };
    let first = Watchable::open(inner.clone(), options()).unwrap();
    for index in 0..37 {
        first.put(format!("r/{index}").as_bytes(), b"v").unwrap();
    }
    let second = Watchable::open(inner.clone(), options()).unwrap();
    assert_eq!(second.latest_log_seq(), 37);
    let transaction = second.transaction().unwrap();
    transaction.put(b"r/next", b"v").unwrap();
    transaction.commit().unwrap();
    assert_eq!(second.log_entries(38, 10).unwrap()[0].seq, 38);
}

/// The end of the log is found on reopen whatever its length and start (the search gallops
/// from the first entry, so every length around a power of two is worth a check).
#[test]
fn reopen_finds_the_end_of_logs_of_every_length_and_start() {
    let options = || {
        WatchableOptions::new(
            vec![b"r/".to_vec()],
            Arc::new(ManualClock::new(5)),
            Arc::new(SeededRng::new(4)),
        )
    };
    for (length, pruned_below) in [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 2),
        (7, 0),
        (8, 5),
        (9, 0),
        (64, 63),
        (65, 0),
        (300, 40),
    ] {
        let inner = Arc::new(open_memstore());
        let first = Watchable::open(inner.clone(), options()).unwrap();
        for index in 0..length {
            first.put(format!("r/{index}").as_bytes(), b"v").unwrap();
        }
        if pruned_below > 0 {
            first.advance_log_start(pruned_below).unwrap();
        }
        let second = Watchable::open(inner, options()).unwrap();
        assert_eq!(
            second.latest_log_seq(),
            length,
            "{length} entries from {pruned_below}"
        );
    }
}

#[test]
fn sequence_numbers_continue_after_a_full_prune_and_reopen() {
    let inner = Arc::new(open_memstore());
    let options = || {
        WatchableOptions::new(
            vec![b"r/".to_vec()],
            Arc::new(ManualClock::new(5)),
            Arc::new(SeededRng::new(3)),
        )
    };
    let first = Watchable::open(inner.clone(), options()).unwrap();
    for index in 0..4 {
        first.put(format!("r/{index}").as_bytes(), b"v").unwrap();
    }
    first.advance_log_start(100).unwrap();
    assert!(first.log_entries(0, 10).unwrap().is_empty());
    let second = Watchable::open(inner, options()).unwrap();
    assert_eq!(second.latest_log_seq(), 4);
    second.put(b"r/next", b"v").unwrap();
    let entries = second.log_entries(second.log_start().unwrap(), 10).unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5]);
}

#[test]
fn a_scan_to_the_end_of_a_managed_prefix_next_to_the_reserved_range_is_managed() {
    let options = WatchableOptions::new(
        vec![vec![0xfe]],
        Arc::new(ManualClock::new(1)),
        Arc::new(SeededRng::new(2)),
    );
    let store = Watchable::open(open_memstore(), options).unwrap();
    store.put(b"\xfe1", b"v").unwrap();
    store.put(b"a", b"unmanaged").unwrap();
    let rows = store.scan(b"\xfe", b"").unwrap().collect_entries().unwrap();
    assert_eq!(rows, vec![(b"\xfe1".to_vec(), b"v".to_vec())]);
    assert_eq!(code(store.scan(b"a", b"").map(|_| ())), "store.mixed_scan");
}

/// Deleting a managed key that is not there writes and logs nothing, alone or beside other
/// writes; deleting one that is there (or was put earlier in the same transaction) is logged.
#[test]
fn deleting_an_absent_key_logs_nothing() {
    let (store, _) = open();
    store.delete(b"r/never").unwrap();
    assert_eq!(store.latest_log_seq(), 0);
    store.put(b"r/k", b"v").unwrap();
    store.delete(b"r/k").unwrap();
    assert_eq!(store.latest_log_seq(), 2);
    store.delete(b"r/k").unwrap();
    assert_eq!(store.latest_log_seq(), 2);
    let transaction = store.transaction().unwrap();
    transaction.delete(b"r/absent").unwrap();
    transaction.put(b"r/new", b"v").unwrap();
    transaction.delete(b"r/new").unwrap();
    transaction.commit().unwrap();
    let entries = store.log_entries(3, 10).unwrap();
    assert_eq!(entries.len(), 1);
    let keys: Vec<Vec<u8>> = entries[0]
        .ops
        .iter()
        .map(|op| match op {
            LogOp::Put { key, .. } | LogOp::Delete { key, .. } => key.clone(),
        })
        .collect();
    assert_eq!(keys, vec![b"r/new".to_vec(), b"r/new".to_vec()]);
}

/// A version names one value forever: storing it again with the same bytes is a no-op, with
/// other bytes it is refused and the stored bytes stay.
#[test]
fn storing_a_stored_version_again_is_a_no_op_and_other_bytes_are_refused() {
    let (store, _) = open();
    let version = Version(77);
    let transaction = store.begin(synced()).unwrap();
    transaction.put_at_version(b"r/k", version, b"one").unwrap();
    transaction.put_at_version(b"r/k", version, b"one").unwrap();
    assert_eq!(
        code(transaction.put_at_version(b"r/k", version, b"two")),
        "store.version_conflict"
    );
    transaction.put_version(b"r/k", version).unwrap();
    transaction.commit().unwrap();
    assert_eq!(store.get(b"r/k").unwrap(), Some(b"one".to_vec()));
    let again = store.begin(synced()).unwrap();
    again.put_at_version(b"r/k", version, b"one").unwrap();
    assert_eq!(
        code(again.put_at_version(b"r/k", version, b"other")),
        "store.version_conflict"
    );
    again.commit().unwrap();
    assert_eq!(store.get(b"r/k").unwrap(), Some(b"one".to_vec()));
}

/// A log operation's key is encoded as one byte string: the same bytes as when it was encoded
/// byte by byte, so the watch logs of earlier builds read alike.
#[test]
fn log_operations_encode_their_keys_as_the_plain_byte_vectors_they_were() {
    use syncbase_store::{LogOp, StoredVersion};
    let keys: [&[u8]; 4] = [b"", b"k", &[0, 255, 7], &[9; 300]];
    for key in keys {
        let put = LogOp::Put {
            key: key.to_vec(),
            version: Version(5),
            parent: Some(Version(3)),
        };
        let delete = LogOp::Delete {
            key: key.to_vec(),
            version: Version(6),
            parent: None,
        };
        // A variant is its index, then its fields in order.
        let plain_put = (0u8, key.to_vec(), 5u64, Some(3u64));
        let plain_delete = (1u8, key.to_vec(), 6u64, None::<u64>);
        for (op, plain) in [
            (&put, postcard::to_stdvec(&plain_put).unwrap()),
            (&delete, postcard::to_stdvec(&plain_delete).unwrap()),
        ] {
            let encoded = postcard::to_stdvec(op).unwrap();
            assert_eq!(encoded, plain);
            assert_eq!(&postcard::from_bytes::<LogOp>(&encoded).unwrap(), op);
        }
        let stored = postcard::to_stdvec(&StoredVersion {
            key: key.to_vec(),
            version: Version(8),
        })
        .unwrap();
        assert_eq!(stored, postcard::to_stdvec(&(key.to_vec(), 8u64)).unwrap());
    }
}

/// A commit that skips the disk sync is not published: its entry is in the log, but readers
/// of the log's end (the notifier, `latest_log_seq`, a transaction's settled part) learn of it
/// only with the next commit that waits for the disk, which makes it durable.
#[test]
fn a_commit_that_skips_the_disk_sync_is_published_with_the_next_durable_one() {
    let (store, _) = open();
    store.put(b"r/a", b"0").unwrap();
    let base = store.latest_log_seq();
    let relaxed = store.begin(synced()).unwrap();
    relaxed.put(b"r/b", b"1").unwrap();
    relaxed.skip_disk_sync();
    relaxed.commit().unwrap();
    assert_eq!(store.latest_log_seq(), base);
    assert_eq!(store.get(b"r/b").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(store.log_entries(base + 1, 10).unwrap().len(), 1);
    let reader = store.begin(Origin::default()).unwrap();
    assert!(reader.log_entries_seen(base + 1, 10).unwrap().is_empty());
    assert_eq!(
        store
            .notifier()
            .wait_after_blocking(base, Duration::from_millis(1)),
        None
    );
    // A commit without a log entry publishes nothing either.
    store.put(b"s/unmanaged", b"2").unwrap();
    assert_eq!(store.latest_log_seq(), base);
    store.put(b"r/c", b"3").unwrap();
    assert_eq!(store.latest_log_seq(), base + 2);
    let entries = store.log_entries(base + 1, 10).unwrap();
    assert_eq!(
        entries.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        [base + 1, base + 2]
    );
}
