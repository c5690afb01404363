//! The watchable layer (mirrors Go `store/watchable/`): over any [`Store`], keys under managed
//! prefixes are versioned, and every commit that touches them appends one entry to a watch log
//! in the same atomic commit.
//!
//! This layer owns the reserved key range starting with byte `0xff`:
//! - `ff 'v' <key>` → the current version of a managed key (8 bytes, big endian);
//! - `ff 'r' <key> <version>` → the value of a managed key at a version (versions are fixed
//!   width, so the key cannot be confused with another key's);
//! - `ff 'l' <seq>` → a log entry, seq big endian so the log sorts in commit order;
//! - `ff 'm' 's'` → the log start; `ff 'm' 'f'` → this layer's format version.
//!
//! Users may not write keys starting with `0xff`; managed prefixes must not either.

mod notifier;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use notifier::{LogEvent, LogNotifier, WaitAfter};

use crate::error::{Error, Result};
use crate::model::{
    CommitHook, KeyValue, Snapshot, Store, StoreReader, StoreWriter, Stream, StreamSource,
    Transaction, WriteOp, in_range, prefix_limit,
};
use crate::seams::{Clock, Rng};

/// The first byte of every key this layer reserves.
pub const RESERVED_BYTE: u8 = 0xff;
/// The newest format of this layer's reserved keys that this build reads and writes.
pub const WATCHABLE_FORMAT_VERSION: u32 = 1;

const POINTER_TAG: u8 = b'v';
const VALUE_TAG: u8 = b'r';
const LOG_TAG: u8 = b'l';
const META_TAG: u8 = b'm';

/// The version id of one value of a managed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

/// One operation recorded in the watch log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOp {
    /// The key now has this version.
    Put {
        /// The user key.
        key: Vec<u8>,
        /// Its new version.
        version: Version,
    },
    /// The key was deleted.
    Delete {
        /// The user key.
        key: Vec<u8>,
    },
}

impl LogOp {
    /// The user key of this operation.
    pub fn key(&self) -> &[u8] {
        match self {
            LogOp::Put { key, .. } | LogOp::Delete { key } => key,
        }
    }
}

/// One committed transaction's changes to managed keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log; increases with commit order (there may be gaps).
    pub seq: u64,
    /// The commit timestamp from the layer's [`Clock`], in nanoseconds.
    pub timestamp_ns: u64,
    /// Whether sync wrote this (so sync does not echo its own writes back).
    pub from_sync: bool,
    /// The operations, in the order the transaction made them.
    pub ops: Vec<LogOp>,
}

/// How to open a [`Watchable`].
#[derive(Clone)]
pub struct WatchableOptions {
    /// Keys starting with any of these are versioned and logged.
    pub managed_prefixes: Vec<Vec<u8>>,
    /// Source of commit timestamps.
    pub clock: Arc<dyn Clock>,
    /// Source of version ids.
    pub rng: Arc<dyn Rng>,
}

/// A store whose managed keys are versioned and logged.
pub struct Watchable<S: Store + 'static> {
    shared: Arc<Shared<S>>,
}

struct Shared<S: Store + 'static> {
    store: S,
    managed: Vec<Vec<u8>>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    next_seq: AtomicU64,
    notifier: LogNotifier,
}

impl<S: Store + 'static> Watchable<S> {
    /// Wraps `store`: checks (or, on a new store, stamps) this layer's format version and finds
    /// the end of the log.
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
            }
            None => store.put(&format_key, &WATCHABLE_FORMAT_VERSION.to_be_bytes())?,
        }
        // After a full prune the log is empty but its start remembers where it ended.
        let last_seq = last_log_seq(&store)?.max(read_log_start(&store)?.saturating_sub(1));
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                managed: options.managed_prefixes,
                clock: options.clock,
                rng: options.rng,
                next_seq: AtomicU64::new(last_seq + 1),
                notifier: LogNotifier::new(last_seq),
            }),
        })
    }

    /// The wrapped store (its reserved keys included).
    pub fn inner(&self) -> &S {
        &self.shared.store
    }

    /// Begins a transaction; `from_sync` marks its log entry as written by sync.
    pub fn begin(&self, from_sync: bool) -> Result<WatchableTransaction<S>> {
        Ok(WatchableTransaction {
            shared: self.shared.clone(),
            inner: Arc::from(self.shared.store.transaction()?),
            ops: Mutex::new(Vec::new()),
            from_sync,
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

    /// Moves the log start forward to `seq`, deleting the entries before it in the same commit.
    /// Moving it backwards is a no-op; it never moves past the end of the log.
    pub fn advance_log_start(&self, seq: u64) -> Result<()> {
        let seq = seq.min(self.latest_log_seq() + 1);
        crate::model::run_in_transaction(
            &self.shared.store,
            crate::model::TRANSACTION_ATTEMPTS_DEFAULT,
            |transaction| {
                let current = read_log_start(transaction)?;
                if seq <= current {
                    return Ok(());
                }
                let doomed = transaction.scan(&log_key(current), &log_key(seq))?;
                for entry in doomed {
                    transaction.delete(&entry?.0)?;
                }
                transaction.put(&meta_key(b's'), &seq.to_be_bytes())
            },
        )
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
        match read_version(reader, key)? {
            None => Ok(None),
            Some(version) => match reader.get(&value_key(key, version))? {
                Some(value) => Ok(Some(value)),
                None => Err(Error::Corrupt(format!(
                    "key {key:?} points at version {} which has no value",
                    version.0
                ))),
            },
        }
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
                let inner = reader.scan(&pointer_key(start), &pointer_key(limit))?;
                let source = VersionedSource { reader, inner };
                // The inner stream already checks liveness; this outer one adds nothing to it.
                Ok(Stream::new(
                    Box::new(source),
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

/// Resolves version pointers to values while scanning.
struct VersionedSource {
    reader: Arc<dyn StoreReader + Send + Sync>,
    inner: Stream,
}

impl StreamSource for VersionedSource {
    fn next_entry(&mut self) -> Result<Option<KeyValue>> {
        let Some(entry) = self.inner.next() else {
            return Ok(None);
        };
        let (pointer, version_bytes) = entry?;
        let key = pointer[2..].to_vec();
        let version = decode_version(&key, &version_bytes)?;
        match self.reader.get(&value_key(&key, version))? {
            Some(value) => Ok(Some((key, value))),
            None => Err(Error::Corrupt(format!(
                "key {key:?} points at version {} which has no value",
                version.0
            ))),
        }
    }
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
        let transaction = self.begin(false)?;
        transaction.put(key, value)?;
        transaction.commit()
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        let transaction = self.begin(false)?;
        transaction.delete(key)?;
        transaction.commit()
    }
}

impl<S: Store + 'static> Store for Watchable<S> {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(self.versioned_snapshot()?))
    }

    fn transaction(&self) -> Result<Box<dyn Transaction>> {
        Ok(Box::new(self.begin(false)?))
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

    /// Up to `count_max` log entries with sequence numbers `>= from_seq` that this snapshot shows.
    pub fn log_entries(&self, from_seq: u64, count_max: usize) -> Result<Vec<LogEntry>> {
        read_log(self.inner.as_ref(), from_seq, count_max)
    }

    /// The current version of a managed key.
    pub fn get_version(&self, key: &[u8]) -> Result<Option<Version>> {
        self.shared.check_managed(key)?;
        read_version(self.inner.as_ref(), key)
    }

    /// The value of a managed key at `version`, if that version is kept.
    pub fn get_at_version(&self, key: &[u8], version: Version) -> Result<Option<Vec<u8>>> {
        self.shared.check_managed(key)?;
        self.inner.get(&value_key(key, version))
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

/// A transaction of a [`Watchable`] store, with the version operations sync needs.
pub struct WatchableTransaction<S: Store + 'static> {
    shared: Arc<Shared<S>>,
    inner: Arc<dyn Transaction>,
    ops: Mutex<Vec<LogOp>>,
    from_sync: bool,
}

impl<S: Store + 'static> WatchableTransaction<S> {
    /// The current version of a managed key, as this transaction sees it.
    pub fn get_version(&self, key: &[u8]) -> Result<Option<Version>> {
        self.shared.check_managed(key)?;
        read_version(self.inner.as_ref(), key)
    }

    /// The value of a managed key at `version`, if that version is kept.
    pub fn get_at_version(&self, key: &[u8], version: Version) -> Result<Option<Vec<u8>>> {
        self.shared.check_managed(key)?;
        self.inner.get(&value_key(key, version))
    }

    /// Stores `value` as `version` of a managed key without making it current and without a
    /// log entry (sync stores a received version before deciding whether it wins). Storing a
    /// version already stored with the same bytes does nothing; with other bytes it is refused
    /// with [`Error::VersionConflict`] (a version names one value forever, so re-delivery is
    /// harmless and a conflicting one is a peer's error, not a new value).
    pub fn put_at_version(&self, key: &[u8], version: Version, value: &[u8]) -> Result<()> {
        self.shared.check_managed(key)?;
        let value_key = value_key(key, version);
        match self.inner.get(&value_key)? {
            Some(stored) if stored == value => Ok(()),
            Some(_) => Err(Error::VersionConflict(format!(
                "version {} of key {key:?} is already stored with other bytes",
                version.0
            ))),
            None => self.inner.put(&value_key, value),
        }
    }

    /// Makes `version` (already stored) the current version of a managed key, logging a put.
    pub fn put_version(&self, key: &[u8], version: Version) -> Result<()> {
        self.shared.check_managed(key)?;
        if self.inner.get(&value_key(key, version))?.is_none() {
            return Err(Error::Corrupt(format!(
                "version {} of key {key:?} is not stored",
                version.0
            )));
        }
        self.inner
            .put(&pointer_key(key), &version.0.to_be_bytes())?;
        self.ops.lock().push(LogOp::Put {
            key: key.to_vec(),
            version,
        });
        Ok(())
    }

    /// Removes every stored version of every managed key starting with `prefix` (no log entry),
    /// and returns how many. For data that is gone for good (a destroyed collection): a reader of
    /// an old log entry then finds no value rather than one it may no longer be entitled to.
    pub fn purge_versions(&self, prefix: &[u8]) -> Result<u64> {
        self.shared.check_managed(prefix)?;
        let start = value_key(prefix, Version(0));
        let start = &start[..start.len() - 8];
        let limit = prefix_limit(start);
        let doomed: Vec<Vec<u8>> = self
            .inner
            .scan(start, &limit)?
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<_>>()?;
        for key in &doomed {
            self.inner.delete(key)?;
        }
        Ok(doomed.len() as u64)
    }

    /// Puts `value` to a managed key and returns the version minted for it.
    pub fn put_versioned(&self, key: &[u8], value: &[u8]) -> Result<Version> {
        self.shared.check_managed(key)?;
        let version = Version(self.shared.rng.next_u64());
        self.inner.put(&value_key(key, version), value)?;
        self.inner
            .put(&pointer_key(key), &version.0.to_be_bytes())?;
        self.ops.lock().push(LogOp::Put {
            key: key.to_vec(),
            version,
        });
        Ok(version)
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

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.shared.check_user_key(key)?;
        if !self.shared.is_managed(key) {
            return self.inner.delete(key);
        }
        // Deleting what is not there changes nothing, so it writes and logs nothing (the read
        // joins the transaction's read set: a concurrent put of the key makes it retry).
        if self.inner.get(&pointer_key(key))?.is_none() {
            return Ok(());
        }
        self.inner.delete(&pointer_key(key))?;
        self.ops.lock().push(LogOp::Delete { key: key.to_vec() });
        Ok(())
    }
}

impl<S: Store + 'static> Transaction for WatchableTransaction<S> {
    fn commit_with_hook(&self, outer: Option<CommitHook>) -> Result<()> {
        let ops = std::mem::take(&mut *self.ops.lock());
        if ops.is_empty() {
            return self.inner.commit_with_hook(outer);
        }
        let shared = self.shared.clone();
        let from_sync = self.from_sync;
        let assigned = Arc::new(AtomicU64::new(0));
        let assigned_in_hook = assigned.clone();
        let hook: CommitHook = Box::new(move || {
            let mut writes = match outer {
                Some(outer) => outer()?,
                None => Vec::new(),
            };
            let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst);
            let entry = LogEntry {
                seq,
                timestamp_ns: shared.clock.now_ns(),
                from_sync,
                ops,
            };
            let bytes = postcard::to_stdvec(&entry)
                .map_err(|error| Error::Corrupt(format!("cannot encode log entry: {error}")))?;
            writes.push(WriteOp::Put(log_key(seq), bytes));
            assigned_in_hook.store(seq, Ordering::SeqCst);
            Ok(writes)
        });
        self.inner.commit_with_hook(Some(hook))?;
        self.shared
            .notifier
            .publish(assigned.load(Ordering::SeqCst));
        Ok(())
    }

    fn abort(&self) -> Result<()> {
        self.inner.abort()
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

fn pointer_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    out.extend_from_slice(&[RESERVED_BYTE, POINTER_TAG]);
    out.extend_from_slice(key);
    out
}

fn value_key(key: &[u8], version: Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    out.extend_from_slice(&[RESERVED_BYTE, VALUE_TAG]);
    out.extend_from_slice(key);
    out.extend_from_slice(&version.0.to_be_bytes());
    out
}

fn log_key(seq: u64) -> Vec<u8> {
    let mut out = vec![RESERVED_BYTE, LOG_TAG];
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

fn meta_key(tag: u8) -> Vec<u8> {
    vec![RESERVED_BYTE, META_TAG, tag]
}

fn decode_version(key: &[u8], bytes: &[u8]) -> Result<Version> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("version pointer of key {key:?} is not 8 bytes")))?;
    Ok(Version(u64::from_be_bytes(bytes)))
}

fn read_version<R: StoreReader + ?Sized>(reader: &R, key: &[u8]) -> Result<Option<Version>> {
    reader
        .get(&pointer_key(key))?
        .map(|bytes| decode_version(key, &bytes))
        .transpose()
}

fn read_log_start<R: StoreReader + ?Sized>(reader: &R) -> Result<u64> {
    match reader.get(&meta_key(b's'))? {
        None => Ok(1),
        Some(bytes) => {
            Ok(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                |_| Error::Corrupt("log start is not 8 bytes".into()),
            )?))
        }
    }
}

fn read_log<R: StoreReader + ?Sized>(
    reader: &R,
    from_seq: u64,
    count_max: usize,
) -> Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    for item in reader
        .scan(&log_key(from_seq), &[RESERVED_BYTE, LOG_TAG + 1])?
        .take(count_max)
    {
        let (key, value) = item?;
        let entry: LogEntry = postcard::from_bytes(&value)
            .map_err(|error| Error::Corrupt(format!("log entry {key:?}: {error}")))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The first log sequence number `>= from`, if any.
fn first_log_seq_from<R: StoreReader + ?Sized>(reader: &R, from: u64) -> Result<Option<u64>> {
    let first = reader
        .scan(&log_key(from), &[RESERVED_BYTE, LOG_TAG + 1])?
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
