//! The version DAG of each synced object (mirrors Go `vsync/dag.go`): which versions an object
//! has had, which version each one replaced (its parents: one, or two where a conflict was
//! resolved), the current head, and the batches versions were written in.
//!
//! Persisted in the database's store under the sync prefix (`keys::Prefix::Sync`), format
//! [`DAG_FORMAT_VERSION`]:
//!
//! | key              | value                                                          |
//! |------------------|----------------------------------------------------------------|
//! | `h OID`          | the head: its version and its [`DagNode`] (which names its batch) |
//! | `n OID VERSION`  | a [`DagNode`] that is not the head                             |
//! | `dagfmt`         | the format, once [`migrate`] has brought every head to it      |
//!
//! A node lives in one place: the head's in the head value, every other under `n`. An object
//! synced once has one key here, not two. Format 1 kept every node under `n` and only the
//! version in the head value; its heads are still read (the version alone is a lone varint, so
//! the two formats tell themselves apart), and [`migrate`] rewrites them. Earlier builds also
//! kept `b BATCH OID` → the version the batch wrote of that object, a key per synced write that
//! nothing but [`batch`] read (conflicts are grouped into batch closures by the batch ids their
//! records carry); it is no longer written, and pruning still removes the ones earlier builds
//! left.
//!
//! Remote versions arrive during a sync round and are added with a [`Graft`], which tracks per
//! object the new nodes, the candidate heads and the old nodes the new ones attach to (graft
//! points); [`has_conflict`] then tells a fast-forward from a conflict and names the common
//! ancestor. Records arrive parents first, so every parent of a node added is already there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use syncbase_store::{StoreReader, StoreWriter, Version};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{get_typed, put_typed, put_typed_owned};

use crate::error::{Error, Result};

/// The newest format of the DAG's keys this build reads and writes (see the module's table).
pub const DAG_FORMAT_VERSION: u32 = 2;

/// Attempts of a commit of [`migrate`] that meets a concurrent one.
const COMMIT_ATTEMPTS: usize = 8;

/// Heads [`migrate`] rewrites per commit.
const MIGRATION_HEADS_PER_COMMIT: usize = 10_000;

/// The most parents a new node has (two: a new value made by resolving a conflict between two
/// heads). Links ([`add_parent`]) may add more: a version that wins several conflicts in turn
/// names every version it won against.
pub const PARENTS_MAX: usize = 2;

/// Which sync log record made a version: the device that made it and its generation there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogRecordId {
    /// The device.
    pub device: u64,
    /// The generation on that device.
    pub generation: u64,
}

/// One version of an object in its DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagNode {
    /// 0 for a node without parents, else one more than its highest parent's.
    pub level: u64,
    /// The versions it replaced.
    pub parents: Vec<Version>,
    /// The log record that made it, if known.
    pub log_record: Option<LogRecordId>,
    /// The batch it was written in (0: none).
    pub batch_id: u64,
    /// Whether the version is a deletion (a tombstone).
    pub deleted: bool,
}

/// A head value: the head version and, from format 2, its node.
#[derive(Serialize)]
struct HeadRecord<'a> {
    version: Version,
    node: &'a DagNode,
}

#[derive(Deserialize)]
struct OwnedHeadRecord {
    version: Version,
    node: DagNode,
}

/// What a new node is, besides its object and version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewNode {
    /// The versions it replaced (at most [`PARENTS_MAX`]), all already in the DAG.
    pub parents: Vec<Version>,
    /// The log record that made it, if known.
    pub log_record: Option<LogRecordId>,
    /// The batch it was written in (0: none).
    pub batch_id: u64,
    /// Whether the version is a deletion.
    pub deleted: bool,
}

impl NewNode {
    /// Its node, at `level` in the DAG.
    fn at_level(&self, level: u64) -> DagNode {
        DagNode {
            level,
            parents: self.parents.clone(),
            log_record: self.log_record,
            batch_id: self.batch_id,
            deleted: self.deleted,
        }
    }
}

/// The objects (and their versions) one batch wrote, as far as the DAG still holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// Object → the version the batch wrote.
    pub objects: BTreeMap<Vec<u8>, Version>,
}

/// What a sync round did to one object's DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No new head: only links, or nodes the local head already descends from, arrived.
    Unchanged {
        /// The head (unchanged).
        head: Option<Version>,
    },
    /// The only new head descends from the local head: it becomes the head.
    FastForward {
        /// The new head.
        head: Version,
    },
    /// The local head and a new one each have changes the other lacks.
    Conflict {
        /// The local head.
        local: Version,
        /// The new head that arrived.
        remote: Version,
        /// Their common ancestor (the deepest graft point), if the two histories meet.
        ancestor: Option<Version>,
    },
}

/// What one sync round added to the DAGs of the objects it touched.
#[derive(Debug, Default)]
pub struct Graft {
    objects: BTreeMap<Vec<u8>, GraftObject>,
}

#[derive(Debug, Default)]
struct GraftObject {
    /// Nodes added this round.
    new_nodes: BTreeSet<Version>,
    /// Candidate heads: the local head at the start of the round and new nodes no other node
    /// names as a parent.
    new_heads: BTreeSet<Version>,
    /// Old nodes new ones attach to, with their levels.
    graft_points: BTreeMap<Version, u64>,
    /// The local head when the round first touched the object.
    old_head: Option<Version>,
}

impl Graft {
    /// An empty round.
    pub fn new() -> Self {
        Self::default()
    }

    /// The objects the round touched.
    pub fn objects(&self) -> impl Iterator<Item = &[u8]> {
        self.objects.keys().map(Vec::as_slice)
    }

    /// The head `object` had when the round first touched it.
    pub fn old_head(&self, object: &[u8]) -> Option<Version> {
        self.objects.get(object).and_then(|info| info.old_head)
    }

    /// The candidate heads of `object` after the round: the old head, unless a new node or link
    /// names it as a parent, and every new node nothing names as a parent.
    pub fn candidate_heads(&self, object: &[u8]) -> Vec<Version> {
        self.objects
            .get(object)
            .map(|info| info.new_heads.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The old nodes the round's new nodes of `object` attach to.
    pub fn graft_points(&self, object: &[u8]) -> Vec<Version> {
        self.objects
            .get(object)
            .map(|info| info.graft_points.keys().copied().collect())
            .unwrap_or_default()
    }

    fn object<R: StoreReader + ?Sized>(
        &mut self,
        reader: &R,
        object: &[u8],
    ) -> Result<&mut GraftObject> {
        if !self.objects.contains_key(object) {
            let old_head = head(reader, object)?;
            let info = GraftObject {
                old_head,
                new_heads: old_head.into_iter().collect(),
                ..GraftObject::default()
            };
            self.objects.insert(object.to_vec(), info);
        }
        Ok(self.objects.get_mut(object).expect("inserted just above"))
    }
}

fn format_key() -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"dagfmt"])
}

fn node_key(object: &[u8], version: Version) -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"n", object, &version.0.to_be_bytes()])
}

pub(crate) fn head_key(object: &[u8]) -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"h", object])
}

/// The start of the head keys of every object whose key starts with `object_prefix`.
pub(crate) fn head_key_prefix(object_prefix: &[u8]) -> Vec<u8> {
    keys::key_prefix(Prefix::Sync, &[b"h"], object_prefix)
}

fn batch_member_key(batch_id: u64, object: &[u8]) -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"b", &batch_id.to_be_bytes(), object])
}

fn invalid(object: &[u8], reason: impl Into<String>) -> Error {
    Error::DagInvalid {
        object: String::from_utf8_lossy(object).into_owned(),
        reason: reason.into(),
    }
}

/// Whether `bytes` is one postcard varint and nothing more: a head value of format 1.
fn is_lone_varint(bytes: &[u8]) -> bool {
    match bytes.split_last() {
        Some((last, rest)) => {
            bytes.len() <= 10 && last & 0x80 == 0 && rest.iter().all(|byte| byte & 0x80 != 0)
        }
        None => false,
    }
}

/// Decodes the head value `bytes` stored at `key`: the head version, and its node unless the
/// value is of format 1 (the node is then under its `n` key).
pub(crate) fn decode_head(key: &[u8], bytes: &[u8]) -> Result<(Version, Option<DagNode>)> {
    if is_lone_varint(bytes) {
        let version: Version = syncbase_util::decode_typed(key, bytes)?;
        return Ok((version, None));
    }
    let record: OwnedHeadRecord = syncbase_util::decode_typed(key, bytes)?;
    Ok((record.version, Some(record.node)))
}

/// `object`'s head version and its node (`None` for a head of format 1).
fn read_head<R: StoreReader + ?Sized>(
    reader: &R,
    object: &[u8],
) -> Result<Option<(Version, Option<DagNode>)>> {
    let key = head_key(object);
    reader
        .get(&key)?
        .map(|bytes| decode_head(&key, &bytes))
        .transpose()
}

fn put_head<W: StoreWriter + ?Sized>(
    writer: &W,
    object: &[u8],
    version: Version,
    node: &DagNode,
) -> Result<()> {
    Ok(put_typed_owned(
        writer,
        head_key(object),
        &HeadRecord { version, node },
    )?)
}

/// Where a node is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the head value.
    Head,
    /// Under its `n` key.
    Nodes,
}

/// A node of `object`'s DAG and where it is kept, if it has one at `version`.
fn locate<R: StoreReader + ?Sized>(
    reader: &R,
    object: &[u8],
    version: Version,
) -> Result<Option<(DagNode, Place)>> {
    if let Some((head, Some(node))) = read_head(reader, object)?
        && head == version
    {
        return Ok(Some((node, Place::Head)));
    }
    let node: Option<DagNode> = get_typed(reader, &node_key(object, version))?;
    Ok(node.map(|node| (node, Place::Nodes)))
}

/// Writes `node`, the node of `version`, back where it is kept.
fn store_node<W: StoreWriter + ?Sized>(
    writer: &W,
    object: &[u8],
    version: Version,
    node: &DagNode,
    place: Place,
) -> Result<()> {
    match place {
        Place::Head => put_head(writer, object, version, node),
        Place::Nodes => Ok(put_typed_owned(writer, node_key(object, version), node)?),
    }
}

/// A node of `object`'s DAG, if it has one at `version`.
pub fn node<R: StoreReader + ?Sized>(
    reader: &R,
    object: &[u8],
    version: Version,
) -> Result<Option<DagNode>> {
    Ok(locate(reader, object, version)?.map(|(node, _)| node))
}

/// The head of `object`'s DAG (its current version), if it has one.
pub fn head<R: StoreReader + ?Sized>(reader: &R, object: &[u8]) -> Result<Option<Version>> {
    Ok(read_head(reader, object)?.map(|(version, _)| version))
}

/// The DAG's format in `reader` (1: written before format stamps).
pub fn format<R: StoreReader + ?Sized>(reader: &R) -> Result<u32> {
    Ok(get_typed(reader, &format_key())?.unwrap_or(1))
}

/// Brings the DAG in `store` to [`DAG_FORMAT_VERSION`]: every head of format 1 takes its node
/// into its value, in commits of [`MIGRATION_HEADS_PER_COMMIT`] heads (a crash between them
/// leaves heads of both formats, which read alike, and the next call goes on); the stamp is
/// written last. A DAG of a newer format is refused. Returns how many heads it rewrote.
pub fn migrate<S: syncbase_store::Store + ?Sized>(store: &S) -> Result<u64> {
    let (start, limit) = keys::prefix_range(&head_key_prefix(b""));
    let mut from = start;
    let mut rewritten = 0u64;
    let mut attempts = 0;
    loop {
        let transaction = store.transaction()?;
        let found = format(transaction.as_ref())?;
        if found > DAG_FORMAT_VERSION {
            return Err(Error::DagInvalid {
                object: String::new(),
                reason: format!(
                    "the DAG is in format {found}, written by a newer build (this one reads up \
                     to {DAG_FORMAT_VERSION})"
                ),
            });
        }
        if found == DAG_FORMAT_VERSION {
            return Ok(rewritten);
        }
        let mut old = Vec::new();
        let mut next = None;
        for (seen, entry) in transaction.scan(&from, &limit)?.enumerate() {
            let (key, value) = entry?;
            if seen == MIGRATION_HEADS_PER_COMMIT {
                next = Some(key);
                break;
            }
            if is_lone_varint(&value) {
                old.push((key, value));
            }
        }
        let before = rewritten;
        for (key, value) in old {
            let (_, components) = keys::parse(&key)?;
            let object = components
                .get(1)
                .ok_or_else(|| invalid(&key, "a head key without an object"))?;
            let (version, _) = decode_head(&key, &value)?;
            // A head whose node is missing stays as it is (it reads as it did).
            let Some(node) =
                get_typed::<DagNode, _>(transaction.as_ref(), &node_key(object, version))?
            else {
                continue;
            };
            transaction.delete(&node_key(object, version))?;
            put_head(transaction.as_ref(), object, version, &node)?;
            rewritten += 1;
        }
        if next.is_none() {
            put_typed(transaction.as_ref(), &format_key(), &DAG_FORMAT_VERSION)?;
        }
        match transaction.commit() {
            // A concurrent commit met this one: the same heads again.
            Err(syncbase_store::Error::ConcurrentTransaction) if attempts + 1 < COMMIT_ATTEMPTS => {
                attempts += 1;
                rewritten = before;
                continue;
            }
            outcome => outcome?,
        }
        attempts = 0;
        match next {
            Some(key) => from = key,
            None => return Ok(rewritten),
        }
    }
}

/// What `batch_id` wrote, as far as the DAG still holds it (`None`: nothing). It reads every
/// node of the DAG (the batch is named only by its nodes): for tests and tools, not for a sync
/// round.
pub fn batch<R: StoreReader + ?Sized>(reader: &R, batch_id: u64) -> Result<Option<BatchInfo>> {
    let mut info = BatchInfo::default();
    let (start, limit) = keys::prefix_range(&head_key_prefix(b""));
    for entry in reader.scan(&start, &limit)? {
        let (key, value) = entry?;
        if let (version, Some(node)) = decode_head(&key, &value)?
            && node.batch_id == batch_id
        {
            let (_, mut components) = keys::parse(&key)?;
            note_batch_member(&mut info, components.pop().unwrap_or_default(), version);
        }
    }
    let (start, limit) = keys::prefix_range(&keys::key_prefix(Prefix::Sync, &[b"n"], b""));
    for entry in reader.scan(&start, &limit)? {
        let (key, value) = entry?;
        let node: DagNode = syncbase_util::decode_typed(&key, &value)?;
        if node.batch_id != batch_id {
            continue;
        }
        let (_, mut components) = keys::parse(&key)?;
        let version = components
            .pop()
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(|bytes| Version(u64::from_be_bytes(bytes)))
            .ok_or_else(|| invalid(&key, "a node key without a version"))?;
        let object = components.pop().unwrap_or_default();
        note_batch_member(&mut info, object, version);
    }
    Ok((!info.objects.is_empty()).then_some(info))
}

/// Notes that a batch wrote `version` of `object`: of two versions, the larger.
fn note_batch_member(info: &mut BatchInfo, object: Vec<u8>, version: Version) {
    let noted = info.objects.entry(object).or_insert(version);
    *noted = (*noted).max(version);
}

fn existing_node<R: StoreReader + ?Sized>(
    reader: &R,
    object: &[u8],
    version: Version,
    role: &str,
) -> Result<DagNode> {
    node(reader, object, version)?.ok_or_else(|| {
        invalid(
            object,
            format!("{role} version {} is not in the DAG", version.0),
        )
    })
}

/// Adds `version` of `object` with its parents (all already in the DAG). Adding a node that is
/// already there with the same parents does nothing (a record received twice); with other
/// parents it is refused. With a `graft`, the node counts as this round's (remote); without one
/// it is local, and the caller moves the head ([`move_head`]).
pub fn add_node<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    object: &[u8],
    version: Version,
    new: &NewNode,
    graft: Option<&mut Graft>,
) -> Result<()> {
    check_parents(object, version, new)?;
    if let Some(existing) = node(transaction, object, version)? {
        let same: BTreeSet<_> = existing.parents.iter().collect();
        if same == new.parents.iter().collect() && existing.deleted == new.deleted {
            return Ok(());
        }
        return Err(invalid(
            object,
            format!(
                "version {} is already in the DAG with other parents",
                version.0
            ),
        ));
    }
    let mut parent_levels = Vec::with_capacity(new.parents.len());
    for &parent in &new.parents {
        let parent_node = existing_node(transaction, object, parent, "parent")?;
        parent_levels.push((parent, parent_node.level));
    }
    insert_node(transaction, object, version, new, &parent_levels, graft)
}

/// A new node has at most [`PARENTS_MAX`] parents, and is not its own.
fn check_parents(object: &[u8], version: Version, new: &NewNode) -> Result<()> {
    if new.parents.len() > PARENTS_MAX {
        return Err(invalid(
            object,
            format!("version {} has {} parents", version.0, new.parents.len()),
        ));
    }
    if new.parents.contains(&version) {
        return Err(invalid(
            object,
            format!("version {} is its own parent", version.0),
        ));
    }
    Ok(())
}

/// Adds `version` of `object`, which the caller found absent from the DAG, with its parents
/// and their levels as the caller read them (`parent_levels` holds every parent of `new`):
/// [`add_node`] without its reads, for a sync round that has read them already.
pub fn insert_node<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    object: &[u8],
    version: Version,
    new: &NewNode,
    parent_levels: &[(Version, u64)],
    graft: Option<&mut Graft>,
) -> Result<()> {
    check_parents(object, version, new)?;
    let same_parents = parent_levels.len() == new.parents.len()
        && parent_levels
            .iter()
            .all(|(parent, _)| new.parents.contains(parent));
    if !same_parents {
        return Err(invalid(
            object,
            format!(
                "version {}: parent levels do not match its parents",
                version.0
            ),
        ));
    }
    let level = parent_levels
        .iter()
        .map(|(_, level)| level + 1)
        .max()
        .unwrap_or(0);
    let node = new.at_level(level);
    put_typed_owned(transaction, node_key(object, version), &node)?;
    if let Some(graft) = graft {
        let info = graft.object(transaction, object)?;
        for &(parent, parent_level) in parent_levels {
            if !info.new_nodes.contains(&parent) {
                info.graft_points.insert(parent, parent_level);
            }
            info.new_heads.remove(&parent);
        }
        info.new_nodes.insert(version);
        info.new_heads.insert(version);
    }
    Ok(())
}

/// Adds `parent` as a parent of `version` (both in the DAG): a link, recording that a conflict
/// was resolved by picking an existing version. An edge already there does nothing; one that
/// would close a cycle is refused.
pub fn add_parent<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    object: &[u8],
    version: Version,
    parent: Version,
    graft: Option<&mut Graft>,
) -> Result<()> {
    if version == parent {
        return Err(invalid(
            object,
            format!("version {} is its own parent", version.0),
        ));
    }
    let (mut child, place) = locate(transaction, object, version)?.ok_or_else(|| {
        invalid(
            object,
            format!("child version {} is not in the DAG", version.0),
        )
    })?;
    let parent_node = existing_node(transaction, object, parent, "parent")?;
    if child.parents.contains(&parent) {
        return Ok(());
    }
    if ancestors(transaction, object, &[parent])?.contains(&version) {
        return Err(invalid(
            object,
            format!(
                "a link from {} to {} would close a cycle",
                version.0, parent.0
            ),
        ));
    }
    child.parents.push(parent);
    store_node(transaction, object, version, &child, place)?;
    if let Some(graft) = graft {
        let info = graft.object(transaction, object)?;
        if !info.new_nodes.contains(&parent) {
            info.graft_points.insert(parent, parent_node.level);
        }
        info.new_heads.remove(&parent);
    }
    Ok(())
}

/// Makes `version` (in the DAG) the head of `object`: its node moves into the head value, and
/// the old head's node out of it.
pub fn move_head<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    object: &[u8],
    version: Version,
) -> Result<()> {
    let old = read_head(transaction, object)?;
    if old.as_ref().is_some_and(|(head, _)| *head == version) {
        return Ok(());
    }
    let key = node_key(object, version);
    let node: DagNode = get_typed(transaction, &key)?.ok_or_else(|| {
        invalid(
            object,
            format!("head version {} is not in the DAG", version.0),
        )
    })?;
    transaction.delete(&key)?;
    replace_head(transaction, object, old, version, &node)
}

/// Puts `node` of `version` in the head value of `object`, whose head was `old`; the old head's
/// node, if the value held it, moves under its `n` key.
fn replace_head<W: StoreWriter + ?Sized>(
    writer: &W,
    object: &[u8],
    old: Option<(Version, Option<DagNode>)>,
    version: Version,
    node: &DagNode,
) -> Result<()> {
    if let Some((old_version, Some(old_node))) = old {
        put_typed_owned(writer, node_key(object, old_version), &old_node)?;
    }
    put_head(writer, object, version, node)
}

/// Makes `version` the head of `object`, adding its node first if the DAG lacks it (`new`: its
/// parents, all in the DAG): a local change, recorded as it happens. A node already there keeps
/// its parents.
pub fn add_head<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    object: &[u8],
    version: Version,
    new: &NewNode,
) -> Result<()> {
    let old = read_head(transaction, object)?;
    if old.as_ref().is_some_and(|(head, _)| *head == version) {
        return Ok(());
    }
    if get_typed::<DagNode, _>(transaction, &node_key(object, version))?.is_some() {
        return move_head(transaction, object, version);
    }
    check_parents(object, version, new)?;
    let mut level = 0;
    for &parent in &new.parents {
        let parent_level = match &old {
            Some((head, Some(node))) if *head == parent => node.level,
            _ => existing_node(transaction, object, parent, "parent")?.level,
        };
        level = level.max(parent_level + 1);
    }
    let node = new.at_level(level);
    replace_head(transaction, object, old, version, &node)
}

/// The objects from `first` to `last` (in key order) that have a head here, read with one range
/// read; `None` once it has read `most` keys (the caller then asks object by object).
pub fn objects_with_heads<R: StoreReader + ?Sized>(
    reader: &R,
    first: &[u8],
    last: &[u8],
    most: usize,
) -> Result<Option<BTreeSet<Vec<u8>>>> {
    objects_in(reader, &head_key(first), &head_key(last), most)
}

/// The objects from `first` to `last` that have a node other than their head's (one kept
/// under its own key), as [`objects_with_heads`] (with which they are the objects with any node here).
pub fn objects_with_older_nodes<R: StoreReader + ?Sized>(
    reader: &R,
    first: &[u8],
    last: &[u8],
    most: usize,
) -> Result<Option<BTreeSet<Vec<u8>>>> {
    let object_key = |object: &[u8]| keys::key(Prefix::Sync, &[b"n", object]);
    objects_in(reader, &object_key(first), &object_key(last), most)
}

/// The objects (second component) of the keys from `start` to every key starting with `last`.
fn objects_in<R: StoreReader + ?Sized>(
    reader: &R,
    start: &[u8],
    last: &[u8],
    most: usize,
) -> Result<Option<BTreeSet<Vec<u8>>>> {
    let limit = syncbase_store::prefix_limit(last);
    let mut objects = BTreeSet::new();
    let all = syncbase_store::visit_at_most(reader.scan(start, &limit)?, most, |(key, _)| {
        let (_, mut components) = keys::parse(&key)?;
        if components.len() >= 2 {
            objects.insert(components.swap_remove(1));
        }
        Ok::<_, Error>(())
    })?;
    Ok(all.then_some(objects))
}

/// Adds `version` as the first node of `object`, which the caller found without a head or any
/// node, and makes it the head: one write (`new` names no parents).
pub fn insert_first_node<W: StoreWriter + ?Sized>(
    writer: &W,
    object: &[u8],
    version: Version,
    new: &NewNode,
) -> Result<()> {
    if !new.parents.is_empty() {
        return Err(invalid(
            object,
            format!("version {} is a first node with parents", version.0),
        ));
    }
    let node = new.at_level(0);
    put_head(writer, object, version, &node)
}

/// After a round's nodes and links of `object` were added with `graft`: whether the object's
/// history forked, and if so where the two sides meet.
pub fn has_conflict<R: StoreReader + ?Sized>(
    reader: &R,
    object: &[u8],
    graft: &Graft,
) -> Result<Outcome> {
    outcome_at(object, graft, head(reader, object)?)
}

/// [`has_conflict`] for a caller that knows the object's head now (`current`): a round that
/// grafted and decides in one transaction, where only the round itself moves heads, and it
/// moves an object's head only once it has decided it.
pub fn outcome_at(object: &[u8], graft: &Graft, current: Option<Version>) -> Result<Outcome> {
    let Some(info) = graft.objects.get(object) else {
        return Ok(Outcome::Unchanged { head: current });
    };
    let heads: Vec<Version> = info.new_heads.iter().copied().collect();
    match heads[..] {
        [only] if Some(only) == info.old_head => Ok(Outcome::Unchanged { head: current }),
        [only] if current == info.old_head => Ok(Outcome::FastForward { head: only }),
        // A local write moved the head since the round began: the new head and it conflict,
        // and they meet at the head the round started from.
        [only] => Ok(Outcome::Conflict {
            local: current.ok_or_else(|| invalid(object, "the head vanished during a round"))?,
            remote: only,
            ancestor: info.old_head,
        }),
        [first, second] => {
            let local = info
                .old_head
                .filter(|old| *old == first || *old == second)
                .ok_or_else(|| invalid(object, "two new heads, neither of them the local one"))?;
            let remote = if local == first { second } else { first };
            // The deepest graft point; between equally deep ones, the larger version.
            let ancestor = info
                .graft_points
                .iter()
                .max_by_key(|(version, level)| (**level, **version))
                .map(|(version, _)| *version);
            Ok(Outcome::Conflict {
                local,
                remote,
                ancestor,
            })
        }
        _ => Err(invalid(
            object,
            format!("a round left {} candidate heads", heads.len()),
        )),
    }
}

/// `starts` and every version they descend from, each once (versions already pruned are
/// skipped).
pub fn ancestors<R: StoreReader + ?Sized>(
    reader: &R,
    object: &[u8],
    starts: &[Version],
) -> Result<BTreeSet<Version>> {
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<Version> = starts.iter().copied().collect();
    while let Some(version) = queue.pop_front() {
        if seen.contains(&version) {
            continue;
        }
        let Some(node) = node(reader, object, version)? else {
            continue;
        };
        seen.insert(version);
        queue.extend(node.parents);
    }
    Ok(seen)
}

/// Makes `version` a root of `object`'s DAG: its parents are cleared and every version it
/// descends from is removed, with its log record (through `remove_log_record`) and its place in
/// its batch (a batch left empty goes). Returns the versions removed. A failure to remove a log
/// record does not stop the rest: every node still goes, and the first such error is returned.
pub fn prune<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    object: &[u8],
    version: Version,
    remove_log_record: &mut dyn FnMut(LogRecordId) -> Result<()>,
) -> Result<BTreeSet<Version>> {
    let (mut root, root_place) = locate(transaction, object, version)?.ok_or_else(|| {
        invalid(
            object,
            format!("pruning version {} is not in the DAG", version.0),
        )
    })?;
    let mut doomed = ancestors(transaction, object, &[version])?;
    doomed.remove(&version);
    if let Some(head) = head(transaction, object)?
        && doomed.contains(&head)
    {
        return Err(invalid(
            object,
            format!(
                "pruning at version {} would remove the head {}",
                version.0, head.0
            ),
        ));
    }
    let mut first_error = None;
    for &old in &doomed {
        let Some(old_node) = node(transaction, object, old)? else {
            continue;
        };
        if let Some(record) = old_node.log_record
            && let Err(error) = remove_log_record(record)
        {
            first_error.get_or_insert(error);
        }
        if old_node.batch_id != 0 {
            // The batch's index key, if an older build wrote one.
            let key = batch_member_key(old_node.batch_id, object);
            if get_typed::<Version, _>(transaction, &key)? == Some(old) {
                transaction.delete(&key)?;
            }
        }
        transaction.delete(&node_key(object, old))?;
    }
    if !root.parents.is_empty() {
        root.parents.clear();
        store_node(transaction, object, version, &root, root_place)?;
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(doomed),
    }
}

/// Keeps, through the watchable layer's holder seam, the version that is the head of its
/// object's DAG: the one a responder sends with its value. (While the watcher lags, the head is
/// a version a newer local write replaced; the watcher's pin keeps it too, but the holder does
/// not depend on the pin.)
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadHolder;

impl syncbase_store::VersionHolder for HeadHolder {
    fn holds(
        &self,
        reader: &dyn StoreReader,
        key: &[u8],
        version: Version,
    ) -> syncbase_store::Result<bool> {
        match head(reader, key) {
            Ok(head) => Ok(head == Some(version)),
            Err(Error::Store(error)) => Err(error),
            Err(error) => Err(syncbase_store::Error::Corrupt(error.to_string())),
        }
    }
}
