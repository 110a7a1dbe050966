//! Kafka's DescribeLogDirs over the wire (`kafka-log-dirs.sh --describe`): one entry for the
//! node's data directory, every replica's size in bytes (what its segments hold), offset lag 0
//! on the leader, never a future replica, and (v4) the file system's total and usable bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::*;
use strom_kafka::KafkaConfig;
use support::{Client, Node, topic};

fn describe(
    c: &mut Client,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResponse {
    let topics = topics.map(|ts| {
        ts.into_iter()
            .map(|(t, ps)| {
                DescribableLogDirTopic::default().with_topic(topic(t)).with_partitions(ps)
            })
            .collect()
    });
    c.call(ApiKey::DescribeLogDirs, version, &DescribeLogDirsRequest::default().with_topics(topics))
}

/// `(topic, partition, size, lag, future)` of every replica in the answer's one directory.
fn replicas(r: &DescribeLogDirsResponse) -> Vec<(String, i32, i64, i64, bool)> {
    assert_eq!(r.results.len(), 1, "one data directory");
    let mut out = Vec::new();
    for t in &r.results[0].topics {
        for p in &t.partitions {
            out.push((
                t.name.as_str().to_string(),
                p.partition_index,
                p.partition_size,
                p.offset_lag,
                p.is_future_key,
            ));
        }
    }
    out
}

#[test]
fn describe_log_dirs_reports_sizes_lag_and_space() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("dirs", 2);
    for i in 0..5 {
        node.produce("dirs", 1, &format!("value-{i}"));
    }
    let size_1 = node
        .rt
        .block_on(node.broker.describe_log_dirs())
        .partitions
        .iter()
        .find(|p| p.topic == "dirs" && p.partition == 1)
        .map(|p| p.size_bytes)
        .expect("partition 1 is here");
    assert!(size_1 > 0);
    let mut c = node.client();
    for version in 1..=4 {
        let r = describe(&mut c, version, Some(vec![("dirs", vec![0, 1, 9]), ("nope", vec![0])]));
        assert_eq!(r.error_code, 0);
        let dir = &r.results[0];
        assert_eq!(dir.error_code, 0);
        assert!(!dir.log_dir.is_empty());
        // Unknown partitions and topics are left out.
        assert_eq!(
            replicas(&r),
            vec![
                ("dirs".to_string(), 0, 0, 0, false),
                ("dirs".to_string(), 1, size_1 as i64, 0, false)
            ],
            "v{version}"
        );
        if version >= 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes >= 0, "{dir:?}");
            assert!(dir.usable_bytes <= dir.total_bytes);
        }
    }
    // Null topics: every replica of the node (the offsets topic's too, once it exists).
    let all = replicas(&describe(&mut c, 4, None));
    assert!(all.iter().any(|r| r.0 == "dirs" && r.1 == 0));
    assert!(all.iter().any(|r| r.0 == "dirs" && r.1 == 1));
}
