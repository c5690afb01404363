//! `syncbase-store-fjall`: Syncbase's persistent storage engine, on [fjall] (the Go daemon used
//! LevelDB). Key types: [`FjallEngine`], the [`Engine`] implementation, and [`FjallStore`], the
//! engine under the shared transaction manager of `syncbase-store`, opened with [`open`].
//!
//! Why fjall: see `docs/storage-engine.md` (measured beside redb on our own layered store: it
//! writes 1.2–2.7× faster and takes about half the disk; random reads are about 3× slower). A
//! store is one fjall database (a directory) with a data keyspace and a metadata keyspace holding
//! the format version, stamped at creation and checked at open. The directory is locked while
//! open, so a second process gets a clear error. This crate depends only on `syncbase-store`
//! among our crates.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::RwLock;
use syncbase_store::{
    Durability, Engine, EngineSnapshot, Error, KeyValue, Result, TxnStore, WriteOp, scan_bounds,
};

/// The newest on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Background threads fjall may use for flushes and compaction, per store.
pub const WORKER_THREADS: usize = 1;

const DATA_KEYSPACE: &str = "syncbase_data";
const META_KEYSPACE: &str = "syncbase_meta";
const FORMAT_KEY: &[u8] = b"format_version";

/// Every data key is stored behind this byte: fjall refuses empty keys, and a constant prefix
/// keeps the order of our keys.
const DATA_KEY_PREFIX: u8 = b'd';

/// fjall's key limit (65,535 bytes) less the prefix byte.
const FJALL_KEY_BYTES_MAX: usize = 65_535 - 1;

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(DATA_KEY_PREFIX);
    out.extend_from_slice(key);
    out
}

/// A store on a fjall database.
pub type FjallStore = TxnStore<FjallEngine>;

/// Opens (creating if absent) the store in directory `path` with the given durability.
///
/// Fails with [`Error::FormatTooNew`] when the store was written by a newer format, and with a
/// clear [`Error::Engine`] when another process holds it.
pub fn open(path: &Path, durability: Durability) -> Result<FjallStore> {
    Ok(TxnStore::new(FjallEngine::open(path)?, durability))
}

/// The fjall engine.
pub struct FjallEngine {
    inner: RwLock<Option<Open>>,
}

struct Open {
    database: Database,
    data: Keyspace,
}

/// A consistent view of the data keyspace.
pub struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    data: Keyspace,
}

fn engine_error(error: fjall::Error) -> Error {
    match error {
        fjall::Error::Locked => {
            Error::Engine("the store is already open (is another syncbased running?)".into())
        }
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => Error::Io(io),
        fjall::Error::Storage(storage) => Error::Corrupt(storage_message(&storage)),
        fjall::Error::Poisoned => Error::Engine(
            "an earlier write to disk failed, so the store accepts no more writes; restart to recover".into(),
        ),
        fjall::Error::Unrecoverable => {
            Error::Corrupt("the store's files cannot be recovered".into())
        }
        fjall::Error::InvalidVersion(_) => {
            Error::Corrupt("the store's files have an unknown format version".into())
        }
        fjall::Error::JournalRecovery(_) => {
            Error::Corrupt("the store's journal could not be recovered".into())
        }
        fjall::Error::Decompress(_) => Error::Corrupt("a block failed to decompress".into()),
        fjall::Error::InvalidTrailer | fjall::Error::InvalidTag(_) => {
            Error::Corrupt("the journal holds a malformed entry".into())
        }
        fjall::Error::KeyspaceDeleted => Error::Engine("the keyspace was deleted".into()),
        // Variants added by later fjall versions: their own text, never a debug dump.
        _ => Error::Engine("the storage engine failed".into()),
    }
}

/// A sentence for an error of fjall's LSM tree (its `Display` prints a debug dump).
fn storage_message(error: &fjall::LsmError) -> String {
    match error {
        fjall::LsmError::Io(io) => format!("I/O error: {io}"),
        fjall::LsmError::ChecksumMismatch { .. } => "a block's checksum does not match".into(),
        fjall::LsmError::Decompress(_) => "a block failed to decompress".into(),
        fjall::LsmError::InvalidVersion(version) => {
            format!("a table has the unknown format version {version}")
        }
        fjall::LsmError::Unrecoverable => "some of the store's files could not be recovered".into(),
        fjall::LsmError::Utf8(_) => "a name in the store's files is not UTF-8".into(),
        _ => "a table's block is malformed".into(),
    }
}

impl FjallEngine {
    /// Opens or creates the store in `path`, checking or stamping the format version.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let database = Database::builder(path)
            .worker_threads(WORKER_THREADS)
            .open()
            .map_err(engine_error)?;
        let meta = database
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        match meta.get(FORMAT_KEY).map_err(engine_error)? {
            Some(bytes) => {
                let found = u32::from_be_bytes(
                    bytes
                        .as_ref()
                        .try_into()
                        .map_err(|_| Error::Corrupt("the format stamp is not 4 bytes".into()))?,
                );
                if found > FORMAT_VERSION {
                    return Err(Error::FormatTooNew {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
            None => {
                let mut batch = database.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
                batch.commit().map_err(engine_error)?;
            }
        }
        let data = database
            .keyspace(DATA_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        Ok(Self {
            inner: RwLock::new(Some(Open { database, data })),
        })
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        let guard = self.inner.read();
        let open = guard.as_ref().ok_or(Error::StoreClosed)?;
        open.database.disk_space().map_err(engine_error)
    }
}

impl Engine for FjallEngine {
    type Snapshot = FjallSnapshot;

    const KEY_BYTES_MAX: usize = FJALL_KEY_BYTES_MAX;
    const VALUE_BYTES_MAX: usize = u32::MAX as usize;

    fn snapshot(&self) -> Result<FjallSnapshot> {
        let guard = self.inner.read();
        let open = guard.as_ref().ok_or(Error::StoreClosed)?;
        Ok(FjallSnapshot {
            snapshot: open.database.snapshot(),
            data: open.data.clone(),
        })
    }

    fn apply(&self, ops: &[WriteOp], durability: Durability) -> Result<()> {
        let guard = self.inner.read();
        let open = guard.as_ref().ok_or(Error::StoreClosed)?;
        let mode = match durability {
            Durability::Durable => PersistMode::SyncData,
            // Written to the operating system: survives a crash of the process, not of the machine.
            Durability::Relaxed => PersistMode::Buffer,
        };
        let mut batch = open.database.batch().durability(Some(mode));
        for op in ops {
            match op {
                // One copy straight into fjall's own buffer, prefix included.
                WriteOp::Put(key, value) => batch.insert(
                    &open.data,
                    byteview::ByteView::fused(&[DATA_KEY_PREFIX], key),
                    value.as_slice(),
                ),
                WriteOp::Delete(key) => batch.remove(
                    &open.data,
                    byteview::ByteView::fused(&[DATA_KEY_PREFIX], key),
                ),
            }
        }
        batch.commit().map_err(engine_error)
    }

    fn close(&self) -> Result<()> {
        let Some(open) = self.inner.write().take() else {
            return Ok(());
        };
        // Persist whatever relaxed commits are pending before the directory is released.
        open.database
            .persist(PersistMode::SyncAll)
            .map_err(engine_error)
    }
}

impl EngineSnapshot for FjallSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snapshot
            .get(&self.data, data_key(key))
            .map_err(engine_error)?
            .map(|value| value.to_vec()))
    }

    fn scan_chunk(
        &self,
        start: &[u8],
        start_inclusive: bool,
        limit: &[u8],
        count_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<KeyValue>> {
        // Every data key is prefixed, so "to the end" is the end of the prefix.
        let start = data_key(start);
        let limit = if limit.is_empty() {
            vec![DATA_KEY_PREFIX + 1]
        } else {
            data_key(limit)
        };
        let Some(bounds) = scan_bounds(&start, start_inclusive, &limit) else {
            return Ok(Vec::new());
        };
        let entries = self
            .snapshot
            .range::<&[u8], _>(&self.data, bounds)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(engine_error)?;
                Ok((key[1..].to_vec(), value.to_vec()))
            });
        syncbase_store::take_chunk(entries, count_max, bytes_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fjall's own `Display` prints a debug dump; what reaches people is a sentence.
    #[test]
    fn engine_errors_read_as_sentences_not_debug_dumps() {
        let errors = [
            fjall::Error::Poisoned,
            fjall::Error::Unrecoverable,
            fjall::Error::InvalidTrailer,
            fjall::Error::KeyspaceDeleted,
            fjall::Error::Storage(fjall::LsmError::Unrecoverable),
            fjall::Error::Storage(fjall::LsmError::InvalidHeader("block")),
            fjall::Error::Storage(fjall::LsmError::Io(std::io::Error::other("disk gone"))),
        ];
        for error in errors {
            let message = engine_error(error).to_string();
            for debug_mark in ["Error", "Poisoned", "Storage(", "{", "Unrecoverable"] {
                assert!(!message.contains(debug_mark), "{message}");
            }
        }
        let io = engine_error(fjall::Error::Storage(fjall::LsmError::Io(
            std::io::Error::from_raw_os_error(24),
        )));
        assert_eq!(io.code(), "store.io");
    }
}
