//! Optimistic transactions over any [`Engine`], written once for every engine
//! (mirrors Go `store/transactions/manager.go` and `transaction.go`).
//!
//! This file owns [`TxnStore`] (the store over an engine and its shared state), its snapshot and
//! transaction types, and the size checks every write passes before it is queued. Each
//! transaction records the keys it read and the ranges it scanned (`conflicts.rs`: read sets,
//! validation against the write sets committed since a transaction began, and their garbage
//! collection); every commit goes through one queue whose leader validates a whole group in
//! order and applies it in one atomic engine write (`group_commit.rs`); scans stream engine
//! snapshots in chunks, merged with a transaction's own writes (`sources.rs`).

mod conflicts;
mod group_commit;
mod sources;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use self::conflicts::{ConflictState, ReadSet, is_empty_range};
use self::group_commit::{CommitQueue, CommitRequest, check_not_in_hook};
use self::sources::{ChunkSource, MergedSource};
use crate::engine::{Durability, Engine, EngineSnapshot};
use crate::error::{Error, Result};
use crate::model::{
    CommitHook, Liveness, OwnerState, Snapshot, Store, StoreReader, StoreWriter, Stream,
    Transaction, WriteOp, in_range,
};

/// A [`Store`] made of an [`Engine`] plus the shared optimistic transaction manager.
pub struct TxnStore<E: Engine> {
    shared: Arc<Shared<E>>,
}

/// Counters a test or benchmark can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed.
    pub commits: u64,
    /// Engine writes issued (each is one group of commits).
    pub engine_writes: u64,
    /// Engine writes issued with [`Durability::Durable`], i.e. disk syncs.
    pub disk_syncs: u64,
}

struct Shared<E: Engine> {
    engine: E,
    durability: Durability,
    closed: Arc<AtomicBool>,
    conflicts: Mutex<ConflictState>,
    queue: Mutex<CommitQueue>,
    /// Held for reading while a group is being committed, for writing by `close`, so the engine
    /// is never closed under a running group.
    commit_lock: RwLock<()>,
    commits: AtomicU64,
    engine_writes: AtomicU64,
    disk_syncs: AtomicU64,
}

impl<E: Engine> TxnStore<E> {
    /// Wraps `engine`. Commits use `durability`.
    pub fn new(engine: E, durability: Durability) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                durability,
                closed: Arc::new(AtomicBool::new(false)),
                conflicts: Mutex::new(ConflictState::default()),
                queue: Mutex::new(CommitQueue::default()),
                commit_lock: RwLock::new(()),
                commits: AtomicU64::new(0),
                engine_writes: AtomicU64::new(0),
                disk_syncs: AtomicU64::new(0),
            }),
        }
    }

    /// The engine under this store.
    pub fn engine(&self) -> &E {
        &self.shared.engine
    }

    /// Whether [`Store::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Waits until no commit group of this store is running. Once [`TxnStore::is_closed`],
    /// none starts again, so after this a new store may take over the same data.
    pub fn wait_for_commits(&self) {
        drop(self.shared.commit_lock.write());
    }

    /// The durability of this store's commits.
    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// Commit counters since open.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            engine_writes: self.shared.engine_writes.load(Ordering::Relaxed),
            disk_syncs: self.shared.disk_syncs.load(Ordering::Relaxed),
        }
    }

    /// Applies `ops` as one blind transaction (no read set) and returns when it is committed.
    pub fn write_batch(&self, ops: Vec<WriteOp>) -> Result<()> {
        for op in &ops {
            match op {
                WriteOp::Put(key, value) => check_sizes::<E>(key, Some(value))?,
                WriteOp::Delete(key) => check_sizes::<E>(key, None)?,
            }
        }
        self.shared.submit(CommitRequest {
            start: None,
            reads: ReadSet::default(),
            writes: ops,
            hook: None,
            slot: Arc::default(),
            relaxed: false,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::StoreClosed);
        }
        Ok(())
    }
}

/// Refuses keys and values the engine cannot store, before they join a commit group (where one
/// bad write would fail everyone's commit).
fn check_sizes<E: Engine>(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.len() > E::KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge {
            bytes: key.len(),
            bytes_max: E::KEY_BYTES_MAX,
        });
    }
    match value {
        Some(value) if value.len() > E::VALUE_BYTES_MAX => Err(Error::ValueTooLarge {
            bytes: value.len(),
            bytes_max: E::VALUE_BYTES_MAX,
        }),
        _ => Ok(()),
    }
}

impl<E: Engine> Shared<E> {
    /// Ends the transaction that began at `start`, if any (a blind write has none).
    fn release(&self, start: Option<u64>) {
        if let Some(start) = start {
            self.conflicts.lock().end(start);
        }
    }
}

impl<E: Engine> StoreReader for TxnStore<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.shared.engine.snapshot()?.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        self.check_open()?;
        let snapshot = Arc::new(self.shared.engine.snapshot()?);
        Ok(Stream::new(
            Box::new(ChunkSource::new(snapshot, start, limit)),
            Liveness::new(self.shared.closed.clone(), None),
        ))
    }
}

impl<E: Engine> StoreWriter for TxnStore<E> {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write_batch(vec![WriteOp::Put(key.to_vec(), value.to_vec())])
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.write_batch(vec![WriteOp::Delete(key.to_vec())])
    }
}

impl<E: Engine> Store for TxnStore<E> {
    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        self.check_open()?;
        Ok(Box::new(TxnSnapshot {
            snapshot: Arc::new(self.shared.engine.snapshot()?),
            liveness: Liveness::new(self.shared.closed.clone(), Some(OwnerState::new())),
        }))
    }

    fn transaction(&self) -> Result<Box<dyn Transaction>> {
        self.check_open()?;
        check_not_in_hook()?;
        // Register the start before taking the engine snapshot: the snapshot then shows at
        // least everything up to `start`, and anything newer is checked at commit.
        let start = self.shared.conflicts.lock().begin();
        let snapshot = match self.shared.engine.snapshot() {
            Ok(snapshot) => Arc::new(snapshot),
            Err(error) => {
                self.shared.release(Some(start));
                return Err(error);
            }
        };
        let owner = OwnerState::new();
        Ok(Box::new(TxnTransaction {
            shared: self.shared.clone(),
            snapshot,
            start,
            liveness: Liveness::new(self.shared.closed.clone(), Some(owner.clone())),
            owner,
            state: Mutex::new(TransactionState::default()),
            relaxed: AtomicBool::new(false),
        }))
    }

    fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Wait for a running commit group to finish so the engine is not closed under it; later
        // groups see the closed flag and fail.
        let _no_group_running = self.shared.commit_lock.write();
        self.shared.engine.close()
    }
}

impl<E: Engine> Drop for TxnStore<E> {
    fn drop(&mut self) {
        if Arc::strong_count(&self.shared) == 1 {
            let _ = Store::close(self);
        }
    }
}

struct TxnSnapshot<S: EngineSnapshot> {
    snapshot: Arc<S>,
    liveness: Liveness,
}

impl<S: EngineSnapshot> StoreReader for TxnSnapshot<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.liveness.check()?;
        self.snapshot.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        self.liveness.check()?;
        Ok(Stream::new(
            Box::new(ChunkSource::new(self.snapshot.clone(), start, limit)),
            self.liveness.clone(),
        ))
    }
}

impl<S: EngineSnapshot> Snapshot for TxnSnapshot<S> {
    fn abort(&self) -> Result<()> {
        self.liveness.check()?;
        if let Some(owner) = &self.liveness.owner_state() {
            owner.finish_snapshot();
        }
        Ok(())
    }
}

#[derive(Default)]
struct TransactionState {
    reads: ReadSet,
    /// Buffered writes: `None` is a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

struct TxnTransaction<E: Engine> {
    shared: Arc<Shared<E>>,
    snapshot: Arc<E::Snapshot>,
    start: u64,
    liveness: Liveness,
    owner: Arc<OwnerState>,
    state: Mutex<TransactionState>,
    /// Its commit need not wait for the disk ([`Transaction::skip_disk_sync`]).
    relaxed: AtomicBool,
}

impl<E: Engine> StoreReader for TxnTransaction<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.liveness.check()?;
        let mut state = self.state.lock();
        state.reads.keys.push(key.to_vec());
        if let Some(buffered) = state.writes.get(key) {
            return Ok(buffered.clone());
        }
        drop(state);
        self.snapshot.get(key)
    }

    fn scan(&self, start: &[u8], limit: &[u8]) -> Result<Stream> {
        self.liveness.check()?;
        let mut state = self.state.lock();
        self.liveness.check()?;
        if !is_empty_range(start, limit) {
            state.reads.ranges.push((start.to_vec(), limit.to_vec()));
        }
        let own: Vec<(Vec<u8>, Option<Vec<u8>>)> = state
            .writes
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(key, _)| in_range(key, start, limit))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        drop(state);
        let base = ChunkSource::new(self.snapshot.clone(), start, limit);
        Ok(Stream::new(
            Box::new(MergedSource::new(Box::new(base), own)),
            self.liveness.clone(),
        ))
    }
}

impl<E: Engine> StoreWriter for TxnTransaction<E> {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes::<E>(key, Some(value))?;
        // Check under the state lock, so a put racing a commit either lands before the commit
        // takes the writes or fails; it is never silently dropped.
        let mut state = self.state.lock();
        self.liveness.check()?;
        state.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn put_owned(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        check_sizes::<E>(&key, Some(&value))?;
        let mut state = self.state.lock();
        self.liveness.check()?;
        state.writes.insert(key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        check_sizes::<E>(key, None)?;
        let mut state = self.state.lock();
        self.liveness.check()?;
        state.writes.insert(key.to_vec(), None);
        Ok(())
    }
}

impl<E: Engine> Transaction for TxnTransaction<E> {
    fn commit_with_hook(&self, hook: Option<CommitHook>) -> Result<()> {
        let mut guard = self.state.lock();
        self.liveness.check()?;
        if !self.owner.finish_committed() {
            return self.owner.check();
        }
        let state = std::mem::take(&mut *guard);
        drop(guard);
        let writes = state
            .writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => WriteOp::Put(key, value),
                None => WriteOp::Delete(key),
            })
            .collect();
        self.shared.submit(CommitRequest {
            start: Some(self.start),
            reads: state.reads,
            writes,
            hook,
            slot: Arc::default(),
            relaxed: self.relaxed.load(Ordering::Acquire),
        })
    }

    fn skip_disk_sync(&self) {
        self.relaxed.store(true, Ordering::Release);
    }

    fn abort(&self) -> Result<()> {
        self.liveness.check()?;
        if self.owner.finish_aborted() {
            self.shared.release(Some(self.start));
        }
        Ok(())
    }
}

impl<E: Engine> Drop for TxnTransaction<E> {
    fn drop(&mut self) {
        // A transaction dropped without commit or abort must not pin write sets forever.
        if self.owner.finish_aborted() {
            self.shared.release(Some(self.start));
        }
    }
}
