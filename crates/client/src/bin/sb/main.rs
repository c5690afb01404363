//! `sb`: the Syncbase command-line tool. This file holds the command line (clap) and sends
//! each command to what runs it: `identity` (no daemon), `commands` (calls to a daemon),
//! `output` (printing), `args` (paths, the identity, the connection), `failure` (exit codes).

mod args;
mod commands;
mod failure;
mod identity;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use syncbase_wire::{Request, WatchStart};

use crate::args::{collection_path, connect, object_path};
use crate::failure::{Failure, Outcome, local_codes};
use crate::output::{Output, print_response};

/// The Syncbase command-line tool.
///
/// Talks to a `syncbased` daemon over an encrypted, mutually authenticated connection.
/// The options below go before the command (`sb -s HOST:PORT scan APP/DB/COLL`).
/// Exit codes: 0 ok; 1 refused, by the service or locally (stderr says `error[CODE]: message`);
/// 2 usage; 3 cannot connect or authenticate.
#[derive(Parser)]
#[command(version)]
pub(crate) struct Cli {
    /// The daemon to talk to
    #[arg(short = 's', long = "service", env = "SYNCBASE_SERVICE", value_name = "HOST:PORT",
          default_value = syncbase_wire::DEFAULT_SERVICE_ADDRESS)]
    pub(crate) service: String,
    /// Your identity [default: $XDG_CONFIG_HOME/syncbase/identity, else ~/.config/syncbase/identity]
    #[arg(long, env = "SYNCBASE_IDENTITY", value_name = "DIR")]
    pub(crate) identity: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub(crate) format: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// No headers, one item per line
    Plain,
    /// JSON lines
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Print every row of a collection, in the format `scan` prints (`key<TAB>value`,
    /// escaped; JSON lines with --format json)
    Export {
        /// APP/DB/COLL
        collection: String,
    },
    /// Load rows from FILE (or stdin) in the format `export` prints, in batches of 1,000
    Import {
        /// APP/DB/COLL
        collection: String,
        /// The rows [default: stdin]
        file: Option<PathBuf>,
    },
    /// Syncgroups: create, join, list (sync a database's collections with other daemons)
    #[command(subcommand)]
    Sg(SgCommand),
    /// Pull from every other member of APP/DB's syncgroups now, and wait for the rounds
    ///
    /// Push and periodic pulls keep members in sync without this; it is for scripts and tests
    /// that want a round at a known moment. Prints one `MEMBER<TAB>N records<TAB>B bytes<TAB>T
    /// ms` line per member (the delta's records and encoded bytes, the round's duration; `--format
    /// json` too); a round that failed prints `MEMBER<TAB>error[CODE]: MESSAGE` instead and makes
    /// the exit code 1. A database without syncgroups prints nothing.
    Sync {
        /// APP/DB
        database: String,
    },
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
    ///
    /// With databases (you need Admin on each), also each one's watch log: `log_start` (the
    /// oldest position kept), `log_end` (the newest), `retention` (what the daemon keeps: at
    /// least the last N commits and every commit younger than S seconds; a watch resumes from any
    /// marker inside that window) and one `pin<TAB>NAME<TAB>SEQ` line per consumer that holds
    /// the log from SEQ on (sync's watcher).
    ///
    /// Then, for each database this daemon syncs that you can see: `synced<TAB>APP/DB<TAB>behind
    /// N` (generations members announced that it has not received yet), `syncgroup<TAB>APP/DB<TAB>SG`,
    /// and per member `member<TAB>APP/DB<TAB>SG<TAB>NAME<TAB>ADDRESS<TAB>LAST` (LAST: `this
    /// daemon`, `never`, or `N ms ago` for the last successful round); `synced_other<TAB>N`
    /// counts the synced databases you cannot see.
    Status {
        /// APP/DB
        #[arg(value_name = "DATABASE")]
        databases: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
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
pub(crate) enum AppCommand {
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
pub(crate) enum DbCommand {
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
pub(crate) enum CollectionCommand {
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
pub(crate) enum SgCommand {
    /// Create a syncgroup sharing collections of a database; this daemon is its first member
    Create {
        /// APP/DB
        database: String,
        /// The syncgroup's name
        name: String,
        /// The collections it shares, comma-separated
        #[arg(long, value_delimiter = ',', required = true, value_name = "C1,C2")]
        collections: Vec<String>,
        /// What it is for
        #[arg(long, default_value = "", value_name = "D")]
        description: String,
        /// Who may join (a pattern; repeatable) [default: your root, e.g. alice]
        #[arg(long, value_name = "P")]
        read: Vec<String>,
        /// Who may administer it (a pattern; repeatable) [default: your root]
        #[arg(long, value_name = "P")]
        admin: Vec<String>,
    },
    /// Join a syncgroup through a member daemon; a missing app, database or collection is created
    Join {
        /// APP/DB
        database: String,
        /// The syncgroup's name
        name: String,
        /// A member's address
        #[arg(long, value_name = "HOST:PORT")]
        via: String,
        /// Return only once the first round with that member has been applied (with a
        /// progress bar when stderr is a terminal)
        #[arg(long)]
        wait: bool,
    },
    /// List a database's syncgroups, one name a line
    List {
        /// APP/DB
        database: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AclCommand {
    /// Print `TAG<TAB>allow|deny<TAB>PATTERN` lines
    Get {
        /// `/`, APP, APP/DB or APP/DB/COLL
        object: String,
    },
    /// Replace one tag's lists
    Set(AclSet),
}

#[derive(Args)]
pub(crate) struct AclSet {
    /// `/`, APP, APP/DB or APP/DB/COLL
    pub(crate) object: String,
    /// Read, Write, Admin or Resolve
    pub(crate) tag: String,
    /// Patterns allowed (`alice` matches alice and alice:*; `alice:$` only alice)
    #[arg(long, num_args = 1.., value_name = "P")]
    pub(crate) allow: Vec<String>,
    /// Patterns denied
    #[arg(long, num_args = 1.., value_name = "P")]
    pub(crate) deny: Vec<String>,
}

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

/// Runs one command. The match names every command, so a new one cannot be left unhandled.
async fn run(cli: Cli) -> Outcome {
    let mut output = Output {
        format: cli.format,
        out: std::io::stdout().lock(),
    };
    let request = match &cli.command {
        Command::Identity(command) => return identity::identity(&cli, command, &mut output),
        Command::Status { databases } => {
            return commands::status(&connect(&cli).await?, databases, &mut output).await;
        }
        Command::Acl(AclCommand::Set(set)) => {
            return commands::acl_set(&connect(&cli).await?, set).await;
        }
        Command::Scan {
            collection,
            prefix,
            start,
            end,
            max,
        } => {
            let range = commands::scan_range(prefix, start, end);
            let client = connect(&cli).await?;
            return commands::scan(&client, &mut output, collection, range, *max).await;
        }
        Command::Export { collection } => {
            let client = connect(&cli).await?;
            let everything = syncbase_wire::RowRange::Prefix(String::new());
            return commands::scan(&client, &mut output, collection, everything, None).await;
        }
        Command::Sg(SgCommand::Join {
            database,
            name,
            via,
            wait,
        }) => {
            let client = connect(&cli).await?;
            return commands::join(&client, database, name, via, *wait).await;
        }
        Command::Import { collection, file } => {
            let client = connect(&cli).await?;
            return commands::import(&client, cli.format, collection, file.as_deref()).await;
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
            let client = connect(&cli).await?;
            return commands::watch(&client, &mut output, database, start, *count).await;
        }
        Command::App(command) => commands::app_request(command),
        Command::Db(command) => commands::db_request(command)?,
        Command::Collection(command) => commands::collection_request(command)?,
        Command::Sg(command) => commands::sg_request(command)?,
        Command::Sync { database } => Request::SyncNow {
            database: crate::args::database_path(database)?,
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
    };
    let client = connect(&cli).await?;
    let response = client.call_one(request).await?;
    print_response(&mut output, &cli.command, response)
}
