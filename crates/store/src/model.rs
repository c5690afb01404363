//! The store model: readers, writers, stores, snapshots, transactions and streams
//! (mirrors Go `store/model.go`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::error::{Error, Result};

/// One key and its value, as returned by a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Extra writes computed at commit time, in commit order, and written in the same atomic engine
/// write as the transaction. The watchable layer uses this to append its log entry with a
/// sequence number and timestamp that follow commit order.
///
/// A hook runs under the transaction layer's conflict lock, which every new transaction and
/// every commit of the store also takes: while it runs, the whole store waits. Keep hooks to
/// bookkeeping computed from what is in hand (numbering, stamping, encoding); no reads of other
/// stores, no I/O, no waiting. Work that takes time (sync's processing of a commit, for one)
/// follows the watch log after the commit instead. A hook that calls back into its store gets
/// [`Error::Misuse`], and one that panics fails only its own commit.
pub type CommitHook = Box<dyn FnOnce() -> Result<Vec<WriteOp>> + Send>;

/// One mutation in an atomic engine write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (a no-op when absent).
    Delete(Vec<u8>),
}

impl WriteOp {
    /// The key this operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put(key, _) | WriteOp::Delete(key) => key,
        }
    }
}

/// Reads from a store, a snapshot or a transaction.
pub trait StoreReader {
    /// Returns the value of `key`, or `None` when it is absent.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Streams the entries with keys in `[start, limit)` in key order. An empty `limit` means
    /// "to the end".
    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream>;

    /// Whether `key` is present.
    fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }
}

/// Writes to a store or a transaction.
pub trait StoreWriter {
    /// Sets `key` to `value`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;

    /// [`StoreWriter::put`] of a key and value the caller gives up (a transaction buffers them
    /// without copying).
    fn put_owned(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.put(&key, &value)
    }

    /// Removes `key`; removing an absent key is not an error.
    fn delete(&self, key: &[u8]) -> Result<()>;
}

/// A key-value store with snapshots and optimistic transactions. Store-level writes are
/// single-operation transactions.
pub trait Store: StoreReader + StoreWriter + Send + Sync {
    /// A consistent read-only view of the store as of now.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>>;

    /// Begins an optimistic transaction: reads see a snapshot taken now plus its own writes.
    fn transaction(&self) -> Result<Box<dyn Transaction>>;

    /// Closes the store: outstanding streams, snapshots and transactions fail from now on, and so
    /// does every later call. Closing twice is not an error.
    fn close(&self) -> Result<()>;
}

/// A consistent read-only view of a store.
pub trait Snapshot: StoreReader + Send + Sync {
    /// Releases the snapshot; later calls fail with [`Error::SnapshotAborted`].
    fn abort(&self) -> Result<()>;
}

/// An optimistic transaction.
pub trait Transaction: StoreReader + StoreWriter + Send + Sync {
    /// Commits: fails with [`Error::ConcurrentTransaction`] if any key it read or any range it
    /// scanned was written by a transaction that committed after this one began. After commit
    /// (successful or not) every call fails.
    fn commit(&self) -> Result<()> {
        self.commit_with_hook(None)
    }

    /// Commits like [`Transaction::commit`], and writes what `hook` returns in the same atomic
    /// engine write. The hook runs only if validation passes, in commit order.
    fn commit_with_hook(&self, hook: Option<CommitHook>) -> Result<()>;

    /// Abandons the transaction; later calls fail with [`Error::TransactionAborted`].
    fn abort(&self) -> Result<()>;

    /// Lets its commit return without waiting for the disk, whatever the store's durability:
    /// the commit becomes durable with the next commit that waits and writes something (commits
    /// reach the disk in order; an engine may skip an empty write), so a crash of the machine before then may lose it, never a later commit without
    /// it. For work a later durable commit completes (a delta's parts before its last). A store
    /// may wait anyway.
    fn skip_disk_sync(&self) {}
}

/// Runs `body` in a fresh transaction of `store` and commits it, retrying from scratch (up to
/// `attempts_max` times) while the commit fails with [`Error::ConcurrentTransaction`]. The body
/// may use any error type that store errors convert into; its errors abort the transaction.
pub fn run_in_transaction<S, T, E>(
    store: &S,
    attempts_max: usize,
    mut body: impl FnMut(&dyn Transaction) -> Result<T, E>,
) -> Result<T, E>
where
    S: Store + ?Sized,
    E: From<Error>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let transaction = store.transaction().map_err(E::from)?;
        let value = match body(transaction.as_ref()) {
            Ok(value) => value,
            Err(error) => {
                let _ = transaction.abort();
                return Err(error);
            }
        };
        match transaction.commit() {
            Err(Error::ConcurrentTransaction) if attempt < attempts_max => continue,
            Err(error) => return Err(error.into()),
            Ok(()) => return Ok(value),
        }
    }
}

/// The default number of attempts for [`run_in_transaction`] (Go used 100).
pub const TRANSACTION_ATTEMPTS_DEFAULT: usize = 100;

/// Something that produces entries for a [`Stream`], in key order.
pub(crate) trait StreamSource: Send {
    /// The next entry, or `None` at the end.
    fn next_entry(&mut self) -> Result<Option<KeyValue>>;
}

/// What a stream checks before every step: the store is open and its owner is still usable.
#[derive(Clone)]
pub(crate) struct Liveness {
    store_closed: Arc<AtomicBool>,
    owner: Option<Arc<OwnerState>>,
}

impl Liveness {
    /// A liveness check tied to a store's closed flag and, optionally, to a snapshot or
    /// transaction.
    pub(crate) fn new(store_closed: Arc<AtomicBool>, owner: Option<Arc<OwnerState>>) -> Self {
        Self {
            store_closed,
            owner,
        }
    }

    /// The owner this check is tied to, if any.
    pub(crate) fn owner_state(&self) -> Option<Arc<OwnerState>> {
        self.owner.clone()
    }

    /// Fails when the store is closed or the owner is finished.
    pub(crate) fn check(&self) -> Result<()> {
        if self.store_closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        match &self.owner {
            Some(owner) => owner.check(),
            None => Ok(()),
        }
    }
}

/// The state of a snapshot or transaction, shared with its streams.
#[derive(Debug)]
pub(crate) struct OwnerState {
    state: AtomicU8,
}

const OWNER_ACTIVE: u8 = 0;
const OWNER_SNAPSHOT_ABORTED: u8 = 1;
const OWNER_TRANSACTION_ABORTED: u8 = 2;
const OWNER_TRANSACTION_COMMITTED: u8 = 3;

impl OwnerState {
    /// A new, active owner.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(OWNER_ACTIVE),
        })
    }

    /// Fails with the error matching how the owner finished, if it has.
    pub(crate) fn check(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            OWNER_ACTIVE => Ok(()),
            OWNER_SNAPSHOT_ABORTED => Err(Error::SnapshotAborted),
            OWNER_TRANSACTION_ABORTED => Err(Error::TransactionAborted),
            _ => Err(Error::TransactionCommitted),
        }
    }

    /// Marks a snapshot aborted. Returns false when it was already finished.
    pub(crate) fn finish_snapshot(&self) -> bool {
        self.finish(OWNER_SNAPSHOT_ABORTED)
    }

    /// Marks a transaction aborted. Returns false when it was already finished.
    pub(crate) fn finish_aborted(&self) -> bool {
        self.finish(OWNER_TRANSACTION_ABORTED)
    }

    /// Marks a transaction committed. Returns false when it was already finished.
    pub(crate) fn finish_committed(&self) -> bool {
        self.finish(OWNER_TRANSACTION_COMMITTED)
    }

    fn finish(&self, state: u8) -> bool {
        self.state
            .compare_exchange(OWNER_ACTIVE, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Cancels a [`Stream`] from anywhere (idempotent, thread-safe).
#[derive(Clone, Debug, Default)]
pub struct StreamCanceler {
    canceled: Arc<AtomicBool>,
}

impl StreamCanceler {
    /// Cancels the stream: its next step yields [`Error::StreamCanceled`], then it ends.
    pub fn cancel(&self) {
        self.canceled.store(true, Ordering::Release);
    }

    /// Whether the stream was canceled.
    pub fn is_canceled(&self) -> bool {
        self.canceled.load(Ordering::Acquire)
    }
}

/// A stream of entries in key order (mirrors Go `store.Stream`). It is an iterator of
/// `Result<KeyValue>`: after an error it ends.
pub struct Stream {
    source: Box<dyn StreamSource>,
    liveness: Liveness,
    canceler: StreamCanceler,
    finished: bool,
}

impl Stream {
    /// A stream over `source`, checking `liveness` before every step.
    pub(crate) fn new(source: Box<dyn StreamSource>, liveness: Liveness) -> Self {
        Self {
            source,
            liveness,
            canceler: StreamCanceler::default(),
            finished: false,
        }
    }

    /// A handle that cancels this stream from another thread.
    pub fn canceler(&self) -> StreamCanceler {
        self.canceler.clone()
    }

    /// Cancels this stream.
    pub fn cancel(&self) {
        self.canceler.cancel();
    }

    /// Collects the remaining entries, failing on the first error.
    pub fn collect_entries(self) -> Result<Vec<KeyValue>> {
        self.collect()
    }
}

impl Iterator for Stream {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let step = if self.canceler.is_canceled() {
            Err(Error::StreamCanceled)
        } else {
            self.liveness
                .check()
                .and_then(|()| self.source.next_entry())
        };
        match step {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }
}

/// Whether `key` lies in `[start, limit)`, where an empty `limit` means unbounded.
pub(crate) fn in_range(key: &[u8], start: &[u8], limit: &[u8]) -> bool {
    key >= start && (limit.is_empty() || key < limit)
}

/// The smallest key greater than every key that starts with `prefix`, or empty (unbounded) when
/// there is none (the prefix is empty or all `0xff`).
pub fn prefix_limit(prefix: &[u8]) -> Vec<u8> {
    let mut limit = prefix.to_vec();
    while let Some(last) = limit.pop() {
        if last != 0xff {
            limit.push(last + 1);
            return limit;
        }
    }
    Vec::new()
}

/// Hands `visit` the first `most` of `entries` (a scan) at most: true when there were no
/// more, false when there were (the rest is not read, and the caller falls back to reading
/// what it needs key by key). For a reader that bets a range holds few keys besides those it
/// wants.
pub fn visit_at_most<T, E: From<Error>>(
    entries: impl Iterator<Item = Result<T>>,
    most: usize,
    mut visit: impl FnMut(T) -> std::result::Result<(), E>,
) -> std::result::Result<bool, E> {
    for (read, entry) in entries.enumerate() {
        if read >= most {
            return Ok(false);
        }
        visit(entry?)?;
    }
    Ok(true)
}

impl<T: StoreReader + ?Sized> StoreReader for Arc<T> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        (**self).scan(start, limit)
    }
}

impl<T: StoreWriter + ?Sized> StoreWriter for Arc<T> {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        (**self).put(key, value)
    }

    fn put_owned(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        (**self).put_owned(key, value)
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        (**self).delete(key)
    }
}

impl<T: Store + ?Sized> Store for Arc<T> {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        (**self).snapshot()
    }

    fn transaction(&self) -> Result<Box<dyn Transaction>> {
        (**self).transaction()
    }

    fn close(&self) -> Result<()> {
        (**self).close()
    }
}
