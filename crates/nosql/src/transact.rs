//! Retried transactions: a body runs in a fresh transaction that is then committed, from scratch
//! again while the commit meets a concurrent one. The service store and every database use it.

use std::borrow::Borrow;

use syncbase_store::{Store, TRANSACTION_ATTEMPTS_DEFAULT, Transaction};

use crate::error::Result;

/// Runs `body` in a transaction of `store` and commits it, retrying while the commit meets a
/// concurrent one (up to [`TRANSACTION_ATTEMPTS_DEFAULT`] attempts).
pub(crate) fn transact<S: Store + ?Sized, T>(
    store: &S,
    mut body: impl FnMut(&dyn Transaction) -> Result<T>,
) -> Result<T> {
    transact_with(
        || store.transaction(),
        |transaction: &(dyn Transaction + 'static)| body(transaction),
    )
}

/// Runs `body` in a transaction that `begin` starts (of any type, such as a watchable one whose
/// own methods the body needs) and commits it, retrying as [`transact`] does. An error from the
/// body aborts the transaction and is returned as it is.
pub(crate) fn transact_with<B, X, T>(
    mut begin: impl FnMut() -> syncbase_store::Result<B>,
    mut body: impl FnMut(&X) -> Result<T>,
) -> Result<T>
where
    B: Borrow<X>,
    X: Transaction + ?Sized,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = begin()?;
        let transaction: &X = started.borrow();
        let value = match body(transaction) {
            Ok(value) => value,
            Err(error) => {
                // The body's error is what happened; a failed abort adds nothing to it.
                let _ = transaction.abort();
                return Err(error);
            }
        };
        match transaction.commit() {
            Ok(()) => return Ok(value),
            Err(syncbase_store::Error::ConcurrentTransaction)
                if attempt < TRANSACTION_ATTEMPTS_DEFAULT => {}
            Err(error) => return Err(error.into()),
        }
    }
}
