//! Syncgroups (mirrors Go `vsync/syncgroup.go`): durable records of a database (a name, the
//! collections it shares, who may join it and administer it, and its members with the address
//! each is reached at). Members learn of each other through these records: a delta carries the
//! responder's records of the syncgroups it shares with the initiator, and the initiator takes in
//! members it did not know ([`merge_members`]); membership only grows here (leaving comes later).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use syncbase_store::{StoreReader, StoreWriter};
use syncbase_util::keys::{self, Prefix};
use syncbase_util::{decode_typed, get_typed, put_typed};

use syncbase_wire::AccessList;

use crate::error::Result;

/// A syncgroup of a database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syncgroup {
    /// Its name, unique in the database.
    pub name: String,
    /// The collections it shares (whole collections for now).
    pub collections: Vec<String>,
    /// The members: each a daemon, by its principal name.
    pub members: Vec<String>,
    /// What it is for, for people.
    pub description: String,
    /// Who may join it (and pull from its members): principal patterns.
    pub read: AccessList,
    /// Who may administer it.
    pub admin: AccessList,
    /// Where each member is reached (`HOST:PORT`), by principal name; a member without one is
    /// reached only over a connection it opens.
    pub addresses: BTreeMap<String, String>,
}

/// What a member answers a daemon that joins: the syncgroup's record (the joiner listed) and the
/// permissions of the shared collections there (a joiner creates the ones it lacks with them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// The syncgroup.
    pub syncgroup: Syncgroup,
    /// Each shared collection and its permissions on the member.
    pub collections: Vec<(String, syncbase_wire::Permissions)>,
}

impl Syncgroup {
    /// Whether `principal` may join the syncgroup (its Read list).
    pub fn admits(&self, principal: &str) -> bool {
        self.read.includes(principal)
    }
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

/// Takes in the members (and their addresses) of `incoming` records of syncgroups this database
/// has, as `sender` sent them; returns whether anything was learned. The sender's own address is
/// taken as it says (it moved, say, after a restart); other addresses only where none is known.
/// Records of syncgroups this database does not have are ignored (joining is explicit).
pub fn merge_members<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    incoming: &[Syncgroup],
    sender: &str,
) -> Result<bool> {
    let mut learned = false;
    for theirs in incoming {
        let Some(mut ours) = syncgroup(transaction, &theirs.name)? else {
            continue;
        };
        let before = ours.clone();
        for member in &theirs.members {
            if !ours.members.contains(member) {
                ours.members.push(member.clone());
            }
        }
        for (member, address) in &theirs.addresses {
            if member == sender {
                ours.addresses.insert(member.clone(), address.clone());
            } else {
                ours.addresses
                    .entry(member.clone())
                    .or_insert_with(|| address.clone());
            }
        }
        if ours != before {
            put_syncgroup(transaction, &ours)?;
            learned = true;
        }
    }
    Ok(learned)
}

/// Adds `member` (reached at `address`, if it has one) to the syncgroup `name`; `None` when the
/// database has no such syncgroup.
pub fn add_member<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    name: &str,
    member: &str,
    address: Option<&str>,
) -> Result<Option<Syncgroup>> {
    let Some(mut record) = syncgroup(transaction, name)? else {
        return Ok(None);
    };
    if !record.members.iter().any(|known| known == member) {
        record.members.push(member.to_string());
    }
    if let Some(address) = address {
        record
            .addresses
            .insert(member.to_string(), address.to_string());
    }
    put_syncgroup(transaction, &record)?;
    Ok(Some(record))
}

/// Records `address` as where `member` is reached, in every syncgroup it is a member of (a
/// daemon does this when it starts: its address may have changed); returns whether any record
/// changed.
pub fn set_own_address<T: StoreReader + StoreWriter + ?Sized>(
    transaction: &T,
    member: &str,
    address: &str,
) -> Result<bool> {
    let mut changed = false;
    for mut record in syncgroups(transaction)? {
        if record.members.iter().any(|known| known == member)
            && record.addresses.get(member).map(String::as_str) != Some(address)
        {
            record
                .addresses
                .insert(member.to_string(), address.to_string());
            put_syncgroup(transaction, &record)?;
            changed = true;
        }
    }
    Ok(changed)
}
