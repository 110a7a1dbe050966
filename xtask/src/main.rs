//! Developer tasks: `cargo xtask test` (what CI and the README run), `cargo xtask ci`
//! (fmt + clippy + test, as .ci/run), `cargo xtask bench` (criterion benches and the
//! strom-bench end-to-end runs recorded in BENCHMARKS.md), `cargo xtask sim` (the quorum
//! simulation over many seeds, or one replayed: `SEED=n cargo xtask sim --replay`; with
//! `--replication`, the partition replication simulation; with `--log`, strom-log's power-cut
//! and fault test on the simulated file system), `cargo xtask bench-matrix` (the
//! performance table: a release broker and strom-bench through every scenario).

mod bench_matrix;

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
        "bench-matrix" => bench_matrix::run(rest, cargo),
        "cluster" => cluster(rest),
        "sim" if rest.iter().any(|a| a == "--log") => log_sim(rest),
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
                 bench-matrix  a release broker in a temp dir, strom-bench through the\n         \
                 performance table (BENCHMARKS.md format): [--records N] [--runs N]\n         \
                 [--record-size B] [--broker-bin PATH --bench-bin PATH]\n  \
                 cluster  a local cluster: --nodes N (default 3) [--base-port P (default 9101)];\n         \
                 data and logs under ./strom-cluster/, Ctrl-C stops every node\n  \
                 sim    quorum simulation: --seeds N [--base B] [--voters 3|5] [--steps S];\n         \
                 SEED=n cargo xtask sim --replay [--voters V] replays one seed verbosely;\n         \
                 --replication: the partition replication simulation (same options but --voters);\n         \
                 --log [--seeds N] [--base B]: strom-log's power-cut and fault test on the\n         \
                 simulated file system (SEED=n replays one seed)"
            );
            if task == "help" { Ok(()) } else { bail!("unknown task {task}") }
        }
    }
}

/// `cargo xtask sim --log [--seeds N] [--base B]`: strom-log's seeded crash and fault test
/// (`crates/strom-log/tests/sim_crash.rs`) over N seeds from B, instead of the fixed CI set.
/// `SEED=n` (one seed) passes through the environment.
fn log_sim(extra: &[String]) -> Result<()> {
    let mut seeds = None;
    let mut base = None;
    let mut args = extra.iter().filter(|a| *a != "--log");
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        let number: u64 = value.parse().with_context(|| format!("{arg} takes a number"))?;
        match arg.as_str() {
            "--seeds" => seeds = Some(number),
            "--base" => base = Some(number),
            other => bail!("unknown option {other} for sim --log (use --seeds N, --base B)"),
        }
    }
    // Read by the test; set for the cargo child only.
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(["test", "-p", "strom-log", "--test", "sim_crash", "--", "--nocapture"]);
    if let Some(n) = seeds {
        command.env("STROM_LOG_SIM_SEEDS", n.to_string());
    }
    if let Some(b) = base {
        command.env("STROM_LOG_SIM_SEED_BASE", b.to_string());
    }
    eprintln!(
        "$ STROM_LOG_SIM_SEEDS={} STROM_LOG_SIM_SEED_BASE={} cargo test -p strom-log --test sim_crash",
        seeds.map_or("default".into(), |n| n.to_string()),
        base.unwrap_or(0)
    );
    let status = command.status().context("running cargo test")?;
    if !status.success() {
        bail!("the strom-log simulation failed: {status} (the output names the seed to replay)");
    }
    Ok(())
}

/// The whole test suite. Binaries are built first so multi-process tests find them.
fn test(extra: &[String]) -> Result<()> {
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)?;
    // The codecs are cargo features of strom-format (all on above): the crate must also build,
    // and refuse every codec by name, with all of them off.
    cargo(&["test", "-q", "-p", "strom-format", "--no-default-features", "--lib"])
}

/// Builds the broker (release) and runs `--nodes N` of them as one cluster on 127.0.0.1, each
/// a voter, data in `./strom-cluster/node-N/`, logs in `./strom-cluster/node-N.log`. Ctrl-C
/// (or any node exiting) stops them all.
fn cluster(extra: &[String]) -> Result<()> {
    let mut nodes = 3u16;
    let mut base_port = 9101u16;
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--nodes" => nodes = value.parse().context("--nodes takes a number")?,
            "--base-port" => base_port = value.parse().context("--base-port takes a port")?,
            other => bail!("unknown option {other} (use --nodes N, --base-port P)"),
        }
    }
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be 1 to 9");
    }
    cargo(&["build", "--release", "--bin", "strom-broker"])?;
    let root = std::path::Path::new("strom-cluster");
    std::fs::create_dir_all(root).context("creating ./strom-cluster")?;
    let voters: Vec<String> =
        (1..=nodes).map(|n| format!("{n}@127.0.0.1:{}", base_port + n - 1)).collect();
    let voters = voters.join(",");
    let mut children = Vec::new();
    for n in 1..=nodes {
        let log = std::fs::File::create(root.join(format!("node-{n}.log")))
            .with_context(|| format!("creating the log of node {n}"))?;
        let child = Command::new("target/release/strom-broker")
            .args(["--node-id", &n.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", base_port + n - 1)])
            .args(["--kafka-listen", &format!("127.0.0.1:{}", base_port + 100 + n - 1)])
            .args(["--http-listen", &format!("127.0.0.1:{}", base_port + 200 + n - 1)])
            .arg("--data-dir")
            .arg(root.join(format!("node-{n}")))
            .args(["--voters", &voters])
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {n}"))?;
        eprintln!(
            "node {n}: gRPC 127.0.0.1:{}, Kafka 127.0.0.1:{}, HTTP http://127.0.0.1:{}/, \
             log strom-cluster/node-{n}.log",
            base_port + n - 1,
            base_port + 100 + n - 1,
            base_port + 200 + n - 1
        );
        children.push(child);
    }
    eprintln!(
        "cluster of {nodes} running; try: strom-admin --bootstrap 127.0.0.1:{base_port} cluster describe"
    );
    eprintln!("Ctrl-C stops every node");
    // Ctrl-C reaches the whole foreground process group, nodes included; they shut down
    // gracefully and this loop sees them exit.
    loop {
        for (i, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().context("waiting for a node")? {
                eprintln!("node {} exited ({status}); stopping the others", i + 1);
                for other in children.iter_mut() {
                    let _ = other.kill();
                    let _ = other.wait();
                }
                return Ok(());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
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
