//! The Kafka admin APIs that move data or leadership, in a 3-node cluster of real processes
//! (through `strom-admin`, which calls the same `Broker` operations as the Kafka listener):
//! - DeleteRecords answers once every in-sync replica's log start passed the offset: after
//!   the leader is killed, the follower that takes over starts there too;
//! - a preferred ElectLeaders gives leadership back to the first replica once it is in sync
//!   again after a restart (which kept its log start), and says ELECTION_NOT_NEEDED after;
//!   an unclean election of a partition with a live leader is not needed either.

mod common;

use std::time::Instant;

use common::cluster::{Cluster, admin_json, all_active, wait_for};
use common::run_ok;

const TOPIC: &str = "admin-apis";

/// Partition 0 as `addr` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition0 {
    leader: i64,
    replicas: Vec<i64>,
    isr: Vec<i64>,
    log_start: i64,
    high_watermark: i64,
}

fn partition0(addr: &str) -> Option<Partition0> {
    let v = admin_json(addr, &["topics", "describe", TOPIC])?;
    let p = &v[0]["partitions"][0];
    let ids = |key: &str| -> Option<Vec<i64>> {
        Some(p[key].as_array()?.iter().filter_map(|n| n.as_i64()).collect())
    };
    Some(Partition0 {
        leader: p["leader"].as_i64()?,
        replicas: ids("replicas")?,
        isr: ids("isr")?,
        log_start: p["log_start_offset"].as_i64().unwrap_or(-1),
        high_watermark: p["high_watermark"].as_i64().unwrap_or(-1),
    })
}

/// Partition 0 as the first node of `through` that answers describes it.
fn describe(cluster: &Cluster, through: &[i64]) -> Option<Partition0> {
    through.iter().find_map(|id| partition0(&cluster.node(*id).addr))
}

/// `strom-admin --output json ARGS` through `addr`, which must succeed.
fn admin(addr: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--bootstrap", addr, "--output", "json"];
    all.extend_from_slice(args);
    let out = run_ok("strom-admin", &all, None);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn delete_records_reaches_every_in_sync_replica_and_preferred_election_restores_the_leader() {
    let mut cluster = Cluster::start_with(3, &["--replica-lag-time-max-ms", "2000"]);
    let ids = [1, 2, 3];
    wait_for("3 nodes active", || all_active(&cluster.node(1).addr, &ids));
    let addr1 = cluster.node(1).addr.clone();
    run_ok(
        "strom-admin",
        &[
            "--bootstrap",
            &addr1,
            "topics",
            "create",
            TOPIC,
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        None,
    );
    let (first, _) = wait_for("partition 0 with a full ISR", || {
        describe(&cluster, &ids).filter(|p| p.leader > 0 && p.isr.len() == 3)
    });
    let preferred = first.replicas[0];
    assert_eq!(first.leader, preferred, "a new partition is led by its first replica");

    let bootstrap = cluster.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let lines: String = (0..100).map(|i| format!("r{i}\n")).collect();
    run_ok(
        "strom-producer",
        &["--bootstrap", &bootstrap, "--topic", TOPIC],
        Some(lines.as_bytes()),
    );
    wait_for("high watermark 100", || describe(&cluster, &ids).filter(|p| p.high_watermark == 100));

    // Through a node that may not lead: strom-admin asks the leader, which answers once the
    // whole ISR's log start passed 40.
    let started = Instant::now();
    let args = ["topics", "delete-records", TOPIC, "--partition", "0", "--offset", "40"];
    let deleted = admin(&cluster.node(2).addr, &args);
    println!("DeleteRecords on RF 3 answered in {:?}", started.elapsed());
    assert_eq!(deleted["low_watermark"].as_i64(), Some(40), "{deleted}");
    let above = admin_json(
        &cluster.node(2).addr,
        &["topics", "delete-records", TOPIC, "--partition", "0", "--offset", "101"],
    );
    assert!(above.is_none(), "above the high watermark is refused");

    // The leader dies: the follower taking over had moved its own start already.
    cluster.node_mut(preferred).kill();
    let others: Vec<i64> = ids.iter().copied().filter(|n| *n != preferred).collect();
    let (after_kill, took) = wait_for("a new leader", || {
        describe(&cluster, &others).filter(|p| p.leader > 0 && p.leader != preferred)
    });
    println!("new leader {} after {took:?}", after_kill.leader);
    assert_eq!(after_kill.log_start, 40, "the new leader starts at the deleted offset");

    // Back in sync, the preferred replica leads again only when asked.
    cluster.node_mut(preferred).restart();
    wait_for("the preferred replica back in the ISR", || {
        describe(&cluster, &others).filter(|p| p.isr.len() == 3 && p.leader != preferred)
    });
    let elected = admin(
        &cluster.node(others[0]).addr,
        &["topics", "elect-leaders", TOPIC, "--election", "preferred"],
    );
    assert_eq!(elected[0]["leader"].as_i64(), Some(preferred), "{elected}");
    assert!(elected[0]["error"].is_null(), "{elected}");
    // A new leader learns the high watermark from its followers' next fetches.
    let (led, took) = wait_for("the preferred replica leads at high watermark 100", || {
        describe(&cluster, &ids).filter(|p| p.leader == preferred && p.high_watermark == 100)
    });
    println!("preferred replica {preferred} leads {took:?} after the election answer");
    assert_eq!(led.log_start, 40, "the restarted replica kept its log start");

    let again = admin(
        &cluster.node(1).addr,
        &["topics", "elect-leaders", TOPIC, "--partition", "0", "--election", "preferred"],
    );
    assert_eq!(again[0]["error"].as_str(), Some("ELECTION_NOT_NEEDED"), "{again}");
    let unclean = admin(
        &cluster.node(3).addr,
        &["topics", "elect-leaders", TOPIC, "--partition", "0", "--election", "unclean"],
    );
    assert_eq!(unclean[0]["error"].as_str(), Some("ELECTION_NOT_NEEDED"), "{unclean}");

    // A consumer from the beginning starts at the deleted offset.
    let out = run_ok(
        "strom-consumer",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            TOPIC,
            "--from-beginning",
            "--max-messages",
            "60",
            "--output",
            "json",
        ],
        None,
    );
    let offsets: Vec<i64> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["offset"].as_i64())
        .collect();
    assert_eq!(offsets.first(), Some(&40), "{offsets:?}");
    assert_eq!(offsets, (40..100).collect::<Vec<_>>());
}
