//! `syncbase-store-fjall`: Syncbase's persistent storage engine, on [fjall] (the Go daemon used
//! LevelDB). Key types: [`FjallEngine`], the [`Engine`] implementation over one keyspace;
//! [`FjallStore`], the engine under the shared transaction manager of `syncbase-store`;
//! [`FjallStoreSet`], many stores in one fjall database (a service's store and all its
//! databases' stores share one journal, one worker thread and one cache of open files); and
//! [`open`], a directory holding a single store.
//!
//! Why fjall: see `docs/storage-engine.md` (measured beside redb on our own layered store: it
//! writes 1.2–2.7× faster and takes about half the disk; random reads are about 3× slower). A
//! fjall database holds one keyspace per store and a metadata keyspace with the format version,
//! stamped at creation and checked at open ([`FORMAT_VERSION`]). The directory is locked while
//! open, so a second process gets a clear error. This crate depends only on `syncbase-store`
//! among our crates.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::{Mutex, RwLock};
use syncbase_store::{
    Durability, Engine, EngineSnapshot, Error, KeyValue, Result, Store, StoreSet, TxnStore,
    WriteOp, scan_bounds, validate_store_name,
};

/// The newest on-disk format this build reads and writes.
///
/// - 1: one store per directory, its data in keyspace `syncbase_data`.
/// - 2: a set of stores ([`FjallStoreSet`]), store `NAME` in keyspace `syncbase_NAME`. A
///   format-1 directory is a set holding one store named `data` ([`SINGLE_STORE_NAME`]), so
///   opening one only restamps it.
pub const FORMAT_VERSION: u32 = 2;

/// Background threads fjall may use for flushes and compaction, per set (one set per service,
/// whatever the number of databases).
pub const WORKER_THREADS: usize = 1;

/// The name of the one store [`open`] opens in a directory (format 1's only store).
pub const SINGLE_STORE_NAME: &str = "data";

const KEYSPACE_PREFIX: &str = "syncbase_";
const META_KEYSPACE: &str = "syncbase_meta";
/// The store name whose keyspace is the metadata keyspace.
const META_STORE_NAME: &str = "meta";
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

fn keyspace_name(store: &str) -> String {
    format!("{KEYSPACE_PREFIX}{store}")
}

/// A store on a fjall database.
pub type FjallStore = TxnStore<FjallEngine>;

/// How to open a fjall directory.
#[derive(Debug, Clone, Copy)]
pub struct FjallOptions {
    /// The durability of every store's commits.
    pub durability: Durability,
    /// The most table files kept open at once (fjall's descriptor cache; at least 10). One
    /// cache serves every store of a set, so descriptors do not grow with the number of stores.
    pub max_open_files: usize,
}

impl FjallOptions {
    /// The default cache of open files (fjall's own default on Linux).
    pub const MAX_OPEN_FILES_DEFAULT: usize = 900;

    /// Options with `durability` and the default cache of open files.
    pub fn new(durability: Durability) -> Self {
        Self {
            durability,
            max_open_files: Self::MAX_OPEN_FILES_DEFAULT,
        }
    }
}

/// Opens (creating if absent) the single store in directory `path` with the given durability:
/// a set holding one store named [`SINGLE_STORE_NAME`], as format 1 kept every store.
///
/// Fails with [`Error::FormatTooNew`] when the store was written by a newer format, and with a
/// clear [`Error::Engine`] when another process holds it.
pub fn open(path: &Path, durability: Durability) -> Result<FjallStore> {
    let database = open_database(path, &FjallOptions::new(durability))?;
    Ok(TxnStore::new(
        FjallEngine::open_keyspace(database, SINGLE_STORE_NAME)?,
        durability,
    ))
}

/// Opens the fjall database in `path` (creating it if absent), checks its format stamp and
/// stamps a new (or format-1) directory with [`FORMAT_VERSION`].
fn open_database(path: &Path, options: &FjallOptions) -> Result<Database> {
    std::fs::create_dir_all(path)?;
    if options.max_open_files < 10 {
        return Err(Error::Misuse(format!(
            "max_open_files is {}; fjall needs at least 10",
            options.max_open_files
        )));
    }
    let database = Database::builder(path)
        .worker_threads(WORKER_THREADS)
        .max_cached_files(Some(options.max_open_files))
        .open()
        .map_err(engine_error)?;
    let meta = database
        .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
        .map_err(engine_error)?;
    let found = match meta.get(FORMAT_KEY).map_err(engine_error)? {
        Some(bytes) => {
            Some(u32::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| Error::Corrupt("the format stamp is not 4 bytes".into()),
            )?))
        }
        None => None,
    };
    match found {
        Some(found) if found > FORMAT_VERSION => {
            return Err(Error::FormatTooNew {
                found,
                supported: FORMAT_VERSION,
            });
        }
        Some(FORMAT_VERSION) => {}
        // New, or format 1 (a set of one store named `data`): stamp the current format.
        _ => {
            let mut batch = database.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
            batch.commit().map_err(engine_error)?;
        }
    }
    Ok(database)
}

/// Many stores in one fjall database: one directory, one journal, [`WORKER_THREADS`]
/// background threads and one cache of open files, each store a keyspace. Opened with
/// [`FjallStoreSet::open_dir`].
pub struct FjallStoreSet {
    durability: Durability,
    /// `None` once the set is closed (which releases the directory's lock).
    state: Mutex<Option<SetState>>,
}

struct SetState {
    database: Database,
    /// The stores opened so far.
    stores: BTreeMap<String, Arc<FjallStore>>,
}

impl FjallStoreSet {
    /// Opens (creating if absent) the set in directory `path`. Fails like [`open`].
    pub fn open_dir(path: &Path, options: FjallOptions) -> Result<Self> {
        Ok(Self {
            durability: options.durability,
            state: Mutex::new(Some(SetState {
                database: open_database(path, &options)?,
                stores: BTreeMap::new(),
            })),
        })
    }

    /// Bytes the whole set takes on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        let guard = self.state.lock();
        let state = guard.as_ref().ok_or(Error::StoreClosed)?;
        state.database.disk_space().map_err(engine_error)
    }
}

fn validate_set_store_name(name: &str) -> Result<()> {
    validate_store_name(name)?;
    if name == META_STORE_NAME {
        return Err(Error::Misuse(format!(
            "store name {META_STORE_NAME:?} is reserved for the set's metadata"
        )));
    }
    Ok(())
}

impl StoreSet for FjallStoreSet {
    fn open(&self, name: &str) -> Result<Arc<dyn Store>> {
        validate_set_store_name(name)?;
        let mut guard = self.state.lock();
        let state = guard.as_mut().ok_or(Error::StoreClosed)?;
        if let Some(store) = state.stores.get(name)
            && !store.is_closed()
        {
            return Ok(store.clone());
        }
        let engine = FjallEngine::open_keyspace(state.database.clone(), name)?;
        let store = Arc::new(TxnStore::new(engine, self.durability));
        state.stores.insert(name.to_string(), store.clone());
        Ok(store)
    }

    fn destroy(&self, name: &str) -> Result<()> {
        validate_set_store_name(name)?;
        // Held throughout, so the name is not reopened while its keyspace is deleted.
        let mut guard = self.state.lock();
        let state = guard.as_mut().ok_or(Error::StoreClosed)?;
        if let Some(store) = state.stores.remove(name) {
            store.close()?;
        }
        let keyspace = keyspace_name(name);
        if !state.database.keyspace_exists(&keyspace) {
            return Ok(());
        }
        let handle = state
            .database
            .keyspace(&keyspace, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        // One atomic write to fjall's metadata: after a crash the keyspace is whole or gone
        // (an unreferenced keyspace directory is removed when the database is next opened).
        state.database.delete_keyspace(handle).map_err(engine_error)
    }

    fn names(&self) -> Result<Vec<String>> {
        let guard = self.state.lock();
        let state = guard.as_ref().ok_or(Error::StoreClosed)?;
        let mut names: Vec<String> = state
            .database
            .list_keyspace_names()
            .iter()
            .filter_map(|keyspace| keyspace.strip_prefix(KEYSPACE_PREFIX))
            .filter(|name| *name != META_STORE_NAME)
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    fn close(&self) -> Result<()> {
        let Some(state) = self.state.lock().take() else {
            return Ok(());
        };
        let mut first_error = None;
        for store in state.stores.into_values() {
            if let Err(error) = store.close() {
                first_error.get_or_insert(error);
            }
        }
        state
            .database
            .persist(PersistMode::SyncAll)
            .map_err(engine_error)?;
        first_error.map_or(Ok(()), Err)
    }
}

/// The fjall engine: one keyspace of a fjall database.
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
    /// The engine of store `name` in `database` (its keyspace, created if absent).
    fn open_keyspace(database: Database, name: &str) -> Result<Self> {
        let data = database
            .keyspace(&keyspace_name(name), KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        Ok(Self {
            inner: RwLock::new(Some(Open { database, data })),
        })
    }

    /// Bytes the store's whole fjall database takes on disk (every store of its set).
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
