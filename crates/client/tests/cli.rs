//! `sb` parses its contract: help works, misuse exits 2, an unreachable daemon exits 3.

use std::process::Command;

fn sb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sb"))
}

#[test]
fn help_usage_and_connection_failures_have_their_exit_codes() {
    let help = sb().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("watch"));
    assert_eq!(
        sb().arg("no-such-command").status().unwrap().code(),
        Some(2)
    );
    assert_eq!(
        sb().args(["put", "a/b", "k", "v"])
            .env(
                "SYNCBASE_IDENTITY",
                std::env::temp_dir().join("sb-cli-test-identity")
            )
            .status()
            .unwrap()
            .code(),
        Some(2)
    );
    let dir = tempfile::tempdir().unwrap();
    let unreachable = sb()
        .args(["-s", "127.0.0.1:1", "--identity"])
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot connect"));
}

/// The code of an `error[CODE]: message` line on stderr, after checking the exit code is 1.
fn local_failure_code(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
        .trim()
        .strip_prefix("error[")
        .and_then(|rest| rest.split_once("]: "))
        .map(|(code, _)| code.to_string())
        .unwrap_or_else(|| panic!("no error[CODE]: line in {stderr:?}"))
}

/// `sb` with its identity in `dir` and nothing taken from the environment.
fn sb_in(dir: &std::path::Path) -> Command {
    let mut command = sb();
    command
        .env_remove("SYNCBASE_SERVICE")
        .env("SYNCBASE_IDENTITY", dir.join("identity"))
        .env("USER", "alice");
    command
}

fn help(args: &[&str]) -> String {
    let output = sb().args(args).arg("--help").output().unwrap();
    assert!(output.status.success(), "{args:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn global_options_are_listed_once_at_the_top_and_accepted_before_the_command() {
    let top = help(&[]);
    for option in ["--service", "--identity <DIR>", "--format <FORMAT>"] {
        assert_eq!(top.matches(option).count(), 1, "{option} in\n{top}");
    }
    for command in [
        &["status"][..],
        &["scan"],
        &["get"],
        &["watch"],
        &["identity"],
        &["identity", "new"],
        &["identity", "show"],
        &["identity", "untrust"],
    ] {
        let text = help(command);
        for option in ["--service", "--identity <DIR>", "--format <FORMAT>"] {
            assert!(
                !text.contains(option),
                "{command:?} offers {option}:\n{text}"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let before = sb_in(dir.path())
        .args(["--format", "json", "-s", "127.0.0.1:1", "status"])
        .output()
        .unwrap();
    assert_eq!(before.status.code(), Some(3));
    let after = sb_in(dir.path())
        .args(["status", "-s", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(after.status.code(), Some(2));
}

#[test]
fn scan_and_watch_help_describe_the_escaping_of_plain_output() {
    for command in ["scan", "watch"] {
        let text = help(&[command]);
        for escape in [
            "`\\\\`",
            "`\\t`",
            "`\\n`",
            "`\\r`",
            "`\\xHH`",
            "not valid UTF-8",
        ] {
            assert!(
                text.contains(escape),
                "{command} --help lacks {escape}:\n{text}"
            );
        }
    }
    let scan = help(&["scan"]);
    assert!(
        scan.contains("--end <KEY>") && scan.contains("--max <N>"),
        "{scan}"
    );
    assert!(
        !scan.contains("--limit"),
        "--limit is a hidden alias:\n{scan}"
    );
}

#[test]
fn watch_count_zero_and_a_malformed_service_address_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let zero = sb_in(dir.path())
        .args(["-s", "127.0.0.1:1", "watch", "a/b", "--count", "0"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--count"));
    for address in [
        "nonsense",
        "host:",
        ":7433",
        "host:port",
        "host:99999",
        "::1:7433",
        "a b:1",
    ] {
        let output = sb_in(dir.path())
            .args(["-s", address, "status"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{address:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("HOST:PORT"),
            "{address:?}"
        );
    }
    let from_environment = sb_in(dir.path())
        .env("SYNCBASE_SERVICE", "no-port")
        .args(["app", "list"])
        .output()
        .unwrap();
    assert_eq!(from_environment.status.code(), Some(2));
    for address in ["[::1]:1", "localhost:1", "127.0.0.1:1"] {
        let output = sb_in(dir.path())
            .args(["-s", address, "status"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{address:?}");
    }
}

#[test]
fn local_failures_exit_1_with_an_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let run = |args: &[&str]| sb_in(dir.path()).args(args).output().unwrap();
    assert_eq!(
        local_failure_code(&run(&["put", "a/b/c", "k", "--file", missing])),
        "sb.local_file"
    );
    for bad_name in ["a$b", "a:b", ".", "..", "rtl\u{202e}", "tab\tname"] {
        assert_eq!(
            local_failure_code(&run(&["identity", "new", bad_name])),
            "net.identity",
            "{bad_name:?}"
        );
    }
    assert_eq!(run(&["identity", "new", "alice"]).status.code(), Some(0));
    assert_eq!(
        local_failure_code(&run(&["identity", "new", "alice"])),
        "sb.identity_exists"
    );
    assert_eq!(
        local_failure_code(&run(&["identity", "bless", "..", "--out", missing])),
        "net.identity"
    );
    let existing = dir.path().join("identity");
    assert_eq!(
        local_failure_code(&run(&[
            "identity",
            "bless",
            "x",
            "--out",
            existing.to_str().unwrap()
        ])),
        "sb.identity_exists"
    );
    assert_eq!(
        local_failure_code(&run(&["identity", "trust", missing])),
        "sb.local_file"
    );
    let garbage = dir.path().join("garbage.root");
    std::fs::write(&garbage, "not a root\n").unwrap();
    assert_eq!(
        local_failure_code(&run(&["identity", "trust", garbage.to_str().unwrap()])),
        "net.identity"
    );
    let unwritable = dir.path().join("no-such-dir").join("alice.root");
    assert_eq!(
        local_failure_code(&run(&[
            "identity",
            "export-root",
            "--out",
            unwritable.to_str().unwrap()
        ])),
        "sb.local_file"
    );
    std::fs::write(dir.path().join("identity").join("identity"), b"garbage").unwrap();
    assert_eq!(
        local_failure_code(&run(&["identity", "show"])),
        "net.identity"
    );
}

#[test]
fn identity_untrust_removes_every_root_of_a_name_but_not_the_own_root() {
    let alice = tempfile::tempdir().unwrap();
    let bob = tempfile::tempdir().unwrap();
    let run =
        |dir: &tempfile::TempDir, args: &[&str]| sb_in(dir.path()).args(args).output().unwrap();
    let bob_root = bob.path().join("bob.root");
    let bob_root = bob_root.to_str().unwrap();
    assert!(run(&bob, &["identity", "new", "bob"]).status.success());
    assert!(
        run(&bob, &["identity", "export-root", "--out", bob_root])
            .status
            .success()
    );
    assert!(
        run(&alice, &["identity", "trust", bob_root])
            .status
            .success()
    );
    let shown = |dir| String::from_utf8(run(dir, &["identity", "show"]).stdout).unwrap();
    assert!(shown(&alice).contains("trusts\tbob\t"), "{}", shown(&alice));
    let untrusted = run(&alice, &["identity", "untrust", "bob"]);
    assert!(
        untrusted.status.success(),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    assert!(!shown(&alice).contains("bob"), "{}", shown(&alice));
    assert!(shown(&alice).contains("trusts\talice\t"));
    assert_eq!(
        local_failure_code(&run(&alice, &["identity", "untrust", "bob"])),
        "net.identity"
    );
    let own = run(&alice, &["identity", "untrust", "alice"]);
    assert_eq!(local_failure_code(&own), "net.identity");
    assert!(String::from_utf8_lossy(&own.stderr).contains("own root"));
    assert!(shown(&alice).contains("trusts\talice\t"));
}

/// Answers every call with the responses it was given, in order.
struct Scripted(Vec<Result<syncbase_wire::Response, syncbase_wire::WireError>>);

#[async_trait::async_trait]
impl syncbase_wire::Handler for Scripted {
    async fn call(
        &self,
        _request: syncbase_wire::Request,
    ) -> Result<syncbase_wire::Responses, syncbase_wire::WireError> {
        let (sender, responses) = syncbase_wire::Responses::channel();
        let script = self.0.clone();
        tokio::spawn(async move {
            for response in script {
                sender.send(response).await;
            }
        });
        Ok(responses)
    }
}

/// A join that waits hears its progress reports before the answer; an answer of another kind
/// is an error, as is a refusal.
#[test]
fn a_waiting_join_reports_progress_then_answers() {
    use syncbase_wire::{DatabasePath, JoinProgress, Response, WireError};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let database = DatabasePath {
        app: "notes".into(),
        database: "main".into(),
    };
    let received = JoinProgress {
        bytes: 4096,
        records: 0,
        applying: false,
    };
    let applying = JoinProgress {
        bytes: 8192,
        records: 70,
        applying: true,
    };
    let join = |script: Vec<Result<Response, WireError>>| {
        let client = syncbase_client::Client::new(std::sync::Arc::new(Scripted(script)));
        let mut heard = Vec::new();
        let outcome = runtime.block_on(client.join_syncgroup_reporting(
            &database,
            "sg",
            "127.0.0.1:1",
            true,
            &mut |progress| heard.push(progress),
        ));
        (outcome, heard)
    };
    let (outcome, heard) = join(vec![
        Ok(Response::JoinProgress(received)),
        Ok(Response::JoinProgress(applying)),
        Ok(Response::Done),
    ]);
    assert_eq!(outcome, Ok(()));
    assert_eq!(heard, vec![received, applying]);
    let (outcome, _) = join(vec![Ok(Response::Bool(true))]);
    assert_eq!(outcome.unwrap_err().code, syncbase_wire::codes::INTERNAL);
    let refused = WireError::new("sync.peer_unreachable", "nobody there");
    let (outcome, heard) = join(vec![
        Ok(Response::JoinProgress(received)),
        Err(refused.clone()),
    ]);
    assert_eq!((outcome, heard), (Err(refused), vec![received]));
}
