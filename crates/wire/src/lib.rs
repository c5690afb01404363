//! `syncbase-wire`: the protocol types every side of Syncbase shares (mirrors Go's VDL
//! definitions in `v23:services/syncbase/service.vdl` and `types.vdl`): the [`Request`] and
//! [`Response`] of every call, [`Permissions`] and their patterns, name validation and the
//! [`limits`], and [`WireError`], which carries a stable code.
//!
//! Everything here is plain data encoded with postcard. It depends on no other `syncbase-*`
//! crate, so `nosql`, `server`, and the client can all use it without a cycle.

pub mod budget;
mod call;
mod error;
mod handler;
pub mod limits;
mod names;
mod perms;

pub use budget::{ByteBudget, Lease};
pub use call::{
    BatchHandle, BatchOptions, Change, ChangeKind, CollectionPath, DatabasePath,
    DatabaseSyncStatus, JoinProgress, LogPin, LogStatus, MemberStatus, ObjectPath, PeerRequest,
    PullReport, Request, Response, RowRange, StatusInfo, SyncStatus, SyncgroupSpec,
    SyncgroupStatus, WatchStart,
};
pub use error::{WireError, codes};
pub use handler::{Handler, ResponseSender, Responses, STREAM_BUFFER_MESSAGES};
pub use names::{
    new_name_problem, validate_existing_name, validate_name, validate_row_key, validate_value,
};
pub use perms::{AccessList, Permissions, Tag, pattern_matches};

/// Where `syncbased` listens and `sb` connects by default: a fixed loopback port.
pub const DEFAULT_SERVICE_ADDRESS: &str = "127.0.0.1:7433";

/// The software version `sb status` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Encodes a message with postcard.
pub fn encode<T: serde::Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_stdvec(message)
        .map_err(|error| WireError::new(codes::BAD_MESSAGE, format!("cannot encode: {error}")))
}

/// Decodes a message with postcard; malformed bytes are an error, never a panic.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(bytes)
        .map_err(|error| WireError::new(codes::BAD_MESSAGE, format!("cannot decode: {error}")))
}
