//! Why `sb` stops: a refusal by the service, bad usage, no connection, or a local failure,
//! each with its exit code and its message on stderr.

use std::process::ExitCode;

use syncbase_net::NetError;
use syncbase_wire::{WireError, codes};

/// Stable codes of failures `sb` finds itself (the service's codes pass through).
pub(crate) use syncbase_error_code::sb as local_codes;

/// Why `sb` stopped, and its exit code.
pub(crate) enum Failure {
    /// The service refused (exit 1).
    Refused(WireError),
    /// Bad usage (exit 2).
    Usage(String),
    /// Cannot connect or authenticate (exit 3).
    Connect(String),
    /// A local failure, with a stable code (exit 1).
    Local(WireError),
}

impl Failure {
    pub(crate) fn local(code: &str, message: impl Into<String>) -> Self {
        Failure::Local(WireError::new(code, message))
    }

    /// A local failure from the identity layer (a bad name, a bad file, no randomness).
    pub(crate) fn identity(error: NetError) -> Self {
        let message = match &error {
            NetError::Identity(message) => message.clone(),
            other => other.to_string(),
        };
        Failure::local(error.code(), message)
    }

    /// A file named on the command line cannot be read or written.
    pub(crate) fn file(verb: &str, path: &std::path::Path, error: std::io::Error) -> Self {
        Failure::local(
            local_codes::LOCAL_FILE,
            format!("cannot {verb} {}: {error}", path.display()),
        )
    }

    pub(crate) fn unexpected_answer() -> Self {
        Failure::local(codes::BAD_MESSAGE, "unexpected answer")
    }

    pub(crate) fn report(&self) -> ExitCode {
        match self {
            Failure::Refused(error) | Failure::Local(error) => {
                eprintln!("error[{}]: {}", error.code, error.message);
                ExitCode::from(1)
            }
            Failure::Usage(message) => {
                eprintln!("sb: {message}");
                ExitCode::from(2)
            }
            Failure::Connect(message) => {
                eprintln!("sb: {message}");
                ExitCode::from(3)
            }
        }
    }
}

impl From<WireError> for Failure {
    fn from(error: WireError) -> Self {
        if error.code.starts_with("net.") {
            Failure::Connect(error.to_string())
        } else {
            Failure::Refused(error)
        }
    }
}

pub(crate) type Outcome = Result<(), Failure>;
