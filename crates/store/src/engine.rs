//! What a storage engine must provide so the shared transaction manager can turn it into a
//! [`Store`](crate::Store) (mirrors Go `store/transactions` `BatchStore`): consistent snapshot
//! reads, one atomic multi-key write, and a durable commit.

use std::ops::Bound;

use crate::error::Result;
use crate::model::{KeyValue, WriteOp};

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A commit returns only after its data is on disk. Concurrent committers share one sync
    /// (group commit). The default.
    #[default]
    Durable,
    /// A commit returns before its data is on disk. A crash (of the process or of the machine,
    /// depending on the engine) may lose the most recent commits, but never exposes part of a
    /// transaction and never damages earlier durable commits. For tests and caches.
    Relaxed,
}

/// A storage engine: the primitive operations the transaction manager needs.
pub trait Engine: Send + Sync + 'static {
    /// A consistent read-only view of the engine.
    type Snapshot: EngineSnapshot;

    /// The longest key the engine stores; longer puts fail with [`Error::KeyTooLarge`] before
    /// they reach the engine.
    ///
    /// [`Error::KeyTooLarge`]: crate::Error::KeyTooLarge
    const KEY_BYTES_MAX: usize = usize::MAX;

    /// The largest value the engine stores; larger puts fail with [`Error::ValueTooLarge`].
    ///
    /// [`Error::ValueTooLarge`]: crate::Error::ValueTooLarge
    const VALUE_BYTES_MAX: usize = usize::MAX;

    /// Takes a snapshot of everything applied so far.
    fn snapshot(&self) -> Result<Self::Snapshot>;

    /// Applies `ops` atomically: after a crash either all of them are visible or none is. With
    /// [`Durability::Durable`] it returns only once they are on disk.
    fn apply(&self, ops: &[WriteOp], durability: Durability) -> Result<()>;

    /// Releases the engine's resources. Called once, by the store's close.
    fn close(&self) -> Result<()>;
}

/// A consistent read-only view of an engine.
pub trait EngineSnapshot: Send + Sync + 'static {
    /// The value of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Entries in key order, starting at `start` (inclusive when `start_inclusive`, else just
    /// after it) and stopping before `limit` (empty = unbounded): up to `count_max` of them, and
    /// no more once their keys and values reach `bytes_max` (so at least one, however large).
    fn scan_chunk(
        &self,
        start: &[u8],
        start_inclusive: bool,
        limit: &[u8],
        count_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<KeyValue>>;
}

/// Takes entries from `entries` into a chunk as [`EngineSnapshot::scan_chunk`] describes: at
/// most `count_max`, ending with the one whose bytes reach `bytes_max`.
pub fn take_chunk<I>(entries: I, count_max: usize, bytes_max: usize) -> Result<Vec<KeyValue>>
where
    I: Iterator<Item = Result<KeyValue>>,
{
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for entry in entries.take(count_max) {
        let (key, value) = entry?;
        bytes += key.len() + value.len();
        chunk.push((key, value));
        if bytes >= bytes_max {
            break;
        }
    }
    Ok(chunk)
}

/// A lower and an upper bound over keys.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of an [`EngineSnapshot::scan_chunk`] range, for engines with ordered range
/// iteration; `None` when the range holds no key (a non-empty `limit` at or below `start`).
pub fn scan_bounds<'a>(
    start: &'a [u8],
    start_inclusive: bool,
    limit: &'a [u8],
) -> Option<KeyBounds<'a>> {
    if !limit.is_empty() && start >= limit {
        return None;
    }
    let lower = if start_inclusive {
        Bound::Included(start)
    } else {
        Bound::Excluded(start)
    };
    let upper = if limit.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(limit)
    };
    Some((lower, upper))
}
