//! `syncbase-error-code`: every error code a caller of Syncbase can see, listed once (as TiKV's
//! `error_code` crate lists its own). A code is `LAYER.name`, stable across releases: programs
//! match on it, people read the message beside it. Each layer's codes live in a module named
//! after the layer; [`ALL`] lists them all with what each means.
//!
//! Codes are defined nowhere else: `cargo xtask ci` refuses a code literal in any other crate's
//! source (tests may spell codes out, to pin the contract), and each layer's error type maps
//! every variant to a constant here. This crate depends on nothing, so every crate may use it.

/// One error code and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The code, `LAYER.name`.
    pub code: &'static str,
    /// The layer that defines it (the part before the dot).
    pub layer: &'static str,
    /// What it means, for people.
    pub description: &'static str,
}

macro_rules! registry {
    ($(
        $(#[doc = $layer_doc:literal])*
        $layer:ident {
            $( $(#[doc = $doc:literal])+ $name:ident = $code:literal; )*
        }
    )*) => {
        $(
            $(#[doc = $layer_doc])*
            pub mod $layer {
                $( $(#[doc = $doc])+ pub const $name: &str = $code; )*
            }
        )*

        /// Every code, layer by layer.
        pub const ALL: &[ErrorCode] = &[
            $($(
                ErrorCode {
                    code: $code,
                    layer: stringify!($layer),
                    description: concat!($($doc),+),
                },
            )*)*
        ];
    };
}

registry! {
    /// The storage layer (`syncbase-store` and its engines).
    store {
        /// Data a transaction read changed before it committed; retry the whole transaction.
        CONCURRENT_TRANSACTION = "store.concurrent_transaction";
        /// The store was closed.
        CLOSED = "store.closed";
        /// The snapshot was aborted.
        SNAPSHOT_ABORTED = "store.snapshot_aborted";
        /// The transaction was already committed.
        TRANSACTION_COMMITTED = "store.transaction_committed";
        /// The transaction was aborted (explicitly, or by a failed commit).
        TRANSACTION_ABORTED = "store.transaction_aborted";
        /// The stream was canceled.
        STREAM_CANCELED = "store.stream_canceled";
        /// A key lies in a range a lower layer reserves.
        RESERVED_KEY = "store.reserved_key";
        /// A scan range mixes managed (versioned) and unmanaged keys.
        MIXED_SCAN = "store.mixed_scan";
        /// A versioned operation was asked of a key outside every managed prefix.
        NOT_MANAGED = "store.not_managed";
        /// The store was used in a way its contract forbids (a bug in the caller).
        MISUSE = "store.misuse";
        /// A key is longer than the storage engine allows.
        KEY_TOO_LARGE = "store.key_too_large";
        /// A value is larger than the storage engine allows.
        VALUE_TOO_LARGE = "store.value_too_large";
        /// The data on disk was written by a newer format than this build reads.
        FORMAT_TOO_NEW = "store.format_too_new";
        /// Stored data could not be decoded or breaks an invariant of its format.
        CORRUPT = "store.corrupt";
        /// A version id already names other bytes: a version names one value forever.
        VERSION_CONFLICT = "store.version_conflict";
        /// The operating system refused an I/O operation (the message says which and why).
        IO = "store.io";
        /// The storage engine failed (the message says how).
        ENGINE = "store.engine";
    }

    /// The sync engine (`syncbase-vsync`).
    sync {
        /// A change to the version DAG breaks its rules: a parent that is not there, an edge that
        /// would close a cycle, or a version added again with other parents.
        DAG_INVALID = "sync.dag_invalid";
        /// A peer's delta breaks the protocol: a record that differs from the one this device
        /// holds under the same generation, other bytes under a known version, or no value for a
        /// version that must become current. Nothing of the delta was applied.
        DELTA_INVALID = "sync.delta_invalid";
        /// A member of the syncgroup could not be reached (no answer within 10 s).
        PEER_UNREACHABLE = "sync.peer_unreachable";
        /// The handshake with a member was refused (by either side: an untrusted root, or a
        /// daemon that is not the member it claims to be).
        PEER_REFUSED = "sync.peer_refused";
    }

    /// Utilities shared above the store (`syncbase-util`).
    util {
        /// A stored value could not be decoded as the expected type.
        DECODE = "util.decode";
        /// A value could not be encoded.
        ENCODE = "util.encode";
        /// A key is not in the format `util::keys` writes.
        MALFORMED_KEY = "util.malformed_key";
        /// A remote timestamp is too far ahead of the local clock to be believed.
        CLOCK_DRIFT = "util.clock_drift";
    }

    /// The protocol's messages (`syncbase-wire`).
    wire {
        /// A message could not be encoded or decoded.
        BAD_MESSAGE = "wire.bad_message";
    }

    /// The data model (`syncbase-nosql`).
    nosql {
        /// The object does not exist, or the caller cannot see it (holds no tag on it or on
        /// one of its ancestors): for such a caller, missing and forbidden are the same.
        NO_EXIST = "nosql.no_exist";
        /// The object already exists.
        EXIST = "nosql.exist";
        /// The caller sees the object but lacks the tag this call needs.
        NO_ACCESS = "nosql.no_access";
        /// A name, key or value breaks the rules of `wire::limits` and `wire::validate_*`.
        INVALID_NAME = "nosql.invalid_name";
        /// A value is larger than `wire::limits::VALUE_BYTES_MAX`.
        VALUE_TOO_LARGE = "nosql.value_too_large";
        /// The permissions are malformed, or would leave the object without an admin.
        INVALID_PERMISSIONS = "nosql.invalid_permissions";
        /// The batch handle is unknown, finished or expired.
        UNKNOWN_BATCH = "nosql.unknown_batch";
        /// The caller already has as many open batches on this database as allowed.
        TOO_MANY_BATCHES = "nosql.too_many_batches";
        /// A write was attempted in a read-only batch.
        READ_ONLY_BATCH = "nosql.read_only_batch";
        /// The watch resume marker is malformed or from the future of the database.
        BAD_MARKER = "nosql.bad_marker";
        /// The watch resume marker is older than the watch log keeps: changes since it are no
        /// longer all known, so the watch must start again with the initial state.
        MARKER_EXPIRED = "nosql.marker_expired";
        /// The service failed internally; the message says more.
        INTERNAL = "nosql.internal";
    }

    /// Identities and the transport (`syncbase-net`).
    net {
        /// An identity could not be created, loaded or stored.
        IDENTITY = "net.identity";
        /// The peer could not be authenticated (bad signature, key mismatch).
        AUTHENTICATION = "net.authentication";
        /// The peer's chain ends in a root this side does not trust.
        UNTRUSTED_ROOT = "net.untrusted_root";
        /// The peer authenticated this side and refused the connection; the message says why.
        REFUSED = "net.refused";
        /// The peer broke the protocol (malformed, oversize or unexpected message).
        PROTOCOL = "net.protocol";
        /// The connection failed.
        IO = "net.io";
        /// The connection closed before the call ended.
        CLOSED = "net.closed";
    }

    /// The client library (`syncbase-client`).
    client {
        /// Escaped text (`sb`'s plain output) holds a malformed escape.
        BAD_ESCAPE = "client.bad_escape";
    }

    /// Failures the `sb` command finds itself.
    sb {
        /// A file named on the command line cannot be read or written.
        LOCAL_FILE = "sb.local_file";
        /// `identity new` or `identity bless` would overwrite an identity.
        IDENTITY_EXISTS = "sb.identity_exists";
        /// Standard output cannot be written.
        OUTPUT = "sb.output";
        /// `sb` cannot start (no async runtime).
        START = "sb.start";
        /// A line given to `sb import` is not a row in the format `sb export` prints.
        BAD_INPUT = "sb.bad_input";
    }
}

/// The entry for `code`, if it is registered.
pub fn lookup(code: &str) -> Option<&'static ErrorCode> {
    ALL.iter().find(|entry| entry.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_well_formed_and_named_after_their_layer() {
        let mut seen = std::collections::BTreeSet::new();
        for entry in ALL {
            assert!(seen.insert(entry.code), "{} is listed twice", entry.code);
            let (layer, name) = entry
                .code
                .split_once('.')
                .unwrap_or_else(|| panic!("{} has no layer", entry.code));
            assert_eq!(layer, entry.layer, "{} is in the wrong module", entry.code);
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|byte| byte.is_ascii_lowercase() || byte == b'_'),
                "{} is not LAYER.lower_case",
                entry.code
            );
            assert!(
                entry.description.trim_end().ends_with('.'),
                "{} needs a sentence",
                entry.code
            );
        }
        assert_eq!(lookup(nosql::NO_EXIST).map(|e| e.layer), Some("nosql"));
        assert!(lookup("nosql.nonsense").is_none());
    }
}
