//! The responder of a sync round (mirrors Go `vsync/responder.go` GetDeltas): from what an
//! initiator knows, the log records it lacks, in the order this device learned them (so parents
//! come before children), and what it will know once it has applied them.
//!
//! The cost is proportional to the delta: per device, the generations between the initiator's
//! knowledge and this device's are read by key; no row is scanned to find what is missing.
//! Authorization (which scopes the initiator may read) is the caller's: [`deltas`] answers for
//! the scopes it is given.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use syncbase_store::StoreReader;
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{get_typed, put_typed};

use crate::error::Result;
use crate::knowledge::{DeviceId, GenVector, Knowledge, Scope};
use crate::watcher::{LogRecord, local_generation, log_record, object_collection};

fn knowledge_key() -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"k"])
}

/// What this device knows of other devices' generations, scope by scope (its own are
/// [`local_generation`]).
pub fn stored_knowledge<R: StoreReader + ?Sized>(reader: &R) -> Result<Knowledge> {
    Ok(get_typed(reader, &knowledge_key())?.unwrap_or_default())
}

/// Replaces what this device knows of other devices.
pub fn store_knowledge<W: syncbase_store::StoreWriter + ?Sized>(
    writer: &W,
    knowledge: &Knowledge,
) -> Result<()> {
    Ok(put_typed(writer, &knowledge_key(), knowledge)?)
}

/// What a responder sends for one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The records the initiator lacks, in this device's learning order.
    pub records: Vec<LogRecord>,
    /// What the initiator knows of each scope once it has applied them.
    pub knowledge: Knowledge,
    /// Counters: log records read by key (found or not).
    pub records_read: u64,
    /// Counters: bytes of the records sent (their objects, authors and fixed fields).
    pub bytes: u64,
}

/// The records of `scopes` that `initiator` lacks and this device (`device`) holds.
pub fn deltas<R: StoreReader + ?Sized>(
    reader: &R,
    device: DeviceId,
    scopes: &[Scope],
    initiator: &Knowledge,
) -> Result<Delta> {
    let stored = stored_knowledge(reader)?;
    let own_generation = local_generation(reader)?;
    let mut delta = Delta::default();
    // Per device, the generations some scope lacks (ranges widened to cover every scope).
    let mut wanted: BTreeMap<DeviceId, RangeInclusive<u64>> = BTreeMap::new();
    let mut per_scope: Vec<(&Scope, GenVector, GenVector)> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        let mut mine = stored.of(scope);
        mine.advance(device, own_generation);
        let theirs = initiator.of(scope);
        for (from, range) in mine.missing(&theirs) {
            wanted
                .entry(from)
                .and_modify(|known| {
                    *known =
                        (*known.start()).min(*range.start())..=(*known.end()).max(*range.end());
                })
                .or_insert(range);
        }
        delta.knowledge.set(scope.clone(), mine.clone());
        per_scope.push((scope, mine, theirs));
    }
    for (from, range) in wanted {
        for generation in range {
            delta.records_read += 1;
            // Holes are allowed (a generation of objects outside every syncgroup).
            let Some(record) = log_record(reader, from, generation)? else {
                continue;
            };
            let Some((collection, row)) = object_collection(&record.object) else {
                continue;
            };
            let lacked = per_scope.iter().any(|(scope, _, theirs)| {
                scope.collection == collection
                    && row.starts_with(&scope.prefix)
                    && theirs.get(from) < generation
            });
            if lacked {
                delta.bytes += (record.object.len() + record.author.len() + 80) as u64;
                delta.records.push(record);
            }
        }
    }
    delta.records.sort_by_key(|record| record.position);
    Ok(delta)
}
