//! The in-memory engine (mirrors Go `store/memstore/store.go`): a persistent ordered map, so a
//! snapshot is an O(1) clone of the current root rather than a copy of the data.

use std::sync::Arc;

use imbl::OrdMap;
use parking_lot::RwLock;

use crate::engine::{Durability, Engine, EngineSnapshot};
use crate::error::Result;
use crate::model::{KeyValue, WriteOp};
use crate::txn::TxnStore;

type Map = OrdMap<Arc<[u8]>, Arc<[u8]>>;

/// An in-memory store: [`MemEngine`] under the shared transaction manager.
pub type MemStore = TxnStore<MemEngine>;

/// Opens an empty in-memory store. Durability has no meaning in memory; commits still go through
/// the same group-commit path as on disk.
pub fn open_memstore() -> MemStore {
    TxnStore::new(MemEngine::default(), Durability::Relaxed)
}

/// The in-memory engine.
#[derive(Default)]
pub struct MemEngine {
    map: RwLock<Map>,
}

/// A snapshot of the in-memory engine: a cheap clone of the map's root.
pub struct MemSnapshot {
    map: Map,
}

impl Engine for MemEngine {
    type Snapshot = MemSnapshot;

    fn snapshot(&self) -> Result<MemSnapshot> {
        Ok(MemSnapshot {
            map: self.map.read().clone(),
        })
    }

    fn apply(&self, ops: &[WriteOp], _durability: Durability) -> Result<()> {
        // Build the new version off to the side so readers never see part of a batch.
        let mut next = self.map.read().clone();
        for op in ops {
            match op {
                WriteOp::Put(key, value) => {
                    next.insert(Arc::from(key.as_slice()), Arc::from(value.as_slice()));
                }
                WriteOp::Delete(key) => {
                    next.remove(key.as_slice());
                }
            }
        }
        *self.map.write() = next;
        Ok(())
    }

    fn close(&self) -> Result<()> {
        *self.map.write() = Map::new();
        Ok(())
    }
}

impl EngineSnapshot for MemSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).map(|value| value.to_vec()))
    }

    fn scan_chunk(
        &self,
        start: &[u8],
        start_inclusive: bool,
        limit: &[u8],
        count_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<KeyValue>> {
        let Some((lower, upper)) = crate::engine::scan_bounds(start, start_inclusive, limit) else {
            return Ok(Vec::new());
        };
        let entries = self
            .map
            .range::<_, [u8]>((lower, upper))
            .map(|(key, value)| Ok((key.to_vec(), value.to_vec())));
        crate::engine::take_chunk(entries, count_max, bytes_max)
    }
}
