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
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::channel::{Channel, ChannelReader, ChannelWriter};
use crate::error::{NetError, Result};
use crate::identity::VerifiedChain;

/// Responses a stream may have in flight before its caller takes some (flow control): a slow
/// consumer holds back its own stream only, never the connection it shares with other calls.
pub const STREAM_WINDOW_MESSAGES: u32 = 32;

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
    /// The caller of stream `id` took this many more responses: the server may send as many
    /// more (flow control; a stream starts with [`STREAM_WINDOW_MESSAGES`]).
    Credit {
        /// The call.
        id: u64,
        /// How many more responses may be sent.
        messages: u32,
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

/// Where frames go: a queue to the connection's writer task. Only that task writes to the
/// channel, and a queued frame is whole, so a caller or a serving task that is cancelled can never
/// leave half a message on the wire.
struct Outgoing {
    queue: mpsc::Sender<Frame>,
}

/// Frames queued for the writer before senders wait.
const OUTGOING_FRAMES_MAX: usize = 256;

impl Outgoing {
    /// Queues a frame; false when the connection can no longer be written.
    async fn send(&self, frame: Frame) -> bool {
        self.queue.send(frame).await.is_ok()
    }
}

/// Writes queued frames until the queue closes, the connection fails, or `stop` fires;
/// a failure wakes `failed`, so the reader tears the connection down.
async fn write_frames<T>(
    mut writer: ChannelWriter<T>,
    mut frames: mpsc::Receiver<Frame>,
    failed: Arc<Notify>,
    stop: Arc<Notify>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            () = stop.notified() => None,
        };
        let Some(frame) = frame else { break };
        let written = match postcard::to_stdvec(&frame) {
            Ok(bytes) => writer.send(&bytes).await.is_ok(),
            Err(_) => false,
        };
        if !written {
            failed.notify_one();
            break;
        }
    }
    let _ = writer.close().await;
}

struct Shared {
    outgoing: Arc<Outgoing>,
    /// Fired by the writer when writing failed.
    write_failed: Arc<Notify>,
    /// Fired by the reader when the connection is torn down.
    stop_writer: Arc<Notify>,
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
        let (queue, frames) = mpsc::channel(OUTGOING_FRAMES_MAX);
        let write_failed = Arc::new(Notify::new());
        let stop_writer = Arc::new(Notify::new());
        tokio::spawn(write_frames(
            channel.writer,
            frames,
            write_failed.clone(),
            stop_writer.clone(),
        ));
        let shared = Arc::new(Shared {
            outgoing: Arc::new(Outgoing { queue }),
            write_failed,
            stop_writer,
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
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (first_sender, first) = oneshot::channel();
        let (stream_sender, responses) = Responses::channel();
        {
            // Checked and registered under the lock the reader drains under when the
            // connection dies, so no call can slip in after the drain and wait forever.
            let mut pending = self.shared.pending.lock();
            if let Some(why) = self.shared.closed.lock().clone() {
                return Err(connection_closed(&why));
            }
            pending.insert(
                id,
                Pending {
                    first: Some(first_sender),
                    stream: Some(stream_sender),
                },
            );
        }
        if !self.shared.outgoing.send(Frame::Call { id, request }).await {
            self.shared.pending.lock().remove(&id);
            return Err(connection_closed("it is no longer writable"));
        }
        match first.await {
            Ok(Ok(())) => {
                let mut responses = responses;
                responses.on_taken(credit_granter(id, self.shared.outgoing.clone()));
                let shared = self.shared.clone();
                responses.on_drop(Box::new(move || {
                    // Dropped before its end: stop the peer (it may be waiting for credit).
                    if shared.pending.lock().remove(&id).is_some() {
                        send_control(&shared.outgoing, Frame::Cancel { id });
                    }
                }));
                Ok(responses)
            }
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
    let mut serving: HashMap<u64, (AbortHandle, Arc<Semaphore>)> = HashMap::new();
    let reason = loop {
        let received = tokio::select! {
            received = reader.receive() => received,
            () = shared.write_failed.notified() => break "writing to it failed".to_string(),
        };
        let bytes = match received {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break "the peer closed it".to_string(),
            Err(error) => break error.to_string(),
        };
        let frame: Frame = match postcard::from_bytes(&bytes) {
            Ok(frame) => frame,
            Err(error) => break format!("a malformed frame: {error}"),
        };
        serving.retain(|_, (task, _)| !task.is_finished());
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
                    send_control(
                        &shared.outgoing,
                        Frame::Only {
                            id,
                            item: Err(error),
                        },
                    );
                    continue;
                }
                let credits = Arc::new(Semaphore::new(STREAM_WINDOW_MESSAGES as usize));
                let task = tokio::spawn(serve_call(
                    id,
                    request,
                    handler.clone(),
                    shared.outgoing.clone(),
                    credits.clone(),
                ));
                serving.insert(id, (task.abort_handle(), credits));
            }
            Frame::Cancel { id } => {
                if let Some((task, _)) = serving.remove(&id) {
                    task.abort();
                }
            }
            Frame::Credit { id, messages } => {
                if let Some((_, credits)) = serving.get(&id) {
                    let room = (STREAM_WINDOW_MESSAGES as usize)
                        .saturating_sub(credits.available_permits());
                    credits.add_permits((messages as usize).min(room));
                }
            }
            // Responses to a call we no longer wait for (cancelled, or never ours) are dropped.
            Frame::Item { id, item } => {
                if !deliver(&shared, id, item).await {
                    break format!("the peer sent call {id} more than its window");
                }
            }
            Frame::Only { id, item } => {
                if !deliver(&shared, id, item).await {
                    break format!("the peer sent call {id} more than its window");
                }
                finish(&shared, id);
            }
            Frame::End { id } => finish(&shared, id),
        }
    };
    // Every call still waiting learns the connection died: a stream that ended early must not
    // look like a complete one.
    let mut pending_calls = shared.pending.lock();
    *shared.closed.lock() = Some(reason.clone());
    for (_, mut pending) in pending_calls.drain() {
        if let Some(first) = pending.first.take() {
            let _ = first.send(Err(connection_closed(&reason)));
        } else if let Some(stream) = pending.stream.take() {
            stream.try_send(Err(connection_closed(&reason)));
        }
    }
    for (_, (task, _)) in serving {
        task.abort();
    }
    shared.stop_writer.notify_one();
}

/// A hook that grants the peer more of stream `id` as the caller takes responses, half a window
/// at a time.
fn credit_granter(id: u64, outgoing: Arc<Outgoing>) -> Box<dyn FnMut() + Send> {
    let batch = STREAM_WINDOW_MESSAGES / 2;
    let mut taken = 0;
    Box::new(move || {
        taken += 1;
        if taken < batch {
            return;
        }
        taken = 0;
        send_control(
            &outgoing,
            Frame::Credit {
                id,
                messages: batch,
            },
        );
    })
}

/// Sends a control frame without making the reader wait for room in the outgoing queue (two
/// peers each waiting to write while neither reads would deadlock).
fn send_control(outgoing: &Arc<Outgoing>, frame: Frame) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = outgoing.queue.try_send(frame)
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let outgoing = outgoing.clone();
        runtime.spawn(async move { outgoing.send(frame).await });
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

/// Routes one response to the call waiting for it (dropped when no call has that id). Never
/// waits for the consumer: the window guarantees room; false when the peer overran it.
async fn deliver(shared: &Shared, id: u64, item: Result<Response, WireError>) -> bool {
    let (first, stream) = {
        let mut pending = shared.pending.lock();
        let Some(entry) = pending.get_mut(&id) else {
            return true;
        };
        let first = entry.first.take();
        if first.is_some() && item.is_err() {
            pending.remove(&id);
        }
        let stream = pending.get(&id).and_then(|entry| entry.stream.clone());
        (first, stream)
    };
    if let Some(first) = first {
        if let Err(error) = item {
            let _ = first.send(Err(error));
            return true;
        }
        let _ = first.send(Ok(()));
    }
    let Some(stream) = stream else {
        return true;
    };
    if stream.try_send(item) {
        return true;
    }
    if stream.is_closed() {
        // The caller dropped the stream: tell the peer to stop.
        shared.pending.lock().remove(&id);
        send_control(&shared.outgoing, Frame::Cancel { id });
        return true;
    }
    false
}

async fn serve_call(
    id: u64,
    request: Request,
    handler: Option<Arc<dyn Handler>>,
    outgoing: Arc<Outgoing>,
    credits: Arc<Semaphore>,
) {
    let called = match handler {
        Some(handler) => handler.call(request).await,
        None => Err(WireError::new(
            codes::BAD_MESSAGE,
            "this side serves no calls",
        )),
    };
    let mut responses = match called {
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
        // Wait for the caller to have room: a slow consumer slows only its own stream.
        match credits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
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
