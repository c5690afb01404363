//! `bench store`: the storage workloads S1–S3 of `BENCHMARKS.md`, for memstore, our plain store on
//! fjall, fjall used directly, and the watchable layer, beside the fsync floor.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fjall::{KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::RwLock;
use syncbase_store::{
    Durability, ManualClock, Pruner, Retention, Rng, SeededRng, Store, StoreReader, StoreWriter,
    Watchable, WatchableOptions, open_memstore,
};

use crate::report::{Figure, Table, measure, seconds, write_json};

fn raw_fjall(path: &Path) -> (fjall::Database, fjall::Keyspace) {
    let database = fjall::Database::builder(path)
        .worker_threads(syncbase_store_fjall::WORKER_THREADS)
        .open()
        .expect("open fjall");
    let data = database
        .keyspace("raw", KeyspaceCreateOptions::default)
        .expect("keyspace");
    (database, data)
}
const VALUE_BYTES: usize = 100;
const BATCH_ROWS: usize = 1_000;
const S1_ROWS: usize = 100_000;
const GETS: usize = 100_000;
const SCAN_ROWS: usize = 10_000;

/// Sizes of the run.
pub(crate) struct Options {
    /// Rows loaded for the read workloads (S3).
    pub rows: usize,
    /// Measured runs per figure (after one warm-up).
    pub runs: usize,
    /// Run only this table (`s1`, `s2` or `s3`).
    pub only: Option<String>,
    /// Whether `--rows` was given (`databases` has its own default).
    pub rows_set: bool,
    /// Databases for `bench databases`.
    pub databases: Option<usize>,
    /// W2's large base for `bench sync`.
    pub large: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rows: 1_000_000,
            runs: 3,
            only: None,
            rows_set: false,
            databases: None,
            large: None,
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn key(index: usize) -> Vec<u8> {
    format!("k{index:08}").into_bytes()
}

fn value(index: usize) -> Vec<u8> {
    let rng = SeededRng::new(index as u64);
    (0..VALUE_BYTES / 8 + 1)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .take(VALUE_BYTES)
        .collect()
}

fn watchable_options() -> WatchableOptions {
    WatchableOptions::new(
        vec![Vec::new()],
        Arc::new(ManualClock::new(1)),
        Arc::new(syncbase_store::EntropyRng::default()),
    )
}

fn rate(count: usize, seconds: f64) -> f64 {
    count as f64 / seconds
}

fn shuffled(count: usize, seed: u64) -> Vec<usize> {
    let rng = SeededRng::new(seed);
    let mut indices: Vec<usize> = (0..count).collect();
    for position in (1..indices.len()).rev() {
        let other = (rng.next_u64() % (position as u64 + 1)) as usize;
        indices.swap(position, other);
    }
    indices
}

fn disk_bytes(path: &Path) -> u64 {
    sum_files(path, &|metadata| metadata.len())
}

/// The sum of `size` over the files under `path`.
fn sum_files(path: &Path, size: &dyn Fn(&std::fs::Metadata) -> u64) -> u64 {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !metadata.is_dir() {
        return size(&metadata);
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|e| sum_files(&e.path(), size))
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes the files under `path` occupy on disk (allocated blocks, as `du --block-size=1` counts
/// them: a sparse, pre-sized journal counts only what is written).
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    sum_files(path, &|metadata| metadata.blocks() * 512)
}

fn list_files(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let metadata = entry.metadata().expect("metadata");
        if metadata.is_dir() {
            list_files(&entry.path());
        } else {
            eprintln!(
                "  {:>12} {:>12} {}",
                metadata.blocks() * 512,
                metadata.len(),
                entry.path().display()
            );
        }
    }
}

/// Allocated bytes of the journals (`*.jnl`) under `path`: recent writes, which fjall keeps
/// until a journal fills (64 MiB) and its memtables are flushed, whatever is pruned.
fn journal_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "jnl"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.blocks() * 512)
        .sum()
}

/// Runs every store workload and prints the tables.
pub(crate) fn run(options: &Options) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("syncbase-bench")
        .tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))?;
    let runs = options.runs;
    println!(
        "# bench store: {} rows of {VALUE_BYTES} B for reads, {S1_ROWS} rows for batch writes, \
         median of {runs} runs after a warm-up [min–max]",
        options.rows
    );
    let wanted = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    let mut tables = Vec::new();
    if wanted("s1") {
        tables.push(write_table(scratch.path(), runs)?);
    }
    if wanted("s2") {
        tables.push(concurrency_table(scratch.path(), runs)?);
    }
    if wanted("s3") {
        tables.push(read_table(scratch.path(), options.rows, runs)?);
    }
    if wanted("s4") {
        tables.push(steady_size_table(scratch.path())?);
    }
    for table in &tables {
        table.print();
    }
    write_json("store", &tables.iter().collect::<Vec<_>>())?;
    Ok(())
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// S1 through the watchable layer over our fjall store, durable: rows/s (`bench sync` puts
/// initial sync beside it).
pub(crate) fn s1_watchable(dir: &Path, runs: usize) -> Result<Figure> {
    std::fs::create_dir_all(dir)?;
    Ok(measure(runs, || {
        let path = fresh(dir, "s1-watchable");
        let store = syncbase_store_fjall::open(&path, Durability::Durable).expect("open");
        s1_load(&Watchable::open(store, watchable_options()).expect("watchable"))
    }))
}

/// 100k puts in durable transactions of 1,000, into `store`: rows/s.
fn s1_load(store: &dyn Store) -> f64 {
    let batches = S1_ROWS / BATCH_ROWS;
    let elapsed = seconds(|| {
        for batch in 0..batches {
            let transaction = store.transaction().expect("transaction");
            for index in batch * BATCH_ROWS..(batch + 1) * BATCH_ROWS {
                transaction.put(&key(index), &value(index)).expect("put");
            }
            transaction.commit().expect("commit");
        }
    });
    rate(S1_ROWS, elapsed)
}

/// S1: 100k puts in durable transactions of 1,000.
fn write_table(dir: &Path, runs: usize) -> Result<Table> {
    let batches = S1_ROWS / BATCH_ROWS;
    let load = s1_load;
    let memstore = measure(runs, || load(&open_memstore()));
    let ours = measure(runs, || {
        let path = fresh(dir, "s1-ours");
        load(&syncbase_store_fjall::open(&path, Durability::Durable).expect("open"))
    });
    let watchable = s1_watchable(dir, runs)?;
    let raw = measure(runs, || {
        let (database, data) = raw_fjall(&fresh(dir, "s1-raw"));
        let elapsed = seconds(|| {
            for batch in 0..batches {
                let mut write = database.batch().durability(Some(PersistMode::SyncAll));
                for index in batch * BATCH_ROWS..(batch + 1) * BATCH_ROWS {
                    write.insert(&data, key(index), value(index));
                }
                write.commit().expect("commit");
            }
        });
        rate(S1_ROWS, elapsed)
    });
    let ratio = Figure {
        values: vec![ours.median() / raw.median()],
    };
    Ok(Table {
        title: "S1: batch writes (100k puts, 1,000 per durable commit)".into(),
        columns: columns(),
        rows: vec![(
            "puts in batches of 1,000".into(),
            "rows/s".into(),
            vec![
                Some(memstore),
                Some(ours),
                Some(raw),
                Some(ratio),
                Some(watchable),
                None,
            ],
        )],
    })
}

fn columns() -> Vec<String> {
    [
        "memstore",
        "ours (fjall)",
        "raw fjall",
        "ours / raw",
        "watchable (fjall)",
        "BTreeMap+RwLock",
    ]
    .map(String::from)
    .to_vec()
}

/// S2: single-put durable commits from 1 and from 32 concurrent writers, beside the fsync floor.
fn concurrency_table(dir: &Path, runs: usize) -> Result<Table> {
    let commits_single = 1_000;
    let per_writer = 100;
    let writers = 32;
    let single = measure(runs, || {
        let store = syncbase_store_fjall::open(&fresh(dir, "s2-single"), Durability::Durable)
            .expect("open");
        let elapsed = seconds(|| {
            for index in 0..commits_single {
                store.put(&key(index), &value(index)).expect("put");
            }
        });
        rate(commits_single, elapsed)
    });
    let mut syncs_per_commit = Vec::new();
    let concurrent = measure(runs, || {
        let store =
            syncbase_store_fjall::open(&fresh(dir, "s2-32"), Durability::Durable).expect("open");
        // All writers start together: spawning 32 threads takes long enough that the first ones
        // would otherwise commit alone.
        let barrier = std::sync::Barrier::new(writers + 1);
        let mut start = None;
        std::thread::scope(|scope| {
            for writer in 0..writers {
                let (store, barrier) = (&store, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for round in 0..per_writer {
                        let index = writer * per_writer + round;
                        store.put(&key(index), &value(index)).expect("put");
                    }
                });
            }
            barrier.wait();
            start = Some(Instant::now());
        });
        let elapsed = start.map_or(f64::NAN, |start| start.elapsed().as_secs_f64());
        let stats = store.stats();
        syncs_per_commit.push(stats.disk_syncs as f64 / stats.commits as f64);
        rate(writers * per_writer, elapsed)
    });
    let raw_single = measure(runs, || {
        let (database, data) = raw_fjall(&fresh(dir, "s2-raw"));
        let elapsed = seconds(|| {
            for index in 0..commits_single {
                let mut write = database.batch().durability(Some(PersistMode::SyncAll));
                write.insert(&data, key(index), value(index));
                write.commit().expect("commit");
            }
        });
        rate(commits_single, elapsed)
    });
    let floor = measure(runs, || fsync_floor(dir).expect("fsync floor"));
    let ratio = Figure {
        values: vec![concurrent.median() / single.median()],
    };
    Ok(Table {
        title: "S2: durable single-put commits (ours on fjall)".into(),
        columns: vec![
            "ours (fjall)".into(),
            "raw fjall".into(),
            "fsync floor".into(),
        ],
        rows: vec![
            (
                "1 writer".into(),
                "commits/s".into(),
                vec![Some(single), Some(raw_single), Some(floor)],
            ),
            (
                format!("{writers} writers"),
                "commits/s".into(),
                vec![Some(concurrent), None, None],
            ),
            (
                "32 writers / 1 writer".into(),
                "ratio".into(),
                vec![Some(ratio), None, None],
            ),
            (
                "disk syncs per commit, 32 writers".into(),
                "syncs".into(),
                vec![
                    Some(Figure {
                        values: syncs_per_commit,
                    }),
                    None,
                    None,
                ],
            ),
        ],
    })
}

/// Appends 4 KiB and `fdatasync`s, 1,000 times: the disk's durable-write rate per second.
fn fsync_floor(dir: &Path) -> std::io::Result<f64> {
    let path = fresh(dir, "fsync-floor");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let mut latencies = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(start.elapsed().as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    Ok(1.0 / latencies[latencies.len() / 2])
}

/// S3: random gets on `rows` keys, a 10k-key prefix scan, reopen time and bytes per row.
fn read_table(dir: &Path, rows: usize, runs: usize) -> Result<Table> {
    let order = shuffled(rows, 1);
    let probes: Vec<usize> = shuffled(rows, 2).into_iter().cycle().take(GETS).collect();
    let scan_prefix = b"k0000".to_vec();
    let (scan_start, scan_limit) = (
        scan_prefix.clone(),
        syncbase_store::prefix_limit(&scan_prefix),
    );
    let expected_scan = rows.min(SCAN_ROWS);

    let load = |store: &dyn Store| {
        for chunk in order.chunks(10_000) {
            let transaction = store.transaction().expect("transaction");
            for &index in chunk {
                transaction.put(&key(index), &value(index)).expect("put");
            }
            transaction.commit().expect("commit");
        }
    };
    let gets = |reader: &dyn StoreReader| {
        rate(
            GETS,
            seconds(|| {
                for &index in &probes {
                    assert!(reader.get(&key(index)).expect("get").is_some());
                }
            }),
        )
    };
    let scan = |reader: &dyn StoreReader| {
        seconds(|| {
            let count = reader.scan(&scan_start, &scan_limit).expect("scan").count();
            assert_eq!(count, expected_scan);
        }) * 1_000.0
    };

    eprintln!("bench: loading {rows} rows into memstore, ours, raw fjall and watchable");
    let memstore = open_memstore();
    load(&memstore);
    let ours_path = fresh(dir, "s3-ours");
    let ours_load = seconds(|| {
        let store = syncbase_store_fjall::open(&ours_path, Durability::Relaxed).expect("open");
        load(&store);
        store.close().expect("close");
    });
    let watchable_path = fresh(dir, "s3-watchable");
    let watchable_load = seconds(|| {
        let store = syncbase_store_fjall::open(&watchable_path, Durability::Relaxed).expect("open");
        let watchable = Watchable::open(store, watchable_options()).expect("watchable");
        load(&watchable);
        watchable.close().expect("close");
    });
    let raw_path = fresh(dir, "s3-raw");
    let raw_load = seconds(|| {
        let (database, data) = raw_fjall(&raw_path);
        for chunk in order.chunks(10_000) {
            let mut write = database.batch().durability(Some(PersistMode::Buffer));
            for &index in chunk {
                write.insert(&data, key(index), value(index));
            }
            write.commit().expect("commit");
        }
        database.persist(PersistMode::SyncAll).expect("persist");
    });
    let btree: RwLock<BTreeMap<Vec<u8>, Vec<u8>>> = RwLock::new(
        order
            .iter()
            .map(|&index| (key(index), value(index)))
            .collect(),
    );

    let ours = syncbase_store_fjall::open(&ours_path, Durability::Durable)?;
    let watchable = Watchable::open(
        syncbase_store_fjall::open(&watchable_path, Durability::Durable)?,
        watchable_options(),
    )?;
    let (raw, raw_data) = raw_fjall(&raw_path);

    let mut table = Table {
        title: format!("S3: reads on {rows} rows"),
        columns: columns(),
        rows: Vec::new(),
    };
    let ours_gets = measure(runs, || gets(&ours));
    let raw_gets = measure(runs, || {
        rate(
            GETS,
            seconds(|| {
                for &index in &probes {
                    let snapshot = raw.snapshot();
                    assert!(snapshot.get(&raw_data, key(index)).expect("get").is_some());
                }
            }),
        )
    });
    let btree_gets = measure(runs, || {
        rate(
            GETS,
            seconds(|| {
                for &index in &probes {
                    assert!(btree.read().get(&key(index)).is_some());
                }
            }),
        )
    });
    table.rows.push((
        "random gets (snapshot per get)".into(),
        "ops/s".into(),
        vec![
            Some(measure(runs, || gets(&memstore))),
            Some(ours_gets.clone()),
            Some(raw_gets.clone()),
            Some(Figure {
                values: vec![ours_gets.median() / raw_gets.median()],
            }),
            Some(measure(runs, || gets(&watchable))),
            Some(btree_gets),
        ],
    ));
    let ours_snapshot_gets = measure(runs, || gets(ours.snapshot().expect("snapshot").as_ref()));
    let raw_snapshot_gets = measure(runs, || {
        let snapshot = raw.snapshot();
        rate(
            GETS,
            seconds(|| {
                for &index in &probes {
                    assert!(snapshot.get(&raw_data, key(index)).expect("get").is_some());
                }
            }),
        )
    });
    table.rows.push((
        "random gets in one snapshot".into(),
        "ops/s".into(),
        vec![
            Some(measure(runs, || {
                gets(memstore.snapshot().expect("snapshot").as_ref())
            })),
            Some(ours_snapshot_gets.clone()),
            Some(raw_snapshot_gets.clone()),
            Some(Figure {
                values: vec![ours_snapshot_gets.median() / raw_snapshot_gets.median()],
            }),
            Some(measure(runs, || {
                gets(watchable.snapshot().expect("snapshot").as_ref())
            })),
            None,
        ],
    ));
    let ours_scan = measure(runs, || scan(&ours));
    let raw_scan = measure(runs, || {
        seconds(|| {
            let snapshot = raw.snapshot();
            let count = snapshot
                .range::<&[u8], _>(&raw_data, scan_start.as_slice()..scan_limit.as_slice())
                .count();
            assert_eq!(count, expected_scan);
        }) * 1_000.0
    });
    let btree_scan = measure(runs, || {
        seconds(|| {
            let count = btree
                .read()
                .range(scan_start.clone()..scan_limit.clone())
                .count();
            assert_eq!(count, expected_scan);
        }) * 1_000.0
    });
    table.rows.push((
        format!("prefix scan of {expected_scan} keys"),
        "ms".into(),
        vec![
            Some(measure(runs, || scan(&memstore))),
            Some(ours_scan.clone()),
            Some(raw_scan.clone()),
            Some(Figure {
                values: vec![ours_scan.median() / raw_scan.median()],
            }),
            Some(measure(runs, || scan(&watchable))),
            Some(btree_scan),
        ],
    ));
    ours.close()?;
    watchable.close()?;
    drop(raw_data);
    drop(raw);
    let ours_reopen = measure(runs, || {
        seconds(|| {
            syncbase_store_fjall::open(&ours_path, Durability::Durable).expect("reopen");
        }) * 1_000.0
    });
    let raw_reopen = measure(runs, || {
        seconds(|| {
            drop(raw_fjall(&raw_path));
        }) * 1_000.0
    });
    let watchable_reopen = measure(runs, || {
        seconds(|| {
            let store =
                syncbase_store_fjall::open(&watchable_path, Durability::Durable).expect("reopen");
            Watchable::open(store, watchable_options()).expect("watchable");
        }) * 1_000.0
    });
    table.rows.push((
        "reopen (page cache warm)".into(),
        "ms".into(),
        vec![
            None,
            Some(ours_reopen.clone()),
            Some(raw_reopen.clone()),
            Some(Figure {
                values: vec![ours_reopen.median() / raw_reopen.median()],
            }),
            Some(watchable_reopen),
            None,
        ],
    ));
    let single = |value: f64| {
        Some(Figure {
            values: vec![value],
        })
    };
    let per_row = |path: &Path| disk_bytes(path) as f64 / rows as f64;
    table.rows.push((
        "bulk load (10k per relaxed commit, then a durable close)".into(),
        "rows/s".into(),
        vec![
            None,
            single(rate(rows, ours_load)),
            single(rate(rows, raw_load)),
            single(raw_load / ours_load),
            single(rate(rows, watchable_load)),
            None,
        ],
    ));
    table.rows.push((
        "disk bytes per row (100 B value, 9 B key)".into(),
        "B".into(),
        vec![
            None,
            single(per_row(&ours_path)),
            single(per_row(&raw_path)),
            single(per_row(&ours_path) / per_row(&raw_path)),
            single(per_row(&watchable_path)),
            None,
        ],
    ));
    Ok(table)
}

const S4_KEYS: usize = 1_000;
const S4_ROUNDS: usize = 1_000;
const S4_BATCH: usize = 100;
const S4_WINDOW_COMMITS: u64 = 100;
const S4_BIG_BYTES: usize = 8 << 20;
const MIB: f64 = (1u64 << 20) as f64;

fn one(value: f64) -> Option<Figure> {
    Some(Figure {
        values: vec![value],
    })
}

/// S4: steady size under overwrites. With a window of 100 commits and no minimum age, 1,000 keys
/// overwritten 1,000 times each (1M puts of 100 B in commits of 100, relaxed durability, the
/// background pruner on), then the engine's compaction: allocated bytes against 3x the live rows
/// plus the window. Then ten overwrites of an 8 MiB value and its delete, pushed out of the window
/// by 110 more commits: allocated bytes against where they started.
fn steady_size_table(dir: &Path) -> Result<Table> {
    let path = fresh(dir, "s4-watchable");
    let pruner = Pruner::start()?;
    let open = || -> Result<Watchable<syncbase_store_fjall::FjallStore>> {
        let store = syncbase_store_fjall::open(&path, Durability::Relaxed)?;
        Ok(Watchable::open(
            store,
            WatchableOptions {
                retention: Retention {
                    commits_min: S4_WINDOW_COMMITS,
                    age_min_ns: 0,
                },
                pruner: Some(pruner.clone()),
                ..watchable_options()
            },
        )?)
    };
    type S4Store = Watchable<syncbase_store_fjall::FjallStore>;
    let overwrite_round = |watchable: &S4Store, round: usize| {
        for batch in (0..S4_KEYS).step_by(S4_BATCH) {
            let transaction = watchable.transaction().expect("transaction");
            for index in batch..batch + S4_BATCH {
                transaction
                    .put(&key(index), &value(round * S4_KEYS + index))
                    .expect("put");
            }
            transaction.commit().expect("commit");
        }
    };
    // Pruning done (down to the window), the engine asked to compact, and the store reopened (fjall removes the
    // files of replaced tables once nothing refers to them; an open does).
    let settle = |watchable: S4Store| -> Result<(f64, f64, S4Store)> {
        pruner.wait_idle();
        // The background pruner lets the log exceed its window by a slack of up to 64 commits
        // before it steps in; finish the job so both measurements see the window exactly.
        while watchable.prune(1_000)?.entries_removed > 0 {}
        watchable.inner().engine().compact()?;
        if std::env::var_os("SYNCBASE_BENCH_DEBUG").is_some() {
            let history = watchable
                .inner()
                .scan(&[0xff, b'h'], &[0xff, b'h' + 1])?
                .count();
            eprintln!(
                "log {}..={}, {history} old versions",
                watchable.log_start()?,
                watchable.latest_log_seq()
            );
        }
        watchable.close()?;
        drop(watchable);
        let watchable = open()?;
        if std::env::var_os("SYNCBASE_BENCH_DEBUG").is_some() {
            list_files(&path);
        }
        let journal = journal_bytes(&path);
        Ok((
            (allocated_bytes(&path) - journal) as f64,
            journal as f64,
            watchable,
        ))
    };
    eprintln!("bench: S4, {} overwrites", S4_KEYS * S4_ROUNDS);
    let watchable = open()?;
    let elapsed = seconds(|| (0..S4_ROUNDS).for_each(|round| overwrite_round(&watchable, round)));
    let (steady, steady_journal, watchable) = settle(watchable)?;
    let row_bytes = (key(0).len() + VALUE_BYTES) as f64;
    let live = S4_KEYS as f64 * row_bytes;
    let window = S4_WINDOW_COMMITS as f64 * S4_BATCH as f64 * row_bytes;
    let target = 3.0 * (live + window);

    // Random bytes: a compressible value would hide its size.
    let rng = SeededRng::new(44);
    for _ in 0..10 {
        let big: Vec<u8> = (0..S4_BIG_BYTES / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        watchable.put(b"big", &big)?;
    }
    watchable.delete(b"big")?;
    let with_big = allocated_bytes(&path) as f64;
    // Rounds of 10 commits each, until the 11 commits of the big value are out of the window.
    let rounds_to_leave = (S4_WINDOW_COMMITS as usize).div_ceil(S4_KEYS / S4_BATCH) + 1;
    for round in 0..rounds_to_leave {
        overwrite_round(&watchable, S4_ROUNDS + round);
    }
    let (after_big, after_journal, watchable) = settle(watchable)?;
    watchable.close()?;

    let rows = vec![
        (
            "overwrites (1M puts, commits of 100, relaxed)".into(),
            "puts/s".into(),
            vec![one(rate(S4_KEYS * S4_ROUNDS, elapsed)), None],
        ),
        (
            "allocated after them, compaction and a reopen (tables, metadata)".into(),
            "MiB".into(),
            vec![one(steady / MIB), one(target / MIB)],
        ),
        (
            "... and the journal of recent writes".into(),
            "MiB".into(),
            vec![one(steady_journal / MIB), None],
        ),
        (
            "allocated / (live rows + window)".into(),
            "x".into(),
            vec![one(steady / (live + window)), one(3.0)],
        ),
        (
            "10 x 8 MiB overwrites + delete, before leaving the window".into(),
            "MiB".into(),
            vec![one(with_big / MIB), None],
        ),
        (
            "... after leaving it (tables, metadata; vs. before the big value)".into(),
            "MiB".into(),
            vec![one(after_big / MIB), one(steady / MIB)],
        ),
        (
            "... and the journal of recent writes".into(),
            "MiB".into(),
            vec![one(after_journal / MIB), None],
        ),
    ];
    Ok(Table {
        title: format!(
            "S4: steady size under overwrites (window {S4_WINDOW_COMMITS} commits, no minimum age)"
        ),
        columns: vec!["watchable (fjall)".into(), "target".into()],
        rows,
    })
}
