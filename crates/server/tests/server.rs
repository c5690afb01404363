//! The service behind the dispatcher: the permission table over every call, the in-process
//! handler's streams, and what survives a restart on the persistent engine.

// Tests bound waits on real time as hang guards.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use syncbase_nosql::{Caller, Service, ServiceOptions};
use syncbase_server::{EngineKind, EngineOpener, Outcome, ServiceHandler, dispatch};
use syncbase_store::{Durability, ManualClock, SeededRng};
use syncbase_wire::{
    BatchHandle, BatchOptions, CollectionPath, DatabasePath, Handler, ObjectPath, PeerRequest,
    Permissions, Request, Response, RowRange, StatusInfo, SyncgroupSpec, Tag, WatchStart, codes,
};

fn open_service(dir: &std::path::Path, engine: EngineKind, seed: u64) -> Service {
    Service::open(ServiceOptions {
        root_dir: dir.to_path_buf(),
        opener: Arc::new(EngineOpener::new(engine, Durability::Relaxed)),
        owner_root: "alice".into(),
        clock: Arc::new(ManualClock::new(1_000)),
        rng: Arc::new(SeededRng::new(seed)),
        batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
        idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
        keep_open: None,
        log_retention: syncbase_store::Retention::default(),
    })
    .unwrap()
}

fn status() -> StatusInfo {
    StatusInfo {
        identity: "alice".into(),
        device_id: 0,
        address: String::new(),
        engine: "memory".into(),
        version: "test".into(),
    }
}

fn alice() -> Caller {
    Caller::new("alice")
}

fn bob() -> Caller {
    Caller::new("bob:x")
}

fn db() -> DatabasePath {
    DatabasePath {
        app: "app".into(),
        database: "db".into(),
    }
}

fn coll(name: &str) -> CollectionPath {
    CollectionPath {
        app: "app".into(),
        database: "db".into(),
        collection: name.into(),
    }
}

/// The level of the hierarchy a call needs its tag on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Service,
    App,
    Database,
    Collection,
}

/// What a call needs: a tag (or `None`: any tag) at a level, Resolve on every level above.
/// `exists` calls answer false instead of failing.
#[derive(Debug, Clone, Copy)]
struct Spec {
    level: Level,
    tag: Option<Tag>,
    answers_false: bool,
    no_tag_needed: bool,
    /// A second tag the call needs, at a level below (creating a syncgroup: Read on its
    /// collections besides Write on the database).
    also: Option<(Level, Tag)>,
    /// Only a daemon's sync engine runs it (it reaches peers): the service in process refuses
    /// it whatever the caller holds; the end-to-end tests cover it.
    engine_only: bool,
}

const fn needs(level: Level, tag: Tag) -> Spec {
    Spec {
        level,
        tag: Some(tag),
        answers_false: false,
        no_tag_needed: false,
        also: None,
        engine_only: false,
    }
}

const fn reach(level: Level) -> Spec {
    Spec {
        level,
        tag: None,
        answers_false: false,
        no_tag_needed: false,
        also: None,
        engine_only: false,
    }
}

const fn reads_or_false(level: Level, tag: Tag) -> Spec {
    Spec {
        level,
        tag: Some(tag),
        answers_false: true,
        no_tag_needed: false,
        also: None,
        engine_only: false,
    }
}

const fn exists(level: Level) -> Spec {
    Spec {
        level,
        tag: None,
        answers_false: true,
        no_tag_needed: false,
        also: None,
        engine_only: false,
    }
}

/// Lists every call once, with a sample request and its spec. The `match` below has no
/// wildcard: a new call in `Request` does not compile until it is added here.
macro_rules! calls {
    ($($variant:ident => $sample:expr, $spec:expr;)*) => {
        fn table() -> Vec<(&'static str, Request, Spec)> {
            vec![$((stringify!($variant), $sample, $spec)),*]
        }

        #[allow(dead_code)]
        fn every_call_is_listed(request: &Request) {
            match request {
                $(Request::$variant { .. } => {})*
            }
        }
    };
}

const STATUS: Spec = Spec {
    level: Level::Service,
    tag: None,
    answers_false: false,
    no_tag_needed: true,
    also: None,
    engine_only: false,
};

const ENGINE_ONLY: Spec = Spec {
    engine_only: true,
    ..STATUS
};

const CREATE_SYNCGROUP: Spec = Spec {
    also: Some((Level::Collection, Tag::Read)),
    ..needs(Level::Database, Tag::Write)
};

calls! {
    Status => Request::Status, STATUS;
    ListApps => Request::ListApps, needs(Level::Service, Tag::Read);
    GetPermissions => Request::GetPermissions { object: ObjectPath::Collection(coll("c")) }, needs(Level::Collection, Tag::Admin);
    SetPermissions => Request::SetPermissions { object: ObjectPath::App("app".into()), permissions: Permissions::all_tags_to("alice") }, needs(Level::App, Tag::Admin);
    CreateApp => Request::CreateApp { app: "new".into(), permissions: None }, needs(Level::Service, Tag::Write);
    DestroyApp => Request::DestroyApp { app: "app".into() }, needs(Level::App, Tag::Admin);
    AppExists => Request::AppExists { app: "app".into() }, exists(Level::App);
    ListDatabases => Request::ListDatabases { app: "app".into() }, needs(Level::App, Tag::Read);
    CreateDatabase => Request::CreateDatabase { database: DatabasePath { app: "app".into(), database: "new".into() }, permissions: None }, needs(Level::App, Tag::Write);
    DestroyDatabase => Request::DestroyDatabase { database: db() }, needs(Level::Database, Tag::Admin);
    DatabaseExists => Request::DatabaseExists { database: db() }, exists(Level::Database);
    ListCollections => Request::ListCollections { database: db() }, needs(Level::Database, Tag::Read);
    BeginBatch => Request::BeginBatch { database: db(), options: BatchOptions::default() }, reach(Level::Database);
    Commit => Request::Commit { database: db(), batch: BatchHandle(0) }, reach(Level::Database);
    Abort => Request::Abort { database: db(), batch: BatchHandle(0) }, reach(Level::Database);
    Watch => Request::Watch { database: db(), start: WatchStart::Now }, needs(Level::Database, Tag::Read);
    LogStatus => Request::LogStatus { database: db() }, needs(Level::Database, Tag::Admin);
    CreateCollection => Request::CreateCollection { collection: coll("new"), permissions: None }, needs(Level::Database, Tag::Write);
    DestroyCollection => Request::DestroyCollection { collection: coll("c") }, needs(Level::Collection, Tag::Admin);
    CollectionExists => Request::CollectionExists { collection: coll("c") }, exists(Level::Collection);
    Get => Request::Get { collection: coll("c"), key: "k".into(), batch: None }, needs(Level::Collection, Tag::Read);
    Put => Request::Put { collection: coll("c"), key: "k".into(), value: b"v".to_vec(), batch: None }, needs(Level::Collection, Tag::Write);
    Delete => Request::Delete { collection: coll("c"), key: "k".into(), batch: None }, needs(Level::Collection, Tag::Write);
    RowExists => Request::RowExists { collection: coll("c"), key: "k".into(), batch: None }, reads_or_false(Level::Collection, Tag::Read);
    Scan => Request::Scan { collection: coll("c"), range: RowRange::Prefix(String::new()), batch: None }, needs(Level::Collection, Tag::Read);
    DeleteRange => Request::DeleteRange { collection: coll("c"), range: RowRange::Prefix(String::new()), batch: None }, needs(Level::Collection, Tag::Write);
    ListSyncgroups => Request::ListSyncgroups { database: db() }, needs(Level::Database, Tag::Read);
    SyncStatus => Request::SyncStatus, STATUS;
    CreateSyncgroup => Request::CreateSyncgroup { database: db(), spec: SyncgroupSpec { name: "sg".into(), collections: vec!["c".into()], ..SyncgroupSpec::default() } }, CREATE_SYNCGROUP;
    JoinSyncgroup => Request::JoinSyncgroup { database: db(), name: "sg".into(), via: "127.0.0.1:1".into(), wait: false }, ENGINE_ONLY;
    Peer => Request::Peer(PeerRequest::Notify { database: db(), knowledge: Vec::new() }), ENGINE_ONLY;
    SyncNow => Request::SyncNow { database: db() }, ENGINE_ONLY;
}

/// Permissions at one level: everything for alice, plus `bob_tags` for bob.
fn grant(bob_tags: &[Tag]) -> Permissions {
    let mut permissions = Permissions::all_tags_to("alice");
    for tag in bob_tags {
        permissions
            .0
            .get_mut(tag)
            .unwrap()
            .allowed
            .push("bob".into());
    }
    permissions
}

/// A service where bob holds, at each level, what `bob_at` says; row `k` exists in `c`.
fn world(dir: &std::path::Path, bob_at: impl Fn(Level) -> Vec<Tag>) -> Service {
    let service = open_service(dir, EngineKind::Memory, 1);
    service
        .set_permissions(
            &alice(),
            &ObjectPath::Service,
            grant(&bob_at(Level::Service)),
        )
        .unwrap();
    service
        .create_app(&alice(), "app", Some(grant(&bob_at(Level::App))))
        .unwrap();
    service
        .create_database(&alice(), &db(), Some(grant(&bob_at(Level::Database))))
        .unwrap();
    let database = service.database(&alice(), &db()).unwrap();
    database
        .create_collection(&alice(), "c", Some(grant(&bob_at(Level::Collection))))
        .unwrap();
    database.put(&alice(), "c", "k", b"v", None).unwrap();
    service
}

fn minimal(spec: Spec, level: Level) -> Vec<Tag> {
    if spec.no_tag_needed {
        return Vec::new();
    }
    if let Some((also, tag)) = spec.also
        && also == level
    {
        return vec![tag];
    }
    match level.cmp(&spec.level) {
        std::cmp::Ordering::Less => vec![Tag::Resolve],
        std::cmp::Ordering::Equal => vec![spec.tag.unwrap_or(Tag::Resolve)],
        std::cmp::Ordering::Greater => Vec::new(),
    }
}

/// Runs `request` as `caller`; a batch call gets a fresh batch of that caller.
fn run(
    service: &Service,
    caller: &Caller,
    name: &str,
    request: &Request,
) -> Result<Response, String> {
    let batch = if matches!(name, "Commit" | "Abort") {
        match service
            .database(caller, &db())
            .and_then(|d| d.begin_batch(caller, BatchOptions::default()))
        {
            Ok(batch) => batch,
            Err(error) => return Err(error.code().to_string()),
        }
    } else {
        BatchHandle(0)
    };
    let request = match request.clone() {
        Request::Commit { database, .. } => Request::Commit { database, batch },
        Request::Abort { database, .. } => Request::Abort { database, batch },
        other => other,
    };
    match dispatch(service, caller, request, &status()) {
        Ok(Outcome::Response(response)) => Ok(response),
        Ok(Outcome::Rows(rows)) => rows
            .collect::<Result<Vec<_>, _>>()
            .map(Response::Rows)
            .map_err(|e| e.code().to_string()),
        Ok(Outcome::Watch(_)) => Ok(Response::Done),
        Err(error) => Err(error.code().to_string()),
    }
}

/// Whether the call answered as for a missing object: `nosql.no_exist`, or false for an exists
/// call.
fn as_if_missing(result: &Result<Response, String>, spec: Spec) -> bool {
    if spec.answers_false {
        result == &Ok(Response::Bool(false))
    } else {
        result.as_ref().err().map(String::as_str) == Some(codes::NO_EXIST)
    }
}

fn denied(result: &Result<Response, String>) -> bool {
    result.as_ref().err().map(String::as_str) == Some(codes::NO_ACCESS)
}

const LEVELS: [Level; 4] = [
    Level::Service,
    Level::App,
    Level::Database,
    Level::Collection,
];

#[test]
fn every_call_is_allowed_with_its_minimal_tags_and_refused_with_one_fewer() {
    for (name, request, spec) in table() {
        let dir = tempfile::tempdir().unwrap();
        if spec.engine_only {
            let service = world(dir.path(), |_| Tag::ALL.to_vec());
            let refused = run(&service, &alice(), name, &request);
            assert_eq!(
                refused,
                Err("sync.peer_unreachable".to_string()),
                "{name} in process"
            );
            continue;
        }
        let service = world(dir.path(), |level| minimal(spec, level));
        let allowed = run(&service, &bob(), name, &request);
        assert!(
            allowed.is_ok() && !as_if_missing(&allowed, spec),
            "{name}: with minimal tags: {allowed:?}"
        );
        if spec.no_tag_needed {
            continue;
        }
        // No tag left at a level (the object or an ancestor): bob cannot see the object, so
        // the answer is the one for a missing object.
        let deepest = spec
            .also
            .map_or(spec.level, |(level, _)| level.max(spec.level));
        for dropped in LEVELS.into_iter().filter(|level| *level <= deepest) {
            let dir = tempfile::tempdir().unwrap();
            let service = world(dir.path(), |level| {
                if level == dropped {
                    Vec::new()
                } else {
                    minimal(spec, level)
                }
            });
            let refused = run(&service, &bob(), name, &request);
            assert!(
                as_if_missing(&refused, spec),
                "{name}: without a tag at {dropped:?}: {refused:?}"
            );
        }
        // Another tag on the object instead of the one needed: bob sees it, and is told so.
        if let Some(needed) = spec.tag {
            let other = Tag::ALL.into_iter().find(|tag| *tag != needed).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let service = world(dir.path(), |level| {
                if level == spec.level {
                    vec![other]
                } else {
                    minimal(spec, level)
                }
            });
            let refused = run(&service, &bob(), name, &request);
            assert!(
                denied(&refused),
                "{name}: with {other:?} instead of {needed:?}: {refused:?}"
            );
        }
    }
}

/// The calls only an admin makes, on every level, each with a fresh world (they destroy).
fn admin_calls() -> Vec<Request> {
    let objects = [
        ObjectPath::Service,
        ObjectPath::App("app".into()),
        ObjectPath::Database(db()),
        ObjectPath::Collection(coll("c")),
    ];
    let mut calls = Vec::new();
    for object in objects {
        calls.push(Request::GetPermissions {
            object: object.clone(),
        });
        calls.push(Request::SetPermissions {
            object,
            permissions: grant(&[Tag::Admin]),
        });
    }
    calls.extend([
        Request::DestroyCollection {
            collection: coll("c"),
        },
        Request::DestroyDatabase { database: db() },
        Request::DestroyApp { app: "app".into() },
    ]);
    calls
}

#[test]
fn an_admin_of_the_service_manages_everything_below_it_but_reads_no_rows() {
    // bob holds Admin on the service and nothing on the app, the database or the collection.
    let bob_at = |level| {
        if level == Level::Service {
            vec![Tag::Admin]
        } else {
            Vec::new()
        }
    };
    for request in admin_calls() {
        let dir = tempfile::tempdir().unwrap();
        let service = world(dir.path(), bob_at);
        let answer = run(&service, &bob(), "admin", &request);
        assert!(answer.is_ok(), "{request:?}: {answer:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let service = world(dir.path(), bob_at);
    for (name, request, spec) in table() {
        if spec.level == Level::Service || spec.tag == Some(Tag::Admin) {
            continue;
        }
        let refused = run(&service, &bob(), name, &request);
        assert!(as_if_missing(&refused, spec), "{name}: {refused:?}");
    }
    // Admin on an app gives no such power over the databases below it.
    let dir = tempfile::tempdir().unwrap();
    let service = world(dir.path(), |level| match level {
        Level::Service => vec![Tag::Resolve],
        Level::App => vec![Tag::Admin],
        _ => Vec::new(),
    });
    for request in [
        Request::GetPermissions {
            object: ObjectPath::Database(db()),
        },
        Request::DestroyDatabase { database: db() },
        Request::DestroyCollection {
            collection: coll("c"),
        },
    ] {
        let refused = run(&service, &bob(), "admin", &request);
        assert_eq!(refused, Err(codes::NO_EXIST.to_string()), "{request:?}");
    }
}

#[test]
fn a_refusal_to_a_caller_who_cannot_see_looks_exactly_like_a_missing_object() {
    let dir = tempfile::tempdir().unwrap();
    let service = world(dir.path(), |level| {
        if level == Level::Collection {
            Vec::new()
        } else {
            vec![Tag::Resolve]
        }
    });
    let forbidden = run(
        &service,
        &bob(),
        "Get",
        &Request::Get {
            collection: coll("c"),
            key: "k".into(),
            batch: None,
        },
    );
    let missing_row = run(
        &service,
        &alice(),
        "Get",
        &Request::Get {
            collection: coll("c"),
            key: "absent".into(),
            batch: None,
        },
    );
    let missing_collection = run(
        &service,
        &bob(),
        "Get",
        &Request::Get {
            collection: coll("absent"),
            key: "k".into(),
            batch: None,
        },
    );
    assert_eq!(forbidden, missing_row);
    assert_eq!(forbidden, missing_collection);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_streams_scans_in_chunks_and_watches_live() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(world(dir.path(), |_| Vec::new()));
    let handler = ServiceHandler::new(service.clone(), alice(), Arc::new(status()));
    let rows = syncbase_wire::limits::SCAN_ROWS_PER_MESSAGE_MAX * 2 + 5;
    for index in 0..rows {
        let request = Request::Put {
            collection: coll("c"),
            key: format!("r{index:05}"),
            value: vec![1],
            batch: None,
        };
        handler.call(request).await.unwrap().one().await.unwrap();
    }
    let mut scan = handler
        .call(Request::Scan {
            collection: coll("c"),
            range: RowRange::Prefix("r".into()),
            batch: None,
        })
        .await
        .unwrap();
    let mut messages = 0;
    let mut seen = 0;
    while let Some(message) = scan.next().await {
        let Response::Rows(chunk) = message.unwrap() else {
            panic!("not rows")
        };
        messages += 1;
        seen += chunk.len();
    }
    assert_eq!((messages, seen), (3, rows));

    // The initial state is read in batches and arrives as one commit: parts, then `Changes`.
    let mut initial = handler
        .call(Request::Watch {
            database: db(),
            start: WatchStart::Initial,
        })
        .await
        .unwrap();
    let mut parts = 0;
    let mut state = Vec::new();
    loop {
        match initial.next().await.unwrap().unwrap() {
            Response::ChangesPart(part) => {
                parts += 1;
                state.extend(part);
            }
            Response::Changes(last) => {
                state.extend(last);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(parts >= 2, "{parts} parts");
    let scanned = state
        .iter()
        .filter(|change| change.key.starts_with('r'))
        .count();
    assert_eq!(scanned, rows);
    assert!(state.iter().all(|change| change.marker == state[0].marker));
    let position: u64 = state[0].marker.parse().unwrap();

    let mut watch = handler
        .call(Request::Watch {
            database: db(),
            start: WatchStart::Now,
        })
        .await
        .unwrap();
    handler
        .call(Request::Put {
            collection: coll("c"),
            key: "live".into(),
            value: b"x".to_vec(),
            batch: None,
        })
        .await
        .unwrap()
        .one()
        .await
        .unwrap();
    let Some(Ok(Response::Changes(changes))) = watch.next().await else {
        panic!("no changes")
    };
    assert_eq!(changes[0].key, "live");
    let Some(Ok(Response::Changes(after))) = initial.next().await else {
        panic!("no live changes after the initial state")
    };
    assert_eq!(after, changes);
    assert_eq!(after[0].marker, (position + 1).to_string());
    let missing = handler
        .call(Request::Get {
            collection: coll("c"),
            key: "nope".into(),
            batch: None,
        })
        .await;
    assert_eq!(
        missing.err().map(|e| e.code),
        Some(codes::NO_EXIST.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commits_and_scans_stream_in_bounded_messages() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(world(dir.path(), |_| Vec::new()));
    let handler = ServiceHandler::new(service.clone(), alice(), Arc::new(status()));
    let mut watch = handler
        .call(Request::Watch {
            database: db(),
            start: WatchStart::Now,
        })
        .await
        .unwrap();
    let database = service.database(&alice(), &db()).unwrap();
    let batch = database
        .begin_batch(&alice(), syncbase_wire::BatchOptions::default())
        .unwrap();
    let big = vec![3u8; 600 * 1024];
    for index in 0..4 {
        database
            .put(&alice(), "c", &format!("big{index}"), &big, Some(batch))
            .unwrap();
    }
    database.commit_batch(&alice(), batch).unwrap();
    let mut parts = 0;
    let mut changes = 0;
    loop {
        match watch.next().await.unwrap().unwrap() {
            Response::ChangesPart(part) => {
                parts += 1;
                changes += part.len();
            }
            Response::Changes(last) => {
                changes += last.len();
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(changes, 4);
    assert!(parts >= 1, "a 2.4 MB commit should be split");
    let mut scan = handler
        .call(Request::Scan {
            collection: coll("c"),
            range: RowRange::Prefix("big".into()),
            batch: None,
        })
        .await
        .unwrap();
    let mut messages = 0;
    let mut rows = 0;
    while let Some(message) = scan.next().await {
        let Response::Rows(chunk) = message.unwrap() else {
            panic!()
        };
        let bytes: usize = chunk
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        assert!(
            bytes < 2 * syncbase_wire::limits::STREAM_MESSAGE_BYTES_TARGET,
            "{bytes}"
        );
        messages += 1;
        rows += chunk.len();
    }
    assert_eq!((rows, messages > 1), (4, true));
}

#[test]
fn data_watch_markers_and_the_device_id_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (device_id, marker) = {
        let service = open_service(dir.path(), EngineKind::Persistent, 1);
        service.create_app(&alice(), "app", None).unwrap();
        service.create_database(&alice(), &db(), None).unwrap();
        let database = service.database(&alice(), &db()).unwrap();
        database.create_collection(&alice(), "c", None).unwrap();
        let mut watcher = database.watch(&alice(), &WatchStart::Now).unwrap();
        database.put(&alice(), "c", "before", b"1", None).unwrap();
        let marker = watcher.next_batch().unwrap().unwrap()[0].marker.clone();
        let id = service.device_id();
        service.close().unwrap();
        (id, marker)
    };
    let service = open_service(dir.path(), EngineKind::Persistent, 2);
    assert_eq!(service.device_id(), device_id);
    let database = service.database(&alice(), &db()).unwrap();
    assert_eq!(database.get(&alice(), "c", "before", None).unwrap(), b"1");
    let mut resumed = database.watch(&alice(), &WatchStart::From(marker)).unwrap();
    assert!(resumed.next_batch().unwrap().is_none());
    database.put(&alice(), "c", "after", b"2", None).unwrap();
    assert_eq!(resumed.next_batch().unwrap().unwrap()[0].key, "after");
    // Destroying a database removes its store from the set.
    service.destroy_database(&alice(), &db()).unwrap();
    drop((database, resumed));
    service.close().unwrap();
    drop(service);
    let set = syncbase_store_fjall::FjallStoreSet::open_dir(
        &dir.path().join("stores"),
        syncbase_store_fjall::FjallOptions::new(Durability::Durable),
    )
    .unwrap();
    assert_eq!(
        syncbase_store::StoreSet::names(&set).unwrap(),
        vec!["service"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_with_no_exist_when_its_database_is_destroyed_and_quietly_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(world(dir.path(), |_| Vec::new()));
    let handler = ServiceHandler::new(service.clone(), alice(), Arc::new(status()));
    let watch = |start| {
        let handler = handler.clone();
        async move {
            handler
                .call(Request::Watch {
                    database: db(),
                    start,
                })
                .await
                .unwrap()
        }
    };
    let mut watch_now = watch(WatchStart::Now).await;
    let mut watch_initial = watch(WatchStart::Initial).await;
    let Some(Ok(Response::Changes(initial))) = watch_initial.next().await else {
        panic!("no initial state")
    };
    assert_eq!(initial[0].key, "k");
    service.destroy_database(&alice(), &db()).unwrap();
    for stream in [&mut watch_now, &mut watch_initial] {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the watch did not end");
        let error = ended
            .expect("the watch ended without an error")
            .unwrap_err();
        assert_eq!(error.code, codes::NO_EXIST, "{error:?}");
        assert!(error.message.contains("destroyed"), "{error:?}");
        assert!(stream.next().await.is_none());
    }

    // A database closed because the service closes (the daemon stops) ends the watch quietly.
    service.create_database(&alice(), &db(), None).unwrap();
    let mut watch_closing = watch(WatchStart::Now).await;
    service.close().unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), watch_closing.next())
        .await
        .expect("the watch did not end");
    assert!(ended.is_none(), "{ended:?}");
}

/// Both fixture roots hold in `notes/main/todo`: k1, k2 overwritten, k3 deleted.
fn assert_first_rows(database: &syncbase_nosql::Database, user: &Caller) {
    assert_eq!(database.get(user, "todo", "k1", None).unwrap(), b"value 1");
    assert_eq!(
        database.get(user, "todo", "k2", None).unwrap(),
        b"value 2 again"
    );
    assert_eq!(
        database.get(user, "todo", "k3", None).unwrap_err().code(),
        codes::NO_EXIST
    );
}

/// Both fixture roots hold database `notes/second` with one row.
fn assert_second_database(service: &Service, user: &Caller) {
    let second = DatabasePath {
        app: "notes".into(),
        database: "second".into(),
    };
    assert_eq!(
        service
            .database(user, &second)
            .unwrap()
            .get(user, "c", "only", None)
            .unwrap(),
        b"second db row"
    );
}

/// Unpacks `tests/fixtures/NAME` (a root a previous build wrote) into a fresh directory.
fn extract_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// A root written by the build before many databases per daemon (layout 1: a fjall database per
/// store, store format 1), made with that build's `syncbased` and `sb` (app `notes`, databases
/// `main` and `second`, a destroyed `gone`, an overwrite, a delete, a collection's Read list
/// extended to `bob`), opens with everything in it, migrated to the current layout.
#[test]
fn a_root_written_by_layout_1_is_migrated_with_all_its_data() {
    let dir = extract_fixture("layout-v1.tar.gz");
    let root = dir.path().join("root");
    let user = Caller::new("user");
    let main = DatabasePath {
        app: "notes".into(),
        database: "main".into(),
    };
    let third = DatabasePath {
        app: "notes".into(),
        database: "third".into(),
    };
    for round in 0..2 {
        let service = open_service(&root, EngineKind::Persistent, 5);
        assert_eq!(service.device_id(), 0xdd79_656c_ade7_2200);
        assert_eq!(service.list_apps(&user).unwrap(), vec!["notes"]);
        let mut expected = vec!["main", "second"];
        if round == 1 {
            expected.push("third");
        }
        assert_eq!(service.list_databases(&user, "notes").unwrap(), expected);
        let database = service.database(&user, &main).unwrap();
        assert_first_rows(&database, &user);
        let read = service
            .permissions(&user, &ObjectPath::Collection(coll_of(&main, "todo")))
            .unwrap();
        assert!(read.grants(Tag::Read, "bob"), "{read:?}");
        assert!(!read.grants(Tag::Write, "bob"), "{read:?}");
        assert_second_database(&service, &user);
        if round == 0 {
            // A database created after the migration gets an id of its own.
            service.create_database(&user, &third, None).unwrap();
            let database = service.database(&user, &third).unwrap();
            database.create_collection(&user, "c", None).unwrap();
            database.put(&user, "c", "k", b"new", None).unwrap();
        } else {
            let database = service.database(&user, &third).unwrap();
            assert_eq!(database.get(&user, "c", "k", None).unwrap(), b"new");
        }
        service.close().unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
            "syncbase-layout 3"
        );
        for gone in ["service", "databases", "trash"] {
            assert!(!root.join(gone).exists(), "{gone} is left");
        }
    }
}

/// A root written by the build before watchable format 2 (layout 2, watchable format 1), made
/// with that build's `syncbased` and `sb`: app `notes`, databases `main` (k1, k2 overwritten, k3
/// deleted, many1..many20; watch log up to marker 26) and `second`. It opens migrated: every row
/// reads back; the old log is gone, so a watch from an old marker is told to start again, while
/// one from the last marker resumes and sees the next change.
#[test]
fn a_root_written_with_watchable_format_1_is_migrated_with_all_its_data() {
    let dir = extract_fixture("layout-v2-watchable-v1.tar.gz");
    let root = dir.path().join("root");
    let user = Caller::new("user");
    let main = DatabasePath {
        app: "notes".into(),
        database: "main".into(),
    };
    for round in 0..2 {
        let service = open_service(&root, EngineKind::Persistent, 5);
        assert_eq!(service.device_id(), 0xf749_bb82_b21b_7b97);
        assert_eq!(
            service.list_databases(&user, "notes").unwrap(),
            ["main", "second"]
        );
        let database = service.database(&user, &main).unwrap();
        assert_first_rows(&database, &user);
        for index in 1..=20 {
            let key = format!("many{index}");
            let value = if round == 1 && index == 1 {
                b"changed".to_vec()
            } else {
                format!("v{index}").into_bytes()
            };
            assert_eq!(database.get(&user, "todo", &key, None).unwrap(), value);
        }
        assert_second_database(&service, &user);
        if round == 0 {
            let expired = database
                .watch(&user, &WatchStart::From("6".into()))
                .err()
                .unwrap();
            assert_eq!(expired.code(), codes::MARKER_EXPIRED);
            let mut resumed = database
                .watch(&user, &WatchStart::From("26".into()))
                .unwrap();
            assert!(resumed.next_batch().unwrap().is_none());
            database
                .put(&user, "todo", "many1", b"changed", None)
                .unwrap();
            let changes = resumed.next_batch().unwrap().unwrap();
            assert_eq!(
                (changes[0].marker.as_str(), changes[0].key.as_str()),
                ("27", "many1")
            );
        }
        service.close().unwrap();
        // Layout 2 is stamped 3 (what it holds reads as it is; sync's DAG migrates when it opens).
        assert_eq!(
            std::fs::read_to_string(root.join("FORMAT")).unwrap().trim(),
            "syncbase-layout 3"
        );
    }
}

fn coll_of(database: &DatabasePath, collection: &str) -> CollectionPath {
    CollectionPath {
        app: database.app.clone(),
        database: database.database.clone(),
        collection: collection.into(),
    }
}

/// Destroying databases while a process is killed at random points (SIGKILL, seeded): after
/// each restart every database is whole or gone, never half; a database whose create was
/// reported is there with all its rows unless its destroy began; one whose destroy was reported
/// is gone; and no store or stray key of a destroyed database is left behind.
mod destroy_crash {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use syncbase_nosql::{Caller, Service, ServiceOptions};
    use syncbase_server::{EngineKind, EngineOpener};
    use syncbase_store::{Durability, EntropyRng, ManualClock, Rng, SeededRng, StoreSet};
    use syncbase_wire::{BatchOptions, DatabasePath};

    const CHILD_ENV: &str = "SYNCBASE_DESTROY_CRASH_DIR";
    /// Enough rows that a destroy's purge takes a few milliseconds, for kills to land in.
    const ROWS: usize = 2_000;
    const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    fn open(root: &std::path::Path) -> Service {
        Service::open(ServiceOptions {
            root_dir: root.to_path_buf(),
            opener: Arc::new(EngineOpener::new(
                EngineKind::Persistent,
                Durability::Durable,
            )),
            owner_root: "alice".into(),
            clock: Arc::new(ManualClock::new(1_000)),
            // Version ids must not repeat across restarts.
            rng: Arc::new(EntropyRng::default()),
            batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
            idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
            keep_open: None,
            log_retention: syncbase_store::Retention::default(),
        })
        .unwrap()
    }

    fn path(index: u64) -> DatabasePath {
        DatabasePath {
            app: "app".into(),
            database: format!("d{index:06}"),
        }
    }

    /// Runs only in the child: creates databases (a collection, rows in one batch) and
    /// destroys each one two creations later, reporting each step once it returned.
    #[test]
    fn destroy_crash_child() {
        let Ok(dir) = std::env::var(CHILD_ENV) else {
            return;
        };
        let first: u64 = std::env::var("SYNCBASE_DESTROY_CRASH_FIRST")
            .unwrap()
            .parse()
            .unwrap();
        let service = open(std::path::Path::new(&dir));
        let alice = Caller::new("alice");
        if !service.app_exists(&alice, "app").unwrap() {
            service.create_app(&alice, "app", None).unwrap();
        }
        let mut out = std::io::stdout();
        for index in first.. {
            service.create_database(&alice, &path(index), None).unwrap();
            let database = service.database(&alice, &path(index)).unwrap();
            database.create_collection(&alice, "c", None).unwrap();
            let batch = database
                .begin_batch(&alice, BatchOptions::default())
                .unwrap();
            for row in 0..ROWS {
                database
                    .put(&alice, "c", &format!("r{row:05}"), &[7; 100], Some(batch))
                    .unwrap();
            }
            database.commit_batch(&alice, batch).unwrap();
            writeln!(out, "CREATED {index}").unwrap();
            if index >= first + 2 {
                writeln!(out, "DESTROYING {}", index - 2).unwrap();
                out.flush().unwrap();
                service.destroy_database(&alice, &path(index - 2)).unwrap();
                writeln!(out, "DESTROYED {}", index - 2).unwrap();
            }
            out.flush().unwrap();
        }
    }

    #[test]
    fn destroyed_databases_are_whole_or_gone_after_kill_9() {
        for seed in 1..=8u64 {
            let dir = tempfile::tempdir().unwrap();
            let rng = SeededRng::new(seed);
            let mut events: BTreeMap<u64, BTreeSet<&'static str>> = BTreeMap::new();
            for run in 0..2u64 {
                let kill_after = 1 + rng.next_u64() % 30;
                let mut child = Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "destroy_crash::destroy_crash_child",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_ENV, dir.path())
                    .env("SYNCBASE_DESTROY_CRASH_FIRST", (run * 100_000).to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let stdout = child.stdout.take().unwrap();
                let (sender, receiver) = std::sync::mpsc::channel::<String>();
                let reader = std::thread::spawn(move || {
                    // Only the child's reports (not the test harness's own lines).
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if line.starts_with("CREATED ") || line.starts_with("DESTROY") {
                            let _ = sender.send(line);
                        }
                    }
                });
                let mut seen = 0;
                let mut last_destroying = false;
                let mut record = |line: String| {
                    let (event, index) = line.split_once(' ').expect("a report");
                    let event = match event {
                        "CREATED" => "created",
                        "DESTROYING" => "destroying",
                        "DESTROYED" => "destroyed",
                        other => panic!("unexpected report {other}"),
                    };
                    events
                        .entry(index.parse().unwrap())
                        .or_default()
                        .insert(event);
                };
                // Most kills aim inside a destroy; the rest anywhere.
                let inside_destroy = !rng.next_u64().is_multiple_of(4);
                while seen < kill_after || (inside_destroy && !last_destroying) {
                    match receiver.recv_timeout(STALL_TIMEOUT) {
                        Ok(line) => {
                            last_destroying = line.starts_with("DESTROYING");
                            record(line);
                            seen += 1;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            let _ = child.kill();
                            panic!("seed {seed} run {run}: the child stalled");
                        }
                    }
                }
                if last_destroying {
                    // Inside the destroy: its unregistering, its purge or the sync after it.
                    std::thread::sleep(std::time::Duration::from_micros(rng.next_u64() % 15_000));
                }
                child.kill().unwrap();
                reader.join().unwrap();
                for line in receiver.try_iter() {
                    record(line);
                }
                child.wait().unwrap();
                assert!(seen > 0, "seed {seed}: the child reported nothing");
                verify(dir.path(), seed, &events);
            }
        }
    }

    fn verify(root: &std::path::Path, seed: u64, events: &BTreeMap<u64, BTreeSet<&'static str>>) {
        let service = open(root);
        let alice = Caller::new("alice");
        let listed: BTreeSet<String> = service
            .list_databases(&alice, "app")
            .unwrap()
            .into_iter()
            .collect();
        for name in &listed {
            let database = service
                .database(
                    &alice,
                    &DatabasePath {
                        app: "app".into(),
                        database: name.clone(),
                    },
                )
                .unwrap();
            let rows = match database.scan(
                &alice,
                "c",
                &syncbase_wire::RowRange::Prefix(String::new()),
                None,
            ) {
                Ok(stream) => stream.count(),
                // Killed between creating the database and its collection.
                Err(error) if error.code() == syncbase_wire::codes::NO_EXIST => 0,
                Err(error) => panic!("seed {seed}: {name}: {error}"),
            };
            // Whole, or (only if its creation was never reported) not yet filled.
            let index: u64 = name[1..].parse().unwrap();
            let reported = events
                .get(&index)
                .is_some_and(|seen| seen.contains("created"));
            assert!(
                rows == ROWS || (rows == 0 && !reported),
                "seed {seed}: {name} has {rows} of {ROWS} rows"
            );
        }
        for (index, seen) in events {
            let name = path(*index).database;
            if seen.contains("destroyed") {
                assert!(
                    !listed.contains(&name),
                    "seed {seed}: destroyed {name} is back"
                );
            } else if seen.contains("created") && !seen.contains("destroying") {
                assert!(
                    listed.contains(&name),
                    "seed {seed}: created {name} is gone"
                );
                let database = service.database(&alice, &path(*index)).unwrap();
                let rows = database
                    .scan(
                        &alice,
                        "c",
                        &syncbase_wire::RowRange::Prefix(String::new()),
                        None,
                    )
                    .unwrap()
                    .count();
                assert_eq!(rows, ROWS, "seed {seed}: {name}");
            }
        }
        service.close().unwrap();
        drop(service);
        let set = syncbase_store_fjall::FjallStoreSet::open_dir(
            &root.join("stores"),
            syncbase_store_fjall::FjallOptions::new(Durability::Durable),
        )
        .unwrap();
        assert_eq!(
            set.names().unwrap().len(),
            1 + listed.len(),
            "seed {seed}: a store without a database record is left"
        );
        assert_eq!(
            set.unregistered_keys().unwrap(),
            (0, vec![]),
            "seed {seed}: keys of a destroyed store are left"
        );
        set.close().unwrap();
    }
}

/// The sync status shows a caller the synced databases it can see, and only counts the rest.
#[test]
fn sync_status_names_what_the_caller_sees_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let service = world(dir.path(), |_| Vec::new());
    let create = Request::CreateSyncgroup {
        database: db(),
        spec: SyncgroupSpec {
            name: "sg".into(),
            collections: vec!["c".into()],
            ..SyncgroupSpec::default()
        },
    };
    run(&service, &alice(), "CreateSyncgroup", &create).unwrap();
    let Ok(Response::SyncStatus(seen)) =
        run(&service, &alice(), "SyncStatus", &Request::SyncStatus)
    else {
        panic!("a sync status")
    };
    assert_eq!((seen.databases.len(), seen.hidden), (1, 0));
    let members = &seen.databases[0].syncgroups[0].members;
    assert_eq!(members.len(), 1);
    assert!(members[0].this_daemon && members[0].name == "alice");
    assert_eq!(members[0].last_sync_ms_ago, None);
    let Ok(Response::SyncStatus(counted)) =
        run(&service, &bob(), "SyncStatus", &Request::SyncStatus)
    else {
        panic!("a sync status")
    };
    assert_eq!((counted.databases.len(), counted.hidden), (0, 1));
}
