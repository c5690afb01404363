//! The data model end to end, embedded: hierarchy, rows, permissions, batches and watch.

use std::sync::Arc;
use std::time::Duration;

use syncbase_nosql::{Caller, MemoryStoreSetOpener, Service, ServiceOptions};
use syncbase_store::{ManualClock, SeededRng, Stream};
use syncbase_util::keys::{self, Prefix};
use syncbase_wire::{
    AccessList, BatchOptions, ChangeKind, CollectionPath, DatabasePath, ObjectPath, Permissions,
    RowRange, Tag, WatchStart, codes,
};

struct Fixture {
    service: Service,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_on(Arc::new(MemoryStoreSetOpener))
}

/// A service whose stores come from `opener`.
fn fixture_on(opener: Arc<dyn syncbase_nosql::StoreSetOpener>) -> Fixture {
    fixture_seeded(opener, 7)
}

/// A service whose stores come from `opener` and whose ids (its device id first) from `seed`.
fn fixture_seeded(opener: Arc<dyn syncbase_nosql::StoreSetOpener>, seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let service = Service::open(ServiceOptions {
        root_dir: dir.path().to_path_buf(),
        opener,
        owner_root: "alice".into(),
        clock: clock.clone(),
        rng: Arc::new(SeededRng::new(seed)),
        batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
        idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
        keep_open: None,
        log_retention: syncbase_store::Retention::default(),
    })
    .unwrap();
    Fixture {
        service,
        clock,
        _dir: dir,
    }
}

fn alice() -> Caller {
    Caller::new("alice:laptop")
}

fn db_path() -> DatabasePath {
    DatabasePath {
        app: "notes".into(),
        database: "main".into(),
    }
}

fn coll_path() -> CollectionPath {
    CollectionPath {
        app: "notes".into(),
        database: "main".into(),
        collection: "todo".into(),
    }
}

/// app notes, database main, collection todo, all created by alice.
fn populated() -> Fixture {
    populate(fixture())
}

/// Creates app notes, database main and collection todo in `fixture`, as alice.
fn populate(fixture: Fixture) -> Fixture {
    let service = &fixture.service;
    service.create_app(&alice(), "notes", None).unwrap();
    service.create_database(&alice(), &db_path(), None).unwrap();
    let database = service.database(&alice(), &db_path()).unwrap();
    database.create_collection(&alice(), "todo", None).unwrap();
    fixture
}

fn code<T>(result: syncbase_nosql::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(error) => error.code().to_string(),
    }
}

#[test]
fn the_hierarchy_can_be_created_listed_and_destroyed() {
    let fixture = populated();
    let service = &fixture.service;
    assert_eq!(service.list_apps(&alice()).unwrap(), vec!["notes"]);
    assert_eq!(
        service.list_databases(&alice(), "notes").unwrap(),
        vec!["main"]
    );
    let database = service.database(&alice(), &db_path()).unwrap();
    assert_eq!(database.list_collections().unwrap(), vec!["todo"]);
    assert!(service.app_exists(&alice(), "notes").unwrap());
    assert!(service.database_exists(&alice(), &db_path()).unwrap());
    assert!(database.collection_exists(&alice(), "todo").unwrap());
    assert_eq!(
        code(service.create_app(&alice(), "notes", None)),
        codes::EXIST
    );
    assert_eq!(
        code(database.create_collection(&alice(), "todo", None)),
        codes::EXIST
    );
    assert_eq!(
        code(service.create_app(&alice(), "a/b", None)),
        codes::INVALID_NAME
    );

    database.put(&alice(), "todo", "k", b"v", None).unwrap();
    service.destroy_collection(&alice(), &coll_path()).unwrap();
    assert!(!database.collection_exists(&alice(), "todo").unwrap());
    database.create_collection(&alice(), "todo", None).unwrap();
    assert_eq!(
        code(database.get(&alice(), "todo", "k", None)),
        codes::NO_EXIST
    );

    service.destroy_database(&alice(), &db_path()).unwrap();
    assert!(!service.database_exists(&alice(), &db_path()).unwrap());
    assert_eq!(
        code(database.get(&alice(), "todo", "k", None)),
        "store.closed"
    );
    service.destroy_app(&alice(), "notes").unwrap();
    assert!(service.list_apps(&alice()).unwrap().is_empty());
}

#[test]
fn rows_support_get_put_delete_exists_scan_and_range_delete() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    for key in ["a", "b/1", "b/2", "b/3", "c", "bb"] {
        database
            .put(&alice(), "todo", key, key.as_bytes(), None)
            .unwrap();
    }
    assert_eq!(database.get(&alice(), "todo", "b/2", None).unwrap(), b"b/2");
    assert!(database.row_exists(&alice(), "todo", "c", None).unwrap());
    assert!(!database.row_exists(&alice(), "todo", "zz", None).unwrap());
    let keys = |range: RowRange| -> Vec<String> {
        database
            .scan(&alice(), "todo", &range, None)
            .unwrap()
            .map(|row| row.unwrap().0)
            .collect()
    };
    assert_eq!(
        keys(RowRange::Prefix("b/".into())),
        vec!["b/1", "b/2", "b/3"]
    );
    assert_eq!(keys(RowRange::Prefix(String::new())).len(), 6);
    let range = RowRange::Range {
        start: "b".into(),
        limit: "c".into(),
    };
    assert_eq!(keys(range.clone()), vec!["b/1", "b/2", "b/3", "bb"]);
    assert_eq!(
        database
            .delete_range(&alice(), "todo", &range, None)
            .unwrap(),
        4
    );
    assert_eq!(keys(RowRange::Prefix(String::new())), vec!["a", "c"]);
    database.delete(&alice(), "todo", "a", None).unwrap();
    database.delete(&alice(), "todo", "never", None).unwrap();
    assert_eq!(
        code(database.get(&alice(), "todo", "a", None)),
        codes::NO_EXIST
    );
    let big = vec![0u8; syncbase_wire::limits::VALUE_BYTES_MAX + 1];
    assert_eq!(
        code(database.put(&alice(), "todo", "big", &big, None)),
        codes::VALUE_TOO_LARGE
    );
    assert_eq!(
        code(database.put(&alice(), "todo", "", b"v", None)),
        codes::INVALID_NAME
    );
}

#[test]
fn a_stranger_cannot_tell_forbidden_from_missing_until_it_can_see() {
    let fixture = populated();
    let service = &fixture.service;
    let database = service.database(&alice(), &db_path()).unwrap();
    database
        .put(&alice(), "todo", "secret", b"v", None)
        .unwrap();
    let bob = Caller::new("bob:x");
    // bob cannot even reach the database: the service and app grant him nothing.
    assert_eq!(code(service.database(&bob, &db_path())), codes::NO_EXIST);
    let missing = DatabasePath {
        app: "notes".into(),
        database: "nope".into(),
    };
    assert_eq!(code(service.database(&bob, &missing)), codes::NO_EXIST);
    // Let bob resolve the service, app and database, then grant Read on the collection.
    let resolve = |permissions: &mut Permissions| {
        permissions.0.insert(
            Tag::Resolve,
            AccessList {
                allowed: vec!["alice".into(), "bob".into()],
                denied: vec![],
            },
        );
    };
    for object in [
        ObjectPath::Service,
        ObjectPath::App("notes".into()),
        ObjectPath::Database(db_path()),
    ] {
        let mut permissions = service.permissions(&alice(), &object).unwrap();
        resolve(&mut permissions);
        service
            .set_permissions(&alice(), &object, permissions)
            .unwrap();
    }
    let database_as_bob = service.database(&bob, &db_path()).unwrap();
    assert_eq!(
        code(database_as_bob.get(&bob, "todo", "secret", None)),
        codes::NO_EXIST
    );
    assert_eq!(
        code(database_as_bob.get(&bob, "todo", "absent", None)),
        codes::NO_EXIST
    );
    assert!(
        !database_as_bob
            .row_exists(&bob, "todo", "secret", None)
            .unwrap()
    );
    let collection = ObjectPath::Collection(coll_path());
    let mut permissions = service.permissions(&alice(), &collection).unwrap();
    permissions.0.insert(
        Tag::Read,
        AccessList {
            allowed: vec!["alice".into(), "bob:x".into()],
            denied: vec![],
        },
    );
    service
        .set_permissions(&alice(), &collection, permissions.clone())
        .unwrap();
    assert_eq!(
        database_as_bob.get(&bob, "todo", "secret", None).unwrap(),
        b"v"
    );
    // bob sees the collection now: lacking a tag is said plainly.
    assert_eq!(
        code(database_as_bob.put(&bob, "todo", "k", b"v", None)),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(service.permissions(&bob, &collection)),
        codes::NO_ACCESS
    );
    // Revoke: bob holds no tag on the collection, and is back to not knowing the row exists.
    permissions.0.insert(
        Tag::Read,
        AccessList {
            allowed: vec!["alice".into()],
            denied: vec![],
        },
    );
    service
        .set_permissions(&alice(), &collection, permissions)
        .unwrap();
    assert_eq!(
        code(database_as_bob.get(&bob, "todo", "secret", None)),
        code(database_as_bob.get(&bob, "todo", "absent", None))
    );
}

#[test]
fn batches_see_their_own_writes_and_conflict_on_what_they_read() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    database
        .put(&alice(), "todo", "counter", b"0", None)
        .unwrap();
    let first = database
        .begin_batch(&alice(), BatchOptions::default())
        .unwrap();
    let second = database
        .begin_batch(&alice(), BatchOptions::default())
        .unwrap();
    for batch in [first, second] {
        database
            .get(&alice(), "todo", "counter", Some(batch))
            .unwrap();
        database
            .put(&alice(), "todo", "counter", b"1", Some(batch))
            .unwrap();
    }
    assert_eq!(
        database
            .get(&alice(), "todo", "counter", Some(first))
            .unwrap(),
        b"1"
    );
    assert_eq!(
        database.get(&alice(), "todo", "counter", None).unwrap(),
        b"0"
    );
    database.commit_batch(&alice(), first).unwrap();
    assert_eq!(
        code(database.commit_batch(&alice(), second)),
        codes::CONCURRENT_BATCH
    );
    assert_eq!(
        code(database.commit_batch(&alice(), first)),
        codes::UNKNOWN_BATCH
    );

    let read_only = database
        .begin_batch(&alice(), BatchOptions { read_only: true })
        .unwrap();
    database
        .put(&alice(), "todo", "counter", b"2", None)
        .unwrap();
    assert_eq!(
        database
            .get(&alice(), "todo", "counter", Some(read_only))
            .unwrap(),
        b"1"
    );
    assert_eq!(
        code(database.put(&alice(), "todo", "x", b"v", Some(read_only))),
        codes::READ_ONLY_BATCH
    );
    assert_eq!(
        code(database.get(
            &Caller::new("alice:phone"),
            "todo",
            "counter",
            Some(read_only)
        )),
        codes::UNKNOWN_BATCH
    );
    database.abort_batch(&alice(), read_only).unwrap();
}

#[test]
fn a_caller_may_hold_only_so_many_batches() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    for _ in 0..syncbase_wire::limits::BATCHES_PER_CALLER_MAX {
        database
            .begin_batch(&alice(), BatchOptions::default())
            .unwrap();
    }
    let refused = database.begin_batch(&alice(), BatchOptions::default());
    assert_eq!(code(refused), codes::TOO_MANY_BATCHES);
    database
        .begin_batch(&Caller::new("alice:phone"), BatchOptions::default())
        .unwrap();
}

#[test]
fn an_abandoned_batch_expires_after_the_idle_timeout() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    let batch = database
        .begin_batch(&alice(), BatchOptions::default())
        .unwrap();
    database
        .put(&alice(), "todo", "k", b"v", Some(batch))
        .unwrap();
    fixture
        .clock
        .advance(syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT - 1);
    database.get(&alice(), "todo", "k", Some(batch)).unwrap();
    fixture
        .clock
        .advance(syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT - 1);
    assert_eq!(database.open_batches(), 1);
    fixture.clock.advance(1);
    assert_eq!(database.open_batches(), 0);
    assert_eq!(
        code(database.commit_batch(&alice(), batch)),
        codes::UNKNOWN_BATCH
    );
    assert_eq!(
        code(database.get(&alice(), "todo", "k", None)),
        codes::NO_EXIST
    );
}

#[test]
fn watch_streams_commits_from_now_from_a_marker_and_with_the_initial_state() {
    let fixture = populated();
    let service = &fixture.service;
    let database = service.database(&alice(), &db_path()).unwrap();
    // alice may write to "hidden" but not read it: its rows never reach her watch.
    let mut write_only = Permissions::all_tags_to("alice");
    write_only.0.remove(&Tag::Read);
    database
        .create_collection(&alice(), "hidden", Some(write_only))
        .unwrap();
    database
        .put(&alice(), "hidden", "h1", b"secret", None)
        .unwrap();
    database
        .put(&alice(), "todo", "before", b"1", None)
        .unwrap();
    let mut from_now = database.watch(&alice(), &WatchStart::Now).unwrap();
    let mut initial = database.watch(&alice(), &WatchStart::Initial).unwrap();
    assert!(from_now.next_batch().unwrap().is_none());
    let state = initial.next_batch().unwrap().unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].key, "before");

    let batch = database
        .begin_batch(&alice(), BatchOptions::default())
        .unwrap();
    database
        .put(&alice(), "todo", "x", b"2", Some(batch))
        .unwrap();
    database
        .delete(&alice(), "todo", "before", Some(batch))
        .unwrap();
    database
        .put(&alice(), "hidden", "h2", b"secret", Some(batch))
        .unwrap();
    database.commit_batch(&alice(), batch).unwrap();
    database
        .put(&alice(), "hidden", "h3", b"secret", None)
        .unwrap();
    database.put(&alice(), "todo", "y", b"3", None).unwrap();

    let first = from_now
        .next_blocking(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        (first[0].key.as_str(), &first[0].kind),
        ("x", &ChangeKind::Put(b"2".to_vec()))
    );
    assert_eq!(
        (first[1].key.as_str(), &first[1].kind),
        ("before", &ChangeKind::Delete)
    );
    assert!(!first[0].from_sync);
    let second = from_now.next_batch().unwrap().unwrap();
    assert_eq!(second[0].key, "y");
    assert!(from_now.next_batch().unwrap().is_none());
    assert_eq!(initial.next_batch().unwrap().unwrap(), first);

    let mut resumed = database
        .watch(&alice(), &WatchStart::From(first[0].marker.clone()))
        .unwrap();
    assert_eq!(resumed.next_batch().unwrap().unwrap(), second);
    assert_eq!(
        code(database.watch(&alice(), &WatchStart::From("garbage".into()))),
        codes::BAD_MARKER
    );
    assert_eq!(
        code(database.watch(&alice(), &WatchStart::From("999999".into()))),
        codes::BAD_MARKER
    );
}

#[test]
fn the_initial_state_streams_from_its_snapshot_in_bounded_batches_then_live_commits() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    // Rows sort by collection: "hidden" (alice may write but not read it), "todo", then "zz".
    let mut write_only = Permissions::all_tags_to("alice");
    write_only.0.remove(&Tag::Read);
    database
        .create_collection(&alice(), "hidden", Some(write_only))
        .unwrap();
    database.create_collection(&alice(), "zz", None).unwrap();
    let rows_max = syncbase_wire::limits::SCAN_ROWS_PER_MESSAGE_MAX;
    let bytes_max = syncbase_wire::limits::STREAM_MESSAGE_BYTES_TARGET;
    let todo_rows = rows_max + rows_max / 2;
    let big = vec![7u8; bytes_max * 3 / 5];
    let batch = database
        .begin_batch(&alice(), BatchOptions::default())
        .unwrap();
    for index in 0..300 {
        let key = format!("h{index:05}");
        database
            .put(&alice(), "hidden", &key, b"secret", Some(batch))
            .unwrap();
    }
    for index in 0..todo_rows {
        let key = format!("r{index:05}");
        database
            .put(&alice(), "todo", &key, b"old", Some(batch))
            .unwrap();
    }
    for index in 0..3 {
        let key = format!("big{index}");
        database
            .put(&alice(), "zz", &key, &big, Some(batch))
            .unwrap();
    }
    for index in 0..10 {
        let key = format!("small{index}");
        database
            .put(&alice(), "zz", &key, b"s", Some(batch))
            .unwrap();
    }
    database.commit_batch(&alice(), batch).unwrap();

    let mut watcher = database.watch(&alice(), &WatchStart::Initial).unwrap();
    assert!(watcher.initial_state_remains());
    let first = watcher.next_batch().unwrap().unwrap();
    assert!(watcher.commit_continues());
    // Commits after the watch began change nothing in its initial state; they follow it.
    database
        .put(&alice(), "todo", "r01400", b"new", None)
        .unwrap();
    database.delete(&alice(), "zz", "big2", None).unwrap();
    database
        .put(&alice(), "hidden", "h99999", b"secret", None)
        .unwrap();
    let mut batches = vec![first];
    while watcher.commit_continues() {
        batches.push(watcher.next_batch().unwrap().unwrap());
    }
    assert!(!watcher.initial_state_remains());
    assert!(batches.len() >= 4, "{} batches", batches.len());
    for batch in &batches {
        let bytes: usize = batch
            .iter()
            .map(|change| match &change.kind {
                ChangeKind::Put(value) => change.collection.len() + change.key.len() + value.len(),
                ChangeKind::Delete => panic!("a delete in the initial state"),
            })
            .sum();
        assert!(
            !batch.is_empty() && batch.len() <= rows_max,
            "{}",
            batch.len()
        );
        assert!(bytes <= bytes_max || batch.len() == 1, "{bytes} bytes");
    }
    let state: Vec<_> = batches.into_iter().flatten().collect();
    let marker = state[0].marker.clone();
    assert!(state.iter().all(|change| change.marker == marker));
    assert!(state.iter().all(|change| change.collection != "hidden"));
    assert!(!state.iter().any(|change| change.from_sync));
    assert_eq!(state.len(), todo_rows + 13);
    let order: Vec<_> = state
        .iter()
        .map(|change| (change.collection.clone(), change.key.clone()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(order, sorted);
    let old = state.iter().find(|change| change.key == "r01400").unwrap();
    assert_eq!(old.kind, ChangeKind::Put(b"old".to_vec()));
    assert!(state.iter().any(|change| change.key == "big2"));

    let position: u64 = marker.parse().unwrap();
    let put = watcher.next_batch().unwrap().unwrap();
    assert!(!watcher.commit_continues());
    assert_eq!(
        (put[0].marker.clone(), put[0].key.as_str(), &put[0].kind),
        (
            (position + 1).to_string(),
            "r01400",
            &ChangeKind::Put(b"new".to_vec())
        )
    );
    let delete = watcher.next_batch().unwrap().unwrap();
    assert_eq!(
        (delete[0].key.as_str(), &delete[0].kind),
        ("big2", &ChangeKind::Delete)
    );
    assert!(watcher.next_batch().unwrap().is_none());
}

#[test]
fn an_initial_state_with_no_readable_row_is_skipped() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    let mut write_only = Permissions::all_tags_to("alice");
    write_only.0.remove(&Tag::Read);
    database
        .create_collection(&alice(), "hidden", Some(write_only))
        .unwrap();
    database
        .put(&alice(), "hidden", "h", b"secret", None)
        .unwrap();
    let mut watcher = database.watch(&alice(), &WatchStart::Initial).unwrap();
    assert!(watcher.next_batch().unwrap().is_none());
    assert!(!watcher.initial_state_remains());
    database.put(&alice(), "todo", "live", b"1", None).unwrap();
    assert_eq!(watcher.next_batch().unwrap().unwrap()[0].key, "live");
}

#[test]
fn destroying_a_collection_shows_its_deletes_and_forgets_its_values() {
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    database
        .put(&alice(), "todo", "old", b"secret", None)
        .unwrap();
    let mut live = database.watch(&alice(), &WatchStart::Now).unwrap();
    let mut from_start = database
        .watch(&alice(), &WatchStart::From("0".into()))
        .unwrap();
    fixture
        .service
        .destroy_collection(&alice(), &coll_path())
        .unwrap();
    let deletes = live.next_batch().unwrap().unwrap();
    assert_eq!(
        (deletes[0].key.as_str(), &deletes[0].kind),
        ("old", &ChangeKind::Delete)
    );
    // Someone else creates a collection of the same name, readable by them.
    let carol = Caller::new("carol");
    let mut open = Permissions::all_tags_to("alice");
    for tag in Tag::ALL {
        open.0.get_mut(&tag).unwrap().allowed.push("carol".into());
    }
    for object in [
        ObjectPath::Service,
        ObjectPath::App("notes".into()),
        ObjectPath::Database(db_path()),
    ] {
        fixture
            .service
            .set_permissions(&alice(), &object, open.clone())
            .unwrap();
    }
    database
        .create_collection(&carol, "todo", Some(Permissions::all_tags_to("carol")))
        .unwrap();
    let mut resumed = database
        .watch(&carol, &WatchStart::From("0".into()))
        .unwrap();
    while let Some(batch) = resumed.next_batch().unwrap() {
        for change in batch {
            assert_ne!(
                change.kind,
                ChangeKind::Put(b"secret".to_vec()),
                "an old value leaked"
            );
        }
    }
    // A watcher that was behind sees no old value either, only the deletes.
    while let Some(batch) = from_start.next_batch().unwrap() {
        assert!(
            batch
                .iter()
                .all(|change| change.kind != ChangeKind::Put(b"secret".to_vec()))
        );
    }
}

/// Permissions granting alice every tag, with `admin` as the Admin list (`None`: no Admin list).
fn with_admin(admin: Option<AccessList>) -> Permissions {
    let mut permissions = Permissions::all_tags_to("alice");
    match admin {
        Some(list) => permissions.0.insert(Tag::Admin, list),
        None => permissions.0.remove(&Tag::Admin),
    };
    permissions
}

fn lockouts() -> Vec<Permissions> {
    vec![
        with_admin(None),
        with_admin(Some(AccessList::default())),
        with_admin(Some(AccessList {
            allowed: vec![],
            denied: vec!["bob".into()],
        })),
        // Every allowed pattern is also denied.
        with_admin(Some(AccessList {
            allowed: vec!["alice:laptop".into(), "alice:$".into()],
            denied: vec!["alice".into()],
        })),
    ]
}

#[test]
fn permissions_that_let_nobody_administer_are_refused_on_every_object() {
    let fixture = populated();
    let service = &fixture.service;
    let database = service.database(&alice(), &db_path()).unwrap();
    let objects = [
        ObjectPath::Service,
        ObjectPath::App("notes".into()),
        ObjectPath::Database(db_path()),
        ObjectPath::Collection(coll_path()),
    ];
    for lockout in lockouts() {
        let other_database = DatabasePath {
            app: "notes".into(),
            database: "other".into(),
        };
        let refusals = [
            code(service.create_app(&alice(), "other", Some(lockout.clone()))),
            code(service.create_database(&alice(), &other_database, Some(lockout.clone()))),
            code(database.create_collection(&alice(), "other", Some(lockout.clone()))),
        ];
        assert_eq!(refusals, [codes::INVALID_PERMISSIONS; 3], "{lockout:?}");
        for object in &objects {
            let before = service.permissions(&alice(), object).unwrap();
            let error = service
                .set_permissions(&alice(), object, lockout.clone())
                .unwrap_err();
            assert_eq!(error.code(), codes::INVALID_PERMISSIONS, "{object:?}");
            assert!(error.to_string().contains("no one could manage"), "{error}");
            assert_eq!(service.permissions(&alice(), object).unwrap(), before);
        }
    }
    assert!(!service.app_exists(&alice(), "other").unwrap());
    // Denying some of the allowed principals still leaves an admin.
    let guarded = with_admin(Some(AccessList {
        allowed: vec!["alice".into()],
        denied: vec!["alice:guest".into(), "alice:$".into()],
    }));
    for object in &objects {
        service
            .set_permissions(&alice(), object, guarded.clone())
            .unwrap();
    }
}

#[test]
fn an_admin_of_the_service_can_repair_and_destroy_what_it_cannot_reach() {
    let fixture = populated();
    let service = &fixture.service;
    // carol may create apps; her app, database and collection grant alice nothing.
    let carol = Caller::new("carol");
    let mut service_permissions = service.permissions(&alice(), &ObjectPath::Service).unwrap();
    service_permissions
        .0
        .get_mut(&Tag::Write)
        .unwrap()
        .allowed
        .push("carol".into());
    service
        .set_permissions(&alice(), &ObjectPath::Service, service_permissions)
        .unwrap();
    service.create_app(&carol, "carols", None).unwrap();
    let carols_db = DatabasePath {
        app: "carols".into(),
        database: "db".into(),
    };
    service.create_database(&carol, &carols_db, None).unwrap();
    let database = service.database(&carol, &carols_db).unwrap();
    database.create_collection(&carol, "c", None).unwrap();
    database.put(&carol, "c", "k", b"carol's", None).unwrap();
    let carols_collection = CollectionPath {
        app: "carols".into(),
        database: "db".into(),
        collection: "c".into(),
    };
    let objects = [
        ObjectPath::App("carols".into()),
        ObjectPath::Database(carols_db.clone()),
        ObjectPath::Collection(carols_collection),
    ];
    for object in &objects {
        assert_eq!(
            service.permissions(&alice(), object).unwrap(),
            Permissions::all_tags_to("carol"),
            "{object:?}"
        );
        // Repair: carol keeps her tags and alice, as admin of the service, adds Resolve.
        let mut repaired = Permissions::all_tags_to("carol");
        repaired
            .0
            .get_mut(&Tag::Resolve)
            .unwrap()
            .allowed
            .push("alice:laptop".into());
        service
            .set_permissions(&alice(), object, repaired.clone())
            .unwrap();
        assert_eq!(service.permissions(&carol, object).unwrap(), repaired);
    }
    // Managing is not reading: the rows stay carol's.
    let as_alice = service.database(&alice(), &carols_db).unwrap();
    assert_eq!(
        code(as_alice.get(&alice(), "c", "k", None)),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(as_alice.put(&alice(), "c", "k", b"mine", None)),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(service.list_databases(&alice(), "carols")),
        codes::NO_ACCESS
    );
    // A service admin without even Resolve on the way down can still destroy.
    for object in &objects {
        service
            .set_permissions(&alice(), object, Permissions::all_tags_to("carol"))
            .unwrap();
    }
    assert_eq!(
        code(service.database(&alice(), &carols_db)),
        codes::NO_EXIST
    );
    service.destroy_database(&alice(), &carols_db).unwrap();
    assert!(!service.database_exists(&carol, &carols_db).unwrap());
    service.destroy_app(&alice(), "carols").unwrap();
    assert!(!service.app_exists(&carol, "carols").unwrap());
    // An admin of an app has no such power over the databases below it.
    service.create_app(&carol, "shared", None).unwrap();
    let shared_db = DatabasePath {
        app: "shared".into(),
        database: "db".into(),
    };
    let mut app_permissions = Permissions::all_tags_to("carol");
    app_permissions
        .0
        .get_mut(&Tag::Admin)
        .unwrap()
        .allowed
        .push("dave".into());
    app_permissions
        .0
        .get_mut(&Tag::Write)
        .unwrap()
        .allowed
        .push("dave".into());
    service
        .set_permissions(&carol, &ObjectPath::App("shared".into()), app_permissions)
        .unwrap();
    service.create_database(&carol, &shared_db, None).unwrap();
    let dave = Caller::new("dave");
    assert_eq!(
        code(service.permissions(&dave, &ObjectPath::Database(shared_db.clone()))),
        codes::NO_EXIST
    );
    assert_eq!(
        code(service.destroy_database(&dave, &shared_db)),
        codes::NO_EXIST
    );
}

#[test]
fn a_caller_who_sees_an_object_is_told_access_is_denied() {
    let fixture = populated();
    let service = &fixture.service;
    let bob = Caller::new("bob:x");
    let database = service.database(&alice(), &db_path()).unwrap();
    database.put(&alice(), "todo", "k", b"v", None).unwrap();
    // bob: Resolve on the service and the app, Read on the database, Write on "todo".
    let with_bob = |tag: Tag| {
        let mut permissions = Permissions::all_tags_to("alice");
        permissions
            .0
            .get_mut(&tag)
            .unwrap()
            .allowed
            .push("bob".into());
        permissions
    };
    for (object, tag) in [
        (ObjectPath::Service, Tag::Resolve),
        (ObjectPath::App("notes".into()), Tag::Resolve),
        (ObjectPath::Database(db_path()), Tag::Read),
        (ObjectPath::Collection(coll_path()), Tag::Write),
    ] {
        service
            .set_permissions(&alice(), &object, with_bob(tag))
            .unwrap();
    }
    let as_bob = service.database(&bob, &db_path()).unwrap();
    let mut watch = as_bob.watch(&bob, &WatchStart::Now).unwrap();
    as_bob.put(&bob, "todo", "mine", b"w", None).unwrap();
    assert_eq!(code(as_bob.get(&bob, "todo", "k", None)), codes::NO_ACCESS);
    assert_eq!(
        code(as_bob.get(&bob, "todo", "absent", None)),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(as_bob.scan(&bob, "todo", &RowRange::Prefix(String::new()), None)),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(as_bob.row_exists(&bob, "todo", "k", None)),
        codes::NO_ACCESS
    );
    assert!(as_bob.collection_exists(&bob, "todo").unwrap());
    assert_eq!(
        code(service.permissions(&bob, &ObjectPath::Collection(coll_path()))),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(service.list_databases(&bob, "notes")),
        codes::NO_ACCESS
    );
    assert_eq!(code(service.list_apps(&bob)), codes::NO_ACCESS);
    assert_eq!(
        code(service.create_app(&bob, "bobs", None)),
        codes::NO_ACCESS
    );
    assert_eq!(
        code(service.destroy_database(&bob, &db_path())),
        codes::NO_ACCESS
    );
    // A collection bob holds no tag on, and one that does not exist, look the same.
    database
        .create_collection(&alice(), "private", None)
        .unwrap();
    for collection in ["private", "absent"] {
        assert_eq!(
            code(as_bob.get(&bob, collection, "k", None)),
            codes::NO_EXIST
        );
        assert!(!as_bob.row_exists(&bob, collection, "k", None).unwrap());
        assert!(!as_bob.collection_exists(&bob, collection).unwrap());
    }
    // Watch leaves out the rows of collections bob cannot read.
    database.put(&alice(), "todo", "later", b"x", None).unwrap();
    assert!(watch.next_batch().unwrap().is_none());
    // Without a tag on an ancestor, bob cannot see anything below it.
    service
        .set_permissions(
            &alice(),
            &ObjectPath::App("notes".into()),
            Permissions::all_tags_to("alice"),
        )
        .unwrap();
    assert_eq!(code(service.database(&bob, &db_path())), codes::NO_EXIST);
    assert_eq!(
        code(service.permissions(&bob, &ObjectPath::Database(db_path()))),
        codes::NO_EXIST
    );
    assert_eq!(code(service.list_databases(&bob, "notes")), codes::NO_EXIST);
}

/// Keeps the databases named `kept*` open.
struct KeepKept;

impl syncbase_nosql::KeepOpen for KeepKept {
    fn keep_open(&self, path: &DatabasePath) -> bool {
        path.database.starts_with("kept")
    }
}

/// Past `idle_databases_max`, the least recently used idle databases are closed and reopened
/// on their next call with their data; a database with a watch, a batch, or that the
/// `KeepOpen` seam keeps, stays open and working.
#[test]
fn idle_databases_are_closed_past_the_cap_and_busy_or_kept_ones_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::open(ServiceOptions {
        root_dir: dir.path().to_path_buf(),
        opener: Arc::new(MemoryStoreSetOpener),
        owner_root: "alice".into(),
        clock: Arc::new(ManualClock::new(1_000)),
        rng: Arc::new(SeededRng::new(7)),
        batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
        idle_databases_max: 4,
        keep_open: Some(Arc::new(KeepKept)),
        log_retention: syncbase_store::Retention::default(),
    })
    .unwrap();
    let alice = alice();
    service.create_app(&alice, "notes", None).unwrap();
    let path = |name: &str| DatabasePath {
        app: "notes".into(),
        database: name.into(),
    };
    let names = [
        "watched", "batched", "kept", "synced", "a", "b", "c", "d", "e", "f", "g",
    ];
    for name in names {
        service.create_database(&alice, &path(name), None).unwrap();
        let database = service.database(&alice, &path(name)).unwrap();
        database.create_collection(&alice, "c", None).unwrap();
        database
            .put(&alice, "c", "k", name.as_bytes(), None)
            .unwrap();
    }
    let watched = service.database(&alice, &path("watched")).unwrap();
    let mut watcher = watched.watch(&alice, &WatchStart::Now).unwrap();
    drop(watched);
    // Sync holds the store of a database it serves (and nothing else of it).
    let synced_store =
        syncbase_vsync::service::DataModel::open_for_sync(&service, "notes", "synced").unwrap();
    let batch = service
        .database(&alice, &path("batched"))
        .unwrap()
        .begin_batch(&alice, BatchOptions::default())
        .unwrap();
    for _ in 0..3 {
        for name in &names[4..] {
            let database = service.database(&alice, &path(name)).unwrap();
            assert_eq!(
                database.get(&alice, "c", "k", None).unwrap(),
                name.as_bytes()
            );
        }
    }
    let open: Vec<String> = service
        .open_databases()
        .into_iter()
        .map(|path| path.database)
        .collect();
    assert!(open.len() <= 4 + 4, "{open:?}");
    for busy in ["watched", "batched", "kept", "synced"] {
        assert!(
            open.contains(&busy.to_string()),
            "{busy} was closed: {open:?}"
        );
    }
    drop(synced_store);
    let batched = service.database(&alice, &path("batched")).unwrap();
    batched
        .put(&alice, "c", "in-batch", b"v", Some(batch))
        .unwrap();
    batched.commit_batch(&alice, batch).unwrap();
    assert_eq!(batched.get(&alice, "c", "in-batch", None).unwrap(), b"v");
    service
        .database(&alice, &path("watched"))
        .unwrap()
        .put(&alice, "c", "after", b"v", None)
        .unwrap();
    assert_eq!(watcher.next_batch().unwrap().unwrap()[0].key, "after");
    // Without the seam, the kept database would have been closed like the others.
    drop(batched);
    assert!(
        service
            .open_databases()
            .iter()
            .any(|path| path.database == "kept")
    );
}

/// A set whose `destroy` of one store blocks until released, as a large destroy on a slow disk.
struct SlowDestroySet {
    inner: syncbase_store::MemStoreSet,
    slow: String,
    /// (blocked, released)
    state: parking_lot::Mutex<(bool, bool)>,
    changed: parking_lot::Condvar,
}

impl syncbase_store::StoreSet for SlowDestroySet {
    fn open(&self, name: &str) -> syncbase_store::Result<Arc<dyn syncbase_store::Store>> {
        self.inner.open(name)
    }

    fn destroy(&self, name: &str) -> syncbase_store::Result<()> {
        if name == self.slow {
            let mut state = self.state.lock();
            state.0 = true;
            self.changed.notify_all();
            while !state.1 {
                self.changed.wait(&mut state);
            }
        }
        self.inner.destroy(name)
    }

    fn names(&self) -> syncbase_store::Result<Vec<String>> {
        self.inner.names()
    }

    fn persist(&self) -> syncbase_store::Result<()> {
        self.inner.persist()
    }

    fn close(&self) -> syncbase_store::Result<()> {
        self.inner.close()
    }
}

/// A destroy that takes long (its store's files are large) holds no lock other databases need:
/// meanwhile another database opens, reads and writes.
#[test]
fn a_slow_destroy_parks_no_call_to_another_database() {
    let dir = tempfile::tempdir().unwrap();
    let set = Arc::new(SlowDestroySet {
        inner: syncbase_store::MemStoreSet::new(),
        // The first database created gets id 1.
        slow: "db_0000000000000001".into(),
        state: parking_lot::Mutex::new((false, false)),
        changed: parking_lot::Condvar::new(),
    });
    let service = Service::open(ServiceOptions {
        root_dir: dir.path().to_path_buf(),
        opener: Arc::new(syncbase_nosql::GivenSetOpener(set.clone())),
        owner_root: "alice".into(),
        clock: Arc::new(ManualClock::new(1_000)),
        rng: Arc::new(SeededRng::new(7)),
        batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
        idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
        keep_open: None,
        log_retention: syncbase_store::Retention::default(),
    })
    .unwrap();
    let alice = alice();
    service.create_app(&alice, "notes", None).unwrap();
    let path = |name: &str| DatabasePath {
        app: "notes".into(),
        database: name.into(),
    };
    service
        .create_database(&alice, &path("doomed"), None)
        .unwrap();
    let doomed = service.database(&alice, &path("doomed")).unwrap();
    doomed.create_collection(&alice, "c", None).unwrap();
    drop(doomed);
    // The other database is not open when the destroy starts: opening it must not wait.
    service
        .create_database(&alice, &path("other"), None)
        .unwrap();
    std::thread::scope(|scope| {
        let destroying = scope.spawn(|| service.destroy_database(&alice, &path("doomed")));
        {
            let mut state = set.state.lock();
            for _ in 0..60 {
                if state.0 {
                    break;
                }
                set.changed.wait_for(&mut state, Duration::from_secs(1));
            }
            assert!(state.0, "the destroy never reached its store");
        }
        let (done, finished) = std::sync::mpsc::channel();
        let (service, alice) = (&service, &alice);
        scope.spawn(move || {
            let database = service.database(alice, &path("other")).unwrap();
            database.create_collection(alice, "c", None).unwrap();
            database.put(alice, "c", "k", b"v", None).unwrap();
            let value = database.get(alice, "c", "k", None).unwrap();
            done.send(value).unwrap();
        });
        let value = finished.recv_timeout(Duration::from_secs(60));
        // Released before judging, so a failing run ends instead of hanging.
        {
            let mut state = set.state.lock();
            state.1 = true;
            set.changed.notify_all();
        }
        let value = value.expect("a call to another database waited for the destroy");
        assert_eq!(value, b"v");
        destroying.join().unwrap().unwrap();
    });
    assert_eq!(
        service.list_databases(&alice, "notes").unwrap(),
        vec!["other"]
    );
}

/// What a [`FaultySet`] does to a read of a key that holds one of its needles.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The read fails with an I/O error (`store.io`).
    Io,
    /// The read returns bytes no record decodes from, where a value is stored.
    Garbage,
}

/// The faults a [`FaultySet`] injects: a read of a key that contains a needle fails as told.
#[derive(Default)]
struct Faults(parking_lot::Mutex<Vec<(Vec<u8>, Fault)>>);

impl Faults {
    fn inject(&self, needle: Vec<u8>, fault: Fault) {
        self.0.lock().push((needle, fault));
    }

    fn clear(&self) {
        self.0.lock().clear();
    }

    fn get(
        &self,
        key: &[u8],
        read: impl FnOnce() -> syncbase_store::Result<Option<Vec<u8>>>,
    ) -> syncbase_store::Result<Option<Vec<u8>>> {
        let fault = self
            .0
            .lock()
            .iter()
            .find(|(needle, _)| key.windows(needle.len()).any(|part| part == needle))
            .map(|(_, fault)| *fault);
        match fault {
            None => read(),
            Some(Fault::Io) => Err(syncbase_store::Error::Io(std::io::Error::other(
                "injected read failure",
            ))),
            // Ten 0xff bytes overflow any varint.
            Some(Fault::Garbage) => Ok(read()?.map(|_| vec![0xff; 16])),
        }
    }
}

/// A set of in-memory stores whose reads (by the store, its snapshots and its transactions)
/// fail or return garbage on demand, as a failing disk or a corrupt record would.
struct FaultySet {
    inner: syncbase_store::MemStoreSet,
    faults: Arc<Faults>,
}

impl syncbase_store::StoreSet for FaultySet {
    fn open(&self, name: &str) -> syncbase_store::Result<Arc<dyn syncbase_store::Store>> {
        Ok(Arc::new(FaultyStore {
            inner: self.inner.open(name)?,
            faults: self.faults.clone(),
        }))
    }

    fn destroy(&self, name: &str) -> syncbase_store::Result<()> {
        self.inner.destroy(name)
    }

    fn names(&self) -> syncbase_store::Result<Vec<String>> {
        self.inner.names()
    }

    fn persist(&self) -> syncbase_store::Result<()> {
        self.inner.persist()
    }

    fn close(&self) -> syncbase_store::Result<()> {
        self.inner.close()
    }
}

struct FaultyStore {
    inner: Arc<dyn syncbase_store::Store>,
    faults: Arc<Faults>,
}

struct FaultySnapshot {
    inner: Box<dyn syncbase_store::Snapshot>,
    faults: Arc<Faults>,
}

struct FaultyTransaction {
    inner: Box<dyn syncbase_store::Transaction>,
    faults: Arc<Faults>,
}

/// Implements `StoreReader` for a wrapper: gets go through its faults, scans straight through.
macro_rules! faulty_reader {
    ($wrapper:ty) => {
        impl syncbase_store::StoreReader for $wrapper {
            fn get(&self, key: &[u8]) -> syncbase_store::Result<Option<Vec<u8>>> {
                self.faults.get(key, || self.inner.get(key))
            }

            fn scan(&self, start: &[u8], limit: &[u8]) -> syncbase_store::Result<Stream> {
                self.inner.scan(start, limit)
            }
        }
    };
}

faulty_reader!(FaultyStore);
faulty_reader!(FaultySnapshot);
faulty_reader!(FaultyTransaction);

impl syncbase_store::StoreWriter for FaultyStore {
    fn put(&self, key: &[u8], value: &[u8]) -> syncbase_store::Result<()> {
        self.inner.put(key, value)
    }

    fn delete(&self, key: &[u8]) -> syncbase_store::Result<()> {
        self.inner.delete(key)
    }
}

impl syncbase_store::Store for FaultyStore {
    fn snapshot(&self) -> syncbase_store::Result<Box<dyn syncbase_store::Snapshot>> {
        Ok(Box::new(FaultySnapshot {
            inner: self.inner.snapshot()?,
            faults: self.faults.clone(),
        }))
    }

    fn transaction(&self) -> syncbase_store::Result<Box<dyn syncbase_store::Transaction>> {
        Ok(Box::new(FaultyTransaction {
            inner: self.inner.transaction()?,
            faults: self.faults.clone(),
        }))
    }

    fn close(&self) -> syncbase_store::Result<()> {
        self.inner.close()
    }
}

impl syncbase_store::Snapshot for FaultySnapshot {
    fn abort(&self) -> syncbase_store::Result<()> {
        self.inner.abort()
    }
}

impl syncbase_store::StoreWriter for FaultyTransaction {
    fn put(&self, key: &[u8], value: &[u8]) -> syncbase_store::Result<()> {
        self.inner.put(key, value)
    }

    fn delete(&self, key: &[u8]) -> syncbase_store::Result<()> {
        self.inner.delete(key)
    }
}

impl syncbase_store::Transaction for FaultyTransaction {
    fn commit_with_hook(
        &self,
        hook: Option<syncbase_store::CommitHook>,
    ) -> syncbase_store::Result<()> {
        self.inner.commit_with_hook(hook)
    }

    fn abort(&self) -> syncbase_store::Result<()> {
        self.inner.abort()
    }
}

/// [`populated`] on a [`FaultySet`], with no fault injected yet.
fn faulty() -> (Fixture, Arc<FaultySet>) {
    let set = Arc::new(FaultySet {
        inner: syncbase_store::MemStoreSet::new(),
        faults: Arc::default(),
    });
    let fixture = populate(fixture_on(Arc::new(syncbase_nosql::GivenSetOpener(
        set.clone(),
    ))));
    (fixture, set)
}

/// The key of collection `name`'s record.
fn collection_record(name: &str) -> Vec<u8> {
    keys::key(Prefix::Collection, &[name.as_bytes()])
}

/// A watch hides rows only from a caller who may not read their collection: a collection record
/// that cannot be read or decoded fails the initial state with its own error, and once it reads
/// again, every row arrives.
/// A commit that skipped the disk sync (a part of a delta before its last) reaches a watch
/// only once a later commit is published, and a watch's initial state never hands out its
/// position as a marker: every marker a client holds is durable.
#[test]
fn a_watch_learns_of_a_commit_that_skipped_the_disk_sync_with_the_next_published_one() {
    use syncbase_store::{Origin, StoreWriter, Transaction};
    let fixture = populated();
    let database = fixture.service.database(&alice(), &db_path()).unwrap();
    let mut from_now = database.watch(&alice(), &WatchStart::Now).unwrap();
    let path = db_path();
    let store = syncbase_vsync::service::DataModel::open_for_sync(
        &fixture.service,
        &path.app,
        &path.database,
    )
    .unwrap();
    let relaxed = store
        .begin(Origin {
            from_sync: true,
            ..Origin::default()
        })
        .unwrap();
    relaxed.put(&keys::row("todo", b"part"), b"1").unwrap();
    relaxed.skip_disk_sync();
    relaxed.commit().unwrap();
    assert_eq!(database.get(&alice(), "todo", "part", None).unwrap(), b"1");
    assert!(from_now.next_batch().unwrap().is_none());
    let mut initial = database.watch(&alice(), &WatchStart::Initial).unwrap();
    let state = initial.next_batch().unwrap().unwrap();
    assert!(state.iter().any(|change| change.key == "part"));
    let marker = state.last().unwrap().marker.clone();
    assert_eq!(marker.parse::<u64>().unwrap(), store.latest_log_seq());

    database.put(&alice(), "todo", "after", b"2", None).unwrap();
    let first = from_now.next_batch().unwrap().unwrap();
    assert_eq!((first[0].key.as_str(), first[0].from_sync), ("part", true));
    let second = from_now.next_batch().unwrap().unwrap();
    assert_eq!(second[0].key, "after");
    // The initial state showed the row; its change comes again after the marker.
    assert_eq!(initial.next_batch().unwrap().unwrap(), first);
}

#[test]
fn an_unreadable_collection_record_fails_the_initial_state_of_a_watch() {
    let (fixture, set) = faulty();
    let service = &fixture.service;
    let database = service.database(&alice(), &db_path()).unwrap();
    database.put(&alice(), "todo", "a", b"1", None).unwrap();
    database.put(&alice(), "todo", "b", b"2", None).unwrap();
    for (needle, fault, expected) in [
        (collection_record("todo"), Fault::Io, "store.io"),
        // The record's value sits inline beside its version: 16 bytes are a version and 8
        // bytes no record decodes from.
        (collection_record("todo"), Fault::Garbage, "util.decode"),
    ] {
        let mut watcher = database.watch(&alice(), &WatchStart::Initial).unwrap();
        set.faults.inject(needle, fault);
        assert_eq!(code(watcher.next_batch()), expected, "{fault:?}");
        set.faults.clear();
        let rows = watcher.next_batch().unwrap().unwrap();
        let keys: Vec<_> = rows.iter().map(|change| change.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"], "{fault:?}");
    }
}

/// The same for a live watch: the commit whose collection record cannot be read fails the
/// watch, and is delivered once the record reads again (no commit is skipped).
#[test]
fn an_unreadable_collection_record_fails_a_live_watch_and_loses_no_commit() {
    let (fixture, set) = faulty();
    let service = &fixture.service;
    let database = service.database(&alice(), &db_path()).unwrap();
    for (needle, fault, expected) in [
        (collection_record("todo"), Fault::Io, "store.io"),
        (collection_record("todo"), Fault::Garbage, "util.decode"),
    ] {
        let mut watcher = database.watch(&alice(), &WatchStart::Now).unwrap();
        database.put(&alice(), "todo", "k", b"v", None).unwrap();
        set.faults.inject(needle, fault);
        assert_eq!(code(watcher.next_batch()), expected, "{fault:?}");
        assert_eq!(
            code(watcher.next_blocking(Duration::from_millis(1))),
            expected
        );
        set.faults.clear();
        let changes = watcher.next_batch().unwrap().unwrap();
        assert_eq!(changes[0].key, "k", "{fault:?}");
        assert!(watcher.next_batch().unwrap().is_none());
    }
}

/// An exists call answers false only for a missing or hidden object: a record that cannot be
/// read fails it with the store's error.
#[test]
fn exists_calls_fail_when_a_record_cannot_be_read() {
    let (fixture, set) = faulty();
    let service = &fixture.service;
    let database = service.database(&alice(), &db_path()).unwrap();
    let records = [
        keys::key(Prefix::App, &[b"notes"]),
        keys::key(Prefix::Database, &[b"notes", b"main"]),
    ];
    for record in records {
        for (fault, expected) in [(Fault::Io, "store.io"), (Fault::Garbage, "util.decode")] {
            set.faults.inject(record.clone(), fault);
            assert_eq!(
                code(service.database_exists(&alice(), &db_path())),
                expected
            );
            set.faults.clear();
        }
    }
    set.faults
        .inject(keys::key(Prefix::App, &[b"notes"]), Fault::Io);
    assert_eq!(code(service.app_exists(&alice(), "notes")), "store.io");
    set.faults.clear();
    set.faults.inject(collection_record("todo"), Fault::Io);
    assert_eq!(
        code(database.collection_exists(&alice(), "todo")),
        "store.io"
    );
    assert_eq!(
        code(database.row_exists(&alice(), "todo", "k", None)),
        "store.io"
    );
}

/// A call that reaches a database through an app record that cannot be read fails with the
/// store's error, not as if the database did not exist.
#[test]
fn a_database_call_fails_when_its_app_record_cannot_be_read() {
    let (fixture, set) = faulty();
    let service = &fixture.service;
    set.faults
        .inject(keys::key(Prefix::App, &[b"notes"]), Fault::Io);
    assert_eq!(code(service.database(&alice(), &db_path())), "store.io");
    assert_eq!(
        code(service.database_with_tag(&alice(), &db_path(), Tag::Read)),
        "store.io"
    );
    assert_eq!(code(service.list_databases(&alice(), "notes")), "store.io");
    assert_eq!(
        code(service.destroy_collection(&alice(), &coll_path())),
        "store.io"
    );
}

/// A stored key that does not hold the names its kind has (a corrupt record) fails a listing
/// or a destroy with `store.corrupt`; it is not skipped or read as an empty name.
#[test]
fn a_malformed_record_key_fails_listings_and_destroys() {
    let (fixture, set) = faulty();
    let service = &fixture.service;
    let raw = syncbase_store::StoreSet::open(&set.inner, "service").unwrap();
    let app = raw
        .get(&keys::key(Prefix::App, &[b"notes"]))
        .unwrap()
        .unwrap();
    let database = raw
        .get(&keys::key(Prefix::Database, &[b"notes", b"main"]))
        .unwrap()
        .unwrap();

    // An app record without a name.
    raw.put(&keys::key(Prefix::App, &[]), &app).unwrap();
    assert_eq!(code(service.list_apps(&alice())), "store.corrupt");
    raw.delete(&keys::key(Prefix::App, &[])).unwrap();
    assert_eq!(service.list_apps(&alice()).unwrap(), ["notes"]);

    // A database record of app notes without a database name.
    raw.put(&keys::key(Prefix::Database, &[b"notes"]), &database)
        .unwrap();
    assert_eq!(
        code(service.list_databases(&alice(), "notes")),
        "store.corrupt"
    );
    assert_eq!(
        code(service.destroy_app(&alice(), "notes")),
        "store.corrupt"
    );
    assert!(service.app_exists(&alice(), "notes").unwrap());
    raw.delete(&keys::key(Prefix::Database, &[b"notes"]))
        .unwrap();
    assert_eq!(service.list_databases(&alice(), "notes").unwrap(), ["main"]);
}

/// A collection record whose name is not UTF-8 fails the listing of collections instead of
/// showing a name that reaches no collection.
#[test]
fn a_collection_named_with_bytes_that_are_not_utf8_fails_the_listing() {
    let (fixture, set) = faulty();
    let service = &fixture.service;
    let other = DatabasePath {
        app: "notes".into(),
        database: "other".into(),
    };
    service.create_database(&alice(), &other, None).unwrap();
    // Written as the database's own layer would, before the service opens it.
    let raw = syncbase_store::StoreSet::open(&set.inner, "db_0000000000000002").unwrap();
    let watchable = syncbase_store::Watchable::open(
        raw,
        syncbase_store::WatchableOptions::new(
            vec![Prefix::Row.as_key(), Prefix::Collection.as_key()],
            fixture.clock.clone(),
            Arc::new(SeededRng::new(9)),
        ),
    )
    .unwrap();
    let record = (alice().default_permissions(), false);
    syncbase_util::put_typed(&watchable, &collection_record("\u{fffd}"), &record).unwrap();
    let database = service.database(&alice(), &other).unwrap();
    assert_eq!(database.list_collections().unwrap(), ["\u{fffd}"]);
    syncbase_util::put_typed(
        &watchable,
        &keys::key(Prefix::Collection, &[b"\xff"]),
        &record,
    )
    .unwrap();
    assert_eq!(code(database.list_collections()), "store.corrupt");
}

/// The database core opens on its store without a service and reads as the device (for sync):
/// every row and collection record, whatever the permissions, tombstones included. Calls for a
/// client keep their checks.
#[test]
fn a_database_opens_on_its_store_and_reads_as_the_device() {
    let database = syncbase_nosql::Database::open(
        db_path(),
        Arc::new(syncbase_store::open_memstore()),
        syncbase_nosql::DatabaseOptions {
            clock: Arc::new(ManualClock::new(1_000)),
            log_clock: Arc::new(ManualClock::new(1_000)),
            rng: Arc::new(SeededRng::new(5)),
            batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
            device_id: 7,
            log_retention: syncbase_store::Retention::default(),
            pruner: None,
        },
    )
    .unwrap();
    let bob = Caller::new("bob");
    database.create_collection(&bob, "private", None).unwrap();
    database.put(&bob, "private", "k", b"v", None).unwrap();
    assert_eq!(
        code(database.get(&alice(), "private", "k", None)),
        codes::NO_EXIST
    );
    assert!(!database.row_exists(&alice(), "private", "k", None).unwrap());

    let device = database.device_reader().unwrap();
    assert_eq!(device.get("private", "k").unwrap().unwrap(), b"v");
    assert_eq!(device.get("private", "absent").unwrap(), None);
    let rows: Vec<_> = device
        .scan("private", &RowRange::Prefix(String::new()))
        .unwrap()
        .collect::<syncbase_nosql::Result<_>>()
        .unwrap();
    assert_eq!(rows, [("k".to_string(), b"v".to_vec())]);
    let record = device.collection("private").unwrap().unwrap();
    assert!(record.permissions.grants(Tag::Read, "bob") && !record.destroyed);
    assert_eq!(device.collection("absent").unwrap(), None);
    assert_eq!(device.log_position().unwrap(), 2);

    // A destroyed collection's tombstone, through a service.
    let fixture = populated();
    let service = &fixture.service;
    service.destroy_collection(&alice(), &coll_path()).unwrap();
    let device = service
        .database(&alice(), &db_path())
        .unwrap()
        .device_reader()
        .unwrap();
    assert!(device.collection("todo").unwrap().unwrap().destroyed);
}

mod sync {
    use std::sync::Mutex;

    use syncbase_vsync::conflict::LastWriterWins;
    use syncbase_vsync::service::{Action, DataModel, DatabaseSync, Event, Message, ModelAccess};
    use syncbase_vsync::syncgroup::Syncgroup;

    use super::*;

    fn syncgroup(members: &[&str]) -> Syncgroup {
        Syncgroup {
            name: "sg".into(),
            collections: vec!["todo".into()],
            members: members.iter().map(|member| member.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn syncgroup_calls_check_the_caller_and_delegate_to_sync() {
        let fixture = populated();
        let service = &fixture.service;
        let sg = syncgroup(&["alice:a", "alice:b"]);
        assert_eq!(
            code(service.create_syncgroup(&Caller::new("bob"), &db_path(), &sg)),
            codes::NO_EXIST
        );
        let elsewhere = Syncgroup {
            collections: vec!["missing".into()],
            ..sg.clone()
        };
        assert_eq!(
            code(service.create_syncgroup(&alice(), &db_path(), &elsewhere)),
            codes::NO_EXIST
        );
        assert!(service.databases_with_syncgroups().unwrap().is_empty());
        service.create_syncgroup(&alice(), &db_path(), &sg).unwrap();
        assert_eq!(
            code(service.create_syncgroup(&alice(), &db_path(), &sg)),
            codes::EXIST
        );
        assert_eq!(
            service.list_syncgroups(&alice(), &db_path()).unwrap(),
            vec!["sg"]
        );
        assert_eq!(
            service.get_syncgroup(&alice(), &db_path(), "sg").unwrap(),
            sg
        );
        assert_eq!(
            code(service.get_syncgroup(&alice(), &db_path(), "other")),
            codes::NO_EXIST
        );
        assert_eq!(
            service.databases_with_syncgroups().unwrap(),
            vec![("notes".to_string(), "main".to_string())]
        );
        // Who may read a collection, by its permissions (alice's root holds every tag).
        assert!(
            service
                .may_read("notes", "main", "todo", "alice:b", None)
                .unwrap()
        );
        assert!(
            !service
                .may_read("notes", "main", "todo", "bob", None)
                .unwrap()
        );
        assert!(
            !service
                .may_read("notes", "main", "missing", "alice:b", None)
                .unwrap()
        );
        // Destroying the database tells sync first, and forgets it has syncgroups.
        let closed = Arc::new(Mutex::new(Vec::new()));
        let heard = closed.clone();
        service.on_database_closed(Arc::new(move |app: &str, database: &str| {
            heard.lock().unwrap().push(format!("{app}/{database}"));
        }));
        service.destroy_database(&alice(), &db_path()).unwrap();
        assert_eq!(*closed.lock().unwrap(), vec!["notes/main"]);
        assert!(service.databases_with_syncgroups().unwrap().is_empty());
    }

    /// Two embedded services, each with sync over the database the data model opens for it
    /// and the data model's read check: a row put through the data model on one is read
    /// through the data model on the other after one round.
    #[test]
    fn a_row_put_on_one_service_is_read_on_the_other_after_a_round() {
        let sg = syncgroup(&["alice:a", "alice:b"]);
        let mut sides = Vec::new();
        for (seed, member) in [(1, "alice:a"), (2, "alice:b")] {
            let Fixture { service, _dir, .. } =
                populate(fixture_seeded(Arc::new(MemoryStoreSetOpener), seed));
            let service = Arc::new(service);
            if member == "alice:a" {
                // A row from before the syncgroup: it syncs like any later write.
                let database = service.database(&alice(), &db_path()).unwrap();
                database
                    .put(&alice(), "todo", "old", b"before", None)
                    .unwrap();
            }
            service.create_syncgroup(&alice(), &db_path(), &sg).unwrap();
            let sync = DatabaseSync::new(
                service.open_for_sync("notes", "main").unwrap(),
                member,
                service.device_id(),
                service.log_clock().clone(),
                Arc::new(SeededRng::new(service.device_id())),
                Arc::new(LastWriterWins),
                Arc::new(ModelAccess {
                    model: service.clone(),
                    app: "notes".into(),
                    database: "main".into(),
                }),
            )
            .unwrap();
            sides.push((service, sync, _dir));
        }
        let (a, b) = (&sides[0], &sides[1]);
        let database = a.0.database(&alice(), &db_path()).unwrap();
        database
            .put(&alice(), "todo", "k", b"from a", None)
            .unwrap();
        let made = a.1.handle(Event::LocalCommit).unwrap();
        assert_eq!(made.records_made, 1);
        assert_eq!(
            made.actions,
            vec![Action::Send {
                to: "alice:b".into(),
                message: Message::Notify
            }]
        );
        // b pulls from a; a answers; b applies.
        let pull = b.1.handle(Event::Received {
            from: "alice:a".into(),
            message: Message::Notify,
        });
        let Action::Send { message: pull, .. } = pull.unwrap().actions.remove(0);
        let answer = a.1.handle(Event::Received {
            from: "alice:b".into(),
            message: pull.clone(),
        });
        let Action::Send { message: delta, .. } = answer.unwrap().actions.remove(0);
        let applied = b.1.handle(Event::Received {
            from: "alice:a".into(),
            message: delta,
        });
        // a's collection record and its old row (recorded when the syncgroup was created) and
        // the new row; both sides recorded their own collection record: one conflict, resolved.
        let applied = applied.unwrap().applied.unwrap();
        assert_eq!((applied.records_applied, applied.conflicts), (3, 1));
        let database = b.0.database(&alice(), &db_path()).unwrap();
        assert_eq!(
            database.get(&alice(), "todo", "k", None).unwrap(),
            b"from a".to_vec()
        );
        assert_eq!(
            database.get(&alice(), "todo", "old", None).unwrap(),
            b"before".to_vec()
        );
        // A puller the collection's permissions do not name gets nothing.
        let stranger = a.1.handle(Event::Received {
            from: "bob".into(),
            message: pull,
        });
        let Action::Send { message, .. } = stranger.unwrap().actions.remove(0);
        let Message::Delta(delta) = message else {
            panic!("a pull is answered by a delta")
        };
        assert!(delta.records.is_empty() && delta.knowledge == Default::default());
    }
}
