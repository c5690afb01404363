//! The watchable layer (mirrors Go `store/watchable/`): over any [`Store`], keys under managed
//! prefixes are versioned, and every commit that touches them appends one entry to a watch log
//! in the same atomic commit.
//!
//! Every change of a managed key has a version: a put mints one for its value, a delete one for
//! its tombstone, and each records the version it replaced (its parent in sync's version DAG).
//! The current value sits inline beside its version, so a get is one read of the engine; a
//! replaced version moves to a history range that the retention window bounds ([`prune`]). The
//! reserved keys are described in [`format`]. Users may not write keys starting with `0xff`;
//! managed prefixes must not either.

mod format;
mod migrate;
mod notifier;
mod prune;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use format::{Head, RESERVED_BYTE, Stored};
pub use notifier::{LogEvent, LogNotifier, WaitAfter};
pub use prune::{
    PIN_NAME_BYTES_MAX, PRUNE_ENTRIES_PER_STEP, PruneOutcome, Pruner, RETENTION_AGE_MIN_NS_DEFAULT,
    RETENTION_COMMITS_MIN_DEFAULT, Retention, VersionHolder,
};

use self::format::{
    CURRENT_TAG, HISTORY_TAG, TOMBSTONE_TAG, current_key, decode_current, decode_history,
    decode_u64, encode_current, encode_history, history_key, history_prefix_range, log_key,
    log_limit, meta_key, pin_key, tagged, tombstone_key,
};
use crate::error::{Error, Result};
use crate::model::{
    CommitHook, KeyValue, Snapshot, Store, StoreReader, StoreWriter, Stream, StreamSource,
    Transaction, WriteOp, in_range, prefix_limit, visit_at_most,
};
use crate::seams::{Clock, Rng};

/// The newest format of this layer's reserved keys that this build reads and writes. A store of
/// format 1 is migrated when it is opened ([`migrate`]).
pub const WATCHABLE_FORMAT_VERSION: u32 = 2;

/// The version id of one value (or tombstone) of a managed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

/// One operation recorded in the watch log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOp {
    /// The key now has this value version.
    Put {
        /// The user key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Its new version.
        version: Version,
        /// The version it replaced (a value's or a tombstone's), if the key had one.
        parent: Option<Version>,
    },
    /// The key was deleted: its current version is now this tombstone.
    Delete {
        /// The user key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The tombstone's version.
        version: Version,
        /// The version it replaced, if the key had one (a delete that sync applies may be the
        /// first this device hears of a key).
        parent: Option<Version>,
    },
}

impl LogOp {
    /// The user key of this operation.
    pub fn key(&self) -> &[u8] {
        match self {
            LogOp::Put { key, .. } | LogOp::Delete { key, .. } => key,
        }
    }

    /// The version the key took.
    pub fn version(&self) -> Version {
        match self {
            LogOp::Put { version, .. } | LogOp::Delete { version, .. } => *version,
        }
    }

    /// The version the key had before.
    pub fn parent(&self) -> Option<Version> {
        match self {
            LogOp::Put { parent, .. } | LogOp::Delete { parent, .. } => *parent,
        }
    }
}

/// A version stored without becoming current (sync stores what it receives before deciding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The user key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The version.
    pub version: Version,
}

/// One committed transaction's changes to managed keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log; increases with commit order (there may be gaps).
    pub seq: u64,
    /// The change's timestamp: from the layer's (hybrid logical) clock for a local commit, the
    /// original one for a change that sync applies.
    pub timestamp_ns: u64,
    /// When this store committed it, by the plain physical clock (the retention window's age
    /// is measured with it, so a peer's fast clock cannot age the log).
    pub committed_ns: u64,
    /// Whether sync wrote this (so sync does not echo its own writes back).
    pub from_sync: bool,
    /// The verified principal name of whoever made the change (`alice:laptop`); empty for a
    /// commit nobody is accountable for (internal maintenance).
    pub author: String,
    /// The device id of the service that made the change.
    pub device: u64,
    /// The operations, in the order the transaction made them.
    pub ops: Vec<LogOp>,
    /// Versions this commit stored without making them current.
    pub stored: Vec<StoredVersion>,
}

/// Who made a transaction's changes, recorded in its log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The verified principal name of the caller (see [`LogEntry::author`]).
    pub author: String,
    /// The device id of the service that made the change.
    pub device: u64,
    /// Whether sync applies this change (it carries another device's author and device).
    pub from_sync: bool,
    /// The change's original timestamp (sync); `None` takes one from the layer's clock.
    pub timestamp_ns: Option<u64>,
}

impl Origin {
    /// A change a local caller makes on this device.
    pub fn local(author: impl Into<String>, device: u64) -> Self {
        Self {
            author: author.into(),
            device,
            from_sync: false,
            timestamp_ns: None,
        }
    }
}

/// How to open a [`Watchable`].
#[derive(Clone)]
pub struct WatchableOptions {
    /// Keys starting with any of these are versioned and logged.
    pub managed_prefixes: Vec<Vec<u8>>,
    /// Source of log timestamps (a service gives its hybrid logical clock).
    pub clock: Arc<dyn Clock>,
    /// The plain physical clock: commit times, by which the retention window's age is measured.
    pub physical_clock: Arc<dyn Clock>,
    /// Source of version ids.
    pub rng: Arc<dyn Rng>,
    /// How much of the log to keep.
    pub retention: Retention,
    /// Versions a layer above still needs (pruning keeps them).
    pub holder: Option<Arc<dyn VersionHolder>>,
    /// Where pruning runs in the background; without one, only [`Watchable::prune`] prunes.
    pub pruner: Option<Pruner>,
}

impl WatchableOptions {
    /// Options with one clock for both timestamps and age, the default retention window, no
    /// holder and no background pruning.
    pub fn new(managed_prefixes: Vec<Vec<u8>>, clock: Arc<dyn Clock>, rng: Arc<dyn Rng>) -> Self {
        Self {
            managed_prefixes,
            physical_clock: clock.clone(),
            clock,
            rng,
            retention: Retention::default(),
            holder: None,
            pruner: None,
        }
    }
}

/// A store whose managed keys are versioned and logged.
pub struct Watchable<S: Store + 'static> {
    shared: Arc<Shared<S>>,
}

struct Shared<S: Store + 'static> {
    store: S,
    managed: Vec<Vec<u8>>,
    clock: Arc<dyn Clock>,
    physical_clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    retention: Retention,
    holder: Option<Arc<dyn VersionHolder>>,
    pruner: Option<Pruner>,
    next_seq: AtomicU64,
    notifier: LogNotifier,
    /// The log start as last committed (a cache: pruning is the only writer).
    log_start: AtomicU64,
    /// Whether this store waits in the pruner's queue.
    prune_queued: AtomicBool,
    /// No background pruning before this physical time: the oldest entry is still too young.
    prune_not_before_ns: AtomicU64,
    /// The last step could remove nothing for a pin: none until a pin moves.
    prune_stalled: AtomicBool,
}

impl<S: Store + 'static> Watchable<S> {
    /// Wraps `store`: checks (or, on a new store, stamps) this layer's format version, migrating
    /// a store of format 1, and finds the end of the log.
    pub fn open(store: S, options: WatchableOptions) -> Result<Self> {
        for prefix in &options.managed_prefixes {
            if prefix.first() == Some(&RESERVED_BYTE) {
                return Err(Error::ReservedKey(format!(
                    "managed prefix {prefix:?} starts with the reserved byte"
                )));
            }
        }
        let format_key = meta_key(b'f');
        match store.get(&format_key)? {
            Some(bytes) => {
                let found =
                    u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                        Error::Corrupt("watchable format stamp is not 4 bytes".into())
                    })?);
                if found > WATCHABLE_FORMAT_VERSION {
                    return Err(Error::FormatTooNew {
                        found,
                        supported: WATCHABLE_FORMAT_VERSION,
                    });
                }
                if found < WATCHABLE_FORMAT_VERSION {
                    migrate::from_format_1(&store, found)?;
                }
            }
            None => store.put(&format_key, &WATCHABLE_FORMAT_VERSION.to_be_bytes())?,
        }
        // After a full prune the log is empty but its start remembers where it ended.
        let log_start = read_log_start(&store)?;
        let last_seq = last_log_seq(&store)?.max(log_start.saturating_sub(1));
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                managed: options.managed_prefixes,
                clock: options.clock,
                physical_clock: options.physical_clock,
                rng: options.rng,
                retention: options.retention,
                holder: options.holder,
                pruner: options.pruner,
                next_seq: AtomicU64::new(last_seq + 1),

                notifier: LogNotifier::new(last_seq),
                log_start: AtomicU64::new(log_start),
                prune_queued: AtomicBool::new(false),
                prune_not_before_ns: AtomicU64::new(0),
                prune_stalled: AtomicBool::new(false),
            }),
        })
    }

    /// The wrapped store (its reserved keys included).
    pub fn inner(&self) -> &S {
        &self.shared.store
    }

    /// Begins a transaction whose log entry records `origin`.
    pub fn begin(&self, origin: Origin) -> Result<WatchableTransaction<S>> {
        // Read before the transaction's snapshot is taken: every entry up to it is in there.
        let log_seen = self.shared.notifier.latest_seq();
        Ok(WatchableTransaction {
            shared: self.shared.clone(),
            log_seen,
            inner: Arc::from(self.shared.store.transaction()?),
            pending: Mutex::new(Pending::default()),
            origin,
            relaxed: AtomicBool::new(false),
        })
    }

    /// A snapshot that also answers version queries.
    pub fn versioned_snapshot(&self) -> Result<WatchableSnapshot<S>> {
        Ok(WatchableSnapshot {
            shared: self.shared.clone(),
            inner: Arc::from(self.shared.store.snapshot()?),
        })
    }

    /// Wake-ups for new log entries.
    pub fn notifier(&self) -> LogNotifier {
        self.shared.notifier.clone()
    }

    /// The sequence number of the newest committed log entry (0 when the log is empty).
    pub fn latest_log_seq(&self) -> u64 {
        self.shared.notifier.latest_seq()
    }

    /// Up to `count_max` log entries with sequence numbers `>= from_seq`, in order.
    pub fn log_entries(&self, from_seq: u64, count_max: usize) -> Result<Vec<LogEntry>> {
        let snapshot = self.shared.store.snapshot()?;
        let entries = read_log(snapshot.as_ref(), from_seq, count_max);
        let _ = snapshot.abort();
        entries
    }

    /// The first sequence number still kept in the log (entries before it were pruned).
    pub fn log_start(&self) -> Result<u64> {
        read_log_start(&self.shared.store)
    }

    /// Whether every log entry from `seq` on is inside the retention window, so a reader resuming
    /// there misses nothing. Logical: an entry below the window counts as gone whether or not
    /// pruning has removed it yet (and whether or not a pin keeps it).
    pub fn log_retains(&self, seq: u64) -> Result<bool> {
        self.shared.log_retains(seq)
    }

    /// Runs one bounded pruning step (the background pruner runs the same): removes up to
    /// `entries_max` log entries below the retention window and every pin, with the versions
    /// only they referred to.
    pub fn prune(&self, entries_max: usize) -> Result<PruneOutcome> {
        self.shared.prune_step(entries_max, None)
    }

    /// Moves the log start forward to `seq` whatever the retention window says (but never past
    /// a pin), removing the entries before it and the versions only they referred to, in bounded
    /// commits. It never moves past the end of the log.
    pub fn advance_log_start(&self, seq: u64) -> Result<()> {
        let seq = seq.min(self.latest_log_seq() + 1);
        while self.shared.log_start.load(Ordering::SeqCst) < seq {
            let outcome = self
                .shared
                .prune_step(prune::PRUNE_ENTRIES_PER_STEP, Some(seq))?;
            if outcome.entries_removed == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The durable pins: each name with the first log entry its holder still needs.
    pub fn pins(&self) -> Result<Vec<(String, u64)>> {
        prune::read_pins(&self.shared.store)
    }

    /// Whether `key` is under a managed prefix.
    pub fn is_managed(&self, key: &[u8]) -> bool {
        self.shared.is_managed(key)
    }
}

impl<S: Store + 'static> Shared<S> {
    fn is_managed(&self, key: &[u8]) -> bool {
        self.managed.iter().any(|prefix| key.starts_with(prefix))
    }

    fn check_user_key(&self, key: &[u8]) -> Result<()> {
        if key.first() == Some(&RESERVED_BYTE) {
            return Err(Error::ReservedKey(format!("{key:?}")));
        }
        Ok(())
    }

    fn check_managed(&self, key: &[u8]) -> Result<()> {
        self.check_user_key(key)?;
        if !self.is_managed(key) {
            return Err(Error::NotManaged(format!("{key:?}")));
        }
        Ok(())
    }

    fn get<R: StoreReader + ?Sized>(&self, reader: &R, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_user_key(key)?;
        if !self.is_managed(key) {
            return reader.get(key);
        }
        reader
            .get(&current_key(key))?
            .map(|record| decode_current(key, record).map(|(_, value)| value))
            .transpose()
    }

    fn scan(
        &self,
        reader: Arc<dyn StoreReader + Send + Sync>,
        start: &[u8],
        limit: &[u8],
    ) -> Result<Stream> {
        self.check_user_key(start)?;
        // User keys end where the reserved range begins: "to the end" means up to it.
        let reserved = [RESERVED_BYTE];
        let limit = if limit.is_empty() || limit > &reserved[..] {
            &reserved[..]
        } else {
            limit
        };
        match classify(&self.managed, start, limit) {
            RangeKind::Managed => {
                let inner = reader.scan(&current_key(start), &current_key(limit))?;
                // The inner stream already checks liveness; this outer one adds nothing to it.
                Ok(Stream::new(
                    Box::new(CurrentSource { inner }),
                    crate::model::Liveness::new(Default::default(), None),
                ))
            }
            RangeKind::Unmanaged => reader.scan(start, limit),
            RangeKind::Mixed => Err(Error::MixedScan(format!("[{start:?}, {limit:?})"))),
        }
    }
}

enum RangeKind {
    Managed,
    Unmanaged,
    Mixed,
}

/// Whether `[start, limit)` lies inside one managed prefix, outside all of them, or across.
fn classify(managed: &[Vec<u8>], start: &[u8], limit: &[u8]) -> RangeKind {
    if !limit.is_empty() && start >= limit {
        return RangeKind::Unmanaged;
    }
    let mut all_disjoint = true;
    for prefix in managed {
        let prefix_end = match prefix_limit(prefix) {
            end if end.is_empty() => vec![RESERVED_BYTE],
            end => end,
        };
        let start_inside = in_range(start, prefix, &prefix_end);
        let limit_inside =
            prefix_end.is_empty() || (!limit.is_empty() && limit <= prefix_end.as_slice());
        if start_inside && limit_inside {
            return RangeKind::Managed;
        }
        let disjoint = (!limit.is_empty() && limit <= prefix.as_slice())
            || (!prefix_end.is_empty() && start >= prefix_end.as_slice());
        all_disjoint &= disjoint;
    }
    if all_disjoint {
        RangeKind::Unmanaged
    } else {
        RangeKind::Mixed
    }
}

/// Strips the reserved tag and the version from current-value records while scanning.
struct CurrentSource {
    inner: Stream,
}

impl StreamSource for CurrentSource {
    fn next_entry(&mut self) -> Result<Option<KeyValue>> {
        let Some(entry) = self.inner.next() else {
            return Ok(None);
        };
        let (mut key, record) = entry?;
        key.drain(..2);
        let (_, value) = decode_current(&key, record)?;
        Ok(Some((key, value)))
    }
}

/// The head of a managed key as `reader` shows it.
fn read_head<R: StoreReader + ?Sized>(reader: &R, key: &[u8]) -> Result<Option<Head>> {
    if let Some(record) = reader.get(&current_key(key))? {
        let version = decode_u64(&|| format!("current record of key {key:?}"), &record)?;
        return Ok(Some(Head {
            version: Version(version),
            deleted: false,
        }));
    }
    Ok(read_tombstone(reader, key)?.map(|version| Head {
        version,
        deleted: true,
    }))
}

fn read_tombstone<R: StoreReader + ?Sized>(reader: &R, key: &[u8]) -> Result<Option<Version>> {
    reader
        .get(&tombstone_key(key))?
        .map(|bytes| decode_u64(&|| format!("tombstone of key {key:?}"), &bytes).map(Version))
        .transpose()
}

/// What `version` of a managed key stores, as `reader` shows it (pending history of a
/// transaction aside).
fn read_at_version<R: StoreReader + ?Sized>(
    reader: &R,
    key: &[u8],
    version: Version,
) -> Result<Option<Stored>> {
    if let Some(record) = reader.get(&current_key(key))? {
        let (current, value) = decode_current(key, record)?;
        if current == version {
            return Ok(Some(Stored::Value(value)));
        }
    }
    if let Some(record) = reader.get(&history_key(key, version))? {
        return Ok(Some(decode_history(key, record)?.1));
    }
    Ok((read_tombstone(reader, key)? == Some(version)).then_some(Stored::Tombstone))
}

impl<S: Store + 'static> StoreReader for Watchable<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.versioned_snapshot()?.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        self.versioned_snapshot()?.scan(start, limit)
    }
}

impl<S: Store + 'static> StoreWriter for Watchable<S> {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let transaction = self.begin(Origin::default())?;
        transaction.put(key, value)?;
        transaction.commit()
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        let transaction = self.begin(Origin::default())?;
        transaction.delete(key)?;
        transaction.commit()
    }
}

impl<S: Store + 'static> Store for Watchable<S> {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(self.versioned_snapshot()?))
    }

    fn transaction(&self) -> Result<Box<dyn Transaction>> {
        Ok(Box::new(self.begin(Origin::default())?))
    }

    fn close(&self) -> Result<()> {
        self.shared.notifier.close();
        self.shared.store.close()
    }
}

/// A snapshot of a [`Watchable`] store.
pub struct WatchableSnapshot<S: Store + 'static> {
    shared: Arc<Shared<S>>,
    inner: Arc<dyn Snapshot>,
}

impl<S: Store + 'static> WatchableSnapshot<S> {
    /// The sequence number of the newest log entry this snapshot shows (0 when none), so a
    /// reader can pair the snapshot's state with the log that follows it.
    pub fn log_position(&self) -> Result<u64> {
        let reader = self.inner.as_ref();
        Ok(last_log_seq(reader)?.max(read_log_start(reader)?.saturating_sub(1)))
    }

    /// The first sequence number this snapshot's log keeps.
    pub fn log_start(&self) -> Result<u64> {
        read_log_start(self.inner.as_ref())
    }

    /// Up to `count_max` log entries with sequence numbers `>= from_seq` that this snapshot shows.
    pub fn log_entries(&self, from_seq: u64, count_max: usize) -> Result<Vec<LogEntry>> {
        read_log(self.inner.as_ref(), from_seq, count_max)
    }

    /// The current version of a managed key (a tombstone's once it was deleted).
    pub fn head(&self, key: &[u8]) -> Result<Option<Head>> {
        self.shared.check_managed(key)?;
        read_head(self.inner.as_ref(), key)
    }

    /// What a managed key stores at `version`, if that version is kept.
    pub fn get_at_version(&self, key: &[u8], version: Version) -> Result<Option<Stored>> {
        self.shared.check_managed(key)?;
        read_at_version(self.inner.as_ref(), key, version)
    }

    /// The live managed keys starting with `prefix`, in key order, each with its current
    /// version and value (one range read, for a reader that needs both for many keys).
    pub fn scan_current(
        &self,
        prefix: &[u8],
    ) -> Result<impl Iterator<Item = Result<CurrentValue>> + use<S>> {
        self.shared.check_managed(prefix)?;
        let start = current_key(prefix);
        let limit = prefix_limit(&start);
        self.scan_current_range(&start, &limit)
    }

    /// [`Self::scan_current`] over the keys from `first` to `last` (both included) alone.
    pub fn scan_current_between(
        &self,
        first: &[u8],
        last: &[u8],
    ) -> Result<impl Iterator<Item = Result<CurrentValue>> + use<S>> {
        self.shared.check_managed(first)?;
        self.shared.check_managed(last)?;
        let mut limit = current_key(last);
        limit.push(0);
        self.scan_current_range(&current_key(first), &limit)
    }

    fn scan_current_range(
        &self,
        start: &[u8],
        limit: &[u8],
    ) -> Result<impl Iterator<Item = Result<CurrentValue>> + use<S>> {
        Ok(self.inner.scan(start, limit)?.map(|entry| {
            let (mut key, record) = entry?;
            key.drain(..2);
            let (version, value) = decode_current(&key, record)?;
            Ok((key, version, value))
        }))
    }
}

impl<S: Store + 'static> StoreReader for WatchableSnapshot<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared.get(self.inner.as_ref(), key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        let reader: Arc<dyn StoreReader + Send + Sync> =
            Arc::new(SnapshotReader(self.inner.clone()));
        self.shared.scan(reader, start, limit)
    }
}

impl<S: Store + 'static> Snapshot for WatchableSnapshot<S> {
    fn abort(&self) -> Result<()> {
        self.inner.abort()
    }
}

/// A live managed key, its current version and its value.
pub type CurrentValue = (Vec<u8>, Version, Vec<u8>);

/// Fewest keys [`WatchableTransaction::put_current_versions`] reads with range reads.
const SPAN_READ_MIN: usize = 64;

/// A managed key's current record, as a transaction read it.
enum Current {
    /// A value: its version and bytes.
    Value((Version, Vec<u8>)),
    /// A tombstone's version.
    Tombstone(Version),
    /// Neither: the key never held anything.
    Absent,
}

/// What a transaction has done that its commit hook writes or logs.
#[derive(Default)]
struct Pending {
    ops: Vec<LogOp>,
    /// Versions that stop being current (or are stored without becoming current): written
    /// under the history tag by the commit hook, which knows the log entry's sequence number.
    history: HashMap<(Vec<u8>, Version), Stored>,
    /// The order `history` was filled in (the hook writes in a stable order).
    history_order: Vec<(Vec<u8>, Version)>,
    stored: Vec<StoredVersion>,
    /// Whether a pin was set or removed (pruning may go on).
    pins_changed: bool,
}

impl Pending {
    fn keep(&mut self, key: &[u8], version: Version, stored: Stored) {
        let id = (key.to_vec(), version);
        if self.history.insert(id.clone(), stored).is_none() {
            self.history_order.push(id);
        }
    }

    fn take(&mut self, key: &[u8], version: Version) -> Option<Stored> {
        self.history.remove(&(key.to_vec(), version))
    }
}

/// A transaction of a [`Watchable`] store, with the version operations sync needs.
pub struct WatchableTransaction<S: Store + 'static> {
    shared: Arc<Shared<S>>,
    /// The newest log entry committed when the transaction began (all in its snapshot).
    log_seen: u64,
    inner: Arc<dyn Transaction>,
    pending: Mutex<Pending>,
    origin: Origin,
    /// Whether the commit skips the disk sync ([`Transaction::skip_disk_sync`]).
    relaxed: AtomicBool,
}

impl<S: Store + 'static> WatchableTransaction<S> {
    /// The current version of a managed key (a tombstone's once it was deleted), as this
    /// transaction sees it.
    pub fn head(&self, key: &[u8]) -> Result<Option<Head>> {
        self.shared.check_managed(key)?;
        read_head(self.inner.as_ref(), key)
    }

    /// What a managed key stores at `version`, if that version is kept.
    pub fn get_at_version(&self, key: &[u8], version: Version) -> Result<Option<Stored>> {
        self.shared.check_managed(key)?;
        if let Some(stored) = self
            .pending
            .lock()
            .history
            .get(&(key.to_vec(), version))
            .cloned()
        {
            return Ok(Some(stored));
        }
        read_at_version(self.inner.as_ref(), key, version)
    }

    /// Stores `value` as `version` of a managed key without making it current (sync stores a
    /// received version before deciding whether it wins); the log entry lists it. Storing a
    /// version already stored with the same bytes does nothing; with other bytes (or over a
    /// tombstone) it is refused with [`Error::VersionConflict`]: a version names one value
    /// forever, so re-delivery is harmless and a conflicting one is a peer's error.
    pub fn put_at_version(&self, key: &[u8], version: Version, value: &[u8]) -> Result<()> {
        self.shared.check_managed(key)?;
        match self.get_at_version(key, version)? {
            Some(Stored::Value(stored)) if stored == value => Ok(()),
            Some(_) => Err(Error::VersionConflict(format!(
                "version {} of key {key:?} is already stored with other bytes",
                version.0
            ))),
            None => {
                let mut pending = self.pending.lock();
                pending.keep(key, version, Stored::Value(value.to_vec()));
                pending.stored.push(StoredVersion {
                    key: key.to_vec(),
                    version,
                });
                Ok(())
            }
        }
    }

    /// Makes `version` (already stored, see [`Self::put_at_version`]) the current version of a
    /// managed key, logging a put. Already current: does nothing.
    pub fn put_version(&self, key: &[u8], version: Version) -> Result<()> {
        self.shared.check_managed(key)?;
        let head = read_head(self.inner.as_ref(), key)?;
        if head.is_some_and(|head| head.version == version && !head.deleted) {
            return Ok(());
        }
        let value = match self.take_stored(key, version)? {
            Some(Stored::Value(value)) => value,
            Some(Stored::Tombstone) => {
                return Err(Error::Misuse(format!(
                    "version {} of key {key:?} is a tombstone: delete_version makes it current",
                    version.0
                )));
            }
            None => {
                return Err(Error::Corrupt(format!(
                    "version {} of key {key:?} is not stored",
                    version.0
                )));
            }
        };
        let parent = self.retire_current(key)?;
        self.write_current(key, version, &value, parent)
    }

    /// Stores `value` as `version` of a managed key and makes it current at once, logging a
    /// put: [`Self::put_at_version`] then [`Self::put_version`] in one step, for a version new
    /// to this store (sync applying a received version that wins as it arrives; its DAG has
    /// just shown the version unknown). It reads only the key's current record and tombstone,
    /// where the two steps read them three times and look for the version in history.
    /// Already current with these bytes: does nothing; with other bytes: refused with
    /// [`Error::VersionConflict`].
    pub fn put_current_version(&self, key: &[u8], version: Version, value: &[u8]) -> Result<()> {
        self.shared.check_managed(key)?;
        let current = match self.inner.get(&current_key(key))? {
            Some(record) => Current::Value(decode_current(key, record)?),
            None => match read_tombstone(self.inner.as_ref(), key)? {
                Some(tombstone) => Current::Tombstone(tombstone),
                None => Current::Absent,
            },
        };
        let kept = self
            .inner
            .get(&history_key(key, version))?
            .map(|record| decode_history(key, record).map(|(_, stored)| stored))
            .transpose()?;
        self.put_current_known(key, version, value, current, kept)
    }

    /// [`Self::put_current_version`] for many keys (`items`, each key once): when their span
    /// holds few other keys, their current records, tombstones and kept versions are read with
    /// three range reads over it rather than three reads a key (a first sync round applies
    /// thousands of versions of keys this store does not have); otherwise key by key. Only the
    /// items' own records are kept from the ranges.
    pub fn put_current_versions(&self, items: &[(&[u8], Version, &[u8])]) -> Result<()> {
        for (key, _, _) in items {
            self.shared.check_managed(key)?;
        }
        let (Some(first), Some(last)) = (
            items.iter().map(|item| item.0).min(),
            items.iter().map(|item| item.0).max(),
        ) else {
            return Ok(());
        };
        let spanned = if items.len() >= SPAN_READ_MIN {
            let most = items.len().saturating_mul(2).saturating_add(SPAN_READ_MIN);
            let wanted: HashSet<&[u8]> = items.iter().map(|item| item.0).collect();
            let exact = |key: &[u8]| wanted.contains(key).then(|| key.to_vec());
            let kept_version = |key: &[u8]| {
                let (user_key, version) = key.split_at_checked(key.len().checked_sub(8)?)?;
                wanted.contains(user_key).then(|| {
                    let mut id = user_key.to_vec();
                    id.extend_from_slice(version);
                    id
                })
            };
            let currents = self.read_span(CURRENT_TAG, first, last, most, &exact)?;
            let tombstones = self.read_span(TOMBSTONE_TAG, first, last, most, &exact)?;
            let kept = self.read_span(HISTORY_TAG, first, last, most, &kept_version)?;
            match (currents, tombstones, kept) {
                (Some(currents), Some(tombstones), Some(kept)) => {
                    Some((currents, tombstones, kept))
                }
                _ => None,
            }
        } else {
            None
        };
        let Some((mut currents, tombstones, mut kept)) = spanned else {
            for (key, version, value) in items {
                self.put_current_version(key, *version, value)?;
            }
            return Ok(());
        };
        for (key, version, value) in items {
            let current = match currents.remove(*key) {
                Some(record) => Current::Value(decode_current(key, record)?),
                None => match tombstones.get(*key) {
                    Some(bytes) => Current::Tombstone(Version(decode_u64(
                        &|| format!("tombstone of key {key:?}"),
                        bytes,
                    )?)),
                    None => Current::Absent,
                },
            };
            let mut id = key.to_vec();
            id.extend_from_slice(&version.0.to_be_bytes());
            let kept_here = kept
                .remove(&id)
                .map(|record| decode_history(key, record).map(|(_, stored)| stored))
                .transpose()?;
            self.put_current_known(key, *version, value, current, kept_here)?;
        }
        Ok(())
    }

    /// The records under `tag` from key `first` to key `last` (and, for history, their
    /// versions), by what `keep` makes of a key without its tag (`None`: not wanted); `None`
    /// once the range has shown `most` keys (the range read still joins the read set).
    fn read_span(
        &self,
        tag: u8,
        first: &[u8],
        last: &[u8],
        most: usize,
        keep: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<Option<HashMap<Vec<u8>, Vec<u8>>>> {
        let start = tagged(tag, first);
        let limit = prefix_limit(&tagged(tag, last));
        let mut found = HashMap::new();
        let all = visit_at_most(self.inner.scan(&start, &limit)?, most, |(key, record)| {
            if let Some(id) = keep(&key[2..]) {
                found.insert(id, record);
            }
            Ok::<_, Error>(())
        })?;
        Ok(all.then_some(found))
    }

    /// [`Self::put_current_version`] once the key's current record is known (`current`, read
    /// by this transaction).
    fn put_current_known(
        &self,
        key: &[u8],
        version: Version,
        value: &[u8],
        current: Current,
        kept: Option<Stored>,
    ) -> Result<()> {
        let stored_here = self
            .pending
            .lock()
            .history
            .contains_key(&(key.to_vec(), version));
        if stored_here {
            // Stored earlier in this transaction: the two steps decide.
            self.put_at_version(key, version, value)?;
            return self.put_version(key, version);
        }
        let conflict = || {
            Error::VersionConflict(format!(
                "version {} of key {key:?} is already stored with other bytes",
                version.0
            ))
        };
        match kept {
            // Kept as an older version: it becomes current, as `put_version` would take it.
            Some(Stored::Value(stored)) if stored == value => {
                self.inner.delete(&history_key(key, version))?;
            }
            Some(_) => return Err(conflict()),
            None => {}
        }
        let parent = match current {
            Current::Value((current, current_value)) => {
                if current == version {
                    return if current_value == value {
                        Ok(())
                    } else {
                        Err(conflict())
                    };
                }
                self.pending
                    .lock()
                    .keep(key, current, Stored::Value(current_value));
                Some(current)
            }
            Current::Tombstone(tombstone) => {
                if tombstone == version {
                    return Err(conflict());
                }
                self.inner.delete(&tombstone_key(key))?;
                self.pending.lock().keep(key, tombstone, Stored::Tombstone);
                Some(tombstone)
            }
            Current::Absent => None,
        };
        self.write_current(key, version, value, parent)
    }

    /// Makes the tombstone `version` the current version of a managed key, logging a delete
    /// (sync applying another device's delete). Already current: does nothing.
    pub fn delete_version(&self, key: &[u8], version: Version) -> Result<()> {
        self.shared.check_managed(key)?;
        let head = read_head(self.inner.as_ref(), key)?;
        if head.is_some_and(|head| head.version == version && head.deleted) {
            return Ok(());
        }
        if let Some(Stored::Value(_)) = self.get_at_version(key, version)? {
            return Err(Error::VersionConflict(format!(
                "version {} of key {key:?} is a value, not a tombstone",
                version.0
            )));
        }
        self.take_stored(key, version)?;
        let parent = self.retire_current(key)?;
        self.inner.delete(&current_key(key))?;
        self.inner
            .put(&tombstone_key(key), &version.0.to_be_bytes())?;
        self.pending.lock().ops.push(LogOp::Delete {
            key: key.to_vec(),
            version,
            parent,
        });
        Ok(())
    }

    /// Removes every stored version that is not current of every managed key starting with
    /// `prefix` (no log entry), and returns how many. For data that is gone for good (a
    /// destroyed collection): a reader of an old log entry then finds no value rather than one it
    /// may no longer be entitled to. Tombstones stay: they hold no value.
    pub fn purge_versions(&self, prefix: &[u8]) -> Result<u64> {
        self.shared.check_managed(prefix)?;
        let mut count = 0u64;
        {
            let mut pending = self.pending.lock();
            let Pending {
                history,
                history_order,
                ..
            } = &mut *pending;
            history_order.retain(|id| {
                let doomed =
                    id.0.starts_with(prefix) && matches!(history.get(id), Some(Stored::Value(_)));
                if doomed {
                    history.remove(id);
                    count += 1;
                }
                !doomed
            });
        }
        let (start, limit) = history_prefix_range(prefix);
        let doomed: Vec<Vec<u8>> = self
            .inner
            .scan(&start, &limit)?
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<_>>()?;
        for key in &doomed {
            self.inner.delete(key)?;
        }
        Ok(count + doomed.len() as u64)
    }

    /// Puts `value` to a managed key and returns the version minted for it.
    pub fn put_versioned(&self, key: &[u8], value: &[u8]) -> Result<Version> {
        self.shared.check_managed(key)?;
        let version = Version(self.shared.rng.next_u64());
        let parent = self.retire_current(key)?;
        self.write_current(key, version, value, parent)?;
        Ok(version)
    }

    /// Pins the log for `name`: entries from `seq` on are kept (whatever the retention window
    /// says) until the pin moves or is removed. Durable with this transaction.
    pub fn set_pin(&self, name: &str, seq: u64) -> Result<()> {
        prune::check_pin_name(name)?;
        self.pending.lock().pins_changed = true;
        self.inner.put(&pin_key(name), &seq.to_be_bytes())
    }

    /// The pin `name`, as this transaction sees it (the read joins its read set).
    pub fn pin(&self, name: &str) -> Result<Option<u64>> {
        prune::check_pin_name(name)?;
        self.inner
            .get(&pin_key(name))?
            .map(|bytes| decode_u64(&|| format!("pin {name}"), &bytes))
            .transpose()
    }

    /// Up to `count_max` log entries with sequence numbers `>= from_seq`, as this transaction
    /// sees the log.
    /// Every entry the transaction's snapshot holds from `from_seq` is read, and the read
    /// covers the log's open end: a commit that appends an entry before this transaction
    /// commits makes it fail (use [`Self::log_entries_seen`] to read only the settled part).
    pub fn log_entries(&self, from_seq: u64, count_max: usize) -> Result<Vec<LogEntry>> {
        read_log(self.inner.as_ref(), from_seq, count_max)
    }

    /// Up to `count_max` log entries from `from_seq` that were committed before the
    /// transaction began (its snapshot may hold a few more, committed just before it was
    /// taken; they are not read). The range read ends there, so an entry a concurrent commit
    /// appends does not make this transaction's commit fail: for a reader of the log's tail
    /// that resumes where it stopped (sync's watcher), which would otherwise conflict with
    /// every commit made while it works. A reader that must see every entry its snapshot
    /// holds uses [`Self::log_entries`].
    pub fn log_entries_seen(&self, from_seq: u64, count_max: usize) -> Result<Vec<LogEntry>> {
        if from_seq > self.log_seen {
            return Ok(Vec::new());
        }
        let limit = log_key(self.log_seen.saturating_add(1));
        read_log_range(self.inner.as_ref(), from_seq, &limit, count_max)
    }

    /// The first sequence number the log keeps, as this transaction sees it.
    pub fn log_start(&self) -> Result<u64> {
        read_log_start(self.inner.as_ref())
    }

    /// Removes the pin `name` (absent: nothing happens).
    pub fn remove_pin(&self, name: &str) -> Result<()> {
        prune::check_pin_name(name)?;
        self.pending.lock().pins_changed = true;
        self.inner.delete(&pin_key(name))
    }

    /// Drops `version` of a managed key that a holder no longer needs, if it is neither current
    /// nor referred to by an entry inside the log (those go when their entry is pruned).
    /// Returns whether it was removed.
    pub fn release_version(&self, key: &[u8], version: Version) -> Result<bool> {
        self.shared.check_managed(key)?;
        let history = history_key(key, version);
        let Some(record) = self.inner.get(&history)? else {
            return Ok(false);
        };
        let (ref_seq, _) = decode_history(key, record)?;
        if ref_seq >= read_log_start(self.inner.as_ref())? {
            return Ok(false);
        }
        self.inner.delete(&history)?;
        Ok(true)
    }

    /// The commit hook that numbers this commit's log entry, writes the versions it retired
    /// (tagged with that number) and the entry, after `outer`'s writes; and where it leaves the
    /// number it gave.
    fn log_entry_hook(
        &self,
        mut pending: Pending,
        outer: Option<CommitHook>,
    ) -> (CommitHook, Arc<AtomicU64>) {
        let shared = self.shared.clone();
        let origin = self.origin.clone();
        let assigned = Arc::new(AtomicU64::new(0));
        let assigned_in_hook = assigned.clone();
        let hook: CommitHook = Box::new(move || {
            let mut writes = match outer {
                Some(outer) => outer()?,
                None => Vec::new(),
            };
            let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst);
            for id in std::mem::take(&mut pending.history_order) {
                if let Some(stored) = pending.history.remove(&id) {
                    writes.push(WriteOp::Put(
                        history_key(&id.0, id.1),
                        encode_history(seq, &stored),
                    ));
                }
            }
            let entry = LogEntry {
                seq,
                timestamp_ns: origin.timestamp_ns.unwrap_or_else(|| shared.clock.now_ns()),
                committed_ns: shared.physical_clock.now_ns(),
                from_sync: origin.from_sync,
                author: origin.author,
                device: origin.device,
                ops: pending.ops,
                stored: pending.stored,
            };
            let bytes = postcard::to_stdvec(&entry)
                .map_err(|error| Error::Corrupt(format!("cannot encode log entry: {error}")))?;
            writes.push(WriteOp::Put(log_key(seq), bytes));
            assigned_in_hook.store(seq, Ordering::SeqCst);
            Ok(writes)
        });
        (hook, assigned)
    }

    /// Writes `value` as the current version `version` of a managed key, logging a put that
    /// replaced `parent`.
    fn write_current(
        &self,
        key: &[u8],
        version: Version,
        value: &[u8],
        parent: Option<Version>,
    ) -> Result<()> {
        self.inner
            .put_owned(current_key(key), encode_current(version, value))?;
        self.pending.lock().ops.push(LogOp::Put {
            key: key.to_vec(),
            version,
            parent,
        });
        Ok(())
    }

    /// Takes a stored version out of history (this transaction's or the store's): it is about to
    /// become current.
    fn take_stored(&self, key: &[u8], version: Version) -> Result<Option<Stored>> {
        if let Some(stored) = self.pending.lock().take(key, version) {
            return Ok(Some(stored));
        }
        let history = history_key(key, version);
        match self.inner.get(&history)? {
            Some(record) => {
                self.inner.delete(&history)?;
                Ok(Some(decode_history(key, record)?.1))
            }
            None => Ok(None),
        }
    }

    /// Moves the key's current version (value or tombstone) to history, where the commit hook
    /// writes it, and returns it: the parent of the version replacing it. The caller overwrites
    /// or deletes the current record. The reads join the transaction's read set, so a concurrent
    /// change of the key makes the commit retry rather than record a wrong parent.
    fn retire_current(&self, key: &[u8]) -> Result<Option<Version>> {
        if let Some(record) = self.inner.get(&current_key(key))? {
            let (version, value) = decode_current(key, record)?;
            self.pending.lock().keep(key, version, Stored::Value(value));
            return Ok(Some(version));
        }
        let Some(version) = read_tombstone(self.inner.as_ref(), key)? else {
            return Ok(None);
        };
        self.inner.delete(&tombstone_key(key))?;
        self.pending.lock().keep(key, version, Stored::Tombstone);
        Ok(Some(version))
    }
}

impl<S: Store + 'static> StoreReader for WatchableTransaction<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared.get(self.inner.as_ref(), key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        let reader: Arc<dyn StoreReader + Send + Sync> =
            Arc::new(TransactionReader(self.inner.clone()));
        self.shared.scan(reader, start, limit)
    }
}

impl<S: Store + 'static> StoreWriter for WatchableTransaction<S> {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.shared.check_user_key(key)?;
        if self.shared.is_managed(key) {
            self.put_versioned(key, value).map(|_| ())
        } else {
            self.inner.put(key, value)
        }
    }

    fn put_owned(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.shared.check_user_key(&key)?;
        if self.shared.is_managed(&key) {
            self.put_versioned(&key, &value).map(|_| ())
        } else {
            self.inner.put_owned(key, value)
        }
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.shared.check_user_key(key)?;
        if !self.shared.is_managed(key) {
            return self.inner.delete(key);
        }
        // Deleting what is not there (absent, or already a tombstone) changes nothing, so it
        // writes and logs nothing (the read joins the transaction's read set: a concurrent put
        // of the key makes it retry).
        let Some(record) = self.inner.get(&current_key(key))? else {
            return Ok(());
        };
        let (parent, value) = decode_current(key, record)?;
        let version = Version(self.shared.rng.next_u64());
        let mut pending = self.pending.lock();
        pending.keep(key, parent, Stored::Value(value));
        pending.ops.push(LogOp::Delete {
            key: key.to_vec(),
            version,
            parent: Some(parent),
        });
        drop(pending);
        self.inner.delete(&current_key(key))?;
        self.inner
            .put(&tombstone_key(key), &version.0.to_be_bytes())
    }
}

impl<S: Store + 'static> Transaction for WatchableTransaction<S> {
    fn commit_with_hook(&self, outer: Option<CommitHook>) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock());
        let pins_changed = pending.pins_changed;
        if pending.ops.is_empty() && pending.history_order.is_empty() {
            self.inner.commit_with_hook(outer)?;
        } else {
            let (hook, assigned) = self.log_entry_hook(pending, outer);
            self.inner.commit_with_hook(Some(hook))?;
            // A commit that skipped the disk sync is not published: readers of the log (watch
            // streams, resume markers) learn of its entry with the next published one, whose
            // commit, reaching the disk after it, made it durable. So no reader holds a
            // position a machine crash could hand out again.
            if !self.relaxed.load(Ordering::SeqCst) {
                self.shared
                    .notifier
                    .publish(assigned.load(Ordering::SeqCst));
            }
        }
        if pins_changed {
            self.shared.prune_stalled.store(false, Ordering::SeqCst);
        }
        Shared::request_prune(&self.shared);
        Ok(())
    }

    fn abort(&self) -> Result<()> {
        self.inner.abort()
    }

    /// Also keeps the commit's log entry from readers of the log until a later commit with a
    /// log entry publishes its own (the store's current state shows the changes at once).
    fn skip_disk_sync(&self) {
        self.relaxed.store(true, Ordering::SeqCst);
        self.inner.skip_disk_sync();
    }
}

struct SnapshotReader(Arc<dyn Snapshot>);

impl StoreReader for SnapshotReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        self.0.scan(start, limit)
    }
}

struct TransactionReader(Arc<dyn Transaction>);

impl StoreReader for TransactionReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        self.0.scan(start, limit)
    }
}

fn read_log_start<R: StoreReader + ?Sized>(reader: &R) -> Result<u64> {
    match reader.get(&meta_key(b's'))? {
        None => Ok(1),
        Some(bytes) => decode_u64(&|| "log start".into(), &bytes),
    }
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<LogEntry> {
    postcard::from_bytes(value)
        .map_err(|error| Error::Corrupt(format!("log entry {key:?}: {error}")))
}

fn read_log<R: StoreReader + ?Sized>(
    reader: &R,
    from_seq: u64,
    count_max: usize,
) -> Result<Vec<LogEntry>> {
    read_log_range(reader, from_seq, &log_limit(), count_max)
}

/// Up to `count_max` log entries from `from_seq` to the key `limit` (excluded).
fn read_log_range<R: StoreReader + ?Sized>(
    reader: &R,
    from_seq: u64,
    limit: &[u8],
    count_max: usize,
) -> Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    for item in reader.scan(&log_key(from_seq), limit)?.take(count_max) {
        let (key, value) = item?;
        entries.push(decode_entry(&key, &value)?);
    }
    Ok(entries)
}

/// The first log sequence number `>= from`, if any.
fn first_log_seq_from<R: StoreReader + ?Sized>(reader: &R, from: u64) -> Result<Option<u64>> {
    let first = reader
        .scan(&log_key(from), &log_limit())?
        .next()
        .transpose()?;
    first
        .map(|(key, _)| {
            key[2..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt(format!("log key {key:?} is malformed")))
        })
        .transpose()
}

/// The last sequence number in the log (0 when empty), found by binary search over
/// "is there an entry at or after this number", so opening costs O(log) probes, not a log scan.
fn last_log_seq<R: StoreReader + ?Sized>(reader: &R) -> Result<u64> {
    let Some(mut low) = first_log_seq_from(reader, 0)? else {
        return Ok(0);
    };
    // Gallop from the first entry, so a short log costs a few seeks (a database opens on its
    // first call, and a search of all of u64 took 64), then bisect the last step.
    let mut step = 1u64;
    let mut high = loop {
        let Some(probe) = low.checked_add(step) else {
            break u64::MAX;
        };
        match first_log_seq_from(reader, probe)? {
            Some(found) => {
                low = found;
                step = step.saturating_mul(2);
            }
            None => break probe - 1,
        }
    };
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        match first_log_seq_from(reader, middle)? {
            Some(found) => low = found,
            None => high = middle - 1,
        }
    }
    Ok(low)
}
