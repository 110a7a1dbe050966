//! The legacy AlterConfigs (API 33) over the wire: a topic's overrides become exactly the
//! given set (what is not named goes back to the default), broker resources are refused,
//! validate_only changes nothing, and an invalid value changes nothing either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strom_kafka::KafkaConfig;
use support::{Client, Node};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const INVALID_REQUEST: i16 = 42;
const INVALID_CONFIG: i16 = 40;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn alter(c: &mut Client, kind: i8, name: &str, set: &[(&str, &str)], validate: bool) -> i16 {
    let configs =
        set.iter().map(|(k, v)| AlterableConfig::default().with_name(s(k)).with_value(Some(s(v))));
    let request = AlterConfigsRequest::default().with_validate_only(validate).with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))
            .with_configs(configs.collect()),
    ]);
    let response: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, 2, &request);
    response.responses[0].error_code
}

/// The topic's effective value of `key`.
fn value(c: &mut Client, topic: &str, key: &str) -> String {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(topic))
            .with_configuration_keys(Some(vec![s(key)])),
    ]);
    let response: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &request);
    let entry = response.results[0].configs.iter().find(|e| e.name.as_str() == key).unwrap();
    entry.value.as_ref().unwrap().to_string()
}

#[test]
fn alter_configs_replaces_a_topics_overrides() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("audit", 1);
    let mut c = node.client();
    let default_retention = value(&mut c, "audit", "retention.ms");

    assert_eq!(alter(&mut c, TOPIC, "audit", &[("retention.ms", "3600000")], false), 0);
    assert_eq!(value(&mut c, "audit", "retention.ms"), "3600000");

    // A new set replaces the old one: retention.ms is no longer named, so it is reset.
    assert_eq!(alter(&mut c, TOPIC, "audit", &[("segment.ms", "60000")], false), 0);
    assert_eq!(value(&mut c, "audit", "segment.ms"), "60000");
    assert_eq!(value(&mut c, "audit", "retention.ms"), default_retention);

    // validate_only and invalid values change nothing.
    assert_eq!(alter(&mut c, TOPIC, "audit", &[("segment.ms", "5")], true), 0);
    assert_eq!(alter(&mut c, TOPIC, "audit", &[("segment.ms", "soon")], false), INVALID_CONFIG);
    assert_eq!(value(&mut c, "audit", "segment.ms"), "60000");

    assert_eq!(
        alter(&mut c, BROKER, "1", &[("log.retention.ms", "1")], false),
        INVALID_REQUEST,
        "broker settings are static"
    );
    assert_eq!(
        alter(&mut c, TOPIC, "nope", &[("retention.ms", "1")], false),
        UNKNOWN_TOPIC_OR_PARTITION
    );
}
