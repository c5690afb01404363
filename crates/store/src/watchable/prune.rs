//! Bounded growth: the retention window, pins, holders, and pruning in bounded steps.
//!
//! The log keeps at least the last [`Retention::commits_min`] commits and every entry younger
//! than [`Retention::age_min_ns`] (measured by the physical clock), whichever keeps more. Below
//! that window an entry is removed, in steps of at most [`PRUNE_ENTRIES_PER_STEP`] entries per
//! commit, unless a pin keeps it; with it go the versions only it referred to (the versions it
//! replaced or stored, unless a [`VersionHolder`] still needs them). A [`Pruner`] runs the steps
//! on one background thread for every store that shares it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use super::format::{PIN_TAG, RESERVED_BYTE, decode_history, history_key, log_key, meta_key};
use super::{LogEntry, Shared, Version, decode_entry, read_log_start};
use crate::error::{Error, Result};
use crate::model::{StoreReader, Transaction, run_in_transaction};
use crate::{Store, TRANSACTION_ATTEMPTS_DEFAULT};

/// By default the log keeps at least the last 10,000 commits...
pub const RETENTION_COMMITS_MIN_DEFAULT: u64 = 10_000;
/// ...and at least the last hour, whichever keeps more.
pub const RETENTION_AGE_MIN_NS_DEFAULT: u64 = 3_600 * 1_000_000_000;
/// The most log entries one pruning step removes (one commit).
pub const PRUNE_ENTRIES_PER_STEP: usize = 128;
/// The most versions one pruning step examines, so an entry of huge batches cannot make a step
/// unbounded: the step ends after the entry that crosses it.
const PRUNE_VERSIONS_PER_STEP: usize = 8_192;
/// The log may exceed its window by this many entries before a background step is queued, so
/// steps remove many entries each rather than one per commit.
const PRUNE_SLACK_ENTRIES: u64 = PRUNE_ENTRIES_PER_STEP as u64 / 2;
/// The longest pin name, in bytes.
pub const PIN_NAME_BYTES_MAX: usize = 64;

/// How much of the watch log to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at least this many of the newest commits.
    pub commits_min: u64,
    /// Keep every entry committed less than this long ago (0: no minimum age).
    pub age_min_ns: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            commits_min: RETENTION_COMMITS_MIN_DEFAULT,
            age_min_ns: RETENTION_AGE_MIN_NS_DEFAULT,
        }
    }
}

/// The seam through which a layer above keeps versions it still needs (sync's DAG, its
/// responder, a conflict resolver's ancestors): pruning asks before removing a version, and the
/// holder calls [`WatchableTransaction::release_version`](super::WatchableTransaction::release_version)
/// for a version it kept that it no longer needs.
pub trait VersionHolder: Send + Sync {
    /// Whether `version` of `key` must be kept. `reader` is the pruning transaction over the
    /// store's own keys (the holder's records, outside the managed prefixes, read as written).
    fn holds(&self, reader: &dyn StoreReader, key: &[u8], version: Version) -> Result<bool>;
}

/// What one pruning step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Log entries removed.
    pub entries_removed: u64,
    /// Stored versions removed with them.
    pub versions_removed: u64,
    /// Whether entries below the window (and every pin) may remain: run another step.
    pub more: bool,
    /// The oldest entry kept only for its age becomes prunable at this physical time.
    pub not_before_ns: Option<u64>,
}

pub(super) fn check_pin_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > PIN_NAME_BYTES_MAX {
        return Err(Error::Misuse(format!(
            "a pin name has 1 to {PIN_NAME_BYTES_MAX} bytes, not {}",
            name.len()
        )));
    }
    Ok(())
}

pub(super) fn read_pins<R: StoreReader + ?Sized>(reader: &R) -> Result<Vec<(String, u64)>> {
    let mut pins = Vec::new();
    for item in reader.scan(&[RESERVED_BYTE, PIN_TAG], &[RESERVED_BYTE, PIN_TAG + 1])? {
        let (key, value) = item?;
        let name = String::from_utf8(key[2..].to_vec())
            .map_err(|_| Error::Corrupt(format!("pin name {key:?} is not UTF-8")))?;
        let seq = super::decode_u64(&|| format!("pin {name}"), &value)?;
        pins.push((name, seq));
    }
    Ok(pins)
}

impl<S: Store + 'static> Shared<S> {
    /// See [`super::Watchable::log_retains`].
    pub(super) fn log_retains(&self, seq: u64) -> Result<bool> {
        if seq < read_log_start(&self.store)? {
            return Ok(false);
        }
        let latest = self.notifier.latest_seq();
        if seq > latest || seq.saturating_add(self.retention.commits_min) > latest {
            return Ok(true);
        }
        let first = self
            .store
            .scan(&log_key(seq), &super::log_limit())?
            .next()
            .transpose()?;
        let Some((key, value)) = first else {
            return Ok(true);
        };
        let entry = decode_entry(&key, &value)?;
        Ok(self.is_young(&entry, self.physical_clock.now_ns()))
    }

    fn is_young(&self, entry: &LogEntry, now_ns: u64) -> bool {
        entry.committed_ns.saturating_add(self.retention.age_min_ns) > now_ns
    }

    /// One pruning step in one commit. `force_below`: prune below this sequence number whatever
    /// the window says (pins still hold).
    pub(super) fn prune_step(
        &self,
        entries_max: usize,
        force_below: Option<u64>,
    ) -> Result<PruneOutcome> {
        let latest = self.notifier.latest_seq();
        let outcome = run_in_transaction(
            &self.store,
            TRANSACTION_ATTEMPTS_DEFAULT,
            |transaction: &dyn Transaction| {
                let mut outcome = PruneOutcome::default();
                let start = read_log_start(transaction)?;
                let mut bound = match force_below {
                    Some(seq) => seq,
                    None => (latest + 1).saturating_sub(self.retention.commits_min),
                };
                if let Some(pin_min) = read_pins(transaction)?.iter().map(|(_, seq)| *seq).min() {
                    bound = bound.min(pin_min);
                }
                if bound <= start {
                    return Ok((outcome, start));
                }
                let now_ns = self.physical_clock.now_ns();
                let mut new_start = start;
                let mut versions_seen = 0usize;
                let entries = transaction.scan(&log_key(start), &log_key(bound))?;
                for item in entries {
                    if outcome.entries_removed as usize >= entries_max
                        || versions_seen >= PRUNE_VERSIONS_PER_STEP
                    {
                        outcome.more = true;
                        break;
                    }
                    let (key, value) = item?;
                    let entry = decode_entry(&key, &value)?;
                    if force_below.is_none() && self.is_young(&entry, now_ns) {
                        outcome.not_before_ns =
                            Some(entry.committed_ns.saturating_add(self.retention.age_min_ns));
                        break;
                    }
                    transaction.delete(&key)?;
                    let referred = entry
                        .ops
                        .iter()
                        .filter_map(|op| op.parent().map(|parent| (op.key(), parent)))
                        .chain(
                            entry
                                .stored
                                .iter()
                                .map(|stored| (stored.key.as_slice(), stored.version)),
                        );
                    for (user_key, version) in referred {
                        versions_seen += 1;
                        if self.remove_if_unreferred(transaction, &entry, user_key, version)? {
                            outcome.versions_removed += 1;
                        }
                    }
                    outcome.entries_removed += 1;
                    new_start = entry.seq + 1;
                }
                if !outcome.more && outcome.not_before_ns.is_none() {
                    // The scan reached the bound: the sequence numbers left below it are gaps.
                    new_start = bound;
                }
                if new_start > start {
                    transaction.put(&meta_key(b's'), &new_start.to_be_bytes())?;
                }
                Ok::<_, Error>((outcome, new_start))
            },
        )?;
        let (outcome, new_start) = outcome;
        // Pruning is the only writer of the log start, and it only moves forward.
        self.log_start.fetch_max(new_start, Ordering::SeqCst);
        Ok(outcome)
    }

    /// Removes the history record of `version` if `entry` is the last entry that referred to it
    /// and no holder needs it.
    fn remove_if_unreferred(
        &self,
        transaction: &dyn Transaction,
        entry: &LogEntry,
        key: &[u8],
        version: Version,
    ) -> Result<bool> {
        let history = history_key(key, version);
        let Some(record) = transaction.get(&history)? else {
            return Ok(false);
        };
        let (ref_seq, _) = decode_history(key, record)?;
        if ref_seq != entry.seq {
            return Ok(false);
        }
        if let Some(holder) = &self.holder
            && holder.holds(transaction, key, version)?
        {
            return Ok(false);
        }
        transaction.delete(&history)?;
        Ok(true)
    }

    /// Whether the log has outgrown the window by the slack (and no entry is known to be too
    /// young to go).
    fn needs_prune(&self) -> bool {
        let latest = self.notifier.latest_seq();
        let start = self.log_start.load(Ordering::SeqCst);
        let window = self
            .retention
            .commits_min
            .saturating_add(PRUNE_SLACK_ENTRIES);
        latest.saturating_sub(start) >= window
            && !self.prune_stalled.load(Ordering::SeqCst)
            && self.physical_clock.now_ns() >= self.prune_not_before_ns.load(Ordering::SeqCst)
    }

    /// Queues this store with its pruner when its log has outgrown the window by the slack.
    pub(super) fn request_prune(shared: &Arc<Self>) {
        let Some(pruner) = &shared.pruner else {
            return;
        };
        if !shared.needs_prune() || shared.prune_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let target: Weak<dyn PruneTarget> = Arc::downgrade(shared) as Weak<dyn PruneTarget>;
        pruner.queue.push(target);
    }
}

/// A store the pruner can work on.
trait PruneTarget: Send + Sync {
    /// Runs one step; whether another is due at once.
    fn prune_some(&self) -> bool;
}

impl<S: Store + 'static> PruneTarget for Shared<S> {
    fn prune_some(&self) -> bool {
        match self.prune_step(PRUNE_ENTRIES_PER_STEP, None) {
            Ok(outcome) if outcome.more => true,
            Ok(outcome) => {
                self.prune_not_before_ns
                    .store(outcome.not_before_ns.unwrap_or(0), Ordering::SeqCst);
                // Nothing could go (a pin holds the log): wait for a pin to move.
                if outcome.entries_removed == 0 && outcome.not_before_ns.is_none() {
                    self.prune_stalled.store(true, Ordering::SeqCst);
                }
                self.prune_queued.store(false, Ordering::SeqCst);
                // Commits made while this step ran found it queued and asked for nothing.
                self.needs_prune() && !self.prune_queued.swap(true, Ordering::SeqCst)
            }
            // A closed store, or a failed commit: the next commit queues it again.
            Err(_) => {
                self.prune_queued.store(false, Ordering::SeqCst);
                false
            }
        }
    }
}

/// A background thread that prunes the logs of the stores that share it, one bounded step at a
/// time, taking turns. Cloning shares the thread; it ends when the last clone is dropped.
#[derive(Clone)]
pub struct Pruner {
    queue: Arc<PruneQueue>,
    _stopper: Arc<Stopper>,
}

#[derive(Default)]
struct PruneQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    targets: VecDeque<Weak<dyn PruneTarget>>,
    stopped: bool,
    /// Steps run since the pruner started (for tests).
    steps: u64,
    /// Whether a step is running now.
    busy: bool,
}

struct Stopper(Arc<PruneQueue>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.state.lock().stopped = true;
        self.0.wake.notify_all();
    }
}

impl PruneQueue {
    fn push(&self, target: Weak<dyn PruneTarget>) {
        self.state.lock().targets.push_back(target);
        self.wake.notify_all();
    }

    fn run(&self) {
        loop {
            let target = {
                let mut state = self.state.lock();
                state.busy = false;
                self.wake.notify_all();
                loop {
                    if state.stopped {
                        return;
                    }
                    if let Some(target) = state.targets.pop_front() {
                        state.busy = true;
                        break target;
                    }
                    self.wake.wait(&mut state);
                }
            };
            let Some(target) = target.upgrade() else {
                continue;
            };
            let more = target.prune_some();
            let mut state = self.state.lock();
            state.steps += 1;
            if more {
                state.targets.push_back(Arc::downgrade(&target));
            }
        }
    }
}

impl Pruner {
    /// Starts the pruning thread.
    pub fn start() -> std::io::Result<Self> {
        let queue = Arc::new(PruneQueue::default());
        let worker = queue.clone();
        // The one thread of this layer: pruning must not run on a committer's thread.
        #[allow(clippy::disallowed_methods)]
        std::thread::Builder::new()
            .name("syncbase-prune".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            _stopper: Arc::new(Stopper(queue.clone())),
            queue,
        })
    }

    /// Blocks until no store waits for pruning and no step runs (for tests and benchmarks).
    pub fn wait_idle(&self) {
        let mut state = self.queue.state.lock();
        while !state.stopped && (state.busy || !state.targets.is_empty()) {
            self.queue.wake.wait(&mut state);
        }
    }

    /// The number of steps run so far.
    pub fn steps(&self) -> u64 {
        self.queue.state.lock().steps
    }
}
