//! `bench service` (R1 of `BENCHMARKS.md`): get and put round trips through a real `syncbased`
//! on loopback from one client (p50, p99), and throughput with 16 concurrent clients, beside the
//! same calls on the in-process service.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use syncbase_client::Client;
use syncbase_net::Identity;
use syncbase_nosql::{Caller, Service, ServiceOptions};
use syncbase_server::{EngineKind, EngineOpener, ServiceHandler};
use syncbase_store::{Durability, EntropyRng, SystemClock};
use syncbase_wire::{CollectionPath, DatabasePath, Request, StatusInfo};

use crate::report::{Figure, Table, write_json};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub(crate) const ROWS: usize = 1_000;
const GETS: usize = 10_000;
const PUTS: usize = 1_000;
const CLIENTS: usize = 16;
const GETS_PER_CLIENT: usize = 2_000;
const PUTS_PER_CLIENT: usize = 200;

/// A `syncbased` child process, killed when dropped.
pub(crate) struct Daemon(Child);

impl Daemon {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the process to exit (after it was told to stop).
    pub(crate) fn wait(mut self) -> std::io::Result<()> {
        self.0.wait().map(drop)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn collection() -> CollectionPath {
    CollectionPath {
        app: "bench".into(),
        database: "db".into(),
        collection: "rows".into(),
    }
}

pub(crate) fn key(index: usize) -> String {
    format!("k{index:08}")
}

/// Starts the release `syncbased` next to this binary, with its data and identity under `dir`
/// and `extra` arguments; returns it and the address it listens on.
pub(crate) fn start_daemon(dir: &Path, extra: &[&str]) -> Result<(Daemon, String)> {
    start_daemon_at(dir, "127.0.0.1:0", extra)
}

/// [`start_daemon`] listening on `listen`.
pub(crate) fn start_daemon_at(
    dir: &Path,
    listen: &str,
    extra: &[&str],
) -> Result<(Daemon, String)> {
    let exe = std::env::current_exe()?;
    let binary = exe.with_file_name("syncbased");
    let mut child = Command::new(&binary)
        .arg("--root-dir")
        .arg(dir.join("data"))
        .arg("--identity")
        .arg(dir.join("identity"))
        .args(["--listen", listen])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("SYNCBASE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("syncbased listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .to_string();
    Ok((Daemon(child), address))
}

/// The service in process, on durable fjall stores under `dir`, owned by `owner_root`.
pub(crate) fn embedded_service(dir: &Path, owner_root: &str) -> Result<Arc<Service>> {
    Ok(Arc::new(Service::open(ServiceOptions {
        root_dir: dir.to_path_buf(),
        opener: Arc::new(EngineOpener::new(
            EngineKind::Persistent,
            Durability::Durable,
        )),
        owner_root: owner_root.to_string(),
        clock: Arc::new(SystemClock),
        rng: Arc::new(EntropyRng::default()),
        batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
        idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
        keep_open: None,
        log_retention: syncbase_store::Retention::default(),
    })?))
}

pub(crate) fn percentile(samples: &mut [f64], fraction: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * fraction).round() as usize]
}

struct Figures {
    get_p50: Vec<f64>,
    get_p99: Vec<f64>,
    put_p50: Vec<f64>,
    put_p99: Vec<f64>,
    get_throughput: Vec<f64>,
    put_throughput: Vec<f64>,
}

/// The latency of `count` gets of the loaded rows, one after another, in microseconds.
pub(crate) async fn get_latencies_us(client: &Client, count: usize) -> Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count {
        let request = Request::Get {
            collection: collection(),
            key: key(index % ROWS),
            batch: None,
        };
        let start = Instant::now();
        client.call_one(request).await?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies)
}

async fn measure_once(client: &Client, figures: &mut Figures, clients: &[Client]) -> Result<()> {
    let mut latencies = get_latencies_us(client, GETS).await?;
    figures.get_p50.push(percentile(&mut latencies, 0.5));
    figures.get_p99.push(percentile(&mut latencies, 0.99));
    let mut latencies = Vec::with_capacity(PUTS);
    for index in 0..PUTS {
        let request = Request::Put {
            collection: collection(),
            key: key(index % ROWS),
            value: vec![7; 100],
            batch: None,
        };
        let start = Instant::now();
        client.call_one(request).await?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    figures.put_p50.push(percentile(&mut latencies, 0.5));
    figures.put_p99.push(percentile(&mut latencies, 0.99));
    for (puts, per_client) in [(false, GETS_PER_CLIENT), (true, PUTS_PER_CLIENT)] {
        let start = Instant::now();
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(worker, client)| {
                tokio::spawn(async move {
                    for index in 0..per_client {
                        let key = key((worker * per_client + index) % ROWS);
                        let request = if puts {
                            Request::Put {
                                collection: collection(),
                                key,
                                value: vec![7; 100],
                                batch: None,
                            }
                        } else {
                            Request::Get {
                                collection: collection(),
                                key,
                                batch: None,
                            }
                        };
                        client.call_one(request).await?;
                    }
                    Ok::<(), syncbase_wire::WireError>(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let rate = (clients.len() * per_client) as f64 / start.elapsed().as_secs_f64();
        if puts {
            figures.put_throughput.push(rate);
        } else {
            figures.get_throughput.push(rate);
        }
    }
    Ok(())
}

/// The loopback floor: a 100-byte ping-pong with an echo on another thread (so, like the
/// daemon, the other end must be woken), p50 in µs.
async fn loopback_round_trip_us() -> Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; 100];
        while stream.read_exact(&mut buffer).is_ok() {
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut buffer = [7u8; 100];
    let mut latencies = Vec::new();
    for _ in 0..GETS {
        let start = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    drop(stream);
    let _ = echo.join();
    Ok(percentile(&mut latencies, 0.5))
}

async fn status_round_trip_us(client: &Client) -> Result<f64> {
    let mut latencies = Vec::new();
    for _ in 0..GETS {
        let start = Instant::now();
        client.call_one(Request::Status).await?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentile(&mut latencies, 0.5))
}

/// Creates the bench collection and loads [`ROWS`] rows of 100 bytes.
pub(crate) async fn setup(client: &Client) -> Result<()> {
    create_collection(client).await?;
    for index in 0..ROWS {
        let request = Request::Put {
            collection: collection(),
            key: key(index),
            value: vec![7; 100],
            batch: None,
        };
        client.call_one(request).await?;
    }
    Ok(())
}

/// Creates the app, database and collection of [`collection`], with default permissions.
pub(crate) async fn create_collection(client: &Client) -> Result<()> {
    client
        .call_one(Request::CreateApp {
            app: "bench".into(),
            permissions: None,
        })
        .await?;
    let database = DatabasePath {
        app: "bench".into(),
        database: "db".into(),
    };
    client
        .call_one(Request::CreateDatabase {
            database,
            permissions: None,
        })
        .await?;
    client
        .call_one(Request::CreateCollection {
            collection: collection(),
            permissions: None,
        })
        .await?;
    Ok(())
}

fn empty() -> Figures {
    Figures {
        get_p50: vec![],
        get_p99: vec![],
        put_p50: vec![],
        put_p99: vec![],
        get_throughput: vec![],
        put_throughput: vec![],
    }
}

/// A scratch directory under `target/`, removed when dropped.
pub(crate) fn scratch_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("syncbase-bench")
        .tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))?)
}

/// Runs the service workloads and prints the table.
pub(crate) fn run(runs: usize) -> Result<()> {
    let scratch = scratch_dir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (daemon, address) = start_daemon(scratch.path(), &[])?;
    let identity = Identity::load(&scratch.path().join("identity"))?;
    let mut remote = empty();
    let mut embedded = empty();
    let mut floor = Vec::new();
    let mut status_remote = Vec::new();
    runtime.block_on(async {
        let client = Client::connect(&address, &identity).await?;
        setup(&client).await?;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::connect(&address, &identity).await?);
        }
        measure_once(&client, &mut empty(), &clients).await?;
        for _ in 0..runs {
            measure_once(&client, &mut remote, &clients).await?;
            floor.push(loopback_round_trip_us().await?);
            status_remote.push(status_round_trip_us(&client).await?);
        }

        let service = embedded_service(&scratch.path().join("embedded"), identity.root_name())?;
        let status = Arc::new(StatusInfo {
            identity: identity.name(),
            device_id: service.device_id(),
            address: String::new(),
            engine: "persistent".into(),
            version: syncbase_wire::VERSION.into(),
        });
        let handler = || {
            Client::new(Arc::new(ServiceHandler::new(
                service.clone(),
                Caller::new(identity.name()),
                status.clone(),
            )))
        };
        let local = handler();
        setup(&local).await?;
        let locals: Vec<Client> = (0..CLIENTS).map(|_| handler()).collect();
        measure_once(&local, &mut empty(), &locals).await?;
        for _ in 0..runs {
            measure_once(&local, &mut embedded, &locals).await?;
        }
        service.close()?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    drop(daemon);
    let figure = |values: &Vec<f64>| {
        Some(Figure {
            values: values.clone(),
        })
    };
    let ratio = |a: &Vec<f64>, b: &Vec<f64>| {
        let median = |values: &Vec<f64>| {
            Figure {
                values: values.clone(),
            }
            .median()
        };
        Some(Figure {
            values: vec![median(a) / median(b)],
        })
    };
    let table = Table {
        title: format!(
            "R1: service calls, durable fjall, 100 B values; 1 client, then {CLIENTS} concurrent clients"
        ),
        columns: vec![
            "daemon over loopback".into(),
            "embedded (in process)".into(),
            "daemon / embedded".into(),
        ],
        rows: vec![
            (
                "loopback TCP round trip (100 B), p50".into(),
                "µs".into(),
                vec![figure(&floor), None, None],
            ),
            (
                "status call (no store), 1 client, p50".into(),
                "µs".into(),
                vec![figure(&status_remote), None, None],
            ),
            (
                "get, 1 client, p50".into(),
                "µs".into(),
                vec![
                    figure(&remote.get_p50),
                    figure(&embedded.get_p50),
                    ratio(&remote.get_p50, &embedded.get_p50),
                ],
            ),
            (
                "get, 1 client, p99".into(),
                "µs".into(),
                vec![
                    figure(&remote.get_p99),
                    figure(&embedded.get_p99),
                    ratio(&remote.get_p99, &embedded.get_p99),
                ],
            ),
            (
                "put, 1 client, p50".into(),
                "µs".into(),
                vec![
                    figure(&remote.put_p50),
                    figure(&embedded.put_p50),
                    ratio(&remote.put_p50, &embedded.put_p50),
                ],
            ),
            (
                "put, 1 client, p99".into(),
                "µs".into(),
                vec![
                    figure(&remote.put_p99),
                    figure(&embedded.put_p99),
                    ratio(&remote.put_p99, &embedded.put_p99),
                ],
            ),
            (
                format!("get, {CLIENTS} clients"),
                "ops/s".into(),
                vec![
                    figure(&remote.get_throughput),
                    figure(&embedded.get_throughput),
                    ratio(&remote.get_throughput, &embedded.get_throughput),
                ],
            ),
            (
                format!("put, {CLIENTS} clients"),
                "ops/s".into(),
                vec![
                    figure(&remote.put_throughput),
                    figure(&embedded.put_throughput),
                    ratio(&remote.put_throughput, &embedded.put_throughput),
                ],
            ),
        ],
    };
    table.print();
    write_json("service", &[&table])?;
    Ok(())
}
