//! Wake-ups for readers of the watch log (mirrors the broadcast in Go
//! `store/watchable/watcher.go`). Usable from async code through a plain [`Future`] and from
//! threads through a blocking wait; it depends on no async runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Tells waiters when the watch log grows past a sequence number.
#[derive(Clone, Default)]
pub struct LogNotifier {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    latest_seq: u64,
    closed: bool,
    wakers: Vec<Waker>,
}

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// The log now holds entries up to this sequence number.
    Advanced(u64),
    /// The store was closed: no more entries will come.
    Closed,
}

impl LogNotifier {
    /// A notifier whose log currently ends at `latest_seq`.
    pub fn new(latest_seq: u64) -> Self {
        let notifier = Self::default();
        notifier.inner.state.lock().latest_seq = latest_seq;
        notifier
    }

    /// The sequence number of the newest committed log entry (0 when none).
    pub fn latest_seq(&self) -> u64 {
        self.inner.state.lock().latest_seq
    }

    /// Records that entries up to `seq` are committed and wakes every waiter.
    pub fn publish(&self, seq: u64) {
        let wakers = {
            let mut state = self.inner.state.lock();
            if seq <= state.latest_seq {
                return;
            }
            state.latest_seq = seq;
            std::mem::take(&mut state.wakers)
        };
        self.inner.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Marks the log closed and wakes every waiter.
    pub fn close(&self) {
        let wakers = {
            let mut state = self.inner.state.lock();
            state.closed = true;
            std::mem::take(&mut state.wakers)
        };
        self.inner.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A future that completes once the log holds an entry after `seq`, or the store closes.
    pub fn wait_after(&self, seq: u64) -> WaitAfter {
        WaitAfter {
            notifier: self.clone(),
            seq,
        }
    }

    /// Blocks the thread until the log holds an entry after `seq`, the store closes, or
    /// `timeout` passes (then `None`).
    pub fn wait_after_blocking(&self, seq: u64, timeout: Duration) -> Option<LogEvent> {
        // A deadline for a blocking wait, not protocol logic: the real clock is right here.
        #[allow(clippy::disallowed_methods)]
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.inner.state.lock();
        loop {
            if let Some(event) = state.event_after(seq) {
                return Some(event);
            }
            if self
                .inner
                .changed
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return state.event_after(seq);
            }
        }
    }
}

impl State {
    fn event_after(&self, seq: u64) -> Option<LogEvent> {
        if self.latest_seq > seq {
            Some(LogEvent::Advanced(self.latest_seq))
        } else if self.closed {
            Some(LogEvent::Closed)
        } else {
            None
        }
    }
}

/// The future returned by [`LogNotifier::wait_after`].
pub struct WaitAfter {
    notifier: LogNotifier,
    seq: u64,
}

impl Future for WaitAfter {
    type Output = LogEvent;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<LogEvent> {
        let mut state = self.notifier.inner.state.lock();
        if let Some(event) = state.event_after(self.seq) {
            return Poll::Ready(event);
        }
        if !state.wakers.iter().any(|w| w.will_wake(context.waker())) {
            state.wakers.push(context.waker().clone());
        }
        Poll::Pending
    }
}
