//! The watchable layer's reserved keys and records, format 2 (format 1 is read only by
//! [`super::migrate`]). Every reserved key starts with [`RESERVED_BYTE`] and a tag byte:
//!
//! | key                          | value                                          |
//! |------------------------------|------------------------------------------------|
//! | `ff 'c' KEY`                 | current value: `VERSION(8) BYTES`              |
//! | `ff 't' KEY`                 | current tombstone: `VERSION(8)`                |
//! | `ff 'h' KEY VERSION(8)`      | a version that is not current: `REF_SEQ(8) KIND(1) BYTES` |
//! | `ff 'l' SEQ(8)`              | a log entry (postcard [`LogEntry`](super::LogEntry)) |
//! | `ff 'p' NAME`                | a pin: `SEQ(8)`, the first entry its holder still needs |
//! | `ff 'm' 's'`                 | the log start: `SEQ(8)`                        |
//! | `ff 'm' 'f'`                 | the format version: `u32` big endian           |
//!
//! Integers are big endian, so keys sort by them. A live key's value sits inline beside its
//! version (a get is one read; a scan reads one range). A version that stops being current moves
//! under `'h'`, with `REF_SEQ`: the log entry that last referred to it (the one that replaced
//! it, or the one that stored it without making it current). It is removed when that entry leaves
//! the retention window, unless a holder still needs it.

use crate::error::{Error, Result};
use crate::model::prefix_limit;

use super::Version;

/// The first byte of every key this layer reserves.
pub const RESERVED_BYTE: u8 = 0xff;

pub(super) const CURRENT_TAG: u8 = b'c';
pub(super) const TOMBSTONE_TAG: u8 = b't';
pub(super) const HISTORY_TAG: u8 = b'h';
pub(super) const LOG_TAG: u8 = b'l';
pub(super) const PIN_TAG: u8 = b'p';
pub(super) const META_TAG: u8 = b'm';

const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

/// What a version is: a value, or the deletion of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The key held these bytes.
    Value(Vec<u8>),
    /// The key was deleted.
    Tombstone,
}

/// The current version of a managed key: a value's, or a tombstone's once it was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The version.
    pub version: Version,
    /// Whether it is a tombstone (the key is deleted).
    pub deleted: bool,
}

pub(super) fn tagged(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    out.extend_from_slice(&[RESERVED_BYTE, tag]);
    out.extend_from_slice(key);
    out
}

pub(super) fn current_key(key: &[u8]) -> Vec<u8> {
    tagged(CURRENT_TAG, key)
}

pub(super) fn tombstone_key(key: &[u8]) -> Vec<u8> {
    tagged(TOMBSTONE_TAG, key)
}

pub(super) fn history_key(key: &[u8], version: Version) -> Vec<u8> {
    let mut out = tagged(HISTORY_TAG, key);
    out.extend_from_slice(&version.0.to_be_bytes());
    out
}

/// The range of every history record of every key starting with `prefix`.
pub(super) fn history_prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = tagged(HISTORY_TAG, prefix);
    let limit = prefix_limit(&start);
    (start, limit)
}

pub(super) fn log_key(seq: u64) -> Vec<u8> {
    tagged(LOG_TAG, &seq.to_be_bytes())
}

pub(super) fn log_limit() -> Vec<u8> {
    vec![RESERVED_BYTE, LOG_TAG + 1]
}

pub(super) fn pin_key(name: &str) -> Vec<u8> {
    tagged(PIN_TAG, name.as_bytes())
}

pub(super) fn meta_key(tag: u8) -> Vec<u8> {
    vec![RESERVED_BYTE, META_TAG, tag]
}

pub(super) fn decode_u64(what: &dyn Fn() -> String, bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|head| head.try_into().ok())
        .ok_or_else(|| Error::Corrupt(format!("{} is shorter than 8 bytes", what())))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(super) fn encode_current(version: Version, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 8);
    out.extend_from_slice(&version.0.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a current-value record into its version and value (in place: no copy of the value).
pub(super) fn decode_current(key: &[u8], mut record: Vec<u8>) -> Result<(Version, Vec<u8>)> {
    let version = decode_u64(&|| format!("current record of key {key:?}"), &record)?;
    record.drain(..8);
    Ok((Version(version), record))
}

pub(super) fn encode_history(ref_seq: u64, stored: &Stored) -> Vec<u8> {
    let bytes: &[u8] = match stored {
        Stored::Value(bytes) => bytes,
        Stored::Tombstone => &[],
    };
    let mut out = Vec::with_capacity(bytes.len() + 9);
    out.extend_from_slice(&ref_seq.to_be_bytes());
    out.push(match stored {
        Stored::Value(_) => KIND_VALUE,
        Stored::Tombstone => KIND_TOMBSTONE,
    });
    out.extend_from_slice(bytes);
    out
}

/// Splits a history record into the sequence number of the entry that last referred to it and
/// what it stores.
pub(super) fn decode_history(key: &[u8], mut record: Vec<u8>) -> Result<(u64, Stored)> {
    let ref_seq = decode_u64(&|| format!("history record of key {key:?}"), &record)?;
    let kind = record.get(8).copied();
    record.drain(..9.min(record.len()));
    match kind {
        Some(KIND_VALUE) => Ok((ref_seq, Stored::Value(record))),
        Some(KIND_TOMBSTONE) => Ok((ref_seq, Stored::Tombstone)),
        other => Err(Error::Corrupt(format!(
            "history record of key {key:?} has kind {other:?}"
        ))),
    }
}
