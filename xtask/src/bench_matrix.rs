//! `cargo xtask bench-matrix`: the performance issue's table, end to end. Starts a release
//! broker in a temporary directory (ports picked by the OS), runs `strom-bench` through every
//! scenario with `--output json`, and prints a Markdown table in BENCHMARKS.md's format. Never
//! part of `cargo xtask test`: it takes minutes and measures, it does not check.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One strom-bench invocation of the matrix.
struct Scenario {
    name: &'static str,
    /// strom-bench arguments after the subcommand's `--topic`/`--num-records`.
    args: Vec<String>,
    sub: &'static str,
    topic: &'static str,
    /// Records of the run (paced runs are kept short: their speed is fixed).
    records: u64,
}

struct Options {
    records: u64,
    runs: usize,
    record_size: usize,
    broker: Option<PathBuf>,
    bench: Option<PathBuf>,
}

fn parse(extra: &[String]) -> Result<Options> {
    let mut o =
        Options { records: 1_000_000, runs: 1, record_size: 1024, broker: None, bench: None };
    let mut args = extra.iter();
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--records" => o.records = value.parse().context("--records takes a number")?,
            "--runs" => o.runs = value.parse().context("--runs takes a number")?,
            "--record-size" => o.record_size = value.parse().context("--record-size: bytes")?,
            "--broker-bin" => o.broker = Some(PathBuf::from(value)),
            "--bench-bin" => o.bench = Some(PathBuf::from(value)),
            other => bail!(
                "unknown option {other} (use --records N, --runs N, --record-size B, \
                 --broker-bin PATH, --bench-bin PATH)"
            ),
        }
    }
    if o.runs == 0 || o.records == 0 {
        bail!("--runs and --records must be at least 1");
    }
    Ok(o)
}

/// The broker under test, killed (and its directory removed) on drop.
struct Broker {
    child: Child,
    dir: PathBuf,
    grpc: String,
    http: String,
}

impl Broker {
    fn start(bin: &Path, run: usize) -> Result<Broker> {
        let dir =
            std::env::temp_dir().join(format!("strom-bench-matrix-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).context("creating the broker's data directory")?;
        let log = std::fs::File::create(dir.with_extension("log")).context("broker log file")?;
        let mut child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "none"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("broker stdout")?;
        let (mut grpc, mut http) = (None, None);
        // The broker prints its bound addresses once it serves; it blocks nothing after that
        // line, so the pipe can be dropped.
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the broker's stdout")?;
            if let Some(a) = line.strip_prefix("strom-broker http on ") {
                http = Some(a.trim().to_owned());
            } else if let Some(a) = line.strip_prefix("strom-broker listening on ") {
                grpc = Some(a.trim().to_owned());
                break;
            }
        }
        let (Some(grpc), Some(http)) = (grpc, http) else {
            let _ = child.kill();
            bail!(
                "the broker exited before listening (log: {})",
                dir.with_extension("log").display()
            );
        };
        Ok(Broker { child, dir, grpc, http })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

fn scenarios(o: &Options) -> Vec<Scenario> {
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    // Paced runs: 4 s at 50 MB/s.
    let paced = ((50u64 << 20) * 4 / o.record_size.max(1) as u64).max(1);
    vec![
        Scenario {
            name: "produce, 1 partition, defaults (acks=all, 16 KiB, linger 5 ms)",
            sub: "produce",
            topic: "m1",
            records: o.records,
            args: s(&["--create-topic", "--partitions", "1"]),
        },
        Scenario {
            name: "produce, 1 partition, 1 MiB batches, acks=1",
            sub: "produce",
            topic: "m1b",
            records: o.records,
            args: s(&[
                "--create-topic",
                "--partitions",
                "1",
                "--batch-size",
                "1048576",
                "--acks",
                "1",
                "--enable-idempotence",
                "false",
            ]),
        },
        Scenario {
            name: "consume, 1 partition",
            sub: "consume",
            topic: "m1",
            records: o.records,
            args: vec![],
        },
        Scenario {
            name: "produce, 6 partitions, defaults",
            sub: "produce",
            topic: "m6",
            records: o.records,
            args: s(&["--create-topic", "--partitions", "6"]),
        },
        Scenario {
            name: "consume, 6 partitions",
            sub: "consume",
            topic: "m6",
            records: o.records,
            args: vec![],
        },
        Scenario {
            name: "produce paced 50 MB/s, 1 partition, acks=all, linger 0",
            sub: "produce",
            topic: "mp",
            records: paced,
            args: s(&[
                "--create-topic",
                "--partitions",
                "1",
                "--rate",
                "50MB/s",
                "--linger-ms",
                "0",
            ]),
        },
        Scenario {
            name: "e2e paced 50 MB/s, 1 partition, acks=all, linger 0",
            sub: "e2e",
            topic: "me",
            records: paced,
            args: s(&[
                "--create-topic",
                "--partitions",
                "1",
                "--rate",
                "50MB/s",
                "--linger-ms",
                "0",
            ]),
        },
    ]
}

/// Runs the matrix and prints the table.
pub(crate) fn run(extra: &[String], cargo: impl Fn(&[&str]) -> Result<()>) -> Result<()> {
    let o = parse(extra)?;
    if o.broker.is_none() || o.bench.is_none() {
        cargo(&["build", "--release", "--bin", "strom-broker", "--bin", "strom-bench"])?;
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let broker_bin = o.broker.clone().unwrap_or_else(|| target.join("release/strom-broker"));
    let bench_bin = o.bench.clone().unwrap_or_else(|| target.join("release/strom-bench"));
    let list = scenarios(&o);
    // results[scenario][run]
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); list.len()];
    for run in 0..o.runs {
        // A fresh broker per round, so every round starts from empty logs.
        let broker = Broker::start(&broker_bin, run)?;
        for (i, sc) in list.iter().enumerate() {
            let size = o.record_size.to_string();
            let records = sc.records.to_string();
            let mut cmd = Command::new(&bench_bin);
            cmd.arg(sc.sub)
                .args(["--bootstrap", &broker.grpc, "--topic", sc.topic, "--num-records", &records])
                .args([
                    "--output",
                    "json",
                    "--broker-metrics",
                    &format!("http://{}/metrics", broker.http),
                ])
                .args(&sc.args);
            if sc.sub != "consume" {
                cmd.args(["--record-size", &size]);
            }
            eprintln!("round {}/{}: {}", run + 1, o.runs, sc.name);
            let out = cmd.stderr(Stdio::inherit()).output().context("running strom-bench")?;
            if !out.status.success() {
                bail!("strom-bench failed on {:?}: {}", sc.name, out.status);
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().rev().find(|l| l.starts_with('{')).context("no JSON line")?;
            let v: Value = serde_json::from_str(line).context("strom-bench's JSON")?;
            results.get_mut(i).context("scenario index")?.push(v);
        }
    }
    println!(
        "| scenario ({} B records, median of {} run(s)) | MB/s | latency p50 / p99 / max (ms) | client CPU s/GB | broker CPU s/GB |",
        o.record_size, o.runs
    );
    println!("|---|---|---|---|---|");
    for (sc, runs) in list.iter().zip(&results) {
        let median_run = median_by(runs, |v| num(v, &["mb_per_sec"]));
        let Some(v) = median_run else { continue };
        let lat_key = if sc.sub == "e2e" { "e2e_latency_ms" } else { "latency_ms" };
        let lat = |q: &str| num(v, &[lat_key, q]).map_or("-".to_owned(), |x| format!("{x:.2}"));
        let cell = |path: &[&str]| num(v, path).map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "| {} | {} | {}{} / {} / {} | {} | {} |",
            sc.name,
            cell(&["mb_per_sec"]),
            if sc.sub == "e2e" {
                "e2e "
            } else if sc.sub == "consume" {
                "poll "
            } else {
                ""
            },
            lat("p50"),
            lat("p99"),
            lat("max"),
            cell(&["client_cpu_seconds_per_gb"]),
            cell(&["broker_cpu_seconds_per_gb"]),
        );
    }
    Ok(())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// The run whose `key` is the median (the lower one of an even count).
fn median_by(runs: &[Value], key: impl Fn(&Value) -> Option<f64>) -> Option<&Value> {
    let mut sorted: Vec<(&Value, f64)> = runs.iter().filter_map(|v| Some((v, key(v)?))).collect();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mid = sorted.len().checked_sub(1)? / 2;
    sorted.get(mid).map(|(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_picks_the_middle_run() {
        let runs: Vec<Value> =
            [3.0, 1.0, 2.0].iter().map(|x| serde_json::json!({ "mb_per_sec": x })).collect();
        let m = median_by(&runs, |v| num(v, &["mb_per_sec"])).and_then(|v| num(v, &["mb_per_sec"]));
        assert_eq!(m, Some(2.0));
        assert!(median_by(&[], |v| num(v, &["x"])).is_none());
    }

    #[test]
    fn options_parse() {
        let o = parse(&["--records".into(), "10".into(), "--runs".into(), "3".into()]).unwrap();
        assert_eq!((o.records, o.runs), (10, 3));
        assert!(parse(&["--bogus".into(), "1".into()]).is_err());
        assert!(parse(&["--runs".into(), "0".into()]).is_err());
        assert_eq!(scenarios(&o).len(), 7);
    }
}
