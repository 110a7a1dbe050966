//! Kafka's OffsetDelete over the wire (`kafka-consumer-groups --delete-offsets`): a group's
//! committed offsets of the named partitions go, an unknown group is GROUP_ID_NOT_FOUND, and
//! OffsetFetch no longer finds what was deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strom_kafka::KafkaConfig;
use support::{Client, Node, topic};

const GROUP_ID_NOT_FOUND: i16 = 69;

fn group(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

/// Commits `offset` for each partition, outside group management (generation -1).
fn commit(c: &mut Client, g: &str, t: &str, partitions: &[i32], offset: i64) {
    let parts = partitions
        .iter()
        .map(|&p| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(offset)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(group(g))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(topic(t)).with_partitions(parts),
        ]);
    let response: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
    assert!(response.topics[0].partitions.iter().all(|p| p.error_code == 0), "{response:?}");
}

/// The committed offset of each partition (-1: none).
fn fetch(c: &mut Client, g: &str, t: &str, partitions: &[i32]) -> Vec<i64> {
    let request = OffsetFetchRequest::default().with_group_id(group(g)).with_topics(Some(vec![
        OffsetFetchRequestTopic::default()
            .with_name(topic(t))
            .with_partition_indexes(partitions.to_vec()),
    ]));
    let response: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &request);
    response.topics[0].partitions.iter().map(|p| p.committed_offset).collect()
}

fn delete(c: &mut Client, g: &str, t: &str, partitions: &[i32]) -> OffsetDeleteResponse {
    let parts = partitions
        .iter()
        .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
        .collect();
    let request = OffsetDeleteRequest::default().with_group_id(group(g)).with_topics(vec![
        OffsetDeleteRequestTopic::default().with_name(topic(t)).with_partitions(parts),
    ]);
    c.call(ApiKey::OffsetDelete, 0, &request)
}

#[test]
fn offset_delete_removes_the_named_partitions_offsets() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("events", 3);
    let mut c = node.client();

    let unknown = delete(&mut c, "nobody", "events", &[0]);
    assert_eq!(unknown.error_code, GROUP_ID_NOT_FOUND);

    commit(&mut c, "readers", "events", &[0, 1, 2], 42);
    let r = delete(&mut c, "readers", "events", &[0, 2]);
    assert_eq!(r.error_code, 0, "{r:?}");
    let codes: Vec<_> =
        r.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code)).collect();
    assert_eq!(codes, [(0, 0), (2, 0)]);
    assert_eq!(r.topics[0].name, topic("events"));
    assert_eq!(fetch(&mut c, "readers", "events", &[0, 1, 2]), [-1, 42, -1]);

    // Deleting again is not an error: there is nothing left to delete.
    let again = delete(&mut c, "readers", "events", &[0]);
    assert_eq!((again.error_code, again.topics[0].partitions[0].error_code), (0, 0));
}
