//! Every size limit of the data model, in one place.

/// The longest app, database or collection name, and the longest row key, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;

/// The largest row value, in bytes (larger values will be blobs).
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The most principal patterns in one access list.
pub const PATTERNS_PER_LIST_MAX: usize = 256;

/// Open batches one caller may hold on one database.
pub const BATCHES_PER_CALLER_MAX: usize = 64;

/// Rows returned per scan response message; a scan streams several.
pub const SCAN_ROWS_PER_MESSAGE_MAX: usize = 1024;

/// A streamed message (scan rows, watch changes) is closed once its keys and values reach this
/// many bytes, so no message nears the transport's 17 MiB limit (one value is at most 16 MiB).
pub const STREAM_MESSAGE_BYTES_TARGET: usize = 1024 * 1024;
