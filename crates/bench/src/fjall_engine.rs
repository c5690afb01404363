//! A fjall adapter for our `Engine` trait, used to measure fjall beside redb on our own layered
//! store when choosing the engine (see `docs/storage-engine.md`).

use std::ops::Bound;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use syncbase_store::{
    Durability, Engine, EngineSnapshot, Error, KeyValue, Result, TxnStore, WriteOp,
};

fn engine_error(error: impl std::fmt::Display) -> Error {
    Error::Engine(error.to_string())
}

pub struct FjallEngine {
    database: Database,
    data: Keyspace,
}

pub struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    data: Keyspace,
}

pub fn open(path: &Path, durability: Durability) -> Result<TxnStore<FjallEngine>> {
    let database = Database::builder(path).open().map_err(engine_error)?;
    let data = database
        .keyspace("syncbase_data", KeyspaceCreateOptions::default)
        .map_err(engine_error)?;
    Ok(TxnStore::new(FjallEngine { database, data }, durability))
}

pub fn raw(path: &Path) -> (Database, Keyspace) {
    let database = Database::builder(path).open().expect("open fjall");
    let data = database
        .keyspace("syncbase_data", KeyspaceCreateOptions::default)
        .expect("keyspace");
    (database, data)
}

impl Engine for FjallEngine {
    type Snapshot = FjallSnapshot;

    fn snapshot(&self) -> Result<FjallSnapshot> {
        Ok(FjallSnapshot {
            snapshot: self.database.snapshot(),
            data: self.data.clone(),
        })
    }

    fn apply(&self, ops: &[WriteOp], durability: Durability) -> Result<()> {
        let mode = match durability {
            Durability::Durable => PersistMode::SyncAll,
            Durability::Relaxed => PersistMode::Buffer,
        };
        let mut batch = self.database.batch().durability(Some(mode));
        for op in ops {
            match op {
                WriteOp::Put(key, value) => {
                    batch.insert(&self.data, key.as_slice(), value.as_slice())
                }
                WriteOp::Delete(key) => batch.remove(&self.data, key.as_slice()),
            }
        }
        batch.commit().map_err(engine_error)
    }

    fn close(&self) -> Result<()> {
        self.database
            .persist(PersistMode::SyncAll)
            .map_err(engine_error)
    }
}

impl EngineSnapshot for FjallSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snapshot
            .get(&self.data, key)
            .map_err(engine_error)?
            .map(|value| value.to_vec()))
    }

    fn scan_chunk(
        &self,
        start: &[u8],
        start_inclusive: bool,
        limit: &[u8],
        count_max: usize,
    ) -> Result<Vec<KeyValue>> {
        if !limit.is_empty() && start >= limit {
            return Ok(Vec::new());
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
        let mut out = Vec::new();
        for guard in self
            .snapshot
            .range::<&[u8], _>(&self.data, (lower, upper))
            .take(count_max)
        {
            let (key, value) = guard.into_inner().map_err(engine_error)?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }
}
