//! Project automation: `cargo xtask ci` (read-only, equals CI), `cargo xtask fix` (its mutating
//! twin) and `cargo xtask bench [store|service|flood|databases|all]`. Depends on std only.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Allowed dependency edges between our crates: a crate may depend only on those listed. A new
/// edge is a design change: update `docs/ARCHITECTURE.md` with it and say why.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("syncbase-store", &[]),
    ("syncbase-wire", &[]),
    ("syncbase-net", &["syncbase-wire"]),
    ("syncbase-store-fjall", &["syncbase-store"]),
    ("syncbase-util", &["syncbase-store"]),
    (
        "syncbase-vsync",
        &["syncbase-store", "syncbase-util", "syncbase-wire"],
    ),
    (
        "syncbase-nosql",
        &[
            "syncbase-store",
            "syncbase-util",
            "syncbase-vsync",
            "syncbase-wire",
        ],
    ),
    (
        "syncbase-server",
        &[
            "syncbase-store",
            "syncbase-store-fjall",
            "syncbase-util",
            "syncbase-vsync",
            "syncbase-nosql",
            "syncbase-wire",
            "syncbase-net",
        ],
    ),
    ("syncbase-client", &["syncbase-wire", "syncbase-net"]),
    (
        "syncbase-e2e",
        &["syncbase-client", "syncbase-net", "syncbase-wire"],
    ),
    (
        "syncbase-bench",
        &[
            "syncbase-store",
            "syncbase-store-fjall",
            "syncbase-nosql",
            "syncbase-server",
            "syncbase-client",
            "syncbase-net",
            "syncbase-wire",
        ],
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("fix") => fix(),
        Some("bench") => bench(
            args.get(1).map(String::as_str).unwrap_or("all"),
            &args[args.len().min(2)..],
        ),
        Some("layering") => check_layering(&root()),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 ci                 fmt check, layering and tidy checks, clippy -D warnings, all tests\n  \
                 fix                cargo fmt and clippy --fix (the mutating twin of ci)\n  \
                 bench [store|service|flood|databases|all]  run the benchmark workloads and print a table\n  \
                 layering           only the dependency-edge check"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

fn run(step: &str, command: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {step}");
    let status = command
        .status()
        .map_err(|error| format!("{step}: cannot start: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    let root = root();
    run("fmt check", cargo().args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("xtask: layering and tidy checks");
    check_layering(&root)?;
    check_tidy(&root)?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    tests()
}

/// Runs every test (unit, integration, doc) and prints the runner's summary lines; on failure,
/// the whole output.
fn tests() -> Result<(), String> {
    eprintln!("xtask: tests");
    let output = cargo()
        .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| format!("cargo test: cannot start: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        println!("{stdout}");
        eprintln!("{stderr}");
        return Err("tests failed".into());
    }
    let mut passed = 0u64;
    // Print each binary's summary next to its name, in the order cargo ran them.
    let mut names = Vec::new();
    for line in stderr.lines() {
        let trimmed = line.trim_start();
        if let Some(binary) = trimmed.strip_prefix("Running ") {
            names.push(binary.to_string());
        } else if trimmed.starts_with("Doc-tests ") {
            names.push(trimmed.to_string());
        }
    }
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("test result:"))
        .collect();
    for (index, summary) in summaries.iter().enumerate() {
        let name = names.get(index).map(String::as_str).unwrap_or("?");
        println!("{name}: {summary}");
        passed += summary
            .split(';')
            .next()
            .and_then(|part| part.split_whitespace().nth(3))
            .and_then(|count| count.parse::<u64>().ok())
            .unwrap_or(0);
    }
    println!(
        "xtask: all tests passed ({passed} tests in {} binaries)",
        summaries.len()
    );
    Ok(())
}

fn fix() -> Result<(), String> {
    run("fmt", cargo().args(["fmt", "--all"]))?;
    run(
        "clippy --fix",
        cargo().args([
            "clippy",
            "--fix",
            "--allow-dirty",
            "--allow-staged",
            "--workspace",
            "--all-targets",
            "--all-features",
        ]),
    )
}

fn bench(which: &str, rest: &[String]) -> Result<(), String> {
    let workloads: &[&str] = match which {
        "store" => &["store"],
        "service" => &["service"],
        "flood" => &["flood"],
        "databases" => &["databases"],
        "all" => &["store", "service", "flood", "databases"],
        other => {
            return Err(format!(
                "unknown benchmark group `{other}`; available: store, service, flood, databases, all (sync \
                 arrives with the sync issues)"
            ));
        }
    };
    if workloads != ["store"] {
        // Every workload but store runs the real daemon, next to the benchmark binary.
        run(
            "build syncbased",
            cargo().args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "syncbase-server",
                "--bin",
                "syncbased",
            ]),
        )?;
    }
    for workload in workloads {
        run(
            &format!("bench {workload}"),
            cargo()
                .args(["run", "--release", "--quiet", "-p", "syncbase-bench", "--"])
                .arg(workload)
                .args(rest),
        )?;
    }
    Ok(())
}

struct Manifest {
    path: PathBuf,
    name: String,
    dependencies: Vec<String>,
    lints_from_workspace: bool,
}

fn manifests(root: &Path) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .map_err(|error| format!("cannot list crates/: {error}"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let mut section = String::new();
        let mut name = None;
        let mut dependencies = Vec::new();
        let mut lints_from_workspace = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_string();
                continue;
            }
            let key = line
                .split(['=', '.', ' '])
                .next()
                .unwrap_or("")
                .trim_matches('"');
            if section == "package" && line.starts_with("name") {
                name = line.split('"').nth(1).map(str::to_string);
            } else if section.ends_with("dependencies") && key.starts_with("syncbase-") {
                dependencies.push(key.to_string());
            } else if section == "lints" && line.replace(' ', "") == "workspace=true" {
                lints_from_workspace = true;
            }
        }
        let name = name.ok_or_else(|| format!("{} has no package name", path.display()))?;
        out.push(Manifest {
            path,
            name,
            dependencies,
            lints_from_workspace,
        });
    }
    Ok(out)
}

fn check_layering(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    for manifest in manifests(root)? {
        let Some((_, allowed)) = ALLOWED_EDGES
            .iter()
            .find(|(name, _)| *name == manifest.name)
        else {
            problems.push(format!(
                "{} is not in xtask's ALLOWED_EDGES table: add it (and to docs/ARCHITECTURE.md)",
                manifest.name
            ));
            continue;
        };
        for dependency in &manifest.dependencies {
            if dependency != &manifest.name && !allowed.contains(&dependency.as_str()) {
                problems.push(format!(
                    "{} depends on {dependency}, which the layering does not allow",
                    manifest.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn check_tidy(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    for manifest in manifests(root)? {
        if !manifest.name.starts_with("syncbase-") {
            problems.push(format!(
                "{}: package names carry the syncbase- prefix",
                manifest.name
            ));
        }
        if !manifest.lints_from_workspace {
            problems.push(format!(
                "{}: add `[lints] workspace = true`",
                manifest.path.display()
            ));
        }
        let dir = manifest.path.parent().unwrap_or(root);
        for entry in ["src/lib.rs", "src/main.rs"] {
            let path = dir.join(entry);
            if let Ok(text) = std::fs::read_to_string(&path)
                && !text.starts_with("//!")
            {
                problems.push(format!("{}: open with a `//!` crate doc", path.display()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
