//! `syncbase-store-fjall`: Syncbase's persistent storage engine, on [fjall] (the Go daemon used
//! LevelDB). Key types: [`FjallStoreSet`], many stores in one fjall database (a service's store
//! and all its databases' stores share one journal, one worker thread, one memtable and one
//! cache of open files); [`FjallEngine`], the [`Engine`] implementation for one store;
//! [`FjallStore`], the engine under the shared transaction manager of `syncbase-store`; and
//! [`open`], a directory holding a single store.
//!
//! Why fjall: see `docs/storage-engine.md` (measured beside redb on our own layered store: it
//! writes 1.2–2.7× faster and takes about half the disk; random reads are about 3× slower). Why
//! one keyspace for every store rather than a keyspace (or a fjall database) per store: the same
//! file, "Many databases". The directory is locked while open, so a second process gets a clear
//! error. This crate depends only on `syncbase-store` among our crates.
//!
//! On disk ([`FORMAT_VERSION`] 2): keyspace `syncbase_meta` holds the format stamp and the
//! registry of stores (`store/NAME` → a numeric id never reused, `doomed/ID` for a destroy not
//! yet purged); keyspace `syncbase_stores` holds every store's keys, each behind its id (8 bytes,
//! big-endian). Format 1 (one store per directory, keyspace `syncbase_data`, keys behind the
//! byte `d`) is still opened by [`open`], as it is, for migrating older roots.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::{Mutex, RwLock};
use syncbase_store::{
    Durability, Engine, EngineSnapshot, Error, KeyValue, Result, Store, StoreSet, TxnStore,
    WriteOp, prefix_limit, scan_bounds, validate_store_name,
};

/// The newest on-disk format this build reads and writes.
///
/// - 1: one store per directory, its keys behind the byte `d` in keyspace `syncbase_data`.
/// - 2: a set of stores ([`FjallStoreSet`]) in keyspace `syncbase_stores`, each store's keys
///   behind its id, with a registry of names in `syncbase_meta`.
pub const FORMAT_VERSION: u32 = 2;

/// Background threads fjall may use for flushes and compaction, per directory (one per
/// service, whatever the number of databases).
pub const WORKER_THREADS: usize = 1;

/// The name of the one store [`open`] opens in a directory.
pub const SINGLE_STORE_NAME: &str = "data";

const META_KEYSPACE: &str = "syncbase_meta";
const STORES_KEYSPACE: &str = "syncbase_stores";
const FORMAT_1_KEYSPACE: &str = "syncbase_data";
const FORMAT_1_PREFIX: &[u8] = b"d";
const FORMAT_KEY: &[u8] = b"format_version";
const NEXT_ID_KEY: &[u8] = b"next_store_id";
const NAME_PREFIX: &[u8] = b"store/";
const DOOMED_PREFIX: &[u8] = b"doomed/";

/// The most journal bytes kept before memtables are flushed (fjall's default is 512 MiB): what
/// a reopen replays, and so bounds its time and the memory it fills.
const JOURNAL_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// Keys a destroy removes per fjall batch while purging a store.
const PURGE_CHUNK_KEYS: usize = 10_000;

/// fjall's key limit (65,535 bytes) less the longest store prefix (an id).
const FJALL_KEY_BYTES_MAX: usize = 65_535 - 8;

/// Tries of a major compaction in [`FjallEngine::compact`] (50 ms apart) while background
/// compactions hold tables.
const COMPACT_ATTEMPTS_MAX: usize = 200;

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
/// the store named [`SINGLE_STORE_NAME`] of the set there, or the one store of a format-1
/// directory (left in format 1).
///
/// Fails with [`Error::FormatTooNew`] when the store was written by a newer format, and with a
/// clear [`Error::Engine`] when another process holds it.
pub fn open(path: &Path, durability: Durability) -> Result<FjallStore> {
    let (database, format) = open_database(path, &FjallOptions::new(durability))?;
    let engine = if format == 1 {
        let data = database
            .keyspace(FORMAT_1_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        FjallEngine::new(database, data, FORMAT_1_PREFIX.to_vec(), Arc::from(path))
    } else {
        let registry = Registry::load(database, path)?;
        let id = registry
            .id_of(SINGLE_STORE_NAME, true)?
            .ok_or_else(|| Error::Corrupt("the store registry lost the store it created".into()))?;
        registry.engine(id)
    };
    Ok(TxnStore::new(engine, durability))
}

/// Opens the fjall database in `path` (creating it if absent), checks its format stamp, stamps
/// a new directory with [`FORMAT_VERSION`], and returns the format it holds.
fn open_database(path: &Path, options: &FjallOptions) -> Result<(Database, u32)> {
    std::fs::create_dir_all(path)?;
    if options.max_open_files < 10 {
        return Err(Error::Misuse(format!(
            "max_open_files is {}; fjall needs at least 10",
            options.max_open_files
        )));
    }
    let database = Database::builder(path)
        .worker_threads(WORKER_THREADS)
        .max_journaling_size(JOURNAL_BYTES_MAX)
        .max_cached_files(Some(options.max_open_files))
        .open()
        .map_err(engine_error)?;
    let meta = database
        .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
        .map_err(engine_error)?;
    match meta.get(FORMAT_KEY).map_err(engine_error)? {
        Some(bytes) => {
            let found = read_u32(&bytes, "the format stamp")?;
            if found > FORMAT_VERSION {
                return Err(Error::FormatTooNew {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok((database, found))
        }
        None => {
            let mut batch = database.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
            batch.commit().map_err(engine_error)?;
            Ok((database, FORMAT_VERSION))
        }
    }
}

fn read_u32(bytes: &[u8], what: &str) -> Result<u32> {
    Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| {
        Error::Corrupt(format!("{what} is not 4 bytes"))
    })?))
}

fn read_u64(bytes: &[u8], what: &str) -> Result<u64> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| {
        Error::Corrupt(format!("{what} is not 8 bytes"))
    })?))
}

fn name_key(name: &str) -> Vec<u8> {
    [NAME_PREFIX, name.as_bytes()].concat()
}

fn doomed_key(id: u64) -> Vec<u8> {
    [DOOMED_PREFIX, &id.to_be_bytes()[..]].concat()
}

/// The registry of a format-2 directory: store names to ids, in the metadata keyspace.
struct Registry {
    database: Database,
    meta: Keyspace,
    stores: Keyspace,
    dir: Arc<Path>,
}

impl Registry {
    fn load(database: Database, dir: &Path) -> Result<Self> {
        let meta = database
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        let stores = database
            .keyspace(STORES_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        Ok(Self {
            database,
            meta,
            stores,
            dir: Arc::from(dir),
        })
    }

    /// The id of store `name`; a new one is registered (durably) when `create` is set.
    fn id_of(&self, name: &str, create: bool) -> Result<Option<u64>> {
        if let Some(bytes) = self.meta.get(name_key(name)).map_err(engine_error)? {
            return Ok(Some(read_u64(&bytes, "a store id")?));
        }
        if !create {
            return Ok(None);
        }
        let id = match self.meta.get(NEXT_ID_KEY).map_err(engine_error)? {
            Some(bytes) => read_u64(&bytes, "the next store id")?,
            None => 1,
        };
        let mut batch = self.database.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.meta, name_key(name), id.to_be_bytes());
        batch.insert(&self.meta, NEXT_ID_KEY, (id + 1).to_be_bytes());
        batch.commit().map_err(engine_error)?;
        Ok(Some(id))
    }

    fn engine(&self, id: u64) -> FjallEngine {
        FjallEngine::new(
            self.database.clone(),
            self.stores.clone(),
            id.to_be_bytes().to_vec(),
            self.dir.clone(),
        )
    }

    fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for guard in self.meta.prefix(NAME_PREFIX) {
            let key = guard.key().map_err(engine_error)?;
            let name = std::str::from_utf8(&key[NAME_PREFIX.len()..])
                .map_err(|_| Error::Corrupt("a store name is not UTF-8".into()))?;
            names.push(name.to_string());
        }
        Ok(names)
    }

    fn doomed(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for guard in self.meta.prefix(DOOMED_PREFIX) {
            let key = guard.key().map_err(engine_error)?;
            ids.push(read_u64(&key[DOOMED_PREFIX.len()..], "a doomed store id")?);
        }
        Ok(ids)
    }

    /// Unregisters `name` and marks its id doomed, in one durable write: from here on the
    /// store is gone, whatever happens to the purge of its keys.
    fn doom(&self, name: &str) -> Result<Option<u64>> {
        let Some(id) = self.id_of(name, false)? else {
            return Ok(None);
        };
        let mut batch = self.database.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.meta, name_key(name));
        batch.insert(&self.meta, doomed_key(id), []);
        batch.commit().map_err(engine_error)?;
        Ok(Some(id))
    }

    /// Removes every key of doomed store `id`, in bounded batches, then its doomed mark.
    fn purge(&self, id: u64) -> Result<()> {
        let prefix = id.to_be_bytes();
        loop {
            let mut keys = Vec::with_capacity(PURGE_CHUNK_KEYS);
            for guard in self.stores.prefix(prefix).take(PURGE_CHUNK_KEYS) {
                keys.push(guard.key().map_err(engine_error)?);
            }
            if keys.is_empty() {
                break;
            }
            let mut batch = self.database.batch().durability(Some(PersistMode::Buffer));
            for key in keys {
                batch.remove(&self.stores, key);
            }
            batch.commit().map_err(engine_error)?;
        }
        let mut batch = self.database.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.meta, doomed_key(id));
        batch.commit().map_err(engine_error)
    }
}

/// Many stores in one fjall database: one directory, one journal, [`WORKER_THREADS`]
/// background threads, one memtable and one cache of open files, whatever the number of
/// stores. Opened with [`FjallStoreSet::open_dir`].
pub struct FjallStoreSet {
    durability: Durability,
    /// `None` once the set is closed (which releases the directory's lock).
    state: Mutex<Option<SetState>>,
}

struct SetState {
    registry: Arc<Registry>,
    /// The stores open now: each is dropped when its last user lets go (so an idle database
    /// costs no memory here), and reopened on demand. Never two at once for one name, so a
    /// store's transactions always share one commit queue.
    stores: BTreeMap<String, Weak<FjallStore>>,
    /// Opens of a store not open, since dead entries were last pruned.
    opened_since_prune: usize,
}

/// Dead entries are pruned from a set's map after this many opens of stores not open.
const PRUNE_EVERY_OPENS: usize = 1_024;

impl FjallStoreSet {
    /// Opens (creating if absent) the set in directory `path`, finishing the purge of stores
    /// whose destruction a crash interrupted. Fails like [`open`], and on a format-1
    /// directory (a single store: open it with [`open`]).
    pub fn open_dir(path: &Path, options: FjallOptions) -> Result<Self> {
        let (database, format) = open_database(path, &options)?;
        if format == 1 {
            return Err(Error::Misuse(format!(
                "{} holds a single store of format 1; open it as one store",
                path.display()
            )));
        }
        let registry = Registry::load(database, path)?;
        for id in registry.doomed()? {
            registry.purge(id)?;
        }
        Ok(Self {
            durability: options.durability,
            state: Mutex::new(Some(SetState {
                registry: Arc::new(registry),
                stores: BTreeMap::new(),
                opened_since_prune: 0,
            })),
        })
    }

    /// How many keys the shared keyspace holds for no registered store, and for which ids: a
    /// check that every destroy was purged (after a crash, the next open purges). Walks one key
    /// per store id, plus the keys of unregistered ones.
    pub fn unregistered_keys(&self) -> Result<(u64, Vec<u64>)> {
        let registry = {
            let guard = self.state.lock();
            guard.as_ref().ok_or(Error::StoreClosed)?.registry.clone()
        };
        let mut registered = std::collections::BTreeSet::new();
        for guard in registry.meta.prefix(NAME_PREFIX) {
            let (_, value) = guard.into_inner().map_err(engine_error)?;
            registered.insert(read_u64(&value, "a store id")?);
        }
        let (mut count, mut ids) = (0, Vec::new());
        let mut from = 0u64;
        loop {
            let Some(guard) = registry.stores.range(from.to_be_bytes()..).next() else {
                break;
            };
            let key = guard.key().map_err(engine_error)?;
            let id = read_u64(&key[..8], "a store key's id")?;
            if !registered.contains(&id) {
                ids.push(id);
                count += registry.stores.prefix(id.to_be_bytes()).count() as u64;
            }
            match id.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok((count, ids))
    }

    /// Bytes the whole set takes on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        let guard = self.state.lock();
        let state = guard.as_ref().ok_or(Error::StoreClosed)?;
        state.registry.database.disk_space().map_err(engine_error)
    }
}

impl StoreSet for FjallStoreSet {
    fn open(&self, name: &str) -> Result<Arc<dyn Store>> {
        validate_store_name(name)?;
        let mut guard = self.state.lock();
        let state = guard.as_mut().ok_or(Error::StoreClosed)?;
        if let Some(store) = state.stores.get(name).and_then(Weak::upgrade) {
            if !store.is_closed() {
                return Ok(store);
            }
            // Closed, perhaps with its last commit group still writing: a new store over the
            // same keys starts only once that group is done (else both would write the log).
            store.wait_for_commits();
        }
        let id = state
            .registry
            .id_of(name, true)?
            .ok_or_else(|| Error::Corrupt("the store registry lost a store it created".into()))?;
        let store = Arc::new(TxnStore::new(state.registry.engine(id), self.durability));
        state
            .stores
            .insert(name.to_string(), Arc::downgrade(&store));
        state.opened_since_prune += 1;
        if state.opened_since_prune >= PRUNE_EVERY_OPENS {
            state.stores.retain(|_, store| store.strong_count() > 0);
            state.opened_since_prune = 0;
        }
        Ok(store)
    }

    fn destroy(&self, name: &str) -> Result<()> {
        validate_store_name(name)?;
        let (registry, id) = {
            let mut guard = self.state.lock();
            let state = guard.as_mut().ok_or(Error::StoreClosed)?;
            if let Some(store) = state.stores.remove(name).and_then(|store| store.upgrade()) {
                store.close()?;
            }
            let Some(id) = state.registry.doom(name)? else {
                return Ok(());
            };
            (state.registry.clone(), id)
        };
        // Outside the lock: the id is unreachable now (a new store of this name gets a new id),
        // and a crash before the purge ends is finished by the next open.
        registry.purge(id)
    }

    fn names(&self) -> Result<Vec<String>> {
        let guard = self.state.lock();
        guard.as_ref().ok_or(Error::StoreClosed)?.registry.names()
    }

    fn persist(&self) -> Result<()> {
        let registry = {
            let guard = self.state.lock();
            guard.as_ref().ok_or(Error::StoreClosed)?.registry.clone()
        };
        registry
            .database
            .persist(PersistMode::SyncAll)
            .map_err(|error| write_error(error, &registry.dir))
    }

    fn close(&self) -> Result<()> {
        let Some(state) = self.state.lock().take() else {
            return Ok(());
        };
        let mut first_error = None;
        for store in state
            .stores
            .into_values()
            .filter_map(|store| store.upgrade())
        {
            if let Err(error) = store.close() {
                first_error.get_or_insert(error);
            }
        }
        state
            .registry
            .database
            .persist(PersistMode::SyncAll)
            .map_err(engine_error)?;
        first_error.map_or(Ok(()), Err)
    }
}

/// The fjall engine: the keys of one store, behind its prefix in a keyspace.
pub struct FjallEngine {
    inner: RwLock<Option<Open>>,
    prefix: Vec<u8>,
    /// The fjall database's directory, to say why writes fail.
    dir: Arc<Path>,
}

struct Open {
    database: Database,
    data: Keyspace,
}

/// A consistent view of one store's keys.
pub struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    data: Keyspace,
    prefix: Vec<u8>,
}

impl FjallSnapshot {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }
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

/// A write's error, saying so when the disk holding `dir` is (nearly) full: fjall reports a
/// flush that found no space only as "poisoned" to the writes after it.
fn write_error(error: fjall::Error, dir: &Path) -> Error {
    let full = matches!(&error, fjall::Error::Poisoned)
        || matches!(&error, fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io))
            if io.raw_os_error() == Some(28));
    let error = engine_error(error);
    if !full {
        return error;
    }
    match rustix::fs::statvfs(dir) {
        Ok(stats) if stats.f_bavail.saturating_mul(stats.f_frsize) < DISK_NEARLY_FULL_BYTES => {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "the disk holding {} is nearly full ({} KiB free), so the store accepts no \
                     more writes; free some space and restart",
                    dir.display(),
                    stats.f_bavail.saturating_mul(stats.f_frsize) / 1024
                ),
            ))
        }
        _ => error,
    }
}

/// Free bytes under which a failed write is put down to a full disk.
const DISK_NEARLY_FULL_BYTES: u64 = 64 << 20;

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
    fn new(database: Database, data: Keyspace, prefix: Vec<u8>, dir: Arc<Path>) -> Self {
        Self {
            inner: RwLock::new(Some(Open { database, data })),
            prefix,
            dir,
        }
    }

    /// Bytes the store's whole fjall database takes on disk (every store of its set).
    pub fn disk_bytes(&self) -> Result<u64> {
        let guard = self.inner.read();
        let open = guard.as_ref().ok_or(Error::StoreClosed)?;
        open.database.disk_space().map_err(engine_error)
    }

    /// Flushes what is in memory and compacts the keyspace into one sorted run, blocking until
    /// done, so the space of removed and overwritten keys is reclaimed now rather than whenever
    /// fjall's own compaction reaches it (benchmarks and maintenance; every store of its set).
    pub fn compact(&self) -> Result<()> {
        let guard = self.inner.read();
        let open = guard.as_ref().ok_or(Error::StoreClosed)?;
        open.data.rotate_memtable_and_wait().map_err(engine_error)?;
        // A major compaction does nothing while a background one holds some of the tables:
        // try again until the keyspace is one table (or a bounded number of times).
        for _ in 0..COMPACT_ATTEMPTS_MAX {
            open.data.major_compact().map_err(engine_error)?;
            if open.data.table_count() <= 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The files of the tables it replaced are removed once no version of the tree refers
        // to them any more (at a later compaction, or when the store is next opened).
        Ok(())
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
            prefix: self.prefix.clone(),
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
                    byteview::ByteView::fused(&self.prefix, key),
                    value.as_slice(),
                ),
                WriteOp::Delete(key) => {
                    batch.remove(&open.data, byteview::ByteView::fused(&self.prefix, key))
                }
            }
        }
        batch
            .commit()
            .map_err(|error| write_error(error, &self.dir))
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
        // No key this long can be stored (and fjall panics on one).
        if key.len() > FJALL_KEY_BYTES_MAX {
            return Ok(None);
        }
        Ok(self
            .snapshot
            .get(&self.data, self.key(key))
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
        // Every key is behind the store's prefix, so "to the end" is the end of the prefix.
        let start = self.key(start);
        let limit = if limit.is_empty() {
            prefix_limit(&self.prefix)
        } else {
            self.key(limit)
        };
        let Some(bounds) = scan_bounds(&start, start_inclusive, &limit) else {
            return Ok(Vec::new());
        };
        let entries = self
            .snapshot
            .range::<&[u8], _>(&self.data, bounds)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(engine_error)?;
                Ok((key[self.prefix.len()..].to_vec(), value.to_vec()))
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
