//! `bench flood`: what an unauthenticated connection flood costs honest clients of a real
//! `syncbased` (default `--pending-handshakes`): get latency over an open connection, and the
//! time to connect and make a first get, each without the flood and under it (three times the
//! cap of idle connections that never handshake, plus churners; `syncbase_net::flood`).

use std::time::{Duration, Instant};

use syncbase_client::Client;
use syncbase_net::Identity;
use syncbase_net::flood::Flood;
use syncbase_wire::Request;

use crate::report::{Figure, Table, write_json};
use crate::service::{
    ROWS, collection, get_latencies_us, key, percentile, scratch_dir, setup, start_daemon,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The daemon's default cap on pending handshakes, passed explicitly so the flood is sized to it.
const PENDING_HANDSHAKES: usize = 256;
const IDLE_HOLDERS: usize = 3 * PENDING_HANDSHAKES;
const CHURNERS: usize = 100;
const GETS: usize = 5_000;
const CONNECTS: usize = 200;
/// How long the flood may take to reach full pressure before the benchmark gives up.
const RAMP_UP_MAX: Duration = Duration::from_secs(30);

/// One phase's measurements (quiet or under the flood), one value per run.
#[derive(Default)]
struct Phase {
    get_p50_us: Vec<f64>,
    get_p99_us: Vec<f64>,
    connect_p50_ms: Vec<f64>,
    connect_p99_ms: Vec<f64>,
    connects_failed: Vec<f64>,
}

async fn measure_phase(
    client: &Client,
    address: &str,
    identity: &Identity,
    phase: &mut Phase,
) -> Result<()> {
    // A failed call on the open connection is a finding: the run stops there.
    let mut latencies = get_latencies_us(client, GETS)
        .await
        .map_err(|error| format!("a get on the open connection failed: {error}"))?;
    phase.get_p50_us.push(percentile(&mut latencies, 0.5));
    phase.get_p99_us.push(percentile(&mut latencies, 0.99));
    let mut latencies = Vec::with_capacity(CONNECTS);
    let mut failed = 0;
    for index in 0..CONNECTS {
        let start = Instant::now();
        // Each client is dropped after its get, which closes its connection (the daemon
        // allows one principal only so many).
        let connected = match Client::connect(address, identity).await {
            Ok(fresh) => fresh
                .call_one(Request::Get {
                    collection: collection(),
                    key: key(index % ROWS),
                    batch: None,
                })
                .await
                .is_ok(),
            Err(_) => false,
        };
        if connected {
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        } else {
            failed += 1;
        }
    }
    if !latencies.is_empty() {
        phase.connect_p50_ms.push(percentile(&mut latencies, 0.5));
        phase.connect_p99_ms.push(percentile(&mut latencies, 0.99));
    }
    phase.connects_failed.push(f64::from(failed));
    Ok(())
}

/// Runs the flood workload and prints the table.
pub(crate) fn run(runs: usize) -> Result<()> {
    // The attackers hold about a thousand sockets; the default soft limit may be 1,024.
    rlimit::increase_nofile_limit(u64::MAX)?;
    let scratch = scratch_dir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The attackers run on their own runtime, so they do not queue behind the measured client
    // (they still share the machine's cores with it and the daemon).
    let attackers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (daemon, address) = start_daemon(
        scratch.path(),
        &["--pending-handshakes", &PENDING_HANDSHAKES.to_string()],
    )?;
    let identity = Identity::load(&scratch.path().join("identity"))?;
    let socket_address: std::net::SocketAddr = address.parse()?;
    let mut quiet = Phase::default();
    let mut flooded = Phase::default();
    let mut attack_rate = Vec::new();
    runtime.block_on(async {
        let client = Client::connect(&address, &identity).await?;
        setup(&client).await?;
        for run in 0..=runs {
            // Run 0 warms up and is not kept.
            let (quiet_phase, flooded_phase) = if run == 0 {
                (&mut Phase::default(), &mut Phase::default())
            } else {
                (&mut quiet, &mut flooded)
            };
            measure_phase(&client, &address, &identity, quiet_phase).await?;
            let flood = {
                let _entered = attackers.enter();
                Flood::start(socket_address, IDLE_HOLDERS, CHURNERS)
            };
            let started = Instant::now();
            // Full pressure first: every holder has connected and the daemon is dropping
            // pending handshakes to stay under its cap.
            while flood.counts().closed_by_daemon < (2 * PENDING_HANDSHAKES) as u64 {
                if started.elapsed() > RAMP_UP_MAX {
                    return Err(format!(
                        "the flood did not reach full pressure in {RAMP_UP_MAX:?}: {:?}",
                        flood.counts()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            measure_phase(&client, &address, &identity, flooded_phase).await?;
            let counts = attackers.spawn(flood.stop()).await?;
            if run > 0 {
                attack_rate.push(counts.connections as f64 / started.elapsed().as_secs_f64());
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    drop(daemon);
    let figure = |values: &Vec<f64>| {
        (!values.is_empty()).then(|| Figure {
            values: values.clone(),
        })
    };
    let ratio = |flooded: &Vec<f64>, quiet: &Vec<f64>| {
        let (flooded, quiet) = (figure(flooded)?, figure(quiet)?);
        // No ratio to nothing (no failed connects, say).
        (quiet.median() > 0.0).then_some(())?;
        Some(Figure {
            values: vec![flooded.median() / quiet.median()],
        })
    };
    let row = |name: &str, unit: &str, quiet: &Vec<f64>, flooded: &Vec<f64>| {
        (
            name.to_string(),
            unit.to_string(),
            vec![figure(quiet), figure(flooded), ratio(flooded, quiet)],
        )
    };
    let table = Table {
        title: format!(
            "Flood: honest calls to syncbased (--pending-handshakes {PENDING_HANDSHAKES}, durable \
             fjall) without and under {IDLE_HOLDERS} idle unauthenticated connections plus \
             {CHURNERS} churners (0–20 ms each), attackers on the same machine"
        ),
        columns: vec!["quiet".into(), "under flood".into(), "flood / quiet".into()],
        rows: vec![
            row(
                &format!("get over one open connection, p50 ({GETS} gets)"),
                "µs",
                &quiet.get_p50_us,
                &flooded.get_p50_us,
            ),
            row(
                "get over one open connection, p99",
                "µs",
                &quiet.get_p99_us,
                &flooded.get_p99_us,
            ),
            row(
                &format!("connect + first get, p50 ({CONNECTS} connections)"),
                "ms",
                &quiet.connect_p50_ms,
                &flooded.connect_p50_ms,
            ),
            row(
                "connect + first get, p99",
                "ms",
                &quiet.connect_p99_ms,
                &flooded.connect_p99_ms,
            ),
            row(
                "honest connects that failed",
                "count",
                &quiet.connects_failed,
                &flooded.connects_failed,
            ),
            (
                "attacker connections opened".into(),
                "per s".into(),
                vec![None, figure(&attack_rate), None],
            ),
        ],
    };
    table.print();
    write_json("flood", &[&table])?;
    Ok(())
}
