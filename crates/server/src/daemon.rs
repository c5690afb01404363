//! What `syncbased` does, as a library so tests can run it in-process: open the identity and
//! the service, hold the root directory's lock, listen, serve connections, stop on a signal.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use syncbase_net::{
    Connection, ConnectionOptions, HandlerFactory, Identity, TrustedRoot, VerifiedChain,
    handshake_admitting,
};
use syncbase_nosql::{Caller, Service, ServiceOptions};
use syncbase_store::{Durability, EntropyRng, Retention, SystemClock};
use syncbase_wire::{ByteBudget, Handler, StatusInfo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::sync::SyncEngine;
use crate::{EngineKind, EngineOpener, ServiceHandler};

/// The file in the root directory a running daemon holds locked.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where data lives.
    pub root_dir: PathBuf,
    /// `HOST:PORT` to listen on (port 0 picks a free one).
    pub listen: String,
    /// The storage engine.
    pub engine: EngineKind,
    /// Commit durability.
    pub durability: Durability,
    /// The identity directory.
    pub identity_dir: PathBuf,
    /// Extra root files to trust for this run.
    pub trust: Vec<PathBuf>,
    /// The name of a root identity created on first use.
    pub default_identity_name: String,
    /// Idle time after which an abandoned batch is aborted.
    pub batch_idle_timeout_ns: u64,
    /// How much of each database's watch log to keep.
    pub log_retention: Retention,
    /// Bounds on connections and on the memory they may hold.
    pub limits: ConnectionLimits,
    /// Where other members reach this daemon (default: the address it listens on).
    pub advertise: Option<String>,
    /// How often every member is pulled from without a notification; `None`: never (push only).
    pub anti_entropy: Option<std::time::Duration>,
}

/// What connections may hold: unauthenticated ones, each principal's, and their responses.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Handshakes in progress at once; a new connection past this drops the oldest one.
    pub handshakes_pending_max: usize,
    /// Open authenticated connections one principal (e.g. `alice:laptop`) may hold.
    pub connections_per_principal_max: usize,
    /// An authenticated connection with no call running and no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Response bytes one connection may have read but not yet written out.
    pub response_bytes_per_connection_max: usize,
    /// Response bytes all connections together may have read but not yet written out.
    pub response_bytes_max: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshakes_pending_max: 256,
            connections_per_principal_max: 64,
            idle_timeout: Duration::from_secs(600),
            // Room for one largest message (a 16 MiB value) and the next one being read.
            response_bytes_per_connection_max: 40 * 1024 * 1024,
            response_bytes_max: 96 * 1024 * 1024,
        }
    }
}

/// A running daemon: its address and how to stop it.
pub struct Daemon {
    /// The address it accepts connections on.
    pub address: std::net::SocketAddr,
    service: Arc<Service>,
    sync: Arc<SyncEngine>,
    identity: Arc<IdentitySource>,
    _lock: File,
    listener: TcpListener,
    factory: Arc<Factory>,
    pending: Arc<PendingHandshakes>,
    /// Places for accepted connections whose task has not started (see
    /// [`unstarted_connections_max`]).
    unstarted: Arc<Semaphore>,
    principals: Arc<Principals>,
    limits: ConnectionLimits,
}

/// How many accepted connections may wait for their handshake task to start: half the pending
/// handshakes. Otherwise the accept loop outruns the tasks (of 1,726 accepted connections under a
/// flood, 254 tasks had started), and the rest wait in the kernel's backlog instead.
fn unstarted_connections_max(handshakes_pending_max: usize) -> usize {
    handshakes_pending_max.div_ceil(2).max(1)
}

struct Factory {
    service: Arc<Service>,
    sync: Arc<SyncEngine>,
    status: Arc<StatusInfo>,
    response_budget: ByteBudget,
    response_bytes_per_connection_max: usize,
}

impl HandlerFactory for Factory {
    fn handler_for(&self, peer: &VerifiedChain) -> Arc<dyn Handler> {
        let budgets = vec![
            ByteBudget::new(self.response_bytes_per_connection_max),
            self.response_budget.clone(),
        ];
        Arc::new(
            ServiceHandler::new(
                self.service.clone(),
                Caller::new(peer.name.clone()),
                self.status.clone(),
            )
            .with_response_budgets(budgets)
            .with_sync(self.sync.clone()),
        )
    }
}

/// What a peer whose handshake was dropped to make room is told, if it gets that far.
const HANDSHAKE_DROPPED: &str =
    "this daemon has too many handshakes in progress and dropped yours; retry";

/// Handshakes in progress, oldest first. A newcomer past the cap drops the oldest one whose peer
/// has sent nothing, looked at in the socket itself at that moment (so the answer does not wait
/// for the handshake task to run), else the oldest: connections that never speak cannot keep
/// anyone out, and an honest client, which sends its first message as soon as it connects, is
/// the last to go. Each also has a total deadline.
struct PendingHandshakes {
    max: usize,
    inner: Mutex<PendingInner>,
}

#[derive(Default)]
struct PendingInner {
    next: u64,
    tasks: BTreeMap<u64, PendingHandshake>,
}

struct PendingHandshake {
    task: AbortHandle,
    heard: Heard,
    /// A second descriptor of the connection's socket, so a newcomer can look at once whether
    /// its peer has sent anything, however far behind the handshake task is.
    socket: Option<std::os::fd::OwnedFd>,
}

impl PendingHandshake {
    /// Whether the peer has said anything: the task read it, or it waits in the socket.
    fn has_spoken(&self) -> bool {
        if self.heard.is_spoken() {
            return true;
        }
        let Some(socket) = &self.socket else {
            return false;
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // The socket is non-blocking (tokio made it so, and a duplicate shares that flag), so
        // an empty one answers at once; end of stream (0) or an error means nothing to keep.
        matches!(socket2::SockRef::from(socket).peek(&mut probe), Ok(received) if received > 0)
    }
}

impl PendingHandshakes {
    /// Registers a started handshake whose peer's first message `heard` follows; drops others
    /// while there are too many.
    fn register(
        &self,
        task: AbortHandle,
        heard: Heard,
        socket: Option<std::os::fd::OwnedFd>,
    ) -> u64 {
        let mut inner = self.inner.lock();
        let id = inner.next;
        inner.next += 1;
        inner.tasks.insert(
            id,
            PendingHandshake {
                task,
                heard,
                socket,
            },
        );
        while inner.tasks.len() > self.max {
            // The oldest that has said nothing, looked at now; else the oldest.
            let victim = inner
                .tasks
                .iter()
                .find(|(_, pending)| !pending.has_spoken())
                .or_else(|| inner.tasks.iter().next())
                .map(|(id, _)| *id);
            if let Some(pending) = victim.and_then(|victim| inner.tasks.remove(&victim)) {
                pending.task.abort();
            }
        }
        id
    }

    /// The handshake `id` finished (or its peer was authenticated): it can no longer be dropped.
    /// False if a newcomer dropped it first: its task is aborted at its next pause, so it must
    /// not tell its peer it was accepted (the peer would find the connection closed at its
    /// first call instead of refused at connect).
    fn finished(&self, id: u64) -> bool {
        self.inner.lock().tasks.remove(&id).is_some()
    }
}

/// Whether a pending connection's handshake task has received its peer's first message (after
/// which the socket may look empty again, so a look into it no longer tells).
#[derive(Clone, Default)]
struct Heard(Arc<AtomicBool>);

impl Heard {
    fn spoke(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the first message was received.
    fn is_spoken(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Open authenticated connections, per principal and in all.
struct Principals {
    max: usize,
    /// All authenticated connections together (see [`DescriptorPlan`]).
    total_max: usize,
    /// The open-file limit the total comes from, for the refusal's message.
    open_file_limit: u64,
    open: Mutex<HashMap<String, usize>>,
}

/// One open connection of a principal; dropping it frees the place.
struct PrincipalSlot {
    principals: Arc<Principals>,
    name: String,
}

impl Principals {
    fn take(self: &Arc<Self>, name: &str) -> Result<PrincipalSlot, String> {
        let mut open = self.open.lock();
        let total: usize = open.values().sum();
        if total >= self.total_max {
            return Err(format!(
                "this daemon has {total} open connections, the most its open-file limit ({}) \
                 leaves room for beside its storage; retry later, or raise the limit \
                 (`ulimit -n`) it starts with",
                self.open_file_limit
            ));
        }
        let count = open.entry(name.to_string()).or_insert(0);
        if *count >= self.max {
            return Err(format!(
                "{name:?} already has {} open connections to this daemon, the most allowed; close some and retry",
                self.max
            ));
        }
        *count += 1;
        Ok(PrincipalSlot {
            principals: self.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for PrincipalSlot {
    fn drop(&mut self) {
        let mut open = self.principals.open.lock();
        if let Some(count) = open.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.name);
            }
        }
    }
}

/// The daemon's identity, with its trusted roots reread whenever the identity file changes
/// (`sb identity trust` writes it), so trusting someone needs no restart.
struct IdentitySource {
    dir: PathBuf,
    /// Roots trusted for this run only (`--trust`).
    extra: Vec<TrustedRoot>,
    state: Mutex<(Option<FileStamp>, Arc<Identity>)>,
}

/// What tells a changed file: its size, modification time and inode.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    length: u64,
    inode: u64,
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        length: metadata.len(),
        inode: metadata.ino(),
    })
}

impl IdentitySource {
    fn new(dir: PathBuf, identity: Identity, extra: Vec<TrustedRoot>) -> Self {
        let stamp = file_stamp(&Identity::file_in(&dir));
        Self {
            dir,
            extra,
            state: Mutex::new((stamp, Arc::new(identity))),
        }
    }

    /// The identity as of now: reloaded first if its file changed since it was read.
    fn current(&self) -> Arc<Identity> {
        let stamp = file_stamp(&Identity::file_in(&self.dir));
        let mut state = self.state.lock();
        if stamp.is_some() && stamp != state.0 {
            state.0 = stamp;
            match self.reload(&state.1) {
                Ok(identity) => {
                    tracing::info!(
                        roots = identity.trusted_roots().len(),
                        "reread the trusted roots"
                    );
                    state.1 = Arc::new(identity);
                }
                Err(why) => tracing::warn!("kept the trusted roots: {why}"),
            }
        }
        state.1.clone()
    }

    fn reload(&self, current: &Identity) -> Result<Identity, String> {
        let mut identity = Identity::load(&self.dir).map_err(|error| error.to_string())?;
        if identity.public_key() != current.public_key() || identity.name() != current.name() {
            return Err(format!(
                "{} now holds another identity ({}); restart syncbased to use it",
                self.dir.display(),
                identity.name()
            ));
        }
        for root in &self.extra {
            identity
                .trust(root.clone())
                .map_err(|error| error.to_string())?;
        }
        Ok(identity)
    }
}

/// A connection that notes when its peer has sent a first handshake message's worth of bytes
/// (a length prefix and an ephemeral key).
struct Listened<T> {
    inner: T,
    received: usize,
    heard: Heard,
}

/// Bytes of the first message of a Noise XX handshake: a 4-byte length (the codec's default) and
/// a 32-byte ephemeral key.
const FIRST_MESSAGE_BYTES: usize = 4 + 32;

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Listened<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(context, buffer);
        if self.received < FIRST_MESSAGE_BYTES {
            self.received += buffer.filled().len() - before;
            if self.received >= FIRST_MESSAGE_BYTES {
                self.heard.spoke();
            }
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Listened<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, bytes)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// Raises this process's open-file limit to what the system allows, so connections (and
/// databases) are not refused early for want of descriptors.
/// Returns the limit in force.
fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            limit
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1_024, |(soft, _)| soft)
        }
    }
}

/// How the daemon shares its open-file limit, so connections can never take the descriptors
/// the storage engine needs (an engine that fails to open a file for a flush stops accepting
/// writes until restarted, for every database). The engine's files are bounded whatever the
/// number of databases; connections get what is left, each pending handshake counted twice
/// (its socket and the duplicate the daemon peeks through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// Table files the engine keeps open at once (its cache).
    pub engine_files_max: usize,
    /// Handshakes in progress at once (the configured cap, lowered to fit).
    pub handshakes_pending_max: usize,
    /// Authenticated connections in all.
    pub connections_max: usize,
}

impl DescriptorPlan {
    /// Descriptors kept for the engine beyond its cache (journal, files being written by
    /// flushes and compactions, version files) and for the process itself (standard streams,
    /// the listener, the runtime, the root lock).
    pub const RESERVED: usize = 64;

    /// The engine's cache of open files under `open_file_limit`: a quarter of it, between 10
    /// and the engine's default.
    pub fn engine_files_max(open_file_limit: u64) -> usize {
        let quarter = usize::try_from(open_file_limit / 4).unwrap_or(usize::MAX);
        quarter.clamp(
            10,
            syncbase_store_fjall::FjallOptions::MAX_OPEN_FILES_DEFAULT,
        )
    }

    /// The plan for `open_file_limit` and the configured `limits`.
    pub fn new(open_file_limit: u64, limits: &ConnectionLimits) -> Self {
        let engine_files_max = Self::engine_files_max(open_file_limit);
        let limit = usize::try_from(open_file_limit).unwrap_or(usize::MAX);
        let for_connections = limit
            .saturating_sub(engine_files_max)
            .saturating_sub(Self::RESERVED)
            .max(4);
        let handshakes_pending_max = limits
            .handshakes_pending_max
            .clamp(1, (for_connections / 4).max(1));
        let connections_max = for_connections
            .saturating_sub(2 * handshakes_pending_max)
            .max(1);
        Self {
            engine_files_max,
            handshakes_pending_max,
            connections_max,
        }
    }
}

/// A startup failure, with a message for people.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

fn lock_root(root_dir: &Path) -> Result<File, StartError> {
    std::fs::create_dir_all(root_dir).map_err(|error| {
        StartError(format!(
            "cannot create the root dir {}: {error}",
            root_dir.display()
        ))
    })?;
    let path = root_dir.join(LOCK_FILE_NAME);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| StartError(format!("cannot open {}: {error}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError(format!(
            "another syncbased is already using the root dir {} (it holds {})",
            root_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(StartError(format!(
            "cannot lock {}: {error}",
            path.display()
        ))),
    }
}

impl Daemon {
    /// Opens everything and binds the listener; [`Daemon::serve`] then accepts connections.
    pub async fn start(options: DaemonOptions) -> Result<Daemon, StartError> {
        let open_file_limit = raise_open_file_limit();
        let (mut identity, identity_created) = Identity::load_or_create_reporting(
            &options.identity_dir,
            &options.default_identity_name,
        )
        .map_err(|error| StartError(error.to_string()))?;
        if identity_created {
            tracing::info!(identity = %identity.name(), dir = %options.identity_dir.display(), "created a new identity");
        }
        let mut extra_roots = Vec::new();
        for path in &options.trust {
            let text = std::fs::read_to_string(path).map_err(|error| {
                StartError(format!("cannot read root file {}: {error}", path.display()))
            })?;
            let root = TrustedRoot::from_line(&text)
                .map_err(|error| StartError(format!("{}: {error}", path.display())))?;
            identity
                .trust(root.clone())
                .map_err(|error| StartError(error.to_string()))?;
            extra_roots.push(root);
        }
        let root_dir_is_new = !options.root_dir.exists();
        let lock = lock_root(&options.root_dir)?;
        if root_dir_is_new {
            tracing::info!(root_dir = %options.root_dir.display(), "created a new root directory");
        }
        let service = Service::open(ServiceOptions {
            root_dir: options.root_dir.clone(),
            opener: Arc::new(EngineOpener {
                max_open_files: DescriptorPlan::engine_files_max(open_file_limit),
                ..EngineOpener::new(options.engine, options.durability)
            }),
            owner_root: identity.root_name().to_string(),
            clock: Arc::new(SystemClock),
            rng: Arc::new(EntropyRng::default()),
            batch_idle_timeout_ns: options.batch_idle_timeout_ns,
            idle_databases_max: syncbase_nosql::IDLE_DATABASES_MAX_DEFAULT,
            keep_open: None,
            log_retention: options.log_retention,
        })
        .map_err(|error| {
            StartError(format!(
                "cannot open the service in {}: {error}",
                options.root_dir.display()
            ))
        })?;
        let listener = TcpListener::bind(&options.listen)
            .await
            .map_err(|error| StartError(format!("cannot listen on {}: {error}", options.listen)))?;
        let address = listener
            .local_addr()
            .map_err(|error| StartError(error.to_string()))?;
        let service = Arc::new(service);
        let status = Arc::new(StatusInfo {
            identity: identity.name(),
            device_id: service.device_id(),
            address: address.to_string(),
            engine: options.engine.name().to_string(),
            version: syncbase_wire::VERSION.to_string(),
        });
        tracing::info!(
            %address,
            identity = %status.identity,
            root_dir = %options.root_dir.display(),
            engine = %status.engine,
            "started"
        );
        let plan = DescriptorPlan::new(open_file_limit, &options.limits);
        tracing::debug!(?plan, "descriptors");
        let limits = ConnectionLimits {
            handshakes_pending_max: plan.handshakes_pending_max,
            ..options.limits.clone()
        };
        let identity = Arc::new(IdentitySource::new(
            options.identity_dir.clone(),
            identity,
            extra_roots,
        ));
        let member = status.identity.clone();
        let advertised = options
            .advertise
            .clone()
            .unwrap_or_else(|| address.to_string());
        let dialing = identity.clone();
        let sync = SyncEngine::new(
            service.clone(),
            member,
            Some(advertised),
            Arc::new(move || dialing.current()),
            options.anti_entropy,
            options.durability,
        );
        let factory = Arc::new(Factory {
            service: service.clone(),
            sync: sync.clone(),
            status,
            response_budget: ByteBudget::new(limits.response_bytes_max),
            response_bytes_per_connection_max: limits.response_bytes_per_connection_max,
        });
        sync.set_factory(factory.clone());
        Ok(Daemon {
            address,
            service,
            sync,
            identity,
            _lock: lock,
            listener,
            factory,
            pending: Arc::new(PendingHandshakes {
                max: limits.handshakes_pending_max.max(1),
                inner: Mutex::new(PendingInner::default()),
            }),
            unstarted: Arc::new(Semaphore::new(unstarted_connections_max(
                limits.handshakes_pending_max.max(1),
            ))),
            principals: Arc::new(Principals {
                max: limits.connections_per_principal_max.max(1),
                total_max: plan.connections_max,
                open_file_limit,
                open: Mutex::new(HashMap::new()),
            }),
            limits,
        })
    }

    /// Accepts and serves connections until `shutdown` completes, then closes the service.
    #[allow(clippy::disallowed_methods)] // the daemon's accept loop backs off on tokio's clock.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Databases with syncgroups start syncing at once (in the background: opening them
        // must not hold up the first connections).
        let sync = self.sync.clone();
        tokio::spawn(async move { sync.start().await });
        loop {
            let unstarted = tokio::select! {
                () = &mut shutdown => break,
                permit = self.unstarted.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    // Never closed: the daemon owns the semaphore.
                    Err(_) => break,
                },
            };
            let (stream, peer_address) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let identity = self.identity.current();
            let factory: Arc<dyn HandlerFactory> = self.factory.clone();
            let pending = self.pending.clone();
            let principals = self.principals.clone();
            let sync = self.sync.clone();
            let options = ConnectionOptions {
                idle_timeout: Some(self.limits.idle_timeout),
            };
            // The task learns its place among pending handshakes before it starts.
            let (registered, place) = tokio::sync::oneshot::channel::<u64>();
            let heard = Heard::default();
            let socket = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned().ok();
            let listened = Listened {
                inner: stream,
                received: 0,
                heard: heard.clone(),
            };
            let task = tokio::spawn(async move {
                let Ok(id) = place.await else { return };
                drop(unstarted);
                let _ = listened.inner.set_nodelay(true);
                let admitted = handshake_admitting(listened, &identity, false, |peer| {
                    // Authenticated: no longer a handshake a newcomer may drop, unless one
                    // dropped it a moment ago.
                    if !pending.finished(id) {
                        return Err(HANDSHAKE_DROPPED.to_string());
                    }
                    principals.take(&peer.name)
                })
                .await;
                pending.finished(id);
                match admitted {
                    Ok((channel, slot)) => {
                        tracing::debug!(peer = %channel.peer.name, %peer_address, "connected");
                        let connection =
                            Arc::new(Connection::start_with(channel, Some(factory), options));
                        // A member's sync engine may call back over the connection it opened.
                        sync.offer_connection(&connection).await;
                        // The principal's place is held as long as the connection is open.
                        connection.closed().await;
                        drop(slot);
                        tracing::debug!(%peer_address, reason = ?connection.closed_reason(), "disconnected");
                    }
                    Err(error) => {
                        tracing::debug!(%peer_address, %error, "refused a connection");
                    }
                }
            });
            let _ = registered.send(self.pending.register(task.abort_handle(), heard, socket));
        }
        tracing::info!("shutting down");
        if let Err(error) = self.service.close() {
            tracing::error!(%error, "closing the service failed");
        }
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handshake_dropped_for_a_newcomer_cannot_be_finished_as_admitted() {
        let pending = PendingHandshakes {
            max: 1,
            inner: Mutex::new(PendingInner::default()),
        };
        let first = tokio::spawn(std::future::pending::<()>());
        let second = tokio::spawn(std::future::pending::<()>());
        let heard = Heard::default();
        heard.spoke();
        let dropped = pending.register(first.abort_handle(), heard.clone(), None);
        let kept = pending.register(second.abort_handle(), heard, None);
        // Both have spoken, so the oldest goes: its task is aborted, and its handshake, which
        // may have reached its peer's authentication meanwhile, must not be admitted.
        assert!(first.await.unwrap_err().is_cancelled());
        assert!(!pending.finished(dropped));
        assert!(pending.finished(kept));
        assert!(!pending.finished(kept), "a handshake finishes once");
        second.abort();
    }

    #[test]
    fn the_descriptor_plan_leaves_the_engine_its_share_under_any_limit() {
        let limits = ConnectionLimits::default();
        let roomy = DescriptorPlan::new(1 << 20, &limits);
        assert_eq!(roomy.engine_files_max, 900);
        assert_eq!(roomy.handshakes_pending_max, 256);
        let tight = DescriptorPlan::new(128, &limits);
        assert_eq!(
            (
                tight.engine_files_max,
                tight.handshakes_pending_max,
                tight.connections_max
            ),
            (32, 8, 16)
        );
        for limit in [16, 64, 128, 256, 1_024, 4_096, 1 << 20] {
            let plan = DescriptorPlan::new(limit, &limits);
            let used = plan.engine_files_max
                + DescriptorPlan::RESERVED
                + 2 * plan.handshakes_pending_max
                + plan.connections_max;
            assert!(plan.connections_max >= 1 && plan.handshakes_pending_max >= 1);
            if limit >= 128 {
                assert!(used as u64 <= limit, "{limit}: {plan:?} uses {used}");
            }
        }
    }
}
