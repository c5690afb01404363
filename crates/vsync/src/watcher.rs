//! The watcher (mirrors Go `vsync/watcher.go`): follows a database's watch log from a durable
//! position and turns each local commit on synced collections into sync log records, one
//! generation each, and DAG nodes, in one commit together with its new position.
//!
//! Its position is a pin of the watchable layer ([`WATCHER_PIN`]), so log retention never removes
//! an entry it has not processed. Entries that sync itself applied (`from_sync`) are skipped but
//! still move the position: no echo. A commit that wrote more than one synced key gets a batch id
//! and its size, so the other side applies it whole. [`step`] does no I/O of its own beyond the
//! store and reads no clock: a driver calls it when the log notifier says the log grew.

use serde::{Deserialize, Serialize};
use syncbase_store::{
    LogOp, Origin, Rng, Store, StoreReader, Transaction, Version, Watchable, WatchableTransaction,
};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{get_typed, put_typed, put_typed_owned};

use crate::dag::{self, LogRecordId, NewNode};
use crate::error::{Error, Result};
use crate::syncgroup::synced_collections;

/// The name of the watcher's pin on the watch log.
pub const WATCHER_PIN: &str = "sync-watcher";

/// Attempts of a step whose commit meets a concurrent one (it then starts again at once).
const STEP_ATTEMPTS_MAX: usize = 16;

/// One change of one synced object, as sync sends it: the unit of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The object (its managed key).
    #[serde(with = "serde_bytes")]
    pub object: Vec<u8>,
    /// The version the change made.
    pub version: Version,
    /// The versions it replaced, as far as the DAG knows them.
    pub parents: Vec<Version>,
    /// Whether the change is a deletion (for a link: whether `version` is one).
    pub deleted: bool,
    /// A link: no new version, but `parents` added to the existing `version` (a conflict was
    /// resolved by picking it), so other devices learn the resolution instead of redoing it.
    pub link: bool,
    /// The change's timestamp (the hybrid logical clock of the device that made it).
    pub timestamp_ns: u64,
    /// Who made it (a verified principal name).
    pub author: String,
    /// The device whose generation this is.
    pub device: u64,
    /// Its generation on that device.
    pub generation: u64,
    /// The batch of the commit it came from (0: a commit of one synced change).
    pub batch_id: u64,
    /// How many synced changes that batch holds.
    pub batch_count: u64,
    /// Local only: the order in which this device learned the record (its own or received), so
    /// a responder sends records parents first. Not meaningful on another device.
    pub position: u64,
}

pub(crate) fn record_key(device: u64, generation: u64) -> Vec<u8> {
    keys::key(
        Prefix::Sync,
        &[b"l", &device.to_be_bytes(), &generation.to_be_bytes()],
    )
}

/// The start of every record key of `device`.
pub(crate) fn record_key_prefix(device: u64) -> Vec<u8> {
    keys::key_prefix(Prefix::Sync, &[b"l", &device.to_be_bytes()], b"")
}

fn generation_key() -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"gen"])
}

fn position_key() -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"pos"])
}

/// The last learning position given to a record in the database (0: none yet).
pub fn last_position<R: StoreReader + ?Sized>(reader: &R) -> Result<u64> {
    Ok(get_typed(reader, &position_key())?.unwrap_or(0))
}

/// The log record of `device`'s `generation`, if this database has it.
pub fn log_record<R: StoreReader + ?Sized>(
    reader: &R,
    device: u64,
    generation: u64,
) -> Result<Option<LogRecord>> {
    Ok(get_typed(reader, &record_key(device, generation))?)
}

/// The generations of `device` from `first` to `last` whose records this database has, read
/// with one range read; `None` once there are more than `most` (the caller then asks record by
/// record).
pub fn generations_held<R: StoreReader + ?Sized>(
    reader: &R,
    device: u64,
    first: u64,
    last: u64,
    most: usize,
) -> Result<Option<std::collections::BTreeSet<u64>>> {
    let start = record_key(device, first);
    let limit = syncbase_store::prefix_limit(&record_key(device, last));
    let mut held = std::collections::BTreeSet::new();
    let all = syncbase_store::visit_at_most(reader.scan(&start, &limit)?, most, |(key, _)| {
        let (_, components) = keys::parse(&key)?;
        let generation = components
            .get(2)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| {
                Error::Store(syncbase_store::Error::Corrupt(format!(
                    "a sync log record key without a generation: {key:?}"
                )))
            })?;
        held.insert(generation);
        Ok::<_, Error>(())
    })?;
    Ok(all.then_some(held))
}

/// The last generation this device made in the database (0: none yet).
pub fn local_generation<R: StoreReader + ?Sized>(reader: &R) -> Result<u64> {
    Ok(get_typed(reader, &generation_key())?.unwrap_or(0))
}

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Log entries processed (skipped ones included).
    pub entries: u64,
    /// Log records (generations) made.
    pub records: u64,
    /// The first log entry not processed yet.
    pub position: u64,
}

/// Starts watching the log at `from_seq` (the entry after the last one the caller has already
/// taken into account), unless the watcher already has a position.
pub fn start<S: Store + 'static>(store: &Watchable<S>, from_seq: u64) -> Result<()> {
    let transaction = store.begin(Origin::default())?;
    if transaction.pin(WATCHER_PIN)?.is_none() {
        transaction.set_pin(WATCHER_PIN, from_seq)?;
    }
    Ok(transaction.commit()?)
}

/// Processes up to `entries_max` log entries after the watcher's position, in one commit, as
/// records of `device` (this device); batch ids come from `rng`. A database the watcher has not
/// started on is left alone.
pub fn step<S: Store + 'static>(
    store: &Watchable<S>,
    device: u64,
    rng: &dyn Rng,
    entries_max: usize,
) -> Result<StepOutcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match step_once(store, device, rng, entries_max) {
            Err(Error::Store(syncbase_store::Error::ConcurrentTransaction))
                if attempt < STEP_ATTEMPTS_MAX => {}
            outcome => return outcome,
        }
    }
}

fn step_once<S: Store + 'static>(
    store: &Watchable<S>,
    device: u64,
    rng: &dyn Rng,
    entries_max: usize,
) -> Result<StepOutcome> {
    let transaction = store.begin(Origin::default())?;
    // A step resumes where it stopped: entries committed meanwhile are the next step's, and
    // do not make this one fail.
    let outcome = process(&transaction, device, rng, Entries::Settled(entries_max))?;
    if outcome.entries == 0 {
        transaction.abort()?;
    } else {
        transaction.commit()?;
    }
    Ok(outcome)
}

/// The work of a [`step`] inside `transaction` (which the caller commits): the initiator runs it
/// first, so a round takes in local commits the watcher has not processed yet.
/// Which pending log entries [`process`] takes in.
pub(crate) enum Entries {
    /// Up to this many, among those committed before the transaction began (a watcher step).
    Settled(usize),
    /// Every one the transaction's snapshot holds: a sync round must take in every local
    /// write its snapshot shows before it grafts, or it would replace one it never recorded.
    All,
}

pub(crate) fn process<S: Store + 'static>(
    transaction: &WatchableTransaction<S>,
    device: u64,
    rng: &dyn Rng,
    entries: Entries,
) -> Result<StepOutcome> {
    let Some(log_position) = transaction.pin(WATCHER_PIN)? else {
        return Ok(StepOutcome::default());
    };
    let synced = synced_collections(transaction)?;
    let entries = match entries {
        Entries::Settled(entries_max) => transaction.log_entries_seen(log_position, entries_max)?,
        Entries::All => transaction.log_entries(log_position, usize::MAX)?,
    };
    let mut outcome = StepOutcome {
        position: log_position,
        ..StepOutcome::default()
    };
    let mut generation = local_generation(transaction)?;
    let mut position = last_position(transaction)?;
    for entry in entries {
        outcome.entries += 1;
        outcome.position = entry.seq + 1;
        // No echo: what sync applied is another device's change (the `echo` mutant records it
        // again as this device's).
        if entry.from_sync && !crate::mutant::on(crate::mutant::Mutant::Echo) {
            continue;
        }
        let mut ops = Vec::with_capacity(entry.ops.len());
        for op in entry.ops.iter().filter(|op| is_synced(op.key(), &synced)) {
            // A local version already in the DAG was recorded when its syncgroup was created
            // ([`adopt_existing`]): one record per version.
            if !entry.from_sync && dag::node(transaction, op.key(), op.version())?.is_some() {
                continue;
            }
            ops.push(op);
        }
        if ops.is_empty() {
            continue;
        }
        // A change's timestamp exceeds those of the versions it replaces, whatever the clock
        // said (a version received from a peer whose clock runs ahead, beyond what the hybrid
        // clock observes): so the last-writer order extends causality, and a batch's changes
        // share one timestamp, so two batches are ordered alike on every row.
        let mut timestamp_ns = entry.timestamp_ns;
        for op in &ops {
            if let Some(parent) = op.parent()
                && let Some(node) = dag::node(transaction, op.key(), parent)?
                && let Some(id) = node.log_record
                && let Some(replaced) = log_record(transaction, id.device, id.generation)?
            {
                timestamp_ns = timestamp_ns.max(replaced.timestamp_ns.saturating_add(1));
            }
        }
        let batch_id = if ops.len() > 1 {
            // Zero means "no batch".
            rng.next_u64().max(1)
        } else {
            0
        };
        for op in &ops {
            generation += 1;
            position += 1;
            let object = op.key();
            let mut parents = Vec::new();
            if let Some(parent) = op.parent()
                && dag::node(transaction, object, parent)?.is_some()
            {
                parents.push(parent);
            }
            let deleted = matches!(op, LogOp::Delete { .. });
            let record = LogRecord {
                object: object.to_vec(),
                version: op.version(),
                parents: parents.clone(),
                deleted,
                link: false,
                timestamp_ns,
                author: entry.author.clone(),
                device,
                generation,
                batch_id,
                batch_count: ops.len() as u64,
                position,
            };
            put_typed(transaction, &record_key(device, generation), &record)?;
            let node = NewNode {
                parents,
                log_record: Some(LogRecordId { device, generation }),
                batch_id,
                deleted,
            };
            dag::add_head(transaction, object, op.version(), &node)?;
            outcome.records += 1;
        }
    }
    if outcome.entries > 0 {
        put_typed(transaction, &generation_key(), &generation)?;
        put_typed(transaction, &position_key(), &position)?;
        transaction.set_pin(WATCHER_PIN, outcome.position)?;
    }
    Ok(outcome)
}

/// Records, in `transaction`, the current version of every object of `collections` that has
/// none yet (each row, and the collection's own record) as a log record of this device
/// (`device`) stamped `timestamp_ns`, with its DAG node, and starts the watcher at `from_seq`
/// unless it has a position: what a database held before a syncgroup shared it then syncs like
/// any later write (rows present on several members meet as concurrent writes). Returns how
/// many records it made.
pub fn adopt_existing<S: Store + 'static>(
    transaction: &WatchableTransaction<S>,
    collections: &[String],
    device: u64,
    timestamp_ns: u64,
    from_seq: u64,
) -> Result<u64> {
    if transaction.pin(WATCHER_PIN)?.is_none() {
        transaction.set_pin(WATCHER_PIN, from_seq)?;
    }
    let mut objects = Vec::new();
    for collection in collections {
        objects.push(keys::key(Prefix::Collection, &[collection.as_bytes()]));
        let (start, limit) = keys::row_prefix_range(collection, b"");
        for entry in transaction.scan(&start, &limit)? {
            objects.push(entry?.0);
        }
    }
    let mut adopted = Vec::new();
    for object in objects {
        if dag::head(transaction, &object)?.is_some() {
            continue;
        }
        if let Some(head) = transaction.head(&object)?
            && !head.deleted
        {
            adopted.push((object, head.version));
        }
    }
    let count = adopted.len() as u64;
    if count == 0 {
        return Ok(0);
    }
    let (mut generation, mut position) = allocate(transaction, count, count)?;
    for (object, version) in adopted {
        put_record(
            transaction,
            &LogRecord {
                object: object.clone(),
                version,
                parents: Vec::new(),
                deleted: false,
                link: false,
                timestamp_ns,
                author: String::new(),
                device,
                generation,
                batch_id: 0,
                batch_count: 1,
                position,
            },
        )?;
        let node = NewNode {
            log_record: Some(LogRecordId { device, generation }),
            ..NewNode::default()
        };
        dag::add_head(transaction, &object, version, &node)?;
        generation += 1;
        position += 1;
    }
    Ok(count)
}

/// Gives the next `count` generations of this device and learning positions: returns the first
/// of each. The caller writes the records.
pub(crate) fn allocate<T: StoreReader + syncbase_store::StoreWriter + ?Sized>(
    transaction: &T,
    generations: u64,
    positions: u64,
) -> Result<(u64, u64)> {
    let generation = local_generation(transaction)?;
    let position = last_position(transaction)?;
    if generations > 0 {
        put_typed(transaction, &generation_key(), &(generation + generations))?;
    }
    if positions > 0 {
        put_typed(transaction, &position_key(), &(position + positions))?;
    }
    Ok((generation + 1, position + 1))
}

/// Stores a log record (its own, or one received) under its device and generation.
pub(crate) fn put_record<W: syncbase_store::StoreWriter + ?Sized>(
    writer: &W,
    record: &LogRecord,
) -> Result<()> {
    Ok(put_typed_owned(
        writer,
        record_key(record.device, record.generation),
        record,
    )?)
}

/// Stores a received record as this device learned it: at `position` (its place in this
/// device's learning order), without copying it first.
pub(crate) fn put_received<W: syncbase_store::StoreWriter + ?Sized>(
    writer: &W,
    record: &LogRecord,
    position: u64,
) -> Result<()> {
    Ok(put_typed_owned(
        writer,
        record_key(record.device, record.generation),
        &LogRecordAt::new(record, position),
    )?)
}

/// A [`LogRecord`] borrowed, with another position: encoded as that record with that position
/// is (the same fields, in the same order).
#[derive(Serialize)]
struct LogRecordAt<'a> {
    #[serde(with = "serde_bytes")]
    object: &'a [u8],
    version: Version,
    parents: &'a [Version],
    deleted: bool,
    link: bool,
    timestamp_ns: u64,
    author: &'a str,
    device: u64,
    generation: u64,
    batch_id: u64,
    batch_count: u64,
    position: u64,
}

impl<'a> LogRecordAt<'a> {
    fn new(record: &'a LogRecord, position: u64) -> Self {
        let LogRecord {
            object,
            version,
            parents,
            deleted,
            link,
            timestamp_ns,
            author,
            device,
            generation,
            batch_id,
            batch_count,
            position: _,
        } = record;
        Self {
            object,
            version: *version,
            parents,
            deleted: *deleted,
            link: *link,
            timestamp_ns: *timestamp_ns,
            author,
            device: *device,
            generation: *generation,
            batch_id: *batch_id,
            batch_count: *batch_count,
            position,
        }
    }
}

/// Whether `key` is a row or the record of a collection some syncgroup shares.
fn is_synced(key: &[u8], synced: &std::collections::BTreeSet<String>) -> bool {
    object_collection(key).is_some_and(|(collection, _)| synced.contains(&collection))
}

/// The collections of many objects, as [`object_collection`] names them, with each collection's
/// name decoded once: a row's collection is the prefix its key starts with, so an object is
/// only checked to be a well-formed key before its prefix is looked up.
#[derive(Default)]
pub(crate) struct Collections<'a> {
    /// By a row's collection prefix (or the whole key of any other object): its index in
    /// `names`.
    named: std::collections::HashMap<&'a [u8], Option<usize>>,
    names: Vec<String>,
}

impl<'a> Collections<'a> {
    /// The collection of `object`, if it is a synced object: an index for [`Collections::name`].
    pub(crate) fn of(&mut self, object: &'a [u8]) -> Option<usize> {
        if !keys::is_well_formed(object) {
            return None;
        }
        let prefix = keys::row_collection_prefix(object).unwrap_or(object);
        let names = &mut self.names;
        *self.named.entry(prefix).or_insert_with(|| {
            let (collection, _) = object_collection(object)?;
            names.push(collection);
            Some(names.len() - 1)
        })
    }

    /// The name of the collection [`Collections::of`] answered `index` for.
    pub(crate) fn name(&self, index: usize) -> &str {
        &self.names[index]
    }
}

/// The collection of a synced object (a row, or a collection's record) and the row key (empty
/// for the collection's record); `None` for any other key.
pub fn object_collection(key: &[u8]) -> Option<(String, Vec<u8>)> {
    let (prefix, mut components) = keys::parse(key).ok()?;
    if !matches!(prefix, Prefix::Row | Prefix::Collection) || components.is_empty() {
        return None;
    }
    let row = if components.len() > 1 {
        components.remove(1)
    } else {
        Vec::new()
    };
    let collection = String::from_utf8(components.remove(0)).ok()?;
    Some((collection, row))
}

#[cfg(test)]
mod tests {
    use super::{LogRecord, LogRecordAt};
    use syncbase_store::Version;

    #[test]
    fn a_record_at_another_position_encodes_as_the_record_moved_there() {
        let record = LogRecord {
            object: b"r\x00\x01object".to_vec(),
            version: Version(7),
            parents: vec![Version(3), Version(u64::MAX)],
            deleted: false,
            link: true,
            timestamp_ns: 1_700_000_000_000_000_000,
            author: "alice:a".into(),
            device: 0xabc,
            generation: 300,
            batch_id: 9,
            batch_count: 2,
            position: 5,
        };
        let moved = LogRecord {
            position: 1 << 40,
            ..record.clone()
        };
        assert_eq!(
            postcard::to_stdvec(&LogRecordAt::new(&record, 1 << 40)).unwrap(),
            postcard::to_stdvec(&moved).unwrap()
        );
    }
}
