//! `syncbase-bench`: the benchmark workloads behind `cargo xtask bench` (see
//! `../shared/design/BENCHMARKS.md` for the rules). Each figure is the median of several runs
//! after a warm-up, printed with min–max, beside the raw engine or the physical limit measured in
//! the same run; the table is also written as JSON under `target/bench/`.
//!
//! Usage: `syncbase-bench store|service|flood|databases|sync [--rows N] [--runs N]
//! [--only s1|s2|s3|s4|w1|w2|w3|core|peers] [--databases N] [--large N]` (`databases`: `--rows` is
//! rows per database, default 100; `sync`: `--rows` is W1's rows, default 100,000, and
//! `--large` W2's large base, default 1,000,000).

// Benchmarks measure wall time by definition.
#![allow(clippy::disallowed_methods)]

mod databases;
mod flood;
mod report;
mod service;
mod store;
mod sync;

use std::process::ExitCode;

/// The allocator `syncbased` uses, so in-process stages cost what they cost in the daemon.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: syncbase-bench store|service|flood|databases|sync [--rows N] \
                     [--runs N] [--only s1|s2|s3|s4|w1|w2|w3|core|peers] [--databases N] [--large N]";

fn main() -> ExitCode {
    syncbase_server::process::disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = store::Options::default();
    let mut rest = args.iter().skip(1);
    while let Some(flag) = rest.next() {
        let raw = rest.next();
        if flag == "--only" {
            options.only = raw.cloned();
        }
        let value = raw.and_then(|value| value.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--rows", Some(value)) => {
                options.rows = value;
                options.rows_set = true;
            }
            ("--runs", Some(value)) => options.runs = value.max(1),
            ("--databases", Some(value)) => options.databases = Some(value),
            ("--large", Some(value)) => options.large = Some(value),
            ("--only", _) => {}
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match args.first().map(String::as_str) {
        Some("service") => match service::run(options.runs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench service: {error}");
                ExitCode::FAILURE
            }
        },
        Some("flood") => match flood::run(options.runs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench flood: {error}");
                ExitCode::FAILURE
            }
        },
        Some("databases") => {
            let databases = options.databases.unwrap_or(10_000);
            let rows = if options.rows_set { options.rows } else { 100 };
            match databases::run(databases, rows) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("bench databases: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("sync") => {
            let options = sync::Options {
                rows: if options.rows_set {
                    options.rows
                } else {
                    100_000
                },
                runs: options.runs,
                large: options.large.unwrap_or(1_000_000),
                only: options.only.clone(),
            };
            match sync::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("bench sync: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("store") => match store::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench store: {error}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
