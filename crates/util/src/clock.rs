//! The hybrid logical clock (mirrors the role of Go `vclock`, simplified): timestamps close to
//! wall time that never go backwards, and that move past any timestamp observed from a peer, so a
//! write made after seeing another one always carries a larger timestamp.

use std::sync::Arc;

use parking_lot::Mutex;
use syncbase_store::{Clock, StoreReader, StoreWriter};

use crate::error::{Error, Result};

/// Remote timestamps more than this far ahead of the local physical clock are refused (1 hour):
/// otherwise one peer with a wild clock would drag every clock it syncs with into the future.
pub const CLOCK_DRIFT_MAX_NS: u64 = 3_600 * 1_000_000_000;

/// A hybrid logical clock over a physical [`Clock`]: `now` is the larger of the physical time and
/// one more than the last timestamp issued or observed.
pub struct HybridClock {
    physical: Arc<dyn Clock>,
    last_ns: Mutex<u64>,
}

impl HybridClock {
    /// A clock that will never issue a timestamp at or below `floor_ns` (use the floor saved
    /// before a restart, see [`save_clock_floor`]).
    pub fn new(physical: Arc<dyn Clock>, floor_ns: u64) -> Self {
        Self {
            physical,
            last_ns: Mutex::new(floor_ns),
        }
    }

    /// Takes a timestamp seen from a peer into account: later local timestamps exceed it.
    /// Refuses one too far ahead of local physical time ([`CLOCK_DRIFT_MAX_NS`]).
    pub fn observe(&self, remote_ns: u64) -> Result<()> {
        let local_ns = self.physical.now_ns();
        if remote_ns > local_ns.saturating_add(CLOCK_DRIFT_MAX_NS) {
            return Err(Error::ClockDrift {
                remote_ns,
                local_ns,
                drift_max_ns: CLOCK_DRIFT_MAX_NS,
            });
        }
        let mut last = self.last_ns.lock();
        *last = (*last).max(remote_ns);
        Ok(())
    }

    /// Takes a timestamp seen from a peer into account as far as [`CLOCK_DRIFT_MAX_NS`] ahead of
    /// local physical time allows: one further ahead moves this clock only that far (so this
    /// device's own later timestamps do not inherit a wild clock). Returns whether it was capped.
    pub fn observe_capped(&self, remote_ns: u64) -> bool {
        let cap = self.physical.now_ns().saturating_add(CLOCK_DRIFT_MAX_NS);
        let mut last = self.last_ns.lock();
        *last = (*last).max(remote_ns.min(cap));
        remote_ns > cap
    }

    /// The last timestamp issued or observed.
    pub fn last_ns(&self) -> u64 {
        *self.last_ns.lock()
    }
}

impl Clock for HybridClock {
    fn now_ns(&self) -> u64 {
        let physical = self.physical.now_ns();
        let mut last = self.last_ns.lock();
        *last = physical.max(last.saturating_add(1));
        *last
    }
}

/// Reads the clock floor saved at `key` (0 when none).
pub fn load_clock_floor<R: StoreReader + ?Sized>(reader: &R, key: &[u8]) -> Result<u64> {
    Ok(crate::get_typed::<u64, R>(reader, key)?.unwrap_or(0))
}

/// Saves a floor for the clock at `key`: the last timestamp plus `reserve_ns`. The owner saves
/// it at start and at least every `reserve_ns` of running time (and at clean shutdown), so after a
/// crash the clock restarts above every timestamp it issued. Never call it from inside a commit
/// hook: it writes to the store.
pub fn save_clock_floor<W: StoreWriter + ?Sized>(
    writer: &W,
    key: &[u8],
    clock: &HybridClock,
    reserve_ns: u64,
) -> Result<u64> {
    let floor = clock
        .last_ns()
        .max(clock.physical.now_ns())
        .saturating_add(reserve_ns);
    crate::put_typed(writer, key, &floor)?;
    Ok(floor)
}
