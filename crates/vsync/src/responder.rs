//! The responder of a sync round (mirrors Go `vsync/responder.go` GetDeltas): from what an
//! initiator knows, the log records it lacks, in the order this device learned them (so parents
//! come before children), and what it will know once it has applied them.
//!
//! The cost is proportional to the delta: per device, the generations between the initiator's
//! knowledge and this device's (or, for records it received in parts before their knowledge,
//! the last it holds: [`stored_ahead`]) are read by key; no row is scanned to find what is
//! missing. [`Delta::into_parts`] splits a delta into parts an initiator applies as they arrive.
//! Authorization (which scopes the initiator may read) is the caller's: [`deltas`] answers for
//! the scopes it is given.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use syncbase_store::{Store, StoreReader, Stored, Version, WatchableSnapshot, visit_at_most};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{get_typed, put_typed};

use crate::dag;
use crate::error::Result;
use crate::knowledge::{DeviceId, GenVector, Knowledge, Scope};
use crate::watcher::{LogRecord, local_generation, log_record, record_key, record_key_prefix};

fn knowledge_key() -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"k"])
}

/// What this device knows of other devices' generations, scope by scope (its own are
/// [`local_generation`]).
pub fn stored_knowledge<R: StoreReader + ?Sized>(reader: &R) -> Result<Knowledge> {
    Ok(get_typed(reader, &knowledge_key())?.unwrap_or_default())
}

fn ahead_key() -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"ka"])
}

/// Per collection, how far the records this device received without their knowledge reach
/// (the parts of a delta before its last): beyond its knowledge, a responder reads up to them.
pub fn stored_ahead<R: StoreReader + ?Sized>(reader: &R) -> Result<Knowledge> {
    Ok(get_typed(reader, &ahead_key())?.unwrap_or_default())
}

/// Raises [`stored_ahead`] to cover `records` (each with its collection), received without
/// their knowledge.
pub(crate) fn raise_ahead<'a, T: StoreReader + syncbase_store::StoreWriter + ?Sized>(
    transaction: &T,
    records: impl Iterator<Item = (&'a str, &'a LogRecord)>,
) -> Result<()> {
    let mut raised: BTreeMap<&str, GenVector> = BTreeMap::new();
    for (collection, record) in records {
        raised
            .entry(collection)
            .or_default()
            .advance(record.device, record.generation);
    }
    if raised.is_empty() {
        return Ok(());
    }
    let mut ahead = stored_ahead(transaction)?;
    let before = ahead.clone();
    for (collection, vector) in raised {
        let scope = Scope::collection(collection);
        let mut merged = ahead.of(&scope);
        merged.merge(&vector);
        ahead.set(scope, merged);
    }
    if ahead != before {
        put_typed(transaction, &ahead_key(), &ahead)?;
    }
    Ok(())
}

/// Replaces what this device knows of other devices.
pub fn store_knowledge<W: syncbase_store::StoreWriter + ?Sized>(
    writer: &W,
    knowledge: &Knowledge,
) -> Result<()> {
    Ok(put_typed(writer, &knowledge_key(), knowledge)?)
}

/// One record of a delta, with the value of its version when the initiator may need it (the
/// responder's current version of the object; older versions travel as DAG nodes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRecord {
    /// The log record.
    pub record: LogRecord,
    /// The bytes of `record.version`, for a version that is not a deletion or a link.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// What a responder sends for one round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The device that answered.
    pub responder: DeviceId,
    /// The records the initiator lacks, in this device's learning order.
    pub records: Vec<DeltaRecord>,
    /// What the initiator knows of each scope once it has applied them.
    pub knowledge: Knowledge,
    /// The responder's records of the syncgroups it shares with the initiator (so members
    /// learn of each other).
    pub syncgroups: Vec<crate::syncgroup::Syncgroup>,
    /// Counters: log records read (by generation range), or heads read (a new member's scope).
    pub records_read: u64,
    /// Counters: bytes of the records sent (their objects, authors, values and fixed fields).
    pub bytes: u64,
}

/// Fewest records of a part of a delta that travels in parts (see [`Delta::into_parts`]): about
/// 360 KB of 100-byte rows, applied in about 10 ms, so the first part is applied while the
/// others are still read, encoded and on their way. Measured on W1 (100,000 rows in batches of
/// 1,000, two daemons on loopback): a round took 550–590 ms with parts of 8,192 or more records,
/// 530–550 with 4,096, 507–522 with 2,048, 491–521 with 1,024 and 533–552 with 512 (each part
/// is a commit, with its disk sync).
pub const PART_RECORDS_MIN: usize = 2048;

impl Delta {
    /// Splits this delta into parts that an initiator applies one after another, each in a
    /// commit of its own, as they arrive. A part holds every record of each object it names (so
    /// the record carrying an object's value travels with its older versions, and a fork is
    /// decided once) and every record of each batch it holds (so no batch is ever half applied):
    /// the records form groups linked by objects and batches, and a part is whole groups, taken
    /// in the order of their first records, keeping the learning order within it. Only the last
    /// carries the knowledge, the syncgroups and the counters: an initiator that applied some
    /// parts and lost the others has learned nothing it will not be sent again (a record
    /// received again is a no-op). A part is closed once it holds `records_min` records.
    ///
    /// Applying a part shows each of its objects as the whole delta leaves it, and each of its
    /// batches whole or overwritten by later records it also holds. That needs every batch whole
    /// in the delta: a delta that lacks some write of a batch (current state skips overwritten
    /// writes, and a device that received current state holds none of them) is one part, or a
    /// part could show the batch beside the older value of a row a later write overwrote.
    pub fn into_parts(self, records_min: usize) -> Vec<Delta> {
        match parts_of(self.records.iter().map(|sent| &sent.record), records_min) {
            Some(parts) => self.split(&parts),
            None => vec![self],
        }
    }

    /// The parts `parts` says, the knowledge, syncgroups and counters in the last.
    fn split(mut self, parts: &Parts) -> Vec<Delta> {
        let last = parts.count - 1;
        split_by(std::mem::take(&mut self.records), parts)
            .into_iter()
            .enumerate()
            .map(|(index, records)| {
                if index == last {
                    Delta {
                        records,
                        ..std::mem::take(&mut self)
                    }
                } else {
                    Delta {
                        responder: self.responder,
                        records,
                        ..Delta::default()
                    }
                }
            })
            .collect()
    }
}

/// Which part of a delta each of its records goes to ([`Delta::into_parts`]), and how many
/// parts there are; `None`: the delta is one part.
struct Parts {
    part_of: Vec<usize>,
    count: usize,
}

fn parts_of<'a>(
    records: impl Iterator<Item = &'a LogRecord> + Clone,
    records_min: usize,
) -> Option<Parts> {
    let mut batch_records: FxHashMap<(DeviceId, u64), u64> = FxHashMap::default();
    for record in records.clone() {
        if record.batch_id != 0 {
            *batch_records
                .entry((record.device, record.batch_id))
                .or_default() += 1;
        }
    }
    let whole = records.clone().all(|record| {
        record.batch_id == 0
            || batch_records[&(record.device, record.batch_id)] == record.batch_count
    });
    if !whole && !crate::mutant::on(crate::mutant::Mutant::PartAnywhere) {
        return None;
    }
    let records_min = records_min.max(1);
    let count = records.clone().count();
    // Groups: records linked by an object or a batch (union-find over record indices).
    let mut parent: Vec<usize> = (0..count).collect();
    fn root(parent: &mut [usize], mut at: usize) -> usize {
        while parent[at] != at {
            parent[at] = parent[parent[at]];
            at = parent[at];
        }
        at
    }
    if !crate::mutant::on(crate::mutant::Mutant::PartAnywhere) {
        let mut objects: FxHashMap<&[u8], usize> =
            FxHashMap::with_capacity_and_hasher(count, Default::default());
        let mut batches: FxHashMap<(DeviceId, u64), usize> = FxHashMap::default();
        for (index, record) in records.clone().enumerate() {
            let by_object = objects.insert(&record.object, index);
            let by_batch = (record.batch_id != 0)
                .then(|| batches.insert((record.device, record.batch_id), index))
                .flatten();
            for other in [by_object, by_batch].into_iter().flatten() {
                let (mine, theirs) = (root(&mut parent, index), root(&mut parent, other));
                parent[mine] = theirs;
            }
        }
    }
    let roots: Vec<usize> = (0..count).map(|index| root(&mut parent, index)).collect();
    let mut group_size = vec![0usize; count];
    for root in &roots {
        group_size[*root] += 1;
    }
    // Each group goes to the part open when its first record comes.
    let mut group_part: Vec<Option<usize>> = vec![None; count];
    let mut sizes: Vec<usize> = vec![0];
    let part_of = roots
        .into_iter()
        .map(|root| {
            *group_part[root].get_or_insert_with(|| {
                if sizes.last().is_some_and(|size| *size >= records_min) {
                    sizes.push(0);
                }
                let part = sizes.len() - 1;
                sizes[part] += group_size[root];
                part
            })
        })
        .collect();
    Some(Parts {
        part_of,
        count: sizes.len(),
    })
}

/// `items` (one per record) split as `parts` says, keeping their order within each part.
fn split_by<T>(items: Vec<T>, parts: &Parts) -> Vec<Vec<T>> {
    let mut split: Vec<Vec<T>> = (0..parts.count).map(|_| Vec::new()).collect();
    for (item, part) in items.into_iter().zip(&parts.part_of) {
        split[*part].push(item);
    }
    split
}

/// A delta as [`plan`] reads it: its records without their values, each with whether this
/// device knows it made its object's head. [`Planned::read`] reads the values, from the
/// snapshot the plan was read from; [`Planned::into_parts`] splits it first, so each part's
/// values are read only when it is about to be sent.
#[derive(Debug, Default)]
pub struct Planned {
    delta: Delta,
    heads: Vec<bool>,
    scopes: Vec<Scope>,
}

impl Planned {
    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// What the initiator knows of each scope once it has applied the delta.
    pub fn knowledge(&self) -> &Knowledge {
        &self.delta.knowledge
    }

    /// Sets the syncgroups the delta carries.
    pub fn set_syncgroups(&mut self, syncgroups: Vec<crate::syncgroup::Syncgroup>) {
        self.delta.syncgroups = syncgroups;
    }

    /// The parts [`Delta::into_parts`] would make of the delta, each still to be read.
    pub fn into_parts(self, records_min: usize) -> Vec<Planned> {
        let Planned {
            delta,
            heads,
            scopes,
        } = self;
        let Some(parts) = parts_of(delta.records.iter().map(|sent| &sent.record), records_min)
        else {
            return vec![Planned {
                delta,
                heads,
                scopes,
            }];
        };
        let heads = split_by(heads, &parts);
        delta
            .split(&parts)
            .into_iter()
            .zip(heads)
            .map(|(delta, heads)| Planned {
                delta,
                heads,
                scopes: scopes.clone(),
            })
            .collect()
    }

    /// The delta, with the value each record carries, read from `reader` (the snapshot the
    /// plan was read from).
    pub fn read<S: Store + 'static>(self, reader: &WatchableSnapshot<S>) -> Result<Delta> {
        let Planned {
            mut delta,
            heads,
            scopes,
        } = self;
        let mut prefetched = if delta.records.len() >= PREFETCH_RECORDS_MIN {
            Prefetched::read(reader, &scopes, &delta.records)?
        } else {
            Prefetched::default()
        };
        for (index, (sent, head)) in delta.records.iter_mut().zip(heads).enumerate() {
            let record = &sent.record;
            let value = match prefetched.seen.get_mut(index).and_then(Option::take) {
                Some(Seen::Current(value)) => Some(value),
                Some(Seen::Retired) => None,
                None => value_to_send(reader, record, head)?,
            };
            delta.bytes += (record.object.len()
                + record.author.len()
                + value.as_ref().map_or(0, Vec::len)
                + 80) as u64;
            sent.value = value;
        }
        Ok(delta)
    }
}

/// The records of `scopes` that `initiator` lacks and this device (`device`) holds. A scope
/// the initiator knows nothing of gets the current state of each object instead (its head's
/// record, with its parents named so later changes graft): a new member does not replay history.
pub fn deltas<S: Store + 'static>(
    reader: &WatchableSnapshot<S>,
    device: DeviceId,
    scopes: &[Scope],
    initiator: &Knowledge,
) -> Result<Delta> {
    plan(reader, device, scopes, initiator)?.read(reader)
}

/// [`deltas`] but for the values its records carry ([`Planned`]).
pub fn plan<S: Store + 'static>(
    reader: &WatchableSnapshot<S>,
    device: DeviceId,
    scopes: &[Scope],
    initiator: &Knowledge,
) -> Result<Planned> {
    let stored = stored_knowledge(reader)?;
    let own_generation = local_generation(reader)?;
    let mut delta = Delta {
        responder: device,
        ..Delta::default()
    };
    // Per device, the generations some scope lacks (ranges widened to cover every scope): from
    // the initiator's knowledge to this device's, or beyond it to the last it holds of records
    // received without their knowledge (a delta in parts whose stream broke before its last
    // part; this device's own resolutions may name them): an initiator gets every record this
    // device holds that it may lack.
    let ahead = stored_ahead(reader)?;
    let mut wanted: BTreeMap<DeviceId, RangeInclusive<u64>> = BTreeMap::new();
    let mut per_scope: Vec<(&Scope, GenVector)> = Vec::with_capacity(scopes.len());
    let mut records = Vec::new();
    for scope in scopes {
        let mut mine = stored.of(scope);
        mine.advance(device, own_generation);
        let theirs = initiator.of(scope);
        delta.knowledge.set(scope.clone(), mine.clone());
        if theirs == GenVector::new() {
            current_state(reader, scope, &mut delta, &mut records)?;
            continue;
        }
        let mut held = mine;
        held.merge(&ahead.of(scope));
        for (from, range) in held.missing(&theirs) {
            wanted
                .entry(from)
                .and_modify(|known| {
                    *known =
                        (*known.start()).min(*range.start())..=(*known.end()).max(*range.end());
                })
                .or_insert(range);
        }
        per_scope.push((scope, theirs));
    }
    let matchers: Vec<(ScopeMatcher, &GenVector)> = per_scope
        .iter()
        .map(|(scope, theirs)| (ScopeMatcher::new(scope), theirs))
        .collect();
    for (from, range) in wanted {
        // One range read per device: the cost is the records that exist in the range (a claim
        // of knowledge far beyond them costs nothing).
        let start = record_key(from, *range.start());
        let limit = match range.end().checked_add(1) {
            Some(end) => record_key(from, end),
            None => keys::prefix_range(&record_key_prefix(from)).1,
        };
        let stream = reader.scan(&start, &limit)?;
        let long = range.end().saturating_sub(*range.start()) >= SCAN_AHEAD_RECORDS_MIN;
        for_each_decoded(stream, long, |key, value| {
            delta.records_read += 1;
            let record: LogRecord = syncbase_util::decode_typed(key, value)?;
            let lacked = matchers.iter().any(|(matcher, theirs)| {
                matcher.holds(&record.object) && theirs.get(from) < record.generation
            });
            if lacked {
                records.push((record, false));
            }
            Ok(())
        })?;
    }
    if !records.is_sorted_by_key(|(record, _)| record.position) {
        records.sort_by_key(|(record, _)| record.position);
    }
    records.dedup_by(|(later, later_head), (kept, kept_head)| {
        let same = (later.device, later.generation) == (kept.device, kept.generation);
        if same {
            *kept_head |= *later_head;
        }
        same
    });
    let mut heads = Vec::with_capacity(records.len());
    delta.records.reserve(records.len());
    for (record, head) in records {
        heads.push(head);
        delta.records.push(DeltaRecord {
            record,
            value: None,
        });
    }
    Ok(Planned {
        delta,
        heads,
        scopes: scopes.to_vec(),
    })
}

/// Fewest generations in a device's range for which [`plan`] reads the log on a thread of its
/// own, a chunk ahead of decoding it (W1's 100,000 records: read in about 25 ms, decoded in 20).
const SCAN_AHEAD_RECORDS_MIN: u64 = 4096;

/// Entries read a chunk at a time by the thread reading ahead.
const SCAN_AHEAD_CHUNK: usize = 1024;

/// Calls `each` with every entry of `stream`, in order; `ahead`: the stream is read on a thread
/// of its own, a few chunks ahead of `each`.
fn for_each_decoded(
    stream: syncbase_store::Stream,
    ahead: bool,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    if !ahead {
        for entry in stream {
            let (key, value) = entry?;
            each(&key, &value)?;
        }
        return Ok(());
    }
    type Chunk = syncbase_store::Result<Vec<(Vec<u8>, Vec<u8>)>>;
    std::thread::scope(|scope| {
        let (sender, chunks) = std::sync::mpsc::sync_channel::<Chunk>(4);
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(SCAN_AHEAD_CHUNK);
            for entry in stream {
                match entry {
                    Ok(entry) => chunk.push(entry),
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                }
                if chunk.len() == SCAN_AHEAD_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_AHEAD_CHUNK));
                    if sender.send(Ok(full)).is_err() {
                        // The reader stopped (an error): so does this thread.
                        return;
                    }
                }
            }
            let _ = sender.send(Ok(chunk));
        });
        for chunk in chunks {
            for (key, value) in chunk? {
                each(&key, &value)?;
            }
        }
        Ok(())
    })
}

/// Tells the objects of a scope by their keys alone: its rows' keys start with one prefix,
/// and with no row-key prefix its collection's record is in it too.
struct ScopeMatcher {
    rows: Vec<u8>,
    collection: Option<Vec<u8>>,
}

impl ScopeMatcher {
    fn new(scope: &Scope) -> Self {
        Self {
            rows: keys::key_prefix(Prefix::Row, &[scope.collection.as_bytes()], &scope.prefix),
            collection: scope
                .prefix
                .is_empty()
                .then(|| keys::key(Prefix::Collection, &[scope.collection.as_bytes()])),
        }
    }

    fn holds(&self, object: &[u8]) -> bool {
        object.starts_with(&self.rows) || self.collection.as_deref() == Some(object)
    }
}

/// The head record of every object of `scope` (its collection's record and its rows).
fn current_state<S: Store + 'static>(
    reader: &WatchableSnapshot<S>,
    scope: &Scope,
    delta: &mut Delta,
    records: &mut Vec<(LogRecord, bool)>,
) -> Result<()> {
    let collection = keys::key(Prefix::Collection, &[scope.collection.as_bytes()]);
    // Each object with its head, read by one scan of the head keys.
    let mut objects = Vec::new();
    if scope.prefix.is_empty()
        && let Some(head) = dag::head(reader, &collection)?
    {
        objects.push((collection, head, None));
    }
    let rows = keys::key_prefix(Prefix::Row, &[scope.collection.as_bytes()], &scope.prefix);
    let (start, limit) = keys::prefix_range(&dag::head_key_prefix(&rows));
    for entry in reader.scan(&start, &limit)? {
        let (key, value) = entry?;
        let (head, node) = dag::decode_head(&key, &value)?;
        let (_, mut components) = keys::parse(&key)?;
        objects.push((components.pop().unwrap_or_default(), head, node));
    }
    for (object, head, node) in objects {
        delta.records_read += 1;
        // A head of format 1 keeps its node under its own key.
        let node = match node {
            Some(node) => Some(node),
            None => dag::node(reader, &object, head)?,
        };
        let Some(id) = node.and_then(|node| node.log_record) else {
            continue;
        };
        if let Some(record) = log_record(reader, id.device, id.generation)? {
            // It made the object's head: its value travels without asking again.
            let made_head = record_made_head(&record, head);
            records.push((record, made_head));
        }
    }
    Ok(())
}

/// Whether `record` made `head` (a link names a version it did not make).
fn record_made_head(record: &LogRecord, head: Version) -> bool {
    !record.link && record.version == head
}

/// Fewest records of a delta for which [`Prefetched`] scans its scopes.
const PREFETCH_RECORDS_MIN: usize = 64;

/// The current values (and if need be the heads) of the rows of a delta (or of a part of one)
/// in each scope, each read by one scan over the span from its first to its last object, for a
/// delta of many records (an initiator that lacks a long range of generations, such as a joiner
/// that has written its collection's record): its records are in learning order, and reading
/// each one's head and value by key costs two reads a record. The records of a scope are sorted
/// by object and merged with the scans in key order. A record whose version is its object's
/// current one made it (versions are unique, and sync moves an object's head and current
/// version in one commit), so it carries that value; only when some record's version is not
/// current are the heads of the span scanned too, to tell which of those still made the head (a
/// local write the watcher has not processed retired it: its value is then read by key). A span
/// holding many more rows than the records is left out (its records are read by key); of the
/// values, only those the records carry are kept.
#[derive(Default)]
struct Prefetched {
    /// Per record of the delta, what the scans showed (`None`: not shown, to be read by key).
    seen: Vec<Option<Seen>>,
}

/// What a scope's scans showed of a record.
enum Seen {
    /// Its version is current: it carries this value.
    Current(Vec<u8>),
    /// Its version is neither current nor the head: it carries no value.
    Retired,
}

impl Prefetched {
    fn read<S: Store + 'static>(
        reader: &WatchableSnapshot<S>,
        scopes: &[Scope],
        records: &[DeltaRecord],
    ) -> Result<Self> {
        let most = records
            .len()
            .saturating_mul(4)
            .saturating_add(PREFETCH_RECORDS_MIN);
        let mut seen: Vec<Option<Seen>> = std::iter::repeat_with(|| None)
            .take(records.len())
            .collect();
        let mut read = vec![false; records.len()];
        for scope in scopes {
            let rows = keys::key_prefix(Prefix::Row, &[scope.collection.as_bytes()], &scope.prefix);
            // The scope's records that may carry a value, by object.
            let mut mine: Vec<usize> = (0..records.len())
                .filter(|index| {
                    let record = &records[*index].record;
                    !read[*index]
                        && !record.deleted
                        && !record.link
                        && record.object.starts_with(&rows)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            mine.sort_by(|left, right| {
                records[*left]
                    .record
                    .object
                    .cmp(&records[*right].record.object)
            });
            let object = |at: usize| records[mine[at]].record.object.as_slice();
            let mut found: Vec<Option<Seen>> =
                std::iter::repeat_with(|| None).take(mine.len()).collect();
            let mut at = 0;
            // Only the span of the records' objects is scanned (a part of a delta holds a few of
            // its scope's rows).
            let (first, last) = (object(0), object(mine.len() - 1));
            let currents = reader.scan_current_between(first, last)?;
            let all_values = visit_at_most(currents, most, |current| {
                let (key, version, value) = current;
                while at < mine.len() && object(at) < key.as_slice() {
                    at += 1;
                }
                let mut next = at;
                while next < mine.len() && object(next) == key.as_slice() {
                    if records[mine[next]].record.version == version {
                        found[next] = Some(Seen::Current(value.clone()));
                    }
                    next += 1;
                }
                Ok::<_, crate::Error>(())
            })?;
            if !all_values {
                continue;
            }
            if found.iter().any(Option::is_none) {
                // Which of the others made the head: by one scan of the heads.
                let start = dag::head_key(first);
                let mut limit = dag::head_key(last);
                limit.push(0);
                let head_key = |at: usize| dag::head_key(object(at));
                let pending: Vec<(Vec<u8>, usize)> = (0..mine.len())
                    .filter(|at| found[*at].is_none())
                    .map(|at| (head_key(at), at))
                    .collect();
                let mut heads: Vec<Option<Version>> = vec![None; pending.len()];
                let mut next_head = 0;
                let all_heads =
                    visit_at_most(reader.scan(&start, &limit)?, most, |(key, value)| {
                        while pending
                            .get(next_head)
                            .is_some_and(|(head_key, _)| *head_key < key)
                        {
                            next_head += 1;
                        }
                        let mut next = next_head;
                        while pending
                            .get(next)
                            .is_some_and(|(head_key, _)| *head_key == key)
                        {
                            heads[next] = Some(dag::decode_head(&key, &value)?.0);
                            next += 1;
                        }
                        Ok::<_, crate::Error>(())
                    })?;
                if !all_heads {
                    continue;
                }
                for ((_, at), head) in pending.into_iter().zip(heads) {
                    // A version still the head but not current is read by key.
                    if head != Some(records[mine[at]].record.version) {
                        found[at] = Some(Seen::Retired);
                    }
                }
            }
            for (index, found) in mine.into_iter().zip(found) {
                read[index] = true;
                seen[index] = found;
            }
        }
        Ok(Prefetched { seen })
    }
}

/// The value a record carries: that of the object's current version, if the record made it
/// (as far as the watcher has processed the log, the current version is the DAG head; a version
/// a later local write retired is kept by the watcher's pin until processed). `known_head`: the
/// record is known to have made the head (read in the same snapshot).
fn value_to_send<S: Store + 'static>(
    reader: &WatchableSnapshot<S>,
    record: &LogRecord,
    known_head: bool,
) -> Result<Option<Vec<u8>>> {
    if record.deleted || record.link {
        return Ok(None);
    }
    if !known_head && dag::head(reader, &record.object)? != Some(record.version) {
        return Ok(None);
    }
    match reader.get_at_version(&record.object, record.version)? {
        Some(Stored::Value(value)) => Ok(Some(value)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use syncbase_store::{StoreReader, open_memstore};

    use super::for_each_decoded;

    #[test]
    fn entries_read_ahead_on_a_thread_come_in_order_and_whole() {
        let store = open_memstore();
        let transaction = syncbase_store::Store::transaction(&store).unwrap();
        for index in 0..5_000u32 {
            transaction
                .put(&index.to_be_bytes(), &index.to_le_bytes())
                .unwrap();
        }
        transaction.commit().unwrap();
        let read = |ahead: bool| {
            let mut seen = Vec::new();
            for_each_decoded(store.scan(b"", b"").unwrap(), ahead, |key, value| {
                seen.push((key.to_vec(), value.to_vec()));
                Ok(())
            })
            .unwrap();
            seen
        };
        let inline = read(false);
        assert_eq!(inline.len(), 5_000);
        assert_eq!(read(true), inline);
        // An error from the caller stops the reading thread and comes back.
        let mut calls = 0;
        let stopped = for_each_decoded(store.scan(b"", b"").unwrap(), true, |_, _| {
            calls += 1;
            if calls == 1_500 {
                return Err(crate::Error::DeltaInvalid("stop".into()));
            }
            Ok(())
        });
        assert!(stopped.is_err());
        assert_eq!(calls, 1_500);
    }
}
