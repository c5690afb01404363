//! Optimistic transactions over any [`Engine`], written once for every engine
//! (mirrors Go `store/transactions/manager.go` and `transaction.go`).
//!
//! Each transaction records the keys it read and the ranges it scanned. Commits go through one
//! queue: the first committer to find no leader becomes the leader and, for every request queued
//! so far, validates it against the write sets committed after it began (in order, so two
//! requests in one group can conflict with each other), runs its commit hook, and then applies the
//! whole group in one atomic engine write, so a group of concurrent durable committers shares one
//! disk sync.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::engine::{Durability, Engine, EngineSnapshot};
use crate::error::{Error, Result};
use crate::model::{
    CommitHook, KeyValue, Liveness, OwnerState, Snapshot, Store, StoreReader, StoreWriter, Stream,
    StreamSource, Transaction, WriteOp, in_range,
};

/// Entries fetched from an engine snapshot per step of a scan.
const SCAN_CHUNK_ENTRIES: usize = 256;
/// Bytes (keys and values) fetched per step of a scan, so a scan of large values holds one at a
/// time rather than a few hundred.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

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

/// What validation needs: recent write sets and the start of every live transaction.
#[derive(Default)]
struct ConflictState {
    /// The sequence number of the last commit whose writes the engine shows.
    applied_seq: u64,
    /// The sequence number given to the last applied commit (equal to `applied_seq` between
    /// groups).
    last_seq: u64,
    /// Key -> sequence number of the last commit that wrote it, for commits newer than the
    /// oldest live transaction.
    last_write: BTreeMap<Vec<u8>, u64>,
    /// The write sets behind `last_write`, oldest first, so they can be dropped in order.
    history: VecDeque<(u64, Vec<Vec<u8>>)>,
    /// Start sequence -> number of live transactions that began there.
    live: BTreeMap<u64, usize>,
}

impl ConflictState {
    fn begin(&mut self) -> u64 {
        let start = self.applied_seq;
        *self.live.entry(start).or_default() += 1;
        start
    }

    fn end(&mut self, start: u64) {
        if let Some(count) = self.live.get_mut(&start) {
            *count -= 1;
            if *count == 0 {
                self.live.remove(&start);
            }
        }
        self.collect_garbage();
    }

    fn is_valid(&self, request: &ReadSet, start: u64) -> bool {
        let newer = |seq: &u64| *seq > start;
        let keys_ok = request
            .keys
            .iter()
            .all(|key| !self.last_write.get(key).is_some_and(newer));
        keys_ok
            && request.ranges.iter().all(|(begin, limit)| {
                if is_empty_range(begin, limit) {
                    return true;
                }
                let upper = if limit.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(limit.as_slice())
                };
                !self
                    .last_write
                    .range::<[u8], _>((Bound::Included(begin.as_slice()), upper))
                    .any(|(_, seq)| newer(seq))
            })
    }

    fn record(&mut self, keys: Vec<Vec<u8>>) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        for key in &keys {
            self.last_write.insert(key.clone(), seq);
        }
        self.history.push_back((seq, keys));
        seq
    }

    /// Drops write sets no live or future transaction can conflict with: those at or below the
    /// oldest live start (or, with none live, at or below what the engine shows).
    fn collect_garbage(&mut self) {
        let horizon = self.live.keys().next().copied().unwrap_or(self.applied_seq);
        while let Some((seq, _)) = self.history.front() {
            if *seq > horizon {
                break;
            }
            let Some((seq, keys)) = self.history.pop_front() else {
                break;
            };
            for key in keys {
                if self.last_write.get(&key) == Some(&seq) {
                    self.last_write.remove(&key);
                }
            }
        }
    }
}

#[derive(Default)]
struct ReadSet {
    keys: Vec<Vec<u8>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

struct CommitRequest {
    /// The start sequence of a transaction, or `None` for a blind store-level write.
    start: Option<u64>,
    reads: ReadSet,
    writes: Vec<WriteOp>,
    hook: Option<CommitHook>,
    slot: Arc<Slot>,
}

/// Where a committer waits: for its result, or to be told to lead the next group.
///
/// The leader stores every result of a group first and then wakes only the first waiter; each
/// woken waiter wakes two more, as a binary tree. Waking a thread costs a system call (and, in a
/// VM, an exit): done one by one, by the leader or along a chain, the last waiters of a large
/// group would come back too late to join the next group's disk sync.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
    next: Mutex<Vec<Arc<Slot>>>,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    /// The previous leader handed leadership to this request's committer.
    Lead,
    Done(Result<()>),
}

enum Wake {
    Lead,
    Done(Result<()>),
}

impl Slot {
    fn set(&self, result: Result<()>) {
        *self.state.lock() = SlotState::Done(result);
    }

    fn hand_leadership(&self) {
        *self.state.lock() = SlotState::Lead;
        self.ready.notify_one();
    }

    fn wait(&self) -> Wake {
        let mut state = self.state.lock();
        loop {
            match std::mem::take(&mut *state) {
                SlotState::Waiting => self.ready.wait(&mut state),
                SlotState::Lead => return Wake::Lead,
                SlotState::Done(result) => {
                    drop(state);
                    for next in std::mem::take(&mut *self.next.lock()) {
                        next.ready.notify_one();
                    }
                    return Wake::Done(result);
                }
            }
        }
    }
}

/// Wakes the waiters of `slots` (results already set) as a binary tree; `own` is the leader's
/// slot, which nobody needs to wake.
fn wake_group(slots: Vec<Arc<Slot>>, own: &Arc<Slot>) {
    let waiters: Vec<Arc<Slot>> = slots
        .into_iter()
        .filter(|slot| !Arc::ptr_eq(slot, own))
        .collect();
    for (index, slot) in waiters.iter().enumerate() {
        let children = waiters.iter().skip(2 * index + 1).take(2).cloned();
        slot.next.lock().extend(children);
    }
    if let Some(first) = waiters.first() {
        first.ready.notify_one();
    }
}

#[derive(Default)]
struct CommitQueue {
    pending: Vec<CommitRequest>,
    leader_active: bool,
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
    fn submit(&self, request: CommitRequest) -> Result<()> {
        if let Err(error) = check_not_in_hook() {
            self.release(request.start);
            return Err(error);
        }
        if self.closed.load(Ordering::Acquire) {
            self.release(request.start);
            return Err(Error::StoreClosed);
        }
        let slot = request.slot.clone();
        let mut queue = self.queue.lock();
        queue.pending.push(request);
        let lead_now = !queue.leader_active;
        queue.leader_active = true;
        drop(queue);
        if lead_now {
            self.lead(&slot);
        }
        loop {
            match slot.wait() {
                Wake::Done(result) => return result,
                Wake::Lead => self.lead(&slot),
            }
        }
    }

    /// Commits everything queued (which includes `own`, the leader's request) as one group, then
    /// hands leadership to the committer of the oldest request queued meanwhile. Leading a single
    /// group lets the leader's thread return to its caller at once, like every other committer,
    /// instead of serving other threads' commits for as long as they keep coming.
    fn lead(&self, own: &Arc<Slot>) {
        let group = std::mem::take(&mut self.queue.lock().pending);
        let slots: Vec<Arc<Slot>> = group.iter().map(|request| request.slot.clone()).collect();
        {
            let _running = self.commit_lock.read();
            self.commit_group(group);
        }
        wake_group(slots, own);
        let mut queue = self.queue.lock();
        match queue.pending.first() {
            Some(next) => next.slot.hand_leadership(),
            None => queue.leader_active = false,
        }
    }

    fn release(&self, start: Option<u64>) {
        if let Some(start) = start {
            self.conflicts.lock().end(start);
        }
    }

    /// Validates and applies one group; sets every request's result (the caller wakes them).
    ///
    /// Write sets are recorded only after the engine write succeeds, by moving the keys out of
    /// the batch, and only when some transaction is live: the next validation against them
    /// happens in a later group, and a transaction that begins later starts after them. Within
    /// the group, a request is also checked against the keys of the requests accepted before it.
    fn commit_group(&self, group: Vec<CommitRequest>) {
        if self.closed.load(Ordering::Acquire) {
            for request in group {
                self.release(request.start);
                request.slot.set(Err(Error::StoreClosed));
            }
            return;
        }
        let group_len = group.len();
        let mut accepted: Vec<(Arc<Slot>, usize)> = Vec::with_capacity(group_len);
        let mut batch: Vec<WriteOp> = Vec::new();
        let mut group_keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        {
            let mut conflicts = self.conflicts.lock();
            for mut request in group {
                if let Some(start) = request.start {
                    let valid = conflicts.is_valid(&request.reads, start)
                        && !overlaps(&group_keys, &request.reads);
                    conflicts.end(start);
                    if !valid {
                        request.slot.set(Err(Error::ConcurrentTransaction));
                        continue;
                    }
                }
                let extra = match request.hook.take().map(run_hook).transpose() {
                    Ok(extra) => extra.unwrap_or_default(),
                    Err(error) => {
                        request.slot.set(Err(error));
                        continue;
                    }
                };
                let mut writes = std::mem::take(&mut request.writes);
                writes.extend(extra);
                if group_len > 1 {
                    group_keys.extend(writes.iter().map(|op| op.key().to_vec()));
                }
                accepted.push((request.slot, writes.len()));
                batch.extend(writes);
            }
        }
        if accepted.is_empty() {
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine.apply(&batch, self.durability)
        }))
        .unwrap_or_else(|panic| {
            Err(Error::Engine(format!(
                "engine write panicked: {}",
                panic_message(&panic)
            )))
        });
        self.engine_writes.fetch_add(1, Ordering::Relaxed);
        if self.durability == Durability::Durable {
            self.disk_syncs.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(error) = result {
            // Every committer of the group learns the same thing happened.
            for (slot, _) in accepted {
                slot.set(Err(error.duplicate()));
            }
            return;
        }
        {
            let mut conflicts = self.conflicts.lock();
            let mut keys = batch.into_iter().map(|op| match op {
                WriteOp::Put(key, _) | WriteOp::Delete(key) => key,
            });
            for (_, count) in &accepted {
                let request_keys = keys.by_ref().take(*count);
                if conflicts.live.is_empty() {
                    request_keys.for_each(drop);
                    conflicts.last_seq += 1;
                } else {
                    conflicts.record(request_keys.collect());
                }
            }
            conflicts.applied_seq = conflicts.last_seq;
            conflicts.collect_garbage();
        }
        self.commits
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        for (slot, _) in accepted {
            slot.set(Ok(()));
        }
    }
}

/// Whether `[begin, limit)` holds no key (a non-empty limit at or below the start).
fn is_empty_range(begin: &[u8], limit: &[u8]) -> bool {
    !limit.is_empty() && begin >= limit
}

thread_local! {
    /// Set while this thread runs a commit hook: a hook that called back into the store would
    /// wait for the commit group it is part of, forever.
    static IN_COMMIT_HOOK: Cell<bool> = const { Cell::new(false) };
}

fn check_not_in_hook() -> Result<()> {
    if IN_COMMIT_HOOK.with(Cell::get) {
        return Err(Error::Misuse(
            "a commit hook called back into the store it is committing to".into(),
        ));
    }
    Ok(())
}

/// Runs a hook, turning a panic into an error that fails only its own commit.
fn run_hook(hook: CommitHook) -> Result<Vec<WriteOp>> {
    IN_COMMIT_HOOK.with(|flag| flag.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(hook));
    IN_COMMIT_HOOK.with(|flag| flag.set(false));
    outcome.unwrap_or_else(|panic| {
        Err(Error::Engine(format!(
            "commit hook panicked: {}",
            panic_message(&panic)
        )))
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Whether a read set touches any of `keys` (the writes accepted earlier in the same group).
fn overlaps(keys: &BTreeSet<Vec<u8>>, reads: &ReadSet) -> bool {
    if keys.is_empty() {
        return false;
    }
    reads.keys.iter().any(|key| keys.contains(key))
        || reads.ranges.iter().any(|(begin, limit)| {
            if is_empty_range(begin, limit) {
                return false;
            }
            let upper = if limit.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(limit.as_slice())
            };
            keys.range::<[u8], _>((Bound::Included(begin.as_slice()), upper))
                .next()
                .is_some()
        })
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
        })
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

/// Streams a range of an engine snapshot in chunks.
pub struct ChunkSource<S: EngineSnapshot> {
    snapshot: Arc<S>,
    next_start: Vec<u8>,
    start_inclusive: bool,
    limit: Vec<u8>,
    buffer: VecDeque<KeyValue>,
    exhausted: bool,
}

impl<S: EngineSnapshot> ChunkSource<S> {
    /// A source over `[start, limit)` of `snapshot`.
    pub fn new(snapshot: Arc<S>, start: &[u8], limit: &[u8]) -> Self {
        Self {
            snapshot,
            next_start: start.to_vec(),
            start_inclusive: true,
            limit: limit.to_vec(),
            buffer: VecDeque::new(),
            exhausted: false,
        }
    }
}

impl<S: EngineSnapshot> StreamSource for ChunkSource<S> {
    fn next_entry(&mut self) -> Result<Option<KeyValue>> {
        if self.buffer.is_empty() && !self.exhausted {
            let chunk = self.snapshot.scan_chunk(
                &self.next_start,
                self.start_inclusive,
                &self.limit,
                SCAN_CHUNK_ENTRIES,
                SCAN_CHUNK_BYTES,
            )?;
            // A chunk cut short by its bytes may have more after it; only an empty one ends.
            let bytes: usize = chunk
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum();
            self.exhausted = chunk.len() < SCAN_CHUNK_ENTRIES && bytes < SCAN_CHUNK_BYTES;
            if let Some((last, _)) = chunk.last() {
                self.next_start = last.clone();
                self.start_inclusive = false;
            }
            self.buffer.extend(chunk);
        }
        Ok(self.buffer.pop_front())
    }
}

/// Merges a transaction's own writes (taken when the scan began) over a base source.
pub struct MergedSource {
    base: Box<dyn StreamSource>,
    base_next: Option<KeyValue>,
    base_primed: bool,
    own: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
}

impl MergedSource {
    /// Merges `own` (sorted; `None` hides a key) over `base`.
    pub fn new(base: Box<dyn StreamSource>, own: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Self {
        Self {
            base,
            base_next: None,
            base_primed: false,
            own: own.into(),
        }
    }
}

impl StreamSource for MergedSource {
    fn next_entry(&mut self) -> Result<Option<KeyValue>> {
        loop {
            if !self.base_primed {
                self.base_next = self.base.next_entry()?;
                self.base_primed = true;
            }
            let take_own = match (&self.base_next, self.own.front()) {
                (None, None) => return Ok(None),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((base_key, _)), Some((own_key, _))) => own_key <= base_key,
            };
            if !take_own {
                self.base_primed = false;
                return Ok(self.base_next.take());
            }
            let Some((key, value)) = self.own.pop_front() else {
                continue;
            };
            if self
                .base_next
                .as_ref()
                .is_some_and(|(base_key, _)| *base_key == key)
            {
                self.base_primed = false;
            }
            if let Some(value) = value {
                return Ok(Some((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Group-commit interleavings, made deterministic with an engine whose next write waits at a
    //! gate until the test opens it.

    use super::*;
    use crate::memstore::MemEngine;

    #[derive(Default)]
    struct GateEngine {
        inner: MemEngine,
        /// `Some(false)`: the next write blocks; `Some(true)`: open; `None`: no gate.
        gate: Mutex<Option<bool>>,
        blocked: AtomicBool,
        opened: Condvar,
        /// Writes fail (a full disk) once past the gate.
        fail_writes: AtomicBool,
    }

    impl Engine for GateEngine {
        type Snapshot = <MemEngine as Engine>::Snapshot;

        fn snapshot(&self) -> Result<Self::Snapshot> {
            self.inner.snapshot()
        }

        fn apply(&self, ops: &[WriteOp], durability: Durability) -> Result<()> {
            let mut gate = self.gate.lock();
            if *gate == Some(false) {
                self.blocked.store(true, Ordering::SeqCst);
                while *gate != Some(true) {
                    self.opened.wait(&mut gate);
                }
                *gate = None;
            }
            drop(gate);
            if self.fail_writes.load(Ordering::SeqCst) {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on the test's disk",
                )));
            }
            self.inner.apply(ops, durability)
        }

        fn close(&self) -> Result<()> {
            self.inner.close()
        }
    }

    fn gated_store() -> TxnStore<GateEngine> {
        let store = TxnStore::new(GateEngine::default(), Durability::Relaxed);
        *store.engine().gate.lock() = Some(false);
        store
    }

    fn open_gate(store: &TxnStore<GateEngine>) {
        *store.engine().gate.lock() = Some(true);
        store.engine().opened.notify_all();
    }

    /// Waits until `condition` holds, failing the test after about a minute (counted in
    /// naps: tests read no clock).
    fn wait_for(condition: impl Fn() -> bool) {
        for _ in 0..60_000 {
            if condition() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the condition never held");
    }

    #[test]
    fn every_committer_of_a_failed_group_gets_the_engines_error() {
        let store = gated_store();
        std::thread::scope(|scope| {
            let leader = scope.spawn(|| store.put(b"leader", b"v"));
            wait_for(|| store.engine().blocked.load(Ordering::SeqCst));
            // Both queue behind the blocked leader and commit as one group.
            let one = scope.spawn(|| store.put(b"one", b"v"));
            let two = scope.spawn(|| store.put(b"two", b"v"));
            wait_for(|| store.shared.queue.lock().pending.len() == 2);
            store.engine().fail_writes.store(true, Ordering::SeqCst);
            open_gate(&store);
            for result in [leader.join(), one.join(), two.join()] {
                match result.unwrap() {
                    Err(Error::Io(error)) => {
                        assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
                        assert_eq!(error.to_string(), "no space left on the test's disk");
                    }
                    other => panic!("expected the engine's I/O error, got {other:?}"),
                }
            }
        });
        assert_eq!(store.get(b"one").unwrap(), None);
    }

    #[test]
    fn two_conflicting_commits_in_one_group_do_not_both_succeed() {
        let store = gated_store();
        let first = store.transaction().unwrap();
        let second = store.transaction().unwrap();
        for transaction in [&first, &second] {
            assert_eq!(transaction.get(b"k").unwrap(), None);
            transaction.put(b"k", b"v").unwrap();
        }
        std::thread::scope(|scope| {
            // A blind write becomes the leader and blocks in the engine...
            let leader = scope.spawn(|| store.put(b"other", b"v"));
            wait_for(|| store.engine().blocked.load(Ordering::SeqCst));
            // ...while both transactions queue behind it, to be validated as one group.
            let one = scope.spawn(|| first.commit());
            let two = scope.spawn(|| second.commit());
            wait_for(|| store.shared.queue.lock().pending.len() == 2);
            open_gate(&store);
            leader.join().unwrap().unwrap();
            let results = [one.join().unwrap(), two.join().unwrap()];
            let failed: Vec<_> = results.iter().filter(|result| result.is_err()).collect();
            assert_eq!(failed.len(), 1, "{results:?}");
            assert!(matches!(failed[0], Err(Error::ConcurrentTransaction)));
        });
    }

    #[test]
    fn a_transaction_begun_during_a_commit_sees_that_commit_as_a_conflict() {
        let store = gated_store();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| store.put(b"k", b"committed"));
            wait_for(|| store.engine().blocked.load(Ordering::SeqCst));
            // The write is validated but not yet applied: this transaction reads the old value.
            let late = store.transaction().unwrap();
            assert_eq!(late.get(b"k").unwrap(), None);
            late.put(b"k", b"late").unwrap();
            open_gate(&store);
            writer.join().unwrap().unwrap();
            assert!(matches!(late.commit(), Err(Error::ConcurrentTransaction)));
        });
        assert_eq!(store.get(b"k").unwrap(), Some(b"committed".to_vec()));
    }

    #[test]
    fn write_sets_are_not_kept_when_no_transaction_is_live() {
        let store = TxnStore::new(MemEngine::default(), Durability::Relaxed);
        for index in 0..100u32 {
            store.put(&index.to_be_bytes(), b"v").unwrap();
        }
        let live = store.transaction().unwrap();
        store.put(b"x", b"v").unwrap();
        assert_eq!(store.shared.conflicts.lock().last_write.len(), 1);
        live.abort().unwrap();
        let conflicts = store.shared.conflicts.lock();
        assert!(conflicts.last_write.is_empty() && conflicts.history.is_empty());
    }

    #[test]
    fn a_panicking_hook_fails_only_its_own_commit() {
        let store = TxnStore::new(MemEngine::default(), Durability::Relaxed);
        let transaction = store.transaction().unwrap();
        transaction.put(b"k", b"v").unwrap();
        let hook: CommitHook = Box::new(|| panic!("hook bug"));
        match transaction.commit_with_hook(Some(hook)) {
            Err(Error::Engine(message)) => assert!(message.contains("hook bug"), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
        store.put(b"after", b"v").unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert_eq!(store.get(b"after").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn a_hook_that_calls_back_into_the_store_gets_an_error_not_a_deadlock() {
        let store = Arc::new(TxnStore::new(MemEngine::default(), Durability::Relaxed));
        let inner = store.clone();
        let transaction = store.transaction().unwrap();
        transaction.put(b"k", b"v").unwrap();
        let hook: CommitHook = Box::new(move || {
            let put = inner.put(b"reentrant", b"v");
            assert_eq!(put.unwrap_err().code(), "store.misuse");
            assert_eq!(
                inner.transaction().err().map(|e| e.code()),
                Some("store.misuse")
            );
            Ok(Vec::new())
        });
        transaction.commit_with_hook(Some(hook)).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn close_waits_for_a_running_group_and_later_commits_fail() {
        let store = gated_store();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| store.put(b"k", b"v"));
            wait_for(|| store.engine().blocked.load(Ordering::SeqCst));
            let closer = scope.spawn(|| Store::close(&store));
            wait_for(|| store.shared.closed.load(Ordering::SeqCst));
            assert!(!closer.is_finished());
            open_gate(&store);
            writer.join().unwrap().unwrap();
            closer.join().unwrap().unwrap();
        });
        assert_eq!(store.put(b"late", b"v").unwrap_err().code(), "store.closed");
    }

    #[test]
    fn a_backwards_scan_range_is_empty_and_never_breaks_validation() {
        let store = TxnStore::new(MemEngine::default(), Durability::Relaxed);
        store.put(b"a", b"v").unwrap();
        let transaction = store.transaction().unwrap();
        let other = store.transaction().unwrap();
        assert_eq!(transaction.scan(b"b", b"a").unwrap().count(), 0);
        transaction.put(b"z", b"v").unwrap();
        store.put(b"b", b"v").unwrap();
        transaction.commit().unwrap();
        other.abort().unwrap();
    }
}
