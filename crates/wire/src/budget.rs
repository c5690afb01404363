//! Memory budgets for response bytes. A producer of responses (a scan reading rows, say) takes a
//! [`Lease`] of bytes from a [`ByteBudget`] before it reads, and the lease travels with the
//! response until the transport has written it out; dropping it gives the bytes back. So a slow
//! reader makes its producer wait, and the heap holds no more than the budget.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A pool of bytes that leases are taken from. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    bytes_total: usize,
}

/// Bytes held from one or more budgets; they return when the lease is dropped.
#[derive(Debug, Default)]
pub struct Lease {
    permits: Vec<OwnedSemaphorePermit>,
}

/// The largest lease one acquisition can take (the semaphore counts in `u32`).
const LEASE_BYTES_MAX: usize = u32::MAX as usize;

impl ByteBudget {
    /// A budget of `bytes_total` bytes.
    pub fn new(bytes_total: usize) -> Self {
        let bytes_total = bytes_total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(bytes_total)),
            bytes_total,
        }
    }

    /// The size of the pool.
    pub fn bytes_total(&self) -> usize {
        self.bytes_total
    }

    /// Bytes not leased at the moment.
    pub fn bytes_available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits until `bytes` (at most the pool's size) are free and takes them.
    pub async fn lease(&self, bytes: usize) -> Lease {
        let bytes = bytes.min(self.bytes_total).min(LEASE_BYTES_MAX);
        // The semaphore is never closed, so acquiring only waits.
        match self.permits.clone().acquire_many_owned(bytes as u32).await {
            Ok(permit) => Lease {
                permits: vec![permit],
            },
            Err(_) => Lease::default(),
        }
    }
}

/// Leases `bytes` from every budget in `budgets`, in order (a connection's own budget first, so
/// a connection that is over its share does not hold daemon-wide bytes while it waits).
pub async fn lease_all(budgets: &[ByteBudget], bytes: usize) -> Lease {
    let mut lease = Lease::default();
    for budget in budgets {
        lease.permits.extend(budget.lease(bytes).await.permits);
    }
    lease
}

impl Lease {
    /// Gives back what this lease holds beyond `bytes` (in every budget it holds).
    pub fn shrink_to(&mut self, bytes: usize) {
        for permit in &mut self.permits {
            let held = permit.num_permits();
            if held > bytes {
                drop(permit.split(held - bytes));
            }
        }
    }

    /// Bytes held (in the first budget; every budget holds the same).
    pub fn bytes(&self) -> usize {
        self.permits
            .first()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_lease_holds_bytes_until_dropped_and_shrinks() {
        let connection = ByteBudget::new(100);
        let daemon = ByteBudget::new(150);
        let budgets = [connection.clone(), daemon.clone()];
        let mut lease = lease_all(&budgets, 80).await;
        assert_eq!(
            (connection.bytes_available(), daemon.bytes_available()),
            (20, 70)
        );
        lease.shrink_to(30);
        assert_eq!(lease.bytes(), 30);
        assert_eq!(
            (connection.bytes_available(), daemon.bytes_available()),
            (70, 120)
        );
        // A lease larger than the pool takes the whole pool instead of waiting forever.
        drop(lease);
        let whole = connection.lease(1_000).await;
        assert_eq!(whole.bytes(), 100);
        assert_eq!(connection.bytes_available(), 0);
        let waiting = connection.lease(1);
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        drop(whole);
        assert_eq!(waiting.await.bytes(), 1);
    }

    /// Polls a future once: its output, or `None` if it is not ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
