//! `syncbase-server`: the service (owner of the service store and the sync engine), the
//! dispatcher and, later, the `syncbased` daemon (mirrors Go `server/service.go` and
//! `dispatcher.go`).
//!
//! Status: today it holds only engine selection: opening a store in a directory of the
//! [`StoreLayout`](syncbase_util::StoreLayout) on the persistent engine (fjall, the default) or in
//! memory. The service issue adds the rest. It may depend on every layer below it, and never on a
//! client.

use std::path::Path;
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;
    use syncbase_util::StoreLayout;

    #[test]
    fn the_service_and_each_database_get_their_own_store() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StoreLayout::open(dir.path()).unwrap();
        let service = open_store(
            EngineKind::Persistent,
            &layout.service_dir(),
            Durability::Durable,
        )
        .unwrap();
        let database = open_store(
            EngineKind::Persistent,
            &layout.database_dir(7),
            Durability::Durable,
        )
        .unwrap();
        service.put(b"k", b"service").unwrap();
        database.put(b"k", b"database").unwrap();
        database.close().unwrap();
        assert!(layout.database_dir(7).join(STORE_DIR_NAME).is_dir());
        layout.destroy_database(7).unwrap();
        let reopened = open_store(
            EngineKind::Persistent,
            &layout.database_dir(7),
            Durability::Durable,
        )
        .unwrap();
        assert_eq!(reopened.get(b"k").unwrap(), None);
        assert_eq!(service.get(b"k").unwrap(), Some(b"service".to_vec()));
        let memory = open_store(
            EngineKind::Memory,
            &layout.database_dir(8),
            Durability::Relaxed,
        )
        .unwrap();
        memory.put(b"k", b"v").unwrap();
        assert!(!layout.database_dir(8).exists());
    }
}
