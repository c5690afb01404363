//! Errors of the util layer.

use syncbase_error_code::util as codes;

/// The result type of util operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the util layer. Each variant has a stable [`Error::code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the store below.
    #[error(transparent)]
    Store(#[from] syncbase_store::Error),
    /// A stored value could not be decoded as the expected type.
    #[error("cannot decode the value of {key}: {message}")]
    Decode {
        /// The key, printed for people.
        key: String,
        /// What the decoder said.
        message: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode a value: {0}")]
    Encode(String),
    /// A key is not in the format [`crate::keys`] writes.
    #[error("malformed key: {0}")]
    MalformedKey(String),
    /// A remote timestamp is too far ahead of the local clock to be believed.
    #[error(
        "remote timestamp {remote_ns} is more than {drift_max_ns} ns ahead of local time {local_ns}"
    )]
    ClockDrift {
        /// The timestamp observed.
        remote_ns: u64,
        /// The local physical time.
        local_ns: u64,
        /// The largest accepted lead.
        drift_max_ns: u64,
    },
}

impl Error {
    /// The stable code of this error, carried on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Store(error) => error.code(),
            Error::Decode { .. } => codes::DECODE,
            Error::Encode(_) => codes::ENCODE,
            Error::MalformedKey(_) => codes::MALFORMED_KEY,
            Error::ClockDrift { .. } => codes::CLOCK_DRIFT,
        }
    }
}
