//! The error every call can return: a stable code plus a message for people.

use serde::{Deserialize, Serialize};

/// A failed call: `code` is stable and what programs match on; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("error[{code}]: {message}")]
pub struct WireError {
    /// A stable code such as `nosql.no_exist`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

impl WireError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// Whether this error has `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

/// The codes a call's caller matches on most: the data model's (`syncbase_error_code::nosql`),
/// the protocol's, and the store's concurrent-transaction code under its batch name (store codes
/// pass through unchanged). Every code is defined in `syncbase-error-code`.
pub mod codes {
    pub use syncbase_error_code::nosql::*;
    pub use syncbase_error_code::wire::BAD_MESSAGE;

    /// What a batch read changed before it committed; retry the batch.
    pub const CONCURRENT_BATCH: &str = syncbase_error_code::store::CONCURRENT_TRANSACTION;
}
