//! What a device knows (mirrors Go `GenVector` and `Knowledge` in `interfaces/sync_types`):
//! per device, the highest generation of its changes seen, kept per (collection, row-key prefix)
//! so that syncgroups narrowed to prefixes fit later; the empty prefix means the whole collection.
//!
//! A responder compares an initiator's knowledge with its own ([`GenVector::missing`]) to find,
//! per device, the range of generations to send, never scanning rows to find what is missing.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// A device's id.
pub type DeviceId = u64;

/// Per device, the highest generation known (a device absent knows nothing of it: 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenVector(BTreeMap<DeviceId, u64>);

/// How two generation vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// They know the same.
    Equal,
    /// The first knows less, nothing more.
    Less,
    /// The first knows more, nothing less.
    Greater,
    /// Each knows something the other does not.
    Incomparable,
}

impl GenVector {
    /// An empty vector (knows nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest generation of `device` known (0: none).
    pub fn get(&self, device: DeviceId) -> u64 {
        self.0.get(&device).copied().unwrap_or(0)
    }

    /// Records that generations of `device` up to `generation` are known (never lowers it).
    pub fn advance(&mut self, device: DeviceId, generation: u64) {
        if generation > 0 {
            let entry = self.0.entry(device).or_insert(0);
            *entry = (*entry).max(generation);
        }
    }

    /// Takes in everything `other` knows (element-wise maximum).
    pub fn merge(&mut self, other: &GenVector) {
        for (&device, &generation) in &other.0 {
            self.advance(device, generation);
        }
    }

    /// Every device with something known, and its generation.
    pub fn iter(&self) -> impl Iterator<Item = (DeviceId, u64)> + '_ {
        self.0
            .iter()
            .map(|(device, generation)| (*device, *generation))
    }

    /// How `self` relates to `other` (a device missing from one side counts as 0 there).
    pub fn relation(&self, other: &GenVector) -> Relation {
        let (mut less, mut greater) = (false, false);
        for device in self.0.keys().chain(other.0.keys()) {
            let (mine, theirs) = (self.get(*device), other.get(*device));
            less |= mine < theirs;
            greater |= mine > theirs;
        }
        match (less, greater) {
            (false, false) => Relation::Equal,
            (true, false) => Relation::Less,
            (false, true) => Relation::Greater,
            (true, true) => Relation::Incomparable,
        }
    }

    /// What `self` (a responder's knowledge) has that `initiator` lacks: per device, the range
    /// of generations to send. Devices the initiator is ahead on, or equal, have none.
    pub fn missing(&self, initiator: &GenVector) -> BTreeMap<DeviceId, RangeInclusive<u64>> {
        self.iter()
            .filter(|(device, generation)| initiator.get(*device) < *generation)
            .map(|(device, generation)| (device, initiator.get(device) + 1..=generation))
            .collect()
    }
}

impl FromIterator<(DeviceId, u64)> for GenVector {
    fn from_iter<I: IntoIterator<Item = (DeviceId, u64)>>(entries: I) -> Self {
        let mut vector = GenVector::new();
        for (device, generation) in entries {
            vector.advance(device, generation);
        }
        vector
    }
}

/// Where a generation vector applies: a collection, and a row-key prefix in it (empty: all).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// The collection.
    pub collection: String,
    /// The row-key prefix (empty: the whole collection).
    #[serde(with = "serde_bytes")]
    pub prefix: Vec<u8>,
}

impl Scope {
    /// A whole collection.
    pub fn collection(collection: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            prefix: Vec::new(),
        }
    }

    /// Whether this scope contains every row of `other`.
    pub fn covers(&self, other: &Scope) -> bool {
        self.collection == other.collection && other.prefix.starts_with(&self.prefix)
    }
}

/// What a device knows, scope by scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knowledge(BTreeMap<Scope, GenVector>);

impl Knowledge {
    /// Knows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// What is known of every row in `scope`: the vector of the narrowest scope that covers it
    /// (knowledge of a wider scope holds for every narrower one), or nothing.
    pub fn of(&self, scope: &Scope) -> GenVector {
        self.0
            .iter()
            .filter(|(known, _)| known.covers(scope))
            .max_by_key(|(known, _)| known.prefix.len())
            .map(|(_, vector)| vector.clone())
            .unwrap_or_default()
    }

    /// Sets what is known of `scope`.
    pub fn set(&mut self, scope: Scope, vector: GenVector) {
        self.0.insert(scope, vector);
    }

    /// Every scope with its vector.
    pub fn iter(&self) -> impl Iterator<Item = (&Scope, &GenVector)> {
        self.0.iter()
    }

    /// Takes in what `learned` holds: each of its vectors is merged into its own scope and into
    /// every narrower scope already known (what holds for a collection holds for each prefix).
    pub fn merge(&mut self, learned: &Knowledge) {
        for (scope, vector) in &learned.0 {
            let narrower: Vec<Scope> = self
                .0
                .keys()
                .filter(|known| scope.covers(known))
                .cloned()
                .collect();
            for known in narrower {
                self.0.get_mut(&known).expect("listed above").merge(vector);
            }
            if !self.0.contains_key(scope) {
                let mut merged = self.of(scope);
                merged.merge(vector);
                self.0.insert(scope.clone(), merged);
            }
        }
    }
}
