//! Kafka's CreatePartitions over the wire: a topic grows, Metadata shows the new partitions at
//! once, records go to and come from them, and every refusal carries Kafka's error code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use strom_kafka::KafkaConfig;
use support::{Client, Node, topic};

fn increase(name: &str, count: i32) -> CreatePartitionsTopic {
    CreatePartitionsTopic::default().with_name(topic(name)).with_count(count)
}

fn create_partitions(
    c: &mut Client,
    version: i16,
    topics: Vec<CreatePartitionsTopic>,
    validate_only: bool,
) -> Vec<(String, i16)> {
    let request = CreatePartitionsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    let response: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, version, &request);
    response.results.iter().map(|r| (r.name.to_string(), r.error_code)).collect()
}

fn partition_count(c: &mut Client, name: &str) -> usize {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic(name)))]));
    let response: MetadataResponse = c.call(ApiKey::Metadata, 12, &request);
    response.topics[0].partitions.len()
}

#[test]
fn a_topic_grows_and_its_new_partitions_serve_records() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("g", 1);
    let mut c = node.client();
    for version in 0..=3 {
        let count = 2 + i32::from(version);
        let results = create_partitions(&mut c, version, vec![increase("g", count)], false);
        assert_eq!(results, vec![("g".to_string(), 0)], "v{version}");
        // Answered once this node applied it: Metadata shows the partitions at once.
        assert_eq!(partition_count(&mut c, "g"), count as usize);
    }
    // The newest partition takes and serves records.
    assert_eq!(node.produce("g", 4, "new"), 0);
    let fetched = node.rt.block_on(node.broker.fetch(strom_broker::FetchParams {
        max_wait: std::time::Duration::ZERO,
        min_bytes: 0,
        max_bytes: 1 << 20,
        partitions: vec![strom_broker::FetchPartitionParams {
            topic: "g".into(),
            partition: 4,
            fetch_offset: 0,
            max_bytes: 1 << 20,
            current_leader_epoch: None,
        }],
    }));
    assert!(!fetched[0].records.as_ref().unwrap().is_empty());
}

#[test]
fn refusals_carry_kafkas_error_codes_and_validate_only_changes_nothing() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("r", 2);
    let mut c = node.client();
    let code = |e: ResponseError| e.code();
    let cases = [
        (increase("r", 2), code(ResponseError::InvalidPartitions)),
        (increase("r", 1), code(ResponseError::InvalidPartitions)),
        (increase("r", 100_000), code(ResponseError::InvalidPartitions)),
        (increase("missing", 3), code(ResponseError::UnknownTopicOrPartition)),
        (increase("__consumer_offsets", 9), code(ResponseError::InvalidPartitions)),
        (
            // Node 7 is not part of the cluster.
            increase("r", 3).with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(7)]),
            ])),
            code(ResponseError::InvalidReplicaAssignment),
        ),
        (
            // Two lists for one new partition.
            increase("r", 3).with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
            ])),
            code(ResponseError::InvalidReplicaAssignment),
        ),
    ];
    for (topic, expected) in cases {
        let name = topic.name.to_string();
        let results = create_partitions(&mut c, 3, vec![topic], false);
        assert_eq!(results, vec![(name.clone(), expected)], "{name}");
    }
    // The same topic twice in one request: both refused.
    let twice = create_partitions(&mut c, 3, vec![increase("r", 3), increase("r", 4)], false);
    let invalid = code(ResponseError::InvalidRequest);
    assert_eq!(twice, vec![("r".into(), invalid), ("r".into(), invalid)]);
    // validate_only answers as the real thing would and changes nothing.
    assert_eq!(create_partitions(&mut c, 3, vec![increase("r", 5)], true), vec![("r".into(), 0)]);
    assert_eq!(partition_count(&mut c, "r"), 2);
    // A valid manual assignment on this node (id 1).
    let manual = increase("r", 3).with_assignments(Some(vec![
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
    ]));
    assert_eq!(create_partitions(&mut c, 3, vec![manual], false), vec![("r".into(), 0)]);
    assert_eq!(partition_count(&mut c, "r"), 3);
}
