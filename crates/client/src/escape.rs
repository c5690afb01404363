//! The escaping of `sb`'s plain output: a row or a change stays on one line, and the bytes come
//! back exactly with [`unescape`] (a bulk import reads this format).
//!
//! `\\` stands for a backslash, `\t`, `\n` and `\r` for tab, newline and carriage return, and
//! `\xHH` (two lowercase hex digits) for each byte of any other control character and for each
//! byte that is not part of valid UTF-8. Everything else (valid, non-control UTF-8) passes
//! through unchanged.

use std::fmt::Write as _;

/// Escapes `bytes` for one field of a plain-output line: the result holds no tab, newline or
/// carriage return, and [`unescape`] returns `bytes` from it.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buffer = [0; 4];
                    for byte in c.encode_utf8(&mut buffer).bytes() {
                        push_hex(&mut out, byte);
                    }
                }
                c => out.push(c),
            }
        }
        for &byte in chunk.invalid() {
            push_hex(&mut out, byte);
        }
    }
    out
}

/// The bytes [`escape`] made `text` from. Characters other than `\` stand for themselves.
pub fn unescape(text: &str) -> Result<Vec<u8>, UnescapeError> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(backslash) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..backslash]);
        let offset = text.len() - rest.len() + backslash;
        let escape = &rest[backslash + 1..];
        let (byte, used) = match escape.as_bytes().first() {
            Some(b'\\') => (b'\\', 1),
            Some(b't') => (b'\t', 1),
            Some(b'n') => (b'\n', 1),
            Some(b'r') => (b'\r', 1),
            Some(b'x') => {
                let digits = escape
                    .get(1..3)
                    .filter(|digits| digits.bytes().all(|digit| digit.is_ascii_hexdigit()));
                let Some(digits) = digits else {
                    return Err(UnescapeError::new(
                        offset,
                        "`\\x` must be followed by two hex digits",
                    ));
                };
                // Two hex digits always make a byte.
                let byte = u8::from_str_radix(digits, 16).map_err(|_| {
                    UnescapeError::new(offset, "`\\x` must be followed by two hex digits")
                })?;
                (byte, 3)
            }
            Some(_) => {
                return Err(UnescapeError::new(
                    offset,
                    "unknown escape: use \\\\, \\t, \\n, \\r or \\xHH",
                ));
            }
            None => {
                return Err(UnescapeError::new(offset, "a backslash ends the text"));
            }
        };
        out.push(byte);
        rest = &escape[used..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

/// Text that [`unescape`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnescapeError {
    /// The byte offset of the bad escape in the text.
    pub offset: usize,
    /// What is wrong, for people.
    pub message: String,
}

impl UnescapeError {
    /// The stable code of this error.
    pub const CODE: &'static str = syncbase_error_code::client::BAD_ESCAPE;

    fn new(offset: usize, message: &str) -> Self {
        Self {
            offset,
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for UnescapeError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "error[{}]: at byte {}: {}",
            Self::CODE,
            self.offset,
            self.message
        )
    }
}

impl std::error::Error for UnescapeError {}

fn push_hex(out: &mut String, byte: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\x{byte:02x}");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check(bytes: &[u8], expected: &str) {
        assert_eq!(escape(bytes), expected, "{bytes:?}");
        assert_eq!(unescape(expected).unwrap(), bytes, "{expected:?}");
    }

    #[test]
    fn escapes_are_the_documented_ones() {
        check(b"plain text", "plain text");
        check(b"a\tb\nc\rd\\e", "a\\tb\\nc\\rd\\\\e");
        check(b"\x00\x01\x1b\x7f", "\\x00\\x01\\x1b\\x7f");
        check(b"\xff\xfe", "\\xff\\xfe");
        check("caf\u{e9} \u{1f600}".as_bytes(), "caf\u{e9} \u{1f600}");
        // A C1 control character is valid UTF-8, but a control: its two bytes are escaped.
        check("\u{85}".as_bytes(), "\\xc2\\x85");
        // A truncated UTF-8 sequence is escaped byte by byte.
        check(b"\xe2\x82", "\\xe2\\x82");
        check(b"", "");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for (text, offset) in [
            ("\\", 0),
            ("a\\q", 1),
            ("ab\\x4", 2),
            ("\\xzz", 0),
            ("\\x\u{e9}9", 0),
        ] {
            let error = unescape(text).unwrap_err();
            assert_eq!(error.offset, offset, "{text:?}: {error}");
        }
        assert_eq!(
            unescape("\\X41"),
            Err(UnescapeError::new(
                0,
                "unknown escape: use \\\\, \\t, \\n, \\r or \\xHH"
            ))
        );
        assert_eq!(unescape("\\x4A\\x4a").unwrap(), b"JJ");
    }

    fn mixed_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(
                prop_oneof![
                    Just(b'\\'),
                    Just(b'\t'),
                    Just(b'\n'),
                    Just(b'\r'),
                    Just(b'x'),
                    any::<u8>()
                ],
                0..32
            ),
        ]
    }

    proptest! {
        #[test]
        fn unescape_inverts_escape_and_escaped_text_is_one_field(bytes in mixed_bytes()) {
            let escaped = escape(&bytes);
            prop_assert!(!escaped.contains(['\t', '\n', '\r']), "{:?}", escaped);
            prop_assert_eq!(unescape(&escaped).unwrap(), bytes);
        }

        #[test]
        fn printable_utf8_without_backslashes_passes_through(text in "[^\\\\\\p{Cc}]*") {
            prop_assert_eq!(escape(text.as_bytes()), text);
        }
    }
}
