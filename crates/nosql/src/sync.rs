//! The data model's side of sync (mirrors Go `server/nosql/database_sgm.go` and the parts of
//! `vsync` that reach into the data model): the database-level syncgroup calls, which check the
//! caller and delegate to `syncbase_vsync::syncgroup`, and the implementation of
//! [`syncbase_vsync::service::DataModel`], through which sync opens databases without a client
//! caller, asks who may read a collection, finds the databases with syncgroups, and hears when
//! one closes.
//!
//! A service keeps a registry of its databases with syncgroups in its own store
//! (`$service synced APP DB`), so finding them opens nothing.

use std::sync::Arc;

use syncbase_store::{Clock, Origin, Store, StoreReader, Stored, Transaction, Version, Watchable};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{decode_typed, put_typed};
use syncbase_vsync::service::{ClosedListener, DataModel};
use syncbase_vsync::syncgroup::{self, JoinAnswer, Syncgroup};
use syncbase_vsync::watcher;
use syncbase_wire::{DatabasePath, Tag, validate_existing_name, validate_name};

use crate::auth::{Caller, Need, Walk};
use crate::database::{CollectionData, read_collection};
use crate::error::{Error, Result};
use crate::service::Service;

fn registry_key(path: &DatabasePath) -> Vec<u8> {
    keys::key(
        Prefix::Service,
        &[b"synced", path.app.as_bytes(), path.database.as_bytes()],
    )
}

fn syncgroup_what(path: &DatabasePath, name: &str) -> String {
    format!("syncgroup {name:?} of {}/{}", path.app, path.database)
}

impl Service {
    /// Creates a syncgroup of a database: Write on the database and Read on each of its
    /// collections (which must exist). The syncgroup starts with `syncgroup.members`; what the
    /// collections hold becomes this device's log records, and sync follows the database's log
    /// from then on, all in one commit.
    pub fn create_syncgroup(
        &self,
        caller: &Caller,
        path: &DatabasePath,
        syncgroup: &Syncgroup,
    ) -> Result<()> {
        validate_name(&syncgroup.name)?;
        if syncgroup.collections.is_empty() {
            return Err(Error::wire(
                syncbase_wire::codes::INVALID_NAME,
                "a syncgroup shares at least one collection",
            ));
        }
        let database = self.database_with_tag(caller, path, Tag::Write)?;
        self.record_syncgroup(&database, path, Some(caller), syncgroup)
    }

    /// Stores `syncgroup` in `database` (refused if it has one of that name), records what its
    /// collections hold, and lists the database as synced. With `caller`, each collection must
    /// grant it Read.
    fn record_syncgroup(
        &self,
        database: &crate::Database,
        path: &DatabasePath,
        caller: Option<&Caller>,
        syncgroup: &Syncgroup,
    ) -> Result<()> {
        let store = database.store();
        let internal = Caller::new("");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let from_seq = store.latest_log_seq() + 1;
            let transaction = store.begin(Origin::default())?;
            for collection in &syncgroup.collections {
                let walk = match caller {
                    Some(caller) => Walk::new(caller),
                    None => Walk::internal(&internal),
                };
                database.collection_data(&transaction, &walk, collection, Need::Tag(Tag::Read))?;
            }
            if syncgroup::syncgroup(&transaction, &syncgroup.name)?.is_some() {
                return Err(Error::exist(syncgroup_what(path, &syncgroup.name)));
            }
            syncgroup::put_syncgroup(&transaction, syncgroup)?;
            // What the collections already hold syncs like any later write.
            watcher::adopt_existing(
                &transaction,
                &syncgroup.collections,
                self.device_id(),
                self.log_clock().now_ns(),
                from_seq,
            )?;
            // The registry before the database's commit (idempotent): a crash between them
            // leaves a database listed with no syncgroup, which sync skips, never a syncgroup
            // that is not listed.
            put_typed(self.service_store(), &registry_key(path), &())?;
            match transaction.commit() {
                Err(syncbase_store::Error::ConcurrentTransaction) if attempt < 8 => continue,
                outcome => return Ok(outcome?),
            }
        }
    }

    /// Joins, on this service, a syncgroup a member described (`syncgroup`, with the shared
    /// collections' permissions there): the caller needs Write on the database; a missing app,
    /// database or collection is created (collections with the member's permissions, the rest
    /// with the caller's defaults). Rows already here become this device's records and meet the
    /// member's as concurrent writes do.
    pub fn join_syncgroup(
        &self,
        caller: &Caller,
        path: &DatabasePath,
        syncgroup: &Syncgroup,
        collections: &[(String, syncbase_wire::Permissions)],
    ) -> Result<()> {
        if !self.app_exists(caller, &path.app)? {
            self.create_app(caller, &path.app, None)?;
        }
        if !self.database_exists(caller, path)? {
            self.create_database(caller, path, None)?;
        }
        let database = self.database_with_tag(caller, path, Tag::Write)?;
        for (collection, permissions) in collections {
            if !database.collection_exists(caller, collection)? {
                database.create_collection(caller, collection, Some(permissions.clone()))?;
            }
        }
        self.record_syncgroup(&database, path, None, syncgroup)
    }

    /// A syncgroup of a database, read for sync (no caller; `None` when either is missing).
    pub fn syncgroup_for_sync(&self, path: &DatabasePath, name: &str) -> Result<Option<Syncgroup>> {
        let internal = Caller::new("");
        let database = match self.open_database_as(&Walk::internal(&internal), path) {
            Ok(database) => database,
            Err(error) if error.is_no_exist() => return Ok(None),
            Err(error) => return Err(error),
        };
        let snapshot = database.store().versioned_snapshot()?;
        Ok(syncgroup::syncgroup(&snapshot, name)?)
    }

    /// Adds `member` (reached at `address`) to a syncgroup, for sync (the caller checked the
    /// syncgroup admits it); returns the record with the shared collections' permissions.
    pub fn add_syncgroup_member(
        &self,
        path: &DatabasePath,
        name: &str,
        member: &str,
        address: Option<&str>,
    ) -> Result<Option<JoinAnswer>> {
        let internal = Caller::new("");
        let database = self.open_database_as(&Walk::internal(&internal), path)?;
        let store = database.store();
        let record = crate::transact::transact(store.as_ref(), |transaction| {
            Ok(syncgroup::add_member(transaction, name, member, address)?)
        })?;
        let Some(record) = record else {
            return Ok(None);
        };
        let snapshot = store.versioned_snapshot()?;
        let mut collections = Vec::new();
        for collection in &record.collections {
            if let Some(data) = read_collection(&snapshot as &dyn StoreReader, collection)?
                && !data.destroyed
            {
                collections.push((collection.clone(), data.permissions));
            }
        }
        Ok(Some(JoinAnswer {
            syncgroup: record,
            collections,
        }))
    }

    /// The names of a database's syncgroups (Read on the database).
    pub fn list_syncgroups(&self, caller: &Caller, path: &DatabasePath) -> Result<Vec<String>> {
        let database = self.database_with_tag(caller, path, Tag::Read)?;
        let snapshot = database.store().versioned_snapshot()?;
        Ok(syncgroup::syncgroups(&snapshot)?
            .into_iter()
            .map(|syncgroup| syncgroup.name)
            .collect())
    }

    /// One syncgroup of a database (Read on the database); a missing one is `nosql.no_exist`.
    pub fn get_syncgroup(
        &self,
        caller: &Caller,
        path: &DatabasePath,
        name: &str,
    ) -> Result<Syncgroup> {
        validate_existing_name(name)?;
        let database = self.database_with_tag(caller, path, Tag::Read)?;
        let snapshot = database.store().versioned_snapshot()?;
        syncgroup::syncgroup(&snapshot, name)?
            .ok_or_else(|| Error::no_exist(syncgroup_what(path, name)))
    }

    /// Forgets that a database has syncgroups (it was destroyed).
    pub(crate) fn forget_synced(&self, path: &DatabasePath) -> Result<()> {
        Ok(self.service_store().delete(&registry_key(path))?)
    }
}

impl DataModel for Service {
    type Store = Arc<dyn Store>;

    fn databases_with_syncgroups(&self) -> syncbase_vsync::Result<Vec<(String, String)>> {
        let prefix = keys::key_prefix(Prefix::Service, &[b"synced"], b"");
        let (start, limit) = keys::prefix_range(&prefix);
        let mut found = Vec::new();
        for entry in self.service_store().scan(&start, &limit)? {
            let (key, _) = entry?;
            let (_, components) = keys::parse(&key)?;
            if let [_, app, database] = &components[..] {
                found.push((
                    String::from_utf8_lossy(app).into_owned(),
                    String::from_utf8_lossy(database).into_owned(),
                ));
            }
        }
        Ok(found)
    }

    fn open_for_sync(
        &self,
        app: &str,
        database: &str,
    ) -> syncbase_vsync::Result<Arc<Watchable<Self::Store>>> {
        let path = DatabasePath {
            app: app.to_string(),
            database: database.to_string(),
        };
        let sync = Caller::new("");
        let opened = self
            .open_database_as(&Walk::internal(&sync), &path)
            .map_err(to_sync_error)?;
        Ok(opened.store().clone())
    }

    fn may_read(
        &self,
        app: &str,
        database: &str,
        collection: &str,
        principal: &str,
        at: Option<Version>,
    ) -> syncbase_vsync::Result<bool> {
        let store = self.open_for_sync(app, database)?;
        let snapshot = store.versioned_snapshot()?;
        let key = keys::key(Prefix::Collection, &[collection.as_bytes()]);
        let as_of = match at {
            Some(version) => match snapshot.get_at_version(&key, version)? {
                Some(Stored::Value(bytes)) => Some(decode_typed::<CollectionData>(&key, &bytes)?),
                _ => None,
            },
            None => None,
        };
        // A collection destroyed since is read by nobody, whatever an older version said.
        let current = read_collection(&snapshot as &dyn StoreReader, collection)
            .map_err(to_sync_error)?
            .filter(|data| !data.destroyed);
        let Some(current) = current else {
            return Ok(false);
        };
        let data = as_of.unwrap_or(current);
        Ok(!data.destroyed && data.permissions.grants(Tag::Read, principal))
    }

    fn on_database_closed(&self, listener: ClosedListener) {
        self.add_closed_listener(listener);
    }
}

/// A data-model error met on sync's behalf, as the sync engine reports it.
fn to_sync_error(error: Error) -> syncbase_vsync::Error {
    match error {
        Error::Store(error) => syncbase_vsync::Error::Store(error),
        Error::Util(error) => syncbase_vsync::Error::Util(error),
        Error::Sync(error) => error,
        Error::Wire(error) => syncbase_vsync::Error::Model {
            code: error.code.clone(),
            message: error.message.clone(),
        },
    }
}
