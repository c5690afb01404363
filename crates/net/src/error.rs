//! Errors of identities and the transport.

use syncbase_error_code::net as codes;
use syncbase_wire::WireError;

/// The result type of this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// An error of the identity or transport layer. Each has a stable [`NetError::code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// An identity could not be created, loaded or stored.
    #[error("identity: {0}")]
    Identity(String),
    /// The peer could not be authenticated (untrusted root, bad signature, key mismatch).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The peer's chain ends in a root this side does not trust.
    #[error("{chain:?} is rooted in {root:?} (key {key}), which is not trusted{hint}")]
    UntrustedRoot {
        /// The peer's full name.
        chain: String,
        /// The name of its root.
        root: String,
        /// The root's key, in hex.
        key: String,
        /// What fixes it, from this side (may be empty).
        hint: String,
    },
    /// The peer authenticated us and refused the connection; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The peer broke the protocol (malformed, oversize or unexpected message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The remote side answered a call with an error.
    #[error(transparent)]
    Remote(#[from] WireError),
}

impl NetError {
    /// The stable code of this error.
    pub fn code(&self) -> &str {
        match self {
            NetError::Identity(_) => codes::IDENTITY,
            NetError::Authentication(_) => codes::AUTHENTICATION,
            NetError::UntrustedRoot { .. } => codes::UNTRUSTED_ROOT,
            NetError::Refused(_) => codes::REFUSED,
            NetError::Protocol(_) => codes::PROTOCOL,
            NetError::Io(_) => codes::IO,
            NetError::Remote(error) => &error.code,
        }
    }
}
