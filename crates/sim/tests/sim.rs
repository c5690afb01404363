//! The simulator in CI: a short fixed set of seeds on the real code (plus every regression
//! seed), replay stability, and each planted bug caught (in a build with the `mutants` feature,
//! which `cargo xtask ci` uses).

use std::process::Command;

use syncbase_sim::{Options, run};

/// Seeds that once failed, kept after their bug was fixed.
const REGRESSION_SEEDS: &[u64] = &[
    // Push-only runs (no anti-entropy): a local commit that a round took in before the
    // watcher's own step, and the links recording a round's resolutions, were pushed to nobody
    // but third members, so with two peers they never left the device (knowledge, and in the
    // end-to-end test rows, stayed apart). A round now notifies every member, the sender too.
    935, 1874, 3113,
];

/// Runs the simulator binary with `args`, with `mutant` planted; returns its stdout.
fn simulate(mutant: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncbase-sim"));
    command.args(args).env_remove("SYNCBASE_MUTANT");
    if let Some(mutant) = mutant {
        command.env("SYNCBASE_MUTANT", mutant);
    }
    let output = command.output().expect("the simulator runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_short_fixed_run_of_seeds_finds_nothing_on_the_real_code() {
    let output = simulate(None, &["--seeds", "30"]);
    assert_eq!(
        output.lines().last(),
        Some("sim: 30 seeds, 0 failed"),
        "{output}"
    );
    for &seed in REGRESSION_SEEDS {
        let report = run(seed, Options::default(), false);
        assert_eq!(report.failure, None, "regression seed {seed}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = run(7, Options::default(), true);
    let again = run(7, Options::default(), true);
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.trace, again.trace);
    assert!(first.writes > 0 && first.delivered > 0);
    assert_ne!(
        first.trace_hash,
        run(8, Options::default(), false).trace_hash
    );
}

/// Each planted bug is reported, with the invariant it breaks named.
#[cfg(feature = "mutants")]
#[test]
fn every_mutant_is_caught() {
    for (mutant, seeds, invariants) in [
        ("echo", "10", &["invariant no-echo"][..]),
        ("split-batch", "40", &["invariant whole-batches"]),
        // Ties broken differently on each side: a device keeps the loser, or shows a batch
        // beside the other's winning write.
        (
            "receiver-tiebreak",
            "100",
            &[
                "invariant last-writer-wins",
                "invariant whole-batches",
                "invariant no-lost-write",
            ],
        ),
        ("part-anywhere", "40", &["invariant whole-batches"]),
    ] {
        let output = simulate(Some(mutant), &["--seeds", seeds]);
        let last = output.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("sim: {seeds} seeds, ")) && !last.ends_with(" 0 failed"),
            "{mutant}: {output}"
        );
        assert!(
            invariants
                .iter()
                .any(|invariant| output.contains(invariant)),
            "{mutant}: {output}"
        );
        // A mutant is caught by what it breaks, never by the harness failing.
        for harness in ["invariant setup", "invariant read", "invariant restart"] {
            assert!(!output.contains(harness), "{mutant}: {output}");
        }
    }
}
