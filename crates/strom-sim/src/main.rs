//! `strom-sim`: runs the quorum simulation (or, with `--replication`, the partition
//! replication simulation) over many seeds, or replays one verbosely.
//!
//! ```text
//! strom-sim --seeds N [--base B] [--voters 3|5] [--steps S]   N seeds from B (default: random)
//! SEED=n strom-sim --replay [--voters V] [--steps S]           one seed, trace printed live
//! strom-sim --replication --seeds N [--base B] [--steps S]     replication simulation
//! SEED=n strom-sim --replay --replication [--steps S]
//! ```
//! Without `--voters`, seeds alternate between 3 and 5 voters. `cargo xtask sim ...` runs this.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use strom_sim::replication::{self, ReplConfig};
use strom_sim::{SimConfig, replay_command, run};

fn main() -> Result<()> {
    let mut seeds = 100u64;
    let mut base: Option<u64> = None;
    let mut voters: Option<usize> = None;
    let mut steps: Option<usize> = None;
    let mut replay = false;
    let mut replication = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seeds" => seeds = value("--seeds")?.parse().context("--seeds")?,
            "--base" => base = Some(value("--base")?.parse().context("--base")?),
            "--voters" => voters = Some(value("--voters")?.parse().context("--voters")?),
            "--steps" => steps = Some(value("--steps")?.parse().context("--steps")?),
            "--replay" => replay = true,
            "--replication" => replication = true,
            "-h" | "--help" => {
                println!(
                    "usage: strom-sim [--replication] --seeds N [--base B] [--voters 3|5] [--steps S]\n       SEED=n strom-sim --replay [--replication] [--voters V] [--steps S]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if replication {
        return run_replication(seeds, base, steps, replay);
    }
    let config_for = |seed: u64| {
        let mut c =
            SimConfig::new(seed, voters.unwrap_or(if seed.is_multiple_of(2) { 3 } else { 5 }));
        if let Some(s) = steps {
            c.steps = s;
        }
        c
    };

    if replay {
        let seed: u64 =
            std::env::var("SEED").context("--replay needs SEED=<n>")?.parse().context("SEED")?;
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .init();
        let mut c = config_for(seed);
        c.verbose = true;
        return match run(&c) {
            Ok(r) => {
                println!(
                    "seed {seed} ({} voters): ok, {} acked, {} committed, max term {}, {} crashes, {} partitions, {:?} virtual, {:?}",
                    c.voters,
                    r.acked,
                    r.committed,
                    r.max_term,
                    r.crashes,
                    r.partitions,
                    r.virtual_time,
                    r.net
                );
                Ok(())
            }
            Err(f) => {
                println!("{f}");
                bail!("seed {seed} failed")
            }
        };
    }

    let base = base.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    println!("running {seeds} seeds from {base}");
    let started = Instant::now();
    let mut failed = Vec::new();
    for seed in base..base + seeds {
        let c = config_for(seed);
        match run(&c) {
            Ok(r) => println!(
                "seed {seed} ({} voters): ok, {} acked, {} committed, max term {}, {} crashes, {} partitions",
                c.voters, r.acked, r.committed, r.max_term, r.crashes, r.partitions
            ),
            Err(f) => {
                println!("{f}");
                failed.push((seed, c.voters));
            }
        }
    }
    println!("{} seeds in {:.1?}, {} failed", seeds, started.elapsed(), failed.len());
    for (seed, voters) in &failed {
        println!("  {}", replay_command(*seed, *voters));
    }
    if !failed.is_empty() {
        bail!("{} seeds failed", failed.len());
    }
    Ok(())
}

/// The replication simulation: `seeds` seeds from `base`, or `SEED` replayed verbosely.
fn run_replication(
    seeds: u64,
    base: Option<u64>,
    steps: Option<usize>,
    replay: bool,
) -> Result<()> {
    let config_for = |seed: u64| {
        let mut c = ReplConfig::new(seed);
        if let Some(s) = steps {
            c.steps = s;
        }
        c
    };
    let summary = |seed: u64, r: &replication::ReplReport| {
        format!(
            "seed {seed}: ok, {} acked, {} committed, leader epoch {}, {} crashes ({} power losses), {} freezes, {} partitions, {} controlled shutdowns, {}ms virtual, liveness {}ms",
            r.acked,
            r.committed,
            r.leader_epoch,
            r.crashes,
            r.power_losses,
            r.freezes,
            r.partitions,
            r.controlled_shutdowns,
            r.virtual_ms,
            r.liveness_ms
        )
    };
    if replay {
        let seed: u64 =
            std::env::var("SEED").context("--replay needs SEED=<n>")?.parse().context("SEED")?;
        let mut c = config_for(seed);
        c.verbose = true;
        return match replication::run(&c) {
            Ok(r) => {
                println!("{}", summary(seed, &r));
                Ok(())
            }
            Err(f) => {
                println!("{f}");
                bail!("seed {seed} failed")
            }
        };
    }
    let base = base.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    println!("running {seeds} replication seeds from {base}");
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut virtual_ms = 0;
    for seed in base..base + seeds {
        match replication::run(&config_for(seed)) {
            Ok(r) => {
                virtual_ms += r.virtual_ms;
                println!("{}", summary(seed, &r));
            }
            Err(f) => {
                println!("{f}");
                failed.push(seed);
            }
        }
    }
    println!(
        "{} seeds in {:.1?} ({:.0}s virtual), {} failed",
        seeds,
        started.elapsed(),
        virtual_ms as f64 / 1000.0,
        failed.len()
    );
    for seed in &failed {
        println!("  {}", replication::replay_command(*seed));
    }
    if !failed.is_empty() {
        bail!("{} seeds failed", failed.len());
    }
    Ok(())
}
