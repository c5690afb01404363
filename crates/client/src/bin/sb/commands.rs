//! The commands that talk to a daemon: each turns its arguments into calls and prints the
//! answers. The `app`, `db`, `collection` and `sg` commands build one request each
//! ([`app_request`], [`db_request`], [`collection_request`], [`sg_request`]; the row commands build theirs in `main`); `status`,
//! `acl set`, `scan` and `watch` have functions of their own.

use base64::Engine as _;
use syncbase_client::{Client, escape, unescape};
use syncbase_wire::{
    AccessList, ChangeKind, Request, Response, RowRange, SyncgroupSpec, Tag, WatchStart,
};

use crate::args::{collection_path, database_path, object_path};
use crate::failure::{Failure, Outcome, local_codes};
use crate::output::{Output, json_value};
use crate::{AclSet, AppCommand, CollectionCommand, DbCommand, Format, SgCommand};

/// The request of an `app` command.
pub(crate) fn app_request(command: &AppCommand) -> Request {
    match command {
        AppCommand::Create { name } => Request::CreateApp {
            app: name.clone(),
            permissions: None,
        },
        AppCommand::Destroy { name } => Request::DestroyApp { app: name.clone() },
        AppCommand::List => Request::ListApps,
    }
}

/// The request of a `db` command.
pub(crate) fn db_request(command: &DbCommand) -> Result<Request, Failure> {
    Ok(match command {
        DbCommand::Create { database } => Request::CreateDatabase {
            database: database_path(database)?,
            permissions: None,
        },
        DbCommand::Destroy { database } => Request::DestroyDatabase {
            database: database_path(database)?,
        },
        DbCommand::List { app } => Request::ListDatabases { app: app.clone() },
    })
}

/// The request of a `collection` command.
pub(crate) fn collection_request(command: &CollectionCommand) -> Result<Request, Failure> {
    Ok(match command {
        CollectionCommand::Create { collection } => Request::CreateCollection {
            collection: collection_path(collection)?,
            permissions: None,
        },
        CollectionCommand::Destroy { collection } => Request::DestroyCollection {
            collection: collection_path(collection)?,
        },
        CollectionCommand::List { database } => Request::ListCollections {
            database: database_path(database)?,
        },
    })
}

/// The request of an `sg` command.
pub(crate) fn sg_request(command: &SgCommand) -> Result<Request, Failure> {
    Ok(match command {
        SgCommand::Create {
            database,
            name,
            collections,
            description,
            read,
            admin,
        } => Request::CreateSyncgroup {
            database: database_path(database)?,
            spec: SyncgroupSpec {
                name: name.clone(),
                collections: collections.clone(),
                description: description.clone(),
                read: read.clone(),
                admin: admin.clone(),
            },
        },
        SgCommand::Join {
            database,
            name,
            via,
            wait,
        } => Request::JoinSyncgroup {
            database: database_path(database)?,
            name: name.clone(),
            via: via.clone(),
            wait: *wait,
        },
        SgCommand::List { database } => Request::ListSyncgroups {
            database: database_path(database)?,
        },
    })
}

/// `sb status`: who answered, and the watch log of each database asked for.
pub(crate) async fn status(client: &Client, databases: &[String], output: &mut Output) -> Outcome {
    let Response::Status(status) = client.call_one(Request::Status).await? else {
        return Err(Failure::unexpected_answer());
    };
    let mut logs = Vec::new();
    for database in databases {
        let request = Request::LogStatus {
            database: database_path(database)?,
        };
        let Response::LogStatus(log) = client.call_one(request).await? else {
            return Err(Failure::unexpected_answer());
        };
        logs.push((database, log));
    }
    let Response::SyncStatus(sync) = client.call_one(Request::SyncStatus).await? else {
        return Err(Failure::unexpected_answer());
    };
    match output.format {
        Format::Plain => {
            for (label, value) in [
                ("identity", status.identity.clone()),
                ("device", format!("{:016x}", status.device_id)),
                ("address", status.address.clone()),
                ("engine", status.engine.clone()),
                ("version", status.version.clone()),
            ] {
                output.line(format!("{label}\t{value}").as_bytes())?;
            }
            for (database, log) in &logs {
                for line in [
                    format!("database\t{database}"),
                    format!("log_start\t{}", log.start),
                    format!("log_end\t{}", log.end),
                    format!(
                        "retention\t{} commits, {} s",
                        log.retention_commits, log.retention_secs
                    ),
                ] {
                    output.line(line.as_bytes())?;
                }
                for pin in &log.pins {
                    output.line(
                        format!("pin\t{}\t{}", escape(pin.name.as_bytes()), pin.seq).as_bytes(),
                    )?;
                }
            }
            for line in sync_lines(&sync) {
                output.line(line.as_bytes())?;
            }
            Ok(())
        }
        Format::Json => {
            let mut json = serde_json::json!({
                "identity": status.identity, "device": format!("{:016x}", status.device_id),
                "address": status.address, "engine": status.engine, "version": status.version,
            });
            if !logs.is_empty() {
                json["databases"] = logs
                    .iter()
                    .map(|(database, log)| {
                        serde_json::json!({
                            "database": database, "log_start": log.start, "log_end": log.end,
                            "retention_commits": log.retention_commits,
                            "retention_secs": log.retention_secs,
                            "pins": log.pins.iter().map(|pin| serde_json::json!({
                                "name": pin.name, "seq": pin.seq,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
            }
            if !sync.databases.is_empty() || sync.hidden > 0 {
                json["sync"] = sync_json(&sync);
            }
            output.json(json)
        }
    }
}

/// `sb status` lines for synced databases: `synced APP/DB behind N`, `syncgroup APP/DB SG`,
/// `member APP/DB SG NAME ADDRESS LAST_SYNC` (address `-` when unknown; last sync `this
/// daemon`, `never`, or `N ms ago`), and `synced_other N` for databases the caller cannot see.
fn sync_lines(sync: &syncbase_wire::SyncStatus) -> Vec<String> {
    let mut lines = Vec::new();
    for database in &sync.databases {
        let path = format!("{}/{}", database.database.app, database.database.database);
        lines.push(format!("synced\t{path}\tbehind {}", database.behind));
        for syncgroup in &database.syncgroups {
            lines.push(format!("syncgroup\t{path}\t{}", syncgroup.name));
            for member in &syncgroup.members {
                let last = match (member.this_daemon, member.last_sync_ms_ago) {
                    (true, _) => "this daemon".to_string(),
                    (false, Some(ago)) => format!("{ago} ms ago"),
                    (false, None) => "never".to_string(),
                };
                lines.push(format!(
                    "member\t{path}\t{}\t{}\t{}\t{last}",
                    syncgroup.name,
                    escape(member.name.as_bytes()),
                    member.address.as_deref().unwrap_or("-"),
                ));
            }
        }
    }
    if sync.hidden > 0 {
        lines.push(format!("synced_other\t{}", sync.hidden));
    }
    lines
}

/// The `sync` field of `sb status --format json`.
fn sync_json(sync: &syncbase_wire::SyncStatus) -> serde_json::Value {
    serde_json::json!({
        "databases": sync.databases.iter().map(|database| serde_json::json!({
            "database": format!("{}/{}", database.database.app, database.database.database),
            "behind": database.behind,
            "syncgroups": database.syncgroups.iter().map(|syncgroup| serde_json::json!({
                "name": syncgroup.name,
                "members": syncgroup.members.iter().map(|member| serde_json::json!({
                    "name": member.name, "address": member.address,
                    "this_daemon": member.this_daemon,
                    "last_sync_ms_ago": member.last_sync_ms_ago,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "other_databases": sync.hidden,
    })
}

/// `sb acl set`: replaces one tag's lists, keeping the others.
pub(crate) async fn acl_set(client: &Client, set: &AclSet) -> Outcome {
    let object = object_path(&set.object)?;
    let tag = Tag::parse(&set.tag).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown tag {:?}: use Read, Write, Admin or Resolve",
            set.tag
        ))
    })?;
    let Response::Permissions(mut permissions) = client
        .call_one(Request::GetPermissions {
            object: object.clone(),
        })
        .await?
    else {
        return Err(Failure::unexpected_answer());
    };
    permissions.0.insert(
        tag,
        AccessList {
            allowed: set.allow.clone(),
            denied: set.deny.clone(),
        },
    );
    client
        .call_one(Request::SetPermissions {
            object,
            permissions,
        })
        .await?;
    Ok(())
}

/// The rows `sb scan` asks for: a prefix, or keys from `start` up to (not including) `end`.
pub(crate) fn scan_range(
    prefix: &Option<String>,
    start: &Option<String>,
    end: &Option<String>,
) -> RowRange {
    match (prefix, start, end) {
        (Some(prefix), _, _) => RowRange::Prefix(prefix.clone()),
        (None, None, None) => RowRange::Prefix(String::new()),
        (None, start, end) => RowRange::Range {
            start: start.clone().unwrap_or_default(),
            limit: end.clone().unwrap_or_default(),
        },
    }
}

/// `sb scan`: rows in key order, up to `max`; dropping the stream cancels the rest.
pub(crate) async fn scan(
    client: &Client,
    output: &mut Output,
    collection: &str,
    range: RowRange,
    max: Option<u64>,
) -> Outcome {
    let mut rows = client
        .call(Request::Scan {
            collection: collection_path(collection)?,
            range,
            batch: None,
        })
        .await?;
    let mut printed = 0u64;
    let below_max = |printed: u64| max.is_none_or(|max| printed < max);
    'stream: while below_max(printed) {
        let Some(message) = rows.next().await else {
            break;
        };
        let Response::Rows(chunk) = message? else {
            return Err(Failure::unexpected_answer());
        };
        for (key, value) in chunk {
            if !below_max(printed) {
                break 'stream;
            }
            printed += 1;
            match output.format {
                Format::Plain => {
                    let line = format!("{}\t{}", escape(key.as_bytes()), escape(&value));
                    output.line(line.as_bytes())?;
                }
                Format::Json => {
                    let (field, value) = json_value(&value);
                    output.json(serde_json::json!({ "key": key, field: value }))?;
                }
            }
        }
    }
    // Dropping the stream cancels the rest of the scan at the daemon.
    drop(rows);
    Ok(())
}

/// `sb watch`: changes as they commit, a blank line after each commit, until `count` changes.
pub(crate) async fn watch(
    client: &Client,
    output: &mut Output,
    database: &str,
    start: WatchStart,
    count: Option<u64>,
) -> Outcome {
    let mut changes = client
        .call(Request::Watch {
            database: database_path(database)?,
            start,
        })
        .await?;
    let mut printed = 0u64;
    loop {
        // A watch has no end: a stream that ends was ended by the daemon (it stopped).
        let Some(message) = changes.next().await else {
            return Err(Failure::Connect(format!(
                "the watch of {database} ended: the daemon stopped or closed the connection"
            )));
        };
        let (batch, commit_ends) = match message? {
            Response::Changes(batch) => (batch, true),
            Response::ChangesPart(batch) => (batch, false),
            _ => return Err(Failure::unexpected_answer()),
        };
        for change in batch {
            let (kind, value) = match &change.kind {
                ChangeKind::Put(value) => ("put", value.clone()),
                ChangeKind::Delete => ("delete", Vec::new()),
            };
            let origin = if change.from_sync { "sync" } else { "local" };
            match output.format {
                Format::Plain => {
                    let line = format!(
                        "{}\t{kind}\t{}\t{}\t{}\t{origin}",
                        escape(change.marker.as_bytes()),
                        escape(change.collection.as_bytes()),
                        escape(change.key.as_bytes()),
                        escape(&value),
                    );
                    output.line(line.as_bytes())?;
                }
                Format::Json => {
                    let (field, value) = json_value(&value);
                    output.json(serde_json::json!({
                        "marker": change.marker, "op": kind, "collection": change.collection,
                        "key": change.key, field: value, "origin": origin,
                    }))?;
                }
            }
            printed += 1;
        }
        if !commit_ends {
            continue;
        }
        if output.format == Format::Plain {
            output.line(b"")?;
        }
        if count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    Ok(())
}

/// Rows `sb import` writes in one batch.
const IMPORT_BATCH_ROWS: usize = 1_000;

/// One line of `sb export` output as a row.
fn parse_row(format: Format, line: &str) -> Result<(String, Vec<u8>), String> {
    match format {
        Format::Plain => {
            let (key, value) = line.split_once('\t').ok_or("expected KEY<TAB>VALUE")?;
            let key = unescape(key).map_err(|error| format!("key: {error}"))?;
            let key = String::from_utf8(key).map_err(|_| "a row key must be UTF-8".to_string())?;
            let value = unescape(value).map_err(|error| format!("value: {error}"))?;
            Ok((key, value))
        }
        Format::Json => {
            let row: serde_json::Value =
                serde_json::from_str(line).map_err(|error| error.to_string())?;
            let key = row["key"].as_str().ok_or("no \"key\" string")?.to_string();
            let value = match (row["value"].as_str(), row["value_base64"].as_str()) {
                (Some(text), None) => text.as_bytes().to_vec(),
                (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|error| format!("value_base64: {error}"))?,
                _ => return Err("expected one of \"value\" and \"value_base64\"".into()),
            };
            Ok((key, value))
        }
    }
}

/// `sb sg join`: with `--wait` on a terminal, a progress bar of the first round (bytes received
/// and their rate, then the rows being applied), and a summary line on stderr.
#[allow(clippy::disallowed_methods)] // the rate shown is for people.
pub(crate) async fn join(
    client: &Client,
    database: &str,
    name: &str,
    via: &str,
    wait: bool,
) -> Outcome {
    use std::io::IsTerminal as _;
    let database = database_path(database)?;
    let progress = (wait && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message("joining");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let started = std::time::Instant::now();
    let mut last = syncbase_wire::JoinProgress::default();
    let mut report = |now: syncbase_wire::JoinProgress| {
        last = now;
        if let Some(bar) = &progress {
            let seconds = started.elapsed().as_secs_f64().max(1e-3);
            let mib = now.bytes as f64 / (1024.0 * 1024.0);
            bar.set_message(if now.applying {
                format!("applying {} rows ({mib:.1} MiB received)", now.records)
            } else {
                format!("received {mib:.1} MiB, {:.1} MiB/s", mib / seconds)
            });
        }
    };
    let joined = client
        .join_syncgroup_reporting(&database, name, via, wait, &mut report)
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
        if joined.is_ok() && last.records > 0 {
            let seconds = started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "joined: {} rows in {seconds:.1} s ({:.0} rows/s)",
                last.records,
                last.records as f64 / seconds
            );
        }
    }
    joined.map_err(Failure::Refused)
}

/// `sb import`: rows from `file` (or stdin) in batches, with a progress bar on a terminal.
pub(crate) async fn import(
    client: &Client,
    format: Format,
    collection: &str,
    file: Option<&std::path::Path>,
) -> Outcome {
    use std::io::{BufRead, IsTerminal};
    let path = collection_path(collection)?;
    let input: Box<dyn BufRead> = match file {
        Some(file) => Box::new(std::io::BufReader::new(
            std::fs::File::open(file).map_err(|error| Failure::file("read", file, error))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {human_pos} rows, {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let mut rows = Vec::with_capacity(IMPORT_BATCH_ROWS);
    let mut lines = input.lines().enumerate().peekable();
    while lines.peek().is_some() {
        rows.clear();
        while rows.len() < IMPORT_BATCH_ROWS {
            let Some((index, line)) = lines.next() else {
                break;
            };
            let line = line.map_err(|error| {
                Failure::local(
                    local_codes::LOCAL_FILE,
                    format!("cannot read the rows: {error}"),
                )
            })?;
            if line.is_empty() {
                continue;
            }
            let row = parse_row(format, &line).map_err(|why| {
                Failure::local(local_codes::BAD_INPUT, format!("line {}: {why}", index + 1))
            })?;
            rows.push(row);
        }
        let database = path.database_path();
        client
            .run_in_batch(&database, |batch| {
                let rows = &rows;
                let path = &path;
                async move {
                    for (key, value) in rows {
                        client
                            .call_one(Request::Put {
                                collection: path.clone(),
                                key: key.clone(),
                                value: value.clone(),
                                batch: Some(batch),
                            })
                            .await?;
                    }
                    Ok(())
                }
            })
            .await?;
        if let Some(bar) = &progress {
            bar.inc(rows.len() as u64);
        }
    }
    if let Some(bar) = progress {
        bar.finish();
    }
    Ok(())
}
