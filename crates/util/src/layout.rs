//! The on-disk layout of a service (mirrors Go `server/db_info.go` and `db_gc.go`): a root
//! directory with a format stamp and one set of stores on one engine instance, holding the
//! service store and one store per database, named by a numeric id the service allocates (names
//! can be 1 KiB, too long for store names). A database is destroyed by destroying its store,
//! which the engine does atomically, and has its own watch log.
//!
//! ```text
//! ROOT/FORMAT     "syncbase-layout <version>"
//! ROOT/stores/    the engine's set: store `service`, and `db_<id as 16 hex digits>` per database
//! ```
//!
//! Layout 1 (before many databases per daemon) kept each store in its own directory, each with
//! its own engine instance (threads, journal, descriptors): `ROOT/service/`,
//! `ROOT/databases/<id>/` and `ROOT/trash/`. Opening such a root migrates it: each store is
//! copied into the set and its directory then removed, so a crash at any point leaves a root the
//! next open finishes migrating; the stamp is written last.
//!
//! Layout 3 is layout 2 whose databases may hold sync's DAG in its format 2 (the head keeps its
//! node; `syncbase_vsync::dag`). Nothing moves at this level: a database's DAG is migrated when
//! its sync opens. The stamp is there so a build of layout 2, which would misread such a head
//! without a word, refuses the root instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use syncbase_store::{Error as StoreError, MemStoreSet, Store, StoreSet, Transaction};

use crate::error::Result;

/// The newest layout format this build reads and writes.
pub const LAYOUT_FORMAT_VERSION: u32 = 3;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_WORD: &str = "syncbase-layout";
const STORES_DIR: &str = "stores";
const SERVICE_STORE: &str = "service";
const DATABASE_STORE_PREFIX: &str = "db_";

/// A copy into the new layout commits at about this many bytes.
const MIGRATION_COMMIT_BYTES: usize = 4 << 20;

/// Opens the stores of a layout on the engine of the caller's choice.
pub trait StoreSetOpener: Send + Sync {
    /// Opens (creating if needed) the set of stores kept in directory `dir`.
    fn open_set(&self, dir: &Path) -> syncbase_store::Result<Arc<dyn StoreSet>>;

    /// Opens the store that layout 1 kept alone in directory `dir`, to migrate it; `None` when
    /// the engine keeps nothing on disk.
    fn open_layout_1_store(&self, dir: &Path) -> syncbase_store::Result<Option<Arc<dyn Store>>>;
}

/// The memory engine's opener: each open gives a fresh, empty set, and there is nothing of
/// layout 1 to migrate.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStoreSetOpener;

impl StoreSetOpener for MemoryStoreSetOpener {
    fn open_set(&self, _dir: &Path) -> syncbase_store::Result<Arc<dyn StoreSet>> {
        Ok(Arc::new(MemStoreSet::new()))
    }

    fn open_layout_1_store(&self, _dir: &Path) -> syncbase_store::Result<Option<Arc<dyn Store>>> {
        Ok(None)
    }
}

/// Opens a set the caller already holds, whatever the root (an embedder's own set; tests that
/// reopen a service on the same in-memory set). There is nothing of layout 1 to migrate.
#[derive(Clone)]
pub struct GivenSetOpener(pub Arc<dyn StoreSet>);

impl StoreSetOpener for GivenSetOpener {
    fn open_set(&self, _dir: &Path) -> syncbase_store::Result<Arc<dyn StoreSet>> {
        Ok(self.0.clone())
    }

    fn open_layout_1_store(&self, _dir: &Path) -> syncbase_store::Result<Option<Arc<dyn Store>>> {
        Ok(None)
    }
}

/// The stores of one service's data.
pub struct StoreLayout {
    root: PathBuf,
    stores: Arc<dyn StoreSet>,
}

impl std::fmt::Debug for StoreLayout {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoreLayout")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl StoreLayout {
    /// Opens (creating if needed) the layout under `root` with `opener`'s engine: stamps the
    /// format on a new root, migrates a root of layout 1, and refuses a root of a newer format.
    pub fn open(root: &Path, opener: &dyn StoreSetOpener) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(StoreError::Io)?;
        let format_path = root.join(FORMAT_FILE);
        let found = match std::fs::read_to_string(&format_path) {
            Ok(text) => Some(
                text.trim()
                    .strip_prefix(FORMAT_WORD)
                    .and_then(|rest| rest.trim().parse::<u32>().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{} does not hold a layout version",
                            format_path.display()
                        ))
                    })?,
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(StoreError::Io(error).into()),
        };
        if let Some(found) = found
            && found > LAYOUT_FORMAT_VERSION
        {
            return Err(StoreError::FormatTooNew {
                found,
                supported: LAYOUT_FORMAT_VERSION,
            }
            .into());
        }
        let stores = opener.open_set(&root.join(STORES_DIR))?;
        let layout = Self {
            root: root.to_path_buf(),
            stores,
        };
        if found == Some(1) {
            layout.migrate_from_layout_1(opener)?;
        }
        if found != Some(LAYOUT_FORMAT_VERSION) {
            write_atomically(
                &format_path,
                format!("{FORMAT_WORD} {LAYOUT_FORMAT_VERSION}\n").as_bytes(),
            )?;
        }
        Ok(layout)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The set holding every store of the layout.
    pub fn stores(&self) -> &Arc<dyn StoreSet> {
        &self.stores
    }

    /// The service store.
    pub fn service_store(&self) -> Result<Arc<dyn Store>> {
        Ok(self.stores.open(SERVICE_STORE)?)
    }

    /// Database `id`'s store, created empty if absent.
    pub fn database_store(&self, id: u64) -> Result<Arc<dyn Store>> {
        Ok(self.stores.open(&database_store_name(id))?)
    }

    /// Destroys database `id`'s store: after a crash at any point it is whole or gone.
    pub fn destroy_database(&self, id: u64) -> Result<()> {
        Ok(self.stores.destroy(&database_store_name(id))?)
    }

    /// The ids of the database stores present.
    pub fn database_ids(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self
            .stores
            .names()?
            .iter()
            .filter_map(|name| name.strip_prefix(DATABASE_STORE_PREFIX))
            .filter_map(|id| u64::from_str_radix(id, 16).ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Makes every commit so far durable, relaxed ones included.
    pub fn persist(&self) -> Result<()> {
        Ok(self.stores.persist()?)
    }

    /// Closes every store and the set.
    pub fn close(&self) -> Result<()> {
        Ok(self.stores.close()?)
    }

    /// Copies every store of layout 1 into the set, removing each directory once copied.
    fn migrate_from_layout_1(&self, opener: &dyn StoreSetOpener) -> Result<()> {
        let trash = self.root.join("trash");
        remove_dir_contents(&trash)?;
        let mut old = vec![(SERVICE_STORE.to_string(), self.root.join("service"))];
        let databases = self.root.join("databases");
        if databases.is_dir() {
            for entry in std::fs::read_dir(&databases).map_err(StoreError::Io)? {
                let entry = entry.map_err(StoreError::Io)?;
                let name = entry.file_name();
                if let Some(id) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) {
                    old.push((database_store_name(id), entry.path()));
                }
            }
        }
        for (name, dir) in old {
            if !dir.is_dir() {
                continue;
            }
            match opener.open_layout_1_store(&dir)? {
                Some(source) => {
                    // A copy a crash interrupted starts over.
                    self.stores.destroy(&name)?;
                    copy_store(source.as_ref(), self.stores.open(&name)?.as_ref())?;
                    // The copy is on disk (whatever the durability of its commits) before the
                    // source is removed.
                    self.stores.persist()?;
                    source.close()?;
                }
                // An engine that keeps nothing on disk cannot read what another one wrote: the
                // directory is removed only when it holds nothing.
                None if dir_holds_files(&dir)? => {
                    return Err(StoreError::Misuse(format!(
                        "{} holds data of layout 1 that this engine cannot migrate; open the \
                         root once with the persistent engine",
                        dir.display()
                    ))
                    .into());
                }
                None => {}
            }
            // Moved first (atomic), so a crash never leaves a half-removed store to copy.
            std::fs::create_dir_all(&trash).map_err(StoreError::Io)?;
            let doomed = trash.join(&name);
            std::fs::rename(&dir, &doomed).map_err(StoreError::Io)?;
            std::fs::remove_dir_all(&doomed).map_err(StoreError::Io)?;
        }
        for dir in [databases, trash] {
            if dir.is_dir() {
                std::fs::remove_dir_all(&dir).map_err(StoreError::Io)?;
            }
        }
        Ok(())
    }
}

fn database_store_name(id: u64) -> String {
    format!("{DATABASE_STORE_PREFIX}{id:016x}")
}

/// Copies every key of `source` into `target`, in commits of about
/// [`MIGRATION_COMMIT_BYTES`].
fn copy_store(source: &dyn Store, target: &dyn Store) -> Result<()> {
    let snapshot = source.snapshot()?;
    let mut transaction: Option<Box<dyn Transaction>> = None;
    let mut pending = 0;
    for entry in snapshot.scan(b"", b"")? {
        let (key, value) = entry?;
        if transaction.is_none() {
            transaction = Some(target.transaction()?);
        }
        if let Some(open) = &transaction {
            open.put(&key, &value)?;
        }
        pending += key.len() + value.len();
        if pending >= MIGRATION_COMMIT_BYTES
            && let Some(full) = transaction.take()
        {
            full.commit()?;
            pending = 0;
        }
    }
    if let Some(last) = transaction {
        last.commit()?;
    }
    snapshot.abort()?;
    Ok(())
}

/// Whether `dir` or any directory below it holds a file.
fn dir_holds_files(dir: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(dir).map_err(StoreError::Io)? {
        let entry = entry.map_err(StoreError::Io)?;
        let path = entry.path();
        if !path.is_dir() || dir_holds_files(&path)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_dir_contents(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(StoreError::Io)? {
        let path = entry.map_err(StoreError::Io)?.path();
        std::fs::remove_dir_all(&path).map_err(StoreError::Io)?;
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(StoreError::Io)?;
    file.write_all(bytes).map_err(StoreError::Io)?;
    file.sync_all().map_err(StoreError::Io)?;
    std::fs::rename(&temporary, path).map_err(StoreError::Io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(StoreError::Io)?;
    }
    Ok(())
}
