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

/// The codes of the data-model layer (store codes such as `store.concurrent_transaction` pass
/// through unchanged).
pub mod codes {
    /// The object does not exist, or the caller cannot see it (holds no tag on it or on one of
    /// its ancestors). For such a caller missing and forbidden are deliberately the same.
    pub const NO_EXIST: &str = "nosql.no_exist";
    /// The object already exists.
    pub const EXIST: &str = "nosql.exist";
    /// The caller sees the object (some tag on it and on every ancestor) but lacks the tag
    /// this call needs.
    pub const NO_ACCESS: &str = "nosql.no_access";
    /// A name, key or value breaks the rules of `wire::limits` and `wire::validate_*`.
    pub const INVALID_NAME: &str = "nosql.invalid_name";
    /// A value is larger than `limits::VALUE_BYTES_MAX`.
    pub const VALUE_TOO_LARGE: &str = "nosql.value_too_large";
    /// The permissions are malformed, or would leave the object without an admin (no Admin
    /// list, or one that allows nobody).
    pub const INVALID_PERMISSIONS: &str = "nosql.invalid_permissions";
    /// The batch handle is unknown, finished or expired.
    pub const UNKNOWN_BATCH: &str = "nosql.unknown_batch";
    /// The caller already has as many open batches on this database as allowed.
    pub const TOO_MANY_BATCHES: &str = "nosql.too_many_batches";
    /// A write was attempted in a read-only batch.
    pub const READ_ONLY_BATCH: &str = "nosql.read_only_batch";
    /// What a batch read changed before it committed; retry the batch.
    pub const CONCURRENT_BATCH: &str = "store.concurrent_transaction";
    /// The watch resume marker is malformed or older than the kept log.
    pub const BAD_MARKER: &str = "nosql.bad_marker";
    /// A message could not be encoded or decoded.
    pub const BAD_MESSAGE: &str = "wire.bad_message";
    /// The service failed internally (a store error); the message says more.
    pub const INTERNAL: &str = "nosql.internal";
}
