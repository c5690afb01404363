//! The group commit: every commit goes through one queue. The first committer to find no leader
//! becomes the leader and commits everything queued so far as one group: it validates each
//! request in order under the conflict lock (so two requests in one group can conflict with each
//! other), runs its commit hook, and applies the whole group in one atomic engine write, so a
//! group of concurrent durable committers shares one disk sync. It then records the group's write
//! sets, wakes the group's committers as a binary tree (their [`Slot`]s) and hands leadership to
//! the committer of the oldest request queued meanwhile.
//!
//! Lock order: the commit lock (read) before the conflict lock; the queue is never held with
//! either; a slot's state comes last. The engine write runs under the commit lock only.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Condvar, Mutex};

use super::Shared;
use super::conflicts::{ConflictState, ReadSet, overlaps};
use crate::engine::{Durability, Engine};
use crate::error::{Error, Result};
use crate::model::{CommitHook, WriteOp};

/// One commit waiting in the queue.
pub(super) struct CommitRequest {
    /// The start sequence of a transaction, or `None` for a blind store-level write.
    pub(super) start: Option<u64>,
    pub(super) reads: ReadSet,
    pub(super) writes: Vec<WriteOp>,
    pub(super) hook: Option<CommitHook>,
    pub(super) slot: Arc<Slot>,
    /// Whether its committer need not wait for the disk
    /// ([`crate::Transaction::skip_disk_sync`]).
    pub(super) relaxed: bool,
}

#[derive(Default)]
pub(super) struct CommitQueue {
    pending: Vec<CommitRequest>,
    leader_active: bool,
}

/// Where a committer waits: for its result, or to be told to lead the next group.
///
/// The leader stores every result of a group first and then wakes only the first waiter; each
/// woken waiter wakes two more, as a binary tree. Waking a thread costs a system call (and, in a
/// VM, an exit): done one by one, by the leader or along a chain, the last waiters of a large
/// group would come back too late to join the next group's disk sync.
#[derive(Default)]
pub(super) struct Slot {
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

/// The requests of a group that passed validation, in commit order, and their writes.
struct AcceptedGroup {
    /// Each accepted committer's slot and the number of its writes in `batch`.
    committers: Vec<(Arc<Slot>, usize)>,
    /// Whether every accepted committer let its commit skip the disk sync.
    relaxed: bool,
    /// Every accepted request's writes (its hook's after its own), in commit order.
    batch: Vec<WriteOp>,
}

impl<E: Engine> Shared<E> {
    /// Queues `request` and returns its result, leading groups when asked to.
    pub(super) fn submit(&self, request: CommitRequest) -> Result<()> {
        if let Err(error) = check_not_in_hook() {
            self.release(request.start);
            return Err(error);
        }
        if self.closed.load(Ordering::Acquire) {
            self.release(request.start);
            return Err(Error::StoreClosed);
        }
        let slot = request.slot.clone();
        if self.enqueue(request) {
            self.lead(&slot);
        }
        loop {
            match slot.wait() {
                Wake::Done(result) => return result,
                Wake::Lead => self.lead(&slot),
            }
        }
    }

    /// Queues `request`; true when no leader is active, so its committer must lead.
    fn enqueue(&self, request: CommitRequest) -> bool {
        let mut queue = self.queue.lock();
        queue.pending.push(request);
        let lead_now = !queue.leader_active;
        queue.leader_active = true;
        lead_now
    }

    /// Commits everything queued (which includes `own`, the leader's request) as one group, then
    /// hands leadership to the committer of the oldest request queued meanwhile. Leading a single
    /// group lets the leader's thread return to its caller at once, like every other committer,
    /// instead of serving other threads' commits for as long as they keep coming.
    ///
    /// The steps: take the group, validate it, apply it, record its writes (the middle three in
    /// [`Self::commit_group`], under the commit lock), wake its committers, hand off leadership.
    fn lead(&self, own: &Arc<Slot>) {
        let group = self.take_group();
        let slots: Vec<Arc<Slot>> = group.iter().map(|request| request.slot.clone()).collect();
        {
            let _running = self.commit_lock.read();
            self.commit_group(group);
        }
        wake_group(slots, own);
        self.hand_off_leadership();
    }

    /// Step 1: takes everything queued so far as the group to commit.
    fn take_group(&self) -> Vec<CommitRequest> {
        std::mem::take(&mut self.queue.lock().pending)
    }

    /// Validates and applies one group; sets every request's result (the caller wakes them).
    ///
    /// Write sets are recorded only after the engine write succeeds, by moving the keys out of
    /// the batch, and only when some transaction is live: the next validation against them
    /// happens in a later group, and a transaction that begins later starts after them. Within
    /// the group, a request is also checked against the keys of the requests accepted before it.
    fn commit_group(&self, group: Vec<CommitRequest>) {
        if self.closed.load(Ordering::Acquire) {
            self.refuse_group(group);
            return;
        }
        let AcceptedGroup {
            committers,
            relaxed,
            batch,
        } = self.validate_group(group);
        if committers.is_empty() {
            return;
        }
        let durability = if relaxed {
            Durability::Relaxed
        } else {
            self.durability
        };
        if let Err(error) = self.apply_batch(&batch, durability) {
            // Every committer of the group learns the same thing happened.
            for (slot, _) in committers {
                slot.set(Err(error.duplicate()));
            }
            return;
        }
        self.record_writes(batch, &committers);
        self.commits
            .fetch_add(committers.len() as u64, Ordering::Relaxed);
        for (slot, _) in committers {
            slot.set(Ok(()));
        }
    }

    /// A group taken after the store closed: every request fails.
    fn refuse_group(&self, group: Vec<CommitRequest>) {
        for request in group {
            self.release(request.start);
            request.slot.set(Err(Error::StoreClosed));
        }
    }

    /// Step 2, under the conflict lock: validates each request in order, against the write sets
    /// committed since its transaction began and against the writes accepted before it in this
    /// group, ends its transaction, and runs its hook. A refused request gets its result here;
    /// the writes of the accepted ones are gathered into one batch.
    fn validate_group(&self, group: Vec<CommitRequest>) -> AcceptedGroup {
        let group_len = group.len();
        let mut accepted = AcceptedGroup {
            committers: Vec::with_capacity(group_len),
            relaxed: true,
            batch: Vec::new(),
        };
        let mut group_keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut conflicts = self.conflicts.lock();
        for mut request in group {
            if !validate_request(&mut conflicts, &request, &group_keys) {
                request.slot.set(Err(Error::ConcurrentTransaction));
                continue;
            }
            let writes = match take_writes(&mut request) {
                Ok(writes) => writes,
                Err(error) => {
                    request.slot.set(Err(error));
                    continue;
                }
            };
            if group_len > 1 {
                group_keys.extend(writes.iter().map(|op| op.key().to_vec()));
            }
            accepted.relaxed &= request.relaxed;
            accepted.committers.push((request.slot, writes.len()));
            accepted.batch.extend(writes);
        }
        accepted
    }

    /// Step 3: applies the whole batch in one engine write (a panic in the engine becomes its
    /// error) and counts the write and its disk sync.
    fn apply_batch(&self, batch: &[WriteOp], durability: Durability) -> Result<()> {
        let result = catch_unwind(AssertUnwindSafe(|| self.engine.apply(batch, durability)))
            .unwrap_or_else(|panic| {
                Err(Error::Engine(format!(
                    "engine write panicked: {}",
                    panic_message(&panic)
                )))
            });
        self.engine_writes.fetch_add(1, Ordering::Relaxed);
        if durability == Durability::Durable {
            self.disk_syncs.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Step 4, under the conflict lock: records each committer's write set in commit order,
    /// moving its keys out of the applied batch, and marks them applied.
    fn record_writes(&self, batch: Vec<WriteOp>, committers: &[(Arc<Slot>, usize)]) {
        let mut conflicts = self.conflicts.lock();
        let mut keys = batch.into_iter().map(|op| match op {
            WriteOp::Put(key, _) | WriteOp::Delete(key) => key,
        });
        for (_, count) in committers {
            conflicts.record_commit(keys.by_ref().take(*count));
        }
        conflicts.mark_applied();
    }

    /// Step 6: passes leadership to the committer of the oldest request queued meanwhile, or
    /// leaves the queue without a leader.
    fn hand_off_leadership(&self) {
        let mut queue = self.queue.lock();
        match queue.pending.first() {
            Some(next) => next.slot.hand_leadership(),
            None => queue.leader_active = false,
        }
    }
}

/// Whether `request` may commit: a blind write always may; a transaction may when nothing
/// committed since it began, nor any write accepted before it in this group (`group_keys`),
/// touches what it read. Either way a transaction ends here.
fn validate_request(
    conflicts: &mut ConflictState,
    request: &CommitRequest,
    group_keys: &BTreeSet<Vec<u8>>,
) -> bool {
    let Some(start) = request.start else {
        return true;
    };
    let valid = conflicts.is_valid(&request.reads, start) && !overlaps(group_keys, &request.reads);
    conflicts.end(start);
    valid
}

/// The writes a request commits: its own, then those its hook (if any) returns.
fn take_writes(request: &mut CommitRequest) -> Result<Vec<WriteOp>> {
    let extra = request
        .hook
        .take()
        .map(run_hook)
        .transpose()?
        .unwrap_or_default();
    let mut writes = std::mem::take(&mut request.writes);
    writes.extend(extra);
    Ok(writes)
}

/// Step 5: wakes the waiters of `slots` (results already set) as a binary tree; `own` is the
/// leader's slot, which nobody needs to wake.
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

thread_local! {
    /// Set while this thread runs a commit hook: a hook that called back into the store would
    /// wait for the commit group it is part of, forever.
    static IN_COMMIT_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Refuses a call into the store from inside a commit hook.
pub(super) fn check_not_in_hook() -> Result<()> {
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

#[cfg(test)]
mod tests {
    //! Group-commit interleavings, made deterministic with an engine whose next write waits at a
    //! gate until the test opens it.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use parking_lot::{Condvar, Mutex};

    use crate::engine::{Durability, Engine};
    use crate::error::{Error, Result};
    use crate::memstore::MemEngine;
    use crate::model::{CommitHook, Store, StoreReader, StoreWriter, WriteOp};
    use crate::txn::TxnStore;

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
}
