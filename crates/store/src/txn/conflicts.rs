//! Conflict tracking: a transaction's read set (the keys it read and the ranges it scanned) and
//! [`ConflictState`], which validates a read set against the write sets committed since its
//! transaction began, keeps those write sets only while some live transaction may still conflict
//! with them, and drops the rest (garbage collection).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

/// What validation needs: recent write sets and the start of every live transaction.
#[derive(Default)]
pub(super) struct ConflictState {
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
    /// Registers a transaction beginning now; returns its start sequence.
    pub(super) fn begin(&mut self) -> u64 {
        let start = self.applied_seq;
        *self.live.entry(start).or_default() += 1;
        start
    }

    /// Unregisters a transaction that began at `start` (committed, aborted or dropped).
    pub(super) fn end(&mut self, start: u64) {
        if let Some(count) = self.live.get_mut(&start) {
            *count -= 1;
            if *count == 0 {
                self.live.remove(&start);
            }
        }
        self.collect_garbage();
    }

    /// Whether no commit newer than `start` wrote a key `request` read or a key in a range it
    /// scanned.
    pub(super) fn is_valid(&self, request: &ReadSet, start: u64) -> bool {
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

    /// Gives the next applied commit its sequence number and records the keys it wrote, or,
    /// when no transaction is live (nothing can conflict with them: a transaction that begins
    /// later starts after them), only consumes them.
    pub(super) fn record_commit(&mut self, keys: impl Iterator<Item = Vec<u8>>) {
        if self.live.is_empty() {
            keys.for_each(drop);
            self.last_seq += 1;
        } else {
            self.record(keys.collect());
        }
    }

    fn record(&mut self, keys: Vec<Vec<u8>>) {
        self.last_seq += 1;
        let seq = self.last_seq;
        for key in &keys {
            self.last_write.insert(key.clone(), seq);
        }
        self.history.push_back((seq, keys));
    }

    /// Marks every recorded commit as shown by the engine (transactions beginning from now on
    /// start after them), then collects garbage.
    pub(super) fn mark_applied(&mut self) {
        self.applied_seq = self.last_seq;
        self.collect_garbage();
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

/// What a transaction read: keys, and scanned `[begin, limit)` ranges (empty limit: unbounded).
#[derive(Default)]
pub(super) struct ReadSet {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Whether `[begin, limit)` holds no key (a non-empty limit at or below the start).
pub(super) fn is_empty_range(begin: &[u8], limit: &[u8]) -> bool {
    !limit.is_empty() && begin >= limit
}

/// Whether a read set touches any of `keys` (the writes accepted earlier in the same group).
pub(super) fn overlaps(keys: &BTreeSet<Vec<u8>>, reads: &ReadSet) -> bool {
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

#[cfg(test)]
mod tests {
    //! Write-set bookkeeping and range validation, through a store on the in-memory engine.

    use crate::engine::Durability;
    use crate::memstore::MemEngine;
    use crate::model::{Store, StoreWriter};
    use crate::txn::TxnStore;

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
