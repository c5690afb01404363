//! From command-line arguments to what a call needs: the identity, a checked daemon address and
//! a connection, and the `APP/DB/COLL` paths of objects.

use std::path::PathBuf;

use syncbase_client::Client;
use syncbase_net::{Identity, default_paths};
use syncbase_wire::{CollectionPath, DatabasePath, ObjectPath};

use crate::Cli;
use crate::failure::Failure;

/// The identity directory: `--identity`, `SYNCBASE_IDENTITY`, or the default.
pub(crate) fn identity_dir(cli: &Cli) -> PathBuf {
    cli.identity
        .clone()
        .unwrap_or_else(default_paths::identity_dir)
}

/// The caller's identity, created on first use (as `syncbased` does).
pub(crate) fn load_identity(cli: &Cli) -> Result<Identity, Failure> {
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

/// A connection to the daemon at `-s`, authenticated with the caller's identity.
pub(crate) async fn connect(cli: &Cli) -> Result<Client, Failure> {
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

/// `APP/DB` as a database path.
pub(crate) fn database_path(text: &str) -> Result<DatabasePath, Failure> {
    let parts = split(text, 2, "APP/DB")?;
    Ok(DatabasePath {
        app: parts[0].clone(),
        database: parts[1].clone(),
    })
}

/// `APP/DB/COLL` as a collection path.
pub(crate) fn collection_path(text: &str) -> Result<CollectionPath, Failure> {
    let parts = split(text, 3, "APP/DB/COLL")?;
    Ok(CollectionPath {
        app: parts[0].clone(),
        database: parts[1].clone(),
        collection: parts[2].clone(),
    })
}

/// `/`, `APP`, `APP/DB` or `APP/DB/COLL` as the path of an object with permissions.
pub(crate) fn object_path(text: &str) -> Result<ObjectPath, Failure> {
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
