//! Calls over a [`Channel`]: multiplexed, streaming, and symmetric — either side may call the
//! other (a daemon dials another daemon with its own identity; sync will push notifications).
//!
//! Each message is one postcard-encoded [`Frame`]. A call is `Call`, then its responses as
//! `Item`s, then `End`; `Cancel` stops a stream early. A malformed or unexpected frame closes
//! this connection only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use syncbase_wire::{Handler, Request, Response, ResponseSender, Responses, WireError, codes};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::channel::{Channel, ChannelReader, ChannelWriter};
use crate::error::{NetError, Result};
use crate::identity::VerifiedChain;

/// Calls a peer may have running on one connection at once.
pub const CALLS_PER_CONNECTION_MAX: usize = 256;

/// One message of the call protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    /// Starts call `id`.
    Call {
        /// Chosen by the caller, unique among its running calls.
        id: u64,
        /// What to do.
        request: Request,
    },
    /// One response of call `id`.
    Item {
        /// The call.
        id: u64,
        /// The response or the call's error.
        item: Result<Response, WireError>,
    },
    /// The one and last response of call `id` (an `Item` and an `End` in one message).
    Only {
        /// The call.
        id: u64,
        /// The response or the call's error.
        item: Result<Response, WireError>,
    },
    /// Call `id` has no more responses.
    End {
        /// The call.
        id: u64,
    },
    /// The caller no longer wants call `id`'s responses.
    Cancel {
        /// The call.
        id: u64,
    },
}

/// Makes the handler that serves a peer's calls, once the peer is authenticated.
pub trait HandlerFactory: Send + Sync {
    /// The handler for calls from `peer`.
    fn handler_for(&self, peer: &VerifiedChain) -> Arc<dyn Handler>;
}

struct Pending {
    first: Option<oneshot::Sender<Result<(), WireError>>>,
    stream: Option<ResponseSender>,
}

/// Where frames go: the channel's writer, shared by every task of the connection. Writing
/// directly (under a lock) instead of through a writer task saves a task switch per message.
struct Outgoing {
    sink: tokio::sync::Mutex<Box<dyn MessageSink>>,
    closed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
trait MessageSink: Send {
    async fn send_message(&mut self, bytes: &[u8]) -> Result<()>;
    async fn close_sink(&mut self);
}

#[async_trait::async_trait]
impl<T: AsyncRead + AsyncWrite + Unpin + Send> MessageSink for ChannelWriter<T> {
    async fn send_message(&mut self, bytes: &[u8]) -> Result<()> {
        self.send(bytes).await
    }

    async fn close_sink(&mut self) {
        let _ = self.close().await;
    }
}

impl Outgoing {
    /// Sends a frame; false when the connection can no longer be written.
    async fn send(&self, frame: Frame) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let Ok(bytes) = postcard::to_stdvec(&frame) else {
            return false;
        };
        let mut sink = self.sink.lock().await;
        if sink.send_message(&bytes).await.is_err() {
            self.closed.store(true, Ordering::Release);
            return false;
        }
        true
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.sink.lock().await.close_sink().await;
    }
}

struct Shared {
    outgoing: Arc<Outgoing>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: Mutex<Option<String>>,
}

/// A connection to a peer: call it through [`Handler`]; its calls to us are served by the
/// handler the factory gave for it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    peer: VerifiedChain,
}

fn connection_closed(why: &str) -> WireError {
    WireError::new("net.closed", format!("the connection closed: {why}"))
}

impl Connection {
    /// Starts serving `channel`: a reader task and a writer task run until either side closes.
    pub fn start<T>(channel: Channel<T>, local: Option<Arc<dyn HandlerFactory>>) -> Connection
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let outgoing = Arc::new(Outgoing {
            sink: tokio::sync::Mutex::new(Box::new(channel.writer)),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let shared = Arc::new(Shared {
            outgoing,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: Mutex::new(None),
        });
        let handler = local.map(|factory| factory.handler_for(&channel.peer));
        tokio::spawn(read_frames(channel.reader, shared.clone(), handler));
        Connection {
            shared,
            peer: channel.peer,
        }
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &VerifiedChain {
        &self.peer
    }

    /// Why the connection closed, if it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.closed.lock().clone()
    }
}

#[async_trait::async_trait]
impl Handler for Connection {
    async fn call(&self, request: Request) -> std::result::Result<Responses, WireError> {
        if let Some(why) = self.closed_reason() {
            return Err(connection_closed(&why));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (first_sender, first) = oneshot::channel();
        let (stream_sender, responses) = Responses::channel();
        self.shared.pending.lock().insert(
            id,
            Pending {
                first: Some(first_sender),
                stream: Some(stream_sender),
            },
        );
        if !self.shared.outgoing.send(Frame::Call { id, request }).await {
            self.shared.pending.lock().remove(&id);
            return Err(connection_closed("it is no longer writable"));
        }
        match first.await {
            Ok(Ok(())) => Ok(responses),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(connection_closed(
                &self.closed_reason().unwrap_or_else(|| "no answer".into()),
            )),
        }
    }
}

async fn read_frames<T>(
    mut reader: ChannelReader<T>,
    shared: Arc<Shared>,
    handler: Option<Arc<dyn Handler>>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut serving: HashMap<u64, AbortHandle> = HashMap::new();
    let reason = loop {
        let bytes = match reader.receive().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break "the peer closed it".to_string(),
            Err(error) => break error.to_string(),
        };
        let frame: Frame = match postcard::from_bytes(&bytes) {
            Ok(frame) => frame,
            Err(error) => break format!("a malformed frame: {error}"),
        };
        serving.retain(|_, task| !task.is_finished());
        match frame {
            Frame::Call { id, request } => {
                if serving.contains_key(&id) {
                    break format!("call id {id} reused while running");
                }
                if serving.len() >= CALLS_PER_CONNECTION_MAX {
                    let error = WireError::new(
                        codes::BAD_MESSAGE,
                        format!("more than {CALLS_PER_CONNECTION_MAX} calls at once"),
                    );
                    let _ = shared
                        .outgoing
                        .send(Frame::Item {
                            id,
                            item: Err(error),
                        })
                        .await;
                    let _ = shared.outgoing.send(Frame::End { id }).await;
                    continue;
                }
                let task = tokio::spawn(serve_call(
                    id,
                    request,
                    handler.clone(),
                    shared.outgoing.clone(),
                ));
                serving.insert(id, task.abort_handle());
            }
            Frame::Cancel { id } => {
                if let Some(task) = serving.remove(&id) {
                    task.abort();
                }
            }
            Frame::Item { id, item } => {
                if !deliver(&shared, id, item).await {
                    break format!("a response to unknown call {id}");
                }
            }
            Frame::Only { id, item } => {
                if !deliver(&shared, id, item).await {
                    break format!("a response to unknown call {id}");
                }
                finish(&shared, id);
            }
            Frame::End { id } => finish(&shared, id),
        }
    };
    for (_, task) in serving {
        task.abort();
    }
    shared.outgoing.close().await;
    *shared.closed.lock() = Some(reason.clone());
    for (_, mut pending) in shared.pending.lock().drain() {
        if let Some(first) = pending.first.take() {
            let _ = first.send(Err(connection_closed(&reason)));
        }
    }
}

/// Ends call `id`: its stream ends (and a call that had no response returns an empty stream).
fn finish(shared: &Shared, id: u64) {
    if let Some(mut pending) = shared.pending.lock().remove(&id)
        && let Some(first) = pending.first.take()
    {
        let _ = first.send(Ok(()));
    }
}

/// Routes one response to the call waiting for it; false when no call has that id.
async fn deliver(shared: &Shared, id: u64, item: Result<Response, WireError>) -> bool {
    let (first, stream) = {
        let mut pending = shared.pending.lock();
        let Some(entry) = pending.get_mut(&id) else {
            return false;
        };
        let first = entry.first.take();
        if first.is_some() && item.is_err() {
            pending.remove(&id);
        }
        let stream = pending.get(&id).and_then(|entry| entry.stream.clone());
        (first, stream)
    };
    if let Some(first) = first {
        match item {
            Err(error) => {
                let _ = first.send(Err(error));
                return true;
            }
            Ok(response) => {
                let _ = first.send(Ok(()));
                if let Some(stream) = stream {
                    stream.send(Ok(response)).await;
                }
                return true;
            }
        }
    }
    if let Some(stream) = stream
        && !stream.send(item).await
    {
        // The caller dropped the stream: tell the peer to stop.
        shared.pending.lock().remove(&id);
        shared.outgoing.send(Frame::Cancel { id }).await;
    }
    true
}

async fn serve_call(
    id: u64,
    request: Request,
    handler: Option<Arc<dyn Handler>>,
    outgoing: Arc<Outgoing>,
) {
    let Some(handler) = handler else {
        let error = WireError::new(codes::BAD_MESSAGE, "this side serves no calls");
        outgoing
            .send(Frame::Only {
                id,
                item: Err(error),
            })
            .await;
        return;
    };
    let mut responses = match handler.call(request).await {
        Err(error) => {
            outgoing
                .send(Frame::Only {
                    id,
                    item: Err(error),
                })
                .await;
            return;
        }
        Ok(responses) => responses,
    };
    let Some(mut current) = responses.next().await else {
        outgoing.send(Frame::End { id }).await;
        return;
    };
    loop {
        let next = match responses.try_next() {
            // The stream already finished: the last response and the end go as one message.
            Ok(None) => {
                outgoing.send(Frame::Only { id, item: current }).await;
                return;
            }
            Ok(Some(next)) => Some(next),
            Err(()) => None,
        };
        if !outgoing.send(Frame::Item { id, item: current }).await {
            return;
        }
        current = match next {
            Some(next) => next,
            None => match responses.next().await {
                Some(next) => next,
                None => {
                    outgoing.send(Frame::End { id }).await;
                    return;
                }
            },
        };
    }
}

/// Dials `address` and authenticates both sides; the returned connection calls the peer.
pub async fn connect(address: &str, identity: &crate::identity::Identity) -> Result<Connection> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let channel = crate::channel::handshake(stream, identity, true).await?;
    Ok(Connection::start(channel, None))
}

impl From<NetError> for WireError {
    fn from(error: NetError) -> Self {
        match error {
            NetError::Remote(error) => error,
            other => WireError::new(other.code(), other.to_string()),
        }
    }
}
