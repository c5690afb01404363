//! The service: apps, database records, service permissions (mirrors Go `server/service.go`,
//! `server/app.go` and `server/db_info.go`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use syncbase_store::{Clock, Pruner, Retention, Rng, Store, StoreReader};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{
    HybridClock, StoreLayout, StoreSetOpener, decode_typed, get_typed, load_clock_floor, put_typed,
    save_clock_floor,
};
use syncbase_wire::{
    CollectionPath, DatabasePath, ObjectPath, Permissions, Tag, validate_existing_name,
    validate_name,
};

use crate::auth::{Caller, Need, Walk};
use crate::database::{Database, DatabaseOptions, parse_names};
use crate::error::{Error, Result, exists};
use crate::transact::transact;

/// How to open a [`Service`].
#[derive(Clone)]
pub struct ServiceOptions {
    /// Where the service keeps its data (see `syncbase_util::StoreLayout`).
    pub root_dir: PathBuf,
    /// Opens the set holding the service store and each database's store (the engine).
    pub opener: Arc<dyn StoreSetOpener>,
    /// The root name of the service's own identity: a new service grants it every tag.
    pub owner_root: String,
    /// Timestamps (watch log, batch expiry).
    pub clock: Arc<dyn Clock>,
    /// Ids (device id, versions, batch handles).
    pub rng: Arc<dyn Rng>,
    /// Idle time after which an abandoned batch is aborted.
    pub batch_idle_timeout_ns: u64,
    /// Databases kept open while nobody uses them; past this, the least recently used idle
    /// ones are closed (and reopened on their next call). A database is idle when no call,
    /// watch or batch uses it and [`ServiceOptions::keep_open`] does not keep it.
    pub idle_databases_max: usize,
    /// Databases that stay open however idle (sync will keep those with syncgroups open).
    pub keep_open: Option<Arc<dyn KeepOpen>>,
    /// How much of each database's watch log to keep (below it, a background thread shared by
    /// every database prunes the log and the old versions only it referred to).
    pub log_retention: Retention,
}

/// Says which databases must stay open while idle: the seam through which a layer above keeps
/// the databases it works on in the background (sync's, those with syncgroups) open.
pub trait KeepOpen: Send + Sync {
    /// Whether the database at `path` must stay open.
    fn keep_open(&self, path: &DatabasePath) -> bool;
}

/// The default of [`ServiceOptions::idle_databases_max`].
pub const IDLE_DATABASES_MAX_DEFAULT: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceData {
    device_id: u64,
    permissions: Permissions,
    next_database_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AppData {
    permissions: Permissions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DatabaseInfo {
    id: u64,
    permissions: Permissions,
}

/// A Syncbase service: the root of the app / database / collection / row hierarchy.
pub struct Service {
    layout: StoreLayout,
    store: Arc<dyn Store>,
    options: ServiceOptions,
    device_id: u64,
    /// Log timestamps; its floor is saved in the service store.
    log_clock: Arc<HybridClock>,
    /// The floor last saved for `log_clock`.
    saved_floor: AtomicU64,
    /// Held while a new floor is computed and saved, so saves land in order.
    floor_saving: Mutex<()>,
    /// Open databases.
    databases: Mutex<OpenDatabases>,
    /// Prunes every database's watch log in the background.
    pruner: Pruner,
    /// Told when a database closes or is destroyed (sync stops serving it).
    closed_listeners: Mutex<Vec<syncbase_vsync::service::ClosedListener>>,
}

/// The open databases, each with the id of the record it was opened for and when it was last
/// used (a tick of [`OpenDatabases::ticks`]).
#[derive(Default)]
struct OpenDatabases {
    by_path: BTreeMap<DatabasePath, OpenDatabase>,
    /// Gates serializing the slow work on one path (opening its store, destroying it), held
    /// without the map's lock; an entry lives while someone holds or waits for its gate.
    gates: BTreeMap<DatabasePath, Arc<Mutex<()>>>,
    ticks: u64,
}

struct OpenDatabase {
    id: u64,
    database: Arc<Database>,
    last_used: u64,
}

impl OpenDatabases {
    fn tick(&mut self) -> u64 {
        self.ticks += 1;
        self.ticks
    }

    /// The open database at `path` if it is the incarnation `id`, marked used.
    fn get_used(&mut self, path: &DatabasePath, id: u64) -> Option<Arc<Database>> {
        let now = self.tick();
        let entry = self.by_path.get_mut(path).filter(|entry| entry.id == id)?;
        entry.last_used = now;
        Some(entry.database.clone())
    }

    fn gate(&mut self, path: &DatabasePath) -> Arc<Mutex<()>> {
        self.gates.entry(path.clone()).or_default().clone()
    }

    /// Forgets `path`'s gate once nobody but the map and `gate` (about to be dropped) holds it.
    fn release_gate(&mut self, path: &DatabasePath, gate: Arc<Mutex<()>>) {
        drop(gate);
        if self
            .gates
            .get(path)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            self.gates.remove(path);
        }
    }
}

fn service_key() -> Vec<u8> {
    keys::key(Prefix::Service, &[])
}

/// Where the hybrid clock's floor is saved.
fn clock_floor_key() -> Vec<u8> {
    keys::key(Prefix::Service, &[b"clock_floor"])
}

/// How far ahead of the hybrid clock its saved floor is kept: 10 minutes of timestamps.
const CLOCK_FLOOR_RESERVE_NS: u64 = 600 * 1_000_000_000;

fn app_key(app: &str) -> Vec<u8> {
    keys::key(Prefix::App, &[app.as_bytes()])
}

fn database_key(path: &DatabasePath) -> Vec<u8> {
    keys::key(
        Prefix::Database,
        &[path.app.as_bytes(), path.database.as_bytes()],
    )
}

fn app_what(app: &str) -> String {
    format!("app {app:?}")
}

fn database_what(path: &DatabasePath) -> String {
    format!("database {}/{}", path.app, path.database)
}

fn read_service<R: StoreReader + ?Sized>(reader: &R) -> Result<ServiceData> {
    get_typed(reader, &service_key())?.ok_or_else(|| {
        Error::Store(syncbase_store::Error::Corrupt(
            "the service record is missing".into(),
        ))
    })
}

/// Checks the walk reaches `app` (any tag on the service) and holds `need` on it.
fn read_app<R: StoreReader + ?Sized>(
    reader: &R,
    walk: &Walk<'_>,
    app: &str,
    need: Need,
) -> Result<AppData> {
    validate_existing_name(app)?;
    walk.check(&read_service(reader)?.permissions, Need::Any, app_what(app))?;
    let data: AppData =
        get_typed(reader, &app_key(app))?.ok_or_else(|| Error::no_exist(app_what(app)))?;
    walk.check(&data.permissions, need, app_what(app))?;
    Ok(data)
}

/// Checks the walk reaches the database (any tag on service and app) and holds `need` on it.
fn read_database<R: StoreReader + ?Sized>(
    reader: &R,
    walk: &Walk<'_>,
    path: &DatabasePath,
    need: Need,
) -> Result<DatabaseInfo> {
    validate_existing_name(&path.database)?;
    read_app(reader, walk, &path.app, Need::Any).map_err(|error| {
        if error.is_no_exist() {
            Error::no_exist(database_what(path))
        } else {
            error
        }
    })?;
    let info: DatabaseInfo = get_typed(reader, &database_key(path))?
        .ok_or_else(|| Error::no_exist(database_what(path)))?;
    walk.check(&info.permissions, need, database_what(path))?;
    Ok(info)
}

/// The walk of a call that needs Admin on its object (see [`Walk::manage`]).
fn manage<'c, R: StoreReader + ?Sized>(reader: &R, caller: &'c Caller) -> Result<Walk<'c>> {
    Ok(Walk::manage(caller, &read_service(reader)?.permissions))
}

/// The names of the records of kind `kind` whose keys start with `prefix` (see
/// [`parse_names`]: a malformed key is an error, not skipped).
fn names_under<R: StoreReader + ?Sized, const N: usize>(
    reader: &R,
    kind: Prefix,
    prefix: &[u8],
) -> Result<Vec<[String; N]>> {
    let (start, limit) = keys::prefix_range(prefix);
    let mut out = Vec::new();
    for entry in reader.scan(&start, &limit)? {
        let (key, _) = entry?;
        out.push(parse_names(&key, kind)?);
    }
    Ok(out)
}

impl Service {
    /// Opens the service under `options.root_dir`, creating it on first use (with a fresh
    /// device id and every tag granted to `options.owner_root`), and removes the files of
    /// databases whose destruction a crash interrupted.
    pub fn open(options: ServiceOptions) -> Result<Self> {
        let layout = StoreLayout::open(&options.root_dir, options.opener.as_ref())?;
        let store = layout.service_store()?;
        let data = match get_typed::<ServiceData, _>(store.as_ref(), &service_key())? {
            Some(data) => data,
            None => {
                let data = ServiceData {
                    device_id: options.rng.next_u64(),
                    permissions: Permissions::all_tags_to(&options.owner_root),
                    next_database_id: 1,
                };
                put_typed(store.as_ref(), &service_key(), &data)?;
                data
            }
        };
        let (start, limit) = keys::prefix_range(&Prefix::Database.as_key());
        let mut known = Vec::new();
        for entry in store.scan(&start, &limit)? {
            let (key, value) = entry?;
            known.push(decode_typed::<DatabaseInfo>(&key, &value)?.id);
        }
        for id in layout.database_ids()? {
            if !known.contains(&id) {
                layout.destroy_database(id)?;
            }
        }
        let log_clock = Arc::new(HybridClock::new(
            options.clock.clone(),
            load_clock_floor(store.as_ref(), &clock_floor_key())?,
        ));
        let saved_floor = save_clock_floor(
            store.as_ref(),
            &clock_floor_key(),
            &log_clock,
            CLOCK_FLOOR_RESERVE_NS,
        )?;
        // Durable even where commits are relaxed (see `keep_clock_floor_ahead`).
        layout.persist()?;
        Ok(Self {
            layout,
            store,
            device_id: data.device_id,
            options,
            log_clock,
            saved_floor: AtomicU64::new(saved_floor),
            floor_saving: Mutex::new(()),
            databases: Mutex::new(OpenDatabases::default()),
            pruner: Pruner::start().map_err(syncbase_store::Error::from)?,
            closed_listeners: Mutex::new(Vec::new()),
        })
    }

    /// What each database is opened with: the plain clock for timeouts, the service's hybrid
    /// clock for log timestamps, the random source and the batch idle timeout.
    fn database_options(&self) -> DatabaseOptions {
        DatabaseOptions {
            clock: self.options.clock.clone(),
            log_clock: self.log_clock.clone(),
            rng: self.options.rng.clone(),
            batch_idle_timeout_ns: self.options.batch_idle_timeout_ns,
            device_id: self.device_id,
            log_retention: self.options.log_retention,
            pruner: Some(self.pruner.clone()),
        }
    }

    /// The service's hybrid logical clock (log timestamps; sync observes peers' times in it).
    pub fn log_clock(&self) -> &Arc<HybridClock> {
        &self.log_clock
    }

    /// Saves a new floor for the hybrid clock once it has used half of the reserve saved last
    /// time, so a restart after a crash never issues a timestamp at or below one issued before.
    /// Called where databases are handed out, never inside a commit hook (it writes).
    fn keep_clock_floor_ahead(&self) -> Result<()> {
        let near = || {
            let saved = self.saved_floor.load(Ordering::Acquire);
            self.log_clock
                .last_ns()
                .saturating_add(CLOCK_FLOOR_RESERVE_NS / 2)
                >= saved
        };
        if !near() {
            return Ok(());
        }
        // One save at a time, so the stored floor and `saved_floor` always agree.
        let _saving = self.floor_saving.lock();
        if !near() {
            return Ok(());
        }
        let floor = save_clock_floor(
            self.store.as_ref(),
            &clock_floor_key(),
            &self.log_clock,
            CLOCK_FLOOR_RESERVE_NS,
        )?;
        // Made durable at once, even where commits are relaxed: a crash that took back the
        // new floor would leave the old one below timestamps already issued (one disk sync
        // per half reserve of clock time, at most).
        self.layout.persist()?;
        self.saved_floor.store(floor, Ordering::Release);
        Ok(())
    }

    /// Makes every commit so far durable, relaxed ones included (sync calls it before it
    /// serves this device's generations, so a crash never takes back one a peer holds).
    pub fn persist(&self) -> Result<()> {
        Ok(self.layout.persist()?)
    }

    /// This service's device id (random, chosen at creation, persisted).
    pub fn device_id(&self) -> u64 {
        self.device_id
    }

    /// Closes every open database, the service store and the set holding them.
    pub fn close(&self) -> Result<()> {
        let open = std::mem::take(&mut self.databases.lock().by_path);
        for (path, entry) in open {
            self.tell_closed(&path);
            entry.database.close()?;
        }
        self.store.close()?;
        Ok(self.layout.close()?)
    }

    /// The database at `path`, for calls that check their own tags on its collections: the
    /// caller must be able to reach it (any tag on the service, the app and the database).
    pub fn database(&self, caller: &Caller, path: &DatabasePath) -> Result<Arc<Database>> {
        self.open_database(&Walk::new(caller), path, Need::Any)
    }

    /// The database at `path` if the caller holds `tag` on it (Read for listing collections
    /// and for watch).
    pub fn database_with_tag(
        &self,
        caller: &Caller,
        path: &DatabasePath,
        tag: Tag,
    ) -> Result<Arc<Database>> {
        self.open_database(&Walk::new(caller), path, Need::Tag(tag))
    }

    /// The database at `path` (the walk must hold `need` on it), opened once per incarnation.
    /// The map's lock is held only to look up and insert: opening the store (which may write)
    /// happens under the path's gate, so a slow open or destroy parks only calls to that path.
    fn open_database(
        &self,
        walk: &Walk<'_>,
        path: &DatabasePath,
        need: Need,
    ) -> Result<Arc<Database>> {
        self.keep_clock_floor_ahead()?;
        let info = read_database(self.store.as_ref(), walk, path, need)?;
        let gate = {
            let mut open = self.databases.lock();
            if let Some(database) = open.get_used(path, info.id) {
                return Ok(database);
            }
            open.gate(path)
        };
        let opened = self.open_gated(&gate, walk, path, need, info.id);
        let (stale, idle) = {
            let mut open = self.databases.lock();
            open.release_gate(path, gate);
            match &opened {
                Ok((_, stale)) => {
                    let idle = if open.by_path.len() > self.options.idle_databases_max {
                        self.close_idle(&mut open)
                    } else {
                        Vec::new()
                    };
                    (stale.clone(), idle)
                }
                Err(_) => (None, Vec::new()),
            }
        };
        drop(idle);
        if let Some(stale) = stale {
            // Another id was open at this path: that database was destroyed.
            stale.mark_destroyed();
            stale.close()?;
        }
        opened.map(|(database, _)| database)
    }

    /// Opens incarnation `id` of `path` under its gate, unless another call did meanwhile;
    /// returns it and the stale incarnation it replaced in the map, if any.
    fn open_gated(
        &self,
        gate: &Mutex<()>,
        walk: &Walk<'_>,
        path: &DatabasePath,
        need: Need,
        id: u64,
    ) -> Result<(Arc<Database>, Option<Arc<Database>>)> {
        let _gate = gate.lock();
        if let Some(database) = self.databases.lock().get_used(path, id) {
            return Ok((database, None));
        }
        // Read again under the gate `forget_database` holds while destroying: a database
        // destroyed since the first read is not reopened (its store recreated).
        let info = read_database(self.store.as_ref(), walk, path, need)?;
        if info.id != id {
            return Err(Error::no_exist(database_what(path)));
        }
        let store = self.layout.database_store(id)?;
        let database = Arc::new(Database::open(
            path.clone(),
            store,
            self.database_options(),
        )?);
        let mut open = self.databases.lock();
        let now = open.tick();
        let stale = open.by_path.insert(
            path.clone(),
            OpenDatabase {
                id,
                database: database.clone(),
                last_used: now,
            },
        );
        Ok((database, stale.map(|entry| entry.database)))
    }

    /// Closes the least recently used idle databases, down to nine tenths of
    /// [`ServiceOptions::idle_databases_max`] (so the scan runs once per many opens). A database
    /// is idle when only this map holds it (no call, watch or stream) and it has no batch.
    fn close_idle(&self, open: &mut OpenDatabases) -> Vec<Arc<Database>> {
        let target = self.options.idle_databases_max - self.options.idle_databases_max / 10;
        let mut idle: Vec<(u64, DatabasePath)> = open
            .by_path
            .iter()
            .filter(|(path, entry)| {
                // Held by nobody else: not by a caller, and not by sync (which holds the
                // store; a second open would put two watchable layers over one store).
                Arc::strong_count(&entry.database) == 1
                    && Arc::strong_count(entry.database.store()) == 1
                    && entry.database.open_batches() == 0
                    && !self
                        .options
                        .keep_open
                        .as_ref()
                        .is_some_and(|keep| keep.keep_open(path))
            })
            .map(|(path, entry)| (entry.last_used, path.clone()))
            .collect();
        idle.sort_unstable();
        let excess = open.by_path.len().saturating_sub(target);
        // Not closed: a stream read from one may still hold its snapshot. Each store is
        // released when its last reader lets go (dropped by the caller, outside the map's
        // lock), and reopened on the next call.
        idle.into_iter()
            .take(excess)
            .filter_map(|(_, path)| open.by_path.remove(&path))
            .map(|entry| entry.database)
            .collect()
    }

    /// Whether a database is open at `path` (so a call to it opens nothing).
    pub fn is_open(&self, path: &DatabasePath) -> bool {
        self.databases.lock().by_path.contains_key(path)
    }

    /// The databases open now, in path order.
    pub fn open_databases(&self) -> Vec<DatabasePath> {
        self.databases.lock().by_path.keys().cloned().collect()
    }

    /// The names of the apps (Read on the service).
    pub fn list_apps(&self, caller: &Caller) -> Result<Vec<String>> {
        let snapshot = self.store.snapshot()?;
        Walk::new(caller).check(
            &read_service(snapshot.as_ref())?.permissions,
            Need::Tag(Tag::Read),
            "the service",
        )?;
        Ok(
            names_under(snapshot.as_ref(), Prefix::App, &Prefix::App.as_key())?
                .into_iter()
                .map(|[app]| app)
                .collect(),
        )
    }

    /// Creates an app (Write on the service); without permissions, the caller's root gets
    /// every tag.
    pub fn create_app(
        &self,
        caller: &Caller,
        app: &str,
        permissions: Option<Permissions>,
    ) -> Result<()> {
        validate_name(app)?;
        self.insert_app(caller, app, permissions)
    }

    /// [`Service::create_app`] without the name check (tests create objects named under
    /// earlier rules with it).
    fn insert_app(
        &self,
        caller: &Caller,
        app: &str,
        permissions: Option<Permissions>,
    ) -> Result<()> {
        let permissions = permissions.unwrap_or_else(|| caller.default_permissions());
        permissions.validate()?;
        transact(self.store.as_ref(), |transaction| {
            let data = read_service(transaction)?;
            Walk::new(caller).check(&data.permissions, Need::Tag(Tag::Write), "the service")?;
            if transaction.get(&app_key(app))?.is_some() {
                return Err(Error::exist(app_what(app)));
            }
            let record = AppData {
                permissions: permissions.clone(),
            };
            Ok(put_typed(transaction, &app_key(app), &record)?)
        })
    }

    /// Destroys an app and all its databases (Admin on the app, or on the service).
    pub fn destroy_app(&self, caller: &Caller, app: &str) -> Result<()> {
        let databases = transact(self.store.as_ref(), |transaction| {
            let walk = manage(transaction, caller)?;
            read_app(transaction, &walk, app, Need::Tag(Tag::Admin))?;
            let mut doomed = Vec::new();
            let prefix = keys::key_prefix(Prefix::Database, &[app.as_bytes()], b"");
            let (start, limit) = keys::prefix_range(&prefix);
            for entry in transaction.scan(&start, &limit)? {
                let (key, value) = entry?;
                let info: DatabaseInfo = decode_typed(&key, &value)?;
                let [_, name] = parse_names(&key, Prefix::Database)?;
                doomed.push((name, info.id));
                transaction.delete(&key)?;
            }
            transaction.delete(&app_key(app))?;
            Ok(doomed)
        })?;
        for (database, id) in databases {
            self.forget_database(
                &DatabasePath {
                    app: app.to_string(),
                    database,
                },
                id,
            )?;
        }
        Ok(())
    }

    /// Whether the app exists and the caller may know it (any tag on it).
    pub fn app_exists(&self, caller: &Caller, app: &str) -> Result<bool> {
        validate_existing_name(app)?;
        exists(read_app(self.store.as_ref(), &Walk::new(caller), app, Need::Any).map(drop))
    }

    /// The names of an app's databases (Read on the app).
    pub fn list_databases(&self, caller: &Caller, app: &str) -> Result<Vec<String>> {
        let snapshot = self.store.snapshot()?;
        read_app(
            snapshot.as_ref(),
            &Walk::new(caller),
            app,
            Need::Tag(Tag::Read),
        )?;
        let prefix = keys::key_prefix(Prefix::Database, &[app.as_bytes()], b"");
        Ok(names_under(snapshot.as_ref(), Prefix::Database, &prefix)?
            .into_iter()
            .map(|[_, database]| database)
            .collect())
    }

    /// Creates a database (Write on the app); without permissions, the caller's root gets
    /// every tag.
    pub fn create_database(
        &self,
        caller: &Caller,
        path: &DatabasePath,
        permissions: Option<Permissions>,
    ) -> Result<()> {
        validate_name(&path.database)?;
        self.insert_database(caller, path, permissions)
    }

    /// [`Service::create_database`] without the name check.
    fn insert_database(
        &self,
        caller: &Caller,
        path: &DatabasePath,
        permissions: Option<Permissions>,
    ) -> Result<()> {
        let permissions = permissions.unwrap_or_else(|| caller.default_permissions());
        permissions.validate()?;
        transact(self.store.as_ref(), |transaction| {
            read_app(
                transaction,
                &Walk::new(caller),
                &path.app,
                Need::Tag(Tag::Write),
            )?;
            if transaction.get(&database_key(path))?.is_some() {
                return Err(Error::exist(database_what(path)));
            }
            let mut data = read_service(transaction)?;
            let id = data.next_database_id;
            data.next_database_id += 1;
            put_typed(transaction, &service_key(), &data)?;
            let info = DatabaseInfo {
                id,
                permissions: permissions.clone(),
            };
            Ok(put_typed(transaction, &database_key(path), &info)?)
        })
    }

    /// Destroys a database and its data (Admin on the database, or on the service).
    pub fn destroy_database(&self, caller: &Caller, path: &DatabasePath) -> Result<()> {
        let id = transact(self.store.as_ref(), |transaction| {
            let walk = manage(transaction, caller)?;
            let info = read_database(transaction, &walk, path, Need::Tag(Tag::Admin))?;
            transaction.delete(&database_key(path))?;
            Ok(info.id)
        })?;
        self.tell_closed(path);
        self.forget_synced(path)?;
        self.forget_database(path, id)
    }

    /// The service's own store (its records and the registry of databases with syncgroups).
    pub(crate) fn service_store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The database at `path`, opened for `walk` (sync's own walk reaches every database).
    pub(crate) fn open_database_as(
        &self,
        walk: &Walk<'_>,
        path: &DatabasePath,
    ) -> Result<Arc<Database>> {
        self.open_database(walk, path, Need::Any)
    }

    pub(crate) fn add_closed_listener(&self, listener: syncbase_vsync::service::ClosedListener) {
        self.closed_listeners.lock().push(listener);
    }

    /// Tells the listeners that the database at `path` closes (before it does).
    fn tell_closed(&self, path: &DatabasePath) {
        let listeners = self.closed_listeners.lock().clone();
        for listener in listeners {
            listener(&path.app, &path.database);
        }
    }

    /// Closes incarnation `id` of `path` if open and destroys its store, under the path's gate
    /// (not the map's lock: a large destroy parks only calls to this path).
    fn forget_database(&self, path: &DatabasePath, id: u64) -> Result<()> {
        let gate = self.databases.lock().gate(path);
        let destroyed = {
            let _gate = gate.lock();
            let doomed = {
                let mut open = self.databases.lock();
                // Only the incarnation being destroyed: the path may already name a new one.
                if open.by_path.get(path).is_some_and(|entry| entry.id == id) {
                    open.by_path.remove(path)
                } else {
                    None
                }
            };
            let closed = match doomed {
                Some(entry) => {
                    entry.database.mark_destroyed();
                    entry.database.close()
                }
                None => Ok(()),
            };
            closed.and_then(|()| Ok(self.layout.destroy_database(id)?))
        };
        self.databases.lock().release_gate(path, gate);
        destroyed
    }

    /// Whether the database exists and the caller may know it (any tag on it).
    pub fn database_exists(&self, caller: &Caller, path: &DatabasePath) -> Result<bool> {
        validate_existing_name(&path.app)?;
        validate_existing_name(&path.database)?;
        exists(read_database(self.store.as_ref(), &Walk::new(caller), path, Need::Any).map(drop))
    }

    /// Destroys a collection and its rows (Admin on the collection, or on the service); see
    /// [`Database::destroy_collection`].
    pub fn destroy_collection(&self, caller: &Caller, path: &CollectionPath) -> Result<()> {
        let walk = manage(self.store.as_ref(), caller)?;
        self.open_database(&walk, &path.database_path(), Need::Any)?
            .destroy_collection(&walk, &path.collection)
    }

    /// An object's permissions (Admin on it, or on the service).
    pub fn permissions(&self, caller: &Caller, object: &ObjectPath) -> Result<Permissions> {
        let admin = Need::Tag(Tag::Admin);
        let snapshot = self.store.snapshot()?;
        let reader = snapshot.as_ref();
        let walk = manage(reader, caller)?;
        match object {
            ObjectPath::Service => {
                let data = read_service(reader)?;
                walk.check(&data.permissions, admin, "the service")?;
                Ok(data.permissions)
            }
            ObjectPath::App(app) => Ok(read_app(reader, &walk, app, admin)?.permissions),
            ObjectPath::Database(path) => {
                Ok(read_database(reader, &walk, path, admin)?.permissions)
            }
            ObjectPath::Collection(path) => self
                .open_database(&walk, &path.database_path(), Need::Any)?
                .collection_permissions(&walk, &path.collection),
        }
    }

    /// Replaces an object's permissions (Admin on it, or on the service). Permissions that
    /// would leave it without an admin are refused (`nosql.invalid_permissions`).
    pub fn set_permissions(
        &self,
        caller: &Caller,
        object: &ObjectPath,
        permissions: Permissions,
    ) -> Result<()> {
        permissions.validate()?;
        let admin = Need::Tag(Tag::Admin);
        match object {
            ObjectPath::Service => transact(self.store.as_ref(), |transaction| {
                let mut data = read_service(transaction)?;
                manage(transaction, caller)?.check(&data.permissions, admin, "the service")?;
                data.permissions = permissions.clone();
                Ok(put_typed(transaction, &service_key(), &data)?)
            }),
            ObjectPath::App(app) => transact(self.store.as_ref(), |transaction| {
                let walk = manage(transaction, caller)?;
                let mut data = read_app(transaction, &walk, app, admin)?;
                data.permissions = permissions.clone();
                Ok(put_typed(transaction, &app_key(app), &data)?)
            }),
            ObjectPath::Database(path) => {
                transact(self.store.as_ref(), |transaction| {
                    let walk = manage(transaction, caller)?;
                    let mut info = read_database(transaction, &walk, path, admin)?;
                    info.permissions = permissions.clone();
                    Ok(put_typed(transaction, &database_key(path), &info)?)
                })?;
                Ok(())
            }
            ObjectPath::Collection(path) => {
                let walk = manage(self.store.as_ref(), caller)?;
                self.open_database(&walk, &path.database_path(), Need::Any)?
                    .set_collection_permissions(&walk, &path.collection, permissions)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use syncbase_store::{ManualClock, SeededRng};
    use syncbase_wire::{CollectionPath, codes};

    use super::*;

    fn code<T>(result: Result<T>) -> String {
        match result {
            Ok(_) => "ok".to_string(),
            Err(error) => error.code().to_string(),
        }
    }

    /// Names the rules for new names refuse (`$`, `:`, a bidirectional override, `.`, `..`).
    const NAMES_REFUSED_SINCE: [&str; 5] = ["old$app", "old:db", "rtl\u{202e}coll", ".", ".."];

    #[test]
    fn objects_named_under_the_earlier_rules_stay_readable_and_destroyable() {
        let dir = tempfile::tempdir().unwrap();
        let service = Service::open(ServiceOptions {
            root_dir: dir.path().to_path_buf(),
            opener: Arc::new(syncbase_util::MemoryStoreSetOpener),
            owner_root: "alice".into(),
            clock: Arc::new(ManualClock::new(1_000)),
            rng: Arc::new(SeededRng::new(3)),
            batch_idle_timeout_ns: crate::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
            idle_databases_max: IDLE_DATABASES_MAX_DEFAULT,
            keep_open: None,
            log_retention: syncbase_store::Retention::default(),
        })
        .unwrap();
        let alice = Caller::new("alice");
        service.create_app(&alice, "notes", None).unwrap();
        let main = DatabasePath {
            app: "notes".into(),
            database: "main".into(),
        };
        service.create_database(&alice, &main, None).unwrap();
        for name in NAMES_REFUSED_SINCE {
            let database = DatabasePath {
                app: "notes".into(),
                database: name.into(),
            };
            assert_eq!(
                code(service.create_app(&alice, name, None)),
                codes::INVALID_NAME
            );
            assert_eq!(
                code(service.create_database(&alice, &database, None)),
                codes::INVALID_NAME
            );
            assert_eq!(
                code(
                    service
                        .database(&alice, &main)
                        .unwrap()
                        .create_collection(&alice, name, None)
                ),
                codes::INVALID_NAME
            );
        }

        // Objects created under the earlier rules, as an older build did.
        let (app, database_name, collection) = ("old$app", "old:db", "rtl\u{202e}coll");
        let path = DatabasePath {
            app: app.into(),
            database: database_name.into(),
        };
        service.insert_app(&alice, app, None).unwrap();
        service.insert_database(&alice, &path, None).unwrap();
        let database = service.database(&alice, &path).unwrap();
        database
            .insert_collection(&alice, collection, None)
            .unwrap();
        database.insert_collection(&alice, "..", None).unwrap();

        assert!(
            service
                .list_apps(&alice)
                .unwrap()
                .contains(&app.to_string())
        );
        assert!(service.app_exists(&alice, app).unwrap());
        assert_eq!(
            service.list_databases(&alice, app).unwrap(),
            vec![database_name]
        );
        assert!(service.database_exists(&alice, &path).unwrap());
        service
            .permissions(&alice, &ObjectPath::Database(path.clone()))
            .unwrap();
        assert_eq!(database.list_collections().unwrap(), vec!["..", collection]);
        assert!(database.collection_exists(&alice, collection).unwrap());
        database.put(&alice, collection, "k:$", b"v", None).unwrap();
        assert_eq!(database.get(&alice, collection, "k:$", None).unwrap(), b"v");
        let collection_path = CollectionPath {
            app: app.into(),
            database: database_name.into(),
            collection: collection.into(),
        };
        service
            .permissions(&alice, &ObjectPath::Collection(collection_path.clone()))
            .unwrap();
        service
            .destroy_collection(&alice, &collection_path)
            .unwrap();
        let dot_dot = CollectionPath {
            collection: "..".into(),
            ..collection_path
        };
        service.destroy_collection(&alice, &dot_dot).unwrap();
        assert!(database.list_collections().unwrap().is_empty());
        service.destroy_database(&alice, &path).unwrap();
        service.destroy_app(&alice, app).unwrap();
        assert_eq!(service.list_apps(&alice).unwrap(), vec!["notes"]);
    }

    /// Log timestamps come from the service's hybrid clock: they never go backwards, across a
    /// restart either, even when the wall clock does.
    #[test]
    fn log_timestamps_never_go_backwards_across_a_restart_with_a_clock_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(syncbase_store::MemStoreSet::new());
        let clock = Arc::new(ManualClock::new(5_000_000_000_000));
        let open = |clock: Arc<ManualClock>| {
            Service::open(ServiceOptions {
                root_dir: dir.path().to_path_buf(),
                opener: Arc::new(syncbase_util::GivenSetOpener(set.clone())),
                owner_root: "alice".into(),
                clock,
                rng: Arc::new(SeededRng::new(3)),
                batch_idle_timeout_ns: crate::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
                idle_databases_max: IDLE_DATABASES_MAX_DEFAULT,
                keep_open: None,
                log_retention: syncbase_store::Retention::default(),
            })
            .unwrap()
        };
        let alice = Caller::new("alice");
        let path = DatabasePath {
            app: "a".into(),
            database: "d".into(),
        };
        let last_timestamp = |service: &Service| {
            let database = service.database(&alice, &path).unwrap();
            let store = database.store();
            let entries = store.log_entries(0, 1_000).unwrap();
            entries.last().unwrap().timestamp_ns
        };
        let before = {
            let service = open(clock.clone());
            service.create_app(&alice, "a", None).unwrap();
            service.create_database(&alice, &path, None).unwrap();
            let database = service.database(&alice, &path).unwrap();
            database.create_collection(&alice, "c", None).unwrap();
            database.put(&alice, "c", "k", b"1", None).unwrap();
            last_timestamp(&service)
        };
        assert!(before >= 5_000_000_000_000);
        // The machine's clock is set back an hour; the service restarts (no clean close).
        let earlier = Arc::new(ManualClock::new(5_000_000_000_000 - 3_600_000_000_000));
        let service = open(earlier);
        let database = service.database(&alice, &path).unwrap();
        database.put(&alice, "c", "k", b"2", None).unwrap();
        let after = last_timestamp(&service);
        assert!(after > before, "{after} after {before}");
    }
}
