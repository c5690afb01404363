//! `syncbase-sim`: runs the sync simulator over a range of seeds or replays one with its trace.
//! Its last line is exactly `sim: N seeds, F failed`; it exits 1 when F > 0. A planted bug is
//! chosen by the environment (`SYNCBASE_MUTANT`, in a build with the `mutants` feature), which
//! `cargo xtask sim --mutant NAME` sets; the simulator itself never reads it.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use syncbase_sim::{Options, Report, run};

/// Seeded simulation of the sync core: peers, a faulty network, crashes, invariants.
#[derive(Parser)]
#[command(name = "syncbase-sim")]
struct Cli {
    /// Runs seeds 0..N-1 (the default when no --seed is given: 100).
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<u64>,
    /// Replays one seed and prints its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Events per run before healing.
    #[arg(long, default_value_t = Options::default().steps)]
    steps: u64,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        steps: cli.steps,
        ..Options::default()
    };
    if let Some(seed) = cli.seed {
        let report = run(seed, options, true);
        for line in &report.trace {
            println!("{line}");
        }
        print_report(&report);
        return finish(1, u64::from(report.failure.is_some()));
    }
    let seeds = cli.seeds.unwrap_or(100);
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let next = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    // The driver times the whole run for people; no simulated peer reads this clock.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds {
                        return;
                    }
                    let report = run(seed, options, false);
                    if report.failure.is_some() {
                        print_report(&report);
                        failed.lock().unwrap_or_else(|e| e.into_inner()).push(seed);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "sim: {seeds} seeds in {:.1} s on {jobs} threads",
        started.elapsed().as_secs_f64()
    );
    finish(seeds, failed.len() as u64)
}

fn print_report(report: &Report) {
    match &report.failure {
        Some(failure) => println!(
            "seed {} failed: invariant {} broken at event {}: {} (trace hash {:016x}; replay: cargo xtask sim --seed {})",
            report.seed,
            failure.invariant,
            failure.step,
            failure.detail,
            report.trace_hash,
            report.seed
        ),
        None => println!(
            "seed {} passed: {} writes, {} messages, {} conflicts (trace hash {:016x})",
            report.seed, report.writes, report.delivered, report.conflicts, report.trace_hash
        ),
    }
}

fn finish(seeds: u64, failed: u64) -> ExitCode {
    println!("sim: {seeds} seeds, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
