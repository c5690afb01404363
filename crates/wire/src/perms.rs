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

    /// Checks the permissions are well formed: bounded lists of valid patterns.
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
        Ok(())
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
