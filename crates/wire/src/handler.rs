//! One API shape for embedded and remote use: a [`Handler`] takes a request and returns its
//! responses (one, or a stream). The in-process service and the network client both implement
//! it; code written against it does not care which it has.

use tokio::sync::mpsc;

use crate::budget::Lease;
use crate::call::{Request, Response};
use crate::error::{WireError, codes};

/// One response of a stream, the memory [`Lease`] that accounts for it (empty when the
/// producer has no budget), and its size on the wire when it came from one (for flow control).
struct Leased {
    response: Result<Response, WireError>,
    lease: Lease,
    wire_bytes: usize,
}

impl Leased {
    fn new(response: Result<Response, WireError>, lease: Lease) -> Self {
        Self {
            response,
            lease,
            wire_bytes: 0,
        }
    }
}

/// Responses queued per stream before the producer waits for the consumer.
pub const STREAM_BUFFER_MESSAGES: usize = 64;

/// The responses to one call, in order. Most calls have exactly one; scans and watches stream.
pub struct Responses {
    receiver: mpsc::Receiver<Leased>,
    /// Told about every response taken (with its size on the wire), so a transport can grant
    /// its peer more to send.
    on_taken: Option<Box<dyn FnMut(usize) + Send>>,
    /// Told when the stream is dropped, so a transport can tell its peer to stop.
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Responses {
    fn drop(&mut self) {
        if let Some(hook) = self.on_drop.take() {
            hook();
        }
    }
}

/// The sending side of a [`Responses`] stream.
#[derive(Clone)]
pub struct ResponseSender {
    sender: mpsc::Sender<Leased>,
}

impl ResponseSender {
    /// Sends one response; returns false when the consumer has gone away.
    pub async fn send(&self, response: Result<Response, WireError>) -> bool {
        self.send_leased(response, Lease::default()).await
    }

    /// Sends one response with the lease that accounts for its bytes; the lease is given back
    /// when whoever takes the response is done with it.
    pub async fn send_leased(&self, response: Result<Response, WireError>, lease: Lease) -> bool {
        self.sender.send(Leased::new(response, lease)).await.is_ok()
    }

    /// Sends without waiting; returns false when the stream is full or the consumer has gone.
    pub fn try_send(&self, response: Result<Response, WireError>) -> bool {
        self.try_send_sized(response, 0)
    }

    /// Like [`ResponseSender::try_send`], for a response that took `wire_bytes` on the wire:
    /// the consumer's `on_taken` hook is told that size when it takes the response.
    pub fn try_send_sized(&self, response: Result<Response, WireError>, wire_bytes: usize) -> bool {
        self.sender
            .try_send(Leased {
                response,
                lease: Lease::default(),
                wire_bytes,
            })
            .is_ok()
    }

    /// Sends from a thread that is not async; returns false when the consumer has gone away.
    pub fn send_blocking(&self, response: Result<Response, WireError>) -> bool {
        self.sender
            .blocking_send(Leased::new(response, Lease::default()))
            .is_ok()
    }

    /// Whether the consumer has gone away.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Completes when the consumer has gone away.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }
}

impl Responses {
    /// A stream and its sender.
    pub fn channel() -> (ResponseSender, Responses) {
        Self::channel_with_capacity(STREAM_BUFFER_MESSAGES)
    }

    /// A stream whose producer may run at most `messages` responses ahead of its consumer
    /// (at least one).
    pub fn channel_with_capacity(messages: usize) -> (ResponseSender, Responses) {
        let (sender, receiver) = mpsc::channel(messages.max(1));
        (
            ResponseSender { sender },
            Responses {
                receiver,
                on_taken: None,
                on_drop: None,
            },
        )
    }

    /// A stream of exactly one response.
    pub fn single(response: Result<Response, WireError>) -> Responses {
        Self::single_leased(response, Lease::default())
    }

    /// A stream of exactly one response, with the lease that accounts for its bytes.
    pub fn single_leased(response: Result<Response, WireError>, lease: Lease) -> Responses {
        let (sender, receiver) = mpsc::channel(1);
        // A fresh channel with room for one cannot be full or closed.
        let _ = sender.try_send(Leased::new(response, lease));
        Responses {
            receiver,
            on_taken: None,
            on_drop: None,
        }
    }

    /// The next response, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<Response, WireError>> {
        self.next_leased().await.map(|(item, _lease)| item)
    }

    /// The next response and the lease accounting for its bytes: a transport keeps the lease
    /// until it has written the response out.
    pub async fn next_leased(&mut self) -> Option<(Result<Response, WireError>, Lease)> {
        let item = self.receiver.recv().await;
        self.taken(item.as_ref());
        item.map(|item| (item.response, item.lease))
    }

    /// Calls `hook` once, when this stream is dropped.
    pub fn on_drop(&mut self, hook: Box<dyn FnOnce() + Send>) {
        self.on_drop = Some(hook);
    }

    /// Calls `hook` each time a response is taken from this stream, with the response's size
    /// on the wire (0 when it did not come over one).
    pub fn on_taken(&mut self, hook: Box<dyn FnMut(usize) + Send>) {
        self.on_taken = Some(hook);
    }

    fn taken(&mut self, item: Option<&Leased>) {
        if let Some(item) = item
            && let Some(hook) = &mut self.on_taken
        {
            hook(item.wire_bytes);
        }
    }

    /// The next response if one is ready: `Ok(Some)` a response, `Ok(None)` the stream ended,
    /// `Err(())` nothing yet.
    #[allow(clippy::result_unit_err)]
    pub fn try_next(&mut self) -> Result<Option<Result<Response, WireError>>, ()> {
        self.try_next_leased()
            .map(|item| item.map(|(item, _lease)| item))
    }

    /// Like [`Responses::try_next`], with the response's lease.
    #[allow(clippy::result_unit_err, clippy::type_complexity)]
    pub fn try_next_leased(&mut self) -> Result<Option<(Result<Response, WireError>, Lease)>, ()> {
        match self.receiver.try_recv() {
            Ok(item) => {
                self.taken(Some(&item));
                Ok(Some((item.response, item.lease)))
            }
            Err(mpsc::error::TryRecvError::Disconnected) => Ok(None),
            Err(mpsc::error::TryRecvError::Empty) => Err(()),
        }
    }

    /// The next response from a thread that is not async.
    pub fn next_blocking(&mut self) -> Option<Result<Response, WireError>> {
        let item = self.receiver.blocking_recv();
        self.taken(item.as_ref());
        item.map(|item| item.response)
    }

    /// The first response (for calls that have one).
    pub async fn one(mut self) -> Result<Response, WireError> {
        self.next().await.unwrap_or_else(|| {
            Err(WireError::new(
                codes::BAD_MESSAGE,
                "the call ended without a response",
            ))
        })
    }
}

/// Something that answers requests: the in-process service, or a client of a remote one.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// Runs `request` and returns its responses.
    async fn call(&self, request: Request) -> Result<Responses, WireError>;
}
