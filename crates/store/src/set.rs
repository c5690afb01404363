//! Sets of named stores that share one engine instance: one directory, one journal, one set of
//! background threads and one cache of open files for a service store and any number of
//! database stores (the Go daemon opened one LevelDB per database, which made threads and
//! descriptors grow with the number of databases). [`MemStoreSet`] is the in-memory set.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::memstore::{MemStore, open_memstore};
use crate::model::Store;

/// The longest store name a set accepts (spelled out in [`StoreSet::open`]'s doc).
pub(crate) const STORE_NAME_BYTES_MAX: usize = 64;

/// Named stores in one engine instance. Each name is opened once: opening an open store returns
/// the same store, so its transactions share one commit queue.
pub trait StoreSet: Send + Sync {
    /// The store `name`, created empty if absent. Names are 1 to 64 bytes of lowercase ASCII
    /// letters, digits and `_` ([`validate_store_name`]). A store its user closed is opened anew
    /// (with its data, on an engine that keeps data on disk).
    fn open(&self, name: &str) -> Result<Arc<dyn Store>>;

    /// Destroys the store `name` and its data, closing it first if open. A crash at any point
    /// leaves the store either whole or gone, never partly destroyed. Destroying an absent
    /// store is not an error.
    fn destroy(&self, name: &str) -> Result<()>;

    /// The names of the stores the set holds, sorted.
    fn names(&self) -> Result<Vec<String>>;

    /// Makes every commit so far durable, relaxed ones included.
    fn persist(&self) -> Result<()>;

    /// Closes every open store and then the set, persisting what relaxed commits left pending.
    /// Closing twice is not an error.
    fn close(&self) -> Result<()>;
}

/// Refuses a store name a set does not accept, with [`Error::Misuse`].
pub fn validate_store_name(name: &str) -> Result<()> {
    let well_formed = !name.is_empty()
        && name.len() <= STORE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(Error::Misuse(format!(
            "store name {name:?} is not 1 to {STORE_NAME_BYTES_MAX} bytes of a-z, 0-9 and _"
        )))
    }
}

/// A set of in-memory stores: everything is gone when the set is dropped, and a store's data
/// when it is closed.
#[derive(Default)]
pub struct MemStoreSet {
    /// `None` once closed.
    stores: Mutex<Option<BTreeMap<String, Arc<MemStore>>>>,
}

impl MemStoreSet {
    /// An empty, open set.
    pub fn new() -> Self {
        Self {
            stores: Mutex::new(Some(BTreeMap::new())),
        }
    }
}

impl StoreSet for MemStoreSet {
    fn open(&self, name: &str) -> Result<Arc<dyn Store>> {
        validate_store_name(name)?;
        let mut guard = self.stores.lock();
        let stores = guard.as_mut().ok_or(Error::StoreClosed)?;
        let store = stores
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(open_memstore()));
        if store.is_closed() {
            *store = Arc::new(open_memstore());
        }
        Ok(store.clone())
    }

    fn destroy(&self, name: &str) -> Result<()> {
        validate_store_name(name)?;
        let removed = {
            let mut guard = self.stores.lock();
            guard.as_mut().ok_or(Error::StoreClosed)?.remove(name)
        };
        match removed {
            Some(store) => store.close(),
            None => Ok(()),
        }
    }

    fn names(&self) -> Result<Vec<String>> {
        let guard = self.stores.lock();
        Ok(guard
            .as_ref()
            .ok_or(Error::StoreClosed)?
            .keys()
            .cloned()
            .collect())
    }

    fn persist(&self) -> Result<()> {
        // Memory keeps nothing past the process: there is nothing more to make durable.
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let Some(stores) = self.stores.lock().take() else {
            return Ok(());
        };
        for store in stores.into_values() {
            store.close()?;
        }
        Ok(())
    }
}
