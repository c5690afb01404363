//! Requests and responses of the data-model calls (mirrors Go `service.vdl`: Service, Database,
//! Collection and Row interfaces, with the app level of the seed's dispatcher).

use serde::{Deserialize, Serialize};

use crate::perms::Permissions;

/// A database, named by its app and its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DatabasePath {
    /// The app.
    pub app: String,
    /// The database.
    pub database: String,
}

/// A collection, named by its database and its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CollectionPath {
    /// The app.
    pub app: String,
    /// The database.
    pub database: String,
    /// The collection.
    pub collection: String,
}

impl CollectionPath {
    /// The database this collection is in.
    pub fn database_path(&self) -> DatabasePath {
        DatabasePath {
            app: self.app.clone(),
            database: self.database.clone(),
        }
    }
}

/// An object that has permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectPath {
    /// The service itself.
    Service,
    /// An app.
    App(String),
    /// A database.
    Database(DatabasePath),
    /// A collection.
    Collection(CollectionPath),
}

/// A batch, as returned by [`Request::BeginBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchHandle(pub u64);

/// How to begin a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOptions {
    /// A read-only batch is a consistent snapshot; writes in it fail.
    pub read_only: bool,
}

/// Which rows a scan or range delete covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowRange {
    /// Every row whose key starts with this prefix (empty: every row).
    Prefix(String),
    /// Rows with keys in `[start, limit)`; an empty `limit` means to the end.
    Range {
        /// The first key.
        start: String,
        /// The key after the last (empty: unbounded).
        limit: String,
    },
}

/// Where a watch begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchStart {
    /// With changes committed after the call.
    Now,
    /// With the current state of every readable row (as one batch of puts), then changes.
    Initial,
    /// After the change with this resume marker (from an earlier [`Change::marker`]).
    From(String),
}

/// What happened to a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The row now has this value.
    Put(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The row was deleted.
    Delete,
}

/// One change in a watch stream. Changes arrive grouped by commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Resume after this change with [`WatchStart::From`]; it survives daemon restarts.
    pub marker: String,
    /// The collection of the row.
    pub collection: String,
    /// The row key.
    pub key: String,
    /// Put or delete.
    pub kind: ChangeKind,
    /// Whether sync wrote it (else a local client did).
    pub from_sync: bool,
}

/// Who answered a status call, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The service's identity (its certificate chain's name).
    pub identity: String,
    /// The service's device id.
    pub device_id: u64,
    /// The address it listens on (empty when embedded).
    pub address: String,
    /// The storage engine.
    pub engine: String,
    /// The software version.
    pub version: String,
}

/// A database's watch log, as its admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    /// The first log position still kept (a watch may resume from a marker one below it, if
    /// the retention window still covers it).
    pub start: u64,
    /// The newest log position (a marker of now).
    pub end: u64,
    /// The window: at least this many of the newest commits...
    pub retention_commits: u64,
    /// ...and every commit younger than this many seconds.
    pub retention_secs: u64,
    /// Consumers holding the log from a position on (sync's watcher), by name.
    pub pins: Vec<LogPin>,
}

/// A consumer holding a database's watch log: entries from `seq` on are kept for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPin {
    /// Who holds it.
    pub name: String,
    /// The first entry it still needs.
    pub seq: u64,
}

/// Every call of the data model. Adding one here makes every exhaustive `match` (the dispatcher,
/// the permission table test) fail to compile until it is handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Who the service is (needs no tag).
    Status,
    /// The apps the caller may list (Read on the service).
    ListApps,
    /// An object's permissions (Admin on it).
    GetPermissions {
        /// The object.
        object: ObjectPath,
    },
    /// Replaces an object's permissions (Admin on it).
    SetPermissions {
        /// The object.
        object: ObjectPath,
        /// The new permissions.
        permissions: Permissions,
    },
    /// Creates an app (Write on the service).
    CreateApp {
        /// Its name.
        app: String,
        /// Its permissions; by default every tag to the creator's root.
        permissions: Option<Permissions>,
    },
    /// Destroys an app and its databases (Admin on it).
    DestroyApp {
        /// Its name.
        app: String,
    },
    /// Whether an app exists (any tag on it).
    AppExists {
        /// Its name.
        app: String,
    },
    /// The databases of an app (Read on the app).
    ListDatabases {
        /// The app.
        app: String,
    },
    /// Creates a database (Write on the app).
    CreateDatabase {
        /// Its path.
        database: DatabasePath,
        /// Its permissions; by default every tag to the creator's root.
        permissions: Option<Permissions>,
    },
    /// Destroys a database and its data (Admin on it).
    DestroyDatabase {
        /// Its path.
        database: DatabasePath,
    },
    /// Whether a database exists (any tag on it).
    DatabaseExists {
        /// Its path.
        database: DatabasePath,
    },
    /// The collections of a database (Read on the database).
    ListCollections {
        /// The database.
        database: DatabasePath,
    },
    /// Begins a batch (Read on the database; writes in it are checked per collection).
    BeginBatch {
        /// The database.
        database: DatabasePath,
        /// Read-only or read-write.
        options: BatchOptions,
    },
    /// Commits a batch; fails with the concurrent-batch code when what it read changed.
    Commit {
        /// The database.
        database: DatabasePath,
        /// The batch.
        batch: BatchHandle,
    },
    /// Abandons a batch.
    Abort {
        /// The database.
        database: DatabasePath,
        /// The batch.
        batch: BatchHandle,
    },
    /// Streams the database's changes (Read on the database; rows of collections the caller
    /// cannot read are left out).
    Watch {
        /// The database.
        database: DatabasePath,
        /// Where to begin.
        start: WatchStart,
    },
    /// Creates a collection (Write on the database).
    CreateCollection {
        /// Its path.
        collection: CollectionPath,
        /// Its permissions; by default every tag to the creator's root.
        permissions: Option<Permissions>,
    },
    /// Destroys a collection and its rows (Admin on it).
    DestroyCollection {
        /// Its path.
        collection: CollectionPath,
    },
    /// Whether a collection exists (any tag on it).
    CollectionExists {
        /// Its path.
        collection: CollectionPath,
    },
    /// A row's value (Read on the collection).
    Get {
        /// The collection.
        collection: CollectionPath,
        /// The row key.
        key: String,
        /// Read inside this batch.
        batch: Option<BatchHandle>,
    },
    /// Sets a row (Write on the collection).
    Put {
        /// The collection.
        collection: CollectionPath,
        /// The row key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Write inside this batch.
        batch: Option<BatchHandle>,
    },
    /// Deletes a row (Write on the collection).
    Delete {
        /// The collection.
        collection: CollectionPath,
        /// The row key.
        key: String,
        /// Write inside this batch.
        batch: Option<BatchHandle>,
    },
    /// Whether a row exists (Read on the collection).
    RowExists {
        /// The collection.
        collection: CollectionPath,
        /// The row key.
        key: String,
        /// Read inside this batch.
        batch: Option<BatchHandle>,
    },
    /// Rows in key order (Read on the collection).
    Scan {
        /// The collection.
        collection: CollectionPath,
        /// Which rows.
        range: RowRange,
        /// Read inside this batch.
        batch: Option<BatchHandle>,
    },
    /// Deletes rows (Write on the collection).
    DeleteRange {
        /// The collection.
        collection: CollectionPath,
        /// Which rows.
        range: RowRange,
        /// Write inside this batch.
        batch: Option<BatchHandle>,
    },
    /// A database's watch log: what it keeps and who pins it (Admin on the database).
    LogStatus {
        /// The database.
        database: DatabasePath,
    },
    /// Creates a syncgroup (Write on the database, Read on each collection); the daemon is its
    /// first member.
    CreateSyncgroup {
        /// The database.
        database: DatabasePath,
        /// The syncgroup.
        spec: SyncgroupSpec,
    },
    /// Joins a syncgroup through a member at `via` (Write on the database, which is created
    /// when missing, as are its app and the shared collections).
    JoinSyncgroup {
        /// The database.
        database: DatabasePath,
        /// The syncgroup.
        name: String,
        /// A member's address, `HOST:PORT`.
        via: String,
        /// Answer only once the first round with that member has been applied; meanwhile
        /// [`Response::JoinProgress`] comes every quarter second.
        wait: bool,
    },
    /// The syncgroups of a database (Read on the database).
    ListSyncgroups {
        /// The database.
        database: DatabasePath,
    },
    /// How this daemon's synced databases stand: those the caller can see in full, the others
    /// only as a count (needs no tag).
    SyncStatus,
    /// A call between the sync engines of two daemons (the typed counterpart of the seed's
    /// `$internal` suffix): authorized by the calling daemon's verified principal against the
    /// syncgroups' member and Read lists.
    Peer(PeerRequest),
    /// Pulls from every other member of the database's syncgroups now, and answers once each
    /// round has been applied or has failed ([`Response::Pulled`]; Read on the database). Push
    /// and anti-entropy make this unnecessary for convergence: it is for scripts, tests and
    /// measurements that want a round at a known moment.
    SyncNow {
        /// The database.
        database: DatabasePath,
    },
}

/// One round of [`Request::SyncNow`]: what was pulled from one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// The member pulled from.
    pub member: String,
    /// Log records its delta carried.
    pub records: u64,
    /// Bytes of its delta, as encoded by the sync engine.
    pub bytes: u64,
    /// How long the round took, asking to applying (microseconds).
    pub micros: u64,
    /// Why the round failed, if it did (nothing of it was applied).
    pub error: Option<crate::WireError>,
}

/// A syncgroup as a client describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncgroupSpec {
    /// Its name, unique in the database.
    pub name: String,
    /// The collections it shares.
    pub collections: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Who may join it; empty: the creator's root.
    pub read: Vec<String>,
    /// Who may administer it; empty: the creator's root.
    pub admin: Vec<String>,
}

/// A call of one daemon's sync engine on another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// The caller joins the syncgroup `name`; the answer ([`Response::Bytes`]) is the
    /// syncgroup's record and the shared collections' permissions, encoded by the sync engine.
    Join {
        /// The database.
        database: DatabasePath,
        /// The syncgroup.
        name: String,
        /// Where the caller is reached, if it listens.
        address: Option<String>,
    },
    /// What the caller knows (encoded by the sync engine); the answer is the delta it lacks,
    /// in parts the caller applies as they arrive: a stream of [`Response::Bytes`] that, joined
    /// in order, are frames of a 4-byte little-endian length and one encoded part each.
    Pull {
        /// The database.
        database: DatabasePath,
        /// The caller's knowledge.
        #[serde(with = "serde_bytes")]
        knowledge: Vec<u8>,
    },
    /// The caller has new generations of the database: pull.
    Notify {
        /// The database.
        database: DatabasePath,
        /// What the caller knows now (encoded by the sync engine): the receiver learns how far
        /// behind it is.
        #[serde(with = "serde_bytes")]
        knowledge: Vec<u8>,
    },
}

/// The answer to [`Request::SyncStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The synced databases the caller can see.
    pub databases: Vec<DatabaseSyncStatus>,
    /// How many other databases this daemon syncs.
    pub hidden: u64,
}

/// How one synced database stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSyncStatus {
    /// The database.
    pub database: DatabasePath,
    /// Generations members have announced that this daemon has not received yet.
    pub behind: u64,
    /// Its syncgroups.
    pub syncgroups: Vec<SyncgroupStatus>,
}

/// One syncgroup of a synced database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncgroupStatus {
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<MemberStatus>,
}

/// One member of a syncgroup, as this daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its principal.
    pub name: String,
    /// Where it is reached, if known.
    pub address: Option<String>,
    /// Whether it is this daemon.
    pub this_daemon: bool,
    /// How long ago a round with it last succeeded (milliseconds), if one has since this daemon
    /// started.
    pub last_sync_ms_ago: Option<u64>,
}

impl Request {
    /// Checks what a caller controls in this request against the [`limits`](crate::limits)
    /// that a sender can check before sending (a value's size), so an oversize value fails
    /// with its own error instead of an oversize message on the wire.
    pub fn validate_sizes(&self) -> Result<(), crate::WireError> {
        match self {
            Request::Put { value, .. } => crate::validate_value(value),
            _ => Ok(()),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to return.
    Done,
    /// A yes or no.
    Bool(bool),
    /// Names, sorted.
    Names(Vec<String>),
    /// A row's value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Rows, in key order.
    Rows(#[serde(with = "rows_bytes")] Vec<(String, Vec<u8>)>),
    /// Permissions.
    Permissions(Permissions),
    /// A new batch.
    Batch(BatchHandle),
    /// How many rows a range delete removed.
    Deleted(u64),
    /// One commit's changes (or the last part of them), in a watch stream.
    Changes(Vec<Change>),
    /// Part of one commit's changes; the rest follows, ending with [`Response::Changes`].
    ChangesPart(Vec<Change>),
    /// The answer to [`Request::Status`].
    Status(StatusInfo),
    /// The answer to [`Request::LogStatus`].
    LogStatus(LogStatus),
    /// Bytes encoded by the sync engine (the answer to a [`PeerRequest`]).
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The answer to [`Request::SyncStatus`].
    SyncStatus(SyncStatus),
    /// The answer to [`Request::SyncNow`]: one report per member pulled from.
    Pulled(Vec<PullReport>),
    /// How a [`Request::JoinSyncgroup`] with `wait` is going; the answer follows.
    JoinProgress(JoinProgress),
}

/// How a join's first round is going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProgress {
    /// Bytes of the delta received so far.
    pub bytes: u64,
    /// Records of the delta applied so far (it is applied part by part as it arrives).
    pub records: u64,
    /// Whether its parts have started being applied.
    pub applying: bool,
}

/// Rows with each value encoded as one byte string, not byte by byte: the same bytes in
/// postcard, written and read as one slice.
mod rows_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        rows: &[(String, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            rows.iter()
                .map(|(key, value)| (key, serde_bytes::Bytes::new(value))),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let rows = Vec::<(String, serde_bytes::ByteBuf)>::deserialize(deserializer)?;
        Ok(rows
            .into_iter()
            .map(|(key, value)| (key, value.into_vec()))
            .collect())
    }
}
