//! `bench engines`: our layered store on redb and on fjall, beside each raw engine, on the
//! workloads that decide the engine (run once to choose; see `docs/storage-engine.md`).

use std::path::Path;

use fjall::Readable;
use redb::ReadableDatabase;
use syncbase_store::{Durability, Rng, SeededRng, Store};

use crate::fjall_engine;
use crate::report::{Figure, Table, measure, seconds};

const DATA: redb::TableDefinition<'static, &[u8], &[u8]> =
    redb::TableDefinition::new("syncbase_data");

fn key(index: usize) -> Vec<u8> {
    format!("k{index:08}").into_bytes()
}

fn value(index: usize) -> Vec<u8> {
    let rng = SeededRng::new(index as u64);
    (0..13)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .take(100)
        .collect()
}

fn open(engine: &str, path: &Path, durability: Durability) -> Box<dyn Store> {
    let _ = std::fs::remove_dir_all(path);
    let _ = std::fs::remove_file(path);
    match engine {
        "redb" => Box::new(syncbase_store_redb::open(path, durability).expect("open redb")),
        _ => Box::new(fjall_engine::open(path, durability).expect("open fjall")),
    }
}

fn reopen(engine: &str, path: &Path) -> Box<dyn Store> {
    match engine {
        "redb" => {
            Box::new(syncbase_store_redb::open(path, Durability::Durable).expect("reopen redb"))
        }
        _ => Box::new(fjall_engine::open(path, Durability::Durable).expect("reopen fjall")),
    }
}

fn disk_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| disk_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

fn one(value: f64) -> Option<Figure> {
    Some(Figure {
        values: vec![value],
    })
}

pub fn run(dir: &Path, rows: usize, runs: usize) {
    let mut table = Table {
        title: format!(
            "engine choice: our store on each engine, and the raw engine ({rows} rows for reads)"
        ),
        columns: ["ours (redb)", "ours (fjall)", "raw redb", "raw fjall"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    // S1: 100k puts, 1,000 per durable commit.
    let s1 = |store: &dyn Store| {
        100_000.0
            / seconds(|| {
                for batch in 0..100 {
                    let transaction = store.transaction().unwrap();
                    for index in batch * 1_000..(batch + 1) * 1_000 {
                        transaction.put(&key(index), &value(index)).unwrap();
                    }
                    transaction.commit().unwrap();
                }
            })
    };
    let mut cells = Vec::new();
    for engine in ["redb", "fjall"] {
        cells.push(Some(measure(runs, || {
            s1(open(
                engine,
                &dir.join(format!("e-s1-{engine}")),
                Durability::Durable,
            )
            .as_ref())
        })));
    }
    cells.push(Some(measure(runs, || {
        let path = dir.join("e-s1-rawredb");
        let _ = std::fs::remove_file(&path);
        let database = redb::Database::create(&path).unwrap();
        100_000.0
            / seconds(|| {
                for batch in 0..100 {
                    let transaction = database.begin_write().unwrap();
                    {
                        let mut table = transaction.open_table(DATA).unwrap();
                        for index in batch * 1_000..(batch + 1) * 1_000 {
                            table
                                .insert(key(index).as_slice(), value(index).as_slice())
                                .unwrap();
                        }
                    }
                    transaction.commit().unwrap();
                }
            })
    })));
    cells.push(Some(measure(runs, || {
        let path = dir.join("e-s1-rawfjall");
        let _ = std::fs::remove_dir_all(&path);
        let (database, data) = fjall_engine::raw(&path);
        100_000.0
            / seconds(|| {
                for batch in 0..100 {
                    let mut write = database
                        .batch()
                        .durability(Some(fjall::PersistMode::SyncAll));
                    for index in batch * 1_000..(batch + 1) * 1_000 {
                        write.insert(&data, key(index), value(index));
                    }
                    write.commit().unwrap();
                }
            })
    })));
    table.rows.push((
        "S1 puts, 1,000 per durable commit".into(),
        "rows/s".into(),
        cells,
    ));

    // S2: single-put durable commits, 1 and 32 writers.
    for writers in [1usize, 32] {
        let per_writer = if writers == 1 { 1_000 } else { 100 };
        let mut cells = Vec::new();
        for engine in ["redb", "fjall"] {
            cells.push(Some(measure(runs, || {
                let store = open(
                    engine,
                    &dir.join(format!("e-s2-{engine}")),
                    Durability::Durable,
                );
                let store = store.as_ref();
                (writers * per_writer) as f64
                    / seconds(|| {
                        std::thread::scope(|scope| {
                            for writer in 0..writers {
                                scope.spawn(move || {
                                    for round in 0..per_writer {
                                        let index = writer * per_writer + round;
                                        store.put(&key(index), &value(index)).unwrap();
                                    }
                                });
                            }
                        });
                    })
            })));
        }
        cells.extend([None, None]);
        table.rows.push((
            format!("S2 durable 1-put commits, {writers} writers"),
            "commits/s".into(),
            cells,
        ));
    }

    // S3: bulk load, gets, scan, reopen, bytes per row.
    let order: Vec<usize> = {
        let rng = SeededRng::new(1);
        let mut indices: Vec<usize> = (0..rows).collect();
        for position in (1..rows).rev() {
            indices.swap(position, (rng.next_u64() % (position as u64 + 1)) as usize);
        }
        indices
    };
    let probes: Vec<usize> = order.iter().rev().copied().cycle().take(100_000).collect();
    let mut load_cells = Vec::new();
    let mut get_cells = Vec::new();
    let mut scan_cells = Vec::new();
    let mut reopen_cells = Vec::new();
    let mut bytes_cells = Vec::new();
    for engine in ["redb", "fjall"] {
        let path = dir.join(format!("e-s3-{engine}"));
        let store = open(engine, &path, Durability::Relaxed);
        load_cells.push(one(rows as f64
            / seconds(|| {
                for chunk in order.chunks(10_000) {
                    let transaction = store.transaction().unwrap();
                    for &index in chunk {
                        transaction.put(&key(index), &value(index)).unwrap();
                    }
                    transaction.commit().unwrap();
                }
                store.close().unwrap();
            })));
        drop(store);
        bytes_cells.push(one(disk_bytes(&path) as f64 / rows as f64));
        reopen_cells.push(Some(measure(runs, || {
            seconds(|| drop(reopen(engine, &path))) * 1_000.0
        })));
        let store = reopen(engine, &path);
        get_cells.push(Some(measure(runs, || {
            100_000.0
                / seconds(|| {
                    for &index in &probes {
                        assert!(store.get(&key(index)).unwrap().is_some());
                    }
                })
        })));
        scan_cells.push(Some(measure(runs, || {
            seconds(|| {
                assert_eq!(
                    store.scan(b"k0000", b"k0001").unwrap().count(),
                    rows.min(10_000)
                )
            }) * 1_000.0
        })));
    }
    // Raw gets on the files our store wrote (same table layout for redb; same keyspace for fjall).
    {
        let database = redb::Database::open(dir.join("e-s3-redb")).unwrap();
        get_cells.push(Some(measure(runs, || {
            100_000.0
                / seconds(|| {
                    for &index in &probes {
                        let transaction = database.begin_read().unwrap();
                        let table = transaction.open_table(DATA).unwrap();
                        assert!(table.get(key(index).as_slice()).unwrap().is_some());
                    }
                })
        })));
    }
    {
        let (database, data) = fjall_engine::raw(&dir.join("e-s3-fjall"));
        get_cells.push(Some(measure(runs, || {
            100_000.0
                / seconds(|| {
                    for &index in &probes {
                        let snapshot = database.snapshot();
                        assert!(snapshot.get(&data, key(index)).unwrap().is_some());
                    }
                })
        })));
    }
    load_cells.extend([None, None]);
    scan_cells.extend([None, None]);
    reopen_cells.extend([None, None]);
    bytes_cells.extend([None, None]);
    table.rows.push((
        "bulk load, 10k per relaxed commit + durable close".into(),
        "rows/s".into(),
        load_cells,
    ));
    table.rows.push((
        "random gets (snapshot per get)".into(),
        "ops/s".into(),
        get_cells,
    ));
    table
        .rows
        .push(("prefix scan of 10k keys".into(), "ms".into(), scan_cells));
    table
        .rows
        .push(("reopen".into(), "ms".into(), reopen_cells));
    table
        .rows
        .push(("disk bytes per row".into(), "B".into(), bytes_cells));
    table.print();
}
