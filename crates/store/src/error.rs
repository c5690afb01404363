//! Errors of the store layer (mirrors Go `store/model.vdl` and `store/constants.go`).

use syncbase_error_code::store as codes;

/// The result type of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the store layer. Each variant has a stable [`Error::code`] that the wire carries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key or range this transaction read was written by a transaction that committed after it
    /// began. Retry the whole transaction.
    #[error("concurrent transaction: data read by this transaction changed before it committed")]
    ConcurrentTransaction,
    /// The store was closed.
    #[error("the store is closed")]
    StoreClosed,
    /// The snapshot was aborted.
    #[error("the snapshot was aborted")]
    SnapshotAborted,
    /// The transaction has already been committed.
    #[error("the transaction was already committed")]
    TransactionCommitted,
    /// The transaction has already been aborted (explicitly, or by a failed commit).
    #[error("the transaction was aborted")]
    TransactionAborted,
    /// The stream was canceled.
    #[error("the stream was canceled")]
    StreamCanceled,
    /// The key lies in a range reserved by a lower layer (for example the watchable layer's log).
    #[error("key is in a reserved range: {0}")]
    ReservedKey(String),
    /// A key is longer than the storage engine allows.
    #[error("key of {bytes} bytes is longer than the engine's limit of {bytes_max}")]
    KeyTooLarge {
        /// The key's length.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// A value is larger than the storage engine allows.
    #[error("value of {bytes} bytes is larger than the engine's limit of {bytes_max}")]
    ValueTooLarge {
        /// The value's length.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// The store was used in a way its contract forbids (a bug in the caller).
    #[error("misuse of the store: {0}")]
    Misuse(String),
    /// A versioned operation was asked of a key outside every managed prefix.
    #[error("key is not under a managed prefix: {0}")]
    NotManaged(String),
    /// A scan range mixes managed (versioned) and unmanaged keys.
    #[error("scan range crosses a managed prefix boundary: {0}")]
    MixedScan(String),
    /// The data on disk was written by a newer format than this build understands.
    #[error(
        "store format {found} is newer than the newest this build supports ({supported}); upgrade syncbase"
    )]
    FormatTooNew {
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Stored data could not be decoded or violates an invariant of the layout.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A version was stored again with other bytes than it names (a version id names one value
    /// forever, which makes the re-delivery of a version harmless).
    #[error("version conflict: {0}")]
    VersionConflict(String),
    /// An operating-system I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// An error reported by the storage engine.
    #[error("storage engine error: {0}")]
    Engine(String),
}

impl Error {
    /// The stable code of this error, carried on the wire (`store.<name>`, listed in
    /// `syncbase_error_code::store`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::ConcurrentTransaction => codes::CONCURRENT_TRANSACTION,
            Error::StoreClosed => codes::CLOSED,
            Error::SnapshotAborted => codes::SNAPSHOT_ABORTED,
            Error::TransactionCommitted => codes::TRANSACTION_COMMITTED,
            Error::TransactionAborted => codes::TRANSACTION_ABORTED,
            Error::StreamCanceled => codes::STREAM_CANCELED,
            Error::ReservedKey(_) => codes::RESERVED_KEY,
            Error::MixedScan(_) => codes::MIXED_SCAN,
            Error::NotManaged(_) => codes::NOT_MANAGED,
            Error::Misuse(_) => codes::MISUSE,
            Error::KeyTooLarge { .. } => codes::KEY_TOO_LARGE,
            Error::ValueTooLarge { .. } => codes::VALUE_TOO_LARGE,
            Error::FormatTooNew { .. } => codes::FORMAT_TOO_NEW,
            Error::Corrupt(_) => codes::CORRUPT,
            Error::VersionConflict(_) => codes::VERSION_CONFLICT,
            Error::Io(_) => codes::IO,
            Error::Engine(_) => codes::ENGINE,
        }
    }

    /// An equal error (same variant, code and message), for the committers of a group that
    /// share one failed engine write. An I/O error keeps its kind and message (not its OS code).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::ConcurrentTransaction => Error::ConcurrentTransaction,
            Error::StoreClosed => Error::StoreClosed,
            Error::SnapshotAborted => Error::SnapshotAborted,
            Error::TransactionCommitted => Error::TransactionCommitted,
            Error::TransactionAborted => Error::TransactionAborted,
            Error::StreamCanceled => Error::StreamCanceled,
            Error::ReservedKey(what) => Error::ReservedKey(what.clone()),
            Error::KeyTooLarge { bytes, bytes_max } => Error::KeyTooLarge {
                bytes: *bytes,
                bytes_max: *bytes_max,
            },
            Error::ValueTooLarge { bytes, bytes_max } => Error::ValueTooLarge {
                bytes: *bytes,
                bytes_max: *bytes_max,
            },
            Error::Misuse(what) => Error::Misuse(what.clone()),
            Error::NotManaged(what) => Error::NotManaged(what.clone()),
            Error::MixedScan(what) => Error::MixedScan(what.clone()),
            Error::FormatTooNew { found, supported } => Error::FormatTooNew {
                found: *found,
                supported: *supported,
            },
            Error::Corrupt(what) => Error::Corrupt(what.clone()),
            Error::VersionConflict(what) => Error::VersionConflict(what.clone()),
            Error::Io(error) => Error::Io(std::io::Error::new(error.kind(), error.to_string())),
            Error::Engine(what) => Error::Engine(what.clone()),
        }
    }

    /// True when the store itself is in trouble and retrying the same call will not help: data
    /// on disk is corrupt or of a newer format, the operating system refused I/O, or the
    /// engine failed. False for errors the caller can act on: a concurrent transaction (retry),
    /// a closed store or finished transaction or stream, a key or value too large, a reserved
    /// or unmanaged key, misuse, a version stored again with other bytes.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::FormatTooNew { .. } | Error::Corrupt(_) | Error::Io(_) | Error::Engine(_)
        )
    }
}
