//! Errors of the sync engine.

use syncbase_error_code::sync as codes;

/// The result type of the sync engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the sync engine. Each variant has a stable [`Error::code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the store below.
    #[error(transparent)]
    Store(#[from] syncbase_store::Error),
    /// An error from the util layer (a record that does not decode).
    #[error(transparent)]
    Util(#[from] syncbase_util::Error),
    /// A change to the version DAG breaks its rules (the message says which).
    #[error("invalid change to the version DAG of {object}: {reason}")]
    DagInvalid {
        /// The object, printed for people.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The data model refused or failed a call sync made on its behalf (its code passes
    /// through).
    #[error("{message}")]
    Model {
        /// The data model's code.
        code: String,
        /// What happened.
        message: String,
    },
    /// A peer's delta breaks the protocol (the message says how); nothing of it was applied.
    #[error("invalid delta from a peer: {0}")]
    DeltaInvalid(String),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> &str {
        match self {
            Error::Store(error) => error.code(),
            Error::Util(error) => error.code(),
            Error::DagInvalid { .. } => codes::DAG_INVALID,
            Error::DeltaInvalid(_) => codes::DELTA_INVALID,
            Error::Model { code, .. } => code,
        }
    }
}
