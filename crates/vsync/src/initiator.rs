//! The initiator of a sync round (mirrors Go `vsync/initiator.go`): applies a responder's
//! [`Delta`] in one commit. It grafts the records onto each object's DAG, tells fast-forwards
//! from conflicts, resolves conflicts through the [`Resolver`] seam, makes the winning versions
//! current, records every resolution as a link of its own (so other devices learn it instead of
//! redoing it), and merges the responder's knowledge; values, version pointers, DAG nodes, log
//! records and knowledge become visible together, or not at all.
//!
//! The round first runs the watcher over local commits it has not processed yet, in the same
//! transaction, so the DAG's heads are the store's; a local write that commits while the round
//! runs makes the round's commit fail on its read of that key, and the round starts again at
//! once (no sleep, and neither side is lost).
//!
//! A first round is mostly objects this device has never seen: a record of such an object that
//! is the round's only one about it is a fast-forward whatever the DAG would say, so its node,
//! head and value are written at once (`first_news`), without the round's graft; and a round
//! of many records learns which of its objects, generations and keys this store holds from a
//! few range reads over their span ([`Known`]) rather than five reads a record, unless the span
//! holds many other keys. A round of 100,000 new rows applies about four times faster so.
//!
//! Records are taken as they come, with a few tolerances that keep a round from stalling on a
//! peer that holds less history than this device: a parent this DAG does not hold is left out
//! (a new member received only current states), a link between versions it does not hold is
//! skipped, and a link that would close a cycle is skipped (the other edge already orders
//! them). A record received again is a no-op; a different record under a known generation, or
//! different bytes under a known version, is refused with [`Error::DeltaInvalid`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use syncbase_store::{Origin, Rng, Store, StoreReader, Stored, Transaction, Version, Watchable};
use syncbase_util::HybridClock;
use syncbase_util::keys;

use crate::conflict::{Conflict, Decision, Resolver, Side, group};
use crate::dag::{self, Graft, LogRecordId, NewNode, Outcome};
use crate::error::{Error, Result};
use crate::knowledge::DeviceId;
use crate::responder::{Delta, DeltaRecord, store_knowledge, stored_knowledge};
use crate::watcher::{self, LogRecord, allocate, log_record, put_record};

/// Attempts of a round whose commit meets a concurrent one (each starts again at once).
const APPLY_ATTEMPTS_MAX: usize = 32;

/// What an initiator needs besides the store: its device, its clock and ids, and a resolver.
pub struct Initiator<'a> {
    /// This device.
    pub device: DeviceId,
    /// The hybrid logical clock the store's local commits use: it observes every received
    /// timestamp, and stamps the links this device makes.
    pub clock: &'a HybridClock,
    /// Batch ids of local commits the round takes in.
    pub rng: &'a dyn Rng,
    /// How conflicts are decided.
    pub resolver: &'a dyn Resolver,
}

/// What applying one delta did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Records new to this device that were applied.
    pub records_applied: u64,
    /// Records it already had (no-ops).
    pub records_known: u64,
    /// Objects whose head moved forward to a received version.
    pub fast_forwards: u64,
    /// Conflicts resolved (each recorded by a link).
    pub conflicts: u64,
    /// Received timestamps beyond [`syncbase_util::CLOCK_DRIFT_MAX_NS`] of this device's clock.
    pub far_future: u64,
    /// Local log entries the round took in first (the watcher's work).
    pub local_entries: u64,
    /// Log records of this device those entries became (the sender lacks them).
    pub local_records: u64,
    /// Commits the round needed (more than one: a local write raced it).
    pub attempts: u64,
}

impl Initiator<'_> {
    /// Applies `delta` in one commit (retried at once if a concurrent commit conflicts).
    pub fn apply<S: Store + 'static>(
        &self,
        store: &Watchable<S>,
        delta: &Delta,
    ) -> Result<ApplyOutcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply_once(store, delta) {
                Err(Error::Store(syncbase_store::Error::ConcurrentTransaction))
                    if attempt < APPLY_ATTEMPTS_MAX => {}
                Ok(mut outcome) => {
                    // Only an applied delta moves the clock.
                    for sent in &delta.records {
                        if self.clock.observe_capped(sent.record.timestamp_ns) {
                            outcome.far_future += 1;
                        }
                    }
                    outcome.attempts = attempt as u64;
                    return Ok(outcome);
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn apply_once<S: Store + 'static>(
        &self,
        store: &Watchable<S>,
        delta: &Delta,
    ) -> Result<ApplyOutcome> {
        let halves = if crate::mutant::on(crate::mutant::Mutant::SplitBatch) {
            // The mutant: the first half of the records in one commit, the rest in another.
            let middle = delta.records.len() / 2;
            vec![&delta.records[..middle], &delta.records[middle..]]
        } else {
            vec![&delta.records[..]]
        };
        let mut total = ApplyOutcome::default();
        let last = halves.len() - 1;
        for (index, records) in halves.into_iter().enumerate() {
            let outcome = self.commit_records(store, records, (index == last).then_some(delta))?;
            total.records_applied += outcome.records_applied;
            total.records_known += outcome.records_known;
            total.fast_forwards += outcome.fast_forwards;
            total.conflicts += outcome.conflicts;
            total.local_entries += outcome.local_entries;
            total.local_records += outcome.local_records;
        }
        Ok(total)
    }

    /// One commit: `records`, and the delta's knowledge when `knowledge_of` is given.
    fn commit_records<S: Store + 'static>(
        &self,
        store: &Watchable<S>,
        records: &[DeltaRecord],
        knowledge_of: Option<&Delta>,
    ) -> Result<ApplyOutcome> {
        let transaction = store.begin(origin_of(records))?;
        let generation_before = watcher::local_generation(&transaction)?;
        let local = watcher::process(&transaction, self.device, self.rng, watcher::Entries::All)?;
        let mut outcome = ApplyOutcome {
            local_entries: local.entries,
            local_records: local.records,
            ..ApplyOutcome::default()
        };
        let mut graft = Graft::new();
        let mut values = Values::default();
        let known = Known::read(&transaction, records)?;
        let new: Vec<&DeltaRecord> = records
            .iter()
            .filter_map(
                |sent| match self.is_new(&transaction, &known, &sent.record) {
                    Ok(true) => Some(Ok(sent)),
                    Ok(false) => None,
                    Err(error) => Some(Err(error)),
                },
            )
            .collect::<Result<_>>()?;
        outcome.records_known = (records.len() - new.len()) as u64;
        let (_, mut position) = allocate(&transaction, 0, new.len() as u64)?;
        let repeated = repeated_objects(&new);
        let mut first_values = Vec::new();
        for sent in &new {
            let record = &sent.record;
            let first_news = !record.link
                && !repeated.contains(record.object.as_slice())
                && first_news(&transaction, &known, sent, &mut first_values)?;
            if first_news {
                outcome.fast_forwards += 1;
            } else {
                graft_record(&transaction, sent, &mut graft, &mut values)?;
            }
            watcher::put_received(&transaction, record, position)?;
            position += 1;
            outcome.records_applied += 1;
        }
        put_first_values(&transaction, first_values)?;
        let mut conflicts = Vec::new();
        let objects: Vec<Vec<u8>> = graft.objects().map(<[u8]>::to_vec).collect();
        for object in &objects {
            match self.outcome(&transaction, object, &graft)? {
                Outcome::Unchanged { .. } => {}
                Outcome::FastForward { head } => {
                    match values.take(object, head) {
                        // A received version that wins as it arrives: stored and made
                        // current in one step.
                        Some(value) => transaction
                            .put_current_version(object, head, value)
                            .map_err(version_error)?,
                        None => make_current(&transaction, object, head)?,
                    }
                    dag::move_head(&transaction, object, head)?;
                    outcome.fast_forwards += 1;
                }
                Outcome::Conflict {
                    local,
                    remote,
                    ancestor,
                } => conflicts.push(Conflict {
                    object: object.clone(),
                    local: side(&transaction, object, local)?,
                    remote: side(&transaction, object, remote)?,
                    ancestor: ancestor
                        .map(|version| side(&transaction, object, version))
                        .transpose()?,
                }),
            }
        }
        // Every other received value is stored (a conflict's winner among them).
        for (object, version, value) in values.rest() {
            transaction
                .put_at_version(object, version, value)
                .map_err(version_error)?;
        }
        let mut links = Vec::new();
        for closure in group(conflicts) {
            let decisions = self.resolver.decide(&closure);
            if decisions.len() != closure.len() {
                return Err(Error::DeltaInvalid(format!(
                    "the resolver decided {} of {} conflicts",
                    decisions.len(),
                    closure.len()
                )));
            }
            for (conflict, decision) in closure.into_iter().zip(decisions) {
                let (winner, loser) = match decision {
                    Decision::Local => (conflict.local, conflict.remote),
                    Decision::Remote => (conflict.remote, conflict.local),
                };
                if decision == Decision::Remote {
                    make_current(&transaction, &conflict.object, winner.version)?;
                }
                dag::add_parent(
                    &transaction,
                    &conflict.object,
                    winner.version,
                    loser.version,
                    None,
                )?;
                dag::move_head(&transaction, &conflict.object, winner.version)?;
                links.push((conflict.object, winner, loser.version));
                outcome.conflicts += 1;
            }
        }
        self.record_links(&transaction, links)?;
        let mut knowledge = stored_knowledge(&transaction)?;
        if let Some(delta) = knowledge_of {
            knowledge.merge(&delta.knowledge);
            store_knowledge(&transaction, &knowledge)?;
        }
        // Records held beyond the knowledge (a part before the last, or records a responder
        // held beyond its own knowledge) are noted, so this device sends them on in turn.
        let mut collections = watcher::Collections::default();
        let mut known_of: Vec<crate::knowledge::GenVector> = Vec::new();
        let mut beyond = Vec::new();
        for sent in &new {
            let record = &sent.record;
            let Some(collection) = collections.of(&record.object) else {
                continue;
            };
            while known_of.len() <= collection {
                let scope = crate::knowledge::Scope::collection(collections.name(known_of.len()));
                known_of.push(knowledge.of(&scope));
            }
            if known_of[collection].get(record.device) < record.generation {
                beyond.push((collection, record));
            }
        }
        crate::responder::raise_ahead(
            &transaction,
            beyond
                .into_iter()
                .map(|(collection, record)| (collections.name(collection), record)),
        )?;
        // A part before a delta's last (it carries no knowledge) that made no generation of
        // this device commits without waiting for the disk: the next durable commit (the last
        // part's) makes it durable, as commits reach the disk in order, and until then no peer
        // can have learned from it anything of this device.
        let part_before_last = knowledge_of.is_some_and(|delta| {
            !delta.records.is_empty() && delta.knowledge == crate::knowledge::Knowledge::default()
        });
        if part_before_last && watcher::local_generation(&transaction)? == generation_before {
            syncbase_store::Transaction::skip_disk_sync(&transaction);
        }
        transaction.commit()?;
        Ok(outcome)
    }

    /// Whether `record` is new here; a different record under a known generation is refused.
    fn is_new<R: StoreReader + ?Sized>(
        &self,
        reader: &R,
        known: &Known,
        record: &LogRecord,
    ) -> Result<bool> {
        let held = if known.may_hold_record(record.device, record.generation) {
            log_record(reader, record.device, record.generation)?
        } else {
            None
        };
        match held {
            None if record.device == self.device => Err(Error::DeltaInvalid(format!(
                "a record of this device's generation {} that it never made",
                record.generation
            ))),
            None => Ok(true),
            Some(known) => {
                let same = LogRecord {
                    position: known.position,
                    ..record.clone()
                };
                if same == known {
                    Ok(false)
                } else {
                    Err(Error::DeltaInvalid(format!(
                        "generation {} of device {:x} differs from the one this device has",
                        record.generation, record.device
                    )))
                }
            }
        }
    }

    /// The round's outcome for `object`: the DAG's verdict, generalised to several received
    /// heads (possible when the responder held less history than this device): those are
    /// ordered by last-writer and the latest stands for them all, linked over the others.
    fn outcome<S: Store + 'static>(
        &self,
        transaction: &syncbase_store::WatchableTransaction<S>,
        object: &[u8],
        graft: &Graft,
    ) -> Result<Outcome> {
        let heads = graft.candidate_heads(object);
        let old = graft.old_head(object);
        let old_is_head = old.is_some_and(|old| heads.contains(&old));
        if heads.len() <= 1 || (heads.len() == 2 && old_is_head) {
            return current_outcome(object, graft);
        }
        let mut remote: Vec<Side> = heads
            .iter()
            .filter(|version| Some(**version) != old)
            .map(|version| side(transaction, object, *version))
            .collect::<Result<_>>()?;
        remote.sort_by_key(|side| side.order_key());
        let Some(latest) = remote.pop() else {
            return current_outcome(object, graft);
        };
        let mut links = Vec::new();
        for other in remote {
            dag::add_parent(transaction, object, latest.version, other.version, None)?;
            links.push((object.to_vec(), latest, other.version));
        }
        self.record_links(transaction, links)?;
        match old.filter(|_| old_is_head) {
            Some(local) => Ok(Outcome::Conflict {
                local,
                remote: latest.version,
                ancestor: None,
            }),
            None => Ok(Outcome::FastForward {
                head: latest.version,
            }),
        }
    }

    /// Makes a log record of this device for each link (object, winner, loser).
    fn record_links<T: StoreReader + syncbase_store::StoreWriter + ?Sized>(
        &self,
        transaction: &T,
        links: Vec<(Vec<u8>, Side, Version)>,
    ) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        let count = links.len() as u64;
        let (mut generation, mut position) = allocate(transaction, count, count)?;
        let timestamp_ns = syncbase_store::Clock::now_ns(self.clock);
        for (object, winner, loser) in links {
            put_record(
                transaction,
                &LogRecord {
                    object,
                    version: winner.version,
                    parents: vec![loser],
                    deleted: winner.deleted,
                    link: true,
                    timestamp_ns,
                    author: String::new(),
                    device: self.device,
                    generation,
                    batch_id: 0,
                    batch_count: 1,
                    position,
                },
            )?;
            generation += 1;
            position += 1;
        }
        Ok(())
    }
}

/// The log entry's origin for a commit of `records`: sync, with the author and device they
/// share (a round of several writers' changes records none).
fn origin_of(records: &[DeltaRecord]) -> Origin {
    let writes: Vec<&LogRecord> = records
        .iter()
        .map(|sent| &sent.record)
        .filter(|record| !record.link)
        .collect();
    let first = writes.first();
    let author = first
        .filter(|first| writes.iter().all(|record| record.author == first.author))
        .map(|first| first.author.clone());
    let device = first
        .filter(|first| writes.iter().all(|record| record.device == first.device))
        .map(|first| first.device);
    Origin {
        author: author.unwrap_or_default(),
        device: device.unwrap_or(0),
        from_sync: true,
        timestamp_ns: writes.iter().map(|record| record.timestamp_ns).max(),
    }
}

/// A received value: its object, its version and its bytes.
type Received<'a> = (&'a [u8], Version, &'a [u8]);

/// The values a round received, kept until the round knows which versions become current.
#[derive(Default)]
struct Values<'a> {
    received: Vec<Option<Received<'a>>>,
    index: HashMap<(&'a [u8], Version), usize>,
}

impl<'a> Values<'a> {
    fn keep(&mut self, object: &'a [u8], version: Version, value: &'a [u8]) {
        self.index.insert((object, version), self.received.len());
        self.received.push(Some((object, version, value)));
    }

    fn take(&mut self, object: &'a [u8], version: Version) -> Option<&'a [u8]> {
        let at = self.index.remove(&(object, version))?;
        self.received[at].take().map(|(_, _, value)| value)
    }

    /// The values not taken, in the order they arrived.
    fn rest(self) -> impl Iterator<Item = Received<'a>> {
        self.received.into_iter().flatten()
    }
}

/// A received value that contradicts what this store holds under its version.
fn version_error(error: syncbase_store::Error) -> Error {
    match error {
        syncbase_store::Error::VersionConflict(message) => Error::DeltaInvalid(message),
        other => Error::Store(other),
    }
}

/// The objects more than one of `records` is about (those go through the round's graft).
fn repeated_objects<'a>(records: &[&'a DeltaRecord]) -> HashSet<&'a [u8]> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut repeated = HashSet::new();
    for sent in records {
        let object = sent.record.object.as_slice();
        if !seen.insert(object) {
            repeated.insert(object);
        }
    }
    repeated
}

/// Applies a received version of an object this device knows nothing of (no head, no node of
/// it, none of its parents), the only record of the round about it: whatever the DAG would
/// decide, it is a fast-forward, so the node, the head and the value are written at once,
/// without the round's graft. Returns false, having written nothing, for any other record
/// (including one the graft would refuse, so the graft says why).
fn first_news<'a, S: Store + 'static>(
    transaction: &syncbase_store::WatchableTransaction<S>,
    known: &Known,
    sent: &'a DeltaRecord,
    values: &mut Vec<Received<'a>>,
) -> Result<bool> {
    let record = &sent.record;
    let object = &record.object;
    let carries_what_it_needs = if record.deleted {
        sent.value.is_none()
    } else {
        sent.value.is_some()
    };
    if !carries_what_it_needs
        || known.has_head(transaction, object)?
        || known.has_node(transaction, object, record.version)?
    {
        return Ok(false);
    }
    for &parent in &record.parents {
        if known.has_node(transaction, object, parent)? {
            return Ok(false);
        }
    }
    let new = NewNode {
        parents: Vec::new(),
        log_record: Some(LogRecordId {
            device: record.device,
            generation: record.generation,
        }),
        batch_id: record.batch_id,
        deleted: record.deleted,
    };
    dag::insert_first_node(transaction, object, record.version, &new)?;
    match &sent.value {
        // Made current with the round's other first news, in one step.
        Some(value) => values.push((object, record.version, value)),
        None => transaction
            .delete_version(object, record.version)
            .map_err(version_error)?,
    }
    Ok(true)
}

/// Per collection (its rows' key prefix), the first and the last of `objects` that are its
/// rows; objects that are not rows are left out.
fn spans<'a>(objects: impl Iterator<Item = &'a [u8]>) -> BTreeMap<&'a [u8], (&'a [u8], &'a [u8])> {
    let mut spans: BTreeMap<&[u8], (&[u8], &[u8])> = BTreeMap::new();
    for object in objects {
        let Some(group) = keys::row_collection_prefix(object) else {
            continue;
        };
        let span = spans.entry(group).or_insert((object, object));
        span.0 = span.0.min(object);
        span.1 = span.1.max(object);
    }
    spans
}

/// Stores and makes current the first news' values: by collection, each with the range reads
/// [`syncbase_store::WatchableTransaction::put_current_versions`] makes over its span; a value
/// that is not a row's, alone.
fn put_first_values<S: Store + 'static>(
    transaction: &syncbase_store::WatchableTransaction<S>,
    values: Vec<Received<'_>>,
) -> Result<()> {
    let mut by_collection: BTreeMap<&[u8], Vec<Received<'_>>> = BTreeMap::new();
    for value in values {
        match keys::row_collection_prefix(value.0) {
            Some(group) => by_collection.entry(group).or_default().push(value),
            None => transaction
                .put_current_version(value.0, value.1, value.2)
                .map_err(version_error)?,
        }
    }
    for values in by_collection.into_values() {
        transaction
            .put_current_versions(&values)
            .map_err(version_error)?;
    }
    Ok(())
}

/// Fewest records in a round for which [`Known`] reads ranges rather than keys.
const SPAN_READ_MIN: usize = 64;

/// What a few range reads showed of the keys a large round is about, taken before the round
/// writes any: per collection, the span from its first to its last row in the round (other
/// collections' rows never lie inside it), and per device the range of generations the round
/// brings. A span or range that holds more than twice the round's keys is given up (left out:
/// its keys are read one by one), and so are objects that are not rows (a collection's
/// record). A first round of thousands of objects this device has never seen costs a few
/// empty range reads instead of five reads a record.
#[derive(Default)]
struct Known {
    /// Per collection (its rows' key prefix): the round's rows that have a head here.
    heads: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// Per collection: the round's rows that have a node here.
    nodes: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// Per device, the generations held within the range the round brings.
    records: HashMap<u64, BTreeSet<u64>>,
}

impl Known {
    fn read<R: StoreReader + ?Sized>(reader: &R, records: &[DeltaRecord]) -> Result<Self> {
        let mut known = Known::default();
        if records.len() < SPAN_READ_MIN {
            return Ok(known);
        }
        let most = records
            .len()
            .saturating_mul(2)
            .saturating_add(SPAN_READ_MIN);
        for (group, (first, last)) in spans(records.iter().map(|sent| &sent.record.object[..])) {
            let Some(heads) = dag::objects_with_heads(reader, first, last, most)? else {
                continue;
            };
            // A head's node is kept with it: objects with nodes are those with heads and those
            // with older nodes.
            if let Some(older) = dag::objects_with_older_nodes(reader, first, last, most)? {
                known
                    .nodes
                    .insert(group.to_vec(), heads.union(&older).cloned().collect());
            }
            known.heads.insert(group.to_vec(), heads);
        }
        let mut ranges: HashMap<u64, (u64, u64)> = HashMap::new();
        for sent in records {
            let (device, generation) = (sent.record.device, sent.record.generation);
            let range = ranges.entry(device).or_insert((generation, generation));
            range.0 = range.0.min(generation);
            range.1 = range.1.max(generation);
        }
        for (device, (first, last)) in ranges {
            if let Some(held) = watcher::generations_held(reader, device, first, last, most)? {
                known.records.insert(device, held);
            }
        }
        Ok(known)
    }

    /// What the reads showed of `object`'s collection, if they cover it.
    fn covering<'a>(
        sets: &'a HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
        object: &[u8],
    ) -> Option<&'a BTreeSet<Vec<u8>>> {
        keys::row_collection_prefix(object).and_then(|group| sets.get(group))
    }

    fn has_head<R: StoreReader + ?Sized>(&self, reader: &R, object: &[u8]) -> Result<bool> {
        match Self::covering(&self.heads, object) {
            Some(heads) => Ok(heads.contains(object)),
            None => Ok(dag::head(reader, object)?.is_some()),
        }
    }

    fn has_node<R: StoreReader + ?Sized>(
        &self,
        reader: &R,
        object: &[u8],
        version: Version,
    ) -> Result<bool> {
        if Self::covering(&self.nodes, object).is_some_and(|nodes| !nodes.contains(object)) {
            return Ok(false);
        }
        Ok(dag::node(reader, object, version)?.is_some())
    }

    /// Whether this database may hold `device`'s `generation` (false: it surely does not).
    fn may_hold_record(&self, device: u64, generation: u64) -> bool {
        self.records
            .get(&device)
            .is_none_or(|held| held.contains(&generation))
    }
}

/// Adds one received record to its object's DAG, and keeps the value it carries for the
/// round to store.
fn graft_record<'a, S: Store + 'static>(
    transaction: &syncbase_store::WatchableTransaction<S>,
    sent: &'a DeltaRecord,
    graft: &mut Graft,
    values: &mut Values<'a>,
) -> Result<()> {
    let record = &sent.record;
    let object = &record.object;
    if record.link {
        for &parent in &record.parents {
            let both_held = dag::node(transaction, object, record.version)?.is_some()
                && dag::node(transaction, object, parent)?.is_some();
            if both_held
                && !dag::ancestors(transaction, object, &[parent])?.contains(&record.version)
            {
                dag::add_parent(transaction, object, record.version, parent, Some(graft))?;
            }
        }
        return Ok(());
    }
    // Each node is read once: the record's own (it must be new) and its parents' (those held).
    if dag::node(transaction, object, record.version)?.is_some() {
        return Err(Error::DeltaInvalid(format!(
            "version {} of {} arrived under a second record",
            record.version.0,
            String::from_utf8_lossy(object)
        )));
    }
    let mut parents = Vec::with_capacity(record.parents.len());
    let mut parent_levels = Vec::with_capacity(record.parents.len());
    for &parent in &record.parents {
        if let Some(node) = dag::node(transaction, object, parent)? {
            parents.push(parent);
            parent_levels.push((parent, node.level));
        }
    }
    let new = NewNode {
        parents,
        log_record: Some(LogRecordId {
            device: record.device,
            generation: record.generation,
        }),
        batch_id: record.batch_id,
        deleted: record.deleted,
    };
    dag::insert_node(
        transaction,
        object,
        record.version,
        &new,
        &parent_levels,
        Some(graft),
    )?;
    if let Some(value) = &sent.value {
        if record.deleted {
            return Err(Error::DeltaInvalid(format!(
                "a deletion of {} carries a value",
                String::from_utf8_lossy(object)
            )));
        }
        values.keep(object, record.version, value);
    }
    Ok(())
}

/// Makes `version` of `object` the store's current version: a value it holds, or a tombstone.
fn make_current<S: Store + 'static>(
    transaction: &syncbase_store::WatchableTransaction<S>,
    object: &[u8],
    version: Version,
) -> Result<()> {
    let node = dag::node(transaction, object, version)?.ok_or_else(|| Error::DagInvalid {
        object: String::from_utf8_lossy(object).into_owned(),
        reason: format!("version {} is not in the DAG", version.0),
    })?;
    if node.deleted {
        return Ok(transaction.delete_version(object, version)?);
    }
    match transaction.get_at_version(object, version)? {
        Some(Stored::Value(_)) => Ok(transaction.put_version(object, version)?),
        _ => Err(Error::DeltaInvalid(format!(
            "version {} of {} became current here, but no peer sent its value",
            version.0,
            String::from_utf8_lossy(object)
        ))),
    }
}

/// The DAG's verdict for `object`. Its head now is the one the round found when it first
/// touched the object: the round's own transaction holds every local write (the watcher ran in
/// it first), and it moves an object's head only after deciding that object.
fn current_outcome(object: &[u8], graft: &Graft) -> Result<Outcome> {
    dag::outcome_at(object, graft, graft.old_head(object))
}

/// What the last-writer order needs of `version`: from the record that made it.
fn side<R: StoreReader + ?Sized>(reader: &R, object: &[u8], version: Version) -> Result<Side> {
    let node = dag::node(reader, object, version)?;
    let record = match node.as_ref().and_then(|node| node.log_record) {
        Some(id) => log_record(reader, id.device, id.generation)?,
        None => None,
    };
    Ok(Side {
        version,
        timestamp_ns: record.as_ref().map_or(0, |record| record.timestamp_ns),
        device: record.as_ref().map_or(0, |record| record.device),
        batch_id: record.as_ref().map_or(0, |record| record.batch_id),
        deleted: node.is_some_and(|node| node.deleted),
    })
}
