//! Developer tasks: `cargo xtask test` (what CI and the README run), `cargo xtask ci`
//! (fmt + clippy + test, as .ci/run), `cargo xtask bench` (criterion benches and the
//! strom-bench end-to-end runs recorded in BENCHMARKS.md), `cargo xtask sim` (the quorum
//! simulation over many seeds, or one replayed: `SEED=n cargo xtask sim --replay`).

use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, rest)) => (t.as_str(), rest),
        None => ("help", &[][..]),
    };
    match task {
        "test" => test(rest),
        "ci" => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            test(rest)
        }
        "bench" => bench(rest),
        "sim" => {
            // SEED (for --replay) and RUST_LOG pass through the environment.
            let mut args = vec!["run", "-q", "-p", "strom-sim", "--"];
            args.extend(rest.iter().map(String::as_str));
            cargo(&args)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test   run every test of the workspace (unit, doc, property, multi-process)\n  \
                 ci     fmt --check, clippy -D warnings, then test\n  \
                 bench  criterion benches of strom-format and strom-log\n  \
                 sim    quorum simulation: --seeds N [--base B] [--voters 3|5] [--steps S];\n         \
                 SEED=n cargo xtask sim --replay [--voters V] replays one seed verbosely"
            );
            if task == "help" { Ok(()) } else { bail!("unknown task {task}") }
        }
    }
}

/// The whole test suite. Binaries are built first so multi-process tests find them.
fn test(extra: &[String]) -> Result<()> {
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

fn bench(extra: &[String]) -> Result<()> {
    let mut args = vec!["bench", "-p", "strom-format", "-p", "strom-log"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
