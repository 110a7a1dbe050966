//! Cross-checks the ConsumerProtocol codec against the kafka-protocol crate, byte for byte:
//! what Strom's consumer writes, a Java client reads, and the other way round.
// Helpers outside #[test] fns unwrap too: a panic in a test is a failed assertion.
#![allow(clippy::unwrap_used)]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;
use strom_coordinator::consumer_protocol::{Assignment, Subscription, TopicPartitions};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// Kafka's ConsumerProtocol: an i16 version header, then the message at that version.
fn kafka_subscription_bytes(sub: &Subscription, version: i16) -> Bytes {
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(sub.topics.iter().map(|t| StrBytes::from_string(t.clone())).collect())
        .with_user_data(sub.user_data.clone())
        .with_owned_partitions(
            sub.owned_partitions
                .iter()
                .map(|tp| {
                    OwnedTopic::default()
                        .with_topic(name(&tp.topic))
                        .with_partitions(tp.partitions.clone())
                })
                .collect(),
        )
        .with_generation_id(sub.generation_id)
        .with_rack_id(sub.rack_id.clone().map(StrBytes::from_string));
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn kafka_assignment_bytes(a: &Assignment, version: i16) -> Bytes {
    let msg = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(
            a.partitions
                .iter()
                .map(|tp| {
                    AssignedTopic::default()
                        .with_topic(name(&tp.topic))
                        .with_partitions(tp.partitions.clone())
                })
                .collect(),
        )
        .with_user_data(a.user_data.clone());
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn arb_topics() -> impl Strategy<Value = Vec<TopicPartitions>> {
    proptest::collection::vec(
        ("[a-z0-9._-]{1,20}", proptest::collection::vec(0i32..1000, 0..6))
            .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
        0..4,
    )
}

fn arb_subscription() -> impl Strategy<Value = Subscription> {
    (
        proptest::collection::vec("[a-z0-9._-]{1,20}", 0..5),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        arb_topics(),
        any::<i32>(),
        proptest::option::of("[a-z0-9]{0,6}"),
    )
        .prop_map(|(topics, user_data, owned_partitions, generation_id, rack_id)| {
            Subscription {
                topics,
                user_data: user_data.map(Bytes::from),
                owned_partitions,
                generation_id,
                rack_id,
            }
        })
}

proptest! {
    #[test]
    fn subscription_bytes_match_kafka_protocol(sub in arb_subscription(), version in 0i16..=3) {
        let ours = sub.encode(version).unwrap();
        prop_assert_eq!(&ours, &kafka_subscription_bytes(&sub, version));
        // And Kafka's decoder reads ours back.
        let mut body = ours.slice(2..);
        let decoded = ConsumerProtocolSubscription::decode(&mut body, version).unwrap();
        let topics: Vec<String> = decoded.topics.iter().map(|t| t.to_string()).collect();
        prop_assert_eq!(topics, sub.topics.clone());
        prop_assert_eq!(decoded.user_data, sub.user_data.clone());
    }

    #[test]
    fn assignment_bytes_match_kafka_protocol(
        partitions in arb_topics(),
        user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        version in 0i16..=3,
    ) {
        let a = Assignment { partitions, user_data: user_data.map(Bytes::from) };
        let kafka = kafka_assignment_bytes(&a, version);
        prop_assert_eq!(&a.encode(version).unwrap(), &kafka);
        prop_assert_eq!(Assignment::decode(&kafka).unwrap(), a);
    }
}

#[test]
fn decodes_what_kafka_protocol_writes() {
    let sub = Subscription {
        topics: vec!["orders".into(), "payments".into()],
        user_data: Some(Bytes::from_static(b"\x00\x01")),
        owned_partitions: vec![TopicPartitions { topic: "orders".into(), partitions: vec![0, 3] }],
        generation_id: 12,
        rack_id: Some("rack-a".into()),
    };
    let bytes = kafka_subscription_bytes(&sub, 3);
    assert_eq!(Subscription::decode(&bytes).unwrap(), sub);
}
