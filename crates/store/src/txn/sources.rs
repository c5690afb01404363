//! Stream sources for the transaction layer: [`ChunkSource`] streams a range of an engine
//! snapshot in bounded chunks, and [`MergedSource`] merges a transaction's own buffered writes
//! over such a source.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::engine::EngineSnapshot;
use crate::error::Result;
use crate::model::{KeyValue, StreamSource};

/// Entries fetched from an engine snapshot per step of a scan.
const SCAN_CHUNK_ENTRIES: usize = 256;
/// Bytes (keys and values) fetched per step of a scan, so a scan of large values holds one at a
/// time rather than a few hundred.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Streams a range of an engine snapshot in chunks.
pub(super) struct ChunkSource<S: EngineSnapshot> {
    snapshot: Arc<S>,
    next_start: Vec<u8>,
    start_inclusive: bool,
    limit: Vec<u8>,
    buffer: VecDeque<KeyValue>,
    exhausted: bool,
}

impl<S: EngineSnapshot> ChunkSource<S> {
    /// A source over `[start, limit)` of `snapshot`.
    pub(super) fn new(snapshot: Arc<S>, start: &[u8], limit: &[u8]) -> Self {
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
pub(super) struct MergedSource {
    base: Box<dyn StreamSource>,
    base_next: Option<KeyValue>,
    base_primed: bool,
    own: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
}

impl MergedSource {
    /// Merges `own` (sorted; `None` hides a key) over `base`.
    pub(super) fn new(base: Box<dyn StreamSource>, own: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Self {
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
