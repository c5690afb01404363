//! Engine selection: the persistent engine (fjall, the default) or memory.

use std::path::Path;
use std::sync::Arc;

use syncbase_nosql::StoreOpener;
use syncbase_store::{Durability, Store};

/// The name of a store's directory inside its layout directory.
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

/// Opens the store kept in `dir` (created if needed) on `engine` with `durability`.
pub fn open_store(
    engine: EngineKind,
    dir: &Path,
    durability: Durability,
) -> syncbase_store::Result<Arc<dyn Store>> {
    Ok(match engine {
        EngineKind::Persistent => Arc::new(syncbase_store_fjall::open(
            &dir.join(STORE_DIR_NAME),
            durability,
        )?),
        EngineKind::Memory => Arc::new(syncbase_store::open_memstore()),
    })
}

/// A [`StoreOpener`] for an engine and durability.
pub struct EngineOpener {
    /// The engine.
    pub engine: EngineKind,
    /// The durability of commits.
    pub durability: Durability,
}

impl StoreOpener for EngineOpener {
    fn open(&self, dir: &Path) -> syncbase_store::Result<Arc<dyn Store>> {
        open_store(self.engine, dir, self.durability)
    }
}
