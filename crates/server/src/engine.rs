//! Engine selection: the persistent engine (fjall, the default) or memory, as the opener of a
//! service's set of stores.

use std::path::Path;
use std::sync::Arc;

use syncbase_nosql::{MemoryStoreSetOpener, StoreSetOpener};
use syncbase_store::{Durability, Store, StoreSet};
use syncbase_store_fjall::{FjallOptions, FjallStoreSet};

/// The name of a store's directory inside its directory of layout 1 (read when migrating).
pub const STORE_DIR_NAME: &str = "store";

/// Which storage engine holds the service's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// The persistent embedded engine (fjall). The default.
    #[default]
    Persistent,
    /// Memory only: everything is lost when the process ends. For tests and caches.
    Memory,
}

impl EngineKind {
    /// The name `syncbased --engine` takes and `sb status` prints.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Persistent => "persistent",
            EngineKind::Memory => "memory",
        }
    }
}

/// A [`StoreSetOpener`] for an engine and durability.
#[derive(Debug, Clone, Copy)]
pub struct EngineOpener {
    /// The engine.
    pub engine: EngineKind,
    /// The durability of commits.
    pub durability: Durability,
    /// The most table files the persistent engine keeps open at once, for all databases
    /// together.
    pub max_open_files: usize,
}

impl EngineOpener {
    /// An opener with the engine's default cache of open files.
    pub fn new(engine: EngineKind, durability: Durability) -> Self {
        Self {
            engine,
            durability,
            max_open_files: FjallOptions::MAX_OPEN_FILES_DEFAULT,
        }
    }
}

impl StoreSetOpener for EngineOpener {
    fn open_set(&self, dir: &Path) -> syncbase_store::Result<Arc<dyn StoreSet>> {
        match self.engine {
            EngineKind::Persistent => Ok(Arc::new(FjallStoreSet::open_dir(
                dir,
                FjallOptions {
                    durability: self.durability,
                    max_open_files: self.max_open_files,
                },
            )?)),
            EngineKind::Memory => MemoryStoreSetOpener.open_set(dir),
        }
    }

    fn open_layout_1_store(&self, dir: &Path) -> syncbase_store::Result<Option<Arc<dyn Store>>> {
        let path = dir.join(STORE_DIR_NAME);
        match self.engine {
            EngineKind::Persistent if path.is_dir() => Ok(Some(Arc::new(
                syncbase_store_fjall::open(&path, self.durability)?,
            ))),
            _ => Ok(None),
        }
    }
}
