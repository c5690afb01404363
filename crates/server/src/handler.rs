//! The in-process [`Handler`]: runs requests for one caller against a [`Service`]. Store work
//! blocks (a durable commit waits for the disk), so each call runs on tokio's blocking pool;
//! scans and watches stream their results.

use std::sync::Arc;

use syncbase_nosql::{Caller, Service};
use syncbase_wire::budget::lease_all;
use syncbase_wire::{
    ByteBudget, Handler, Lease, ObjectPath, Request, Response, Responses, StatusInfo, WireError,
    codes, limits,
};

use crate::dispatch::{Outcome, dispatch};
use crate::sync::SyncEngine;

/// A [`Handler`] for `caller` over an in-process service.
#[derive(Clone)]
pub struct ServiceHandler {
    service: Arc<Service>,
    caller: Caller,
    status: Arc<StatusInfo>,
    /// Budgets that response bytes are leased from until written out (none in process).
    response_budgets: Arc<[ByteBudget]>,
    /// The daemon's sync engine (none in process): syncgroup calls and peer calls go to it.
    sync: Option<Arc<SyncEngine>>,
}

/// Single responses up to this size are not leased: each connection runs a bounded number of
/// calls, so they are bounded in all, and they never wait behind large messages.
const SINGLE_RESPONSE_UNLEASED_BYTES_MAX: usize = 64 * 1024;

/// The most bytes one response message can hold: a full message's worth plus one largest row.
/// (A watch message holds at most a message's worth or one change, which is less.)
const MESSAGE_BYTES_WORST: usize = limits::STREAM_MESSAGE_BYTES_TARGET
    + limits::VALUE_BYTES_MAX
    + limits::NAME_BYTES_MAX
    + ENTRY_OVERHEAD_BYTES;

impl ServiceHandler {
    /// A handler answering as `service` to `caller`; `status` is what a status call returns.
    pub fn new(service: Arc<Service>, caller: Caller, status: Arc<StatusInfo>) -> Self {
        Self {
            service,
            caller,
            status,
            response_budgets: Arc::from(Vec::new()),
            sync: None,
        }
    }

    /// Sends syncgroup and peer calls to `engine`.
    pub fn with_sync(mut self, engine: Arc<SyncEngine>) -> Self {
        self.sync = Some(engine);
        self
    }

    /// Leases every response's bytes from `budgets` (a connection's, then the daemon's) from
    /// before it is read until the transport has written it: a slow reader then makes its
    /// reads wait instead of growing the heap.
    pub fn with_response_budgets(mut self, budgets: Vec<ByteBudget>) -> Self {
        self.response_budgets = Arc::from(budgets);
        self
    }

    /// The caller this handler acts for.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

fn internal(error: impl std::fmt::Display) -> WireError {
    WireError::new(codes::INTERNAL, error.to_string())
}

#[async_trait::async_trait]
impl Handler for ServiceHandler {
    async fn call(&self, request: Request) -> Result<Responses, WireError> {
        let request = match (&self.sync, request) {
            (Some(engine), Request::Peer(peer)) => {
                // A refusal travels as the stream's one response, like any other call's.
                return Ok(match engine.peer_call(&self.caller, peer).await {
                    Ok(responses) => responses,
                    Err(error) => Responses::single(Err(error)),
                });
            }
            (Some(engine), Request::SyncNow { database }) => {
                return Ok(Responses::single(
                    engine.sync_now(&self.caller, database).await,
                ));
            }
            (Some(engine), Request::SyncStatus) => {
                return Ok(Responses::single(engine.status(&self.caller).await));
            }
            (Some(engine), Request::CreateSyncgroup { database, spec }) => {
                return Ok(Responses::single(
                    engine.create_syncgroup(&self.caller, database, spec).await,
                ));
            }
            (
                Some(engine),
                Request::JoinSyncgroup {
                    database,
                    name,
                    via,
                    wait,
                },
            ) => {
                return Ok(engine.join_syncgroup_call(&self.caller, database, name, via, wait));
            }
            (_, request) => request,
        };
        let (sender, responses) = Responses::channel();
        let outcome = if waits_for_disk(&self.service, &request) {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                dispatch(&this.service, &this.caller, request, &this.status)
            })
            .await
            .map_err(internal)?
        } else {
            // Reads take microseconds; a thread hand-off would cost more than the read.
            dispatch(&self.service, &self.caller, request, &self.status)
        }
        .map_err(|error| error.to_wire())?;
        match outcome {
            Outcome::Response(response) => {
                // A single response is read before it is leased (a get cannot know its size
                // first), and only a large one waits for the budget: small answers never queue
                // behind slow readers of large rows.
                let bytes = response_bytes(&response);
                let lease = if bytes > SINGLE_RESPONSE_UNLEASED_BYTES_MAX {
                    lease_all(&self.response_budgets, bytes).await
                } else {
                    Lease::default()
                };
                return Ok(Responses::single_leased(Ok(response), lease));
            }
            Outcome::Rows(rows) => {
                let budgets = self.response_budgets.clone();
                // Each chunk is read on the blocking pool and sent from async code, so a slow
                // consumer holds no thread while it catches up.
                tokio::spawn(async move {
                    let mut rows = Some(rows);
                    loop {
                        let Some(mut source) = rows.take() else {
                            return;
                        };
                        let mut lease = lease_all(&budgets, MESSAGE_BYTES_WORST).await;
                        let read = tokio::task::spawn_blocking(move || {
                            let chunk = next_chunk(&mut source);
                            (source, chunk)
                        })
                        .await;
                        let Ok((source, chunk)) = read else { return };
                        match chunk {
                            Ok(chunk) if chunk.is_empty() => return,
                            Ok(chunk) => {
                                lease.shrink_to(rows_bytes(&chunk));
                                if !sender.send_leased(Ok(Response::Rows(chunk)), lease).await {
                                    return;
                                }
                                rows = Some(source);
                            }
                            Err(error) => {
                                sender.send(Err(error)).await;
                                return;
                            }
                        }
                    }
                });
            }
            Outcome::Watch(mut watcher) => {
                let budgets = self.response_budgets.clone();
                tokio::spawn(async move {
                    // The initial state is read a batch at a time on the blocking pool (it reads
                    // the watch's snapshot, perhaps from disk), each batch's bytes leased before
                    // it is read, as a scan's rows are. Its batches go out as one commit.
                    while watcher.initial_state_remains() {
                        let lease = tokio::select! {
                            lease = lease_all(&budgets, MESSAGE_BYTES_WORST) => lease,
                            () = sender_closed(&sender) => return,
                        };
                        let read = tokio::task::spawn_blocking(move || {
                            let next = watcher.next_batch();
                            (watcher, next)
                        })
                        .await;
                        let Ok((returned, next)) = read else { return };
                        watcher = returned;
                        let changes = match next {
                            Ok(Some(changes)) => changes,
                            Ok(None) => break,
                            Err(error) => {
                                if let Some(error) = watcher.explain(error) {
                                    sender.send(Err(error.to_wire())).await;
                                }
                                return;
                            }
                        };
                        let ends_commit = !watcher.commit_continues();
                        if !send_changes(&sender, &budgets, changes, ends_commit, Some(lease)).await
                        {
                            return;
                        }
                    }
                    loop {
                        let next = tokio::select! {
                            next = watcher.next() => next,
                            () = sender_closed(&sender) => return,
                        };
                        let changes = match next {
                            Ok(Some(changes)) => changes,
                            Ok(None) => return,
                            Err(error) => {
                                sender.send(Err(error.to_wire())).await;
                                return;
                            }
                        };
                        if !send_changes(&sender, &budgets, changes, true, None).await {
                            return;
                        }
                    }
                });
            }
        }
        Ok(responses)
    }
}

/// Encoding overhead counted per row or change beyond its strings and bytes.
const ENTRY_OVERHEAD_BYTES: usize = 16;

/// The next rows of a scan, up to a message's worth (empty at the end): rows are taken until
/// they reach the target, so a message holds at most the target plus one row, and no row is
/// read ahead of the message it goes in (a read-ahead 16 MiB row would be held outside any lease).
fn next_chunk(rows: &mut syncbase_nosql::RowStream) -> Result<Vec<(String, Vec<u8>)>, WireError> {
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    while chunk.len() < limits::SCAN_ROWS_PER_MESSAGE_MAX
        && chunk_bytes < limits::STREAM_MESSAGE_BYTES_TARGET
    {
        match rows.next() {
            None => break,
            Some(Err(error)) => return Err(error.to_wire()),
            Some(Ok((key, value))) => {
                chunk_bytes += key.len() + value.len() + ENTRY_OVERHEAD_BYTES;
                chunk.push((key, value));
            }
        }
    }
    Ok(chunk)
}

/// Sends changes of one commit as [`split_commit`] cuts them, leasing each message's bytes (the
/// first message's from `lease`, taken before the changes were read, when there is one).
/// Returns false once the consumer has gone.
async fn send_changes(
    sender: &syncbase_wire::ResponseSender,
    budgets: &[ByteBudget],
    changes: Vec<syncbase_wire::Change>,
    ends_commit: bool,
    mut lease: Option<Lease>,
) -> bool {
    for (message, bytes) in split_commit(changes, ends_commit) {
        let lease = match lease.take() {
            Some(mut lease) => {
                lease.shrink_to(bytes);
                lease
            }
            None => lease_all(budgets, bytes).await,
        };
        if !sender.send_leased(Ok(message), lease).await {
            return false;
        }
    }
    true
}

/// Splits changes of one commit into messages of about `STREAM_MESSAGE_BYTES_TARGET` bytes:
/// `ChangesPart`s, then a final `Changes` when they end the commit (else one more part). A
/// change that would take a part past the target starts the next part, so a message holds at
/// most the target or one change.
fn split_commit(changes: Vec<syncbase_wire::Change>, ends_commit: bool) -> Vec<(Response, usize)> {
    let mut messages = Vec::new();
    let mut part = Vec::new();
    let mut part_bytes = 0;
    for change in changes {
        let size = change_bytes(&change);
        if !part.is_empty() && part_bytes + size > limits::STREAM_MESSAGE_BYTES_TARGET {
            messages.push((
                Response::ChangesPart(std::mem::take(&mut part)),
                std::mem::take(&mut part_bytes),
            ));
        }
        part_bytes += size;
        part.push(change);
    }
    let last = if ends_commit {
        Response::Changes(part)
    } else {
        Response::ChangesPart(part)
    };
    messages.push((last, part_bytes));
    messages
}

fn change_bytes(change: &syncbase_wire::Change) -> usize {
    change.key.len()
        + change.collection.len()
        + change.marker.len()
        + ENTRY_OVERHEAD_BYTES
        + match &change.kind {
            syncbase_wire::ChangeKind::Put(value) => value.len(),
            syncbase_wire::ChangeKind::Delete => 0,
        }
}

fn rows_bytes(rows: &[(String, Vec<u8>)]) -> usize {
    rows.iter()
        .map(|(key, value)| key.len() + value.len() + ENTRY_OVERHEAD_BYTES)
        .sum()
}

/// About how many bytes a single response takes (what its lease is cut to).
fn response_bytes(response: &Response) -> usize {
    ENTRY_OVERHEAD_BYTES
        + match response {
            Response::Value(value) => value.len(),
            Response::Rows(rows) => rows_bytes(rows),
            Response::Names(names) => names.iter().map(|name| name.len() + 2).sum(),
            _ => 0,
        }
}

/// Whether a request may wait for the disk (it commits), so it must not run on an async worker
/// thread. (A read may open a database's store on its first use: rare, and short.)
fn waits_for_disk(service: &Service, request: &Request) -> bool {
    // A read of a database not open yet opens it (which may write, or wait for a destroy of
    // that path): that is disk work too.
    let database_open = |path: &syncbase_wire::DatabasePath| service.is_open(path);
    match request {
        Request::Status
        | Request::AppExists { .. }
        | Request::DatabaseExists { .. }
        | Request::ListApps
        | Request::ListDatabases { .. } => false,
        Request::Get { collection, .. }
        | Request::RowExists { collection, .. }
        | Request::Scan { collection, .. }
        | Request::CollectionExists { collection } => !database_open(&collection.database_path()),
        Request::ListCollections { database } | Request::LogStatus { database } => {
            !database_open(database)
        }
        Request::GetPermissions { object } => match object {
            ObjectPath::Collection(collection) => !database_open(&collection.database_path()),
            ObjectPath::Service | ObjectPath::App(_) | ObjectPath::Database(_) => false,
        },
        _ => true,
    }
}

/// Completes when the consumer of a stream has gone away.
async fn sender_closed(sender: &syncbase_wire::ResponseSender) {
    sender.closed().await;
}
