//! `bench databases`: what many databases cost a real `syncbased` (durable, persistent engine):
//! the time to create N databases of R rows each, then the daemon's threads, descriptors and
//! resident memory, the disk its root takes (apparent and allocated), the time to stop and
//! reopen it, and get latency on random databases, alone and while one database takes heavy
//! writes (one database's writes must not stall reads of another).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use syncbase_client::Client;
use syncbase_net::Identity;
use syncbase_wire::{CollectionPath, DatabasePath, Request};

use crate::report::{Figure, Table, write_json};
use crate::service::{Daemon, percentile, scratch_dir, start_daemon};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Clients creating databases at once.
const CREATORS: usize = 4;
const GETS: usize = 2_000;
const HEAVY_VALUE_BYTES: usize = 256 * 1024;

fn database(index: usize) -> DatabasePath {
    DatabasePath {
        app: "bench".into(),
        database: format!("d{index:06}"),
    }
}

fn rows_of(index: usize) -> CollectionPath {
    CollectionPath {
        app: "bench".into(),
        database: format!("d{index:06}"),
        collection: "rows".into(),
    }
}

/// Creates database `index` with a collection and `rows` rows of 100 bytes, in one batch.
async fn create_one(
    client: &Client,
    index: usize,
    rows: usize,
) -> std::result::Result<(), syncbase_wire::WireError> {
    client
        .call_one(Request::CreateDatabase {
            database: database(index),
            permissions: None,
        })
        .await?;
    client
        .call_one(Request::CreateCollection {
            collection: rows_of(index),
            permissions: None,
        })
        .await?;
    client
        .run_in_batch(&database(index), |batch| async move {
            for row in 0..rows {
                client
                    .call_one(Request::Put {
                        collection: rows_of(index),
                        key: format!("k{row:04}"),
                        value: vec![7; 100],
                        batch: Some(batch),
                    })
                    .await?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// A process's threads, open descriptors and resident memory (MiB), from `/proc`.
fn process_figures(pid: u32) -> Result<(f64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))?;
        let number = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| format!("malformed {line:?}"))?;
        Ok(number.parse::<f64>()?)
    };
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64;
    Ok((field("Threads:")?, descriptors, field("VmRSS:")? / 1024.0))
}

/// The bytes under `dir`: apparent (file lengths) and allocated (blocks), in MiB.
fn disk_mib(dir: &Path) -> Result<(f64, f64)> {
    let mut apparent = 0u64;
    let mut allocated = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                apparent += metadata.len();
                allocated += metadata.blocks() * 512;
            }
        }
    }
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    Ok((mib(apparent), mib(allocated)))
}

/// A small deterministic sequence (xorshift), so runs probe the same databases.
struct Probe(u64);

impl Probe {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

async fn random_get_latencies_us(
    client: &Client,
    databases: usize,
    rows: usize,
    probe: &mut Probe,
) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(GETS);
    for _ in 0..GETS {
        let request = Request::Get {
            collection: rows_of(probe.next(databases)),
            key: format!("k{:04}", probe.next(rows)),
            batch: None,
        };
        let start = Instant::now();
        client.call_one(request).await?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies)
}

fn stop(daemon: Daemon) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status()?;
    if !status.success() {
        return Err("kill -TERM failed".into());
    }
    daemon.wait()?;
    Ok(())
}

/// Runs the workload with `databases` databases of `rows` rows each and prints the table.
pub(crate) fn run(databases: usize, rows: usize) -> Result<()> {
    let databases = databases.max(2);
    let rows = rows.max(1);
    let scratch = scratch_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut table_rows: Vec<(String, String, f64)> = Vec::new();
    let mut push = |name: &str, unit: &str, value: f64| {
        table_rows.push((name.to_string(), unit.to_string(), value));
    };

    let (daemon, address) = start_daemon(scratch.path(), &[])?;
    let identity = Identity::load(&scratch.path().join("identity"))?;
    let (baseline_threads, baseline_descriptors, baseline_rss) = process_figures(daemon.pid())?;
    push("threads, no database", "", baseline_threads);
    push("descriptors, no database", "", baseline_descriptors);
    push("RSS, no database", "MiB", baseline_rss);

    let created_in = runtime.block_on(async {
        let client = Client::connect(&address, &identity).await?;
        client
            .call_one(Request::CreateApp {
                app: "bench".into(),
                permissions: None,
            })
            .await?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for creator in 0..CREATORS {
            let client = Client::connect(&address, &identity).await?;
            tasks.push(tokio::spawn(async move {
                let mut index = creator;
                while index < databases {
                    create_one(&client, index, rows).await?;
                    if creator == 0 && index % 1_000 == 0 {
                        eprintln!("bench databases: created {index} of {databases}");
                    }
                    index += CREATORS;
                }
                Ok::<(), syncbase_wire::WireError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok::<f64, Box<dyn std::error::Error>>(start.elapsed().as_secs_f64())
    })?;
    push("create all (database, collection, rows)", "s", created_in);
    push("create rate", "databases/s", databases as f64 / created_in);
    let (threads, descriptors, rss) = process_figures(daemon.pid())?;
    push("threads, all created", "", threads);
    push("descriptors, all created", "", descriptors);
    push("RSS, all created", "MiB", rss);

    stop(daemon)?;
    let (apparent, allocated) = disk_mib(&scratch.path().join("data"))?;
    push("disk, apparent", "MiB", apparent);
    push("disk, allocated", "MiB", allocated);

    let start = Instant::now();
    let (daemon, address) = start_daemon(scratch.path(), &[])?;
    let mut probe = Probe(0x9e37_79b9_7f4a_7c15);
    let (reopened_in, quiet, busy) = runtime.block_on(async {
        let client = Client::connect(&address, &identity).await?;
        client
            .call_one(Request::Get {
                collection: rows_of(probe.next(databases)),
                key: "k0000".into(),
                batch: None,
            })
            .await?;
        let reopened_in = start.elapsed().as_secs_f64();
        let quiet = random_get_latencies_us(&client, databases, rows, &mut probe).await?;

        // One database takes large durable writes as fast as a client can send them, while
        // gets go to the others.
        let writing = Arc::new(AtomicBool::new(true));
        let writer = {
            let client = Client::connect(&address, &identity).await?;
            let writing = writing.clone();
            tokio::spawn(async move {
                let mut count = 0u64;
                while writing.load(Ordering::Relaxed) {
                    client
                        .call_one(Request::Put {
                            collection: rows_of(0),
                            key: format!("heavy{:03}", count % 256),
                            value: vec![count as u8; HEAVY_VALUE_BYTES],
                            batch: None,
                        })
                        .await?;
                    count += 1;
                }
                Ok::<u64, syncbase_wire::WireError>(count)
            })
        };
        let busy = random_get_latencies_us(&client, databases, rows, &mut probe).await?;
        writing.store(false, Ordering::Relaxed);
        let written = writer.await??;
        eprintln!("bench databases: the heavy writer wrote {written} values meanwhile");
        Ok::<_, Box<dyn std::error::Error>>((reopened_in, quiet, busy))
    })?;
    push("reopen (start to a first get)", "s", reopened_in);
    let (threads, descriptors, rss) = process_figures(daemon.pid())?;
    push("threads, after reopen and gets", "", threads);
    push("descriptors, after reopen and gets", "", descriptors);
    push("RSS, after reopen and gets", "MiB", rss);
    let (mut quiet, mut busy) = (quiet, busy);
    push(
        "get on a random database, p50",
        "µs",
        percentile(&mut quiet, 0.5),
    );
    push(
        "get on a random database, p99",
        "µs",
        percentile(&mut quiet, 0.99),
    );
    push(
        "get while another database takes heavy writes, p50",
        "µs",
        percentile(&mut busy, 0.5),
    );
    push(
        "get while another database takes heavy writes, p99",
        "µs",
        percentile(&mut busy, 0.99),
    );
    stop(daemon)?;

    let table = Table {
        title: format!(
            "Many databases: {databases} databases of {rows} rows (100 B) each, durable, \
             persistent engine, {CREATORS} creating clients"
        ),
        columns: vec![format!("{databases} databases")],
        rows: table_rows
            .into_iter()
            .map(|(name, unit, value)| {
                (
                    name,
                    unit,
                    vec![Some(Figure {
                        values: vec![value],
                    })],
                )
            })
            .collect(),
    };
    table.print();
    write_json("databases", &[&table])?;
    Ok(())
}
