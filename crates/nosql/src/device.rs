//! Device-level reads of a database, for the sync engine: it acts for the device, not for a
//! client, so these reads check no permissions. No client call reaches them: every call the
//! service dispatches goes through a method that takes a [`Caller`](crate::Caller) and checks
//! it.

use syncbase_store::StoreReader;
use syncbase_util::keys;
use syncbase_wire::{RowRange, validate_existing_name, validate_row_key};

use crate::database::{CollectionData, Database, DbSnapshot, RowStream, read_collection};
use crate::error::Result;

/// A consistent view of one database as the device holds it: every collection record (tombstones
/// included) and every row, whatever their permissions say. It holds a snapshot, released when
/// the reader is dropped.
pub struct DeviceReader {
    snapshot: DbSnapshot,
}

impl Database {
    /// A device-level reader of this database as of now. It checks no permissions, so only code
    /// that acts for the device (the sync engine) may use it; no client call does.
    pub fn device_reader(&self) -> Result<DeviceReader> {
        Ok(DeviceReader {
            snapshot: self.store().versioned_snapshot()?,
        })
    }
}

impl DeviceReader {
    /// The position in the database's watch log this view is as of: later commits are in the
    /// log entries after it.
    pub fn log_position(&self) -> Result<u64> {
        Ok(self.snapshot.log_position()?)
    }

    /// A collection's record (its permissions, and whether it was destroyed), or `None` when it
    /// has none.
    pub fn collection(&self, collection: &str) -> Result<Option<CollectionData>> {
        validate_existing_name(collection)?;
        read_collection(&self.snapshot, collection)
    }

    /// A row's value, or `None` when the row is absent.
    pub fn get(&self, collection: &str, key: &str) -> Result<Option<Vec<u8>>> {
        validate_existing_name(collection)?;
        validate_row_key(key)?;
        Ok(self.snapshot.get(&keys::row(collection, key.as_bytes()))?)
    }

    /// The rows of a collection's range, in key order.
    pub fn scan(&self, collection: &str, range: &RowRange) -> Result<RowStream> {
        validate_existing_name(collection)?;
        let (start, limit) = Database::range_keys(collection, range);
        Ok(RowStream::new(self.snapshot.scan(&start, &limit)?))
    }
}
