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
