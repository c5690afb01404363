//! Syncgroups (mirrors Go `vsync/syncgroup.go`), for now as durable records that tests and the
//! simulator create directly: a name, the collections it shares and its members. The calls on
//! the wire and in `sb` come with sync between daemons.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use syncbase_store::{StoreReader, StoreWriter};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{decode_typed, get_typed, put_typed};

use crate::error::Result;

/// A syncgroup of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syncgroup {
    /// Its name, unique in the database.
    pub name: String,
    /// The collections it shares (whole collections for now).
    pub collections: Vec<String>,
    /// The members: each a daemon, by its principal name.
    pub members: Vec<String>,
}

fn syncgroup_key(name: &str) -> Vec<u8> {
    keys::key(Prefix::Sync, &[b"sg", name.as_bytes()])
}

/// Stores (or replaces) a syncgroup record.
pub fn put_syncgroup<W: StoreWriter + ?Sized>(writer: &W, syncgroup: &Syncgroup) -> Result<()> {
    Ok(put_typed(
        writer,
        &syncgroup_key(&syncgroup.name),
        syncgroup,
    )?)
}

/// The syncgroup named `name`, if the database has it.
pub fn syncgroup<R: StoreReader + ?Sized>(reader: &R, name: &str) -> Result<Option<Syncgroup>> {
    Ok(get_typed(reader, &syncgroup_key(name))?)
}

/// Every syncgroup of the database, by name.
pub fn syncgroups<R: StoreReader + ?Sized>(reader: &R) -> Result<Vec<Syncgroup>> {
    let start = keys::key_prefix(Prefix::Sync, &[b"sg"], b"");
    let (start, limit) = keys::prefix_range(&start);
    let mut found = Vec::new();
    for entry in reader.scan(&start, &limit)? {
        let (key, value) = entry?;
        found.push(decode_typed(&key, &value)?);
    }
    Ok(found)
}

/// The collections some syncgroup of the database shares.
pub fn synced_collections<R: StoreReader + ?Sized>(reader: &R) -> Result<BTreeSet<String>> {
    Ok(syncgroups(reader)?
        .into_iter()
        .flat_map(|syncgroup| syncgroup.collections)
        .collect())
}
