//! The time and randomness seams. Everything above the store that needs a timestamp or a random
//! id takes it through [`Clock`] and [`Rng`], so a simulator can drive a whole run from one seed.
//! The real sources are built here and nowhere else.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of timestamps in nanoseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// The current time, in nanoseconds since the Unix epoch.
    fn now_ns(&self) -> u64;
}

/// A source of random 64-bit numbers (ids, not keys: it need not be cryptographic).
pub trait Rng: Send + Sync {
    /// The next random number.
    fn next_u64(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place the real wall clock is read.
    fn now_ns(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to (for tests and the simulator).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        Self {
            now_ns: AtomicU64::new(now_ns),
        }
    }

    /// Moves the clock forward by `delta_ns`.
    pub fn advance(&self, delta_ns: u64) {
        self.now_ns.fetch_add(delta_ns, Ordering::SeqCst);
    }

    /// Sets the clock (it may move backwards, as real clocks do).
    pub fn set(&self, now_ns: u64) {
        self.now_ns.store(now_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }
}

/// A deterministic generator (SplitMix64) for tests and the simulator.
#[derive(Debug)]
pub struct SeededRng {
    state: AtomicU64,
}

impl SeededRng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }
}

impl Rng for SeededRng {
    fn next_u64(&self) -> u64 {
        let state = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        split_mix(state)
    }
}

/// A generator seeded from the operating system's per-process randomness.
#[derive(Debug)]
pub struct EntropyRng {
    inner: SeededRng,
}

impl Default for EntropyRng {
    #[allow(clippy::disallowed_methods)] // the one place the real entropy source is read.
    fn default() -> Self {
        // `RandomState` is seeded from the OS; hashing a counter through it yields a fresh seed.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(SystemClock.now_ns());
        Self {
            inner: SeededRng::new(hasher.finish()),
        }
    }
}

impl Rng for EntropyRng {
    fn next_u64(&self) -> u64 {
        self.inner.next_u64()
    }
}

fn split_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
