//! Tests of `syncbase-wire`: patterns, validation, and decoding hostile bytes.

use proptest::prelude::*;
use syncbase_wire::{
    AccessList, Permissions, Request, Response, Tag, codes, decode, encode, limits,
    pattern_matches, validate_existing_name, validate_name, validate_row_key, validate_value,
};

fn check_pattern(pattern: &str, principal: &str, expected: bool) {
    assert_eq!(
        pattern_matches(pattern, principal),
        expected,
        "{pattern} vs {principal}"
    );
}

#[test]
fn patterns_match_a_principal_and_its_extensions() {
    check_pattern("alice", "alice", true);
    check_pattern("alice", "alice:phone", true);
    check_pattern("alice", "alice:phone:app", true);
    check_pattern("alice", "alicex", false);
    check_pattern("alice", "bob:alice", false);
    check_pattern("alice:$", "alice", true);
    check_pattern("alice:$", "alice:phone", false);
    check_pattern("alice:phone", "alice", false);
    check_pattern("alice:phone", "alice:phone:app", true);
}

#[test]
fn denied_patterns_win_over_allowed_ones() {
    let list = AccessList {
        allowed: vec!["alice".into()],
        denied: vec!["alice:guest".into()],
    };
    assert!(list.includes("alice:phone"));
    assert!(!list.includes("alice:guest"));
    assert!(!list.includes("alice:guest:tablet"));
    let permissions = Permissions::all_tags_to("bob");
    assert!(Tag::ALL.iter().all(|tag| permissions.grants(*tag, "bob:x")));
    assert!(!permissions.grants_any("carol"));
}

#[test]
fn malformed_permissions_are_refused() {
    for pattern in ["", ":", "alice:", "a::b", "al ice", "$", "alice:$:x"] {
        let mut permissions = Permissions::all_tags_to("alice");
        permissions.0.insert(
            Tag::Read,
            AccessList {
                allowed: vec![pattern.into()],
                denied: vec![],
            },
        );
        let error = permissions.validate().unwrap_err();
        assert_eq!(error.code, codes::INVALID_PERMISSIONS, "{pattern:?}");
    }
    Permissions::all_tags_to("alice:$").validate().unwrap();
}

fn check_admin(allowed: &[&str], denied: &[&str], allows_someone: bool) {
    let list = AccessList {
        allowed: allowed.iter().map(|p| p.to_string()).collect(),
        denied: denied.iter().map(|p| p.to_string()).collect(),
    };
    assert_eq!(
        list.allows_someone(),
        allows_someone,
        "{allowed:?} minus {denied:?}"
    );
    let mut permissions = Permissions::all_tags_to("alice");
    permissions.0.insert(Tag::Admin, list);
    match permissions.validate() {
        Ok(()) => assert!(allows_someone),
        Err(error) => {
            assert!(!allows_someone);
            assert_eq!(error.code, codes::INVALID_PERMISSIONS);
            assert!(error.message.contains("no one could manage"), "{error}");
        }
    }
}

#[test]
fn permissions_whose_admin_list_allows_nobody_are_refused() {
    check_admin(&[], &[], false);
    check_admin(&[], &["bob"], false);
    check_admin(&["alice"], &["alice"], false);
    check_admin(&["alice:phone"], &["alice"], false);
    check_admin(&["alice:$"], &["alice"], false);
    check_admin(&["alice:$"], &["alice:$"], false);
    check_admin(&["alice:phone", "bob"], &["alice", "bob"], false);
    check_admin(&["alice"], &[], true);
    check_admin(&["alice"], &["alice:$"], true);
    check_admin(&["alice"], &["alice:phone"], true);
    check_admin(&["alice:$"], &["alice:phone"], true);
    check_admin(&["alice:phone"], &["alice:$"], true);
    check_admin(&["alice", "bob"], &["alice"], true);
    let mut no_admin = Permissions::all_tags_to("alice");
    no_admin.0.remove(&Tag::Admin);
    let error = no_admin.validate().unwrap_err();
    assert_eq!(error.code, codes::INVALID_PERMISSIONS);
    assert!(error.message.contains("no one could manage"), "{error}");
}

#[test]
fn names_keys_and_values_follow_the_limits() {
    validate_name("notes").unwrap();
    validate_row_key("a/b/c").unwrap();
    for bad in ["", "a/b", "tab\there", "nul\0", "\u{fffd}"] {
        assert_eq!(
            validate_name(bad).unwrap_err().code,
            codes::INVALID_NAME,
            "{bad:?}"
        );
    }
    assert_eq!(validate_row_key("").unwrap_err().code, codes::INVALID_NAME);
    let longest = "x".repeat(limits::NAME_BYTES_MAX);
    validate_name(&longest).unwrap();
    assert!(validate_name(&format!("{longest}x")).is_err());
    validate_value(&vec![0; limits::VALUE_BYTES_MAX]).unwrap();
    let error = validate_value(&vec![0; limits::VALUE_BYTES_MAX + 1]).unwrap_err();
    assert_eq!(error.code, codes::VALUE_TOO_LARGE);
}

fn check_new_name_refused(name: &str, message_part: &str) {
    let error = validate_name(name).unwrap_err();
    assert_eq!(error.code, codes::INVALID_NAME, "{name:?}");
    assert!(
        error.message.contains(message_part),
        "{name:?}: {}",
        error.message
    );
    // An object named so before the rule stays reachable, and row keys are unchanged.
    validate_existing_name(name).unwrap();
    validate_row_key(name).unwrap();
}

#[test]
fn new_names_refuse_dollar_colon_bidirectional_controls_and_dot_names() {
    check_new_name_refused("a$b", "'$'");
    check_new_name_refused("$", "'$'");
    check_new_name_refused("alice:x", "':'");
    check_new_name_refused(".", "reserved");
    check_new_name_refused("..", "reserved");
    for bidi in [
        '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}',
        '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ] {
        check_new_name_refused(&format!("txt{bidi}exe"), "bidirectional control");
    }
    for fine in [
        "...",
        ".hidden",
        "a.b",
        "caf\u{e9}",
        "\u{05d0}\u{05d1}",
        "a-b_c+d",
    ] {
        validate_name(fine).unwrap();
    }
    // The earlier rules still hold for existing names.
    assert!(validate_existing_name("a/b").is_err());
    assert!(validate_existing_name("").is_err());
}

#[test]
fn messages_round_trip() {
    let request = Request::CreateApp {
        app: "notes".into(),
        permissions: Some(Permissions::all_tags_to("alice")),
    };
    assert_eq!(
        decode::<Request>(&encode(&request).unwrap()).unwrap(),
        request
    );
    let response = Response::Rows(vec![("k".into(), vec![1, 2, 3])]);
    assert_eq!(
        decode::<Response>(&encode(&response).unwrap()).unwrap(),
        response
    );
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(error) = decode::<Request>(&bytes) {
            prop_assert_eq!(error.code, codes::BAD_MESSAGE);
        }
        let _ = decode::<Response>(&bytes);
    }
}

/// `message`'s encoding, after its one-byte variant tag, must be `plain`'s: what the fields were
/// when they were encoded byte by byte, so peers and stores of earlier builds read them alike.
fn assert_encoded_as_plain<T: serde::Serialize>(message: &Response, plain: &T) {
    let encoded = encode(message).unwrap();
    assert_eq!(&encoded[1..], &postcard::to_stdvec(plain).unwrap()[..]);
    assert_eq!(&decode::<Response>(&encoded).unwrap(), message);
}

proptest! {
    #[test]
    fn byte_fields_encode_as_the_plain_byte_vectors_they_were(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        rows in proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..200)),
            0..20,
        ),
    ) {
        assert_encoded_as_plain(&Response::Value(bytes.clone()), &bytes);
        assert_encoded_as_plain(&Response::Bytes(bytes.clone()), &bytes);
        assert_encoded_as_plain(&Response::Rows(rows.clone()), &rows);
    }
}
