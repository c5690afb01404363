//! `syncbase-store-redb`: Syncbase's persistent storage engine, on [redb] (the Go daemon used
//! LevelDB). Key types: [`RedbEngine`], the [`Engine`] implementation, and [`RedbStore`], the
//! engine under the shared transaction manager of `syncbase-store`, opened with [`open`].
//!
//! Why redb: see `docs/storage-engine.md` (measured beside fjall on our own layered store).
//! The engine keeps one data table plus a metadata table holding the format version, stamped at
//! creation and checked at open. This crate depends only on `syncbase-store` among our crates.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use syncbase_store::{
    Durability, Engine, EngineSnapshot, Error, KeyValue, Result, TxnStore, WriteOp,
};

/// The newest on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// In relaxed durability, every this many engine writes one is made durable anyway: redb frees
/// pages only in durable commits, so an endless run of non-durable ones would grow the file.
pub const RELAXED_SYNC_EVERY_WRITES: u64 = 256;

const DATA: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("syncbase_data");
const META: TableDefinition<'static, &str, u32> = TableDefinition::new("syncbase_meta");
const FORMAT_KEY: &str = "format_version";

/// A store on a redb file.
pub type RedbStore = TxnStore<RedbEngine>;

/// Opens (creating if absent) the store in file `path` with the given durability.
///
/// Fails with [`Error::FormatTooNew`] when the file was written by a newer format, and with a
/// clear [`Error::Engine`] when another process holds the file.
pub fn open(path: &Path, durability: Durability) -> Result<RedbStore> {
    Ok(TxnStore::new(RedbEngine::open(path)?, durability))
}

/// The redb engine.
pub struct RedbEngine {
    database: RwLock<Option<redb::Database>>,
    writes: AtomicU64,
}

/// A consistent view: one redb read transaction and its open data table.
pub struct RedbSnapshot {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

fn engine_error(error: impl Into<redb::Error>) -> Error {
    let error: redb::Error = error.into();
    match error {
        redb::Error::Io(io) => Error::Io(io),
        redb::Error::DatabaseAlreadyOpen => {
            Error::Engine("the store file is already open (is another syncbased running?)".into())
        }
        other => Error::Engine(other.to_string()),
    }
}

impl RedbEngine {
    /// Opens or creates the file at `path`, checking or stamping the format version.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let database = redb::Database::create(path).map_err(engine_error)?;
        let transaction = database.begin_write().map_err(engine_error)?;
        {
            let mut meta = transaction.open_table(META).map_err(engine_error)?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(engine_error)?
                .map(|v| v.value());
            match found {
                Some(found) if found > FORMAT_VERSION => {
                    return Err(Error::FormatTooNew {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION)
                        .map_err(engine_error)?;
                }
            }
            transaction.open_table(DATA).map_err(engine_error)?;
        }
        transaction.commit().map_err(engine_error)?;
        Ok(Self {
            database: RwLock::new(Some(database)),
            writes: AtomicU64::new(0),
        })
    }

    /// Size of the file on disk and compacts it when asked; returns whether compaction did work.
    pub fn compact(&self) -> Result<bool> {
        let mut guard = self.database.write();
        let database = guard.as_mut().ok_or(Error::StoreClosed)?;
        database.compact().map_err(engine_error)
    }
}

impl Engine for RedbEngine {
    type Snapshot = RedbSnapshot;

    fn snapshot(&self) -> Result<RedbSnapshot> {
        let guard = self.database.read();
        let database = guard.as_ref().ok_or(Error::StoreClosed)?;
        let transaction = database.begin_read().map_err(engine_error)?;
        let table = transaction.open_table(DATA).map_err(engine_error)?;
        Ok(RedbSnapshot { table })
    }

    fn apply(&self, ops: &[WriteOp], durability: Durability) -> Result<()> {
        let guard = self.database.read();
        let database = guard.as_ref().ok_or(Error::StoreClosed)?;
        let mut transaction = database.begin_write().map_err(engine_error)?;
        let count = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let durable =
            durability == Durability::Durable || count.is_multiple_of(RELAXED_SYNC_EVERY_WRITES);
        if !durable {
            transaction
                .set_durability(redb::Durability::None)
                .map_err(engine_error)?;
        }
        {
            let mut table = transaction.open_table(DATA).map_err(engine_error)?;
            for op in ops {
                match op {
                    WriteOp::Put(key, value) => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(engine_error)?;
                    }
                    WriteOp::Delete(key) => {
                        table.remove(key.as_slice()).map_err(engine_error)?;
                    }
                }
            }
        }
        transaction.commit().map_err(engine_error)
    }

    fn close(&self) -> Result<()> {
        let Some(database) = self.database.write().take() else {
            return Ok(());
        };
        // Persist whatever relaxed commits are pending before the file is released.
        let mut transaction = database.begin_write().map_err(engine_error)?;
        transaction
            .set_durability(redb::Durability::Immediate)
            .map_err(engine_error)?;
        transaction.commit().map_err(engine_error)?;
        drop(database);
        Ok(())
    }
}

impl EngineSnapshot for RedbSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .table
            .get(key)
            .map_err(engine_error)?
            .map(|value| value.value().to_vec()))
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
        let mut out = Vec::with_capacity(count_max.min(1024));
        for entry in self
            .table
            .range::<&[u8]>((lower, upper))
            .map_err(engine_error)?
            .take(count_max)
        {
            let (key, value) = entry.map_err(engine_error)?;
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }
}
