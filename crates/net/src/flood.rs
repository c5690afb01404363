//! Unauthenticated connection pressure on a daemon, for tests and benchmarks (feature
//! `testing`): idle holders that connect and never send a byte, reconnecting as soon as the
//! daemon closes them, and churners that connect, hold a connection a random 0–20 ms and drop it.
//! One place, so the end-to-end test and `cargo xtask bench flood` apply the same flood.

// The flood tool (tests and benchmarks only) paces itself on real time and seeds from the OS.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The longest a churner holds a connection before dropping it.
pub const CHURN_HOLD_MAX: Duration = Duration::from_millis(20);

/// How long an attacker waits after a failed connect (the daemon's backlog full, out of
/// descriptors or ports) before it tries again, so failures do not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// What the attackers have done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodCounts {
    /// TCP connections opened, by holders and churners together.
    pub connections: u64,
    /// Idle holders' connections the daemon closed (a holder then reconnects at once).
    pub closed_by_daemon: u64,
    /// Connects that failed.
    pub connect_errors: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    closed_by_daemon: AtomicU64,
    connect_errors: AtomicU64,
}

/// A running flood on one address; [`Flood::stop`] ends it (dropping it aborts the attackers).
pub struct Flood {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    counters: Arc<Counters>,
}

impl Flood {
    /// Starts `idle_holders` idle holders and `churners` churners against `address`, on the
    /// current tokio runtime.
    pub fn start(address: SocketAddr, idle_holders: usize, churners: usize) -> Flood {
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let mut seed = [0u8; 8];
        // Hold times need not replay: the network's timing does not either.
        if getrandom::fill(&mut seed).is_err() {
            seed = *b"syncbase";
        }
        let mut seeds = SplitMix(u64::from_le_bytes(seed));
        let mut tasks = JoinSet::new();
        for _ in 0..idle_holders {
            tasks.spawn(hold_idle(address, stopped.clone(), counters.clone()));
        }
        for _ in 0..churners {
            let rng = XorShift::new(seeds.next());
            tasks.spawn(churn(address, rng, stopped.clone(), counters.clone()));
        }
        Flood {
            stop,
            tasks,
            counters,
        }
    }

    /// What the attackers have done so far.
    pub fn counts(&self) -> FloodCounts {
        FloodCounts {
            connections: self.counters.connections.load(Ordering::Relaxed),
            closed_by_daemon: self.counters.closed_by_daemon.load(Ordering::Relaxed),
            connect_errors: self.counters.connect_errors.load(Ordering::Relaxed),
        }
    }

    /// Stops every attacker, closing its connection, and returns what they did.
    pub async fn stop(mut self) -> FloodCounts {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.counts()
    }
}

/// Connects, or counts the failure and pauses; `None` once stopped.
async fn connect(
    address: SocketAddr,
    stopped: &mut watch::Receiver<bool>,
    counters: &Counters,
) -> Option<TcpStream> {
    loop {
        let connected = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return None,
            connected = TcpStream::connect(address) => connected,
        };
        match connected {
            Ok(stream) => {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                return Some(stream);
            }
            Err(_) => {
                counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return None,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// Holds one connection that never speaks, reconnecting whenever the daemon closes it.
async fn hold_idle(
    address: SocketAddr,
    mut stopped: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    while let Some(mut stream) = connect(address, &mut stopped, &counters).await {
        let mut byte = [0u8; 1];
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            // The daemon sends nothing before the client's first message: any outcome is the
            // daemon giving up on this connection.
            _ = stream.read(&mut byte) => {
                counters.closed_by_daemon.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Opens connections one after another, holding each a random 0–20 ms without a word.
async fn churn(
    address: SocketAddr,
    mut rng: XorShift,
    mut stopped: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let hold_max_us = CHURN_HOLD_MAX.as_micros() as u64;
    while let Some(stream) = connect(address, &mut stopped, &counters).await {
        let hold = Duration::from_micros(rng.next() % (hold_max_us + 1));
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(hold) => {}
        }
        drop(stream);
    }
}

/// Seeds for the churners' generators.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A small generator for hold times (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
