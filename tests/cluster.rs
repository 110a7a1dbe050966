//! A real 3-node cluster of `strom-broker` processes (Raft metadata quorum, partitions spread
//! over the nodes): produce through one node and consume through another; a frozen node is
//! fenced and rejoins; `kill -9` of the active controller leaves a cluster that elects a new
//! one and creates topics; a full stop and restart keeps the metadata. Also: voters lists that
//! disagree form no cluster, and a malformed voters list is refused at start. A node
//! restarted while the cluster moved on serves no client until it has caught up.
//!
//! Prints what it measured (fencing, failover and recovery seconds).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, admin_json, all_active, cluster_view, leaders, wait_for};
use common::{BrokerProcess, free_port, run, run_ok};

/// The parts of a topic's metadata that must survive a restart unchanged.
fn placement(addr: &str, topic: &str) -> Option<serde_json::Value> {
    let v = admin_json(addr, &["topics", "describe", topic])?;
    let partitions: Vec<serde_json::Value> = v[0]["partitions"]
        .as_array()?
        .iter()
        .map(|p| serde_json::json!([p["partition"], p["replicas"]]))
        .collect();
    Some(serde_json::json!({"partitions": partitions, "configs": v[0]["configs"]}))
}

/// Every record of `orders` read from the beginning through `addr`, one value per line.
fn read_orders(addr: &str) -> String {
    let args =
        ["--bootstrap", addr, "--topic", "orders", "--from-beginning", "--max-messages", "600"];
    run_ok("strom-consumer", &[&args[..], &["--timeout-ms", "20000"]].concat(), None)
}

#[test]
fn three_nodes_one_cluster_through_freeze_controller_kill_and_full_restart() {
    let mut cluster = Cluster::start(3);
    let ids: [i64; 3] = [1, 2, 3];
    let (controller, formed) =
        wait_for("3 nodes active with a controller", || all_active(&cluster.node(1).addr, &ids));
    println!("cluster formed in {:.2}s, controller node {controller}", formed.as_secs_f64());

    // A topic created through one node spreads its leaders over all three.
    run_ok(
        "strom-admin",
        &["--bootstrap", &cluster.node(2).addr, "topics", "create", "orders", "--partitions", "6"],
        None,
    );
    let (placed, _) = wait_for("orders described", || leaders(&cluster.node(3).addr, "orders"));
    for id in ids {
        let led = placed.values().filter(|l| **l == id).count();
        assert_eq!(led, 2, "node {id} leads {led} of 6 partitions: {placed:?}");
    }

    // Produce through node 1, consume through node 3: requests reach each partition's leader.
    let input: String = (0..600).map(|i| format!("key-{i}:value-{i}\n")).collect();
    run_ok(
        "strom-producer",
        &["--bootstrap", &cluster.node(1).addr, "--topic", "orders", "--key-separator", ":"],
        Some(input.as_bytes()),
    );
    let consumed = read_orders(&cluster.node(3).addr);
    let mut values: Vec<&str> = consumed.lines().collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), 600, "every produced record read back once");

    // A frozen node misses its heartbeats and is fenced; thawed, it rejoins.
    let frozen = ids.iter().copied().find(|id| *id != controller).expect("a follower");
    let observer = ids.iter().copied().find(|id| *id != frozen).expect("another node");
    cluster.node(frozen).freeze();
    let (_, fenced_after) = wait_for("frozen node fenced", || {
        let (nodes, _) = cluster_view(&cluster.node(observer).addr)?;
        (nodes.get(&(frozen)).map(String::as_str) == Some("fenced")).then_some(())
    });
    let (offline, _) = wait_for("its partitions lose their leader", || {
        let l = leaders(&cluster.node(observer).addr, "orders")?;
        let led_by_frozen = l.values().filter(|n| **n == frozen).count();
        (led_by_frozen == 0).then_some(l)
    });
    println!(
        "frozen node {frozen} fenced after {:.2}s; leaders now {offline:?}",
        fenced_after.as_secs_f64()
    );
    cluster.node(frozen).thaw();
    let (_, rejoined_after) = wait_for("thawed node active and leading again", || {
        all_active(&cluster.node(observer).addr, &ids)?;
        let l = leaders(&cluster.node(observer).addr, "orders")?;
        (l.values().filter(|n| **n == frozen).count() == 2).then_some(())
    });
    println!("thawed node {frozen} leads again after {:.2}s", rejoined_after.as_secs_f64());

    // kill -9 of the active controller: a new one is elected and serves topic creation.
    // Node 1 may have been the frozen one and not know the controller yet: wait until it does.
    let (controller, _) = wait_for("a known controller", || {
        let (_, c) = cluster_view(&cluster.node(1).addr)?;
        (c > 0).then_some(c)
    });
    let survivor = ids.iter().copied().find(|id| *id != controller).expect("survivor");
    cluster.node_mut(controller).kill();
    let killed_at = Instant::now();
    let survivor_addr = cluster.node(survivor).addr.clone();
    wait_for("a topic created after the controller's death", || {
        let out = run(
            "strom-admin",
            &[
                "--bootstrap",
                &survivor_addr,
                "--timeout-ms",
                "2000",
                "topics",
                "create",
                "after-kill",
            ],
            None,
        );
        let exists = String::from_utf8_lossy(&out.stderr).contains("already exists");
        (out.status.success() || exists).then_some(())
    });
    let failover = killed_at.elapsed();
    let (view, new_controller) = cluster_view(&survivor_addr).expect("view after failover");
    println!(
        "controller {controller} killed: new controller {new_controller}, topic created {:.2}s after the kill; nodes {view:?}",
        failover.as_secs_f64()
    );
    assert_ne!(new_controller, controller);
    cluster.node_mut(controller).restart();
    wait_for("restarted node active", || all_active(&survivor_addr, &ids));

    // A full stop and restart keeps the metadata.
    let before = placement(&survivor_addr, "orders").expect("placement before");
    let before_topics = admin_json(&survivor_addr, &["topics", "list"]).expect("topics before");
    for id in ids {
        cluster.node_mut(id).stop();
    }
    for id in ids {
        cluster.node_mut(id).restart();
    }
    wait_for("cluster back after a full restart", || all_active(&cluster.node(2).addr, &ids));
    let (after, _) =
        wait_for("orders described after restart", || placement(&cluster.node(3).addr, "orders"));
    assert_eq!(after, before, "topic placement and configs survive a full restart");
    let after_topics = admin_json(&cluster.node(1).addr, &["topics", "list"]).expect("topics");
    assert_eq!(after_topics, before_topics);
    let again = read_orders(&cluster.node(2).addr);
    assert_eq!(again.lines().count(), 600, "every record readable after the restart");
    println!("voters: {}", cluster.voters);
}

/// Topic names `addr` lists; `None` if it does not answer.
fn topic_names(addr: &str) -> Option<Vec<String>> {
    let v = admin_json(addr, &["topics", "list"])?;
    Some(v.as_array()?.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
}

#[test]
fn a_restarted_node_serves_no_client_before_it_has_caught_up_with_the_quorum() {
    let mut cluster = Cluster::start(3);
    wait_for("3 nodes active", || all_active(&cluster.node(1).addr, &[1, 2, 3]));
    let n1 = cluster.node(1).addr.clone();
    run_ok("strom-admin", &["--bootstrap", &n1, "topics", "create", "old"], None);
    wait_for("node 3 lists the topic", || {
        topic_names(&cluster.node(3).addr)?.contains(&"old".to_string()).then_some(())
    });

    // While node 3 is down the cluster moves on: its on-disk metadata is now stale.
    // Node 3 may have been the controller: each change is retried until a new one takes it.
    cluster.node_mut(3).kill();
    for (change, done_already) in [("delete", "does not exist"), ("create", "already exists")] {
        let topic = if change == "delete" { "old" } else { "fresh" };
        wait_for(&format!("{change} {topic}"), || {
            let args = ["--bootstrap", &n1, "--timeout-ms", "3000", "topics", change, topic];
            let out = run("strom-admin", &args, None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            (out.status.success() || stderr.contains(done_already)).then_some(())
        });
    }

    // With the quorum frozen, node 3 cannot catch up: it must refuse clients, not answer from
    // the image it replayed from disk (which still has `old` and lacks `fresh`).
    cluster.node(1).freeze();
    cluster.node(2).freeze();
    cluster.node_mut(3).restart();
    let n3 = cluster.node(3).addr.clone();
    let refused =
        run("strom-admin", &["--bootstrap", &n3, "--timeout-ms", "3000", "topics", "list"], None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("recovering"),
        "a node that has not caught up answered: {} {stderr}",
        String::from_utf8_lossy(&refused.stdout)
    );

    cluster.node(1).thaw();
    cluster.node(2).thaw();
    let (names, caught_up) = wait_for("node 3 serves again", || topic_names(&n3));
    println!("node 3 caught up {:.2}s after the quorum thawed", caught_up.as_secs_f64());
    // Its first answer is already the quorum's state.
    assert!(names.contains(&"fresh".to_string()), "first answer after recovery: {names:?}");
    assert!(!names.contains(&"old".to_string()), "first answer after recovery: {names:?}");
}

#[test]
fn voters_lists_that_disagree_elect_no_controller() {
    let (a, b) = (free_port(), free_port());
    let dirs = [tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir")];
    // Node 2 names a third voter node 1 does not know: two different clusters.
    let one = format!("1@127.0.0.1:{a},2@127.0.0.1:{b}");
    let two = format!("1@127.0.0.1:{a},2@127.0.0.1:{b},3@127.0.0.1:{}", free_port());
    let args = |id: &str, voters: &str| {
        vec!["--node-id".to_string(), id.to_string(), "--voters".to_string(), voters.to_string()]
    };
    let n1 = BrokerProcess::start_at(dirs[0].path(), &format!("127.0.0.1:{a}"), &args("1", &one));
    let _n2 = BrokerProcess::start_at(dirs[1].path(), &format!("127.0.0.1:{b}"), &args("2", &two));
    // Both are up; neither can win the other's vote, so no controller exists and no change can
    // be made (rather than two controllers over one set of ids).
    let deadline = Instant::now() + Duration::from_secs(3);
    // Node 1 never catches up with a quorum, so it serves no client: it says so.
    while Instant::now() < deadline {
        let args = ["--bootstrap", &n1.addr, "--timeout-ms", "2000", "cluster", "describe"];
        let out = run("strom-admin", &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("recovering"),
            "node 1 served a client without a quorum: {} {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run(
        "strom-admin",
        &["--bootstrap", &n1.addr, "--timeout-ms", "2000", "topics", "create", "t"],
        None,
    );
    assert!(!out.status.success(), "no topic may be created without a quorum");
}

#[test]
fn malformed_voters_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    for (voters, says) in [
        ("1@127.0.0.1:1,1@127.0.0.1:2", "listed twice"),
        ("1@nowhere", "voter"),
        ("one@127.0.0.1:1", "node id"),
    ] {
        let out = std::process::Command::new(common::bin("strom-broker"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--kafka-listen",
                "none",
                "--http-listen",
                "none",
                "--data-dir",
                data,
            ])
            .args(["--voters", voters])
            .output()
            .expect("run strom-broker");
        assert!(!out.status.success(), "--voters {voters} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "--voters {voters}: {stderr}");
    }
}
