//! Per-database sync state (mirrors Go `vsync/sync.go` and the parts of `initiator.go` and
//! `responder.go` that decide who talks to whom): the protocol core as a state machine.
//!
//! [`DatabaseSync::handle`] takes one [`Event`] (a local commit, a tick, a message from a peer)
//! and returns the [`Action`]s it calls for (messages to send). It does no I/O and reads no clock
//! and no randomness of its own: time and ids come through the hybrid clock and the `Rng` it is
//! given, and the store is a real [`Watchable`]. Drivers do the I/O: the simulator
//! (`crates/sim`) delivers messages through a simulated network, and the daemon (next issue)
//! over connections. So one seed replays a run exactly.
//!
//! A round: the initiator sends [`Message::Pull`] with its knowledge; the responder answers
//! [`Message::Delta`] with what it lacks, for the collections of syncgroups the initiator is a
//! member of and may read; the initiator applies it in one commit (or, between daemons, each of
//! its parts in one commit as it arrives, the knowledge with the last: [`Delta::into_parts`]). [`Message::Notify`] (no data)
//! tells members that new generations exist, so they pull at once (push); ticks pull from every
//! member (anti-entropy, which repairs what a lost notification leaves). A delta is admitted only
//! from a member, only with records of collections shared with it, and only with knowledge of
//! those collections.
//!
//! What sync needs from the data model (who may read a collection, which databases have
//! syncgroups, opening a database without a client caller, hearing that one closes) comes
//! through [`DataModel`], which vsync owns and the data model (`syncbase-nosql`) implements.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use syncbase_store::{Rng, Store, Version, Watchable};
use syncbase_util::HybridClock;

use crate::conflict::Resolver;
use crate::dag;
use crate::error::{Error, Result};
use crate::initiator::{ApplyOutcome, Initiator};
use crate::knowledge::{DeviceId, GenVector, Knowledge, Scope};
use crate::responder::{Delta, Planned, plan, stored_knowledge};
use crate::syncgroup::syncgroups;
use crate::watcher::{self, local_generation};

/// The largest timestamp a received record may carry (about the year 2262).
pub const TIMESTAMP_MAX_NS: u64 = u64::MAX / 2;

/// Log entries a watcher step takes at most (a step is one commit).
const WATCHER_STEP_ENTRIES_MAX: usize = 256;

/// Called with (`app`, `database`) when a database closes or is destroyed.
pub type ClosedListener = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// What sync needs from the data model of one service, implemented by `syncbase-nosql`.
pub trait DataModel: Send + Sync {
    /// The store type of a database.
    type Store: Store + 'static;

    /// Every database (`app`, `database`) that has at least one syncgroup.
    fn databases_with_syncgroups(&self) -> Result<Vec<(String, String)>>;

    /// Opens a database for sync, with no client caller (sync's own access).
    fn open_for_sync(&self, app: &str, database: &str) -> Result<Arc<Watchable<Self::Store>>>;

    /// Whether `principal` may read `collection` of a database: by the collection's
    /// permissions as of version `at` of its record (while that version is kept), or its
    /// current ones. A collection that does not exist (or was destroyed) is read by nobody.
    fn may_read(
        &self,
        app: &str,
        database: &str,
        collection: &str,
        principal: &str,
        at: Option<Version>,
    ) -> Result<bool>;

    /// Registers `listener` to hear when a database closes or is destroyed.
    fn on_database_closed(&self, listener: ClosedListener);
}

/// Who may read what, for one database (a [`DataModel`] narrowed to it, or [`Everyone`]).
pub trait ReadAccess: Send + Sync {
    /// Whether `principal` may read `collection`.
    fn may_read(&self, collection: &str, principal: &str) -> Result<bool>;
}

/// Every member may read every collection (tests and the simulator).
#[derive(Debug, Default, Clone, Copy)]
pub struct Everyone;

impl ReadAccess for Everyone {
    fn may_read(&self, _collection: &str, _principal: &str) -> Result<bool> {
        Ok(true)
    }
}

/// A [`DataModel`]'s read check for one database.
pub struct ModelAccess<M: DataModel> {
    /// The data model.
    pub model: Arc<M>,
    /// The database's app.
    pub app: String,
    /// The database.
    pub database: String,
}

impl<M: DataModel> ReadAccess for ModelAccess<M> {
    fn may_read(&self, collection: &str, principal: &str) -> Result<bool> {
        self.model
            .may_read(&self.app, &self.database, collection, principal, None)
    }
}

/// A message between two members' sync of one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "New generations exist here": the receiver pulls. Carries no data.
    Notify,
    /// What the sender knows; the receiver answers with a [`Message::Delta`].
    Pull {
        /// The sender's knowledge, scope by scope (its own generations included).
        knowledge: Knowledge,
    },
    /// What the receiver of a pull lacked.
    Delta(Delta),
}

/// Something that happened to this device's sync of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Local commits may have been made: run the watcher.
    LocalCommit,
    /// Time to pull from every member (anti-entropy).
    Tick,
    /// The driver (re)started: catch up with every member, and tell each to pull (what this
    /// device committed before it stopped may never have been announced).
    Start,
    /// A message arrived from the member `from` (a verified principal name).
    Received {
        /// The sender.
        from: String,
        /// The message.
        message: Message,
    },
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `message` to the member `to`.
    Send {
        /// The receiver.
        to: String,
        /// The message.
        message: Message,
    },
}

/// What [`DatabaseSync::handle`] did besides its actions, for drivers and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    /// What to do next.
    pub actions: Vec<Action>,
    /// Log records the watcher made.
    pub records_made: u64,
    /// What applying a received delta did.
    pub applied: Option<ApplyOutcome>,
    /// Records a delta sent to the puller carried.
    pub records_sent: u64,
}

/// The answer to a pull, read from one snapshot but for its values ([`Planned`]), which are
/// read with the delta or with each of its parts ([`PullAnswer::into_parts`]).
pub struct PullAnswer<S: Store + 'static> {
    snapshot: Arc<syncbase_store::WatchableSnapshot<S>>,
    planned: Planned,
}

impl<S: Store + 'static> PullAnswer<S> {
    /// How many records the answer holds.
    pub fn len(&self) -> usize {
        self.planned.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    /// What the puller knows of each scope once it has applied the answer.
    pub fn knowledge(&self) -> &Knowledge {
        self.planned.knowledge()
    }

    /// The parts of the answer ([`Delta::into_parts`]), each still to be read.
    pub fn into_parts(self, records_min: usize) -> Vec<PullAnswer<S>> {
        let snapshot = self.snapshot;
        self.planned
            .into_parts(records_min)
            .into_iter()
            .map(|planned| PullAnswer {
                snapshot: snapshot.clone(),
                planned,
            })
            .collect()
    }

    /// The delta, its values read.
    pub fn read(self) -> Result<Delta> {
        self.planned.read(&self.snapshot)
    }
}

/// One device's sync of one database.
pub struct DatabaseSync<S: Store + 'static> {
    store: Arc<Watchable<S>>,
    member: String,
    device: DeviceId,
    clock: Arc<HybridClock>,
    rng: Arc<dyn Rng>,
    resolver: Arc<dyn Resolver>,
    access: Arc<dyn ReadAccess>,
}

impl<S: Store + 'static> DatabaseSync<S> {
    /// Sync of `store` as the member `member` (this daemon's principal name) on `device`.
    /// `clock` must be the hybrid clock the store's local commits are stamped with. Starts the
    /// watcher at the log's end if it has no position yet, after bringing the DAG to this
    /// build's format ([`dag::migrate`]; a DAG of a newer build is refused).
    pub fn new(
        store: Arc<Watchable<S>>,
        member: impl Into<String>,
        device: DeviceId,
        clock: Arc<HybridClock>,
        rng: Arc<dyn Rng>,
        resolver: Arc<dyn Resolver>,
        access: Arc<dyn ReadAccess>,
    ) -> Result<Self> {
        dag::migrate(store.as_ref())?;
        watcher::start(&store, store.latest_log_seq() + 1)?;
        Ok(Self {
            store,
            member: member.into(),
            device,
            clock,
            rng,
            resolver,
            access,
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<Watchable<S>> {
        &self.store
    }

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Handles one event.
    pub fn handle(&self, event: Event) -> Result<Handled> {
        let mut handled = Handled::default();
        match event {
            Event::LocalCommit => {
                handled.records_made = self.catch_up()?;
                if handled.records_made > 0 {
                    self.notify_members(None, &mut handled.actions)?;
                }
            }
            Event::Start => {
                handled.records_made = self.catch_up()?;
                let knowledge = self.knowledge()?;
                for to in self.members()? {
                    handled.actions.push(Action::Send {
                        to: to.clone(),
                        message: Message::Notify,
                    });
                    handled.actions.push(Action::Send {
                        to,
                        message: Message::Pull {
                            knowledge: knowledge.clone(),
                        },
                    });
                }
            }
            Event::Tick => {
                let knowledge = self.knowledge()?;
                for to in self.members()? {
                    handled.actions.push(Action::Send {
                        to,
                        message: Message::Pull {
                            knowledge: knowledge.clone(),
                        },
                    });
                }
            }
            Event::Received { from, message } => match message {
                Message::Notify => {
                    if self.members()?.contains(&from) {
                        handled.actions.push(Action::Send {
                            to: from,
                            message: Message::Pull {
                                knowledge: self.knowledge()?,
                            },
                        });
                    }
                }
                Message::Pull { knowledge } => {
                    let delta = self.answer(&from, &knowledge)?.read()?;
                    handled.records_sent = delta.records.len() as u64;
                    handled.actions.push(Action::Send {
                        to: from,
                        message: Message::Delta(delta),
                    });
                }
                Message::Delta(delta) => {
                    let delta = self.admit(&from, delta)?;
                    let initiator = Initiator {
                        device: self.device,
                        clock: &self.clock,
                        rng: self.rng.as_ref(),
                        resolver: self.resolver.as_ref(),
                    };
                    let outcome = initiator.apply(&self.store, &delta)?;
                    if !delta.syncgroups.is_empty() {
                        self.learn_members(&delta.syncgroups, &from)?;
                    }
                    // Push: local commits the round took in before the watcher's own step, and
                    // the links recording its resolutions, are new to every member, the sender
                    // included; what arrived is new to the others.
                    if outcome.local_records > 0 || outcome.conflicts > 0 {
                        self.notify_members(None, &mut handled.actions)?;
                    } else if outcome.records_applied > 0 {
                        self.notify_members(Some(&from), &mut handled.actions)?;
                    }
                    handled.applied = Some(outcome);
                }
            },
        }
        Ok(handled)
    }

    /// The answer to a pull from `from` with `knowledge` (what [`Message::Pull`] sends back),
    /// planned: its values are read when it, or each of its parts, is read.
    pub fn answer(&self, from: &str, knowledge: &Knowledge) -> Result<PullAnswer<S>> {
        self.catch_up()?;
        let scopes = self.scopes_for(from)?;
        let snapshot = self.store.versioned_snapshot()?;
        let mut planned = plan(&snapshot, self.device, &scopes, knowledge)?;
        if !scopes.is_empty() {
            planned.set_syncgroups(
                syncgroups(&snapshot)?
                    .into_iter()
                    .filter(|syncgroup| syncgroup.members.contains(&from.to_string()))
                    .collect(),
            );
        }
        Ok(PullAnswer {
            snapshot: Arc::new(snapshot),
            planned,
        })
    }

    /// Takes in the members of syncgroups this database has that a delta's records name.
    fn learn_members(&self, incoming: &[crate::syncgroup::Syncgroup], sender: &str) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let transaction = self.store.begin(syncbase_store::Origin::default())?;
            crate::syncgroup::merge_members(&transaction, incoming, sender)?;
            match syncbase_store::Transaction::commit(&transaction) {
                Err(syncbase_store::Error::ConcurrentTransaction) if attempt < 16 => {}
                outcome => return Ok(outcome?),
            }
        }
    }

    /// Runs the watcher until it has processed the whole log; returns the records it made.
    fn catch_up(&self) -> Result<u64> {
        let mut records = 0;
        loop {
            let step = watcher::step(
                &self.store,
                self.device,
                self.rng.as_ref(),
                WATCHER_STEP_ENTRIES_MAX,
            )?;
            records += step.records;
            if step.entries < WATCHER_STEP_ENTRIES_MAX as u64 {
                return Ok(records);
            }
        }
    }

    fn notify_members(&self, except: Option<&str>, actions: &mut Vec<Action>) -> Result<()> {
        for to in self.members()? {
            if Some(to.as_str()) != except {
                actions.push(Action::Send {
                    to,
                    message: Message::Notify,
                });
            }
        }
        Ok(())
    }

    /// The other members of every syncgroup of the database, each once, by name.
    pub fn members(&self) -> Result<BTreeSet<String>> {
        let snapshot = self.store.versioned_snapshot()?;
        Ok(syncgroups(&snapshot)?
            .into_iter()
            .flat_map(|syncgroup| syncgroup.members)
            .filter(|member| *member != self.member)
            .collect())
    }

    /// Checks a delta from `from` before it is applied: the sender must be a member, and every
    /// record must belong to a collection a syncgroup shares with it; its knowledge is kept only
    /// for those collections, and never for this device's own generations (which only this
    /// device makes). Timestamps in the upper half of the range are refused (nothing may sit
    /// where "one later" no longer exists).
    fn admit(&self, from: &str, mut delta: Delta) -> Result<Delta> {
        let shared: BTreeSet<String> = self
            .scopes_for(from)?
            .into_iter()
            .map(|scope| scope.collection)
            .collect();
        if shared.is_empty() {
            return Err(Error::DeltaInvalid(format!(
                "a delta from {from}, with whom no syncgroup of this database is shared"
            )));
        }
        let mut collections = watcher::Collections::default();
        let mut admitted: Vec<bool> = Vec::new();
        for sent in &delta.records {
            let record = &sent.record;
            let inside = collections.of(&record.object).is_some_and(|collection| {
                while admitted.len() <= collection {
                    admitted.push(shared.contains(collections.name(admitted.len())));
                }
                admitted[collection]
            });
            if !inside {
                return Err(Error::DeltaInvalid(format!(
                    "a record from {from} for {}, outside what this database shares with it",
                    String::from_utf8_lossy(&record.object)
                )));
            }
            if record.timestamp_ns > TIMESTAMP_MAX_NS {
                return Err(Error::DeltaInvalid(format!(
                    "a record from {from} with the timestamp {}",
                    record.timestamp_ns
                )));
            }
        }
        let mut knowledge = Knowledge::new();
        for (scope, vector) in delta.knowledge.iter() {
            if shared.contains(&scope.collection) {
                let vector: GenVector = vector
                    .iter()
                    .filter(|(device, _)| *device != self.device)
                    .collect();
                knowledge.set(scope.clone(), vector);
            }
        }
        delta.knowledge = knowledge;
        Ok(delta)
    }

    /// The scopes `peer` may pull: collections of syncgroups it is a member of, that it may
    /// read. Empty for a stranger (who then learns nothing, as from a database without data).
    fn scopes_for(&self, peer: &str) -> Result<Vec<Scope>> {
        let snapshot = self.store.versioned_snapshot()?;
        let mut collections = BTreeSet::new();
        for syncgroup in syncgroups(&snapshot)? {
            if syncgroup.members.iter().any(|member| member == peer) {
                collections.extend(syncgroup.collections);
            }
        }
        let mut scopes = Vec::new();
        for collection in collections {
            if self.access.may_read(&collection, peer)? {
                scopes.push(Scope::collection(collection));
            }
        }
        Ok(scopes)
    }

    /// What this device knows of the collections its syncgroups share, its own generations
    /// included.
    pub fn knowledge(&self) -> Result<Knowledge> {
        let snapshot = self.store.versioned_snapshot()?;
        let stored = stored_knowledge(&snapshot)?;
        let own = local_generation(&snapshot)?;
        let mut knowledge = Knowledge::new();
        let collections: BTreeSet<String> = syncgroups(&snapshot)?
            .into_iter()
            .flat_map(|syncgroup| syncgroup.collections)
            .collect();
        for collection in collections {
            let scope = Scope::collection(collection);
            let mut vector = stored.of(&scope);
            vector.advance(self.device, own);
            knowledge.set(scope, vector);
        }
        Ok(knowledge)
    }
}

/// Encodes a message part (knowledge, a delta, a join's answer) for the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|error| Error::DeltaInvalid(format!("a message does not encode: {error}")))
}

/// Decodes what [`encode`] made; bytes from a peer that do not decode are
/// [`Error::DeltaInvalid`].
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|error| Error::DeltaInvalid(format!("a peer's message does not decode: {error}")))
}
