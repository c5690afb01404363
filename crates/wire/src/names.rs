//! Validation of names, row keys and values (mirrors Go `v23:syncbase/util/util.go`).

use crate::error::{WireError, codes};
use crate::limits::{NAME_BYTES_MAX, VALUE_BYTES_MAX};

/// Checks an app, database or collection name: non-empty UTF-8, at most
/// [`NAME_BYTES_MAX`] bytes, no `/`, no control characters, no reserved characters.
pub fn validate_name(name: &str) -> Result<(), WireError> {
    check(name, "name", false)
}

/// Checks a row key: like a name, but `/` is allowed.
pub fn validate_row_key(key: &str) -> Result<(), WireError> {
    check(key, "row key", true)
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

fn check(text: &str, what: &str, slash_allowed: bool) -> Result<(), WireError> {
    let invalid =
        |why: String| WireError::new(codes::INVALID_NAME, format!("invalid {what}: {why}"));
    if text.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if text.len() > NAME_BYTES_MAX {
        return Err(invalid(format!(
            "{} bytes is longer than the limit of {NAME_BYTES_MAX}",
            text.len()
        )));
    }
    if let Some(bad) = text
        .chars()
        .find(|&c| c.is_control() || is_reserved(c) || (c == '/' && !slash_allowed))
    {
        return Err(invalid(format!("{text:?} contains the character {bad:?}")));
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
