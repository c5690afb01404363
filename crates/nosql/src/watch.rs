//! Watch: a database's change feed from its watch log (mirrors Go
//! `server/database_watch.go`), grouped by commit, filtered by collection Read permissions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use syncbase_store::{LogEntry, LogEvent, LogOp, StoreReader};
use syncbase_util::keys::{self, Prefix};
use syncbase_wire::{Change, ChangeKind, WatchStart, codes};

use crate::auth::Caller;
use crate::database::{Database, decode_row_key};
use crate::error::{Error, Result};

/// Log entries read per step.
const ENTRIES_PER_READ: usize = 64;

/// A watch stream on one database. Each [`Watcher::next_batch`] returns one commit's changes
/// that the caller may see.
pub struct Watcher {
    database: Arc<Database>,
    caller: Caller,
    next_seq: u64,
    initial: Option<Vec<Change>>,
}

impl Database {
    /// Starts a watch (the service checked Read on the database).
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
                if seq.saturating_add(1) < store.log_start()? {
                    return Err(bad("is older than the kept log"));
                }
                if seq > store.latest_log_seq() {
                    return Err(bad("is from the future of this database"));
                }
                seq + 1
            }
            WatchStart::Initial => {
                let snapshot = store.versioned_snapshot()?;
                let position = snapshot.log_position()?;
                let (start, limit) = keys::prefix_range(&Prefix::Row.as_key());
                let mut readable = HashMap::new();
                let mut changes = Vec::new();
                for entry in snapshot.scan(&start, &limit)? {
                    let (key, value) = entry?;
                    let (collection, row) = decode_row_key(&key)?;
                    let allowed = *readable
                        .entry(collection.clone())
                        .or_insert_with(|| self.can_read(&snapshot, caller, &collection));
                    if allowed {
                        changes.push(Change {
                            marker: position.to_string(),
                            collection,
                            key: row,
                            kind: ChangeKind::Put(value),
                            from_sync: false,
                        });
                    }
                }
                if !changes.is_empty() {
                    initial = Some(changes);
                }
                position + 1
            }
        };
        Ok(Watcher {
            database: self.clone(),
            caller: caller.clone(),
            next_seq,
            initial,
        })
    }
}

impl Watcher {
    /// The next commit's visible changes, or `None` when there is nothing new yet.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Change>>> {
        if let Some(initial) = self.initial.take() {
            return Ok(Some(initial));
        }
        let snapshot = self.database.store().versioned_snapshot()?;
        loop {
            let entries = snapshot.log_entries(self.next_seq, ENTRIES_PER_READ)?;
            if entries.is_empty() {
                return Ok(None);
            }
            for entry in entries {
                self.next_seq = entry.seq + 1;
                let changes = self.visible_changes(&snapshot, entry)?;
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
                // Reading a closed database fails with a store error; say what happened
                // instead: it was destroyed, or the service is closing (the stream just ends).
                Err(_) if self.database.is_destroyed() => return Err(self.destroyed()),
                Err(Error::Store(syncbase_store::Error::StoreClosed)) => return Ok(None),
                Err(error) => return Err(error),
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
            let allowed = *readable.entry(collection.clone()).or_insert_with(|| {
                self.database
                    .can_read(snapshot as &dyn StoreReader, &self.caller, &collection)
            });
            if !allowed {
                continue;
            }
            let kind = match &op {
                LogOp::Put { key, version } => match snapshot.get_at_version(key, *version)? {
                    Some(value) => ChangeKind::Put(value),
                    None => continue, // that version was pruned
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
