//! Validation of names, row keys and values (mirrors Go `v23:syncbase/util/util.go`).

use crate::error::{WireError, codes};
use crate::limits::{NAME_BYTES_MAX, VALUE_BYTES_MAX};

/// Checks the name of an app, database or collection being created: non-empty UTF-8, at most
/// [`NAME_BYTES_MAX`] bytes, no `/`, no control characters, no reserved characters, none of
/// `$` and `:` (they mean something in principal patterns), no bidirectional controls (they
/// make a name display as another), and not `.` or `..`.
///
/// Objects created before these rules keep their names: calls that name an existing object
/// check it with [`validate_existing_name`] instead.
pub fn validate_name(name: &str) -> Result<(), WireError> {
    check(name, "name", false)?;
    check_new_name(name).map_err(|why| invalid("name", why))
}

/// Checks a name that reaches an existing app, database or collection: the rules of
/// [`validate_name`] without the ones added later (`$`, `:`, bidirectional controls, `.` and
/// `..`), so objects named under the earlier rules stay readable and destroyable.
pub fn validate_existing_name(name: &str) -> Result<(), WireError> {
    check(name, "name", false)
}

/// Checks a row key: like an existing name, but `/` is allowed.
pub fn validate_row_key(key: &str) -> Result<(), WireError> {
    check(key, "row key", true)
}

/// Why `name` may not be given to a new object or identity under the rules names share (`$`,
/// `:`, bidirectional controls, `.` and `..`), or `None` when it may. The identity layer uses
/// the same rules for its root names and extensions.
pub fn new_name_problem(name: &str) -> Option<String> {
    check_new_name(name).err()
}

/// Checks a value's size.
pub fn validate_value(value: &[u8]) -> Result<(), WireError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(WireError::new(
            codes::VALUE_TOO_LARGE,
            format!(
                "value of {} bytes is larger than the limit of {VALUE_BYTES_MAX}",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn invalid(what: &str, why: String) -> WireError {
    WireError::new(codes::INVALID_NAME, format!("invalid {what}: {why}"))
}

fn check(text: &str, what: &str, slash_allowed: bool) -> Result<(), WireError> {
    if text.is_empty() {
        return Err(invalid(what, "it is empty".into()));
    }
    if text.len() > NAME_BYTES_MAX {
        return Err(invalid(
            what,
            format!(
                "{} bytes is longer than the limit of {NAME_BYTES_MAX}",
                text.len()
            ),
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|&c| c.is_control() || is_reserved(c) || (c == '/' && !slash_allowed))
    {
        return Err(invalid(
            what,
            format!("{text:?} contains the character {bad:?}"),
        ));
    }
    Ok(())
}

/// The rules added for new names: what a name would be misread as.
fn check_new_name(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!(
            "{name:?} is reserved (it reads as a path component)"
        ));
    }
    for c in name.chars() {
        match c {
            '$' => {
                return Err(format!(
                    "{name:?} contains '$', which ends a principal pattern (`alice:$`)"
                ));
            }
            ':' => {
                return Err(format!(
                    "{name:?} contains ':', which separates the links of a principal name"
                ));
            }
            c if is_bidirectional_control(c) => {
                return Err(format!(
                    "{name:?} contains U+{:04X}, a bidirectional control character that can make a name display as another",
                    c as u32
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Characters kept out of names: noncharacters and the replacement character, which would mean
/// the name was not really UTF-8 somewhere along the way.
fn is_reserved(c: char) -> bool {
    matches!(
        c,
        '\u{fffd}' | '\u{fffe}' | '\u{ffff}' | '\u{fdd0}'..='\u{fdef}'
    )
}

/// The bidirectional marks, embeddings, overrides and isolates (U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069).
fn is_bidirectional_control(c: char) -> bool {
    matches!(
        c,
        '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}
