//! Conflict resolution (mirrors Go `vsync/conflict_resolution.go`): when a sync round leaves an
//! object with two heads ([`dag::Outcome::Conflict`](crate::dag::Outcome)), a [`Resolver`]
//! decides which side wins. Conflicts are first grouped into batch closures ([`group`]): two
//! conflicts whose local versions or whose remote versions were written in one atomic batch
//! reach the resolver together, so a batch never ends up half local and half remote.
//!
//! The default, [`LastWriterWins`], orders the two sides of each conflict by (timestamp, device,
//! batch, version): a total order that every device computes alike, so all devices pick the
//! same side whichever of them receives the conflict, and no resolution ever fails. Causality is not its business: a descendant of the local head never reaches it
//! (the DAG reports a fast-forward).

use std::collections::BTreeMap;

use syncbase_store::Version;

/// One side of a conflict: a version and what the last-writer order needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// The version.
    pub version: Version,
    /// Its timestamp (the writer's hybrid logical clock).
    pub timestamp_ns: u64,
    /// The device that wrote it.
    pub device: u64,
    /// The batch it was written in (0: none).
    pub batch_id: u64,
    /// Whether it is a deletion.
    pub deleted: bool,
}

impl Side {
    /// The key of the last-writer order: later timestamp, then larger device id, batch id and
    /// version.
    pub fn order_key(&self) -> (u64, u64, u64, u64) {
        (
            self.timestamp_ns,
            self.device,
            self.batch_id,
            self.version.0,
        )
    }
}

/// An object whose local head and a newly received head each hold changes the other lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The object.
    pub object: Vec<u8>,
    /// The local head.
    pub local: Side,
    /// The received head.
    pub remote: Side,
    /// Their common ancestor, if their histories meet.
    pub ancestor: Option<Side>,
}

/// How one conflict was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep the local version (the remote one becomes its parent by a link).
    Local,
    /// Take the remote version (the local one becomes its parent by a link).
    Remote,
}

/// The seam through which conflicts are resolved: last-writer-wins by default; app-defined
/// resolution plugs in here without touching how deltas are applied.
pub trait Resolver: Send + Sync {
    /// Decides one batch closure ([`group`]): one decision per conflict, in order. A resolver
    /// keeps atomic batches whole by deciding every conflict between the same two batches the
    /// same way; every device must reach the same decisions from the same conflicts. Either
    /// side may be chosen: the remote side of a conflict is the responder's current version of
    /// the object, which the responder sends with its value.
    fn decide(&self, group: &[Conflict]) -> Vec<Decision>;
}

/// The default resolver: the later write (by [`Side`]'s order) wins each conflict. Every write
/// of a batch carries the batch's timestamp, device and id, so two batches are ordered the same
/// way on every row they share: each batch either wins all its conflicts with another or loses
/// them all, and the outcome is the state of some serial order of the batches, on every device.
#[derive(Debug, Default, Clone, Copy)]
pub struct LastWriterWins;

impl Resolver for LastWriterWins {
    fn decide(&self, group: &[Conflict]) -> Vec<Decision> {
        group
            .iter()
            .map(|conflict| {
                if crate::mutant::on(crate::mutant::Mutant::ReceiverTiebreak)
                    && conflict.local.timestamp_ns == conflict.remote.timestamp_ns
                {
                    return Decision::Local;
                }
                if conflict.remote.order_key() > conflict.local.order_key() {
                    Decision::Remote
                } else {
                    Decision::Local
                }
            })
            .collect()
    }
}

/// Splits `conflicts` into batch closures: conflicts are in one group when their local versions
/// share a batch, or their remote versions do (transitively). Groups come in the order of their
/// first conflict; conflicts keep their order inside a group.
pub fn group(conflicts: Vec<Conflict>) -> Vec<Vec<Conflict>> {
    let mut parent: Vec<usize> = (0..conflicts.len()).collect();
    fn root(parent: &mut [usize], mut index: usize) -> usize {
        while parent[index] != index {
            parent[index] = parent[parent[index]];
            index = parent[index];
        }
        index
    }
    // The first conflict seen in each (side, batch), to join the later ones to it.
    let mut first_in_batch: BTreeMap<(bool, u64), usize> = BTreeMap::new();
    for (index, conflict) in conflicts.iter().enumerate() {
        for (is_local, batch_id) in [
            (true, conflict.local.batch_id),
            (false, conflict.remote.batch_id),
        ] {
            if batch_id == 0 {
                continue;
            }
            match first_in_batch.get(&(is_local, batch_id)) {
                Some(&first) => {
                    let (a, b) = (root(&mut parent, first), root(&mut parent, index));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first_in_batch.insert((is_local, batch_id), index);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<Conflict>> = BTreeMap::new();
    for (index, conflict) in conflicts.into_iter().enumerate() {
        let root = root(&mut parent, index);
        groups.entry(root).or_default().push(conflict);
    }
    groups.into_values().collect()
}
