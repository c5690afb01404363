//! Project automation: `cargo xtask ci` (read-only, equals CI), `cargo xtask fix` (its mutating
//! twin) and `cargo xtask bench [store|service|flood|databases|sync|all]`. Depends on std only.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Allowed dependency edges between our crates: a crate may depend only on those listed. A new
/// edge is a design change: update `docs/ARCHITECTURE.md` with it and say why.
/// The crate every crate may depend on: the registry of error codes.
const EVERYONE_MAY_USE: &str = "syncbase-error-code";

const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("syncbase-error-code", &[]),
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
        "syncbase-sim",
        &["syncbase-store", "syncbase-util", "syncbase-vsync"],
    ),
    (
        "syncbase-e2e",
        &["syncbase-client", "syncbase-net", "syncbase-wire"],
    ),
    (
        "syncbase-bench",
        &[
            "syncbase-store",
            "syncbase-store-fjall",
            "syncbase-vsync",
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
        Some("sim") => return sim(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 ci                 fmt check, layering and tidy checks, clippy -D warnings, all tests\n  \
                 fix                cargo fmt and clippy --fix (the mutating twin of ci)\n  \
                 bench [store|service|flood|databases|sync|all]  run the benchmark workloads and print a table\n  \
                 sim [--seeds N | --seed S] [--mutant NAME]  the sync simulator (last line: sim: N seeds, F failed)\n  \
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

/// The mutants `syncbase-vsync` plants with its `mutants` feature (see `crates/vsync/src/mutant.rs`).
const MUTANTS: [&str; 4] = ["split-batch", "echo", "receiver-tiebreak", "part-anywhere"];

/// Runs the simulator (release build, mutants compiled in but off unless `--mutant` names one);
/// its output, last line included, is the simulator's own, and so is its exit code.
fn sim(args: &[String]) -> ExitCode {
    let mut command = cargo();
    command.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "syncbase-sim",
        "--features",
        "mutants",
        "--",
    ]);
    command.env_remove("SYNCBASE_MUTANT");
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--mutant" {
            let Some(name) = rest.next() else {
                eprintln!("xtask: --mutant needs a name: {}", MUTANTS.join(", "));
                return ExitCode::from(2);
            };
            if !MUTANTS.contains(&name.as_str()) {
                eprintln!(
                    "xtask: unknown mutant `{name}`; known: {}",
                    MUTANTS.join(", ")
                );
                return ExitCode::from(2);
            }
            command.env("SYNCBASE_MUTANT", name);
        } else {
            command.arg(arg);
        }
    }
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(error) => {
            eprintln!("xtask: cargo run syncbase-sim: cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}

fn bench(which: &str, rest: &[String]) -> Result<(), String> {
    let workloads: &[&str] = match which {
        "store" => &["store"],
        "service" => &["service"],
        "flood" => &["flood"],
        "databases" => &["databases"],
        "sync" => &["sync"],
        "all" => &["store", "service", "flood", "databases", "sync"],
        other => {
            return Err(format!(
                "unknown benchmark group `{other}`; available: store, service, flood, databases, sync, \
                 all"
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
            if dependency != &manifest.name
                && dependency != EVERYONE_MAY_USE
                && !allowed.contains(&dependency.as_str())
            {
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
    for path in rust_sources(root)? {
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        problems.extend(tidy_source(root, &path, &text));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The layers whose error codes live in `syncbase-error-code`.
const CODE_LAYERS: &[&str] = &["store", "util", "wire", "nosql", "net", "client", "sb"];

/// What tidy refuses in one source file: no `//!` opening it; a bare `#[ignore]` or
/// `#[should_panic]` (say why: `#[ignore = "..."]`, `#[should_panic(expected = "...")]`); an
/// error-code literal outside the registry crate, in a crate's `src/` before its
/// `#[cfg(test)]` module (tests may spell codes out, to pin the contract).
fn tidy_source(root: &Path, path: &Path, text: &str) -> Vec<String> {
    let shown = path.strip_prefix(root).unwrap_or(path).display();
    let mut problems = Vec::new();
    if !text.starts_with("//!") {
        problems.push(format!(
            "{shown}: open the file with a `//!` saying what it holds"
        ));
    }
    let in_src = path.components().any(|part| part.as_os_str() == "src");
    let registry = path
        .components()
        .any(|part| part.as_os_str() == "error-code");
    let mut in_tests = false;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        in_tests |= trimmed.starts_with("#[cfg(test)]");
        if trimmed.starts_with("#[ignore]") || trimmed.starts_with("#[should_panic]") {
            problems.push(format!(
                "{shown}:{}: say why: `#[ignore = \"...\"]` or `#[should_panic(expected = \"...\")]`",
                number + 1
            ));
        }
        if in_src && !registry && !in_tests && !trimmed.starts_with("//") {
            for code in code_literals(line) {
                problems.push(format!(
                    "{shown}:{}: error code {code:?} spelled out: use its constant in syncbase-error-code",
                    number + 1
                ));
            }
        }
    }
    problems
}

/// The string literals in `line` that look like error codes (`"LAYER.name"`).
fn code_literals(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (index, _) in line.match_indices('"') {
        let rest = &line[index + 1..];
        let Some(end) = rest.find('"') else { break };
        let candidate = &rest[..end];
        if let Some((layer, name)) = candidate.split_once('.')
            && CODE_LAYERS.contains(&layer)
            && !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
        {
            found.push(candidate.to_string());
        }
    }
    found
}

/// Every `.rs` file of the workspace's crates and of xtask.
fn rust_sources(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut pending = vec![root.join("crates"), root.join("xtask")];
    let mut out = Vec::new();
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|error| format!("cannot list {}: {error}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_refuses_code_literals_in_src_bare_ignores_and_files_without_a_doc() {
        let root = Path::new("/repo");
        let source = Path::new("/repo/crates/net/src/rpc.rs");
        let clean = "//! Doc.\nfn f() { let _ = codes::CLOSED; let _ = \"net.\"; }\n";
        assert!(tidy_source(root, source, clean).is_empty());
        let spelled = "//! Doc.\nfn f() { WireError::new(\"net.closed\", \"x\"); }\n";
        let problems = tidy_source(root, source, spelled);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("crates/net/src/rpc.rs:2"),
            "{problems:?}"
        );
        // Tests and the registry may spell codes out; comments are not code.
        let test_file = Path::new("/repo/crates/net/tests/net.rs");
        assert!(tidy_source(root, test_file, spelled).is_empty());
        let registry = Path::new("/repo/crates/error-code/src/lib.rs");
        assert!(tidy_source(root, registry, spelled).is_empty());
        let comment = "//! Doc.\n// fails with \"store.io\"\n";
        let unit_tests = "//! Doc.\n#[cfg(test)]\nmod tests { const C: &str = \"store.io\"; }\n";
        assert!(tidy_source(root, source, unit_tests).is_empty());
        assert!(tidy_source(root, source, comment).is_empty());
        let undocumented = "fn f() {}\n";
        assert_eq!(tidy_source(root, source, undocumented).len(), 1);
        let ignored = "//! Doc.\n#[test]\n#[ignore]\nfn slow() {}\n#[should_panic]\nfn p() {}\n";
        assert_eq!(tidy_source(root, test_file, ignored).len(), 2);
        let explained = "//! Doc.\n#[ignore = \"needs a disk\"]\nfn slow() {}\n";
        assert!(tidy_source(root, test_file, explained).is_empty());
    }
}
