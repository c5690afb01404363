//! What `syncbased` does, as a library so tests can run it in-process: open the identity and
//! the service, hold the root directory's lock, listen, serve connections, stop on a signal.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use syncbase_net::{Connection, HandlerFactory, Identity, TrustedRoot, VerifiedChain, handshake};
use syncbase_nosql::{Caller, Service, ServiceOptions};
use syncbase_store::{Durability, EntropyRng, SystemClock};
use syncbase_wire::{Handler, StatusInfo};
use tokio::net::TcpListener;

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
}

/// A running daemon: its address and how to stop it.
pub struct Daemon {
    /// The address it accepts connections on.
    pub address: std::net::SocketAddr,
    service: Arc<Service>,
    identity: Arc<Identity>,
    _lock: File,
    listener: TcpListener,
    factory: Arc<Factory>,
    handshakes: Arc<tokio::sync::Semaphore>,
}

/// Handshakes the daemon runs at once; more connections are closed at once.
pub const HANDSHAKES_IN_PROGRESS_MAX: usize = 64;

struct Factory {
    service: Arc<Service>,
    status: Arc<StatusInfo>,
}

impl HandlerFactory for Factory {
    fn handler_for(&self, peer: &VerifiedChain) -> Arc<dyn Handler> {
        Arc::new(ServiceHandler::new(
            self.service.clone(),
            Caller::new(peer.name.clone()),
            self.status.clone(),
        ))
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
        let (mut identity, identity_created) = Identity::load_or_create_reporting(
            &options.identity_dir,
            &options.default_identity_name,
        )
        .map_err(|error| StartError(error.to_string()))?;
        if identity_created {
            tracing::info!(identity = %identity.name(), dir = %options.identity_dir.display(), "created a new identity");
        }
        for path in &options.trust {
            let text = std::fs::read_to_string(path).map_err(|error| {
                StartError(format!("cannot read root file {}: {error}", path.display()))
            })?;
            identity
                .trust(
                    TrustedRoot::from_line(&text).map_err(|error| StartError(error.to_string()))?,
                )
                .map_err(|error| StartError(error.to_string()))?;
        }
        let root_dir_is_new = !options.root_dir.exists();
        let lock = lock_root(&options.root_dir)?;
        if root_dir_is_new {
            tracing::info!(root_dir = %options.root_dir.display(), "created a new root directory");
        }
        let service = Service::open(ServiceOptions {
            root_dir: options.root_dir.clone(),
            opener: Arc::new(EngineOpener {
                engine: options.engine,
                durability: options.durability,
            }),
            owner_root: identity.root_name().to_string(),
            clock: Arc::new(SystemClock),
            rng: Arc::new(EntropyRng::default()),
            batch_idle_timeout_ns: options.batch_idle_timeout_ns,
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
        let factory = Arc::new(Factory {
            service: service.clone(),
            status,
        });
        Ok(Daemon {
            address,
            service,
            identity: Arc::new(identity),
            _lock: lock,
            listener,
            factory,
            handshakes: Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_PROGRESS_MAX)),
        })
    }

    /// Accepts and serves connections until `shutdown` completes, then closes the service.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
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
            let identity = self.identity.clone();
            let factory: Arc<dyn HandlerFactory> = self.factory.clone();
            let handshakes = self.handshakes.clone();
            tokio::spawn(async move {
                // Unauthenticated peers may hold only so many handshakes (and their buffers).
                let Ok(_slot) = handshakes.try_acquire() else {
                    tracing::warn!(%peer_address, "too many handshakes in progress; refused");
                    return;
                };
                let _ = stream.set_nodelay(true);
                match handshake(stream, &identity, false).await {
                    Ok(channel) => {
                        tracing::debug!(peer = %channel.peer.name, %peer_address, "connected");
                        let _connection: Connection = Connection::start(channel, Some(factory));
                    }
                    Err(error) => {
                        tracing::debug!(%peer_address, %error, "refused a connection");
                    }
                }
            });
        }
        tracing::info!("shutting down");
        if let Err(error) = self.service.close() {
            tracing::error!(%error, "closing the service failed");
        }
        tracing::info!("stopped");
    }
}
