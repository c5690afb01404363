//! Migration of a format-1 store to format 2, run by [`Watchable::open`](super::Watchable::open).
//!
//! Format 1 kept `ff 'v' KEY` → the current version, `ff 'r' KEY VERSION` → every value ever
//! stored, and log entries without parents, tombstones or authors. The migration, in commits of
//! at most [`KEYS_PER_COMMIT`] keys so a large store never makes one huge transaction:
//! 1. ends the old log: its start moves past its last entry (a watch resumed from an older
//!    marker gets "marker expired" and starts again from the current state, which is all that
//!    survives), and its entries are removed;
//! 2. moves each current value inline beside its version (`ff 'c'`);
//! 3. removes the old values that were not current (format 1 kept them forever);
//! 4. writes the new format stamp, last, so an interrupted migration resumes on the next open.
//!
//! Deleted keys had no tombstone in format 1, so they have none after it: they are absent.

use super::format::{LOG_TAG, RESERVED_BYTE, current_key, encode_current, meta_key};
use super::{Version, WATCHABLE_FORMAT_VERSION, last_log_seq, read_log_start};
use crate::TRANSACTION_ATTEMPTS_DEFAULT;
use crate::error::{Error, Result};
use crate::model::{Store, Transaction, run_in_transaction};

/// The most keys one migration commit rewrites.
pub(super) const KEYS_PER_COMMIT: usize = 4_096;

const V1_POINTER_TAG: u8 = b'v';
const V1_VALUE_TAG: u8 = b'r';

/// Migrates `store`, stamped with format `found` (only 1 exists below 2).
pub(super) fn from_format_1<S: Store + ?Sized>(store: &S, found: u32) -> Result<()> {
    if found != 1 {
        return Err(Error::Corrupt(format!(
            "watchable format {found} is unknown (this build reads 1 and {WATCHABLE_FORMAT_VERSION})"
        )));
    }
    let last_seq = last_log_seq(store)?.max(read_log_start(store)?.saturating_sub(1));
    store.put(&meta_key(b's'), &(last_seq + 1).to_be_bytes())?;
    delete_range(
        store,
        &[RESERVED_BYTE, LOG_TAG],
        &[RESERVED_BYTE, LOG_TAG + 1],
    )?;
    loop {
        let moved = run_in_transaction(store, TRANSACTION_ATTEMPTS_DEFAULT, |transaction| {
            move_current_values(transaction)
        })?;
        if moved == 0 {
            break;
        }
    }
    delete_range(
        store,
        &[RESERVED_BYTE, V1_VALUE_TAG],
        &[RESERVED_BYTE, V1_VALUE_TAG + 1],
    )?;
    store.put(&meta_key(b'f'), &WATCHABLE_FORMAT_VERSION.to_be_bytes())
}

/// Moves up to [`KEYS_PER_COMMIT`] current values from format 1 pointers to inline records.
fn move_current_values(transaction: &dyn Transaction) -> Result<usize> {
    let pointers: Vec<(Vec<u8>, Vec<u8>)> = transaction
        .scan(
            &[RESERVED_BYTE, V1_POINTER_TAG],
            &[RESERVED_BYTE, V1_POINTER_TAG + 1],
        )?
        .take(KEYS_PER_COMMIT)
        .collect::<Result<_>>()?;
    for (pointer, version_bytes) in &pointers {
        let key = &pointer[2..];
        let version: [u8; 8] = version_bytes.as_slice().try_into().map_err(|_| {
            Error::Corrupt(format!(
                "format 1 version pointer of key {key:?} is not 8 bytes"
            ))
        })?;
        let mut value_key = vec![RESERVED_BYTE, V1_VALUE_TAG];
        value_key.extend_from_slice(key);
        value_key.extend_from_slice(&version);
        let value = transaction.get(&value_key)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "format 1 key {key:?} points at a version that has no value"
            ))
        })?;
        let version = Version(u64::from_be_bytes(version));
        transaction.put(&current_key(key), &encode_current(version, &value))?;
        transaction.delete(pointer)?;
        transaction.delete(&value_key)?;
    }
    Ok(pointers.len())
}

/// Deletes every key in `[start, limit)`, [`KEYS_PER_COMMIT`] per commit.
fn delete_range<S: Store + ?Sized>(store: &S, start: &[u8], limit: &[u8]) -> Result<()> {
    loop {
        let deleted = run_in_transaction(store, TRANSACTION_ATTEMPTS_DEFAULT, |transaction| {
            let doomed: Vec<Vec<u8>> = transaction
                .scan(start, limit)?
                .take(KEYS_PER_COMMIT)
                .map(|entry| entry.map(|(key, _)| key))
                .collect::<Result<_>>()?;
            for key in &doomed {
                transaction.delete(key)?;
            }
            Ok::<_, Error>(doomed.len())
        })?;
        if deleted == 0 {
            return Ok(());
        }
    }
}
