//! End-to-end tests of one broker process driven by the real CLI binaries: a million records
//! through `strom-producer` and `strom-consumer`, per-partition order, keys in the partition
//! Kafka's partitioner picks, and everything still there after a broker restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;

use common::{BrokerProcess, run, run_ok};

const PARTITIONS: u32 = 6;
const RECORDS: usize = 1_000_000;
const KEYS: usize = 1_000;

fn key_of(i: usize) -> String {
    format!("k{}", i % KEYS)
}

/// Reads every partition on its own and checks what it holds against what was produced.
fn verify_topic(addr: &str, topic: &str, expected_per_partition: &[usize]) {
    let mut seen = vec![false; RECORDS];
    for (p, &expected) in expected_per_partition.iter().enumerate() {
        let out = run_ok(
            "strom-consumer",
            &[
                "--bootstrap",
                addr,
                "--topic",
                topic,
                "--partition",
                &p.to_string(),
                "--from-beginning",
                "--print-key",
                "--key-separator",
                ":",
                "--max-messages",
                &expected.to_string(),
                "--timeout-ms",
                "20000",
            ],
            None,
        );
        let mut last: Option<usize> = None;
        let mut count = 0;
        for line in out.lines() {
            let (key, value) = line.split_once(':').expect("key:value line");
            let i: usize = value.parse().expect("numeric value");
            assert_eq!(key, key_of(i), "record {i} carries the wrong key");
            let want = strom_producer::partition_for_key(key.as_bytes(), PARTITIONS);
            assert_eq!(want.get() as usize, p, "key {key} found in partition {p}");
            // One producer, ordered per partition: values only grow within a partition.
            if let Some(prev) = last {
                assert!(i > prev, "partition {p}: {i} after {prev}");
            }
            last = Some(i);
            assert!(!seen[i], "record {i} delivered twice");
            seen[i] = true;
            count += 1;
        }
        assert_eq!(count, expected, "partition {p} record count");
    }
    let missing = seen.iter().filter(|s| !**s).count();
    assert_eq!(missing, 0, "{missing} records missing");
}

#[test]
fn million_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--segment-bytes", "8388608"]);
    let addr = broker.addr.clone();
    let topic = "e2e";
    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", topic, "--partitions", &PARTITIONS.to_string()],
        None,
    );

    let mut input = String::with_capacity(RECORDS * 16);
    let mut expected = vec![0usize; PARTITIONS as usize];
    let mut by_key: HashMap<String, u32> = HashMap::new();
    for i in 0..RECORDS {
        let key = key_of(i);
        let p = *by_key.entry(key.clone()).or_insert_with(|| {
            strom_producer::partition_for_key(key.as_bytes(), PARTITIONS).get() as u32
        });
        expected[p as usize] += 1;
        writeln!(input, "{key}:{i}").unwrap();
    }
    run_ok(
        "strom-producer",
        &["--bootstrap", &addr, "--topic", topic, "--key-separator", ":", "--acks", "all"],
        Some(input.as_bytes()),
    );
    drop(input);

    verify_topic(&addr, topic, &expected);

    // The whole topic through one consumer (all partitions assigned).
    let all = run_ok(
        "strom-consumer",
        &[
            "--bootstrap",
            &addr,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            &RECORDS.to_string(),
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    assert_eq!(all.lines().count(), RECORDS);

    broker.stop();
    broker.restart();
    verify_topic(&broker.addr, topic, &expected);

    let described =
        run_ok("strom-admin", &["--bootstrap", &broker.addr, "topics", "describe", topic], None);
    assert!(described.contains(topic), "describe output: {described}");
}

#[test]
fn bad_input_gets_clear_errors_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.as_str();

    // Unknown topic: the producer fails loudly instead of dropping records.
    let out = run("strom-producer", &["--bootstrap", addr, "--topic", "nope"], Some(b"a\nb\n"));
    assert!(!out.status.success(), "producing to an unknown topic must fail");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("unknown topic") || err.contains("nope"), "stderr: {err}");

    // Creating a topic twice.
    run_ok(
        "strom-admin",
        &["--bootstrap", addr, "topics", "create", "t", "--partitions", "2"],
        None,
    );
    let out = run("strom-admin", &["--bootstrap", addr, "topics", "create", "t"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("exist"));

    // Invalid topic name and partition count.
    let out = run("strom-admin", &["--bootstrap", addr, "topics", "create", "bad/name"], None);
    assert!(!out.status.success());
    let out = run(
        "strom-admin",
        &["--bootstrap", addr, "topics", "create", "z", "--partitions", "0"],
        None,
    );
    assert!(!out.status.success());

    // Consumer on an unknown topic.
    let out = run(
        "strom-consumer",
        &["--bootstrap", addr, "--topic", "nope", "--timeout-ms", "2000", "--max-messages", "1"],
        None,
    );
    assert!(!out.status.success());

    // Still serving.
    run_ok("strom-producer", &["--bootstrap", addr, "--topic", "t"], Some(b"x\ny\n"));
    let out = run_ok(
        "strom-consumer",
        &["--bootstrap", addr, "--topic", "t", "--from-beginning", "--max-messages", "2"],
        None,
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["x", "y"]);
}
