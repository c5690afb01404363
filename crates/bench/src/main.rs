//! `syncbase-bench`: the benchmark workloads behind `cargo xtask bench` (see
//! `../shared/design/BENCHMARKS.md` for the rules). Each figure is the median of several runs
//! after a warm-up, printed with min–max, beside the raw engine or the physical limit measured in
//! the same run; the table is also written as JSON under `target/bench/`.
//!
//! Usage: `syncbase-bench store|service|flood [--rows N] [--runs N] [--only s1|s2|s3]`.

// Benchmarks measure wall time by definition.
#![allow(clippy::disallowed_methods)]

mod flood;
mod report;
mod service;
mod store;

use std::process::ExitCode;

fn main() -> ExitCode {
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
            ("--rows", Some(value)) => options.rows = value,
            ("--runs", Some(value)) => options.runs = value.max(1),
            ("--only", _) => {}
            _ => {
                eprintln!(
                    "usage: syncbase-bench store|service|flood [--rows N] [--runs N] [--only s1|s2|s3]"
                );
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
        Some("store") => match store::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench store: {error}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: syncbase-bench store|service|flood [--rows N] [--runs N] [--only s1|s2|s3]"
            );
            ExitCode::from(2)
        }
    }
}
