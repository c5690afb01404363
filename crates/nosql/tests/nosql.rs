//! The data model end to end, embedded: hierarchy, rows, permissions, batches and watch.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use syncbase_nosql::{Caller, Service, ServiceOptions, StoreOpener};
use syncbase_store::{ManualClock, SeededRng, Store};
use syncbase_wire::{
    AccessList, BatchOptions, ChangeKind, CollectionPath, DatabasePath, ObjectPath, Permissions,
    RowRange, Tag, WatchStart, codes,
};

struct MemoryOpener;

impl StoreOpener for MemoryOpener {
    fn open(&self, _dir: &Path) -> syncbase_store::Result<Arc<dyn Store>> {
        Ok(Arc::new(syncbase_store::open_memstore()))
    }
}

struct Fixture {
    service: Service,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let service = Service::open(ServiceOptions {
        root_dir: dir.path().to_path_buf(),
        opener: Arc::new(MemoryOpener),
        owner_root: "alice".into(),
        clock: clock.clone(),
        rng: Arc::new(SeededRng::new(7)),
        batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
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
    let fixture = fixture();
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
    database.destroy_collection(&alice(), "todo").unwrap();
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
fn a_stranger_cannot_tell_forbidden_from_missing_until_granted() {
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
    assert_eq!(
        code(database_as_bob.put(&bob, "todo", "k", b"v", None)),
        codes::NO_EXIST
    );
    assert_eq!(
        code(service.permissions(&bob, &collection)),
        codes::NO_EXIST
    );
    // Revoke: bob is back to not knowing the row exists.
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
    database.destroy_collection(&alice(), "todo").unwrap();
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
