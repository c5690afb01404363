//! Errors of the store layer (mirrors Go `store/model.vdl` and `store/constants.go`).

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
    /// An operating-system I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// An error reported by the storage engine.
    #[error("storage engine error: {0}")]
    Engine(String),
}

impl Error {
    /// The stable code of this error, carried on the wire (`store.<name>`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::ConcurrentTransaction => "store.concurrent_transaction",
            Error::StoreClosed => "store.closed",
            Error::SnapshotAborted => "store.snapshot_aborted",
            Error::TransactionCommitted => "store.transaction_committed",
            Error::TransactionAborted => "store.transaction_aborted",
            Error::StreamCanceled => "store.stream_canceled",
            Error::ReservedKey(_) => "store.reserved_key",
            Error::MixedScan(_) => "store.mixed_scan",
            Error::NotManaged(_) => "store.not_managed",
            Error::Misuse(_) => "store.misuse",
            Error::KeyTooLarge { .. } => "store.key_too_large",
            Error::ValueTooLarge { .. } => "store.value_too_large",
            Error::FormatTooNew { .. } => "store.format_too_new",
            Error::Corrupt(_) => "store.corrupt",
            Error::Io(_) => "store.io",
            Error::Engine(_) => "store.engine",
        }
    }

    /// Whether the caller can act on this error (retry, fix its input) rather than it meaning
    /// the store itself is unusable.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::FormatTooNew { .. } | Error::Corrupt(_) | Error::Io(_) | Error::Engine(_)
        )
    }
}
