//! The persistent engine (fjall): the conformance suite (relaxed durability, plain and watchable),
//! persistence across reopen, format checks, group commit, and the kill -9 crash test.

// The crash test bounds waits on real time.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::sync::{Arc, Barrier};

use syncbase_store::testing::{WithGuard, watchable_options_all_managed};
use syncbase_store::{Durability, Error, Store, StoreReader, StoreSet, StoreWriter, Watchable};
use syncbase_store_fjall::{FORMAT_VERSION, FjallOptions, FjallStore, FjallStoreSet, open};
use tempfile::TempDir;

type TempStore = WithGuard<FjallStore, TempDir>;

fn open_temp(durability: Durability) -> TempStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("store"), durability).expect("open");
    WithGuard { store, guard: dir }
}

mod plain {
    syncbase_store::conformance_tests!(super::open_temp(syncbase_store::Durability::Relaxed));
}

mod watchable {
    syncbase_store::conformance_tests!(versioned
        syncbase_store::Watchable::open(
            super::open_temp(syncbase_store::Durability::Relaxed),
            syncbase_store::testing::watchable_options_all_managed()
        )
        .expect("open watchable")
    );
}

fn open_temp_set() -> (FjallStoreSet, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let set =
        FjallStoreSet::open_dir(dir.path(), FjallOptions::new(Durability::Relaxed)).expect("open");
    (set, dir)
}

mod set {
    syncbase_store::store_set_tests!(super::open_temp_set());

    mod store_in_a_set {
        use std::sync::Arc;

        use syncbase_store::testing::WithGuard;
        use syncbase_store::{Store, StoreSet};

        fn open_store()
        -> WithGuard<Arc<dyn Store>, (super::super::FjallStoreSet, tempfile::TempDir)> {
            let (set, dir) = super::super::open_temp_set();
            // Another store beside it, so its scans must not see the neighbour's keys.
            set.open("neighbour").unwrap().put(b"k", b"v").unwrap();
            WithGuard {
                store: set.open("db_0000000000000001").unwrap(),
                guard: (set, dir),
            }
        }

        syncbase_store::conformance_tests!(open_store());
    }
}

#[test]
fn stores_of_a_set_survive_reopen_and_a_destroyed_one_stays_gone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let set =
            FjallStoreSet::open_dir(dir.path(), FjallOptions::new(Durability::Durable)).unwrap();
        for name in ["a", "b", "c"] {
            set.open(name).unwrap().put(b"k", name.as_bytes()).unwrap();
        }
        set.destroy("b").unwrap();
        set.close().unwrap();
    }
    let set = FjallStoreSet::open_dir(dir.path(), FjallOptions::new(Durability::Durable)).unwrap();
    assert_eq!(set.names().unwrap(), vec!["a", "c"]);
    let c = set.open("c").unwrap();
    assert_eq!(c.get(b"k").unwrap(), Some(b"c".to_vec()));
    // Closed by its user and opened again: a fresh handle on the same data.
    c.close().unwrap();
    assert_eq!(
        set.open("c").unwrap().get(b"k").unwrap(),
        Some(b"c".to_vec())
    );
    assert_eq!(set.open("b").unwrap().get(b"k").unwrap(), None);
}

/// The keys of every store in the shared keyspace, as (store id, key) pairs.
fn raw_store_keys(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let database = fjall::Database::builder(path).open().unwrap();
    let stores = database
        .keyspace("syncbase_stores", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    stores
        .iter()
        .map(|guard| {
            let key = guard.key().unwrap();
            (
                u64::from_be_bytes(key[..8].try_into().unwrap()),
                key[8..].to_vec(),
            )
        })
        .collect()
}

/// A destroy removes every key of the store; one a crash interrupted after the store was
/// unregistered (its id marked doomed, its keys still there) is finished at the next open.
#[test]
fn destroy_purges_the_keys_and_an_interrupted_purge_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let set =
            FjallStoreSet::open_dir(dir.path(), FjallOptions::new(Durability::Durable)).unwrap();
        for name in ["a", "b", "c"] {
            let store = set.open(name).unwrap();
            // More keys than one purge batch takes.
            let transaction = store.transaction().unwrap();
            for index in 0..25_000u32 {
                transaction
                    .put(&index.to_be_bytes(), name.as_bytes())
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        set.destroy("a").unwrap();
        set.close().unwrap();
    }
    let ids: std::collections::BTreeSet<u64> = raw_store_keys(dir.path())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 2, "a's keys are left: {ids:?}");
    // The crash: `b` unregistered and doomed in one write, as destroy does, then no purge.
    let b_id = {
        let database = fjall::Database::builder(dir.path()).open().unwrap();
        let meta = database
            .keyspace("syncbase_meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let id = meta.get("store/b").unwrap().unwrap();
        let mut batch = database.batch();
        batch.remove(&meta, "store/b");
        batch.insert(&meta, [&b"doomed/"[..], id.as_ref()].concat(), []);
        batch.commit().unwrap();
        database.persist(fjall::PersistMode::SyncAll).unwrap();
        u64::from_be_bytes(id.as_ref().try_into().unwrap())
    };
    assert!(raw_store_keys(dir.path()).iter().any(|(id, _)| *id == b_id));
    let set = FjallStoreSet::open_dir(dir.path(), FjallOptions::new(Durability::Durable)).unwrap();
    assert_eq!(set.names().unwrap(), vec!["c"]);
    assert_eq!(
        set.open("c").unwrap().get(&7u32.to_be_bytes()).unwrap(),
        Some(b"c".to_vec())
    );
    // A store created under a destroyed name starts empty, with a new id.
    assert_eq!(
        set.open("a").unwrap().get(&7u32.to_be_bytes()).unwrap(),
        None
    );
    set.close().unwrap();
    let left: std::collections::BTreeSet<u64> = raw_store_keys(dir.path())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left.contains(&b_id));
    // Keys under an id no registry entry or doomed mark names are reported.
    {
        let database = fjall::Database::builder(dir.path()).open().unwrap();
        let stores = database
            .keyspace("syncbase_stores", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        for key in [&b"x"[..], b"y", b"z"] {
            stores
                .insert([&999u64.to_be_bytes()[..], key].concat(), b"stray")
                .unwrap();
        }
        database.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let set = FjallStoreSet::open_dir(dir.path(), FjallOptions::new(Durability::Durable)).unwrap();
    assert_eq!(set.unregistered_keys().unwrap(), (3, vec![999]));
}

/// A directory written by format 1 (one store, keyspace `syncbase_data`, keys behind `d`,
/// stamp 1), built here with fjall directly as that build wrote it, opens as a single store with
/// its data and stays format 1; opening it as a set is refused clearly.
#[test]
fn a_format_1_directory_opens_as_a_single_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let database = fjall::Database::builder(&path).open().unwrap();
        let meta = database
            .keyspace("syncbase_meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert("format_version", 1u32.to_be_bytes()).unwrap();
        let data = database
            .keyspace("syncbase_data", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        data.insert(b"dkey", b"old value").unwrap();
        data.insert(b"dzz", b"last").unwrap();
        database.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = open(&path, Durability::Durable).unwrap();
    assert_eq!(store.get(b"key").unwrap(), Some(b"old value".to_vec()));
    let all = store.scan(b"", b"").unwrap().collect_entries().unwrap();
    assert_eq!(all.len(), 2);
    store.put(b"new", b"v").unwrap();
    store.close().unwrap();
    drop(store);
    match FjallStoreSet::open_dir(&path, FjallOptions::new(Durability::Durable)) {
        Err(Error::Misuse(message)) => assert!(message.contains("format 1"), "{message}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a format-1 directory opened as a set"),
    }
    let store = open(&path, Durability::Durable).unwrap();
    assert_eq!(store.get(b"new").unwrap(), Some(b"v".to_vec()));
    store.close().unwrap();
    drop(store);
    let database = fjall::Database::builder(&path).open().unwrap();
    let meta = database
        .keyspace("syncbase_meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    assert_eq!(
        meta.get("format_version").unwrap().unwrap().as_ref(),
        1u32.to_be_bytes()
    );
}

#[test]
fn data_and_watch_log_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    for durability in [Durability::Durable, Durability::Relaxed] {
        let watchable = Watchable::open(
            open(&path, durability).unwrap(),
            watchable_options_all_managed(),
        )
        .unwrap();
        watchable
            .put(format!("{durability:?}").as_bytes(), b"v")
            .unwrap();
        watchable.close().unwrap();
    }
    let watchable = Watchable::open(
        open(&path, Durability::Durable).unwrap(),
        watchable_options_all_managed(),
    )
    .unwrap();
    assert_eq!(watchable.get(b"Durable").unwrap(), Some(b"v".to_vec()));
    assert_eq!(watchable.get(b"Relaxed").unwrap(), Some(b"v".to_vec()));
    assert_eq!(watchable.latest_log_seq(), 2);
    let entries = watchable.log_entries(0, 10).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    watchable.put(b"third", b"v").unwrap();
    assert_eq!(watchable.latest_log_seq(), 3);
}

#[test]
fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    open(&path, Durability::Durable).unwrap().close().unwrap();
    stamp_format(&path, FORMAT_VERSION + 1);
    match open(&path, Durability::Durable) {
        Err(Error::FormatTooNew { found, supported }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer format was opened"),
    }
}

fn stamp_format(path: &Path, version: u32) {
    let database = fjall::Database::builder(path).open().unwrap();
    let meta = database
        .keyspace("syncbase_meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    meta.insert("format_version", version.to_be_bytes())
        .unwrap();
    database.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[test]
fn a_second_open_of_the_same_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _first = open(&path, Durability::Durable).unwrap();
    match open(&path, Durability::Durable) {
        Err(error) => assert!(error.to_string().contains("already open"), "{error}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[test]
fn concurrent_durable_committers_share_disk_syncs() {
    let store = Arc::new(open_temp(Durability::Durable));
    let before = store.store.stats();
    let writers = 32;
    let rounds = 10;
    let barrier = Barrier::new(writers);
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let store = &store;
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for round in 0..rounds {
                    store
                        .put(format!("w{writer}/{round}").as_bytes(), b"v")
                        .unwrap();
                }
            });
        }
    });
    let after = store.store.stats();
    let commits = after.commits - before.commits;
    let syncs = after.disk_syncs - before.disk_syncs;
    assert_eq!(commits, (writers * rounds) as u64);
    assert!(
        syncs * 4 <= commits,
        "{commits} commits took {syncs} disk syncs"
    );
}

#[test]
fn a_commit_that_skips_the_disk_sync_waits_for_none_and_the_next_durable_one_does() {
    let store = open_temp(Durability::Durable);
    let before = store.store.stats();
    let relaxed = store.transaction().unwrap();
    relaxed.put(b"part", b"1").unwrap();
    relaxed.skip_disk_sync();
    relaxed.commit().unwrap();
    let after_relaxed = store.store.stats();
    assert_eq!(after_relaxed.commits - before.commits, 1);
    assert_eq!(after_relaxed.disk_syncs, before.disk_syncs);
    let durable = store.transaction().unwrap();
    durable.put(b"last", b"1").unwrap();
    durable.commit().unwrap();
    assert_eq!(store.store.stats().disk_syncs, before.disk_syncs + 1);
    assert_eq!(store.get(b"part").unwrap(), Some(b"1".to_vec()));
}

/// After a crash: every commit the child reported (`commit/ID` keys) is there.
fn assert_commits_present<S: Store + 'static, I: std::fmt::Display>(
    watchable: &Watchable<S>,
    seed: u64,
    reported: &[I],
) {
    for id in reported {
        let found = watchable.get(format!("commit/{id}").as_bytes()).unwrap();
        assert!(
            found.is_some(),
            "seed {seed}: reported commit {id} is missing"
        );
    }
}

/// A crash test's child reads what its parent set: `(directory, seed)`, or `None` when the test
/// runs as an ordinary test (then it does nothing).
fn crash_child_env(dir_variable: &str) -> Option<(std::path::PathBuf, u64)> {
    let dir = std::env::var(dir_variable).ok()?;
    let seed = std::env::var("SYNCBASE_CRASH_SEED").ok()?.parse().ok()?;
    Some((dir.into(), seed))
}

/// Starts this test binary running only the test `child`, told `dir` and `seed` (and `extra`),
/// with its stdout piped to the caller.
fn spawn_crash_child(
    child: &str,
    dir_variable: &str,
    dir: &Path,
    seed: u64,
    extra: &[(&str, String)],
) -> std::process::Child {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(dir_variable, dir)
        .env("SYNCBASE_CRASH_SEED", seed.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    command.spawn().unwrap()
}

mod crash {
    //! A child process commits multi-key transfers between accounts (keeping their sum) from
    //! several threads, printing each commit id once `commit` returns; the parent kills it with
    //! SIGKILL at a seeded point, reopens, and checks every reported commit is there, the sum
    //! holds, and the watch log has exactly one entry per commit.

    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;

    use syncbase_store::testing::watchable_options_all_managed;
    use syncbase_store::{
        Durability, EntropyRng, Rng, SeededRng, Store, StoreReader, StoreWriter, Transaction,
        Watchable, WatchableOptions, run_in_transaction,
    };

    const CHILD_ENV: &str = "SYNCBASE_CRASH_CHILD_DIR";
    const ACCOUNTS: u64 = 10;
    const TOTAL: u64 = 10_000;
    const THREADS: u64 = 4;
    const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    fn account(index: u64) -> Vec<u8> {
        format!("account/{index}").into_bytes()
    }

    fn read_u64(reader: &dyn Transaction, key: &[u8]) -> u64 {
        let bytes = reader.get(key).unwrap().expect("account exists");
        u64::from_be_bytes(bytes.try_into().unwrap())
    }

    /// Runs only in the child (when the parent sets the environment variable).
    #[test]
    fn crash_child() {
        let Some((dir, seed)) = super::crash_child_env(CHILD_ENV) else {
            return;
        };
        let run: u64 = std::env::var("SYNCBASE_CRASH_RUN")
            .unwrap()
            .parse()
            .unwrap();
        let store = syncbase_store_fjall::open(&dir.join("store"), Durability::Durable).unwrap();
        // Version ids must not repeat across restarts: use the real entropy source here.
        let options = WatchableOptions {
            rng: Arc::new(EntropyRng::default()),
            ..watchable_options_all_managed()
        };
        let watchable = Arc::new(Watchable::open(store, options).unwrap());
        if watchable.get(&account(0)).unwrap().is_none() {
            let setup = watchable.begin(syncbase_store::Origin::default()).unwrap();
            for index in 0..ACCOUNTS {
                setup
                    .put(&account(index), &(TOTAL / ACCOUNTS).to_be_bytes())
                    .unwrap();
            }
            setup.commit().unwrap();
        }
        let stdout = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let watchable = watchable.clone();
                let stdout = stdout.clone();
                scope.spawn(move || {
                    let rng = SeededRng::new(seed * 1_000 + run * 100 + thread);
                    for number in 0.. {
                        let id = run * 1_000_000_000 + thread * 1_000_000 + number;
                        let (from, to) = (rng.next_u64() % ACCOUNTS, rng.next_u64() % ACCOUNTS);
                        let amount = rng.next_u64() % 50;
                        run_in_transaction(watchable.as_ref(), 1_000, |transaction| {
                            let balance = read_u64(transaction, &account(from));
                            let moved = amount.min(balance);
                            transaction.put(&account(from), &(balance - moved).to_be_bytes())?;
                            let target = read_u64(transaction, &account(to));
                            transaction.put(&account(to), &(target + moved).to_be_bytes())?;
                            transaction.put(format!("commit/{id}").as_bytes(), b"done")
                        })
                        .unwrap();
                        let mut out = stdout.lock();
                        writeln!(out, "COMMITTED {id}").unwrap();
                        out.flush().unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn committed_transactions_survive_kill_9() {
        for seed in 1..=20u64 {
            run_once(seed);
        }
    }

    fn run_once(seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let rng = SeededRng::new(seed);
        let mut reported = Vec::new();
        // Two kills per seed: the second run starts from the first one's recovered state.
        for run in 0..2u64 {
            let kill_after = 1 + rng.next_u64() % 60;
            let mut child = super::spawn_crash_child(
                "crash::crash_child",
                CHILD_ENV,
                dir.path(),
                seed,
                &[("SYNCBASE_CRASH_RUN", run.to_string())],
            );
            // A reader thread forwards commit ids, so a child whose writes stall after recovery
            // (fjall issue #257) fails the test instead of hanging it.
            let stdout = child.stdout.take().unwrap();
            let (sender, receiver) = std::sync::mpsc::channel::<u64>();
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(id) = line.strip_prefix("COMMITTED ") {
                        let _ = sender.send(id.parse().unwrap());
                    }
                }
            });
            let mut seen = 0;
            while seen < kill_after {
                match receiver.recv_timeout(STALL_TIMEOUT) {
                    Ok(id) => {
                        reported.push(id);
                        seen += 1;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let _ = child.kill();
                        panic!(
                            "seed {seed} run {run}: no commit for {STALL_TIMEOUT:?}: writes stalled"
                        );
                    }
                }
            }
            child.kill().unwrap();
            reader.join().unwrap();
            // Commits the child reported before dying still count.
            reported.extend(receiver.try_iter());
            child.wait().unwrap();
            assert!(
                seen > 0,
                "seed {seed}: the child reported no commit before dying"
            );
            verify(dir.path(), seed, &reported);
        }
    }

    fn verify(dir: &std::path::Path, seed: u64, reported: &[u64]) {
        let store = syncbase_store_fjall::open(&dir.join("store"), Durability::Durable)
            .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        let watchable = Watchable::open(store, watchable_options_all_managed()).unwrap();
        super::assert_commits_present(&watchable, seed, reported);
        let sum: u64 = (0..ACCOUNTS)
            .map(|index| {
                let bytes = watchable.get(&account(index)).unwrap().unwrap();
                u64::from_be_bytes(bytes.try_into().unwrap())
            })
            .sum();
        assert_eq!(sum, TOTAL, "seed {seed}: the invariant broke");
        let commits = watchable
            .scan(b"commit/", b"commit0")
            .unwrap()
            .collect_entries()
            .unwrap()
            .len() as u64;
        let entries = watchable.log_entries(0, usize::MAX).unwrap();
        assert_eq!(
            entries.len() as u64,
            commits + 1,
            "seed {seed}: one log entry per commit"
        );
        assert!(entries.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        watchable.close().unwrap();
    }
}

mod prune_crash {
    //! A child process overwrites rows from several threads while the background pruner trims
    //! the log to a window of 50 commits, and a reader pin holds it, moving forward now and then; the parent
    //! kills it with SIGKILL at a seeded point and checks that the store opens, every reported
    //! commit is there, the log is whole from its start (never past the durable pin), every
    //! version an entry in the log names is readable, and no old version outlived its entries.

    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;

    use syncbase_store::{
        Durability, EntropyRng, Origin, Pruner, Retention, Rng, SeededRng, Store, Transaction,
        Watchable, WatchableOptions, run_in_transaction,
    };

    const CHILD_ENV: &str = "SYNCBASE_PRUNE_CRASH_DIR";
    const THREADS: u64 = 3;
    const PIN: &str = "reader";

    fn options(pruner: Option<Pruner>) -> WatchableOptions {
        WatchableOptions {
            retention: Retention {
                commits_min: 50,
                age_min_ns: 0,
            },
            pruner,
            rng: Arc::new(EntropyRng::default()),
            ..syncbase_store::testing::watchable_options_all_managed()
        }
    }

    /// Runs only in the child (when the parent sets the environment variable).
    #[test]
    fn prune_crash_child() {
        let Some((dir, seed)) = super::crash_child_env(CHILD_ENV) else {
            return;
        };
        let store = syncbase_store_fjall::open(&dir.join("store"), Durability::Relaxed).unwrap();
        let pruner = Pruner::start().unwrap();
        let watchable = Arc::new(Watchable::open(store, options(Some(pruner))).unwrap());
        let stdout = Arc::new(parking_lot::Mutex::new(std::io::stdout()));
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let watchable = watchable.clone();
                let stdout = stdout.clone();
                scope.spawn(move || {
                    let rng = SeededRng::new(seed * 100 + thread);
                    for number in 0u64.. {
                        let id = format!("{}-{thread}-{number}", rng.next_u64() % 1_000_000);
                        let row = format!("row/{}", rng.next_u64() % 40);
                        run_in_transaction(watchable.as_ref(), 1_000, |transaction| {
                            transaction.put(row.as_bytes(), id.as_bytes())?;
                            transaction.put(format!("commit/{id}").as_bytes(), b"")
                        })
                        .unwrap();
                        let mut line = format!("COMMITTED {id}");
                        // A pin inside the window (never below the log start), then left
                        // alone while the window moves past it.
                        if thread == 0 && number % 100 == 20 {
                            let pin = watchable.latest_log_seq().saturating_sub(30).max(1);
                            let transaction = watchable.begin(Origin::default()).unwrap();
                            transaction.set_pin(PIN, pin).unwrap();
                            transaction.commit().unwrap();
                            line = format!("{line}\nPINNED {pin}");
                        }
                        let mut out = stdout.lock();
                        writeln!(out, "{line}").unwrap();
                        out.flush().unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn pruning_killed_at_any_point_loses_nothing_it_must_keep() {
        let mut pruned = 0;
        for seed in 1..=6u64 {
            let dir = tempfile::tempdir().unwrap();
            let kill_after = 300 + SeededRng::new(seed).next_u64() % 900;
            let mut child = super::spawn_crash_child(
                "prune_crash::prune_crash_child",
                CHILD_ENV,
                dir.path(),
                seed,
                &[],
            );
            let mut reported = Vec::new();
            let mut pinned = 0;
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            for line in lines.map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("COMMITTED ") {
                    reported.push(id.to_string());
                } else if let Some(pin) = line.strip_prefix("PINNED ") {
                    pinned = pin.parse().unwrap();
                }
                if reported.len() as u64 >= kill_after {
                    child.kill().unwrap();
                }
            }
            child.wait().unwrap();
            assert!(
                reported.len() as u64 >= kill_after,
                "seed {seed}: the child died early"
            );
            pruned += usize::from(verify(dir.path(), seed, &reported, pinned));
        }
        // A run may end before its first pin moves past 1; most must have pruned.
        assert!(pruned >= 3, "only {pruned} of 6 runs pruned anything");
    }

    /// Returns whether anything was pruned.
    fn verify(dir: &std::path::Path, seed: u64, reported: &[String], pinned: u64) -> bool {
        let store = syncbase_store_fjall::open(&dir.join("store"), Durability::Relaxed)
            .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        let watchable = Watchable::open(store, options(None)).unwrap();
        super::assert_commits_present(&watchable, seed, reported);
        let start = watchable.log_start().unwrap();
        match watchable.pins().unwrap().first() {
            Some((_, durable_pin)) => {
                assert!(
                    *durable_pin >= pinned,
                    "seed {seed}: a reported pin is lost"
                );
                assert!(
                    start <= *durable_pin,
                    "seed {seed}: the log starts at {start}, past the pin at {durable_pin}"
                );
            }
            None => assert_eq!(pinned, 0, "seed {seed}: a reported pin is lost"),
        }
        let entries = watchable.log_entries(0, usize::MAX).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|entry| entry.seq).collect();
        let expected: Vec<u64> = (start..=watchable.latest_log_seq()).collect();
        assert_eq!(seqs, expected, "seed {seed}: the log has a hole");
        syncbase_store::testing::assert_versions_bounded(&watchable, &format!("seed {seed}"));
        watchable.close().unwrap();
        start > 1
    }
}
