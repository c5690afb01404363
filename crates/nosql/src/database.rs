//! A database: collections, rows and batches (mirrors Go `server/nosql/database.go`,
//! `collection.go` and `row.go`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use syncbase_store::{
    Clock, Origin, Pruner, Retention, Rng, Snapshot, Store, StoreReader, StoreWriter, Stream,
    Transaction, Watchable, WatchableOptions, WatchableSnapshot, WatchableTransaction,
};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{decode_typed, get_typed, put_typed};
use syncbase_wire::{
    BatchHandle, BatchOptions, DatabasePath, LogPin, LogStatus, Permissions, RowRange, Tag, codes,
    validate_existing_name, validate_name, validate_row_key, validate_value,
};

use crate::auth::{Caller, Need, Walk};
use crate::error::{Error, Result, exists};
use crate::transact::transact_with;

type Inner = Arc<dyn Store>;
type DbTransaction = WatchableTransaction<Inner>;
pub(crate) type DbSnapshot = WatchableSnapshot<Inner>;

/// A collection's record. A destroyed collection keeps a tombstone (its last permissions), so
/// a watch can still tell who may see the deletes of its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CollectionData {
    /// Who may do what with the collection (its last permissions, once destroyed).
    pub permissions: Permissions,
    /// Whether the collection was destroyed (the record is its tombstone).
    pub destroyed: bool,
}

/// What a [`Database`] needs besides its store. A service builds it from its own options
/// ([`ServiceOptions::database_options`](crate::ServiceOptions::database_options)).
#[derive(Clone)]
pub struct DatabaseOptions {
    /// Time for timeouts (batch expiry): the plain clock, so a peer's fast clock cannot expire
    /// batches.
    pub clock: Arc<dyn Clock>,
    /// Timestamps of the watch log: the service's hybrid logical clock, which never goes
    /// backwards (across restarts too) and follows the latest time seen from peers.
    pub log_clock: Arc<dyn Clock>,
    /// Ids (versions, batch handles).
    pub rng: Arc<dyn Rng>,
    /// Idle time after which an abandoned batch is aborted.
    pub batch_idle_timeout_ns: u64,
    /// The service's device id, recorded in the log entry of every commit.
    pub device_id: u64,
    /// How much of the watch log to keep.
    pub log_retention: Retention,
    /// Where the watch log is pruned in the background (shared by a service's databases);
    /// without one, the log is pruned only when asked.
    pub pruner: Option<Pruner>,
}

enum BatchKind {
    ReadWrite(Arc<DbTransaction>),
    ReadOnly(Arc<DbSnapshot>),
}

impl Clone for BatchKind {
    fn clone(&self) -> Self {
        match self {
            BatchKind::ReadWrite(transaction) => BatchKind::ReadWrite(transaction.clone()),
            BatchKind::ReadOnly(snapshot) => BatchKind::ReadOnly(snapshot.clone()),
        }
    }
}

struct BatchEntry {
    kind: BatchKind,
    caller: String,
    last_used_ns: u64,
}

/// One database of a service.
pub struct Database {
    path: DatabasePath,
    store: Arc<Watchable<Inner>>,
    /// Recorded as the device of every local commit.
    device_id: u64,
    /// How much of the watch log is kept.
    log_retention: Retention,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    batch_idle_timeout_ns: u64,
    batches: Mutex<HashMap<u64, BatchEntry>>,
    /// Set before the service closes this database because it was destroyed (rather than
    /// because the service is closing), so a watch can say so.
    destroyed: AtomicBool,
}

fn collection_key(collection: &str) -> Vec<u8> {
    keys::key(Prefix::Collection, &[collection.as_bytes()])
}

fn collection_what(collection: &str) -> String {
    format!("collection {collection:?}")
}

/// Rows of a scan, in key order.
pub struct RowStream {
    inner: Stream,
}

impl RowStream {
    pub(crate) fn new(inner: Stream) -> Self {
        Self { inner }
    }
}

impl Iterator for RowStream {
    type Item = Result<(String, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = match self.inner.next()? {
            Ok(entry) => entry,
            Err(error) => return Some(Err(error.into())),
        };
        Some(decode_row_key(&key).map(|(_, row)| (row, value)))
    }
}

/// Splits a row's storage key into its collection and row key.
pub(crate) fn decode_row_key(key: &[u8]) -> Result<(String, String)> {
    let [collection, row] = parse_names(key, Prefix::Row)?;
    Ok((collection, row))
}

/// The `N` names a stored key of kind `prefix` holds (an app's name; a database's app and
/// name; ...). A key of another kind, with another number of names, or with a name that is
/// not UTF-8 is corrupt (`store.corrupt`): no record is skipped or read under a made-up name.
pub(crate) fn parse_names<const N: usize>(key: &[u8], prefix: Prefix) -> Result<[String; N]> {
    let corrupt = || {
        Error::Store(syncbase_store::Error::Corrupt(format!(
            "{key:?} is not a {} key of {N} UTF-8 names",
            prefix.name()
        )))
    };
    let (found, parts) = keys::parse(key)?;
    if found != prefix {
        return Err(corrupt());
    }
    let parts = <[Vec<u8>; N]>::try_from(parts).map_err(|_| corrupt())?;
    let mut names: [String; N] = std::array::from_fn(|_| String::new());
    for (name, part) in names.iter_mut().zip(parts) {
        *name = String::from_utf8(part).map_err(|_| corrupt())?;
    }
    Ok(names)
}

/// A collection's record as `reader` sees it (a tombstone included), checking no permissions.
pub(crate) fn read_collection(
    reader: &dyn StoreReader,
    collection: &str,
) -> Result<Option<CollectionData>> {
    Ok(get_typed(reader, &collection_key(collection))?)
}

/// Where a call reads: a fresh snapshot, or a batch.
enum Reader {
    Snapshot(DbSnapshot),
    Batch(BatchKind),
}

impl Reader {
    fn as_reader(&self) -> &dyn StoreReader {
        match self {
            Reader::Snapshot(snapshot) => snapshot,
            Reader::Batch(BatchKind::ReadOnly(snapshot)) => snapshot.as_ref(),
            Reader::Batch(BatchKind::ReadWrite(transaction)) => transaction.as_ref(),
        }
    }
}

impl Database {
    /// Opens the database at `path` on `store` (its own store: rows and collection records
    /// are versioned and logged in it). No caller is checked here: a service opens a database
    /// once the caller has reached it, and the sync engine, which acts for the device, opens
    /// one to read it with [`Database::device_reader`]. Every method that takes a [`Caller`]
    /// checks it.
    pub fn open(
        path: DatabasePath,
        store: Arc<dyn Store>,
        options: DatabaseOptions,
    ) -> Result<Self> {
        let watchable = Watchable::open(
            store,
            WatchableOptions {
                retention: options.log_retention,
                pruner: options.pruner.clone(),
                // Sync's DAG heads outlive the log entries that made them.
                holder: Some(Arc::new(syncbase_vsync::dag::HeadHolder)),
                physical_clock: options.clock.clone(),
                ..WatchableOptions::new(
                    vec![Prefix::Row.as_key(), Prefix::Collection.as_key()],
                    options.log_clock,
                    options.rng.clone(),
                )
            },
        )?;
        Ok(Self {
            path,
            store: Arc::new(watchable),
            clock: options.clock,
            rng: options.rng,
            batch_idle_timeout_ns: options.batch_idle_timeout_ns,
            batches: Mutex::new(HashMap::new()),
            destroyed: AtomicBool::new(false),
            device_id: options.device_id,
            log_retention: options.log_retention,
        })
    }

    /// Who a commit of `caller` is recorded as made by: the caller, on this device.
    fn origin(&self, caller: &Caller) -> Origin {
        Origin::local(caller.name(), self.device_id)
    }

    /// Runs `body` in a transaction made by `caller` and commits it, retrying as
    /// [`transact`](crate::transact::transact) does.
    fn transact_as<T>(
        &self,
        caller: &Caller,
        mut body: impl FnMut(&dyn Transaction) -> Result<T>,
    ) -> Result<T> {
        transact_with(
            || self.store.begin(self.origin(caller)),
            |transaction: &DbTransaction| body(transaction),
        )
    }

    /// This database's watch log: what it keeps and who pins it (the service checked Admin on
    /// the database).
    pub fn log_status(&self) -> Result<LogStatus> {
        Ok(LogStatus {
            start: self.store.log_start()?,
            end: self.store.latest_log_seq(),
            retention_commits: self.log_retention.commits_min,
            retention_secs: self.log_retention.age_min_ns / 1_000_000_000,
            pins: self
                .store
                .pins()?
                .into_iter()
                .map(|(name, seq)| LogPin { name, seq })
                .collect(),
        })
    }

    /// This database's path.
    pub fn path(&self) -> &DatabasePath {
        &self.path
    }

    pub(crate) fn store(&self) -> &Arc<Watchable<Inner>> {
        &self.store
    }

    pub(crate) fn mark_destroyed(&self) {
        self.destroyed.store(true, Ordering::SeqCst);
    }

    /// Whether this database was destroyed (it is closed, and its path may name a new one).
    pub(crate) fn is_destroyed(&self) -> bool {
        self.destroyed.load(Ordering::SeqCst)
    }

    pub(crate) fn close(&self) -> Result<()> {
        self.batches.lock().clear();
        Ok(self.store.close()?)
    }

    /// The collection's record, if the walk holds `need` on it (the walk has passed the
    /// service, the app and this database).
    pub(crate) fn collection_data(
        &self,
        reader: &dyn StoreReader,
        walk: &Walk<'_>,
        collection: &str,
        need: Need,
    ) -> Result<CollectionData> {
        validate_existing_name(collection)?;
        let data = read_collection(reader, collection)?
            .filter(|data| !data.destroyed)
            .ok_or_else(|| Error::no_exist(collection_what(collection)))?;
        walk.check(&data.permissions, need, collection_what(collection))?;
        Ok(data)
    }

    fn reader(&self, caller: &Caller, batch: Option<BatchHandle>) -> Result<Reader> {
        Ok(match batch {
            Some(handle) => Reader::Batch(self.batch(caller, handle)?),
            None => Reader::Snapshot(self.store.versioned_snapshot()?),
        })
    }

    /// Runs `body` in the batch's transaction, or in a fresh one committed at once.
    fn write<T>(
        &self,
        caller: &Caller,
        batch: Option<BatchHandle>,
        mut body: impl FnMut(&dyn Transaction) -> Result<T>,
    ) -> Result<T> {
        match batch {
            Some(handle) => match self.batch(caller, handle)? {
                BatchKind::ReadWrite(transaction) => body(transaction.as_ref()),
                BatchKind::ReadOnly(_) => Err(Error::wire(
                    codes::READ_ONLY_BATCH,
                    "this batch is read-only",
                )),
            },
            None => self.transact_as(caller, body),
        }
    }

    /// Runs `body` as [`Database::write`] does, once the caller is checked for Write on
    /// `collection`: what a row write needs.
    fn write_row<T>(
        &self,
        caller: &Caller,
        batch: Option<BatchHandle>,
        collection: &str,
        mut body: impl FnMut(&dyn Transaction) -> Result<T>,
    ) -> Result<T> {
        self.write(caller, batch, |transaction| {
            self.collection_data(
                transaction,
                &Walk::new(caller),
                collection,
                Need::Tag(Tag::Write),
            )?;
            body(transaction)
        })
    }

    /// The names of the collections (the service checked Read on the database).
    pub fn list_collections(&self) -> Result<Vec<String>> {
        let (start, limit) = keys::prefix_range(&Prefix::Collection.as_key());
        let mut names = Vec::new();
        for entry in self.store.scan(&start, &limit)? {
            let (key, value) = entry?;
            let [name] = parse_names(&key, Prefix::Collection)?;
            if !decode_typed::<CollectionData>(&key, &value)?.destroyed {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Creates a collection (the service checked Write on the database); without permissions,
    /// the caller's root gets every tag.
    pub fn create_collection(
        &self,
        caller: &Caller,
        collection: &str,
        permissions: Option<Permissions>,
    ) -> Result<()> {
        validate_name(collection)?;
        self.insert_collection(caller, collection, permissions)
    }

    /// [`Database::create_collection`] without the name check (tests create collections named
    /// under earlier rules with it).
    pub(crate) fn insert_collection(
        &self,
        caller: &Caller,
        collection: &str,
        permissions: Option<Permissions>,
    ) -> Result<()> {
        let permissions = permissions.unwrap_or_else(|| caller.default_permissions());
        permissions.validate()?;
        self.transact_as(caller, |transaction| {
            let existing: Option<CollectionData> =
                get_typed(transaction, &collection_key(collection))?;
            if existing.is_some_and(|data| !data.destroyed) {
                return Err(Error::exist(collection_what(collection)));
            }
            let data = CollectionData {
                permissions: permissions.clone(),
                destroyed: false,
            };
            Ok(put_typed(transaction, &collection_key(collection), &data)?)
        })
    }

    /// Destroys a collection and its rows (Admin on it, or on the service: see
    /// [`Service::destroy_collection`](crate::Service::destroy_collection)), in one commit.
    ///
    /// One commit deletes the rows, replaces the record with a tombstone that keeps its last
    /// permissions (so a watch still shows the deletes to whoever could read them), and removes
    /// every stored version of its rows (so a collection later created under the same name
    /// cannot reveal old values to a watch resumed from an old marker).
    pub(crate) fn destroy_collection(&self, walk: &Walk<'_>, collection: &str) -> Result<()> {
        let row_prefix = keys::key_prefix(Prefix::Row, &[collection.as_bytes()], b"");
        transact_with(
            || self.store.begin(self.origin(walk.caller())),
            |transaction: &DbTransaction| {
                let mut data =
                    self.collection_data(transaction, walk, collection, Need::Tag(Tag::Admin))?;
                let (start, limit) = keys::row_prefix_range(collection, b"");
                let doomed: Vec<Vec<u8>> = transaction
                    .scan(&start, &limit)?
                    .map(|entry| entry.map(|(key, _)| key))
                    .collect::<syncbase_store::Result<_>>()?;
                for key in doomed {
                    transaction.delete(&key)?;
                }
                data.destroyed = true;
                put_typed(transaction, &collection_key(collection), &data)?;
                transaction.purge_versions(&row_prefix)?;
                Ok(())
            },
        )
    }

    /// Whether the collection exists and the caller may know it (any tag on it).
    pub fn collection_exists(&self, caller: &Caller, collection: &str) -> Result<bool> {
        validate_existing_name(collection)?;
        let snapshot = self.store.versioned_snapshot()?;
        exists(
            self.collection_data(&snapshot, &Walk::new(caller), collection, Need::Any)
                .map(drop),
        )
    }

    /// A collection's permissions (Admin on it, or on the service).
    pub(crate) fn collection_permissions(
        &self,
        walk: &Walk<'_>,
        collection: &str,
    ) -> Result<Permissions> {
        let snapshot = self.store.versioned_snapshot()?;
        Ok(self
            .collection_data(&snapshot, walk, collection, Need::Tag(Tag::Admin))?
            .permissions)
    }

    /// Replaces a collection's permissions (Admin on it, or on the service). The record is
    /// versioned and logged, so sync will carry it with the data.
    pub(crate) fn set_collection_permissions(
        &self,
        walk: &Walk<'_>,
        collection: &str,
        permissions: Permissions,
    ) -> Result<()> {
        permissions.validate()?;
        self.transact_as(walk.caller(), |transaction| {
            let mut data =
                self.collection_data(transaction, walk, collection, Need::Tag(Tag::Admin))?;
            data.permissions = permissions.clone();
            Ok(put_typed(transaction, &collection_key(collection), &data)?)
        })
    }

    /// A row's value (Read on the collection).
    pub fn get(
        &self,
        caller: &Caller,
        collection: &str,
        key: &str,
        batch: Option<BatchHandle>,
    ) -> Result<Vec<u8>> {
        validate_row_key(key)?;
        let reader = self.reader(caller, batch)?;
        let reader = reader.as_reader();
        self.collection_data(reader, &Walk::new(caller), collection, Need::Tag(Tag::Read))?;
        reader
            .get(&keys::row(collection, key.as_bytes()))?
            .ok_or_else(|| Error::no_exist(format!("row {key:?}")))
    }

    /// Whether a row exists (Read on the collection): false where `get` would say the row does
    /// not exist, and `nosql.no_access` for a caller who sees the collection but may not read it.
    pub fn row_exists(
        &self,
        caller: &Caller,
        collection: &str,
        key: &str,
        batch: Option<BatchHandle>,
    ) -> Result<bool> {
        validate_row_key(key)?;
        let reader = self.reader(caller, batch)?;
        let reader = reader.as_reader();
        let readable = self
            .collection_data(reader, &Walk::new(caller), collection, Need::Tag(Tag::Read))
            .map(drop);
        if !exists(readable)? {
            return Ok(false);
        }
        Ok(reader.exists(&keys::row(collection, key.as_bytes()))?)
    }

    /// Sets a row (Write on the collection).
    pub fn put(
        &self,
        caller: &Caller,
        collection: &str,
        key: &str,
        value: &[u8],
        batch: Option<BatchHandle>,
    ) -> Result<()> {
        validate_row_key(key)?;
        validate_value(value)?;
        self.write_row(caller, batch, collection, |transaction| {
            Ok(transaction.put(&keys::row(collection, key.as_bytes()), value)?)
        })
    }

    /// Deletes a row (Write on the collection); deleting a missing row is not an error.
    pub fn delete(
        &self,
        caller: &Caller,
        collection: &str,
        key: &str,
        batch: Option<BatchHandle>,
    ) -> Result<()> {
        validate_row_key(key)?;
        self.write_row(caller, batch, collection, |transaction| {
            Ok(transaction.delete(&keys::row(collection, key.as_bytes()))?)
        })
    }

    pub(crate) fn range_keys(collection: &str, range: &RowRange) -> (Vec<u8>, Vec<u8>) {
        match range {
            RowRange::Prefix(prefix) => keys::row_prefix_range(collection, prefix.as_bytes()),
            RowRange::Range { start, limit } => {
                let start = keys::row(collection, start.as_bytes());
                let limit = if limit.is_empty() {
                    keys::row_prefix_range(collection, b"").1
                } else {
                    keys::row(collection, limit.as_bytes())
                };
                (start, limit)
            }
        }
    }

    /// Rows in key order (Read on the collection).
    pub fn scan(
        &self,
        caller: &Caller,
        collection: &str,
        range: &RowRange,
        batch: Option<BatchHandle>,
    ) -> Result<RowStream> {
        let reader = self.reader(caller, batch)?;
        let reader = reader.as_reader();
        self.collection_data(reader, &Walk::new(caller), collection, Need::Tag(Tag::Read))?;
        let (start, limit) = Self::range_keys(collection, range);
        Ok(RowStream {
            inner: reader.scan(&start, &limit)?,
        })
    }

    /// Deletes the rows of a range (Write on the collection), in one commit; returns how many.
    pub fn delete_range(
        &self,
        caller: &Caller,
        collection: &str,
        range: &RowRange,
        batch: Option<BatchHandle>,
    ) -> Result<u64> {
        let (start, limit) = Self::range_keys(collection, range);
        self.write_row(caller, batch, collection, |transaction| {
            let doomed: Vec<Vec<u8>> = transaction
                .scan(&start, &limit)?
                .map(|entry| entry.map(|(key, _)| key))
                .collect::<syncbase_store::Result<_>>()?;
            for key in &doomed {
                transaction.delete(key)?;
            }
            Ok(doomed.len() as u64)
        })
    }

    /// Begins a batch: a read-write one is an optimistic transaction, a read-only one a
    /// snapshot. Only `caller` may use it; it is aborted after the idle timeout.
    pub fn begin_batch(&self, caller: &Caller, options: BatchOptions) -> Result<BatchHandle> {
        let kind = if options.read_only {
            BatchKind::ReadOnly(Arc::new(self.store.versioned_snapshot()?))
        } else {
            BatchKind::ReadWrite(Arc::new(self.store.begin(self.origin(caller))?))
        };
        let now = self.clock.now_ns();
        let mut batches = self.batches.lock();
        self.expire(&mut batches, now);
        let open = batches
            .values()
            .filter(|entry| entry.caller == caller.name())
            .count();
        if open >= syncbase_wire::limits::BATCHES_PER_CALLER_MAX {
            return Err(Error::wire(
                codes::TOO_MANY_BATCHES,
                format!(
                    "{open} batches are open; commit or abort some (they also expire when idle)"
                ),
            ));
        }
        let mut handle = self.rng.next_u64();
        while batches.contains_key(&handle) {
            handle = self.rng.next_u64();
        }
        batches.insert(
            handle,
            BatchEntry {
                kind,
                caller: caller.name().to_string(),
                last_used_ns: now,
            },
        );
        Ok(BatchHandle(handle))
    }

    /// Commits a batch; fails with `store.concurrent_transaction` when what it read changed.
    pub fn commit_batch(&self, caller: &Caller, handle: BatchHandle) -> Result<()> {
        let kind = self.take_batch(caller, handle)?;
        match kind {
            BatchKind::ReadWrite(transaction) => Ok(transaction.commit()?),
            BatchKind::ReadOnly(snapshot) => Ok(snapshot.abort()?),
        }
    }

    /// Abandons a batch.
    pub fn abort_batch(&self, caller: &Caller, handle: BatchHandle) -> Result<()> {
        match self.take_batch(caller, handle)? {
            BatchKind::ReadWrite(transaction) => Ok(transaction.abort()?),
            BatchKind::ReadOnly(snapshot) => Ok(snapshot.abort()?),
        }
    }

    /// How many batches are open (expired ones are dropped first).
    pub fn open_batches(&self) -> usize {
        let mut batches = self.batches.lock();
        self.expire(&mut batches, self.clock.now_ns());
        batches.len()
    }

    fn unknown_batch(handle: BatchHandle) -> Error {
        Error::wire(
            codes::UNKNOWN_BATCH,
            format!("batch {:x} is unknown, finished or expired", handle.0),
        )
    }

    fn batch(&self, caller: &Caller, handle: BatchHandle) -> Result<BatchKind> {
        let now = self.clock.now_ns();
        let mut batches = self.batches.lock();
        self.expire(&mut batches, now);
        match batches.get_mut(&handle.0) {
            Some(entry) if entry.caller == caller.name() => {
                entry.last_used_ns = now;
                Ok(entry.kind.clone())
            }
            _ => Err(Self::unknown_batch(handle)),
        }
    }

    fn take_batch(&self, caller: &Caller, handle: BatchHandle) -> Result<BatchKind> {
        let mut batches = self.batches.lock();
        self.expire(&mut batches, self.clock.now_ns());
        match batches.get(&handle.0) {
            Some(entry) if entry.caller == caller.name() => {}
            _ => return Err(Self::unknown_batch(handle)),
        }
        batches
            .remove(&handle.0)
            .map(|entry| entry.kind)
            .ok_or_else(|| Self::unknown_batch(handle))
    }

    fn expire(&self, batches: &mut HashMap<u64, BatchEntry>, now: u64) {
        batches.retain(|_, entry| {
            let alive = now.saturating_sub(entry.last_used_ns) < self.batch_idle_timeout_ns;
            if !alive {
                let _ = match &entry.kind {
                    BatchKind::ReadWrite(transaction) => transaction.abort(),
                    BatchKind::ReadOnly(snapshot) => snapshot.abort(),
                };
            }
            alive
        });
    }

    /// Whether the caller may read the collection as `reader` sees it, or could read it when
    /// it was destroyed (watch filters rows with this); false when it has no record. A record
    /// that cannot be read or decoded is an error, never a reason to hide rows.
    pub(crate) fn can_read(
        &self,
        reader: &dyn StoreReader,
        caller: &Caller,
        collection: &str,
    ) -> Result<bool> {
        Ok(read_collection(reader, collection)?
            .is_some_and(|data| data.permissions.grants(Tag::Read, caller.name())))
    }
}
