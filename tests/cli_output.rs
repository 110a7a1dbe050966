//! What `strom-consumer` writes, as a script or a terminal sees it: each record appears as soon
//! as it is consumed (a tail of the topic in a pipe shows records before the consumer exits),
//! and `--output json` writes one parseable object per record with stable field names, binary
//! keys and values in base64.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BrokerProcess, bin, run_ok};
use strom_format::PartitionId;
use strom_producer::{Producer, ProducerConfig, ProducerRecord};

fn produce(addr: &str, records: Vec<ProducerRecord>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = Producer::new(ProducerConfig::new(addr)).await.unwrap();
        for r in records {
            producer.send(r).await.unwrap().await.unwrap();
        }
        producer.close().await;
    });
}

#[test]
fn consumer_streams_records_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.clone();
    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", "out", "--partitions", "1"],
        None,
    );

    // A tail in a pipe: the record shows up while the consumer keeps running.
    let mut tail = Command::new(bin("strom-consumer"))
        .args(["--bootstrap", &addr, "--topic", "out", "--from-beginning"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    produce(
        &addr,
        vec![
            ProducerRecord::new("out").partition(PartitionId::new(0)).key("k1").value("hello"),
            ProducerRecord::new("out")
                .partition(PartitionId::new(0))
                .key(vec![0xffu8, 0x00, 0xfe])
                .value(vec![0xc3u8, 0x28])
                .header("trace", Some(b"abc".as_slice())),
        ],
    );
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("record not streamed");
    assert_eq!(line, "hello");
    assert!(tail.try_wait().unwrap().is_none(), "the tail exited");
    tail.kill().unwrap();
    tail.wait().unwrap();

    let json = run_ok(
        "strom-consumer",
        &[
            "--bootstrap",
            &addr,
            "--topic",
            "out",
            "--from-beginning",
            "--max-messages",
            "2",
            "--output",
            "json",
        ],
        None,
    );
    let objects: Vec<serde_json::Value> =
        json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{json}");
    let first = &objects[0];
    assert_eq!(first["topic"], "out");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 0);
    assert!(first["timestamp"].as_i64().unwrap() > 0);
    assert_eq!(first["key"], "k1");
    assert_eq!(first["value"], "hello");
    assert_eq!(first["headers"], serde_json::json!([]));
    assert!(first.get("value_encoding").is_none());
    let second = &objects[1];
    assert_eq!(second["offset"], 1);
    assert_eq!(second["key"], "/wD+");
    assert_eq!(second["key_encoding"], "base64");
    assert_eq!(second["value"], "wyg=");
    assert_eq!(second["value_encoding"], "base64");
    assert_eq!(second["headers"], serde_json::json!([{"key": "trace", "value": "abc"}]));
}
