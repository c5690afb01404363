//! The sync engine's driver in the daemon: it runs each synced database's
//! [`DatabaseSync`] state machine and does its I/O. Local commits wake it through the watch
//! log's notifier (no polling) and are pushed to the members as notifications; a notified member
//! pulls at once; a timer pulls from every member (anti-entropy) to repair what a lost
//! notification leaves. Calls between daemons travel as [`PeerRequest`]s over the same
//! authenticated connections clients use, in either direction: a connection this daemon dials
//! also serves the peer's calls.
//!
//! Peer calls are authorized by the connection's verified principal: a pull or notification from
//! a principal that is not a member of a syncgroup of the database gets `nosql.no_exist`, as for a
//! database that does not exist; a join is checked against the syncgroup's Read list. A member is
//! dialed at the address its syncgroup record gives, and the connection is kept only if the
//! daemon there is that member.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::coalesce::Coalescer;
use syncbase_net::{Connection, HandlerFactory, Identity};
use syncbase_nosql::{Caller, Service};
use syncbase_store::{LogEvent, Store};
use syncbase_vsync::conflict::LastWriterWins;
use syncbase_vsync::knowledge::Knowledge;
use syncbase_vsync::responder::{Delta, PART_RECORDS_MIN};
use syncbase_vsync::service::{
    Action, DataModel, DatabaseSync, Event, Message, ModelAccess, PullAnswer,
};
use syncbase_vsync::syncgroup::{JoinAnswer, syncgroups};
use syncbase_wire::{
    DatabasePath, Handler, PeerRequest, Request, Response, Responses, SyncgroupSpec, WireError,
    codes,
};

/// How long reaching a member may take before it counts as unreachable.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call to a member may take, from asking to its answer (for a pull, whose answer
/// streams: how long it may send nothing), before the member counts as unreachable and its
/// connection is dialed afresh: a half-open connection never answers.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// By default, how often every member is pulled from even without a notification.
pub const ANTI_ENTROPY_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);

type DbSync = DatabaseSync<Arc<dyn Store>>;

/// Dials and authenticates: the daemon's current identity.
pub type IdentityFn = Arc<dyn Fn() -> Arc<Identity> + Send + Sync>;

/// The daemon's sync engine.
pub struct SyncEngine {
    service: Arc<Service>,
    /// This daemon's principal: its name as a member.
    member: String,
    /// Where other members reach it.
    address: Option<String>,
    identity: IdentityFn,
    /// Serves the calls a peer makes over a connection this daemon dialed.
    factory: OnceLock<Arc<dyn HandlerFactory>>,
    databases: parking_lot::Mutex<HashMap<DatabasePath, Arc<DbSync>>>,
    peers: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
    anti_entropy: Option<Duration>,
    /// Members being caught up with after a failed call (database, member).
    retrying: parking_lot::Mutex<std::collections::HashSet<(DatabasePath, String)>>,
    /// When a round with each member last succeeded (milliseconds since the epoch).
    last_sync_ms: parking_lot::Mutex<HashMap<(DatabasePath, String), u64>>,
    /// What members announced they know, per database (from their notifications).
    announced: parking_lot::Mutex<HashMap<DatabasePath, Knowledge>>,
    /// Notifications and pulls in flight, by (database, member, whether a pull).
    in_flight: Coalescer<(DatabasePath, String, bool)>,
    /// Whether commits return before they are on disk: then what a pull's answer reveals of
    /// this device's generations is made durable first.
    relaxed: bool,
    /// Per database, this device's newest generation known durable (under relaxed durability).
    durable_generation: parking_lot::Mutex<HashMap<DatabasePath, u64>>,
}

fn wire(code: &str, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

fn internal(error: impl std::fmt::Display) -> WireError {
    wire(codes::INTERNAL, error.to_string())
}

fn sync_error(error: syncbase_vsync::Error) -> WireError {
    wire(error.code(), error.to_string())
}

fn no_exist(what: impl std::fmt::Display) -> WireError {
    wire(
        codes::NO_EXIST,
        format!("{what} does not exist or access is denied"),
    )
}

fn database_what(path: &DatabasePath) -> String {
    format!("database {}/{}", path.app, path.database)
}

/// The first wait before catching up with a member a call could not reach; it doubles up to
/// [`RETRY_DELAY_MAX`], for at most [`RETRY_ATTEMPTS_MAX`] attempts (then anti-entropy, or the
/// member's own start, takes over).
pub const RETRY_DELAY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts to catch up with a member.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);
/// Attempts to catch up with a member after a failed call.
pub const RETRY_ATTEMPTS_MAX: u32 = 12;

/// Whether a failed peer call may succeed later (the member unreachable, or the connection
/// lost), as opposed to a refusal.
fn is_transient(error: &WireError) -> bool {
    error.code == syncbase_error_code::sync::PEER_UNREACHABLE || error.code.starts_with("net.")
}

/// Waits on tokio's clock: the driver's backoff, not the protocol core's time.
#[allow(clippy::disallowed_methods)]
async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// The most bytes of one [`Response::Bytes`]: a larger answer (a delta) travels as a stream of
/// such pieces, to be joined in order (a message holds at most 17 MiB).
pub const PEER_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How a round a client waits for is going (a join's first round): bytes of the delta
/// received, then its records while they are applied.
#[derive(Default)]
pub struct RoundProgress {
    bytes: std::sync::atomic::AtomicU64,
    records: std::sync::atomic::AtomicU64,
    applying: std::sync::atomic::AtomicBool,
}

impl RoundProgress {
    fn received(&self, bytes: usize) {
        self.bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// As a client sees it.
    pub fn report(&self) -> syncbase_wire::JoinProgress {
        use std::sync::atomic::Ordering::Relaxed;
        syncbase_wire::JoinProgress {
            bytes: self.bytes.load(Relaxed),
            records: self.records.load(Relaxed),
            applying: self.applying.load(Relaxed),
        }
    }
}

/// A peer call's answer: its one response, or the [`Response::Bytes`] pieces of a stream joined.
async fn call_joined(handler: &dyn Handler, request: Request) -> Result<Response, WireError> {
    let mut responses = handler.call(request).await?;
    let first = match responses.next().await {
        Some(response) => response?,
        None => return Err(internal("a peer answered nothing")),
    };
    let Response::Bytes(mut joined) = first else {
        return Ok(first);
    };
    while let Some(piece) = responses.next().await {
        match piece? {
            Response::Bytes(piece) => joined.extend_from_slice(&piece),
            _ => return Err(internal("a peer mixed other answers into its bytes")),
        }
    }
    Ok(Response::Bytes(joined))
}

/// Bytes before a frame's part: its length (8 bytes, little-endian) and whether it is the
/// delta's last part (1 byte).
const FRAME_HEADER_BYTES: usize = 9;

/// One part of a delta as it travels in a pull's answer: its length, whether it is the last
/// part, then its encoding. The frames follow one another in [`Response::Bytes`] pieces (a
/// piece may hold several, or end inside one); a stream that ends without its last part was
/// cut short.
fn delta_frame(part: &Delta, last: bool) -> Result<Vec<u8>, syncbase_vsync::Error> {
    let encoded = syncbase_vsync::service::encode(part)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + encoded.len());
    frame.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
    frame.push(u8::from(last));
    frame.extend_from_slice(&encoded);
    Ok(frame)
}

fn stream_invalid(message: impl Into<String>) -> WireError {
    sync_error(syncbase_vsync::Error::DeltaInvalid(message.into()))
}

/// Joins the pieces of a pull's answer and cuts them into frames ([`delta_frame`]).
#[derive(Default)]
struct FrameJoiner {
    pending: Vec<u8>,
    /// The last part was cut out: nothing may follow.
    ended: bool,
}

impl FrameJoiner {
    /// Takes in the next piece; answers the parts it completes, in order.
    fn push(&mut self, piece: Vec<u8>) -> Result<Vec<Vec<u8>>, WireError> {
        if self.pending.is_empty() {
            self.pending = piece;
        } else {
            self.pending.extend_from_slice(&piece);
        }
        let mut parts = Vec::new();
        let mut at = 0;
        while let Some(header) = self.pending[at..].first_chunk::<FRAME_HEADER_BYTES>() {
            if self.ended {
                return Err(stream_invalid(
                    "a peer sent more after the last part of a delta",
                ));
            }
            let mut length = [0u8; 8];
            length.copy_from_slice(&header[..8]);
            let length = u64::from_le_bytes(length);
            let last = match header[8] {
                0 => false,
                1 => true,
                other => return Err(stream_invalid(format!("a frame flag of {other}"))),
            };
            let start = at + FRAME_HEADER_BYTES;
            let Some(part) = usize::try_from(length)
                .ok()
                .and_then(|length| start.checked_add(length))
                .and_then(|end| self.pending.get(start..end))
            else {
                break;
            };
            parts.push(part.to_vec());
            at = start + part.len();
            self.ended = last;
        }
        self.pending.drain(..at);
        Ok(parts)
    }

    /// The stream ended: it must have ended with its last part.
    fn finish(&self) -> Result<(), WireError> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(stream_invalid("a peer's delta ended before its last part"))
        }
    }
}

/// Runs `request` (a pull) on `connection` and hands each part of its answer to `parts`, in
/// order; answers the bytes received. Stops early, without error, once `parts` is closed (a
/// part failed to apply). A failure comes with the bytes received before it. A member that
/// sends nothing for [`PEER_CALL_TIMEOUT`] is unreachable.
#[allow(clippy::disallowed_methods)] // a call to a peer is the driver's I/O, with a deadline.
async fn receive_frames(
    connection: &Connection,
    member: &str,
    request: PeerRequest,
    parts: tokio::sync::mpsc::Sender<Vec<u8>>,
    progress: Option<&Arc<RoundProgress>>,
) -> Result<u64, (WireError, u64)> {
    let silent = |received| {
        (
            wire(
                syncbase_error_code::sync::PEER_UNREACHABLE,
                format!(
                    "{member} sent nothing for {} s",
                    PEER_CALL_TIMEOUT.as_secs()
                ),
            ),
            received,
        )
    };
    let mut responses =
        tokio::time::timeout(PEER_CALL_TIMEOUT, connection.call(Request::Peer(request)))
            .await
            .map_err(|_| silent(0))?
            .map_err(|error| (error, 0))?;
    if let Some(progress) = progress {
        // A call dialed afresh counts from nothing again.
        progress
            .bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }
    let mut received = 0u64;
    let mut joiner = FrameJoiner::default();
    loop {
        let next = tokio::select! {
            // A part failed to apply: the rest is not wanted.
            () = parts.closed() => return Ok(received),
            next = tokio::time::timeout(PEER_CALL_TIMEOUT, responses.next()) => next,
        };
        let piece = match next {
            Err(_) => return Err(silent(received)),
            Ok(None) => break,
            Ok(Some(Ok(Response::Bytes(piece)))) => piece,
            Ok(Some(Ok(_))) => {
                return Err((
                    internal("a peer mixed other answers into a delta"),
                    received,
                ));
            }
            Ok(Some(Err(error))) => return Err((error, received)),
        };
        received += piece.len() as u64;
        if let Some(progress) = progress {
            progress.received(piece.len());
        }
        for part in joiner.push(piece).map_err(|error| (error, received))? {
            if parts.send(part).await.is_err() {
                return Ok(received);
            }
        }
    }
    joiner.finish().map_err(|error| (error, received))?;
    Ok(received)
}

/// What a pull brought.
#[derive(Default)]
struct Pulled {
    records: u64,
    bytes: u64,
    parts: u64,
    /// From asking to the first part's arrival.
    first_part_ms: u64,
    /// After the first part, how long the applier waited for the next.
    waited_ms: u64,
}

/// Applies a delta's parts in order as `queued` brings them, each in a commit of its own
/// (counted into `progress` as they arrive); stops at the first that fails, which drops
/// `queued` and so stops the stream. Answers the actions the applied parts call for, each
/// once, even when one failed (the parts before it stay applied).
#[allow(clippy::disallowed_methods)] // the round's stages are timed for the debug log.
fn apply_parts(
    sync: &DbSync,
    from: &str,
    mut queued: tokio::sync::mpsc::Receiver<Vec<u8>>,
    progress: Option<&RoundProgress>,
    started: std::time::Instant,
) -> (Pulled, Vec<Action>, Option<syncbase_vsync::Error>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut pulled = Pulled::default();
    let mut actions: Vec<Action> = Vec::new();
    let mut waited = std::time::Duration::ZERO;
    loop {
        let waiting = std::time::Instant::now();
        let Some(encoded) = queued.blocking_recv() else {
            break;
        };
        if pulled.parts == 0 {
            pulled.first_part_ms = started.elapsed().as_millis() as u64;
        } else {
            waited += waiting.elapsed();
        }
        let part: Delta = match syncbase_vsync::service::decode(&encoded) {
            Ok(part) => part,
            Err(error) => return (pulled, actions, Some(error)),
        };
        drop(encoded);
        let records = part.records.len() as u64;
        if let Some(progress) = progress {
            progress.records.fetch_add(records, Relaxed);
            progress.applying.store(true, Relaxed);
        }
        let handled = match sync.handle(Event::Received {
            from: from.to_string(),
            message: Message::Delta(part),
        }) {
            Ok(handled) => handled,
            Err(error) => return (pulled, actions, Some(error)),
        };
        pulled.parts += 1;
        pulled.records += records;
        for action in handled.actions {
            if !actions.contains(&action) {
                actions.push(action);
            }
        }
    }
    pulled.waited_ms = waited.as_millis() as u64;
    (pulled, actions, None)
}

/// Whether a failed peer call is worth one more try over a connection dialed afresh: a
/// transport failure (the connection closed), or a connection of the principal's that serves
/// no calls (a client using the member's identity).
fn worth_redialing(error: &WireError) -> bool {
    error.code.starts_with("net.") || error.code == codes::BAD_MESSAGE
}

/// `bytes` as a stream of [`Response::Bytes`] pieces of at most [`PEER_CHUNK_BYTES_MAX`].
fn bytes_stream(bytes: Vec<u8>) -> Responses {
    if bytes.len() <= PEER_CHUNK_BYTES_MAX {
        return Responses::single(Ok(Response::Bytes(bytes)));
    }
    let (sender, responses) = Responses::channel();
    tokio::spawn(async move {
        for piece in bytes.chunks(PEER_CHUNK_BYTES_MAX) {
            if !sender.send(Ok(Response::Bytes(piece.to_vec()))).await {
                return;
            }
        }
    });
    responses
}

impl SyncEngine {
    /// An engine for `service`, as the member `member` reached at `address`, over stores
    /// committing with `durability`.
    pub fn new(
        service: Arc<Service>,
        member: String,
        address: Option<String>,
        identity: IdentityFn,
        anti_entropy: Option<Duration>,
        durability: syncbase_store::Durability,
    ) -> Arc<Self> {
        Arc::new(Self {
            service,
            member,
            address,
            identity,
            factory: OnceLock::new(),
            databases: parking_lot::Mutex::new(HashMap::new()),
            peers: tokio::sync::Mutex::new(HashMap::new()),
            anti_entropy,
            retrying: parking_lot::Mutex::new(std::collections::HashSet::new()),
            last_sync_ms: parking_lot::Mutex::new(HashMap::new()),
            announced: parking_lot::Mutex::new(HashMap::new()),
            in_flight: Coalescer::new(),
            relaxed: durability == syncbase_store::Durability::Relaxed,
            durable_generation: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Sets what serves a peer's calls over connections this daemon dials.
    pub fn set_factory(&self, factory: Arc<dyn HandlerFactory>) {
        let _ = self.factory.set(factory);
    }

    /// This daemon's name as a member.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Where other members reach this daemon.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// Starts syncing every database that has a syncgroup.
    pub async fn start(self: &Arc<Self>) {
        let service = self.service.clone();
        let listed = tokio::task::spawn_blocking(move || service.databases_with_syncgroups())
            .await
            .map_err(internal)
            .and_then(|listed| listed.map_err(sync_error));
        match listed {
            Ok(listed) => {
                for (app, database) in listed {
                    let path = DatabasePath { app, database };
                    if let Err(error) = self.serve_database(&path).await {
                        tracing::warn!(%error, database = %database_what(&path), "cannot sync");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list the synced databases"),
        }
    }

    /// The sync of `path`, started (with its loop) if it was not running.
    pub async fn serve_database(
        self: &Arc<Self>,
        path: &DatabasePath,
    ) -> Result<Arc<DbSync>, WireError> {
        let (sync, opened) = self.open_database(path).await?;
        if opened {
            self.start_loop(path, &sync);
        }
        Ok(sync)
    }

    /// Starts the loop of a database [`Self::open_database`] opened.
    fn start_loop(self: &Arc<Self>, path: &DatabasePath, sync: &Arc<DbSync>) {
        let engine = self.clone();
        let looping = sync.clone();
        let looped = path.clone();
        tokio::spawn(async move { engine.run_database(looped, looping).await });
    }

    /// The sync of `path`, and whether this call opened it (its loop is then the caller's to
    /// start, with [`Self::start_loop`]).
    async fn open_database(
        self: &Arc<Self>,
        path: &DatabasePath,
    ) -> Result<(Arc<DbSync>, bool), WireError> {
        if let Some(sync) = self.databases.lock().get(path) {
            return Ok((sync.clone(), false));
        }
        let service = self.service.clone();
        let member = self.member.clone();
        let app = path.app.clone();
        let database = path.database.clone();
        let address = self.address.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let store = service.open_for_sync(&app, &database)?;
            // This daemon may listen elsewhere than when it joined: say so in its records
            // (they travel in every delta, so members learn it).
            if let Some(address) = &address {
                let transaction = store.begin(syncbase_store::Origin::default())?;
                syncbase_vsync::syncgroup::set_own_address(&transaction, &member, address)?;
                syncbase_store::Transaction::commit(&transaction)?;
            }
            DatabaseSync::new(
                store,
                member,
                service.device_id(),
                service.log_clock().clone(),
                Arc::new(syncbase_store::EntropyRng::default()),
                Arc::new(LastWriterWins),
                Arc::new(ModelAccess {
                    model: service.clone(),
                    app,
                    database,
                }),
            )
        })
        .await
        .map_err(internal)?
        .map_err(sync_error)?;
        let mut databases = self.databases.lock();
        if let Some(sync) = databases.get(path) {
            return Ok((sync.clone(), false));
        }
        let sync = Arc::new(opened);
        databases.insert(path.clone(), sync.clone());
        Ok((sync, true))
    }

    /// The database's loop: local commits (through the log notifier) and anti-entropy ticks.
    #[allow(clippy::disallowed_methods)] // the driver, not the protocol core, keeps the timer.
    async fn run_database(self: Arc<Self>, path: DatabasePath, sync: Arc<DbSync>) {
        let notifier = sync.store().notifier();
        let mut seen = notifier.latest_seq();
        // Catch up with every member at once, and announce what was committed before a restart.
        self.run(&path, &sync, Event::Start).await;
        // Without anti-entropy the timer never fires: push alone carries every write. With it,
        // each wait is 75–100% of the period, drawn afresh, so members that started together
        // do not pull from each other in lockstep.
        let period = self
            .anti_entropy
            .unwrap_or(Duration::from_secs(86_400 * 365));
        let rng = syncbase_store::EntropyRng::default();
        let next_wait = || {
            let fraction = 0.75 + (syncbase_store::Rng::next_u64(&rng) % 250) as f64 / 1000.0;
            period.mul_f64(fraction)
        };
        let ticks = tokio::time::sleep(next_wait());
        tokio::pin!(ticks);
        loop {
            tokio::select! {
                event = notifier.wait_after(seen) => match event {
                    LogEvent::Advanced(latest) => {
                        seen = latest;
                        self.run(&path, &sync, Event::LocalCommit).await;
                    }
                    LogEvent::Closed => break,
                },
                _ = &mut ticks, if self.anti_entropy.is_some() => {
                    self.run(&path, &sync, Event::Tick).await;
                    ticks.as_mut().reset(tokio::time::Instant::now() + next_wait());
                }
            }
        }
        self.databases.lock().remove(&path);
    }

    /// Handles `event` on the blocking pool and carries out what it calls for (boxed: a pull's
    /// answer is handled by this again).
    fn run<'a>(
        self: &'a Arc<Self>,
        path: &'a DatabasePath,
        sync: &'a Arc<DbSync>,
        event: Event,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let handling = sync.clone();
            let handled = tokio::task::spawn_blocking(move || handling.handle(event)).await;
            let actions = match handled {
                Ok(Ok(handled)) => handled.actions,
                Ok(Err(error)) => {
                    tracing::warn!(%error, database = %database_what(path), "sync step failed");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "sync step panicked");
                    return;
                }
            };
            for action in actions {
                let engine = self.clone();
                let path = path.clone();
                let sync = sync.clone();
                tokio::spawn(async move { engine.perform(&path, &sync, action).await });
            }
        })
    }

    /// Carries out an action of the state machine: a notification or a pull to a member
    /// ([`Self::call_coalesced`]); deltas travel only as answers to pulls.
    async fn perform(self: &Arc<Self>, path: &DatabasePath, sync: &Arc<DbSync>, action: Action) {
        let Action::Send { to, message } = action;
        match message {
            Message::Notify => self.call_coalesced(path, sync, to, false).await,
            // The pull asks with the knowledge of the moment it is sent ([`Self::pull_from`]).
            Message::Pull { .. } => self.call_coalesced(path, sync, to, true).await,
            Message::Delta(_) => {}
        }
    }

    /// Notifies `to`, or pulls from it (and applies the delta), coalesced: while such a call to
    /// that member is in flight, another only makes it run once more when it ends. A call that
    /// fails in the transport starts catching up with the member ([`Self::retry_later`]).
    /// (Boxed: a pull's round spawns the actions it calls for, which come back here.)
    fn call_coalesced<'a>(
        self: &'a Arc<Self>,
        path: &'a DatabasePath,
        sync: &'a Arc<DbSync>,
        to: String,
        pull: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(mut turn) = self.in_flight.turn(&(path.clone(), to.clone(), pull)) else {
                tracing::trace!(peer = %to, pull, "coalesced with the call in flight");
                return;
            };
            tracing::trace!(peer = %to, pull, "calling");
            loop {
                let called = if pull {
                    self.pull_from(sync, path, &to, None).await.map(drop)
                } else {
                    self.notify(sync, path, &to).await
                };
                if let Err(error) = called {
                    if is_transient(&error) {
                        tracing::debug!(%error, peer = %to, database = %database_what(path), "a peer call failed");
                        self.clone()
                            .retry_later(path.clone(), sync.clone(), to.clone());
                    } else {
                        tracing::warn!(%error, peer = %to, database = %database_what(path), "a peer call was refused");
                    }
                }
                if !turn.again() {
                    break;
                }
            }
        })
    }

    /// Tells `member` this daemon has new generations, with what it knows now.
    async fn notify(
        self: &Arc<Self>,
        sync: &Arc<DbSync>,
        path: &DatabasePath,
        member: &str,
    ) -> Result<(), WireError> {
        let reading = sync.clone();
        let knowledge = tokio::task::spawn_blocking(move || reading.knowledge())
            .await
            .map_err(internal)?
            .map_err(sync_error)?;
        let request = PeerRequest::Notify {
            database: path.clone(),
            knowledge: syncbase_vsync::service::encode(&knowledge).map_err(sync_error)?,
        };
        self.call_member(sync, member, request).await.map(drop)
    }

    /// Catches up with a member that could not be reached: pulls from it and tells it to pull,
    /// after 0.5 s, 1 s, 2 s, ... (at most a minute, each ±25%), until a round succeeds or the
    /// failure is no longer a transport one. One such loop per member and database at a time.
    fn retry_later(self: Arc<Self>, path: DatabasePath, sync: Arc<DbSync>, member: String) {
        let key = (path.clone(), member.clone());
        if !self.retrying.lock().insert(key.clone()) {
            return;
        }
        tokio::spawn(async move {
            let rng = syncbase_store::EntropyRng::default();
            for attempt in 0..RETRY_ATTEMPTS_MAX {
                let base = RETRY_DELAY_FIRST
                    .saturating_mul(1 << attempt.min(16))
                    .min(RETRY_DELAY_MAX);
                let jitter = 0.75 + (syncbase_store::Rng::next_u64(&rng) % 500) as f64 / 1000.0;
                sleep(base.mul_f64(jitter)).await;
                match self.pull_from(&sync, &path, &member, None).await {
                    Ok(_) => {
                        self.call_coalesced(&path, &sync, member.clone(), false)
                            .await;
                        break;
                    }
                    Err(error) if is_transient(&error) => continue,
                    Err(error) => {
                        tracing::debug!(%error, peer = %member, "catching up with a member failed");
                        break;
                    }
                }
            }
            self.retrying.lock().remove(&key);
        });
    }

    /// Pulls once from `member` and applies what it sends (a joiner's first round, a catch-up,
    /// a sync-now round): each part of the delta in a commit of its own as it arrives, while
    /// the next ones are on their way. Answers the records and bytes of the delta. A connection
    /// that fails before anything arrived (the peer restarted, or closed it idle) is dialed again
    /// once; parts applied before a failure stay (the next round sends nothing they hold).
    #[allow(clippy::disallowed_methods)] // the round's stages are timed for the debug log.
    async fn pull_from(
        self: &Arc<Self>,
        sync: &Arc<DbSync>,
        path: &DatabasePath,
        member: &str,
        progress: Option<&Arc<RoundProgress>>,
    ) -> Result<(u64, u64), WireError> {
        let knowledge = {
            let sync = sync.clone();
            tokio::task::spawn_blocking(move || sync.knowledge())
                .await
                .map_err(internal)?
                .map_err(sync_error)?
        };
        let request = PeerRequest::Pull {
            database: path.clone(),
            knowledge: syncbase_vsync::service::encode(&knowledge).map_err(sync_error)?,
        };
        let asked = std::time::Instant::now();
        let mut attempt = 0;
        let pulled = loop {
            attempt += 1;
            match self
                .pull_once(sync, path, member, request.clone(), progress)
                .await
            {
                Err((error, 0)) if attempt == 1 && worth_redialing(&error) => {
                    self.peers.lock().await.remove(member);
                }
                Err((error, _)) => return Err(error),
                Ok(pulled) => break pulled,
            }
        };
        tracing::debug!(
            peer = %member,
            records = pulled.records,
            bytes = pulled.bytes,
            parts = pulled.parts,
            first_part_ms = pulled.first_part_ms,
            waited_ms = pulled.waited_ms,
            total_ms = asked.elapsed().as_millis() as u64,
            "pulled"
        );
        self.synced_with(path, member);
        Ok((pulled.records, pulled.bytes))
    }

    /// Carries out, in the background, the actions a round calls for (notifying members of
    /// what arrived, or of its links).
    fn perform_all(
        self: &Arc<Self>,
        path: &DatabasePath,
        sync: &Arc<DbSync>,
        actions: Vec<Action>,
    ) {
        for action in actions {
            let engine = self.clone();
            let path = path.clone();
            let sync = sync.clone();
            tokio::spawn(async move { engine.perform(&path, &sync, action).await });
        }
    }

    /// One pull over `member`'s connection (dialed if need be): the stream of the delta's frames
    /// is read here while its parts are applied in order on a blocking thread. A failure comes
    /// with the bytes received before it.
    #[allow(clippy::disallowed_methods)] // the round's stages are timed for the debug log.
    async fn pull_once(
        self: &Arc<Self>,
        sync: &Arc<DbSync>,
        path: &DatabasePath,
        member: &str,
        request: PeerRequest,
        progress: Option<&Arc<RoundProgress>>,
    ) -> Result<Pulled, (WireError, u64)> {
        let connection = self
            .connection_for(sync, member)
            .await
            .map_err(|error| (error, 0))?;
        let started = std::time::Instant::now();
        let (frames, queued) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let applier = {
            let sync = sync.clone();
            let from = member.to_string();
            let progress = progress.cloned();
            tokio::task::spawn_blocking(move || {
                apply_parts(&sync, &from, queued, progress.as_deref(), started)
            })
        };
        let received = receive_frames(connection.as_ref(), member, request, frames, progress).await;
        let hung = received
            .as_ref()
            .is_err_and(|(error, _)| error.code == syncbase_error_code::sync::PEER_UNREACHABLE);
        self.forget_if_broken(member, &connection, hung).await;
        let (mut pulled, actions, failed) = applier.await.map_err(|error| (internal(error), 0))?;
        pulled.bytes = match &received {
            Ok(bytes) | Err((_, bytes)) => *bytes,
        };
        // What the applied parts call for is done whatever follows.
        self.perform_all(path, sync, actions);
        // A part that failed stopped the stream: its error is the cause.
        if let Some(error) = failed {
            return Err((sync_error(error), pulled.bytes.max(1)));
        }
        received?;
        Ok(pulled)
    }

    /// Pulls from every other member of `database`'s syncgroups now, for a client `caller`
    /// (Read on the database): one report per member, once each round is applied or failed.
    #[allow(clippy::disallowed_methods)] // the round's duration is a report for people.
    pub async fn sync_now(
        self: &Arc<Self>,
        caller: &Caller,
        database: DatabasePath,
    ) -> Result<Response, WireError> {
        let service = self.service.clone();
        let caller = caller.clone();
        let path = database.clone();
        let syncgroups =
            tokio::task::spawn_blocking(move || service.list_syncgroups(&caller, &path))
                .await
                .map_err(internal)?
                .map_err(|error| error.to_wire())?;
        if syncgroups.is_empty() {
            return Ok(Response::Pulled(Vec::new()));
        }
        let sync = self.serve_database(&database).await?;
        let reading = sync.clone();
        let members = tokio::task::spawn_blocking(move || reading.members())
            .await
            .map_err(internal)?
            .map_err(sync_error)?;
        let mut reports = Vec::new();
        for member in members {
            let started = std::time::Instant::now();
            let outcome = self.pull_from(&sync, &database, &member, None).await;
            let micros = started.elapsed().as_micros() as u64;
            let ((records, bytes), error) = match outcome {
                Ok(figures) => (figures, None),
                Err(error) => ((0, 0), Some(error)),
            };
            reports.push(syncbase_wire::PullReport {
                member,
                records,
                bytes,
                micros,
                error,
            });
        }
        Ok(Response::Pulled(reports))
    }

    /// Calls `member` (see [`Self::call_member_once`]); a connection that fails (the peer
    /// restarted, or closed it idle) is dialed again once.
    async fn call_member(
        &self,
        sync: &Arc<DbSync>,
        member: &str,
        request: PeerRequest,
    ) -> Result<Response, WireError> {
        match self.call_member_once(sync, member, request.clone()).await {
            Err(error) if worth_redialing(&error) => {
                self.peers.lock().await.remove(member);
                self.call_member_once(sync, member, request).await
            }
            outcome => outcome,
        }
    }

    /// `member`'s connection: the one kept, else dialed at the address its syncgroup record
    /// gives (and kept if the daemon there is that member).
    async fn connection_for(
        &self,
        sync: &Arc<DbSync>,
        member: &str,
    ) -> Result<Arc<Connection>, WireError> {
        let connection = match self.connection_to(member).await {
            Some(connection) => connection,
            None => {
                let address = {
                    let sync = sync.clone();
                    let member = member.to_string();
                    tokio::task::spawn_blocking(move || {
                        let snapshot = sync.store().versioned_snapshot()?;
                        Ok::<_, syncbase_vsync::Error>(
                            syncgroups(&snapshot)?
                                .into_iter()
                                .find_map(|syncgroup| syncgroup.addresses.get(&member).cloned()),
                        )
                    })
                    .await
                    .map_err(internal)?
                    .map_err(sync_error)?
                };
                let Some(address) = address else {
                    return Err(wire(
                        syncbase_error_code::sync::PEER_UNREACHABLE,
                        format!("no address is known for the member {member}"),
                    ));
                };
                let connection = self.dial(&address).await?;
                if connection.peer().name != member {
                    return Err(wire(
                        syncbase_error_code::sync::PEER_REFUSED,
                        format!(
                            "{address} is {}, not the member {member}",
                            connection.peer().name
                        ),
                    ));
                }
                self.peers
                    .lock()
                    .await
                    .insert(member.to_string(), connection.clone());
                connection
            }
        };
        Ok(connection)
    }

    /// Calls `member` over its connection, dialing it at the address its syncgroup record gives
    /// when there is none.
    #[allow(clippy::disallowed_methods)] // a call to a peer is the driver's I/O, with a deadline.
    async fn call_member_once(
        &self,
        sync: &Arc<DbSync>,
        member: &str,
        request: PeerRequest,
    ) -> Result<Response, WireError> {
        let connection = self.connection_for(sync, member).await?;
        let result = tokio::time::timeout(
            PEER_CALL_TIMEOUT,
            call_joined(connection.as_ref(), Request::Peer(request)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(wire(
                syncbase_error_code::sync::PEER_UNREACHABLE,
                format!(
                    "{member} did not answer within {} s",
                    PEER_CALL_TIMEOUT.as_secs()
                ),
            ))
        });
        let hung = result
            .as_ref()
            .is_err_and(|error| error.code == syncbase_error_code::sync::PEER_UNREACHABLE);
        self.forget_if_broken(member, &connection, hung).await;
        result
    }

    /// Forgets `member`'s `connection` if it closed or `hung`: it is dialed afresh next time.
    async fn forget_if_broken(&self, member: &str, connection: &Arc<Connection>, hung: bool) {
        if connection.closed_reason().is_some() || hung {
            let mut peers = self.peers.lock().await;
            if peers
                .get(member)
                .is_some_and(|kept| Arc::ptr_eq(kept, connection))
            {
                peers.remove(member);
            }
        }
    }

    /// Notes that a round with `member` just succeeded.
    fn synced_with(&self, path: &DatabasePath, member: &str) {
        self.last_sync_ms
            .lock()
            .insert((path.clone(), member.to_string()), now_ms());
    }

    /// How this daemon's synced databases stand, for `caller`.
    pub async fn status(self: &Arc<Self>, caller: &Caller) -> Result<Response, WireError> {
        let engine = self.clone();
        let caller = caller.clone();
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let last_sync = engine.last_sync_ms.lock().clone();
            let announced = engine.announced.lock().clone();
            let serving = engine.databases.lock().clone();
            let status = sync_status(
                &engine.service,
                &caller,
                &engine.member,
                &|path, member| {
                    last_sync
                        .get(&(path.clone(), member.to_string()))
                        .map(|at| now.saturating_sub(*at))
                },
                &|path| {
                    let (Some(announced), Some(sync)) = (announced.get(path), serving.get(path))
                    else {
                        return Ok(0);
                    };
                    let known = sync.knowledge()?;
                    Ok(behind(announced, &known))
                },
            )?;
            Ok(Response::SyncStatus(status))
        })
        .await
        .map_err(internal)?
    }

    /// Keeps a connection a peer opened (it serves this daemon's calls too), so a member can be
    /// called back whichever side dialed, even where its address is out of date, unless a live
    /// one of that principal is already kept.
    pub async fn offer_connection(&self, connection: &Arc<Connection>) {
        let mut peers = self.peers.lock().await;
        let name = connection.peer().name.clone();
        // A live connection stays: a newer one of the same principal may be a client's that
        // serves no calls.
        if peers
            .get(&name)
            .is_none_or(|known| known.closed_reason().is_some())
        {
            peers.insert(name, connection.clone());
        }
    }

    async fn connection_to(&self, member: &str) -> Option<Arc<Connection>> {
        let mut peers = self.peers.lock().await;
        match peers.get(member) {
            Some(connection) if connection.closed_reason().is_none() => Some(connection.clone()),
            Some(_) => {
                peers.remove(member);
                None
            }
            None => None,
        }
    }

    /// Dials `address` and authenticates; the connection also serves the peer's calls.
    #[allow(clippy::disallowed_methods)] // reaching a peer is the driver's I/O, with a deadline.
    async fn dial(&self, address: &str) -> Result<Arc<Connection>, WireError> {
        let identity = (self.identity)();
        let unreachable = |why: String| {
            wire(
                syncbase_error_code::sync::PEER_UNREACHABLE,
                format!("cannot reach {address}: {why}"),
            )
        };
        let stream = tokio::time::timeout(
            PEER_CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {} s",
                PEER_CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|error| unreachable(error.to_string()))?;
        let _ = stream.set_nodelay(true);
        let channel = tokio::time::timeout(
            PEER_CONNECT_TIMEOUT,
            syncbase_net::handshake(stream, &identity, true),
        )
        .await
        .map_err(|_| unreachable("the handshake did not finish".into()))?
        .map_err(|error| {
            wire(
                syncbase_error_code::sync::PEER_REFUSED,
                format!("{address} refused the handshake, or was refused: {error}"),
            )
        })?;
        let factory = self.factory.get().cloned();
        Ok(Arc::new(Connection::start(channel, factory)))
    }

    /// A call another daemon's sync engine made, as the principal `caller`: its answer (a
    /// delta as a stream of byte pieces).
    pub async fn peer_call(
        self: &Arc<Self>,
        caller: &Caller,
        request: PeerRequest,
    ) -> Result<Responses, WireError> {
        if let PeerRequest::Pull {
            database,
            knowledge,
        } = request
        {
            return self.answer_pull(caller, database, knowledge).await;
        }
        match self.peer_answer(caller, request).await? {
            Response::Bytes(bytes) => Ok(bytes_stream(bytes)),
            other => Ok(Responses::single(Ok(other))),
        }
    }

    #[allow(clippy::disallowed_methods)] // a pull's stages are timed for the debug log.
    async fn peer_answer(
        self: &Arc<Self>,
        caller: &Caller,
        request: PeerRequest,
    ) -> Result<Response, WireError> {
        let from = caller.name().to_string();
        match request {
            PeerRequest::Join {
                database,
                name,
                address,
            } => {
                let service = self.service.clone();
                let path = database.clone();
                let answer = tokio::task::spawn_blocking(move || {
                    let Some(record) = service.syncgroup_for_sync(&path, &name)? else {
                        return Ok(None);
                    };
                    if !record.admits(&from) {
                        return Ok(None);
                    }
                    service.add_syncgroup_member(&path, &name, &from, address.as_deref())
                })
                .await
                .map_err(internal)?
                .map_err(|error| error.to_wire())?;
                let Some(answer) = answer else {
                    return Err(no_exist(format!(
                        "syncgroup of {}",
                        database_what(&database)
                    )));
                };
                self.serve_database(&database).await?;
                Ok(Response::Bytes(
                    syncbase_vsync::service::encode(&answer).map_err(sync_error)?,
                ))
            }
            PeerRequest::Pull { .. } => Err(internal("a pull is answered as a stream")),
            PeerRequest::Notify {
                database,
                knowledge,
            } => {
                let sync = self.member_database(&database, &from).await?;
                let knowledge: Knowledge =
                    syncbase_vsync::service::decode(&knowledge).map_err(sync_error)?;
                self.announced
                    .lock()
                    .entry(database.clone())
                    .or_default()
                    .merge(&knowledge);
                let engine = self.clone();
                tokio::spawn(async move {
                    engine
                        .run(
                            &database,
                            &sync,
                            Event::Received {
                                from,
                                message: Message::Notify,
                            },
                        )
                        .await
                });
                Ok(Response::Done)
            }
        }
    }

    /// Answers a pull from `caller` as a stream: the delta's parts ([`Delta::into_parts`]),
    /// each encoded as a frame ([`delta_frame`]) on a blocking thread of its own while the one
    /// before is on its way, in [`Response::Bytes`] pieces. The delta's records are read first,
    /// in one snapshot ([`DbSync::answer`]); each part's values are read from that snapshot as
    /// the part is encoded, so the first part leaves before the others' values are read. No
    /// thread waits on a slow caller.
    #[allow(clippy::disallowed_methods)] // a pull's stages are timed for the debug log.
    async fn answer_pull(
        self: &Arc<Self>,
        caller: &Caller,
        database: DatabasePath,
        knowledge: Vec<u8>,
    ) -> Result<Responses, WireError> {
        let from = caller.name().to_string();
        let sync = self.member_database(&database, &from).await?;
        let knowledge = syncbase_vsync::service::decode(&knowledge).map_err(sync_error)?;
        let started = std::time::Instant::now();
        let engine = self.clone();
        let (parts, records) = tokio::task::spawn_blocking(move || {
            let answer = sync.answer(&from, &knowledge)?;
            engine.make_served_durable(&database, sync.device(), answer.knowledge())?;
            let records = answer.len();
            let parts = answer.into_parts(PART_RECORDS_MIN);
            Ok::<_, syncbase_vsync::Error>((parts, records))
        })
        .await
        .map_err(internal)?
        .map_err(sync_error)?;
        let read = started.elapsed();
        let (sender, responses) = Responses::channel();
        tokio::spawn(async move {
            let count = parts.len();
            let mut parts = parts.into_iter().enumerate();
            // Each part's values are read (from the answer's snapshot) as it is encoded.
            let encode = |(index, part): (usize, PullAnswer<_>)| {
                tokio::task::spawn_blocking(move || delta_frame(&part.read()?, index + 1 == count))
            };
            let mut next = parts.next().map(encode);
            let mut bytes = 0;
            while let Some(encoding) = next.take() {
                let frame = match encoding.await {
                    Ok(Ok(frame)) => frame,
                    Ok(Err(error)) => {
                        sender.send(Err(sync_error(error))).await;
                        return;
                    }
                    Err(error) => {
                        sender.send(Err(internal(error))).await;
                        return;
                    }
                };
                // The next part is encoded while this one is on its way.
                next = parts.next().map(encode);
                bytes += frame.len();
                if frame.len() <= PEER_CHUNK_BYTES_MAX {
                    if !sender.send(Ok(Response::Bytes(frame))).await {
                        return;
                    }
                    continue;
                }
                for piece in frame.chunks(PEER_CHUNK_BYTES_MAX) {
                    if !sender.send(Ok(Response::Bytes(piece.to_vec()))).await {
                        return;
                    }
                }
            }
            tracing::debug!(
                records,
                bytes,
                parts = count,
                read_ms = read.as_millis() as u64,
                sent_ms = (started.elapsed() - read).as_millis() as u64,
                "answered a pull"
            );
        });
        Ok(responses)
    }

    /// Under relaxed durability, makes durable what an answer with `knowledge` reveals of this device's
    /// generations before it is sent: a crash could otherwise take back generations a peer
    /// holds, and this device would reuse their numbers for other changes, which peers refuse
    /// for good. One sync of the stores per new generation served; nothing when durable.
    fn make_served_durable(
        &self,
        database: &DatabasePath,
        device: syncbase_vsync::knowledge::DeviceId,
        knowledge: &syncbase_vsync::knowledge::Knowledge,
    ) -> Result<(), syncbase_vsync::Error> {
        if !self.relaxed {
            return Ok(());
        }
        let revealed = knowledge
            .iter()
            .map(|(_, vector)| vector.get(device))
            .max()
            .unwrap_or(0);
        let mut durable = self.durable_generation.lock();
        let known = durable.entry(database.clone()).or_insert(0);
        if revealed > *known {
            self.service
                .persist()
                .map_err(|error| syncbase_vsync::Error::Model {
                    code: error.code().to_string(),
                    message: error.to_string(),
                })?;
            *known = revealed;
        }
        Ok(())
    }

    /// The sync of a database `member` shares a syncgroup of; else what a missing one gives.
    async fn member_database(
        self: &Arc<Self>,
        path: &DatabasePath,
        member: &str,
    ) -> Result<Arc<DbSync>, WireError> {
        let known = self.databases.lock().get(path).cloned();
        let sync = match known {
            Some(sync) => sync,
            None => {
                let service = self.service.clone();
                let listed =
                    tokio::task::spawn_blocking(move || service.databases_with_syncgroups())
                        .await
                        .map_err(internal)?
                        .map_err(sync_error)?;
                if !listed
                    .iter()
                    .any(|(app, database)| *app == path.app && *database == path.database)
                {
                    return Err(no_exist(database_what(path)));
                }
                self.serve_database(path).await?
            }
        };
        let checking = sync.clone();
        let members = tokio::task::spawn_blocking(move || checking.members())
            .await
            .map_err(internal)?
            .map_err(sync_error)?;
        if !members.contains(member) {
            return Err(no_exist(database_what(path)));
        }
        Ok(sync)
    }

    /// Creates a syncgroup for a client `caller`, with this daemon as its first member.
    pub async fn create_syncgroup(
        self: &Arc<Self>,
        caller: &Caller,
        database: DatabasePath,
        spec: SyncgroupSpec,
    ) -> Result<Response, WireError> {
        let record = syncgroup_record(spec, caller, &self.member, self.address.as_deref());
        let service = self.service.clone();
        let caller_for_call = caller.clone();
        let path = database.clone();
        tokio::task::spawn_blocking(move || {
            service.create_syncgroup(&caller_for_call, &path, &record)
        })
        .await
        .map_err(internal)?
        .map_err(|error| error.to_wire())?;
        self.serve_database(&database).await?;
        Ok(Response::Done)
    }

    /// [`Self::join_syncgroup`] as a client's call: with `wait`, a stream of
    /// [`Response::JoinProgress`] (every quarter second while the first round runs) ending with
    /// the answer.
    pub fn join_syncgroup_call(
        self: &Arc<Self>,
        caller: &Caller,
        database: DatabasePath,
        name: String,
        via: String,
        wait: bool,
    ) -> Responses {
        let (sender, responses) = Responses::channel();
        let engine = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            let progress = wait.then(|| Arc::new(RoundProgress::default()));
            let reporting = progress.clone().map(|progress| {
                let sender = sender.clone();
                tokio::spawn(async move {
                    loop {
                        sleep(Duration::from_millis(250)).await;
                        let report = Response::JoinProgress(progress.report());
                        if !sender.send(Ok(report)).await {
                            break;
                        }
                    }
                })
            });
            let answer = engine
                .join_syncgroup(&caller, database, name, via, wait, progress.as_ref())
                .await;
            if let Some(reporting) = reporting {
                reporting.abort();
                // Ended, so no earlier report follows the last one.
                let _ = reporting.await;
            }
            if let (Some(progress), Ok(_)) = (&progress, &answer) {
                // The last word on the round, so a client counts every record it took.
                sender
                    .send(Ok(Response::JoinProgress(progress.report())))
                    .await;
            }
            sender.send(answer).await;
        });
        responses
    }

    /// Joins a syncgroup through the member at `via`, for a client `caller`; with `wait`, answers
    /// once the first round with that member is applied (counted into `progress`).
    pub async fn join_syncgroup(
        self: &Arc<Self>,
        caller: &Caller,
        database: DatabasePath,
        name: String,
        via: String,
        wait: bool,
        progress: Option<&Arc<RoundProgress>>,
    ) -> Result<Response, WireError> {
        syncbase_wire::validate_name(&name)?;
        let connection = self.dial(&via).await?;
        let member = connection.peer().name.clone();
        let answer = call_joined(
            connection.as_ref(),
            Request::Peer(PeerRequest::Join {
                database: database.clone(),
                name: name.clone(),
                address: self.address.clone(),
            }),
        )
        .await?;
        let Response::Bytes(bytes) = answer else {
            return Err(internal("a member answered a join with something else"));
        };
        let answer: JoinAnswer = syncbase_vsync::service::decode(&bytes).map_err(sync_error)?;
        self.peers.lock().await.insert(member.clone(), connection);
        let service = self.service.clone();
        let caller_for_call = caller.clone();
        let path = database.clone();
        tokio::task::spawn_blocking(move || {
            service.join_syncgroup(
                &caller_for_call,
                &path,
                &answer.syncgroup,
                &answer.collections,
            )
        })
        .await
        .map_err(internal)?
        .map_err(|error| error.to_wire())?;
        // The first round comes before the loop starts (when this join opened the database):
        // the loop's own first pulls would otherwise fetch the same delta a second time.
        let (sync, opened) = self.open_database(&database).await?;
        if wait {
            let pulled = self.first_round(&sync, &database, &member, progress).await;
            if opened {
                self.start_loop(&database, &sync);
            }
            pulled?;
        } else {
            let engine = self.clone();
            tokio::spawn(async move {
                let pulled = engine.first_round(&sync, &database, &member, None).await;
                if let Err(error) = pulled {
                    tracing::debug!(%error, peer = %member, "the first pull after joining failed");
                }
                if opened {
                    engine.start_loop(&database, &sync);
                }
            });
        }
        Ok(Response::Done)
    }

    /// A join's first pull from `member`, as the coalesced pull from it: a pull a notification
    /// asks for meanwhile waits for it (and runs after it, with what it brought).
    async fn first_round(
        self: &Arc<Self>,
        sync: &Arc<DbSync>,
        database: &DatabasePath,
        member: &str,
        progress: Option<&Arc<RoundProgress>>,
    ) -> Result<(u64, u64), WireError> {
        // Taken when free; else a pull from that member is in flight, and the join still
        // makes its own round (it answers only once that round is applied).
        let mut turn = self
            .in_flight
            .turn(&(database.clone(), member.to_string(), true));
        let pulled = self.pull_from(sync, database, member, progress).await;
        if let Some(mut turn) = turn.take()
            && turn.again()
        {
            // Pulls were asked for meanwhile: the turn ends (freeing the key) and one more pull
            // goes the usual way, so a member that keeps writing never holds the join up.
            drop(turn);
            let engine = self.clone();
            let (sync, database, member) = (sync.clone(), database.clone(), member.to_string());
            tokio::spawn(
                async move { engine.call_coalesced(&database, &sync, member, true).await },
            );
        }
        pulled
    }
}

/// The record of a new syncgroup: `member` (reached at `address`) its only member; Read and
/// Admin as the spec says, or the creator's root.
pub fn syncgroup_record(
    spec: SyncgroupSpec,
    caller: &Caller,
    member: &str,
    address: Option<&str>,
) -> syncbase_vsync::syncgroup::Syncgroup {
    syncbase_vsync::syncgroup::Syncgroup {
        name: spec.name,
        collections: spec.collections,
        members: vec![member.to_string()],
        description: spec.description,
        read: access_list(spec.read, caller),
        admin: access_list(spec.admin, caller),
        addresses: address
            .iter()
            .map(|address| (member.to_string(), address.to_string()))
            .collect(),
    }
}

/// A syncgroup's Read or Admin list: the patterns given, or the caller's root.
fn access_list(patterns: Vec<String>, caller: &Caller) -> syncbase_wire::AccessList {
    let allowed = if patterns.is_empty() {
        vec![caller.root().to_string()]
    } else {
        patterns
    };
    syncbase_wire::AccessList {
        allowed,
        denied: Vec::new(),
    }
}

/// Generations `announced` holds that `known` lacks, over every scope and device.
fn behind(announced: &Knowledge, known: &Knowledge) -> u64 {
    announced
        .iter()
        .map(|(scope, vector)| {
            let mine = known.of(scope);
            vector
                .iter()
                .map(|(device, generation)| generation.saturating_sub(mine.get(device)))
                .sum::<u64>()
        })
        .sum()
}

/// Milliseconds since the epoch, by the wall clock (the driver's bookkeeping, for people).
#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// How the synced databases of `service` stand for `caller` (see [`Request::SyncStatus`]):
/// those it can see in full, the rest counted. `member` is this daemon; `last_sync_ms_ago` and
/// `behind` come from the sync engine (a service in process has none: never, and 0).
pub fn sync_status(
    service: &Service,
    caller: &Caller,
    member: &str,
    last_sync_ms_ago: &dyn Fn(&DatabasePath, &str) -> Option<u64>,
    behind: &dyn Fn(&DatabasePath) -> Result<u64, syncbase_vsync::Error>,
) -> Result<syncbase_wire::SyncStatus, WireError> {
    let mut status = syncbase_wire::SyncStatus::default();
    for (app, database) in service.databases_with_syncgroups().map_err(sync_error)? {
        let path = DatabasePath { app, database };
        let visible = service
            .database_exists(caller, &path)
            .map_err(|error| error.to_wire())?;
        if !visible {
            status.hidden += 1;
            continue;
        }
        let store = service
            .open_for_sync(&path.app, &path.database)
            .map_err(sync_error)?;
        let snapshot = store
            .versioned_snapshot()
            .map_err(|error| wire(error.code(), error.to_string()))?;
        let records = syncgroups(&snapshot).map_err(sync_error)?;
        if records.is_empty() {
            continue;
        }
        let syncgroups = records
            .into_iter()
            .map(|record| syncbase_wire::SyncgroupStatus {
                members: record
                    .members
                    .iter()
                    .map(|name| syncbase_wire::MemberStatus {
                        address: record.addresses.get(name).cloned(),
                        this_daemon: name == member,
                        last_sync_ms_ago: last_sync_ms_ago(&path, name),
                        name: name.clone(),
                    })
                    .collect(),
                name: record.name,
            })
            .collect();
        status.databases.push(syncbase_wire::DatabaseSyncStatus {
            behind: behind(&path).map_err(sync_error)?,
            database: path,
            syncgroups,
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use syncbase_vsync::knowledge::{GenVector, Knowledge, Scope};

    use super::{Delta, FrameJoiner, behind, delta_frame};

    /// A pull's answer is cut into the parts it carries wherever its pieces end, and must end
    /// with its last part, nothing after it.
    #[test]
    fn frames_are_cut_from_pieces_however_the_pieces_fall() {
        let parts: Vec<Delta> = (0..3u64)
            .map(|index| Delta {
                responder: index,
                records_read: index * 1000,
                ..Delta::default()
            })
            .collect();
        let stream: Vec<u8> = parts
            .iter()
            .enumerate()
            .flat_map(|(index, part)| delta_frame(part, index == 2).unwrap())
            .collect();
        for piece_bytes in [1, 3, 8, 9, 10, 17, stream.len()] {
            let mut joiner = FrameJoiner::default();
            let mut got = Vec::new();
            for piece in stream.chunks(piece_bytes) {
                for part in joiner.push(piece.to_vec()).unwrap() {
                    got.push(syncbase_vsync::service::decode::<Delta>(&part).unwrap());
                }
            }
            joiner.finish().unwrap();
            assert_eq!(got, parts, "pieces of {piece_bytes} bytes");
        }
        // Cut short (inside a part, or between parts before the last), a bad flag, or more
        // after the last part: refused.
        for cut in [
            stream.len() - 1,
            delta_frame(&parts[0], false).unwrap().len(),
        ] {
            let mut joiner = FrameJoiner::default();
            joiner.push(stream[..cut].to_vec()).unwrap();
            assert_eq!(joiner.finish().unwrap_err().code, "sync.delta_invalid");
        }
        let mut flagged = delta_frame(&parts[0], true).unwrap();
        flagged[8] = 7;
        let error = FrameJoiner::default().push(flagged).unwrap_err();
        assert_eq!(error.code, "sync.delta_invalid");
        let mut joiner = FrameJoiner::default();
        let mut twice = stream.clone();
        twice.extend_from_slice(&stream);
        assert_eq!(joiner.push(twice).unwrap_err().code, "sync.delta_invalid");
        // A length no stream could hold is waited for, never allocated.
        let mut joiner = FrameJoiner::default();
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(1);
        assert!(joiner.push(huge).unwrap().is_empty());
        assert!(joiner.finish().is_err());
    }

    /// Behind counts, per scope and device, the generations announced beyond those held.
    #[test]
    fn behind_counts_announced_generations_not_held() {
        let vector = |entries: &[(u64, u64)]| entries.iter().copied().collect::<GenVector>();
        let mut announced = Knowledge::new();
        announced.set(Scope::collection("c"), vector(&[(1, 10), (2, 5)]));
        announced.set(Scope::collection("d"), vector(&[(1, 3)]));
        let mut known = Knowledge::new();
        known.set(Scope::collection("c"), vector(&[(1, 7), (2, 9)]));
        assert_eq!(behind(&announced, &known), 3 + 3);
        assert_eq!(behind(&known, &known), 0);
    }

    /// Counts how often the stores are made durable.
    struct CountingSet {
        inner: syncbase_store::MemStoreSet,
        persisted: std::sync::atomic::AtomicUsize,
    }

    impl syncbase_store::StoreSet for CountingSet {
        fn open(&self, name: &str) -> syncbase_store::Result<Arc<dyn syncbase_store::Store>> {
            self.inner.open(name)
        }

        fn destroy(&self, name: &str) -> syncbase_store::Result<()> {
            self.inner.destroy(name)
        }

        fn names(&self) -> syncbase_store::Result<Vec<String>> {
            self.inner.names()
        }

        fn persist(&self) -> syncbase_store::Result<()> {
            self.persisted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.persist()
        }

        fn close(&self) -> syncbase_store::Result<()> {
            self.inner.close()
        }
    }

    struct CountingOpener(Arc<CountingSet>);

    impl syncbase_util::StoreSetOpener for CountingOpener {
        fn open_set(
            &self,
            _dir: &std::path::Path,
        ) -> syncbase_store::Result<Arc<dyn syncbase_store::StoreSet>> {
            Ok(self.0.clone())
        }

        fn open_layout_1_store(
            &self,
            _dir: &std::path::Path,
        ) -> syncbase_store::Result<Option<Arc<dyn syncbase_store::Store>>> {
            Ok(None)
        }
    }

    /// The hybrid clock's floor is made durable when the service opens and whenever a new one
    /// is saved (the stores may commit relaxed): a crash never takes back a floor that
    /// timestamps already issued rely on.
    #[test]
    fn the_clock_floor_is_made_durable_when_saved() {
        let dir = tempfile::tempdir().unwrap();
        let set = Arc::new(CountingSet {
            inner: syncbase_store::MemStoreSet::new(),
            persisted: std::sync::atomic::AtomicUsize::new(0),
        });
        let clock = Arc::new(syncbase_store::ManualClock::new(1));
        let service = syncbase_nosql::Service::open(syncbase_nosql::ServiceOptions {
            root_dir: dir.path().to_path_buf(),
            opener: Arc::new(CountingOpener(set.clone())),
            owner_root: "alice".into(),
            clock: clock.clone(),
            rng: Arc::new(syncbase_store::SeededRng::new(7)),
            batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
            idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
            keep_open: None,
            log_retention: syncbase_store::Retention::default(),
        })
        .unwrap();
        let persisted = || set.persisted.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(persisted(), 1, "at open");
        let alice = syncbase_nosql::Caller::new("alice");
        let path = syncbase_wire::DatabasePath {
            app: "notes".into(),
            database: "main".into(),
        };
        service.create_app(&alice, "notes", None).unwrap();
        service.create_database(&alice, &path, None).unwrap();
        let open = || {
            syncbase_vsync::service::DataModel::open_for_sync(&service, "notes", "main").unwrap()
        };
        open();
        assert_eq!(persisted(), 1, "well within the reserve: no new floor");
        // Past half the reserve (600 s): the next database handed out saves a new floor.
        clock.advance(400 * 1_000_000_000);
        syncbase_store::Clock::now_ns(service.log_clock().as_ref());
        open();
        assert_eq!(persisted(), 2, "a new floor");
    }

    /// Under relaxed durability a pull's answer that reveals a new generation of this device
    /// makes the stores durable first, once per new generation; under durable commits, never.
    #[test]
    fn served_generations_are_made_durable_under_relaxed_durability() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [
            (syncbase_store::Durability::Relaxed, 2),
            (syncbase_store::Durability::Durable, 0),
        ] {
            let set = Arc::new(CountingSet {
                inner: syncbase_store::MemStoreSet::new(),
                persisted: std::sync::atomic::AtomicUsize::new(0),
            });
            let service = Arc::new(
                syncbase_nosql::Service::open(syncbase_nosql::ServiceOptions {
                    root_dir: dir.path().join(format!("{durability:?}")),
                    opener: Arc::new(CountingOpener(set.clone())),
                    owner_root: "alice".into(),
                    clock: Arc::new(syncbase_store::ManualClock::new(1)),
                    rng: Arc::new(syncbase_store::SeededRng::new(7)),
                    batch_idle_timeout_ns: syncbase_nosql::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
                    idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
                    keep_open: None,
                    log_retention: syncbase_store::Retention::default(),
                })
                .unwrap(),
            );
            let identity = Arc::new(syncbase_net::Identity::new_root("alice").unwrap());
            let engine = super::SyncEngine::new(
                service.clone(),
                "alice:a".into(),
                None,
                Arc::new(move || identity.clone()),
                None,
                durability,
            );
            let device = service.device_id();
            let persisted_before = set.persisted.load(std::sync::atomic::Ordering::Relaxed);
            let database = syncbase_wire::DatabasePath {
                app: "notes".into(),
                database: "main".into(),
            };
            let serve = |generation: u64| {
                let mut delta = syncbase_vsync::responder::Delta::default();
                let vector: GenVector = [(device, generation), (device ^ 1, 99)]
                    .into_iter()
                    .collect();
                delta.knowledge.set(Scope::collection("todo"), vector);
                engine
                    .make_served_durable(&database, device, &delta.knowledge)
                    .unwrap();
            };
            serve(5);
            serve(5);
            serve(3);
            serve(6);
            assert_eq!(
                set.persisted.load(std::sync::atomic::Ordering::Relaxed) - persisted_before,
                expected,
                "{durability:?}"
            );
        }
    }
}
