//! The dispatcher: routes each [`Request`] to the object it names (mirrors Go
//! `server/dispatcher.go`). Every call goes through one exhaustive `match`, so a new call cannot
//! be left unrouted.

use std::sync::Arc;

use syncbase_nosql::{Caller, Database, Result, RowStream, Service, Watcher};
use syncbase_wire::{DatabasePath, Request, Response, StatusInfo, Tag, codes};

/// What a call produced: one response, or a stream the transport sends in pieces.
pub enum Outcome {
    /// A single response.
    Response(Response),
    /// Rows of a scan, to send in chunks.
    Rows(RowStream),
    /// A watch stream.
    Watch(Watcher),
}

/// Runs `request` for `caller` against `service`. `status` answers [`Request::Status`].
pub fn dispatch(
    service: &Service,
    caller: &Caller,
    request: Request,
    status: &StatusInfo,
) -> Result<Outcome> {
    let done = |()| Outcome::Response(Response::Done);
    Ok(match request {
        Request::Status => Outcome::Response(Response::Status(status.clone())),
        Request::ListApps => Outcome::Response(Response::Names(service.list_apps(caller)?)),
        Request::GetPermissions { object } => {
            Outcome::Response(Response::Permissions(service.permissions(caller, &object)?))
        }
        Request::SetPermissions {
            object,
            permissions,
        } => done(service.set_permissions(caller, &object, permissions)?),
        Request::CreateApp { app, permissions } => {
            done(service.create_app(caller, &app, permissions)?)
        }
        Request::DestroyApp { app } => done(service.destroy_app(caller, &app)?),
        Request::AppExists { app } => {
            Outcome::Response(Response::Bool(service.app_exists(caller, &app)?))
        }
        Request::ListDatabases { app } => {
            Outcome::Response(Response::Names(service.list_databases(caller, &app)?))
        }
        Request::CreateDatabase {
            database,
            permissions,
        } => done(service.create_database(caller, &database, permissions)?),
        Request::DestroyDatabase { database } => done(service.destroy_database(caller, &database)?),
        Request::DatabaseExists { database } => {
            Outcome::Response(Response::Bool(service.database_exists(caller, &database)?))
        }
        Request::LogStatus { database } => Outcome::Response(Response::LogStatus(
            service
                .database_with_tag(caller, &database, Tag::Admin)?
                .log_status()?,
        )),
        Request::ListSyncgroups { database } => {
            Outcome::Response(Response::Names(service.list_syncgroups(caller, &database)?))
        }
        // In a daemon, the sync engine takes these (see `handler.rs`); here the service runs in
        // process without one: a syncgroup it creates lists only itself, and nothing reaches
        // a peer.
        Request::CreateSyncgroup { database, spec } => {
            let address = Some(status.address.clone()).filter(|address| !address.is_empty());
            let record =
                crate::sync::syncgroup_record(spec, caller, &status.identity, address.as_deref());
            done(service.create_syncgroup(caller, &database, &record)?)
        }
        Request::SyncStatus => Outcome::Response(Response::SyncStatus(
            crate::sync::sync_status(service, caller, &status.identity, &|_, _| None, &|_| Ok(0))
                .map_err(syncbase_nosql::Error::from)?,
        )),
        Request::JoinSyncgroup { .. } | Request::Peer(_) | Request::SyncNow { .. } => {
            return Err(syncbase_nosql::Error::from(syncbase_wire::WireError::new(
                syncbase_error_code::sync::PEER_UNREACHABLE,
                "this service runs without a sync engine (in process, with no network): it \
                 cannot reach a peer",
            )));
        }
        Request::ListCollections { database } => Outcome::Response(Response::Names(
            service
                .database_with_tag(caller, &database, Tag::Read)?
                .list_collections()?,
        )),
        Request::BeginBatch { database, options } => Outcome::Response(Response::Batch(
            service
                .database(caller, &database)?
                .begin_batch(caller, options)?,
        )),
        Request::Commit { database, batch } => done(
            service
                .database(caller, &database)?
                .commit_batch(caller, batch)?,
        ),
        Request::Abort { database, batch } => done(
            service
                .database(caller, &database)?
                .abort_batch(caller, batch)?,
        ),
        Request::Watch { database, start } => {
            let database: Arc<_> = service.database_with_tag(caller, &database, Tag::Read)?;
            Outcome::Watch(database.watch(caller, &start)?)
        }
        Request::CreateCollection {
            collection,
            permissions,
        } => done(
            service
                .database_with_tag(caller, &collection.database_path(), Tag::Write)?
                .create_collection(caller, &collection.collection, permissions)?,
        ),
        Request::DestroyCollection { collection } => {
            done(service.destroy_collection(caller, &collection)?)
        }
        Request::CollectionExists { collection } => {
            let exists = match reachable(service, caller, &collection.database_path())? {
                Some(database) => database.collection_exists(caller, &collection.collection)?,
                None => false,
            };
            Outcome::Response(Response::Bool(exists))
        }
        Request::Get {
            collection,
            key,
            batch,
        } => Outcome::Response(Response::Value(
            service.database(caller, &collection.database_path())?.get(
                caller,
                &collection.collection,
                &key,
                batch,
            )?,
        )),
        Request::Put {
            collection,
            key,
            value,
            batch,
        } => done(service.database(caller, &collection.database_path())?.put(
            caller,
            &collection.collection,
            &key,
            &value,
            batch,
        )?),
        Request::Delete {
            collection,
            key,
            batch,
        } => done(
            service
                .database(caller, &collection.database_path())?
                .delete(caller, &collection.collection, &key, batch)?,
        ),
        Request::RowExists {
            collection,
            key,
            batch,
        } => {
            let exists = match reachable(service, caller, &collection.database_path())? {
                Some(database) => {
                    database.row_exists(caller, &collection.collection, &key, batch)?
                }
                None => false,
            };
            Outcome::Response(Response::Bool(exists))
        }
        Request::Scan {
            collection,
            range,
            batch,
        } => Outcome::Rows(
            service
                .database(caller, &collection.database_path())?
                .scan(caller, &collection.collection, &range, batch)?,
        ),
        Request::DeleteRange {
            collection,
            range,
            batch,
        } => Outcome::Response(Response::Deleted(
            service
                .database(caller, &collection.database_path())?
                .delete_range(caller, &collection.collection, &range, batch)?,
        )),
    })
}

/// The database for an exists call: `None` where other calls would say it does not exist.
fn reachable(
    service: &Service,
    caller: &Caller,
    path: &DatabasePath,
) -> Result<Option<Arc<Database>>> {
    match service.database(caller, path) {
        Ok(database) => Ok(Some(database)),
        Err(error) if error.code() == codes::NO_EXIST => Ok(None),
        Err(error) => Err(error),
    }
}
