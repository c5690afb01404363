//! `sb`: the Syncbase command-line tool.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use syncbase_client::{Client, escape};
use syncbase_net::{Identity, NetError, TrustedRoot, default_paths, key_hex};
use syncbase_wire::{
    AccessList, ChangeKind, CollectionPath, DatabasePath, ObjectPath, Request, Response, RowRange,
    Tag, WatchStart, WireError, codes,
};

/// The Syncbase command-line tool.
///
/// Talks to a `syncbased` daemon over an encrypted, mutually authenticated connection.
/// The options below go before the command (`sb -s HOST:PORT scan APP/DB/COLL`).
/// Exit codes: 0 ok; 1 refused, by the service or locally (stderr says `error[CODE]: message`);
/// 2 usage; 3 cannot connect or authenticate.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The daemon to talk to
    #[arg(short = 's', long = "service", env = "SYNCBASE_SERVICE", value_name = "HOST:PORT",
          default_value = syncbase_wire::DEFAULT_SERVICE_ADDRESS)]
    service: String,
    /// Your identity [default: $XDG_CONFIG_HOME/syncbase/identity, else ~/.config/syncbase/identity]
    #[arg(long, env = "SYNCBASE_IDENTITY", value_name = "DIR")]
    identity: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// No headers, one item per line
    Plain,
    /// JSON lines
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create, show and share identities
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Apps: create, destroy, list
    #[command(subcommand)]
    App(AppCommand),
    /// Databases: create, destroy, list
    #[command(subcommand)]
    Db(DbCommand),
    /// Collections: create, destroy, list
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Set a row: `sb put APP/DB/COLL KEY VALUE` (or --file F)
    Put {
        /// APP/DB/COLL
        collection: String,
        /// Row key
        key: String,
        /// Value (or use --file)
        value: Option<String>,
        /// Read the value from this file
        #[arg(long, value_name = "F", conflicts_with = "value")]
        file: Option<PathBuf>,
    },
    /// Print a row's value: its bytes exactly (a newline is added only on a terminal)
    Get {
        /// APP/DB/COLL
        collection: String,
        /// Row key
        key: String,
        /// Write the value's bytes to this file instead (whatever --format)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete a row
    Delete {
        /// APP/DB/COLL
        collection: String,
        /// Row key
        key: String,
    },
    /// Print rows in key order, one `KEY<TAB>VALUE` line each
    ///
    /// Plain output escapes keys and values so that a row stays one line: `\\` for a
    /// backslash, `\t`, `\n`, `\r`, and `\xHH` for each byte of other control characters and
    /// for bytes that are not valid UTF-8; other text passes through unchanged
    /// (`syncbase_client::unescape` reverses it). `--format json` is not escaped.
    Scan {
        /// APP/DB/COLL
        collection: String,
        /// Only keys starting with this
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// First key
        #[arg(long, value_name = "KEY")]
        start: Option<String>,
        /// Stop before this key (the first key not printed)
        #[arg(long, value_name = "KEY", alias = "limit")]
        end: Option<String>,
        /// Print at most N rows
        #[arg(long, value_name = "N")]
        max: Option<u64>,
    },
    /// Permissions of `/` (the service), APP, APP/DB or APP/DB/COLL
    #[command(subcommand)]
    Acl(AclCommand),
    /// Print changes: `MARKER<TAB>put|delete<TAB>COLL<TAB>KEY<TAB>VALUE<TAB>local|sync`, a blank
    /// line after each commit
    ///
    /// Plain output escapes the collection, key and value so that a change stays one line:
    /// `\\` for a backslash, `\t`, `\n`, `\r`, and `\xHH` for each byte of other control
    /// characters and for bytes that are not valid UTF-8; other text passes through unchanged
    /// (`syncbase_client::unescape` reverses it). `--format json` is not escaped.
    ///
    /// A watch runs until --count changes were printed: it exits 3 if the daemon goes away,
    /// and 1 with `error[nosql.no_exist]` if the database is destroyed.
    Watch {
        /// APP/DB
        database: String,
        /// Start with the current state of every readable row
        #[arg(long, conflicts_with = "from")]
        initial: bool,
        /// Resume after this marker
        #[arg(long, value_name = "MARKER")]
        from: Option<String>,
        /// Stop after this many changes (finishing the commit they are in); at least 1
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Check the daemon answers; print its identity, device id, address, engine and version
    Status,
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Write a new root identity NAME into --identity DIR (refuses to overwrite)
    New {
        /// The root's name, e.g. alice
        name: String,
    },
    /// Write a fresh key pair named <this identity>:EXTENSION into DIR, trusting this root
    Bless {
        /// The new link, e.g. laptop
        extension: String,
        /// Where to write it
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print this identity's name, key and trusted roots
    Show,
    /// Write this identity's root (name and key) to FILE, for others to trust
    ExportRoot {
        /// Where to write it
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Trust the root in FILE (written by export-root)
    Trust {
        /// A root file
        file: PathBuf,
    },
    /// Stop trusting every root named NAME (not this identity's own root)
    Untrust {
        /// The root's name, as `sb identity show` lists it
        name: String,
    },
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an app
    Create {
        /// Name
        name: String,
    },
    /// Destroy an app and its databases
    Destroy {
        /// Name
        name: String,
    },
    /// List apps
    List,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create a database
    Create {
        /// APP/DB
        database: String,
    },
    /// Destroy a database and its data
    Destroy {
        /// APP/DB
        database: String,
    },
    /// List an app's databases
    List {
        /// APP
        app: String,
    },
}

#[derive(Subcommand)]
enum CollectionCommand {
    /// Create a collection
    Create {
        /// APP/DB/COLL
        collection: String,
    },
    /// Destroy a collection and its rows
    Destroy {
        /// APP/DB/COLL
        collection: String,
    },
    /// List a database's collections
    List {
        /// APP/DB
        database: String,
    },
}

#[derive(Subcommand)]
enum AclCommand {
    /// Print `TAG<TAB>allow|deny<TAB>PATTERN` lines
    Get {
        /// `/`, APP, APP/DB or APP/DB/COLL
        object: String,
    },
    /// Replace one tag's lists
    Set(AclSet),
}

#[derive(Args)]
struct AclSet {
    /// `/`, APP, APP/DB or APP/DB/COLL
    object: String,
    /// Read, Write, Admin or Resolve
    tag: String,
    /// Patterns allowed (`alice` matches alice and alice:*; `alice:$` only alice)
    #[arg(long, num_args = 1.., value_name = "P")]
    allow: Vec<String>,
    /// Patterns denied
    #[arg(long, num_args = 1.., value_name = "P")]
    deny: Vec<String>,
}

/// Stable codes of failures `sb` finds itself (the service's codes pass through).
use syncbase_error_code::sb as local_codes;

/// Why `sb` stopped, and its exit code.
enum Failure {
    /// The service refused (exit 1).
    Refused(WireError),
    /// Bad usage (exit 2).
    Usage(String),
    /// Cannot connect or authenticate (exit 3).
    Connect(String),
    /// A local failure, with a stable code (exit 1).
    Local(WireError),
}

impl Failure {
    fn local(code: &str, message: impl Into<String>) -> Self {
        Failure::Local(WireError::new(code, message))
    }

    /// A local failure from the identity layer (a bad name, a bad file, no randomness).
    fn identity(error: NetError) -> Self {
        let message = match &error {
            NetError::Identity(message) => message.clone(),
            other => other.to_string(),
        };
        Failure::local(error.code(), message)
    }

    /// A file named on the command line cannot be read or written.
    fn file(verb: &str, path: &std::path::Path, error: std::io::Error) -> Self {
        Failure::local(
            local_codes::LOCAL_FILE,
            format!("cannot {verb} {}: {error}", path.display()),
        )
    }

    fn unexpected_answer() -> Self {
        Failure::local(codes::BAD_MESSAGE, "unexpected answer")
    }

    fn report(&self) -> ExitCode {
        match self {
            Failure::Refused(error) | Failure::Local(error) => {
                eprintln!("error[{}]: {}", error.code, error.message);
                ExitCode::from(1)
            }
            Failure::Usage(message) => {
                eprintln!("sb: {message}");
                ExitCode::from(2)
            }
            Failure::Connect(message) => {
                eprintln!("sb: {message}");
                ExitCode::from(3)
            }
        }
    }
}

impl From<WireError> for Failure {
    fn from(error: WireError) -> Self {
        if error.code.starts_with("net.") {
            Failure::Connect(error.to_string())
        } else {
            Failure::Refused(error)
        }
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return Failure::local(local_codes::START, format!("cannot start: {error}")).report();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn identity_dir(cli: &Cli) -> PathBuf {
    cli.identity
        .clone()
        .unwrap_or_else(default_paths::identity_dir)
}

fn load_identity(cli: &Cli) -> Result<Identity, Failure> {
    Identity::load_or_create(&identity_dir(cli), &default_paths::user_name())
        .map_err(Failure::identity)
}

/// Checks `-s` (or `SYNCBASE_SERVICE`) is `HOST:PORT`: a port number after the last colon, and
/// a host with no colon unless it is a bracketed IPv6 address (`[::1]:7433`).
fn check_service_address(address: &str) -> Result<(), Failure> {
    let well_formed = address.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.strip_suffix(']').is_some_and(|ip| !ip.is_empty()),
            None => !host.is_empty() && !host.contains(':'),
        };
        let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        host_ok
            && !host.contains(|c: char| c.is_whitespace() || c == '/')
            && port_ok
            && port.parse::<u16>().is_ok()
    });
    if well_formed {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "-s/--service (or SYNCBASE_SERVICE) must be HOST:PORT, got {address:?}"
        )))
    }
}

async fn connect(cli: &Cli) -> Result<Client, Failure> {
    check_service_address(&cli.service)?;
    let identity = load_identity(cli)?;
    Client::connect(&cli.service, &identity)
        .await
        .map_err(|error| Failure::Connect(format!("cannot connect to {}: {error}", cli.service)))
}

fn split(path: &str, parts: usize, what: &str) -> Result<Vec<String>, Failure> {
    let pieces: Vec<String> = path.split('/').map(str::to_string).collect();
    if pieces.len() != parts || pieces.iter().any(String::is_empty) {
        return Err(Failure::Usage(format!("expected {what}, got {path:?}")));
    }
    Ok(pieces)
}

fn database_path(text: &str) -> Result<DatabasePath, Failure> {
    let parts = split(text, 2, "APP/DB")?;
    Ok(DatabasePath {
        app: parts[0].clone(),
        database: parts[1].clone(),
    })
}

fn collection_path(text: &str) -> Result<CollectionPath, Failure> {
    let parts = split(text, 3, "APP/DB/COLL")?;
    Ok(CollectionPath {
        app: parts[0].clone(),
        database: parts[1].clone(),
        collection: parts[2].clone(),
    })
}

fn object_path(text: &str) -> Result<ObjectPath, Failure> {
    if text == "/" {
        return Ok(ObjectPath::Service);
    }
    match text.split('/').count() {
        1 => Ok(ObjectPath::App(split(text, 1, "APP")?.remove(0))),
        2 => Ok(ObjectPath::Database(database_path(text)?)),
        3 => Ok(ObjectPath::Collection(collection_path(text)?)),
        _ => Err(Failure::Usage(format!(
            "expected /, APP, APP/DB or APP/DB/COLL, got {text:?}"
        ))),
    }
}

fn json_value(value: &[u8]) -> (&'static str, serde_json::Value) {
    match std::str::from_utf8(value) {
        Ok(text) => ("value", serde_json::Value::String(text.to_string())),
        Err(_) => (
            "value_base64",
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
        ),
    }
}

struct Output {
    format: Format,
    out: std::io::StdoutLock<'static>,
}

impl Output {
    fn line(&mut self, bytes: &[u8]) -> Outcome {
        self.write(bytes, true)
    }

    fn write(&mut self, bytes: &[u8], newline: bool) -> Outcome {
        let write = self
            .out
            .write_all(bytes)
            .and_then(|()| {
                if newline {
                    self.out.write_all(b"\n")
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.out.flush());
        write.map_err(|error| {
            Failure::local(local_codes::OUTPUT, format!("cannot write output: {error}"))
        })
    }

    /// A row's value, exactly: a newline follows only on a terminal, where the prompt would
    /// otherwise run on.
    fn value(&mut self, value: &[u8]) -> Outcome {
        let terminal = std::io::stdout().is_terminal();
        self.write(value, terminal)
    }

    fn json(&mut self, value: serde_json::Value) -> Outcome {
        self.line(value.to_string().as_bytes())
    }

    fn names(&mut self, names: Vec<String>) -> Outcome {
        for name in names {
            match self.format {
                Format::Plain => self.line(name.as_bytes())?,
                Format::Json => self.json(serde_json::json!({ "name": name }))?,
            }
        }
        Ok(())
    }
}

async fn run(cli: Cli) -> Outcome {
    let mut output = Output {
        format: cli.format,
        out: std::io::stdout().lock(),
    };
    match &cli.command {
        Command::Identity(command) => identity(&cli, command, &mut output),
        Command::Status => {
            let client = connect(&cli).await?;
            let Response::Status(status) = client.call_one(Request::Status).await? else {
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
                    Ok(())
                }
                Format::Json => output.json(serde_json::json!({
                    "identity": status.identity, "device": format!("{:016x}", status.device_id),
                    "address": status.address, "engine": status.engine, "version": status.version,
                })),
            }
        }
        command => {
            let request = simple_request(command)?;
            let client = connect(&cli).await?;
            match request {
                Some(request) => {
                    let response = client.call_one(request).await?;
                    print_response(&mut output, command, response)
                }
                None => streaming(&client, command, &mut output).await,
            }
        }
    }
}

/// The request of a command with one response (`None` for scan and watch, which stream).
fn simple_request(command: &Command) -> Result<Option<Request>, Failure> {
    Ok(Some(match command {
        Command::App(AppCommand::Create { name }) => Request::CreateApp {
            app: name.clone(),
            permissions: None,
        },
        Command::App(AppCommand::Destroy { name }) => Request::DestroyApp { app: name.clone() },
        Command::App(AppCommand::List) => Request::ListApps,
        Command::Db(DbCommand::Create { database }) => Request::CreateDatabase {
            database: database_path(database)?,
            permissions: None,
        },
        Command::Db(DbCommand::Destroy { database }) => Request::DestroyDatabase {
            database: database_path(database)?,
        },
        Command::Db(DbCommand::List { app }) => Request::ListDatabases { app: app.clone() },
        Command::Collection(CollectionCommand::Create { collection }) => {
            Request::CreateCollection {
                collection: collection_path(collection)?,
                permissions: None,
            }
        }
        Command::Collection(CollectionCommand::Destroy { collection }) => {
            Request::DestroyCollection {
                collection: collection_path(collection)?,
            }
        }
        Command::Collection(CollectionCommand::List { database }) => Request::ListCollections {
            database: database_path(database)?,
        },
        Command::Put {
            collection,
            key,
            value,
            file,
        } => {
            let value = match (value, file) {
                (Some(value), None) => value.clone().into_bytes(),
                (None, Some(file)) => {
                    std::fs::read(file).map_err(|error| Failure::file("read", file, error))?
                }
                _ => return Err(Failure::Usage("give a VALUE or --file F".into())),
            };
            Request::Put {
                collection: collection_path(collection)?,
                key: key.clone(),
                value,
                batch: None,
            }
        }
        Command::Get {
            collection, key, ..
        } => Request::Get {
            collection: collection_path(collection)?,
            key: key.clone(),
            batch: None,
        },
        Command::Delete { collection, key } => Request::Delete {
            collection: collection_path(collection)?,
            key: key.clone(),
            batch: None,
        },
        Command::Acl(AclCommand::Get { object }) => Request::GetPermissions {
            object: object_path(object)?,
        },
        Command::Acl(AclCommand::Set(_)) | Command::Scan { .. } | Command::Watch { .. } => {
            return Ok(None);
        }
        Command::Identity(_) | Command::Status => return Ok(None),
    }))
}

fn print_response(output: &mut Output, command: &Command, response: Response) -> Outcome {
    match response {
        Response::Names(names) => output.names(names),
        Response::Value(value) => match (command, output.format) {
            (Command::Get { out: Some(out), .. }, _) => {
                std::fs::write(out, &value).map_err(|error| Failure::file("write", out, error))
            }
            (_, Format::Plain) => output.value(&value),
            (_, Format::Json) => {
                let (field, value) = json_value(&value);
                output.json(serde_json::json!({ field: value }))
            }
        },
        Response::Permissions(permissions) => {
            for (tag, list) in &permissions.0 {
                for (kind, patterns) in [("allow", &list.allowed), ("deny", &list.denied)] {
                    for pattern in patterns {
                        match output.format {
                            Format::Plain => output.line(format!("{}\t{kind}\t{pattern}", tag.name()).as_bytes())?,
                            Format::Json => output.json(serde_json::json!({ "tag": tag.name(), "kind": kind, "pattern": pattern }))?,
                        }
                    }
                }
            }
            Ok(())
        }
        Response::Done | Response::Deleted(_) | Response::Bool(_) | Response::Batch(_) => Ok(()),
        Response::Rows(_)
        | Response::Changes(_)
        | Response::ChangesPart(_)
        | Response::Status(_) => Err(Failure::unexpected_answer()),
    }
}

async fn streaming(client: &Client, command: &Command, output: &mut Output) -> Outcome {
    match command {
        Command::Acl(AclCommand::Set(set)) => {
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
        Command::Scan {
            collection,
            prefix,
            start,
            end,
            max,
        } => {
            let range = match (prefix, start, end) {
                (Some(prefix), _, _) => RowRange::Prefix(prefix.clone()),
                (None, None, None) => RowRange::Prefix(String::new()),
                (None, start, end) => RowRange::Range {
                    start: start.clone().unwrap_or_default(),
                    limit: end.clone().unwrap_or_default(),
                },
            };
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
        Command::Watch {
            database,
            initial,
            from,
            count,
        } => {
            let start = match (initial, from) {
                (true, _) => WatchStart::Initial,
                (false, Some(marker)) => WatchStart::From(marker.clone()),
                (false, None) => WatchStart::Now,
            };
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
        _ => Err(Failure::Usage("unsupported command".into())),
    }
}

fn identity(cli: &Cli, command: &IdentityCommand, output: &mut Output) -> Outcome {
    let dir = identity_dir(cli);
    let exists = |dir: &std::path::Path| {
        Failure::local(
            local_codes::IDENTITY_EXISTS,
            format!(
                "{} already holds an identity; not overwriting it",
                dir.display()
            ),
        )
    };
    match command {
        IdentityCommand::New { name } => {
            let identity = Identity::new_root(name).map_err(Failure::identity)?;
            if !identity.create_new(&dir).map_err(Failure::identity)? {
                return Err(exists(&dir));
            }
            output.line(identity.name().as_bytes())
        }
        IdentityCommand::Bless { extension, out } => {
            let blessed = load_identity(cli)?
                .bless(extension)
                .map_err(Failure::identity)?;
            if !blessed.create_new(out).map_err(Failure::identity)? {
                return Err(exists(out));
            }
            output.line(blessed.name().as_bytes())
        }
        IdentityCommand::Show => {
            let identity = load_identity(cli)?;
            match output.format {
                Format::Plain => {
                    output.line(format!("name\t{}", identity.name()).as_bytes())?;
                    output.line(format!("key\t{}", key_hex(&identity.public_key())).as_bytes())?;
                    for root in identity.trusted_roots() {
                        output.line(format!("trusts\t{}\t{}", root.name, key_hex(&root.public_key)).as_bytes())?;
                    }
                    Ok(())
                }
                Format::Json => output.json(serde_json::json!({
                    "name": identity.name(),
                    "key": key_hex(&identity.public_key()),
                    "trusts": identity.trusted_roots().iter()
                        .map(|root| serde_json::json!({ "name": root.name, "key": key_hex(&root.public_key) }))
                        .collect::<Vec<_>>(),
                })),
            }
        }
        IdentityCommand::ExportRoot { out } => {
            let identity = load_identity(cli)?;
            std::fs::write(out, identity.root().to_line())
                .map_err(|error| Failure::file("write", out, error))
        }
        IdentityCommand::Trust { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|error| Failure::file("read", file, error))?;
            let root = TrustedRoot::from_line(&text).map_err(Failure::identity)?;
            let mut identity = load_identity(cli)?;
            identity.trust(root).map_err(Failure::identity)?;
            identity.save(&dir).map_err(Failure::identity)
        }
        IdentityCommand::Untrust { name } => {
            let mut identity = load_identity(cli)?;
            identity.untrust(name).map_err(Failure::identity)?;
            identity.save(&dir).map_err(Failure::identity)
        }
    }
}
