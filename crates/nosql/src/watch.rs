//! Watch: a database's change feed from its watch log (mirrors Go
//! `server/database_watch.go`), grouped by commit, filtered by collection Read permissions. The
//! initial state is read lazily from the snapshot taken when the watch starts, a bounded batch
//! at a time, so a watch's memory does not grow with the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use syncbase_store::{
    LogEntry, LogEvent, LogOp, Store, StoreReader, Stored, Stream, WatchableSnapshot,
};
use syncbase_util::keys::{self, Prefix};
use syncbase_wire::{Change, ChangeKind, WatchStart, codes, limits};

use crate::auth::Caller;
use crate::database::{Database, decode_row_key};
use crate::error::{Error, Result};

/// Log entries read per step.
const ENTRIES_PER_READ: usize = 64;

/// Rows in one batch of the initial state (the rows of one scan message).
const INITIAL_ROWS_PER_BATCH_MAX: usize = limits::SCAN_ROWS_PER_MESSAGE_MAX;

/// Bytes of collection names, keys and values in one batch of the initial state; a row that
/// would take a batch past them starts the next batch (a larger row goes alone).
const INITIAL_BYTES_PER_BATCH_MAX: usize = limits::STREAM_MESSAGE_BYTES_TARGET;

/// A watch stream on one database. Each [`Watcher::next_batch`] returns one commit's changes
/// that the caller may see, except the initial state: one commit whose changes come in several
/// bounded batches (see [`Watcher::commit_continues`]).
pub struct Watcher {
    database: Arc<Database>,
    caller: Caller,
    next_seq: u64,
    /// Boxed: a watch from now or from a marker carries none.
    initial: Option<Box<InitialState>>,
    /// Whether the batch last returned is followed by more changes of the same commit.
    commit_continues: bool,
}

/// The part of the initial state not yet returned: the rows of the snapshot taken when the
/// watch started, read in key order a batch at a time.
struct InitialState {
    /// The snapshot, held so the state stays consistent however slowly it is read.
    snapshot: WatchableSnapshot<Arc<dyn Store>>,
    /// The marker of every initial change: the snapshot's log position.
    marker: String,
    /// Where the rows still to return begin (inclusive): a scan is reopened there after an
    /// error, so an error loses no row and a failing row keeps failing.
    resume: Vec<u8>,
    /// The end of the rows (exclusive).
    limit: Vec<u8>,
    /// The open scan, read up to `pending`; `None` before the first batch and after an error.
    rows: Option<Stream>,
    /// The first visible row of the next batch (its storage key is `resume`), found while
    /// closing the previous batch.
    pending: Option<Change>,
    /// Whether the caller may read each collection met so far, as of the snapshot.
    readable: HashMap<String, bool>,
}

/// The error for a resume point below the retention window.
fn marker_expired(marker: &str) -> Error {
    Error::wire(
        codes::MARKER_EXPIRED,
        format!(
            "resume marker {marker:?} is older than the watch log keeps; \
             start again with the initial state (`sb watch --initial`)"
        ),
    )
}

impl Database {
    /// Starts a watch (the service checked Read on the database). With the initial state, this
    /// only takes the snapshot; its rows are read by the batches that return them.
    pub fn watch(self: &Arc<Self>, caller: &Caller, start: &WatchStart) -> Result<Watcher> {
        let store = self.store();
        let mut initial = None;
        let next_seq = match start {
            WatchStart::Now => store.latest_log_seq() + 1,
            WatchStart::From(marker) => {
                let bad = |why: &str| {
                    Error::wire(codes::BAD_MARKER, format!("resume marker {marker:?} {why}"))
                };
                let seq: u64 = marker.parse().map_err(|_| bad("is malformed"))?;
                if seq > store.latest_log_seq() {
                    return Err(bad("is from the future of this database"));
                }
                // Never a silent skip: below the retention window the changes since the marker
                // are not all kept (or soon will not be), whether or not pruning has run.
                if !store.log_retains(seq + 1)? {
                    return Err(marker_expired(marker));
                }
                seq + 1
            }
            WatchStart::Initial => {
                // The marker is a published position (read before the snapshot): an entry the
                // snapshot holds beyond it comes again as a change, never a position that is
                // not yet durable.
                let published = store.latest_log_seq();
                let snapshot = store.versioned_snapshot()?;
                let position = snapshot.log_position()?.min(published);
                let (start, limit) = keys::prefix_range(&Prefix::Row.as_key());
                initial = Some(Box::new(InitialState {
                    snapshot,
                    marker: position.to_string(),
                    resume: start,
                    limit,
                    rows: None,
                    pending: None,
                    readable: HashMap::new(),
                }));
                position + 1
            }
        };
        Ok(Watcher {
            database: self.clone(),
            caller: caller.clone(),
            next_seq,
            initial,
            commit_continues: false,
        })
    }
}

impl InitialState {
    /// The next batch of visible rows (empty once none is left). A batch holds at most
    /// [`INITIAL_ROWS_PER_BATCH_MAX`] rows and [`INITIAL_BYTES_PER_BATCH_MAX`] bytes (or one
    /// larger row); when rows remain after it, `pending` holds the first of them.
    fn read_batch(&mut self, database: &Database, caller: &Caller) -> Result<Vec<Change>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        loop {
            let next = match self.pending.take() {
                Some(change) => Some((self.resume.clone(), change)),
                None => self.next_visible(database, caller)?,
            };
            let Some((key, change)) = next else {
                return Ok(batch);
            };
            let size = change_bytes(&change);
            if !batch.is_empty()
                && (batch.len() == INITIAL_ROWS_PER_BATCH_MAX
                    || bytes + size > INITIAL_BYTES_PER_BATCH_MAX)
            {
                self.resume = key;
                self.pending = Some(change);
                return Ok(batch);
            }
            bytes += size;
            batch.push(change);
        }
    }

    /// The next row of the snapshot that the caller may read, with its storage key.
    fn next_visible(
        &mut self,
        database: &Database,
        caller: &Caller,
    ) -> Result<Option<(Vec<u8>, Change)>> {
        loop {
            let rows = match &mut self.rows {
                Some(rows) => rows,
                None => self
                    .rows
                    .insert(self.snapshot.scan(&self.resume, &self.limit)?),
            };
            let Some(entry) = rows.next() else {
                return Ok(None);
            };
            let (key, value) = entry?;
            let (collection, row) = decode_row_key(&key)?;
            let allowed = match self.readable.get(&collection) {
                Some(&allowed) => allowed,
                None => {
                    let allowed = database.can_read(&self.snapshot, caller, &collection)?;
                    self.readable.insert(collection.clone(), allowed);
                    allowed
                }
            };
            if allowed {
                let change = Change {
                    marker: self.marker.clone(),
                    collection,
                    key: row,
                    kind: ChangeKind::Put(value),
                    from_sync: false,
                };
                return Ok(Some((key, change)));
            }
        }
    }
}

/// The bytes of a change that bound a batch of the initial state: its collection, key and value.
fn change_bytes(change: &Change) -> usize {
    change.collection.len()
        + change.key.len()
        + match &change.kind {
            ChangeKind::Put(value) => value.len(),
            ChangeKind::Delete => 0,
        }
}

impl Watcher {
    /// The next commit's visible changes, or `None` when there is nothing new yet. The initial
    /// state comes first, in batches read from the watch's snapshot (see
    /// [`Watcher::commit_continues`]); after it, commits from the snapshot's position on.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Change>>> {
        self.commit_continues = false;
        if let Some(initial) = &mut self.initial {
            let batch = match initial.read_batch(&self.database, &self.caller) {
                Ok(batch) => batch,
                Err(error) => {
                    // The next call reopens the scan where this batch began.
                    initial.rows = None;
                    initial.pending = None;
                    return Err(error);
                }
            };
            self.commit_continues = initial.pending.is_some();
            if !self.commit_continues {
                self.initial = None; // releases the snapshot
            }
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
        // Only published entries are read (read before the snapshot, which holds them all): an
        // entry of a commit that skipped the disk sync waits until a later one is published.
        let published = self.database.store().latest_log_seq();
        let snapshot = self.database.store().versioned_snapshot()?;
        if snapshot.log_start()? > self.next_seq {
            // Pruning passed this watch while it was behind: it cannot go on without a gap.
            return Err(marker_expired(&(self.next_seq - 1).to_string()));
        }
        loop {
            let entries = snapshot.log_entries(self.next_seq, ENTRIES_PER_READ)?;
            if entries.is_empty() {
                return Ok(None);
            }
            for entry in entries {
                let seq = entry.seq;
                if seq > published {
                    return Ok(None);
                }
                // Past this entry only once its changes are in hand: after an error, the next
                // call reads it again, so no commit is skipped.
                let changes = self.visible_changes(&snapshot, entry)?;
                self.next_seq = seq + 1;
                if !changes.is_empty() {
                    return Ok(Some(changes));
                }
            }
        }
    }

    /// Waits (without blocking a thread) for the next commit's visible changes; `None` when the
    /// service closed the database, `nosql.no_exist` once the database has been destroyed.
    pub async fn next(&mut self) -> Result<Option<Vec<Change>>> {
        loop {
            match self.next_batch() {
                Ok(Some(changes)) => return Ok(Some(changes)),
                Ok(None) => {}
                Err(error) => return self.explain(error).map_or(Ok(None), Err),
            }
            let notifier = self.database.store().notifier();
            if notifier.wait_after(self.next_seq - 1).await == LogEvent::Closed {
                if self.database.is_destroyed() {
                    return Err(self.destroyed());
                }
                return Ok(None);
            }
        }
    }

    /// Whether batches of the initial state remain. They are read from the watch's snapshot
    /// without waiting for commits, so an async caller can take them with
    /// [`Watcher::next_batch`] on a blocking thread before it waits with [`Watcher::next`].
    pub fn initial_state_remains(&self) -> bool {
        self.initial.is_some()
    }

    /// Whether the batch last returned is followed by more changes of the same commit: true
    /// for every batch of the initial state but its last, which a client should see as one
    /// commit.
    pub fn commit_continues(&self) -> bool {
        self.commit_continues
    }

    /// What an error from [`Watcher::next_batch`] means for a stream of changes, as
    /// [`Watcher::next`] reports it: `None` when the service closed the database (the stream
    /// just ends), `nosql.no_exist` once the database was destroyed, or else the error itself.
    pub fn explain(&self, error: Error) -> Option<Error> {
        // Reading a closed database fails with a store error; say what happened instead.
        if self.database.is_destroyed() {
            return Some(self.destroyed());
        }
        match error {
            Error::Store(syncbase_store::Error::StoreClosed) => None,
            error => Some(error),
        }
    }

    fn destroyed(&self) -> Error {
        let path = self.database.path();
        Error::wire(
            codes::NO_EXIST,
            format!(
                "database {}/{} was destroyed while watched",
                path.app, path.database
            ),
        )
    }

    /// Blocks the thread for up to `timeout` for the next commit's visible changes.
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<Vec<Change>>> {
        if let Some(changes) = self.next_batch()? {
            return Ok(Some(changes));
        }
        let notifier = self.database.store().notifier();
        match notifier.wait_after_blocking(self.next_seq - 1, timeout) {
            Some(LogEvent::Advanced(_)) => self.next_batch(),
            _ => Ok(None),
        }
    }

    fn visible_changes(
        &self,
        snapshot: &syncbase_store::WatchableSnapshot<Arc<dyn syncbase_store::Store>>,
        entry: LogEntry,
    ) -> Result<Vec<Change>> {
        let mut readable: HashMap<String, bool> = HashMap::new();
        let mut changes = Vec::new();
        let row_tag = Prefix::Row.tag();
        for op in entry.ops {
            if op.key().first() != Some(&row_tag) {
                continue; // collection records are not rows
            }
            let (collection, key) = decode_row_key(op.key())?;
            let allowed = match readable.get(&collection) {
                Some(&allowed) => allowed,
                None => {
                    let allowed = self
                        .database
                        .can_read(snapshot, &self.caller, &collection)?;
                    readable.insert(collection.clone(), allowed);
                    allowed
                }
            };
            if !allowed {
                continue;
            }
            let kind = match &op {
                LogOp::Put { key, version, .. } => match snapshot.get_at_version(key, *version)? {
                    Some(Stored::Value(value)) => ChangeKind::Put(value),
                    // That version was pruned (or the entry is corrupt): nothing to show.
                    Some(Stored::Tombstone) | None => continue,
                },
                LogOp::Delete { .. } => ChangeKind::Delete,
            };
            changes.push(Change {
                marker: entry.seq.to_string(),
                collection,
                key,
                kind,
                from_sync: entry.from_sync,
            });
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use syncbase_store::{ManualClock, Retention, SeededRng, open_memstore};
    use syncbase_wire::{DatabasePath, WatchStart, codes};

    use crate::{Caller, Database, DatabaseOptions};

    /// A marker below the kept log fails at once with its own code and says what to do; the
    /// oldest marker still covered resumes.
    #[test]
    fn a_marker_below_the_kept_log_expires_and_never_skips() {
        let clock = Arc::new(ManualClock::new(1_000));
        let database = Arc::new(
            Database::open(
                DatabasePath {
                    app: "a".into(),
                    database: "d".into(),
                },
                Arc::new(open_memstore()),
                DatabaseOptions {
                    clock: clock.clone(),
                    log_clock: clock.clone(),
                    rng: Arc::new(SeededRng::new(1)),
                    batch_idle_timeout_ns: crate::BATCH_IDLE_TIMEOUT_NS_DEFAULT,
                    device_id: 1,
                    // The last 3 commits, and those of the last 10 seconds.
                    log_retention: Retention {
                        commits_min: 3,
                        age_min_ns: 10_000_000_000,
                    },
                    pruner: None,
                },
            )
            .unwrap(),
        );
        let alice = Caller::new("alice");
        database.create_collection(&alice, "c", None).unwrap();
        for index in 0..5 {
            database
                .put(&alice, "c", &format!("k{index}"), b"v", None)
                .unwrap();
        }
        // Entries 1..=6: young, all kept whatever their number.
        let mut oldest = database
            .watch(&alice, &WatchStart::From("0".into()))
            .unwrap();
        clock.advance(10_000_000_000);
        // Now old: only the last 3 (4, 5, 6) are in the window, pruned or not; the watch
        // started before gets the error once pruning passes it, never a gap.
        for pruned in [false, true] {
            if pruned {
                database.store().prune(100).unwrap();
                assert_eq!(database.store().log_start().unwrap(), 4);
                assert_eq!(
                    oldest.next_batch().unwrap_err().code(),
                    codes::MARKER_EXPIRED
                );
            }
            let expired = database
                .watch(&alice, &WatchStart::From("2".into()))
                .err()
                .unwrap();
            assert_eq!(expired.code(), codes::MARKER_EXPIRED);
            assert!(expired.to_string().contains("initial state"), "{expired}");
            let mut resumed = database
                .watch(&alice, &WatchStart::From("3".into()))
                .unwrap();
            // Entry 1 created the collection; puts k0.. are entries 2..: after 3 comes k2.
            assert_eq!(resumed.next_batch().unwrap().unwrap()[0].key, "k2");
        }
    }
}
