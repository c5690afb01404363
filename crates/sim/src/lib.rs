//! `syncbase-sim`: a seeded simulator of the sync core (test-only). N peers run the real
//! `vsync` state machine ([`DatabaseSync`]) over real `Watchable` memstores, through a simulated
//! network that drops, delays, duplicates, reorders, partitions and heals (a delta travels in
//! parts of a few records, as between daemons, and its stream may break after any part), while
//! peers crash and restart (keeping only what they committed) and local writers commit batches
//! with the watcher lagging behind. Everything comes from one seed: the same seed replays the same run and gives
//! the same trace hash.
//!
//! Invariants are checked after every event: no acknowledged write lost, knowledge never goes
//! backwards, no peer ever sees half a batch (read from each peer's watch log), no echo (a
//! peer's own generations are its own writes or its resolutions); and at the end, after healing,
//! every DAG is acyclic and every peer holds the same rows, heads and knowledge, which are the
//! last writer's by the order every write carries (that order extends causality, so the
//! expected winner of a key is simply its highest-ranked write).
//!
//! The simulator never reads which planted bug (mutant) is on: it only checks.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use syncbase_store::{
    Clock, LogOp, MemStore, Origin, Rng, SeededRng, StoreReader, StoreWriter, Transaction, Version,
    Watchable, WatchableOptions, open_memstore,
};
use syncbase_util::HybridClock;
use syncbase_util::keys::{self, Prefix};
use syncbase_vsync::conflict::LastWriterWins;
use syncbase_vsync::dag::{self, HeadHolder};
use syncbase_vsync::knowledge::Scope;
use syncbase_vsync::knowledge::{Knowledge, Relation};
use syncbase_vsync::responder::{Delta, stored_ahead, stored_knowledge};
use syncbase_vsync::service::{Action, DatabaseSync, Event, Everyone, Message};
use syncbase_vsync::syncgroup::{Syncgroup, put_syncgroup};
use syncbase_vsync::watcher::{LogRecord, local_generation, log_record, object_collection};

/// The synced collection.
const COLLECTION: &str = "c";
/// Two hours: beyond the hybrid clock's drift bound, for a peer whose clock runs ahead.
const FAR_FUTURE_SKEW_NS: u64 = 2 * 3_600 * 1_000_000_000;

/// The shape of a run (the seed picks within it).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Events before healing.
    pub steps: u64,
    /// Peers: between 2 and this many.
    pub peers_max: u64,
    /// Row keys written (few, so writes conflict).
    pub keys: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            steps: 300,
            peers_max: 5,
            keys: 6,
        }
    }
}

/// An invariant that broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// The event after which it was seen.
    pub step: u64,
}

/// What one seed's run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The first invariant that broke, if any.
    pub failure: Option<Failure>,
    /// A hash of every event and its outcome: equal for equal seeds.
    pub trace_hash: u64,
    /// The trace, one line per event (kept only when asked for).
    pub trace: Vec<String>,
    /// Counters: writes committed, messages delivered, conflicts resolved.
    pub writes: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Conflicts resolved.
    pub conflicts: u64,
}

/// A peer's physical clock: the simulation's time plus the peer's skew.
struct SimClock {
    now: Arc<AtomicU64>,
    skew_ns: u64,
}

impl Clock for SimClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst) + self.skew_ns
    }
}

/// The order last-writer-wins uses: (timestamp, device, batch, version).
type Rank = (u64, u64, u64, u64);

fn rank(record: &LogRecord) -> Rank {
    (
        record.timestamp_ns,
        record.device,
        record.batch_id,
        record.version.0,
    )
}

struct Peer {
    name: String,
    device: u64,
    base: Arc<MemStore>,
    physical: Arc<SimClock>,
    sync: Option<DatabaseSync<Arc<MemStore>>>,
    rng_seed: u64,
    restarts: u64,
    /// A local commit the watcher has not been told of (it lags).
    local_pending: bool,
    /// Checks: the last knowledge seen, the watch log replayed so far, the generations checked.
    knowledge: Knowledge,
    mirror: BTreeMap<Vec<u8>, Version>,
    log_seen: u64,
    generations_checked: u64,
}

impl Peer {
    fn open(&mut self) -> Result<(), String> {
        let rng = Arc::new(SeededRng::new(
            self.rng_seed ^ self.restarts.wrapping_mul(0x9e37),
        ));
        // The clock restarts above the last timestamp the log holds (as the daemon's saved
        // floor does).
        let probe = Watchable::open(
            self.base.clone(),
            WatchableOptions::new(managed(), self.physical.clone(), rng.clone()),
        )
        .map_err(|error| error.to_string())?;
        // The daemon's saved floor holds its own clock (received timestamps beyond the drift
        // bound never raise it): the newest local commit's timestamp stands for it here.
        let floor = probe
            .log_entries(0, usize::MAX)
            .map_err(|error| error.to_string())?
            .iter()
            .filter(|entry| !entry.from_sync)
            .map(|entry| entry.timestamp_ns)
            .max()
            .unwrap_or(0);
        drop(probe);
        let clock = Arc::new(HybridClock::new(self.physical.clone(), floor));
        let mut options = WatchableOptions::new(managed(), clock.clone(), rng.clone());
        options.physical_clock = self.physical.clone();
        options.holder = Some(Arc::new(HeadHolder));
        let store =
            Arc::new(Watchable::open(self.base.clone(), options).map_err(|e| e.to_string())?);
        self.sync = Some(
            DatabaseSync::new(
                store,
                self.name.clone(),
                self.device,
                clock,
                rng,
                Arc::new(LastWriterWins),
                Arc::new(Everyone),
            )
            .map_err(|error| error.to_string())?,
        );
        Ok(())
    }

    fn store(&self) -> &Arc<Watchable<Arc<MemStore>>> {
        self.sync.as_ref().expect("an up peer").store()
    }
}

fn managed() -> Vec<Vec<u8>> {
    vec![Prefix::Row.as_key(), Prefix::Collection.as_key()]
}

struct InFlight {
    from: usize,
    to: usize,
    message: Message,
    /// A delta's further parts, after `message` (its first) on the same stream: delivered in
    /// order right after it, unless the stream is cut.
    parts: Vec<Delta>,
    not_before: u64,
}

/// What the simulation knows of every write, from the writers' own records.
#[derive(Default)]
struct Oracle {
    /// Version → what it wrote (`None`: a deletion) and its key.
    values: BTreeMap<Version, (Vec<u8>, Option<Vec<u8>>)>,
    /// Version → its writer and rank, once the writer's watcher recorded it.
    ranks: BTreeMap<Version, Rank>,
    /// Batch id → its members (object, version).
    batches: BTreeMap<u64, Vec<(Vec<u8>, Version)>>,
    /// Versions each peer wrote itself.
    own: BTreeMap<usize, BTreeSet<Version>>,
}

struct Sim {
    rng: SeededRng,
    now: Arc<AtomicU64>,
    peers: Vec<Peer>,
    network: Vec<InFlight>,
    /// Blocked links (unordered pairs).
    partition: BTreeSet<(usize, usize)>,
    oracle: Oracle,
    step: u64,
    hasher: std::collections::hash_map::DefaultHasher,
    trace: Option<Vec<String>>,
    writes: u64,
    delivered: u64,
    conflicts: u64,
    options: Options,
    /// No anti-entropy: no ticks, and (since only anti-entropy repairs a lost notification) a
    /// network that loses nothing and peers that do not crash. Push alone must carry every write.
    push_only: bool,
}

type Checked<T = ()> = Result<T, Failure>;

/// What convergence compares: a peer's rows, its DAG heads (key by key) and its knowledge.
type PeerState = (BTreeMap<Vec<u8>, Vec<u8>>, Vec<Option<Version>>, Knowledge);

/// Runs one seed; `trace` keeps the event lines.
pub fn run(seed: u64, options: Options, trace: bool) -> Report {
    let mut sim = Sim::new(seed, options, trace);
    let failure = sim.run().err();
    Report {
        seed,
        failure,
        trace_hash: sim.hasher.finish(),
        trace: sim.trace.take().unwrap_or_default(),
        writes: sim.writes,
        delivered: sim.delivered,
        conflicts: sim.conflicts,
    }
}

impl Sim {
    fn new(seed: u64, options: Options, trace: bool) -> Self {
        let rng = SeededRng::new(seed);
        let now = Arc::new(AtomicU64::new(1_700_000_000_000_000_000));
        let count = 2 + rng.next_u64() % (options.peers_max.max(2) - 1);
        let push_only = rng.next_u64().is_multiple_of(4);
        let far_future = rng
            .next_u64()
            .is_multiple_of(4)
            .then(|| rng.next_u64() % count);
        let peers = (0..count)
            .map(|index| Peer {
                name: format!("p{index}"),
                device: 0x100 + index,
                base: Arc::new(open_memstore()),
                physical: Arc::new(SimClock {
                    now: now.clone(),
                    skew_ns: if far_future == Some(index) {
                        FAR_FUTURE_SKEW_NS
                    } else {
                        0
                    },
                }),
                sync: None,
                rng_seed: seed.wrapping_mul(31).wrapping_add(index),
                restarts: 0,
                local_pending: false,
                knowledge: Knowledge::new(),
                mirror: BTreeMap::new(),
                log_seen: 1,
                generations_checked: 0,
            })
            .collect();
        Self {
            rng,
            now,
            peers,
            network: Vec::new(),
            partition: BTreeSet::new(),
            oracle: Oracle::default(),
            step: 0,
            hasher: std::collections::hash_map::DefaultHasher::new(),
            trace: trace.then(Vec::new),
            writes: 0,
            delivered: 0,
            conflicts: 0,
            options,
            push_only,
        }
    }

    fn below(&self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn fail(&self, invariant: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            invariant,
            detail: detail.into(),
            step: self.step,
        }
    }

    fn note(&mut self, line: String) {
        line.hash(&mut self.hasher);
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>5} {line}", self.step));
        }
    }

    fn run(&mut self) -> Checked {
        let members: Vec<String> = self.peers.iter().map(|peer| peer.name.clone()).collect();
        for index in 0..self.peers.len() {
            let syncgroup = Syncgroup {
                name: "sg".into(),
                collections: vec![COLLECTION.into()],
                members: members.clone(),
                ..Default::default()
            };
            self.peers[index]
                .open()
                .map_err(|error| self.fail("setup", error))?;
            put_syncgroup(self.peers[index].store().as_ref(), &syncgroup)
                .map_err(|error| self.fail("setup", error.to_string()))?;
        }
        while self.step < self.options.steps {
            self.step += 1;
            self.now
                .fetch_add(self.below(3) * 1_000_000, Ordering::SeqCst);
            self.random_event()?;
        }
        self.heal()
    }

    fn up(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|index| self.peers[*index].sync.is_some())
            .collect()
    }

    fn random_event(&mut self) -> Checked {
        let up = self.up();
        let pick = self.below(100);
        match pick {
            0..=29 if !up.is_empty() => {
                let peer = up[self.below(up.len() as u64) as usize];
                self.local_write(peer)
            }
            30..=39 => {
                let lagging: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|index| self.peers[*index].local_pending)
                    .collect();
                if lagging.is_empty() {
                    return Ok(());
                }
                let peer = lagging[self.below(lagging.len() as u64) as usize];
                self.peers[peer].local_pending = false;
                self.handle(peer, Event::LocalCommit, "watcher")
            }
            40..=49 if !up.is_empty() && !self.push_only => {
                let peer = up[self.below(up.len() as u64) as usize];
                self.handle(peer, Event::Tick, "tick")
            }
            50..=87 => self.deliver_one(false),
            88..=90 if up.len() > 1 && !self.push_only => {
                let peer = up[self.below(up.len() as u64) as usize];
                self.crash(peer);
                Ok(())
            }
            91..=94 => {
                let down: Vec<usize> = (0..self.peers.len())
                    .filter(|index| self.peers[*index].sync.is_none())
                    .collect();
                if down.is_empty() {
                    return Ok(());
                }
                let peer = down[self.below(down.len() as u64) as usize];
                self.restart(peer)
            }
            95..=97 if !self.push_only => {
                self.partition.clear();
                let count = self.peers.len() as u64;
                let cut = self.below(count);
                for a in 0..count {
                    for b in a + 1..count {
                        if (a <= cut) != (b <= cut) {
                            self.partition.insert((a as usize, b as usize));
                        }
                    }
                }
                self.note(format!("partition at p{cut}"));
                Ok(())
            }
            98 => {
                self.partition.clear();
                self.note("heal partition".into());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn local_write(&mut self, peer: usize) -> Checked {
        let count = 1 + self.below(3);
        let mut rows = BTreeMap::new();
        for _ in 0..count {
            let key = keys::row(
                COLLECTION,
                format!("k{}", self.below(self.options.keys)).as_bytes(),
            );
            let value = (self.below(10) != 0)
                .then(|| format!("{}-{}", self.peers[peer].name, self.writes).into_bytes());
            rows.insert(key, value);
        }
        self.writes += 1;
        let store = self.peers[peer].store().clone();
        let before = store.latest_log_seq();
        let origin = Origin::local(self.peers[peer].name.clone(), self.peers[peer].device);
        let outcome = (|| {
            let transaction = store.begin(origin)?;
            for (key, value) in &rows {
                match value {
                    Some(value) => transaction.put(key, value)?,
                    None => transaction.delete(key)?,
                }
            }
            transaction.commit()
        })();
        if let Err(error) = outcome {
            return Err(self.fail("local-write", error.to_string()));
        }
        let entries = store
            .log_entries(before + 1, usize::MAX)
            .map_err(|error| self.fail("local-write", error.to_string()))?;
        for entry in entries.iter().filter(|entry| !entry.from_sync) {
            for op in &entry.ops {
                let value = match op {
                    LogOp::Put { key, .. } => rows.get(key).cloned().flatten(),
                    LogOp::Delete { .. } => None,
                };
                self.oracle
                    .values
                    .insert(op.version(), (op.key().to_vec(), value));
                self.oracle
                    .own
                    .entry(peer)
                    .or_default()
                    .insert(op.version());
            }
        }
        self.note(format!(
            "{} writes {}",
            self.peers[peer].name,
            rows.iter()
                .map(|(key, value)| format!(
                    "{}={}",
                    show(key),
                    value.as_deref().map_or("-".into(), String::from_utf8_lossy)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ));
        if self.below(2) == 0 {
            self.handle(peer, Event::LocalCommit, "watcher")
        } else {
            self.peers[peer].local_pending = true;
            self.check(peer)
        }
    }

    /// Runs `event` on `peer`, queues its messages and checks the peer.
    fn handle(&mut self, peer: usize, event: Event, what: &str) -> Checked {
        let Some(sync) = self.peers[peer].sync.as_ref() else {
            return Ok(());
        };
        let event = match event {
            // A pull is answered as a daemon answers it: the records first, then each part's
            // values from the same snapshot.
            Event::Received {
                from,
                message: Message::Pull { knowledge },
            } => return self.answer(peer, &from, &knowledge, what),
            event => event,
        };
        let handled = match sync.handle(event) {
            Ok(handled) => handled,
            Err(error) => return Err(self.sync_failed(peer, what, &error)),
        };
        let applied = handled.applied.unwrap_or_default();
        self.conflicts += applied.conflicts;
        self.note(format!(
            "{} {what}: made {} sent {} applied {} known {} ff {} conflicts {} -> {} messages",
            self.peers[peer].name,
            handled.records_made,
            handled.records_sent,
            applied.records_applied,
            applied.records_known,
            applied.fast_forwards,
            applied.conflicts,
            handled.actions.len()
        ));
        for action in handled.actions {
            let Action::Send { to, message } = action;
            let Some(to) = self.peers.iter().position(|peer| peer.name == to) else {
                continue;
            };
            // A delta travels in parts, as between daemons: a few records each, so the sim's
            // small deltas are cut too.
            let (message, parts) = match message {
                Message::Delta(delta) => {
                    let records_min = 1 + self.below(4) as usize;
                    let mut parts = delta.into_parts(records_min).into_iter();
                    let first = parts.next().unwrap_or_default();
                    (Message::Delta(first), parts.collect())
                }
                other => (other, Vec::new()),
            };
            let delay = self.below(4);
            self.network.push(InFlight {
                from: peer,
                to,
                message,
                parts,
                not_before: self.step + delay,
            });
        }
        self.check(peer)
    }

    /// The failure of the no-sync-error invariant: `peer`'s sync failed at `what`.
    fn sync_failed(&self, peer: usize, what: &str, error: &syncbase_vsync::Error) -> Failure {
        let message = format!(
            "{} {what}: {} ({error})",
            self.peers[peer].name,
            error.code()
        );
        self.fail("no-sync-error", message)
    }

    /// Answers a pull from `from` in parts of a few records, each read when it is cut.
    fn answer(
        &mut self,
        peer: usize,
        from: &str,
        knowledge: &syncbase_vsync::knowledge::Knowledge,
        what: &str,
    ) -> Checked {
        let Some(sync) = self.peers[peer].sync.as_ref() else {
            return Ok(());
        };
        let records_min = 1 + self.below(4) as usize;
        let parts = sync.answer(from, knowledge).and_then(|answer| {
            answer
                .into_parts(records_min)
                .into_iter()
                .map(|part| part.read())
                .collect::<syncbase_vsync::Result<Vec<_>>>()
        });
        let mut parts = match parts {
            Ok(parts) => parts.into_iter(),
            Err(error) => return Err(self.sync_failed(peer, what, &error)),
        };
        let first = parts.next().unwrap_or_default();
        let rest: Vec<_> = parts.collect();
        let sent: usize =
            first.records.len() + rest.iter().map(|part| part.records.len()).sum::<usize>();
        self.note(format!(
            "{} {what}: sent {sent} in {} parts",
            self.peers[peer].name,
            rest.len() + 1
        ));
        if let Some(to) = self.peers.iter().position(|other| other.name == from) {
            let delay = self.below(4);
            self.network.push(InFlight {
                from: peer,
                to,
                message: Message::Delta(first),
                parts: rest,
                not_before: self.step + delay,
            });
        }
        self.check(peer)
    }

    /// Delivers one message (at random among those due); `reliable` drops nothing.
    fn deliver_one(&mut self, reliable: bool) -> Checked {
        let due: Vec<usize> = (0..self.network.len())
            .filter(|index| reliable || self.network[*index].not_before <= self.step)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let index = due[self.below(due.len() as u64) as usize];
        let duplicate = !reliable && self.below(20) == 0;
        let message = if duplicate {
            let original = &self.network[index];
            InFlight {
                from: original.from,
                to: original.to,
                message: original.message.clone(),
                parts: original.parts.clone(),
                not_before: original.not_before,
            }
        } else {
            self.network.swap_remove(index)
        };
        let pair = (message.from.min(message.to), message.from.max(message.to));
        let dropped =
            self.partition.contains(&pair) || (!reliable && !self.push_only && self.below(10) == 0);
        let kind = match &message.message {
            Message::Notify => "notify",
            Message::Pull { .. } => "pull",
            Message::Delta(_) => "delta",
        };
        if dropped || self.peers[message.to].sync.is_none() {
            self.note(format!("drop {kind} p{}->p{}", message.from, message.to));
            return Ok(());
        }
        self.delivered += 1;
        let from = self.peers[message.from].name.clone();
        self.handle(
            message.to,
            Event::Received {
                from: from.clone(),
                message: message.message,
            },
            kind,
        )?;
        let parts = message.parts.len();
        for (index, part) in message.parts.into_iter().enumerate() {
            // The stream breaks (the connection drops, the sender crashes): the rest is lost.
            if (!reliable && self.below(10) == 0) || self.peers[message.to].sync.is_none() {
                self.note(format!(
                    "cut delta p{}->p{} after part {} of {}",
                    message.from,
                    message.to,
                    index + 1,
                    parts + 1
                ));
                return Ok(());
            }
            self.handle(
                message.to,
                Event::Received {
                    from: from.clone(),
                    message: Message::Delta(part),
                },
                "delta part",
            )?;
        }
        Ok(())
    }

    fn crash(&mut self, peer: usize) {
        self.peers[peer].sync = None;
        self.peers[peer].local_pending = false;
        // Connections to it are gone with what they carried.
        self.network.retain(|message| message.to != peer);
        self.note(format!("{} crashes", self.peers[peer].name));
    }

    fn restart(&mut self, peer: usize) -> Checked {
        self.peers[peer].restarts += 1;
        self.peers[peer]
            .open()
            .map_err(|error| self.fail("restart", error))?;
        self.note(format!("{} restarts", self.peers[peer].name));
        self.check(peer)?;
        self.handle(peer, Event::Start, "start")
    }

    /// Heals everything, syncs until nothing changes, and checks convergence.
    fn heal(&mut self) -> Checked {
        self.partition.clear();
        for peer in 0..self.peers.len() {
            if self.peers[peer].sync.is_none() {
                self.restart(peer)?;
            }
            self.peers[peer].local_pending = false;
            self.handle(peer, Event::LocalCommit, "watcher")?;
        }
        if self.push_only {
            // Only the notifications already due, and what they set off.
            self.note("push only: delivering what is in flight".into());
            while !self.network.is_empty() {
                self.deliver_one(true)?;
            }
            return self.check_converged();
        }
        let mut quiet_rounds = 0;
        for _ in 0..60 {
            self.step += 1;
            let conflicts_before = self.conflicts;
            let generations_before: u64 =
                self.peers.iter().map(|peer| peer.generations_checked).sum();
            for peer in 0..self.peers.len() {
                self.handle(peer, Event::Tick, "tick")?;
            }
            while !self.network.is_empty() {
                self.deliver_one(true)?;
            }
            let generations: u64 = self.peers.iter().map(|peer| peer.generations_checked).sum();
            let knowledge: Vec<Knowledge> = self
                .peers
                .iter()
                .map(|peer| peer.knowledge.clone())
                .collect();
            if self.conflicts == conflicts_before
                && generations == generations_before
                && knowledge.windows(2).all(|pair| pair[0] == pair[1])
            {
                quiet_rounds += 1;
                if quiet_rounds == 2 {
                    return self.check_converged();
                }
            } else {
                quiet_rounds = 0;
            }
        }
        Err(self.fail("quiescence", "still changing after 60 healed rounds"))
    }

    /// The per-event checks of one peer.
    fn check(&mut self, peer: usize) -> Checked {
        if self.peers[peer].sync.is_none() {
            return Ok(());
        }
        self.check_own_records(peer)?;
        self.check_knowledge(peer)?;
        self.check_held_records(peer)?;
        self.check_watch_log(peer)
    }

    /// Every record a peer holds of another device is within what it knows of that device, or
    /// within how far its records held beyond the knowledge reach (`stored_ahead`): else it
    /// would never send the record on, and a version it or its resolutions name could not
    /// reach a third peer.
    fn check_held_records(&mut self, peer: usize) -> Checked {
        let store = self.peers[peer].store().clone();
        let device = self.peers[peer].device;
        let read = |error: syncbase_vsync::Error| error.to_string();
        let held = (|| {
            let knowledge = stored_knowledge(store.as_ref())?;
            let ahead = stored_ahead(store.as_ref())?;
            let (start, limit) = keys::prefix_range(&keys::key_prefix(Prefix::Sync, &[b"l"], b""));
            let mut beyond = None;
            for entry in store.scan(&start, &limit)? {
                let (key, value) = entry?;
                let record: LogRecord = syncbase_util::decode_typed(&key, &value)?;
                if record.device == device {
                    continue;
                }
                let Some((collection, _)) = object_collection(&record.object) else {
                    continue;
                };
                let scope = Scope::collection(collection);
                let reach = knowledge
                    .of(&scope)
                    .get(record.device)
                    .max(ahead.of(&scope).get(record.device));
                if record.generation > reach {
                    beyond = Some(record);
                    break;
                }
            }
            Ok::<_, syncbase_vsync::Error>(beyond)
        })()
        .map_err(|error| self.fail("read", read(error)))?;
        match held {
            None => Ok(()),
            Some(record) => Err(self.fail(
                "records-sent-on",
                format!(
                    "{} holds generation {} of device {:x} ({}) beyond its knowledge and ahead",
                    self.peers[peer].name,
                    record.generation,
                    record.device,
                    show(&record.object)
                ),
            )),
        }
    }

    /// No echo: each new generation of this peer is a version it wrote, or a link. Records the
    /// new ones' ranks and batches for the other checks.
    fn check_own_records(&mut self, peer: usize) -> Checked {
        let store = self.peers[peer].store().clone();
        let device = self.peers[peer].device;
        let generation =
            local_generation(store.as_ref()).map_err(|e| self.fail("read", e.to_string()))?;
        for next in self.peers[peer].generations_checked + 1..=generation {
            let Some(record) = log_record(store.as_ref(), device, next)
                .map_err(|e| self.fail("read", e.to_string()))?
            else {
                return Err(self.fail("no-echo", format!("generation {next} has no record")));
            };
            if record.link {
                continue;
            }
            let own = self.wrote(peer, record.version);
            if !own {
                return Err(self.fail(
                    "no-echo",
                    format!(
                        "{} made generation {next} for version {:x} of {}, which it did not write",
                        self.peers[peer].name,
                        record.version.0,
                        show(&record.object)
                    ),
                ));
            }
            self.oracle.ranks.insert(record.version, rank(&record));
            if record.batch_id != 0 {
                self.oracle
                    .batches
                    .entry(record.batch_id)
                    .or_default()
                    .push((record.object.clone(), record.version));
            }
        }
        self.peers[peer].generations_checked = generation;
        Ok(())
    }

    /// Knowledge never goes backwards.
    fn check_knowledge(&mut self, peer: usize) -> Checked {
        let knowledge = self.peers[peer]
            .sync
            .as_ref()
            .expect("up")
            .knowledge()
            .map_err(|e| self.fail("read", e.to_string()))?;
        for (scope, before) in self.peers[peer].knowledge.iter() {
            let now = knowledge.of(scope);
            if matches!(
                before.relation(&now),
                Relation::Greater | Relation::Incomparable
            ) {
                return Err(self.fail(
                    "knowledge-monotonic",
                    format!("{} knew {before:?}, now {now:?}", self.peers[peer].name),
                ));
            }
        }
        self.peers[peer].knowledge = knowledge;
        Ok(())
    }

    /// Replays the peer's new watch log entries; after each entry sync applied, every batch it
    /// shows is whole: each other row of the batch holds the batch's version or a later one.
    /// Also: no acknowledged write lost (a row never goes back below a write its peer made).
    fn check_watch_log(&mut self, peer: usize) -> Checked {
        let store = self.peers[peer].store().clone();
        let entries = store
            .log_entries(self.peers[peer].log_seen, usize::MAX)
            .map_err(|e| self.fail("read", e.to_string()))?;
        for entry in entries {
            self.peers[peer].log_seen = entry.seq + 1;
            let mut batches = BTreeSet::new();
            for op in &entry.ops {
                let before = self.peers[peer]
                    .mirror
                    .insert(op.key().to_vec(), op.version());
                if let Some(before) = before {
                    self.check_not_older(peer, op.key(), before, op.version())?;
                }
                if entry.from_sync
                    && let Some(node) = dag::node(store.as_ref(), op.key(), op.version())
                        .map_err(|e| self.fail("read", e.to_string()))?
                    && node.batch_id != 0
                {
                    batches.insert(node.batch_id);
                }
            }
            for batch in batches {
                let Some(members) = self.oracle.batches.get(&batch).cloned() else {
                    return Err(self.fail(
                        "whole-batches",
                        format!(
                            "{} log entry {} shows batch {batch:x}, which no writer recorded",
                            self.peers[peer].name, entry.seq
                        ),
                    ));
                };
                for (object, version) in members {
                    let shown = self.peers[peer].mirror.get(&object).copied();
                    let whole = match shown {
                        Some(shown) if shown == version => true,
                        Some(shown) => self.ranked_above(peer, shown, version),
                        None => false,
                    };
                    if !whole {
                        return Err(self.fail(
                            "whole-batches",
                            format!(
                                "{} log entry {} shows batch {batch:x} without its write {:x} of {} (it shows {:?})",
                                self.peers[peer].name,
                                entry.seq,
                                version.0,
                                show(&object),
                                shown.map(|v| format!("{:x}", v.0))
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `peer` wrote `version` itself (a local commit).
    fn wrote(&self, peer: usize, version: Version) -> bool {
        self.oracle
            .own
            .get(&peer)
            .is_some_and(|own| own.contains(&version))
    }

    /// Whether `shown` is a later write than `version` (a local write the watcher has not
    /// recorded yet is later than anything this peer had).
    fn ranked_above(&self, peer: usize, shown: Version, version: Version) -> bool {
        match (
            self.oracle.ranks.get(&shown),
            self.oracle.ranks.get(&version),
        ) {
            (Some(shown), Some(version)) => shown > version,
            (None, _) => self.wrote(peer, shown),
            (Some(_), None) => false,
        }
    }

    /// A row of `peer` moved from `before` to `after`: when `before` is this peer's own write,
    /// `after` must be a later one (else an acknowledged write was lost).
    fn check_not_older(&self, peer: usize, key: &[u8], before: Version, after: Version) -> Checked {
        let own = self.wrote(peer, before);
        if !own || before == after {
            return Ok(());
        }
        let after_is_own = self.wrote(peer, after);
        let ranks = (
            self.oracle.ranks.get(&before),
            self.oracle.ranks.get(&after),
        );
        let replaced_by_earlier = match ranks {
            (Some(before_rank), Some(after_rank)) => after_rank < before_rank,
            // A local overwrite the watcher has not recorded yet is later by construction.
            _ if after_is_own => false,
            // Sync takes in every local write before it applies anything, so both are ranked.
            _ => true,
        };
        if replaced_by_earlier {
            return Err(self.fail(
                "no-lost-write",
                format!(
                    "{} replaced its own write {:x} of {} by the earlier {:x}",
                    self.peers[peer].name,
                    before.0,
                    show(key),
                    after.0
                ),
            ));
        }
        Ok(())
    }

    /// After healing: acyclic DAGs; identical rows, heads and knowledge everywhere; each row the
    /// highest-ranked write of its key.
    fn check_converged(&mut self) -> Checked {
        let mut expected: BTreeMap<Vec<u8>, (Rank, Version)> = BTreeMap::new();
        for (version, (key, _)) in &self.oracle.values {
            let Some(rank) = self.oracle.ranks.get(version) else {
                return Err(self.fail(
                    "no-lost-write",
                    format!("write {:x} of {} was never recorded", version.0, show(key)),
                ));
            };
            let entry = expected.entry(key.clone()).or_insert((*rank, *version));
            if *rank > entry.0 {
                *entry = (*rank, *version);
            }
        }
        let mut first: Option<PeerState> = None;
        for peer in 0..self.peers.len() {
            let store = self.peers[peer].store().clone();
            let (start, limit) = keys::row_prefix_range(COLLECTION, b"");
            let rows: BTreeMap<Vec<u8>, Vec<u8>> = store
                .scan(&start, &limit)
                .and_then(|rows| rows.collect())
                .map_err(|e| self.fail("read", e.to_string()))?;
            let mut heads = Vec::new();
            for key in 0..self.options.keys {
                let object = keys::row(COLLECTION, format!("k{key}").as_bytes());
                let head = dag::head(store.as_ref(), &object)
                    .map_err(|e| self.fail("read", e.to_string()))?;
                heads.push(head);
                self.check_acyclic(peer, &object)?;
                let want = expected
                    .get(&object)
                    .and_then(|(_, version)| self.oracle.values.get(version))
                    .and_then(|(_, value)| value.clone());
                if rows.get(&object) != want.as_ref() {
                    return Err(self.fail(
                        "last-writer-wins",
                        format!(
                            "{} holds {:?} for {}, the latest write is {:?}",
                            self.peers[peer].name,
                            rows.get(&object)
                                .map(|v| String::from_utf8_lossy(v).into_owned()),
                            show(&object),
                            want.map(|v| String::from_utf8_lossy(&v).into_owned())
                        ),
                    ));
                }
            }
            let knowledge = self.peers[peer].knowledge.clone();
            match &first {
                None => first = Some((rows, heads, knowledge)),
                Some((rows0, heads0, knowledge0)) => {
                    if *rows0 != rows || *heads0 != heads || *knowledge0 != knowledge {
                        return Err(self.fail(
                            "converged",
                            format!(
                                "p0 and {} differ after healing (rows {}, heads {}, knowledge {})",
                                self.peers[peer].name,
                                *rows0 == rows,
                                *heads0 == heads,
                                *knowledge0 == knowledge
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks `object`'s DAG from its head, failing on a version reached again on the current
    /// path.
    fn check_acyclic(&self, peer: usize, object: &[u8]) -> Checked {
        let store = self.peers[peer].store().clone();
        let Some(head) =
            dag::head(store.as_ref(), object).map_err(|e| self.fail("read", e.to_string()))?
        else {
            return Ok(());
        };
        let mut done = BTreeSet::new();
        let mut on_path = BTreeSet::new();
        let mut stack = vec![(head, false)];
        while let Some((version, leaving)) = stack.pop() {
            if leaving {
                on_path.remove(&version);
                done.insert(version);
                continue;
            }
            if done.contains(&version) {
                continue;
            }
            if !on_path.insert(version) {
                return Err(self.fail(
                    "acyclic",
                    format!(
                        "{}: {} loops at {:x}",
                        self.peers[peer].name,
                        show(object),
                        version.0
                    ),
                ));
            }
            stack.push((version, true));
            let node = dag::node(store.as_ref(), object, version)
                .map_err(|e| self.fail("read", e.to_string()))?;
            // A parent still on the path is found when it is taken off the stack.
            for parent in node.map(|node| node.parents).unwrap_or_default() {
                stack.push((parent, false));
            }
        }
        Ok(())
    }
}

/// A row key for people: its row part.
fn show(key: &[u8]) -> String {
    keys::parse(key)
        .ok()
        .and_then(|(_, components)| components.get(1).cloned())
        .map_or_else(
            || format!("{key:?}"),
            |row| String::from_utf8_lossy(&row).into_owned(),
        )
}
