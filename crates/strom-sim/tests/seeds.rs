//! The fixed seeds CI runs (a few seconds in all), and the replay property.

use strom_sim::{SimConfig, run};

fn run_seeds(voters: usize, seeds: impl IntoIterator<Item = u64>) {
    let mut failures = Vec::new();
    for seed in seeds {
        match run(&SimConfig::new(seed, voters)) {
            Ok(r) => {
                assert!(r.acked > 0, "seed {seed}: nothing was acknowledged");
            }
            Err(f) => {
                eprintln!("{f}");
                for line in f.trace.iter().rev().take(40).rev() {
                    eprintln!("  {line}");
                }
                failures.push(strom_sim::replay_command(seed, voters));
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds:\n{}", failures.join("\n"));
}

#[test]
fn three_voters_survive_crashes_partitions_and_lossy_network() {
    run_seeds(3, 0..12);
}

#[test]
fn five_voters_survive_crashes_partitions_and_lossy_network() {
    // 5487 found openraft purging the log before an installed snapshot was durable.
    run_seeds(5, (100..110).chain([5487]));
}

/// The driver's schedule (starts, crashes, partitions, heals) depends only on the seed.
#[test]
fn same_seed_same_fault_schedule() {
    let schedule = |trace: &[String]| -> Vec<String> {
        trace
            .iter()
            .filter_map(|l| {
                let event = l.split_once("ms ").map_or(l.as_str(), |(_, e)| e);
                ["start node", "crash node", "partition", "heal", "liveness: heal"]
                    .iter()
                    .any(|p| event.starts_with(p))
                    .then(|| event.to_string())
            })
            .collect()
    };
    let a = run(&SimConfig::new(7, 3)).expect("seed 7");
    let b = run(&SimConfig::new(7, 3)).expect("seed 7");
    assert_eq!(schedule(&a.trace), schedule(&b.trace));
    assert!(schedule(&a.trace).len() > 3);
}

/// Beyond the schedule, the whole trace (every commit, leader and fault, with its virtual
/// time) replays byte for byte; see the crate docs for what could, in principle, break this.
#[test]
fn same_seed_same_trace() {
    for (seed, voters) in [(7, 3), (8, 5)] {
        let a = run(&SimConfig::new(seed, voters)).expect("first run");
        let b = run(&SimConfig::new(seed, voters)).expect("second run");
        assert_eq!(a.trace, b.trace, "seed {seed}: the trace differs between two runs");
        assert_eq!(a.virtual_time, b.virtual_time);
    }
}

/// The replication simulation's CI seeds: crashes, power losses (one node, two, everyone),
/// freezes, partitions and a lossy network, then liveness; no acknowledged record lost.
#[test]
fn replication_survives_crashes_power_loss_freezes_and_partitions() {
    use strom_sim::replication::{self, ReplConfig};
    let mut failures = Vec::new();
    let mut acked = 0;
    for seed in 0..40 {
        match replication::run(&ReplConfig::new(seed)) {
            Ok(r) => acked += r.acked,
            Err(f) => {
                eprintln!("{f}");
                for line in f.trace.iter().rev().take(40).rev() {
                    eprintln!("  {line}");
                }
                failures.push(replication::replay_command(seed));
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds:\n{}", failures.join("\n"));
    assert!(acked > 40 * 20, "too little was acknowledged to mean anything: {acked}");
}

/// One seed, one trace: every fault, commit, leadership, truncation and virtual time.
#[test]
fn replication_same_seed_same_trace() {
    use strom_sim::replication::{self, ReplConfig};
    for seed in [7, 8] {
        let a = replication::run(&ReplConfig::new(seed)).expect("first run");
        let b = replication::run(&ReplConfig::new(seed)).expect("second run");
        assert_eq!(a.trace, b.trace, "seed {seed}: the trace differs between two runs");
        assert_eq!(a.virtual_ms, b.virtual_ms);
        assert!(a.trace.len() > 50);
    }
}
