//! The on-disk layout of a service (mirrors Go `server/db_info.go` and `db_gc.go`): a root
//! directory with a format stamp, one service store, and one directory per database, named by a
//! numeric id the service allocates (names can be 1 KiB, too long for file names), so a database
//! is destroyed by removing its directory and has its own watch log.
//!
//! ```text
//! ROOT/FORMAT            "syncbase-layout <version>"
//! ROOT/service/          the service store
//! ROOT/databases/<id>/   one store per database (id as 16 hex digits)
//! ROOT/trash/            databases being destroyed (emptied at open)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use syncbase_store::Error as StoreError;

use crate::error::Result;

/// The newest layout format this build reads and writes.
pub const LAYOUT_FORMAT_VERSION: u32 = 1;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_WORD: &str = "syncbase-layout";

/// The directories of one service's data.
#[derive(Debug, Clone)]
pub struct StoreLayout {
    root: PathBuf,
}

impl StoreLayout {
    /// Opens (creating if needed) the layout under `root`: stamps the format on a new root,
    /// refuses a root of a newer format, and finishes destroying databases a crash interrupted.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(StoreError::Io)?;
        let format_path = root.join(FORMAT_FILE);
        match std::fs::read_to_string(&format_path) {
            Ok(text) => {
                let found = text
                    .trim()
                    .strip_prefix(FORMAT_WORD)
                    .and_then(|rest| rest.trim().parse::<u32>().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{} does not hold a layout version",
                            format_path.display()
                        ))
                    })?;
                if found > LAYOUT_FORMAT_VERSION {
                    return Err(StoreError::FormatTooNew {
                        found,
                        supported: LAYOUT_FORMAT_VERSION,
                    }
                    .into());
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(
                    &format_path,
                    format!("{FORMAT_WORD} {LAYOUT_FORMAT_VERSION}\n").as_bytes(),
                )?;
            }
            Err(error) => return Err(StoreError::Io(error).into()),
        }
        let layout = Self {
            root: root.to_path_buf(),
        };
        for dir in [
            layout.service_dir(),
            layout.databases_dir(),
            layout.trash_dir(),
        ] {
            std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        }
        layout.empty_trash()?;
        Ok(layout)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the service store.
    pub fn service_dir(&self) -> PathBuf {
        self.root.join("service")
    }

    /// The directory of database `id`'s store.
    pub fn database_dir(&self, id: u64) -> PathBuf {
        self.databases_dir().join(format!("{id:016x}"))
    }

    /// Destroys database `id`'s files: moves the directory to the trash (atomic), then removes
    /// it. A crash in between leaves it in the trash, which the next open empties.
    pub fn destroy_database(&self, id: u64) -> Result<()> {
        let source = self.database_dir(id);
        if !source.exists() {
            return Ok(());
        }
        let target = self.trash_dir().join(format!("{id:016x}"));
        std::fs::rename(&source, &target).map_err(StoreError::Io)?;
        std::fs::remove_dir_all(&target).map_err(StoreError::Io)?;
        Ok(())
    }

    /// The ids of the database directories present on disk.
    pub fn database_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.databases_dir()).map_err(StoreError::Io)? {
            let name = entry.map_err(StoreError::Io)?.file_name();
            if let Some(id) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn databases_dir(&self) -> PathBuf {
        self.root.join("databases")
    }

    fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    fn empty_trash(&self) -> Result<()> {
        for entry in std::fs::read_dir(self.trash_dir()).map_err(StoreError::Io)? {
            let path = entry.map_err(StoreError::Io)?.path();
            std::fs::remove_dir_all(&path).map_err(StoreError::Io)?;
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(StoreError::Io)?;
    file.write_all(bytes).map_err(StoreError::Io)?;
    file.sync_all().map_err(StoreError::Io)?;
    std::fs::rename(&temporary, path).map_err(StoreError::Io)?;
    Ok(())
}
