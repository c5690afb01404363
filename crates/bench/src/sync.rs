//! `bench sync` (W1, W2, W2b and W3 of `BENCHMARKS.md`): real `syncbased` daemons on loopback,
//! durable storage, anti-entropy off (push alone carries every write).
//!
//! - W1, initial sync: A holds N rows of 100 B written in batches of 1,000; a fresh B joins
//!   through A and waits for the first round (`sb sg join --wait`). Rows/s, bytes on the wire per
//!   row, B's memory and disk per row, beside the watchable layer's S1 rate measured in the same
//!   run.
//! - W2, one change and no-op: on bases of 10,000 and 1,000,000 rows, a put on A until B's watch
//!   shows it, and a pull that finds nothing (`sb sync`); time and bytes on the wire each.
//! - W2b, propagation: 1,000 puts on A, each until B's watch shows it (p50, p99).
//! - W3, conflict storm: 5 daemons each write the same 1,000 keys (different values) before
//!   they share a syncgroup; then all join: the time until all five hold identical rows.
//!
//! A's address as members know it is a counting proxy in this process, so every byte between A
//! and B is counted (B dials A; A calls B back over that connection). The peers' harnesses
//! (`../shared/peers`: PouchDB replication, iroh-docs) run the W1/W2 workload once in the same
//! run, built or installed once and cached under `target/peers/`; a missing toolchain skips a
//! peer with a message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use syncbase_client::Client;
use syncbase_net::Identity;
use syncbase_wire::{DatabasePath, Request, Response, RowRange, SyncgroupSpec, WatchStart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::{Figure, Table, write_json};
use crate::service::{Daemon, collection, create_collection, key, percentile, start_daemon_at};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const VALUE_BYTES: usize = 100;
const BATCH_ROWS: usize = 1_000;
const SYNCGROUP: &str = "sg";
/// Samples of one change and of a no-op pull per base (after 5 not counted).
const W2_SAMPLES: usize = 50;
const W2B_SAMPLES: usize = 1_000;
const W3_MEMBERS: usize = 5;
const W3_KEYS: usize = 1_000;
const MIB: f64 = 1024.0 * 1024.0;

/// What `bench sync` runs.
pub(crate) struct Options {
    /// W1's rows.
    pub rows: usize,
    /// Measured runs of W1 and W3 (after one warm-up).
    pub runs: usize,
    /// W2's large base.
    pub large: usize,
    /// Only this workload: w1, w2, w3 or peers.
    pub only: Option<String>,
}

fn database() -> DatabasePath {
    DatabasePath {
        app: "bench".into(),
        database: "db".into(),
    }
}

/// A 100-byte value that names its writer and row.
fn value(tag: &str, index: usize) -> Vec<u8> {
    let mut value = format!("{tag}-{index:08}-").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    value
}

/// Counts the bytes both ways between members and the daemon behind it.
struct Proxy {
    address: String,
    bytes: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: String) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (from_in, to_in) = inbound.into_split();
                let (from_out, to_out) = outbound.into_split();
                tokio::spawn(pump(from_in, to_out, counted.clone()));
                tokio::spawn(pump(from_out, to_in, counted.clone()));
            }
        });
        Ok(Self { address, bytes })
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                count.fetch_add(read as u64, Ordering::Relaxed);
                if to.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// One daemon of alice's, `alice:NAME`, with its client.
struct Member {
    daemon: Daemon,
    client: Client,
    /// Where members reach it (a proxy for A).
    reached_at: String,
    dir: PathBuf,
}

/// Starts `alice:NAME` with fresh data under `dir`; with `proxied`, members reach it through a
/// counting proxy.
async fn member(
    dir: &Path,
    alice: &Identity,
    name: &str,
    proxied: bool,
) -> Result<(Member, Option<Proxy>)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    alice.bless(name)?.save(&dir.join("identity"))?;
    let (member, proxy) = if proxied {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let proxy = Proxy::start(listen.clone()).await?;
        let (daemon, address) = start_daemon_at(
            dir,
            &listen,
            &["--sync-interval", "0", "--advertise", &proxy.address],
        )?;
        let client = Client::connect(&address, alice).await?;
        let reached_at = proxy.address.clone();
        (
            Member {
                daemon,
                client,
                reached_at,
                dir: dir.to_path_buf(),
            },
            Some(proxy),
        )
    } else {
        let (daemon, address) = start_daemon_at(dir, "127.0.0.1:0", &["--sync-interval", "0"])?;
        let client = Client::connect(&address, alice).await?;
        (
            Member {
                daemon,
                client,
                reached_at: address,
                dir: dir.to_path_buf(),
            },
            None,
        )
    };
    Ok((member, proxy))
}

/// Puts of one batch in flight at once.
const IN_FLIGHT_MAX: usize = 128;

/// Writes rows `rows` in batches of 1,000 (up to [`IN_FLIGHT_MAX`] puts of a batch in flight).
async fn load(client: &Client, rows: std::ops::Range<usize>, tag: &str) -> Result<()> {
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + BATCH_ROWS).min(rows.end);
        client
            .run_in_batch(&database(), |batch| {
                let client = client.clone();
                let tag = tag.to_string();
                async move {
                    let mut puts = tokio::task::JoinSet::new();
                    for index in start..end {
                        // A connection takes at most 256 calls at once.
                        if puts.len() >= IN_FLIGHT_MAX
                            && let Some(put) = puts.join_next().await
                        {
                            put.map_err(|error| {
                                syncbase_wire::WireError::new("bench.join", error.to_string())
                            })??;
                        }
                        let client = client.clone();
                        let value = value(&tag, index);
                        puts.spawn(async move {
                            client
                                .call_one(Request::Put {
                                    collection: collection(),
                                    key: key(index),
                                    value,
                                    batch: Some(batch),
                                })
                                .await
                        });
                    }
                    while let Some(put) = puts.join_next().await {
                        put.map_err(|error| {
                            syncbase_wire::WireError::new("bench.join", error.to_string())
                        })??;
                    }
                    Ok(())
                }
            })
            .await?;
        start = end;
    }
    Ok(())
}

/// Waits until sync's watcher has taken in every commit of the database on `client`'s daemon.
async fn watcher_caught_up(client: &Client) -> Result<()> {
    for _ in 0..6_000 {
        let Response::LogStatus(log) = client
            .call_one(Request::LogStatus {
                database: database(),
            })
            .await?
        else {
            return Err("a log status call answered something else".into());
        };
        if log.pins.iter().all(|pin| pin.seq > log.end) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("sync's watcher did not catch up within a minute".into())
}

/// Every row of the collection on `client`'s daemon.
async fn rows(client: &Client) -> Result<Vec<(String, Vec<u8>)>> {
    let mut responses = client
        .call(Request::Scan {
            collection: collection(),
            range: RowRange::Prefix(String::new()),
            batch: None,
        })
        .await?;
    let mut rows = Vec::new();
    while let Some(response) = responses.next().await {
        if let Response::Rows(mut some) = response? {
            rows.append(&mut some);
        }
    }
    Ok(rows)
}

/// A field of `/proc/PID/status` in bytes (`VmRSS:`, `VmHWM:`).
fn proc_status_bytes(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib * 1024.0)
}

/// Bytes the files under `path` occupy on disk.
fn allocated_bytes(path: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0.0;
    };
    if !metadata.is_dir() {
        return (metadata.blocks() * 512) as f64;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| allocated_bytes(&entry.path()))
                .sum()
        })
        .unwrap_or(0.0)
}

/// The benchmark's syncgroup, sharing collection `rows`, created on `client`'s daemon.
async fn create_syncgroup(client: &Client) -> Result<()> {
    client
        .create_syncgroup(
            &database(),
            SyncgroupSpec {
                name: SYNCGROUP.into(),
                collections: vec!["rows".into()],
                ..SyncgroupSpec::default()
            },
        )
        .await?;
    Ok(())
}

/// A with `rows` rows in a syncgroup, reached through a counting proxy.
async fn loaded_a(scratch: &Path, alice: &Identity, rows: usize) -> Result<(Member, Proxy)> {
    let (a, proxy) = member(&scratch.join("a"), alice, "a", true).await?;
    let proxy = proxy.ok_or("no proxy")?;
    create_collection(&a.client).await?;
    create_syncgroup(&a.client).await?;
    load(&a.client, 0..rows, "a").await?;
    watcher_caught_up(&a.client).await?;
    Ok((a, proxy))
}

/// One initial sync: a fresh B joins A and waits.
struct Initial {
    b: Member,
    seconds: f64,
    wire_bytes: f64,
}

async fn initial_sync(
    scratch: &Path,
    alice: &Identity,
    a: &Member,
    proxy: &Proxy,
    rows: usize,
    run: usize,
) -> Result<Initial> {
    let (b, _) = member(&scratch.join(format!("b{run}")), alice, "b", false).await?;
    let before = proxy.bytes();
    let started = Instant::now();
    b.client
        .join_syncgroup(&database(), SYNCGROUP, &a.reached_at, true)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let wire_bytes = (proxy.bytes() - before) as f64;
    let held = crate::sync::rows(&b.client).await?;
    if held.len() != rows || held.last().map(|row| &row.1) != Some(&value("a", rows - 1)) {
        return Err(format!(
            "B holds {} rows after joining, not the {rows} A wrote",
            held.len()
        )
        .into());
    }
    Ok(Initial {
        b,
        seconds,
        wire_bytes,
    })
}

fn figure(values: Vec<f64>) -> Option<Figure> {
    Some(Figure { values })
}

/// W1 and the S1 rate beside it.
async fn w1(scratch: &Path, alice: &Identity, options: &Options) -> Result<Table> {
    let rows = options.rows;
    let (a, proxy) = loaded_a(scratch, alice, rows).await?;
    let (mut rate, mut wire, mut rss, mut peak, mut disk) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..=options.runs {
        let initial = initial_sync(scratch, alice, &a, &proxy, rows, run).await?;
        if run == 0 {
            continue; // the warm-up
        }
        rate.push(rows as f64 / initial.seconds);
        wire.push(initial.wire_bytes / rows as f64);
        let pid = initial.b.daemon.pid();
        rss.push(proc_status_bytes(pid, "VmRSS:") / MIB);
        peak.push(proc_status_bytes(pid, "VmHWM:") / MIB);
        disk.push(allocated_bytes(&initial.b.dir) / rows as f64);
        drop(initial);
        let _ = std::fs::remove_dir_all(scratch.join(format!("b{run}")));
    }
    drop(a);
    let stages = core::rates(&scratch.join("core"), rows, options.runs).await?;
    let _ = std::fs::remove_dir_all(scratch.join("core"));
    let s1 = crate::store::s1_watchable(&scratch.join("s1"), options.runs)?;
    let ratio = Figure {
        values: vec![
            Figure {
                values: rate.clone(),
            }
            .median()
                / s1.median(),
        ],
    };
    Ok(Table {
        title: format!(
            "W1: initial sync of {rows} rows of {VALUE_BYTES} B, two daemons on loopback, durable \
             (B joins through A and waits)"
        ),
        columns: vec!["ours".into()],
        rows: [
            row("initial sync", "rows/s", figure(rate)),
            row(S1_ROW, "rows/s", Some(s1)),
            row("initial sync / S1", "ratio", Some(ratio)),
            row("bytes on the wire", "B/row", figure(wire)),
            row("B's memory after the sync (RSS)", "MiB", figure(rss)),
            row("B's peak memory (VmHWM)", "MiB", figure(peak)),
            row("B's disk", "B/row", figure(disk)),
        ]
        .into_iter()
        .chain(stage_rows(stages, "in process, no daemons: "))
        .collect(),
    })
}

/// The label of the watchable layer's S1 rate beside a sync workload.
const S1_ROW: &str = "watchable layer S1 (batches of 1,000, durable), same run";

/// A row of a one-column table.
fn row(label: &str, unit: &str, value: Option<Figure>) -> (String, String, Vec<Option<Figure>>) {
    (label.into(), unit.into(), vec![value])
}

/// The rows of W1's in-process stages, each label after `prefix`.
fn stage_rows(
    stages: Vec<(&'static str, Figure)>,
    prefix: &'static str,
) -> impl Iterator<Item = (String, String, Vec<Option<Figure>>)> {
    stages
        .into_iter()
        .map(move |(stage, rate)| row(&format!("{prefix}{stage}"), "rows/s", Some(rate)))
}

/// W1's in-process stages beside S1, without daemons (`--only core`: where the time goes).
async fn core_table(scratch: &Path, options: &Options) -> Result<Table> {
    let stages = core::rates(&scratch.join("core"), options.rows, options.runs).await?;
    let s1 = crate::store::s1_watchable(&scratch.join("s1"), options.runs)?;
    Ok(Table {
        title: format!(
            "W1's sync core in one process, {} rows of {VALUE_BYTES} B, durable",
            options.rows
        ),
        columns: vec!["ours".into()],
        rows: std::iter::once(row(S1_ROW, "rows/s", Some(s1)))
            .chain(stage_rows(stages, ""))
            .collect(),
    })
}

/// W2 figures on one base.
struct Base {
    initial_rate: f64,
    one_change_ms: Vec<f64>,
    one_change_bytes: Vec<f64>,
    no_op_ms: Vec<f64>,
    no_op_bytes: Vec<f64>,
    propagation_ms: Vec<f64>,
}

/// Puts one row on A and waits for B's watch to show it, `samples` times (after 5 not
/// counted): milliseconds and bytes on the wire of each.
async fn one_changes(
    a: &Member,
    b: &Member,
    proxy: &Proxy,
    samples: usize,
    tag: &str,
) -> Result<(Vec<f64>, Vec<f64>)> {
    // A watch call answers with its first change: read it in a task that passes on the keys.
    let (keys, mut seen) =
        tokio::sync::mpsc::unbounded_channel::<std::result::Result<String, String>>();
    let watching = b.client.clone();
    let watch = tokio::spawn(async move {
        let mut changes = match watching
            .call(Request::Watch {
                database: database(),
                start: WatchStart::Now,
            })
            .await
        {
            Ok(changes) => changes,
            Err(error) => {
                let _ = keys.send(Err(error.to_string()));
                return;
            }
        };
        while let Some(response) = changes.next().await {
            match response {
                Ok(Response::Changes(changes) | Response::ChangesPart(changes)) => {
                    for change in changes {
                        if keys.send(Ok(change.key)).is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = keys.send(Err(error.to_string()));
                    return;
                }
            }
        }
    });
    // Wait until the watch is in place: a row written on B itself shows in it.
    let probe = format!("{tag}probe");
    'probing: for attempt in 0..100 {
        b.client
            .call_one(Request::Put {
                collection: collection(),
                key: probe.clone(),
                value: value(tag, attempt),
                batch: None,
            })
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(Some(key)) = tokio::time::timeout_at(deadline, seen.recv()).await {
            if key? == probe {
                break 'probing;
            }
        }
    }
    let (mut times, mut bytes) = (Vec::new(), Vec::new());
    for sample in 0..samples + 5 {
        let before = proxy.bytes();
        let key = format!("{tag}{sample:06}");
        let started = Instant::now();
        a.client
            .call_one(Request::Put {
                collection: collection(),
                key: key.clone(),
                value: value(tag, sample),
                batch: None,
            })
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
                Ok(Some(Ok(seen))) if seen == key => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(None) => return Err("B's watch ended".into()),
                Err(_) => return Err(format!("B's watch did not show {key} within 30 s").into()),
            }
        }
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        // Let the round's last messages pass before counting its bytes.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if sample >= 5 {
            times.push(elapsed);
            bytes.push((proxy.bytes() - before) as f64);
        }
    }
    watch.abort();
    Ok((times, bytes))
}

async fn base(scratch: &Path, alice: &Identity, rows: usize, propagation: usize) -> Result<Base> {
    let (a, proxy) = loaded_a(scratch, alice, rows).await?;
    let initial = initial_sync(scratch, alice, &a, &proxy, rows, 0).await?;
    let b = &initial.b;
    let (one_change_ms, one_change_bytes) = one_changes(&a, b, &proxy, W2_SAMPLES, "w2-").await?;
    let (mut no_op_ms, mut no_op_bytes) = (Vec::new(), Vec::new());
    for sample in 0..W2_SAMPLES + 5 {
        let before = proxy.bytes();
        let started = Instant::now();
        let reports = b.client.sync_now(&database()).await?;
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        if let Some(error) = reports.iter().find_map(|report| report.error.clone()) {
            return Err(error.into());
        }
        if reports.iter().any(|report| report.records > 0) {
            return Err("a no-op pull carried records".into());
        }
        if sample >= 5 {
            no_op_ms.push(elapsed);
            no_op_bytes.push((proxy.bytes() - before) as f64);
        }
    }
    let propagation_ms = if propagation > 0 {
        one_changes(&a, b, &proxy, propagation, "w2b-").await?.0
    } else {
        Vec::new()
    };
    Ok(Base {
        initial_rate: rows as f64 / initial.seconds,
        one_change_ms,
        one_change_bytes,
        no_op_ms,
        no_op_bytes,
        propagation_ms,
    })
}

/// A W2 row: the small base's figure, the large one's, and their ratio (large / small).
fn compare(
    name: &str,
    unit: &str,
    small: &[f64],
    large: &[f64],
) -> (String, String, Vec<Option<Figure>>) {
    let median = |values: &[f64]| {
        Figure {
            values: values.to_vec(),
        }
        .median()
    };
    (
        name.into(),
        unit.into(),
        vec![
            figure(small.to_vec()),
            figure(large.to_vec()),
            figure(vec![median(large) / median(small)]),
        ],
    )
}

async fn w2(scratch: &Path, alice: &Identity, options: &Options) -> Result<Vec<Table>> {
    let small_rows = 10_000;
    let small = base(&scratch.join("small"), alice, small_rows, W2B_SAMPLES).await?;
    let _ = std::fs::remove_dir_all(scratch.join("small"));
    let large = base(&scratch.join("large"), alice, options.large, 0).await?;
    let _ = std::fs::remove_dir_all(scratch.join("large"));
    let w2 = Table {
        title: format!(
            "W2: one change and a no-op pull on bases of {small_rows} and {} rows ({W2_SAMPLES} \
             samples each; one change: a put on A until B's watch shows it)",
            options.large
        ),
        columns: vec![
            format!("{small_rows} rows"),
            format!("{} rows", options.large),
            "large / small".into(),
        ],
        rows: vec![
            (
                "initial sync (one run)".into(),
                "rows/s".into(),
                vec![
                    figure(vec![small.initial_rate]),
                    figure(vec![large.initial_rate]),
                    None,
                ],
            ),
            compare(
                "one change",
                "ms",
                &small.one_change_ms,
                &large.one_change_ms,
            ),
            compare(
                "one change, bytes on the wire",
                "B",
                &small.one_change_bytes,
                &large.one_change_bytes,
            ),
            compare(
                "no-op pull (sb sync)",
                "ms",
                &small.no_op_ms,
                &large.no_op_ms,
            ),
            compare(
                "no-op pull, bytes on the wire",
                "B",
                &small.no_op_bytes,
                &large.no_op_bytes,
            ),
        ],
    };
    let mut samples = small.propagation_ms.clone();
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    let w2b = Table {
        title: format!(
            "W2b: propagation, a put on A until B's watch shows it, connected, durable \
             ({W2B_SAMPLES} samples on the {small_rows}-row base)"
        ),
        columns: vec!["ours".into()],
        rows: vec![
            row("p50", "ms", figure(vec![p50])),
            row("p99", "ms", figure(vec![p99])),
            row(
                "max",
                "ms",
                figure(vec![samples.last().copied().unwrap_or(f64::NAN)]),
            ),
        ],
    };
    Ok(vec![w2, w2b])
}

/// One conflict storm: seconds until all members hold identical rows.
async fn storm(scratch: &Path, alice: &Identity) -> Result<f64> {
    let mut members = Vec::new();
    for index in 0..W3_MEMBERS {
        let name = format!("m{index}");
        let (member, _) = member(&scratch.join(&name), alice, &name, false).await?;
        create_collection(&member.client).await?;
        load(&member.client, 0..W3_KEYS, &name).await?;
        members.push(member);
    }
    create_syncgroup(&members[0].client).await?;
    let via = members[0].reached_at.clone();
    let started = Instant::now();
    let mut joins = tokio::task::JoinSet::new();
    for member in &members[1..] {
        let client = member.client.clone();
        let via = via.clone();
        joins.spawn(async move {
            client
                .join_syncgroup(&database(), SYNCGROUP, &via, false)
                .await
        });
    }
    while let Some(joined) = joins.join_next().await {
        joined??;
    }
    loop {
        let first = rows(&members[0].client).await?;
        let mut same = first.len() == W3_KEYS;
        for member in &members[1..] {
            same = same && rows(&member.client).await? == first;
        }
        if same {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the conflict storm did not settle within two minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn w3(scratch: &Path, alice: &Identity, options: &Options) -> Result<Table> {
    let mut seconds = Vec::new();
    for run in 0..=options.runs {
        let dir = scratch.join(format!("storm{run}"));
        let took = storm(&dir, alice).await?;
        let _ = std::fs::remove_dir_all(&dir);
        if run > 0 {
            seconds.push(took * 1e3);
        }
    }
    Ok(Table {
        title: format!(
            "W3: conflict storm, {W3_MEMBERS} daemons each write the same {W3_KEYS} keys, then \
             all join one syncgroup"
        ),
        columns: vec!["ours".into()],
        rows: vec![row("until all hold identical rows", "ms", figure(seconds))],
    })
}

/// The peers' harnesses (`../shared/peers`), or where `SYNCBASE_PEERS` says.
fn peers_dir() -> PathBuf {
    std::env::var_os("SYNCBASE_PEERS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers"),
        PathBuf::from,
    )
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers")
}

/// A peer's figures from one run of its harness.
#[derive(Default)]
struct PeerFigures {
    initial_rate: Option<f64>,
    one_change_ms: Option<f64>,
    no_op_ms: Option<f64>,
    memory_mb: Option<f64>,
}

/// The number after `prefix` on the line that starts with `line_start`, if any.
fn number_after(output: &str, line_start: &str, prefix: &str) -> Option<f64> {
    let line = output.lines().find(|line| line.starts_with(line_start))?;
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

fn copy_harness(from: &Path, to: &Path, entries: &[&str]) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in entries {
        let source = from.join(entry);
        let target = to.join(entry);
        if source.is_dir() {
            copy_harness(&source, &target, &[])?;
            for file in std::fs::read_dir(&source)? {
                let file = file?;
                std::fs::copy(file.path(), target.join(file.file_name()))?;
            }
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Runs a peer's harness on N rows: its figures, or why it was skipped.
type Harness = fn(usize) -> std::result::Result<PeerFigures, String>;

/// PouchDB replication over HTTP (installed once under `target/peers/pouch`).
fn pouch(rows: usize) -> std::result::Result<PeerFigures, String> {
    let dir = cache_dir().join("pouch");
    copy_harness(
        &peers_dir().join("pouch"),
        &dir,
        &["package.json", "server.js", "bench.js"],
    )
    .map_err(|error| format!("cannot copy the harness: {error}"))?;
    if !dir.join("node_modules").exists() {
        eprintln!("# installing PouchDB's harness (npm install, once)");
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .map_err(|error| format!("npm: {error}"))?;
        if !installed.success() {
            let _ = std::fs::remove_dir_all(dir.join("node_modules"));
            return Err("npm install failed".into());
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| error.to_string())?
        .port();
    let mut server = Command::new("node")
        .args(["server.js", &port.to_string()])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("node: {error}"))?;
    let listening = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let output = listening.then(|| {
        Command::new("node")
            .args(["bench.js", &rows.to_string(), &port.to_string()])
            .current_dir(&dir)
            .output()
    });
    let _ = server.kill();
    let _ = server.wait();
    let output = match output {
        Some(Ok(output)) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Some(Ok(output)) => {
            return Err(format!(
                "its harness failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Some(Err(error)) => return Err(format!("node: {error}")),
        None => return Err("its server did not listen within 10 s".into()),
    };
    print!("{}", indent(&output));
    Ok(PeerFigures {
        initial_rate: number_after(&output, "initial pull:", "="),
        one_change_ms: number_after(&output, "incremental pull", "docs in"),
        no_op_ms: number_after(&output, "no-op pull", ":"),
        memory_mb: number_after(&output, "rss MB", "rss MB"),
    })
}

/// iroh-docs over QUIC (built once under `target/peers/iroh-docs`).
fn iroh_docs(rows: usize) -> std::result::Result<PeerFigures, String> {
    let dir = cache_dir().join("iroh-docs");
    copy_harness(
        &peers_dir().join("iroh-docs"),
        &dir,
        &["Cargo.toml", "Cargo.lock", "src"],
    )
    .map_err(|error| format!("cannot copy the harness: {error}"))?;
    let binary = dir.join("target/release/iroh-docs-bench");
    eprintln!("# building iroh-docs' harness (about 5 minutes the first time)");
    let built = Command::new("cargo")
        .args(["build", "--release", "--locked", "--quiet"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|error| format!("cargo: {error}"))?;
    if !built.success() || !binary.exists() {
        return Err("its build failed".into());
    }
    let output = Command::new(&binary)
        .arg(rows.to_string())
        .output()
        .map_err(|error| format!("{}: {error}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "its harness failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let output = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{}", indent(&output));
    Ok(PeerFigures {
        initial_rate: number_after(&output, "initial sync:", "="),
        one_change_ms: number_after(&output, "one change", "median"),
        no_op_ms: number_after(&output, "no-op sync", "median"),
        // In kB, for both nodes in one process.
        memory_mb: number_after(&output, "memory:", "peak RSS").map(|kib| kib / 1024.0),
    })
}

fn indent(output: &str) -> String {
    output.lines().map(|line| format!("#   {line}\n")).collect()
}

fn peers_table(rows: usize, ours: Option<&Table>) -> Table {
    let mut columns = Vec::new();
    let mut cells: Vec<Vec<Option<Figure>>> = vec![Vec::new(); 5];
    let ours_rate = ours.and_then(|table| table.rows[0].2[0].as_ref().map(Figure::median));
    let harnesses: [(&str, Harness); 2] = [
        ("PouchDB 9 over HTTP", pouch),
        ("iroh-docs 0.101 over QUIC", iroh_docs),
    ];
    for (name, harness) in harnesses {
        eprintln!("# running {name} on {rows} rows");
        match harness(rows) {
            Ok(figures) => {
                columns.push(name.to_string());
                let one = |value: Option<f64>| {
                    value.map(|value| Figure {
                        values: vec![value],
                    })
                };
                cells[0].push(one(figures.initial_rate));
                cells[1].push(one(figures
                    .initial_rate
                    .zip(ours_rate)
                    .map(|(theirs, ours)| ours / theirs)));
                cells[2].push(one(figures.one_change_ms));
                cells[3].push(one(figures.no_op_ms));
                cells[4].push(one(figures.memory_mb));
            }
            Err(why) => println!("# skipped {name}: {why}"),
        }
    }
    let names = [
        ("initial sync", "rows/s"),
        ("ours / theirs (initial sync)", "ratio"),
        ("one change", "ms"),
        ("no-op sync", "ms"),
        (
            "memory (pouch: the pulling client; iroh-docs: both nodes, peak)",
            "MiB",
        ),
    ];
    Table {
        title: format!("Peers on W1/W2 with {rows} rows (one run each, their own harnesses)"),
        columns,
        rows: names
            .iter()
            .zip(cells)
            .map(|((name, unit), cells)| (name.to_string(), unit.to_string(), cells))
            .collect(),
    }
}

/// Runs the sync workloads and prints their tables.
pub(crate) fn run(options: &Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scratch = tempfile::tempdir()?;
    let alice = Identity::new_root("alice")?;
    let wanted = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    println!(
        "# bench sync: W1 {} rows (median of {} runs after a warm-up), W2 bases 10000 and {}, \
         W3 {W3_MEMBERS} daemons × {W3_KEYS} keys",
        options.rows, options.runs, options.large
    );
    let mut tables = Vec::new();
    runtime.block_on(async {
        if wanted("w1") {
            tables.push(w1(scratch.path(), &alice, options).await?);
        }
        if options.only.as_deref() == Some("core") {
            tables.push(core_table(scratch.path(), options).await?);
        }
        if wanted("w2") {
            tables.extend(w2(scratch.path(), &alice, options).await?);
        }
        if wanted("w3") {
            tables.push(w3(scratch.path(), &alice, options).await?);
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    if wanted("peers") {
        let ours = tables.iter().find(|table| table.title.starts_with("W1"));
        tables.push(peers_table(options.rows, ours));
    }
    for table in &tables {
        table.print();
    }
    write_json("sync", &tables.iter().collect::<Vec<_>>())?;
    Ok(())
}

/// The sync core's own rates for W1's rows, in one process without daemons or network: A's
/// responder (reading the delta), the delta's encoding and decoding, and B's apply (one
/// commit), each on durable fjall stores through the data model, as the daemons run them.
pub(crate) mod core {
    use std::sync::Arc;
    use std::time::Instant;

    use syncbase_client::Client;
    use syncbase_nosql::{Caller, Service};
    use syncbase_server::ServiceHandler;
    use syncbase_store::EntropyRng;
    use syncbase_vsync::conflict::LastWriterWins;
    use syncbase_vsync::service::{Action, DataModel, DatabaseSync, Event, Message, ModelAccess};
    use syncbase_vsync::syncgroup::Syncgroup;
    use syncbase_wire::StatusInfo;

    use super::{Result, database, load};
    use crate::report::Figure;
    use crate::service::create_collection;

    /// Seconds of each stage of one first round of `rows` rows.
    pub(crate) struct Stages {
        pub respond: f64,
        pub encode: f64,
        pub decode: f64,
        pub apply: f64,
    }

    fn service(dir: &std::path::Path) -> Result<Arc<Service>> {
        crate::service::embedded_service(dir, "alice")
    }

    fn client(service: &Arc<Service>) -> Client {
        Client::new(Arc::new(ServiceHandler::new(
            service.clone(),
            Caller::new("alice"),
            Arc::new(StatusInfo {
                identity: "alice".into(),
                device_id: service.device_id(),
                address: String::new(),
                engine: "persistent".into(),
                version: syncbase_wire::VERSION.into(),
            }),
        )))
    }

    type Sync = DatabaseSync<Arc<dyn syncbase_store::Store>>;

    fn member(service: &Arc<Service>, name: &str) -> Result<Sync> {
        let path = database();
        service.create_syncgroup(
            &Caller::new("alice"),
            &path,
            &Syncgroup {
                name: super::SYNCGROUP.into(),
                collections: vec!["rows".into()],
                members: vec!["alice:a".into(), "alice:b".into()],
                ..Syncgroup::default()
            },
        )?;
        Ok(DatabaseSync::new(
            service.open_for_sync(&path.app, &path.database)?,
            name,
            service.device_id(),
            service.log_clock().clone(),
            Arc::new(EntropyRng::default()),
            Arc::new(LastWriterWins),
            Arc::new(ModelAccess {
                model: service.clone(),
                app: path.app,
                database: path.database,
            }),
        )?)
    }

    fn message(handled: syncbase_vsync::service::Handled) -> Result<Message> {
        match handled.actions.into_iter().next() {
            Some(Action::Send { message, .. }) => Ok(message),
            None => Err("the sync core answered nothing".into()),
        }
    }

    /// One first round of `rows` rows from a fresh A to a fresh B under `dir`.
    #[allow(clippy::disallowed_methods)] // a benchmark times its stages.
    pub(crate) async fn round(dir: &std::path::Path, rows: usize) -> Result<Stages> {
        let _ = std::fs::remove_dir_all(dir);
        let (a, b) = (service(&dir.join("a"))?, service(&dir.join("b"))?);
        for side in [&a, &b] {
            create_collection(&client(side)).await?;
        }
        load(&client(&a), 0..rows, "a").await?;
        let (sync_a, sync_b) = (member(&a, "alice:a")?, member(&b, "alice:b")?);
        sync_a.handle(Event::LocalCommit)?;
        let pull = message(sync_b.handle(Event::Received {
            from: "alice:a".into(),
            message: Message::Notify,
        })?)?;
        let started = Instant::now();
        let delta = message(sync_a.handle(Event::Received {
            from: "alice:b".into(),
            message: pull,
        })?)?;
        let respond = started.elapsed().as_secs_f64();
        let Message::Delta(delta) = delta else {
            return Err("a pull was answered by something else".into());
        };
        let started = Instant::now();
        let bytes = syncbase_vsync::service::encode(&delta)?;
        let encode = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let delta = syncbase_vsync::service::decode(&bytes)?;
        let decode = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let applied = sync_b.handle(Event::Received {
            from: "alice:a".into(),
            message: Message::Delta(delta),
        })?;
        let apply = started.elapsed().as_secs_f64();
        let records = applied.applied.map_or(0, |applied| applied.records_applied);
        if records < rows as u64 {
            return Err(format!("B applied {records} records of {rows} rows").into());
        }
        drop((sync_a, sync_b));
        a.close()?;
        b.close()?;
        Ok(Stages {
            respond,
            encode,
            decode,
            apply,
        })
    }

    /// The stages' rates over `runs` rounds (after a warm-up), in rows/s.
    pub(crate) async fn rates(
        dir: &std::path::Path,
        rows: usize,
        runs: usize,
    ) -> Result<Vec<(&'static str, Figure)>> {
        let mut all: Vec<Stages> = Vec::new();
        for run in 0..=runs {
            let stages = round(dir, rows).await?;
            if run > 0 {
                all.push(stages);
            }
        }
        let rate = |stage: fn(&Stages) -> f64| Figure {
            values: all
                .iter()
                .map(|stages| rows as f64 / stage(stages))
                .collect(),
        };
        Ok(vec![
            ("A's responder reads the delta", rate(|s| s.respond)),
            ("the delta is encoded", rate(|s| s.encode)),
            ("the delta is decoded", rate(|s| s.decode)),
            ("B applies it (one durable commit)", rate(|s| s.apply)),
            (
                "all four stages",
                rate(|s| s.respond + s.encode + s.decode + s.apply),
            ),
        ])
    }
}
