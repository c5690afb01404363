//! Permissions: a map from tag to an access list of principal patterns (mirrors Vanadium's
//! `access.Permissions`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{WireError, codes};
use crate::limits::{NAME_BYTES_MAX, PATTERNS_PER_LIST_MAX};

/// What an access list grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tag {
    /// Read data and list children.
    Read,
    /// Write data and create children.
    Write,
    /// Destroy the object and read or change its permissions.
    Admin,
    /// Reach the object's children (any tag also does).
    Resolve,
}

impl Tag {
    /// Every tag.
    pub const ALL: [Tag; 4] = [Tag::Read, Tag::Write, Tag::Admin, Tag::Resolve];

    /// The tag's name, as `sb acl` prints and parses it.
    pub fn name(self) -> &'static str {
        match self {
            Tag::Read => "Read",
            Tag::Write => "Write",
            Tag::Admin => "Admin",
            Tag::Resolve => "Resolve",
        }
    }

    /// The tag named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<Tag> {
        Tag::ALL
            .into_iter()
            .find(|tag| tag.name().eq_ignore_ascii_case(name))
    }
}

/// Who a tag is granted to: a principal is allowed when some allowed pattern matches it and no
/// denied pattern does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessList {
    /// Patterns of principals granted the tag.
    pub allowed: Vec<String>,
    /// Patterns of principals refused the tag even when allowed.
    pub denied: Vec<String>,
}

impl AccessList {
    /// Whether `principal` is allowed.
    pub fn includes(&self, principal: &str) -> bool {
        self.allowed.iter().any(|p| pattern_matches(p, principal))
            && !self.denied.iter().any(|p| pattern_matches(p, principal))
    }

    /// Whether some principal is allowed: some allowed pattern is not wholly covered by a denied
    /// one. (With finitely many denied patterns, only a single one can cover an allowed pattern
    /// that extends to `name:*`, so checking them one by one is exact.)
    pub fn allows_someone(&self) -> bool {
        self.allowed.iter().any(|allowed| {
            !self
                .denied
                .iter()
                .any(|denied| pattern_covers(denied, allowed))
        })
    }
}

/// The permissions of a service, app, database or collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions(pub BTreeMap<Tag, AccessList>);

impl Permissions {
    /// Every tag granted to `pattern`.
    pub fn all_tags_to(pattern: &str) -> Self {
        Self(
            Tag::ALL
                .into_iter()
                .map(|tag| {
                    (
                        tag,
                        AccessList {
                            allowed: vec![pattern.to_string()],
                            denied: Vec::new(),
                        },
                    )
                })
                .collect(),
        )
    }

    /// Whether `principal` holds `tag`.
    pub fn grants(&self, tag: Tag, principal: &str) -> bool {
        self.0
            .get(&tag)
            .is_some_and(|list| list.includes(principal))
    }

    /// Whether `principal` holds any tag at all (which lets it resolve through the object).
    pub fn grants_any(&self, principal: &str) -> bool {
        Tag::ALL.into_iter().any(|tag| self.grants(tag, principal))
    }

    /// Checks the permissions are well formed (bounded lists of valid patterns) and leave the
    /// object manageable: an Admin list that allows someone. Permissions without one, or whose
    /// Admin list allows nobody, would lock everyone out of the object's permissions for good
    /// (at the service, even its own admins), so they are refused.
    pub fn validate(&self) -> Result<(), WireError> {
        let invalid = |why: String| WireError::new(codes::INVALID_PERMISSIONS, why);
        for (tag, list) in &self.0 {
            for patterns in [&list.allowed, &list.denied] {
                if patterns.len() > PATTERNS_PER_LIST_MAX {
                    return Err(invalid(format!(
                        "{} lists {} patterns; the limit is {PATTERNS_PER_LIST_MAX}",
                        tag.name(),
                        patterns.len()
                    )));
                }
                for pattern in patterns {
                    validate_pattern(pattern).map_err(invalid)?;
                }
            }
        }
        match self.0.get(&Tag::Admin) {
            None => Err(invalid(
                "the permissions have no Admin list: no one could manage this object again".into(),
            )),
            Some(list) if !list.allows_someone() => Err(invalid(
                "the Admin list allows nobody: no one could manage this object again".into(),
            )),
            Some(_) => Ok(()),
        }
    }
}

fn validate_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix(":$").unwrap_or(pattern);
    if body.is_empty() || pattern.len() > NAME_BYTES_MAX {
        return Err(format!("pattern {pattern:?} is empty or too long"));
    }
    if body.split(':').any(|part| {
        part.is_empty()
            || part
                .chars()
                .any(|c| c.is_control() || c == '$' || c.is_whitespace())
    }) {
        return Err(format!("pattern {pattern:?} is malformed"));
    }
    Ok(())
}

/// Whether every principal `allowed` matches also matches `denied`.
fn pattern_covers(denied: &str, allowed: &str) -> bool {
    match allowed.strip_suffix(":$") {
        // One principal: covered when the denied pattern matches it.
        Some(exact) => pattern_matches(denied, exact),
        // `allowed` and everything below it: only a denied pattern that also extends does.
        None => !denied.ends_with(":$") && pattern_matches(denied, allowed),
    }
}

/// Whether `pattern` matches the principal name `principal`: `alice` matches `alice` and every
/// `alice:...`; `alice:$` matches only `alice` itself.
pub fn pattern_matches(pattern: &str, principal: &str) -> bool {
    if let Some(exact) = pattern.strip_suffix(":$") {
        return exact == principal;
    }
    match principal.strip_prefix(pattern) {
        Some(rest) => rest.is_empty() || rest.starts_with(':'),
        None => false,
    }
}
