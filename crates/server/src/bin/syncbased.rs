//! `syncbased`: the Syncbase daemon. Serves the data model to `sb`, to apps and (later) to peers
//! over encrypted, mutually authenticated connections.

use std::path::PathBuf;

/// mimalloc rather than the system allocator: with glibc's per-thread arenas, 16 MiB buffers
/// freed on one thread are not reused by another. Measured with the slow-reader test (6 readers
/// of 16 MiB rows, start 8–16 MiB): peak 314 MiB with glibc, 200 MiB with mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use syncbase_net::default_paths;
use syncbase_server::EngineKind;
use syncbase_server::daemon::{ConnectionLimits, Daemon, DaemonOptions};
use syncbase_store::{Durability, Retention};

/// The Syncbase daemon.
///
/// Prints `syncbased listening on HOST:PORT` on stdout once it accepts connections. Logs go to
/// stderr: by default start, stop, a new identity or root directory, warnings and errors;
/// RUST_LOG overrides (RUST_LOG=debug also logs each connection). Stops cleanly on SIGINT and
/// SIGTERM.
#[derive(Parser)]
#[command(version)]
struct Arguments {
    /// Where data lives [default: $XDG_DATA_HOME/syncbase, else ~/.local/share/syncbase]
    #[arg(long, value_name = "DIR")]
    root_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port
    #[arg(long, value_name = "HOST:PORT", default_value = syncbase_wire::DEFAULT_SERVICE_ADDRESS)]
    listen: String,
    /// Storage engine
    #[arg(long, value_enum, default_value_t = Engine::Persistent)]
    engine: Engine,
    /// Whether a commit waits for the disk
    #[arg(long, value_enum, default_value_t = DurabilityArg::Durable)]
    durability: DurabilityArg,
    /// The daemon's identity [default: $XDG_CONFIG_HOME/syncbase/identity, else ~/.config/syncbase/identity]
    #[arg(long, value_name = "DIR")]
    identity: Option<PathBuf>,
    /// Also trust the root in this file (written by `sb identity export-root`); repeatable
    #[arg(long, value_name = "ROOT_FILE")]
    trust: Vec<PathBuf>,
    /// Abort a batch left idle this long
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    batch_idle_timeout: u64,
    /// Keep at least this many of the newest commits in each database's watch log (a watch may
    /// resume from any of them)
    #[arg(long, value_name = "N", default_value_t = Retention::default().commits_min)]
    log_retention_commits: u64,
    /// Keep every commit younger than this in each database's watch log, whatever
    /// --log-retention-commits says; 0: no minimum age
    #[arg(long, value_name = "SECONDS", default_value_t = Retention::default().age_min_ns / 1_000_000_000)]
    log_retention_secs: u64,
    /// Close a client connection with no call running for this long
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectionLimits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Open connections one principal (e.g. alice:laptop) may hold
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().connections_per_principal_max)]
    connections_per_principal: usize,
    /// Unauthenticated connections handshaking at once; a newcomer past this drops the oldest
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().handshakes_pending_max)]
    pending_handshakes: usize,
    /// Where other members of a syncgroup reach this daemon [default: the address it listens
    /// on; give one when listening on 0.0.0.0]
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Pull from every member this often even without a notification (anti-entropy); 0: never
    #[arg(long, value_name = "SECONDS", default_value_t = syncbase_server::sync::ANTI_ENTROPY_INTERVAL_DEFAULT.as_secs())]
    sync_interval: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// The embedded persistent engine (fjall)
    Persistent,
    /// Memory only: data is lost when the daemon stops
    Memory,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// A commit returns once its data is on disk
    Durable,
    /// A commit returns once its data is written to the OS (a machine crash may lose the last ones)
    Relaxed,
}

/// Threads for calls that wait on the disk (tokio's default is 512): a bound on the daemon's
/// threads whatever the number of clients or databases. Every such call is finite (watches
/// and streams wait without a thread), so a full pool only queues calls.
const BLOCKING_THREADS_MAX: usize = 64;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .init();
    syncbase_server::process::disable_transparent_huge_pages();
    let options = DaemonOptions {
        root_dir: arguments.root_dir.unwrap_or_else(default_paths::data_dir),
        listen: arguments.listen,
        engine: match arguments.engine {
            Engine::Persistent => EngineKind::Persistent,
            Engine::Memory => EngineKind::Memory,
        },
        durability: match arguments.durability {
            DurabilityArg::Durable => Durability::Durable,
            DurabilityArg::Relaxed => Durability::Relaxed,
        },
        identity_dir: arguments
            .identity
            .unwrap_or_else(default_paths::identity_dir),
        trust: arguments.trust,
        default_identity_name: default_paths::user_name(),
        batch_idle_timeout_ns: arguments.batch_idle_timeout.saturating_mul(1_000_000_000),
        log_retention: Retention {
            commits_min: arguments.log_retention_commits,
            age_min_ns: arguments.log_retention_secs.saturating_mul(1_000_000_000),
        },
        advertise: arguments.advertise,
        anti_entropy: (arguments.sync_interval > 0)
            .then(|| std::time::Duration::from_secs(arguments.sync_interval)),
        limits: ConnectionLimits {
            idle_timeout: std::time::Duration::from_secs(arguments.idle_timeout),
            connections_per_principal_max: arguments.connections_per_principal,
            handshakes_pending_max: arguments.pending_handshakes,
            ..ConnectionLimits::default()
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("syncbased: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let daemon = match Daemon::start(options).await {
            Ok(daemon) => daemon,
            Err(error) => {
                eprintln!("syncbased: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!("syncbased listening on {}", daemon.address);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        daemon.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers the daemon still runs; it stops when killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
