//! Storage keys (mirrors Go `server/util/key_util.go` and `constants.go`). The only place row and
//! metadata keys are built or parsed.
//!
//! A key is a one-byte [`Prefix`] tag followed by components. Each component is written with
//! every `0x00` byte escaped as `00 ff` and ends with the terminator `00 01`. So a component can
//! hold any bytes (separators included) without being confused with the next one, and keys sort
//! as their component tuples do: a shorter component sorts before any extension of it, because the
//! terminator is smaller than every escaped byte. Tags are printable ASCII, never `0xff` (which the
//! watchable layer reserves).

use crate::error::{Error, Result};

/// What a key holds: the first byte of every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Prefix {
    /// Service metadata (`$service`).
    Service,
    /// App metadata (`$app`).
    App,
    /// Database metadata (`$database`).
    Database,
    /// Collection metadata and permissions (`$collection`; the seed's `$table`).
    Collection,
    /// Rows (`$row`).
    Row,
    /// Sync metadata (`$sync`).
    Sync,
}

const ALL_PREFIXES: [Prefix; 6] = [
    Prefix::Service,
    Prefix::App,
    Prefix::Database,
    Prefix::Collection,
    Prefix::Row,
    Prefix::Sync,
];

impl Prefix {
    /// The tag byte that starts keys of this kind.
    pub fn tag(self) -> u8 {
        match self {
            Prefix::Service => b's',
            Prefix::App => b'a',
            Prefix::Database => b'd',
            Prefix::Collection => b'c',
            Prefix::Row => b'r',
            Prefix::Sync => b'y',
        }
    }

    /// The seed's name for this prefix, for people and logs.
    pub fn name(self) -> &'static str {
        match self {
            Prefix::Service => "$service",
            Prefix::App => "$app",
            Prefix::Database => "$database",
            Prefix::Collection => "$collection",
            Prefix::Row => "$row",
            Prefix::Sync => "$sync",
        }
    }

    /// The prefix whose tag is `tag`.
    pub fn from_tag(tag: u8) -> Option<Self> {
        ALL_PREFIXES.into_iter().find(|prefix| prefix.tag() == tag)
    }

    /// The key prefix shared by every key of this kind.
    pub fn as_key(self) -> Vec<u8> {
        vec![self.tag()]
    }
}

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xff;
const TERMINATOR: u8 = 0x01;

/// Builds the key `prefix` + `components`.
pub fn key(prefix: Prefix, components: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + components.iter().map(|c| c.len() + 2).sum::<usize>());
    out.push(prefix.tag());
    for component in components {
        push_component(&mut out, component);
    }
    out
}

/// The key prefix shared by every key `prefix` + `components` + `partial` + ..., where `partial`
/// is the start of the next component (empty: any next component). Use it with
/// [`prefix_range`] to scan, for example, the rows of a collection whose keys start with `partial`.
pub fn key_prefix(prefix: Prefix, components: &[&[u8]], partial: &[u8]) -> Vec<u8> {
    let mut out = key(prefix, components);
    push_escaped(&mut out, partial);
    out
}

/// Whether [`parse`] would accept `key`, without building its components.
pub fn is_well_formed(key: &[u8]) -> bool {
    let Some((&tag, mut rest)) = key.split_first() else {
        return false;
    };
    if Prefix::from_tag(tag).is_none() {
        return false;
    }
    let mut open = false;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != ESCAPE {
            open = true;
            continue;
        }
        match rest.split_first() {
            Some((&ESCAPED_ZERO, tail)) => {
                open = true;
                rest = tail;
            }
            Some((&TERMINATOR, tail)) => {
                open = false;
                rest = tail;
            }
            _ => return false,
        }
    }
    !open
}

/// Splits a key into its prefix and components.
pub fn parse(key: &[u8]) -> Result<(Prefix, Vec<Vec<u8>>)> {
    let malformed = |why: &str| Error::MalformedKey(format!("{why}: {key:?}"));
    let (&tag, mut rest) = key.split_first().ok_or_else(|| malformed("empty key"))?;
    let prefix = Prefix::from_tag(tag).ok_or_else(|| malformed("unknown prefix tag"))?;
    let mut components = Vec::new();
    let mut current = Vec::new();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != ESCAPE {
            current.push(byte);
            rest = tail;
            continue;
        }
        match tail.split_first() {
            Some((&ESCAPED_ZERO, tail)) => {
                current.push(0);
                rest = tail;
            }
            Some((&TERMINATOR, tail)) => {
                components.push(std::mem::take(&mut current));
                rest = tail;
            }
            _ => return Err(malformed("bad escape")),
        }
    }
    if !current.is_empty() {
        return Err(malformed("unterminated component"));
    }
    Ok((prefix, components))
}

/// The half-open range `[prefix, limit)` of every key starting with `prefix`; an empty limit
/// means "to the end".
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (prefix.to_vec(), syncbase_store::prefix_limit(prefix))
}

/// The key of a row in a database's store.
pub fn row(collection: &str, row_key: &[u8]) -> Vec<u8> {
    key(Prefix::Row, &[collection.as_bytes(), row_key])
}

/// The start shared by every row key of the collection whose row `key` is (its prefix tag and
/// collection component), or `None` when `key` is not a well-formed row key. Keys sharing it
/// sort together, apart from every other collection's.
pub fn row_collection_prefix(key: &[u8]) -> Option<&[u8]> {
    if key.first() != Some(&Prefix::Row.tag()) {
        return None;
    }
    let end = key[1..]
        .windows(2)
        .position(|pair| pair == [ESCAPE, TERMINATOR])?;
    Some(&key[..end + 3])
}

/// The range of the rows of a collection whose keys start with `row_prefix`.
pub fn row_prefix_range(collection: &str, row_prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    prefix_range(&key_prefix(
        Prefix::Row,
        &[collection.as_bytes()],
        row_prefix,
    ))
}

fn push_component(out: &mut Vec<u8>, component: &[u8]) {
    push_escaped(out, component);
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        if byte == 0 {
            out.extend_from_slice(&[ESCAPE, ESCAPED_ZERO]);
        } else {
            out.push(byte);
        }
    }
}
