//! Errors of the data model: a wire error with a stable code, or an error from a layer below
//! (whose code passes through).

use syncbase_wire::{WireError, codes};

/// The result type of data-model calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the data model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A refusal with a wire code (no such object, invalid name, unknown batch, ...).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An error from the store (concurrent batch, closed, corrupt, ...).
    #[error(transparent)]
    Store(#[from] syncbase_store::Error),
    /// An error from util (decoding a record, ...).
    #[error(transparent)]
    Util(#[from] syncbase_util::Error),
    /// An error from the sync engine (a syncgroup record, the DAG, a peer's delta).
    #[error(transparent)]
    Sync(#[from] syncbase_vsync::Error),
}

impl Error {
    /// The stable code.
    pub fn code(&self) -> &str {
        match self {
            Error::Wire(error) => &error.code,
            Error::Store(error) => error.code(),
            Error::Util(error) => error.code(),
            Error::Sync(error) => error.code(),
        }
    }

    /// The error as it travels on the wire.
    pub fn to_wire(&self) -> WireError {
        match self {
            Error::Wire(error) => error.clone(),
            other => WireError::new(other.code(), other.to_string()),
        }
    }

    pub(crate) fn no_exist(what: impl std::fmt::Display) -> Self {
        Error::Wire(WireError::new(
            codes::NO_EXIST,
            format!("{what} does not exist or access is denied"),
        ))
    }

    pub(crate) fn no_access(what: impl std::fmt::Display, tag: syncbase_wire::Tag) -> Self {
        Error::Wire(WireError::new(
            codes::NO_ACCESS,
            format!(
                "access to {what} is denied: this needs {} on it",
                tag.name()
            ),
        ))
    }

    /// Whether this is the refusal a caller gets for a missing object.
    pub(crate) fn is_no_exist(&self) -> bool {
        self.code() == codes::NO_EXIST
    }

    pub(crate) fn exist(what: impl std::fmt::Display) -> Self {
        Error::Wire(WireError::new(
            codes::EXIST,
            format!("{what} already exists"),
        ))
    }

    pub(crate) fn wire(code: &str, message: impl Into<String>) -> Self {
        Error::Wire(WireError::new(code, message))
    }
}

/// An exists call's answer from the lookup `found`: false only where other calls would say the
/// object does not exist (missing, or hidden from the caller); any other error is returned.
pub(crate) fn exists(found: Result<()>) -> Result<bool> {
    match found {
        Ok(()) => Ok(true),
        Err(error) if error.is_no_exist() => Ok(false),
        Err(error) => Err(error),
    }
}
