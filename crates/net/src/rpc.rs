//! Calls over a [`Channel`]: multiplexed, streaming, and symmetric — either side may call the
//! other (a daemon dials another daemon with its own identity; sync will push notifications).
//!
//! Each message is one postcard-encoded [`Frame`]. A call is `Call`, then its responses as
//! `Item`s, then `End`; `Cancel` stops a stream early. A malformed or unexpected frame closes
//! this connection only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use syncbase_wire::{
    Handler, Lease, Request, Response, ResponseSender, Responses, WireError, codes,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::channel::{Channel, ChannelReader, ChannelWriter, MESSAGE_BYTES_MAX};
use crate::error::{NetError, Result};
use crate::identity::VerifiedChain;

/// Responses a stream may have in flight before its caller takes some (flow control): a slow
/// consumer holds back its own stream only, never the connection it shares with other calls.
pub(crate) const STREAM_WINDOW_MESSAGES: u32 = 32;

/// Bytes (of encoded frames) a stream may have in flight before its caller takes some: with
/// large messages the byte window binds first. A message is sent whenever less than half the
/// window is in flight, however large: a caller grants credit by halves of the window, so it may
/// have taken up to half a window without granting it yet, and a message that had to wait for
/// that would wait for good.
pub(crate) const STREAM_WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// Calls a peer may have running on one connection at once.
pub const CALLS_PER_CONNECTION_MAX: usize = 256;

/// Refusals (of calls past [`CALLS_PER_CONNECTION_MAX`]) that may wait to be written: a peer
/// that keeps calling past the limit while not reading its refusals has its connection closed
/// once this many wait. Each waiting refusal is one call id, so the bound costs 32 KiB at most.
pub const REFUSALS_UNWRITTEN_MAX: usize = 16 * CALLS_PER_CONNECTION_MAX;

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
    /// The caller of stream `id` took this many more responses, of this many bytes: the server
    /// may send as many more (flow control; a stream starts with [`STREAM_WINDOW_MESSAGES`] and
    /// [`STREAM_WINDOW_BYTES`]).
    Credit {
        /// The call.
        id: u64,
        /// How many more responses may be sent.
        messages: u32,
        /// How many more bytes may be sent.
        bytes: u64,
    },
    /// The caller no longer wants call `id`'s responses.
    Cancel {
        /// The call.
        id: u64,
    },
}

/// The serving side's view of one stream's flow-control window: how many more messages and
/// bytes the caller has room for.
struct StreamWindow {
    messages: Semaphore,
    bytes_in_flight: Mutex<usize>,
    bytes_returned: Notify,
}

impl StreamWindow {
    fn new() -> Self {
        Self {
            messages: Semaphore::new(STREAM_WINDOW_MESSAGES as usize),
            bytes_in_flight: Mutex::new(0),
            bytes_returned: Notify::new(),
        }
    }

    /// Waits until the caller has room for a message of `bytes`, and takes it.
    async fn take(&self, bytes: usize) -> bool {
        match self.messages.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        loop {
            let returned = self.bytes_returned.notified();
            {
                let mut in_flight = self.bytes_in_flight.lock();
                if *in_flight < STREAM_WINDOW_BYTES / 2 || *in_flight + bytes <= STREAM_WINDOW_BYTES
                {
                    *in_flight += bytes;
                    return true;
                }
            }
            returned.await;
        }
    }

    /// The caller took `messages` responses of `bytes`: room for as many more (never more
    /// than a window, whatever a peer claims).
    fn credit(&self, messages: u32, bytes: u64) {
        let room =
            (STREAM_WINDOW_MESSAGES as usize).saturating_sub(self.messages.available_permits());
        self.messages.add_permits((messages as usize).min(room));
        let mut in_flight = self.bytes_in_flight.lock();
        *in_flight = in_flight.saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX));
        drop(in_flight);
        self.bytes_returned.notify_waiters();
    }
}

/// Makes the handler that serves a peer's calls, once the peer is authenticated.
pub trait HandlerFactory: Send + Sync {
    /// The handler for calls from `peer`.
    fn handler_for(&self, peer: &VerifiedChain) -> Arc<dyn Handler>;
}

/// How a connection behaves; the default has no idle timeout.
#[derive(Debug, Clone, Default)]
pub struct ConnectionOptions {
    /// Close the connection when no call runs in either direction and no frame arrived for
    /// this long.
    pub idle_timeout: Option<Duration>,
}

struct Pending {
    first: Option<oneshot::Sender<Result<(), WireError>>>,
    stream: Option<ResponseSender>,
}

/// Where frames go: a queue to the connection's writer task. Only that task writes to the
/// channel, and a queued frame is whole (encoded by whoever queued it), so a caller or a serving
/// task that is cancelled can never leave half a message on the wire.
struct Outgoing {
    queue: mpsc::Sender<Outbound>,
}

/// An encoded frame and the lease accounting for its bytes, given back once it is written.
struct Outbound {
    bytes: Vec<u8>,
    _lease: Lease,
}

/// Frames queued for the writer before senders wait.
const OUTGOING_FRAMES_MAX: usize = 256;

/// Control frames (credits, cancels and refusals) waiting for the writer, which sends them
/// before any response. They are queued without waiting for room, by the reader (which must
/// never wait for a consumer: two peers each waiting to write while neither reads would
/// deadlock) and by consumers taking responses, and yet each kind is bounded: credits are
/// coalesced per stream, a cancel is queued at most once per call of ours, and refusals stop at
/// [`REFUSALS_UNWRITTEN_MAX`].
#[derive(Default)]
struct Control {
    frames: Mutex<ControlFrames>,
    /// Fired when a frame is queued, to wake the writer.
    queued: Notify,
}

/// The control frames waiting, by kind.
#[derive(Default)]
struct ControlFrames {
    /// Messages and bytes to grant, per stream of ours.
    credits: BTreeMap<u64, (u32, u64)>,
    /// Streams of ours to stop.
    cancels: VecDeque<u64>,
    /// The peer's calls refused for running past the limit.
    refusals: VecDeque<u64>,
}

impl Control {
    /// Grants the peer `messages` more responses of `bytes` on stream `id`, added to any grant
    /// not yet written.
    fn credit(&self, id: u64, messages: u32, bytes: u64) {
        let mut frames = self.frames.lock();
        let credit = frames.credits.entry(id).or_default();
        credit.0 = credit.0.saturating_add(messages);
        credit.1 = credit.1.saturating_add(bytes);
        drop(frames);
        self.queued.notify_one();
    }

    /// Asks the peer to stop stream `id` (any grant for it not yet written is moot).
    fn cancel(&self, id: u64) {
        let mut frames = self.frames.lock();
        frames.credits.remove(&id);
        frames.cancels.push_back(id);
        drop(frames);
        self.queued.notify_one();
    }

    /// Refuses the peer's call `id`; false when [`REFUSALS_UNWRITTEN_MAX`] refusals already
    /// wait, as they do for a peer that floods calls and reads nothing.
    fn refuse(&self, id: u64) -> bool {
        let mut frames = self.frames.lock();
        if frames.refusals.len() >= REFUSALS_UNWRITTEN_MAX {
            return false;
        }
        frames.refusals.push_back(id);
        drop(frames);
        self.queued.notify_one();
        true
    }

    /// The next control frame to write: credits first, so flow never waits on refusals.
    fn next(&self) -> Option<Frame> {
        let mut frames = self.frames.lock();
        if let Some((id, (messages, bytes))) = frames.credits.pop_first() {
            return Some(Frame::Credit {
                id,
                messages,
                bytes,
            });
        }
        if let Some(id) = frames.cancels.pop_front() {
            return Some(Frame::Cancel { id });
        }
        let id = frames.refusals.pop_front()?;
        let error = WireError::new(
            codes::BAD_MESSAGE,
            format!("more than {CALLS_PER_CONNECTION_MAX} calls at once"),
        );
        Some(Frame::Only {
            id,
            item: Err(error),
        })
    }
}

/// Encodes a frame; frames built here always encode (postcard fails only on unsupported
/// types), so a failure is reported as a protocol error rather than trusted blindly.
fn encode_frame(frame: &Frame) -> Result<Vec<u8>> {
    encode_frame_into(frame, Vec::new())
}

/// Encodes a frame into `buffer` (sized by the caller when it knows about how large the frame
/// is, so a 16 MiB response is not copied through ever larger buffers).
fn encode_frame_into(frame: &Frame, buffer: Vec<u8>) -> Result<Vec<u8>> {
    postcard::to_extend(frame, buffer)
        .map_err(|error| NetError::Protocol(format!("cannot encode a frame: {error}")))
}

impl Outgoing {
    /// Queues a frame; false when the connection can no longer be written.
    async fn send(&self, frame: Frame) -> bool {
        self.send_leased(frame, Lease::default()).await
    }

    /// Queues a frame whose bytes `lease` accounts for.
    async fn send_leased(&self, frame: Frame, lease: Lease) -> bool {
        match encode_response(&frame, lease.bytes()) {
            Some(bytes) => self.send_encoded(bytes, lease).await,
            None => false,
        }
    }

    /// Queues an encoded frame whose bytes `lease` accounts for.
    async fn send_encoded(&self, bytes: Vec<u8>, lease: Lease) -> bool {
        self.queue
            .send(Outbound {
                bytes,
                _lease: lease,
            })
            .await
            .is_ok()
    }
}

/// Encodes a response frame; one too large for a message (which the data model's limits rule
/// out) becomes an error for its call instead. `None` only if even that cannot be encoded.
fn encode_response(frame: &Frame, bytes_hint: usize) -> Option<Vec<u8>> {
    let buffer = Vec::with_capacity(bytes_hint.saturating_add(256).min(MESSAGE_BYTES_MAX));
    match encode_frame_into(frame, buffer) {
        Ok(bytes) if bytes.len() <= MESSAGE_BYTES_MAX => Some(bytes),
        Ok(bytes) => {
            let id = frame.id()?;
            let error = WireError::new(
                codes::BAD_MESSAGE,
                format!(
                    "a response of {} bytes is larger than the limit of {MESSAGE_BYTES_MAX}",
                    bytes.len()
                ),
            );
            encode_frame(&Frame::Only {
                id,
                item: Err(error),
            })
            .ok()
        }
        Err(_) => None,
    }
}

impl Frame {
    /// The call a frame belongs to.
    fn id(&self) -> Option<u64> {
        match self {
            Frame::Call { id, .. }
            | Frame::Item { id, .. }
            | Frame::Only { id, .. }
            | Frame::End { id }
            | Frame::Credit { id, .. }
            | Frame::Cancel { id } => Some(*id),
        }
    }
}

/// Writes control frames and queued frames (control frames first) until the queue closes, the
/// connection fails, or `stop` fires; a failure wakes `failed`, so the reader tears the
/// connection down. A write the peer does not take is abandoned when `stop` fires, so a torn
/// down connection is released even if its peer never reads again.
async fn write_frames<T>(
    mut writer: ChannelWriter<T>,
    mut frames: mpsc::Receiver<Outbound>,
    control: Arc<Control>,
    failed: Arc<Notify>,
    stop: Arc<Notify>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let frame = match control.next() {
            Some(frame) => match encode_frame(&frame) {
                Ok(bytes) => Some(Outbound {
                    bytes,
                    _lease: Lease::default(),
                }),
                Err(_) => continue,
            },
            // A frame queued after `next` looked leaves a permit, so `queued` still fires.
            None => tokio::select! {
                biased;
                () = stop.notified() => None,
                () = control.queued.notified() => continue,
                frame = frames.recv() => frame,
            },
        };
        let Some(frame) = frame else { break };
        // The frame (and its lease) is dropped once written: its bytes are the kernel's now.
        let written = tokio::select! {
            written = writer.send(&frame.bytes) => written,
            // Half a message may be on the wire: the channel is dropped, not closed.
            () = stop.notified() => return,
        };
        if written.is_err() {
            failed.notify_one();
            break;
        }
    }
    let _ = writer.close().await;
}

struct Shared {
    outgoing: Arc<Outgoing>,
    /// Credits, cancels and refusals, written by the writer before other frames.
    control: Arc<Control>,
    /// Fired by the writer when writing failed.
    write_failed: Arc<Notify>,
    /// Fired by the reader when the connection is torn down.
    stop_writer: Arc<Notify>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: Mutex<Option<String>>,
    /// Fired (for every waiter) once `closed` is set.
    closed_notify: Notify,
    /// Fired when the last handle of a connection that serves no calls is dropped.
    handles_gone: Notify,
}

/// What keeps a connection open on this side: every [`Connection`] clone and every stream it
/// returned hold one. A connection that serves no calls (a client's) closes when the last goes;
/// one that serves calls stays for as long as its peer wants it.
struct Handle {
    shared: Arc<Shared>,
    serves_calls: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.serves_calls {
            self.shared.handles_gone.notify_one();
        }
    }
}

/// A connection to a peer: call it through [`Handler`]; its calls to us are served by the
/// handler the factory gave for it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    peer: VerifiedChain,
    handle: Arc<Handle>,
}

fn connection_closed(why: &str) -> WireError {
    WireError::new(
        syncbase_error_code::net::CLOSED,
        format!("the connection closed: {why}"),
    )
}

impl Connection {
    /// Starts serving `channel`: a reader task and a writer task run until either side closes.
    pub fn start<T>(channel: Channel<T>, local: Option<Arc<dyn HandlerFactory>>) -> Connection
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start_with(channel, local, ConnectionOptions::default())
    }

    /// Like [`Connection::start`], with `options`.
    pub fn start_with<T>(
        channel: Channel<T>,
        local: Option<Arc<dyn HandlerFactory>>,
        options: ConnectionOptions,
    ) -> Connection
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (queue, frames) = mpsc::channel(OUTGOING_FRAMES_MAX);
        let write_failed = Arc::new(Notify::new());
        let stop_writer = Arc::new(Notify::new());
        let control = Arc::new(Control::default());
        tokio::spawn(write_frames(
            channel.writer,
            frames,
            control.clone(),
            write_failed.clone(),
            stop_writer.clone(),
        ));
        let shared = Arc::new(Shared {
            outgoing: Arc::new(Outgoing { queue }),
            control,
            write_failed,
            stop_writer,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: Mutex::new(None),
            closed_notify: Notify::new(),
            handles_gone: Notify::new(),
        });
        let handler = local.map(|factory| factory.handler_for(&channel.peer));
        let handle = Arc::new(Handle {
            shared: shared.clone(),
            serves_calls: handler.is_some(),
        });
        tokio::spawn(read_frames(
            channel.reader,
            shared.clone(),
            handler,
            options,
        ));
        Connection {
            shared,
            peer: channel.peer,
            handle,
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

    /// Completes once the connection has closed (either side, or a failure).
    pub async fn closed(&self) {
        loop {
            // Created before the check, so a close between the two still wakes it.
            let notified = self.shared.closed_notify.notified();
            if self.closed_reason().is_some() {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait::async_trait]
impl Handler for Connection {
    async fn call(&self, request: Request) -> std::result::Result<Responses, WireError> {
        // Sizes are checked before anything is sent: an oversize value is refused as such,
        // never by breaking the connection with an oversize message.
        request.validate_sizes()?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Call { id, request };
        let bytes = encode_frame(&frame)?;
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(WireError::new(
                codes::BAD_MESSAGE,
                format!(
                    "a request of {} bytes is larger than the limit of {MESSAGE_BYTES_MAX}",
                    bytes.len()
                ),
            ));
        }
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
        let queued = self
            .shared
            .outgoing
            .queue
            .send(Outbound {
                bytes,
                _lease: Lease::default(),
            })
            .await;
        if queued.is_err() {
            self.shared.pending.lock().remove(&id);
            return Err(connection_closed("it is no longer writable"));
        }
        match first.await {
            Ok(Ok(())) => {
                let mut responses = responses;
                responses.on_taken(credit_granter(id, self.shared.control.clone()));
                let shared = self.shared.clone();
                // An open stream keeps its connection open, even with no `Connection` left.
                let handle = self.handle.clone();
                responses.on_drop(Box::new(move || {
                    let _handle = handle;
                    // Dropped before its end: stop the peer (it may be waiting for credit).
                    if shared.pending.lock().remove(&id).is_some() {
                        shared.control.cancel(id);
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

/// Receives one message, handing the reader back: the future can live across other events
/// (an idle check, say) without being cancelled halfway through a message.
async fn receive_owned<T>(
    mut reader: ChannelReader<T>,
) -> (ChannelReader<T>, Result<Option<Vec<u8>>>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let received = reader.receive().await;
    (reader, received)
}

/// The connection's reader: receives each message, acts on it (the named steps below), and when
/// the connection ends for any reason, fails every call still waiting and stops the writer.
async fn read_frames<T>(
    reader: ChannelReader<T>,
    shared: Arc<Shared>,
    handler: Option<Arc<dyn Handler>>,
    options: ConnectionOptions,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut calls = ServedCalls {
        shared: shared.clone(),
        handler,
        serving: HashMap::new(),
    };
    let mut idle = IdleTimer::new(options.idle_timeout);
    let mut receiving = Box::pin(receive_owned(reader));
    let reason = loop {
        let received = tokio::select! {
            (reader, received) = &mut receiving => {
                receiving = Box::pin(receive_owned(reader));
                received
            }
            () = shared.write_failed.notified() => break "writing to it failed".to_string(),
            () = shared.handles_gone.notified() => break "this side closed it".to_string(),
            () = idle.fired() => match calls.idle_check(&mut idle) {
                Some(reason) => break reason,
                None => continue,
            },
        };
        idle.restart();
        let bytes = match received {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break "the peer closed it".to_string(),
            Err(error) => break error.to_string(),
        };
        if let Err(reason) = calls.handle_message(&bytes).await {
            break reason;
        }
    };
    calls.close(&reason);
}

/// The idle timeout of a connection, if it has one.
struct IdleTimer {
    timer: Option<(std::time::Duration, std::pin::Pin<Box<tokio::time::Sleep>>)>,
}

impl IdleTimer {
    #[allow(clippy::disallowed_methods)] // The idle timeout is the transport's own timer.
    fn new(timeout: Option<std::time::Duration>) -> Self {
        Self {
            timer: timeout.map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout)))),
        }
    }

    /// Completes when the timeout passes (never, without a timeout).
    async fn fired(&mut self) {
        match &mut self.timer {
            Some((_, sleep)) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// Starts the timeout over, from now.
    #[allow(clippy::disallowed_methods)] // The idle timeout is the transport's own timer.
    fn restart(&mut self) {
        if let Some((timeout, sleep)) = &mut self.timer {
            sleep.as_mut().reset(tokio::time::Instant::now() + *timeout);
        }
    }
}

/// The calls a connection serves for its peer, and what the reader does with each message.
struct ServedCalls {
    shared: Arc<Shared>,
    handler: Option<Arc<dyn Handler>>,
    /// Calls running, with their task and stream window.
    serving: HashMap<u64, (AbortHandle, Arc<StreamWindow>)>,
}

impl ServedCalls {
    /// When the idle timer fires: the reason to close if no call runs either way, else the
    /// timer starts over.
    fn idle_check(&mut self, idle: &mut IdleTimer) -> Option<String> {
        self.serving.retain(|_, (task, _)| !task.is_finished());
        let (timeout, _) = idle.timer.as_ref()?;
        if self.serving.is_empty() && self.shared.pending.lock().is_empty() {
            return Some(format!("it was idle for {} s", timeout.as_secs()));
        }
        idle.restart();
        None
    }

    /// Decodes one message and acts on it; `Err` is the reason to close the connection.
    async fn handle_message(&mut self, bytes: &[u8]) -> std::result::Result<(), String> {
        let frame: Frame =
            postcard::from_bytes(bytes).map_err(|error| format!("a malformed frame: {error}"))?;
        self.serving.retain(|_, (task, _)| !task.is_finished());
        match frame {
            Frame::Call { id, request } => self.start_call(id, request),
            Frame::Cancel { id } => {
                if let Some((task, _)) = self.serving.remove(&id) {
                    task.abort();
                }
                Ok(())
            }
            Frame::Credit {
                id,
                messages,
                bytes,
            } => {
                if let Some((_, window)) = self.serving.get(&id) {
                    window.credit(messages, bytes);
                }
                Ok(())
            }
            // Responses to a call we no longer wait for (cancelled, or never ours) are dropped.
            Frame::Item { id, item } => self.deliver(id, item, bytes.len()).await,
            Frame::Only { id, item } => {
                self.deliver(id, item, bytes.len()).await?;
                finish(&self.shared, id);
                Ok(())
            }
            Frame::End { id } => {
                finish(&self.shared, id);
                Ok(())
            }
        }
    }

    /// Serves the peer's call `id`, or refuses it past [`CALLS_PER_CONNECTION_MAX`] calls at
    /// once (closing a peer that keeps calling without reading its refusals).
    fn start_call(&mut self, id: u64, request: Request) -> std::result::Result<(), String> {
        if self.serving.contains_key(&id) {
            return Err(format!("call id {id} reused while running"));
        }
        if self.serving.len() >= CALLS_PER_CONNECTION_MAX {
            if !self.shared.control.refuse(id) {
                return Err(format!(
                    "the peer kept calling past the limit of {CALLS_PER_CONNECTION_MAX} calls at \
                     once without reading the refusals ({REFUSALS_UNWRITTEN_MAX} refusals waiting)"
                ));
            }
            return Ok(());
        }
        let window = Arc::new(StreamWindow::new());
        let task = tokio::spawn(serve_call(
            id,
            request,
            self.handler.clone(),
            self.shared.outgoing.clone(),
            window.clone(),
        ));
        self.serving.insert(id, (task.abort_handle(), window));
        Ok(())
    }

    /// Hands a response of our call `id` to its caller.
    async fn deliver(
        &self,
        id: u64,
        item: std::result::Result<Response, WireError>,
        size: usize,
    ) -> std::result::Result<(), String> {
        if deliver(&self.shared, id, item, size).await {
            Ok(())
        } else {
            Err(format!("the peer sent call {id} more than its window"))
        }
    }

    /// The connection ended for `reason`: every call still waiting learns it (a stream that
    /// ended early must not look like a complete one), served calls stop, the writer stops.
    fn close(self, reason: &str) {
        let mut pending_calls = self.shared.pending.lock();
        *self.shared.closed.lock() = Some(reason.to_string());
        for (_, mut pending) in pending_calls.drain() {
            if let Some(first) = pending.first.take() {
                let _ = first.send(Err(connection_closed(reason)));
            } else if let Some(stream) = pending.stream.take() {
                stream.try_send(Err(connection_closed(reason)));
            }
        }
        drop(pending_calls);
        self.shared.closed_notify.notify_waiters();
        for (_, (task, _)) in self.serving {
            task.abort();
        }
        self.shared.stop_writer.notify_one();
    }
}

/// A hook that grants the peer more of stream `id` as the caller takes responses, about half a
/// window (of messages or of bytes) at a time.
fn credit_granter(id: u64, control: Arc<Control>) -> Box<dyn FnMut(usize) + Send> {
    let (mut messages, mut bytes) = (0u32, 0usize);
    Box::new(move |size| {
        messages += 1;
        bytes += size;
        if messages < STREAM_WINDOW_MESSAGES / 2 && bytes < STREAM_WINDOW_BYTES / 2 {
            return;
        }
        control.credit(id, messages, bytes as u64);
        (messages, bytes) = (0, 0);
    })
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
async fn deliver(
    shared: &Shared,
    id: u64,
    item: Result<Response, WireError>,
    wire_bytes: usize,
) -> bool {
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
    if stream.try_send_sized(item, wire_bytes) {
        return true;
    }
    if stream.is_closed() {
        // The caller dropped the stream: tell the peer to stop.
        shared.pending.lock().remove(&id);
        shared.control.cancel(id);
        return true;
    }
    false
}

async fn serve_call(
    id: u64,
    request: Request,
    handler: Option<Arc<dyn Handler>>,
    outgoing: Arc<Outgoing>,
    window: Arc<StreamWindow>,
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
    let Some(mut current) = responses.next_leased().await else {
        outgoing.send(Frame::End { id }).await;
        return;
    };
    loop {
        let next = match responses.try_next_leased() {
            // The stream already finished: the last response and the end go as one message.
            Ok(None) => {
                let (item, lease) = current;
                outgoing.send_leased(Frame::Only { id, item }, lease).await;
                return;
            }
            Ok(Some(next)) => Some(next),
            Err(()) => None,
        };
        let (item, lease) = current;
        let Some(bytes) = encode_response(&Frame::Item { id, item }, lease.bytes()) else {
            return;
        };
        // Wait for the caller to have room: a slow consumer slows only its own stream.
        if !window.take(bytes.len()).await || !outgoing.send_encoded(bytes, lease).await {
            return;
        }
        current = match next {
            Some(next) => next,
            None => match responses.next_leased().await {
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
