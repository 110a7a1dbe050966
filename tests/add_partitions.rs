//! `strom-admin topics add-partitions` against real brokers: one node (the count grows, keyed
//! records reach the new partitions, refusals exit non-zero with Kafka's reason) and a 3-node
//! cluster (through a node that is not the controller; the new partitions get leaders on
//! live nodes and replicas whose logs exist on every replica's node, and take records).

mod common;

use common::cluster::{Cluster, admin_json, all_active, wait_for};
use common::{BrokerProcess, run, run_ok};

/// (partition, leader, replicas, high watermark) of one partition.
type Described = (i64, i64, Vec<i64>, i64);

/// Every partition of `topic`, as `addr` describes it.
fn partitions(addr: &str, topic: &str) -> Option<Vec<Described>> {
    let v = admin_json(addr, &["topics", "describe", topic])?;
    v[0]["partitions"]
        .as_array()?
        .iter()
        .map(|p| {
            let replicas = p["replicas"].as_array()?.iter().filter_map(|r| r.as_i64()).collect();
            Some((
                p["partition"].as_i64()?,
                p["leader"].as_i64()?,
                replicas,
                p["high_watermark"].as_i64()?,
            ))
        })
        .collect()
}

fn produce_keyed(addr: &str, topic: &str, n: usize) {
    let input: String = (0..n).map(|i| format!("key-{i}:value-{i}\n")).collect();
    run_ok(
        "strom-producer",
        &["--bootstrap", addr, "--topic", topic, "--key-separator", ":"],
        Some(input.as_bytes()),
    );
}

fn add(addr: &str, args: &[&str]) -> std::process::Output {
    let all = [&["--bootstrap", addr, "topics", "add-partitions"][..], args].concat();
    run("strom-admin", &all, None)
}

#[test]
fn a_topic_grows_on_one_node_and_refusals_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.clone();
    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", "t", "--partitions", "2"],
        None,
    );

    let out = add(&addr, &["t", "--partitions", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now has 5 partition(s)"));
    // The answer waits for the change to be applied: the new partitions are there at once.
    let parts = partitions(&addr, "t").expect("described");
    assert_eq!(parts.len(), 5);
    assert!(parts.iter().all(|p| p.1 == 1 && p.2 == vec![1]), "{parts:?}");
    // A new producer process learns 5 partitions; its keys reach the new ones.
    produce_keyed(&addr, "t", 100);
    let parts = partitions(&addr, "t").expect("described");
    assert!(parts.iter().all(|p| p.3 > 0), "every partition took keyed records: {parts:?}");
    assert_eq!(parts.iter().map(|p| p.3).sum::<i64>(), 100);

    let refusals: [(&[&str], &str); 5] = [
        (&["t", "--partitions", "5"], "INVALID_PARTITIONS"),
        (&["t", "--partitions", "3"], "INVALID_PARTITIONS"),
        (&["missing", "--partitions", "3"], "does not exist"),
        (&["t", "--partitions", "6", "--replica-assignment", "9"], "INVALID_REPLICA_ASSIGNMENT"),
        (&["t", "--partitions", "7", "--replica-assignment", "1"], "INVALID_REPLICA_ASSIGNMENT"),
    ];
    for (args, reason) in refusals {
        let out = add(&addr, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(reason), "{args:?}: expected {reason}, got {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    assert_eq!(partitions(&addr, "t").expect("described").len(), 5, "refusals changed nothing");
}

#[test]
fn new_partitions_get_leaders_and_replicas_across_three_nodes() {
    let cluster = Cluster::start(3);
    let ids = [1, 2, 3];
    let (controller, _) = wait_for("3 nodes active", || all_active(&cluster.node(1).addr, &ids));
    let other = ids.iter().copied().find(|id| *id != controller).expect("a non-controller");
    let via = cluster.node(other).addr.clone();
    run_ok(
        "strom-admin",
        &[
            "--bootstrap",
            &via,
            "topics",
            "create",
            "r",
            "--partitions",
            "3",
            "--replication-factor",
            "2",
        ],
        None,
    );

    // Through a node that is not the controller: forwarded, answered once applied there.
    let out = add(&via, &["r", "--partitions", "6"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A manual assignment for one more.
    let out = add(&via, &["r", "--partitions", "7", "--replica-assignment", "3:1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Every node's view: 7 partitions, each led by one of its two replicas.
    for id in ids {
        let (parts, took) = wait_for("7 led partitions", || {
            let parts = partitions(&cluster.node(id).addr, "r")?;
            (parts.len() == 7 && parts.iter().all(|p| p.2.contains(&p.1))).then_some(parts)
        });
        println!("node {id} sees 7 led partitions after {:.2}s", took.as_secs_f64());
        for (_, _, replicas, _) in &parts {
            assert_eq!(replicas.len(), 2, "{parts:?}");
        }
        assert_eq!((parts[6].1, parts[6].2.clone()), (3, vec![3, 1]), "manual assignment");
    }
    let parts = partitions(&via, "r").expect("described");
    // Each replica's node holds the new partitions' logs.
    for (partition, _, replicas, _) in parts.iter().filter(|p| p.0 >= 3) {
        for node in replicas {
            let dir = cluster.node(*node).data_dir.join(format!("r-{partition}"));
            assert!(dir.is_dir(), "node {node} has no log for r-{partition}");
        }
    }
    // They take records: a producer through a third node spreads keys over all 7.
    produce_keyed(&cluster.node(controller).addr, "r", 200);
    let (parts, _) = wait_for("every partition holds records", || {
        let parts = partitions(&via, "r")?;
        parts.iter().all(|p| p.3 > 0).then_some(parts)
    });
    assert_eq!(parts.iter().map(|p| p.3).sum::<i64>(), 200, "{parts:?}");
}
