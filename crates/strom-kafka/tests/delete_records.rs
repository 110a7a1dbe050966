//! Kafka's DeleteRecords over the wire (`kafka-delete-records.sh`, `AdminClient.delete_records`):
//! the answer is the new low watermark, ListOffsets earliest follows it, a fetch below it is
//! OFFSET_OUT_OF_RANGE, -1 means the high watermark, and bad partitions get their own codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use strom_kafka::KafkaConfig;
use support::{Client, Node, topic};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const INVALID_TOPIC_EXCEPTION: i16 = 17;

/// `(partition, error, low watermark)` of each partition of one topic's answer.
fn delete(c: &mut Client, version: i16, t: &str, parts: &[(i32, i64)]) -> Vec<(i32, i16, i64)> {
    let partitions = parts
        .iter()
        .map(|&(p, o)| DeleteRecordsPartition::default().with_partition_index(p).with_offset(o))
        .collect();
    let request = DeleteRecordsRequest::default().with_timeout_ms(5_000).with_topics(vec![
        DeleteRecordsTopic::default().with_name(topic(t)).with_partitions(partitions),
    ]);
    let response: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, version, &request);
    assert_eq!(response.topics.len(), 1);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code, p.low_watermark))
        .collect()
}

fn earliest(c: &mut Client, t: &str, partition: i32) -> i64 {
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default().with_name(topic(t)).with_partitions(vec![
            ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-2),
        ]),
    ]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 4, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{p:?}");
    p.offset
}

/// `(error, log start offset, first record batch's base offset)` of a fetch at `offset`.
fn fetch(c: &mut Client, t: &str, partition: i32, offset: i64) -> (i16, i64, Option<i64>) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic(t)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ])]);
    let response: FetchResponse = c.call(ApiKey::Fetch, 11, &request);
    let p = &response.responses[0].partitions[0];
    let base = p
        .records
        .as_ref()
        .filter(|r| r.len() >= 8)
        .map(|r| i64::from_be_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]));
    (p.error_code, p.log_start_offset, base)
}

#[test]
fn delete_records_moves_the_low_watermark_at_every_version() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("dr", 2);
    for i in 0..10 {
        node.produce("dr", 0, &format!("r{i}"));
    }
    let mut c = node.client();

    // v0: inside the log; the answer is the new low watermark.
    assert_eq!(delete(&mut c, 0, "dr", &[(0, 4)]), vec![(0, 0, 4)]);
    assert_eq!(earliest(&mut c, "dr", 0), 4);
    assert_eq!(fetch(&mut c, "dr", 0, 3).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(fetch(&mut c, "dr", 0, 4), (0, 4, Some(4)));

    // v1: below the start changes nothing; above the high watermark is out of range.
    assert_eq!(delete(&mut c, 1, "dr", &[(0, 2)]), vec![(0, 0, 4)]);
    assert_eq!(delete(&mut c, 1, "dr", &[(0, 11)]), vec![(0, OFFSET_OUT_OF_RANGE, -1)]);
    assert_eq!(delete(&mut c, 1, "dr", &[(0, -5)]), vec![(0, OFFSET_OUT_OF_RANGE, -1)]);

    // v2 (flexible): -1 is the high watermark; an unknown partition is answered on its own.
    let answer = delete(&mut c, 2, "dr", &[(0, -1), (1, 0), (7, 0)]);
    assert_eq!(answer, vec![(0, 0, 10), (1, 0, 0), (7, UNKNOWN_TOPIC_OR_PARTITION, -1)]);
    assert_eq!(earliest(&mut c, "dr", 0), 10);
    assert_eq!(fetch(&mut c, "dr", 0, 10), (0, 10, None));
    assert_eq!(delete(&mut c, 2, "nope", &[(0, 0)]), vec![(0, UNKNOWN_TOPIC_OR_PARTITION, -1)]);

    // The log goes on at its end.
    assert_eq!(node.produce("dr", 0, "after"), 10);
    assert_eq!(fetch(&mut c, "dr", 0, 10), (0, 10, Some(10)));

    // Internal topics are refused (their records are the coordinator's state).
    let offsets = delete(&mut c, 2, "__consumer_offsets", &[(0, -1)]);
    assert_eq!(offsets, vec![(0, INVALID_TOPIC_EXCEPTION, -1)]);

    // A partition named twice: the whole request is refused per partition.
    let answer = delete(&mut c, 2, "dr", &[(1, 0), (1, 0)]);
    assert!(answer.iter().all(|&(_, e, _)| e == INVALID_REQUEST), "{answer:?}");
}
