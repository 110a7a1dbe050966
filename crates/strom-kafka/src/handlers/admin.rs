//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs and
//! IncrementalAlterConfigs, onto the broker core's topic operations.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use strom_broker::{NewPartitions, NewTopic};

use super::codes::{INVALID_REQUEST, UNKNOWN_TOPIC_ID};
use super::{Context, code, result_code, result_message, str_bytes};

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub(super) async fn create_topics(
    ctx: &Context,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        // Manual assignments fix the partition count; every replica is this node anyway.
        let num_partitions = if t.num_partitions == -1 && !t.assignments.is_empty() {
            i32::try_from(t.assignments.len()).unwrap_or(i32::MAX)
        } else {
            t.num_partitions
        };
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
            .collect();
        let new = NewTopic {
            name: name.clone(),
            num_partitions,
            replication_factor: i32::from(t.replication_factor),
            configs: configs.clone(),
        };
        let result = ctx.broker().create_topic(new, req.validate_only).await;
        let mut answer = CreatableTopicResult::default()
            .with_name(t.name)
            .with_error_code(result_code(&result))
            .with_error_message(result_message(&result))
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if result.is_ok() && version >= 5 {
            answer.replication_factor = 1;
            answer.num_partitions = match num_partitions {
                -1 => ctx.broker().config().num_partitions,
                n => n,
            };
            if let Ok(d) = ctx.broker().describe_topic(&name) {
                answer.configs = Some(
                    d.configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                                .with_config_source(if configs.contains_key(k) {
                                    SOURCE_DYNAMIC_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                })
                        })
                        .collect(),
                );
            }
        }
        results.push(answer);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) async fn delete_topics(
    ctx: &Context,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let wanted: Vec<Option<TopicName>> = if version >= 6 {
        req.topics.into_iter().map(|t| t.name).collect()
    } else {
        req.topic_names.into_iter().map(Some).collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for name in wanted {
        let answer = match name {
            None => DeletableTopicResult::default()
                .with_error_code(UNKNOWN_TOPIC_ID)
                .with_error_message(Some(str_bytes("Strom topics have no ids; name the topic"))),
            Some(name) => {
                let result = ctx.broker().delete_topic(&name).await;
                DeletableTopicResult::default()
                    .with_name(Some(name))
                    .with_error_code(result_code(&result))
                    .with_error_message(result_message(&result))
            }
        };
        responses.push(answer);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Each topic through the controller, one at a time as Kafka's controller does. A topic named
/// twice in one request is refused for every occurrence (INVALID_REQUEST), as in Kafka.
pub(super) async fn create_partitions(
    ctx: &Context,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let repeated = req.topics.iter().filter(|other| other.name == t.name).count() > 1;
        let result = if repeated {
            Err((INVALID_REQUEST, format!("topic {:?} appears more than once", t.name.as_str())))
        } else {
            // Null (what clients send) or empty: placed by the controller.
            let assignment =
                t.assignments.as_ref().filter(|lists| !lists.is_empty()).map(|lists| {
                    lists.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect()
                });
            let request = NewPartitions { topic: t.name.to_string(), count: t.count, assignment };
            ctx.broker()
                .create_partitions(request, req.validate_only)
                .await
                .map_err(|e| (code(&e), e.message))
        };
        let answer = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        results.push(match result {
            Ok(()) => answer,
            Err((code, message)) => {
                answer.with_error_code(code).with_error_message(Some(str_bytes(&message)))
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Topic configs come from the broker's effective topic settings; broker configs are the few
/// broker settings with a Kafka name.
pub(super) fn describe_configs(
    ctx: &Context,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<Vec<String>> = r
                .configuration_keys
                .as_ref()
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let wanted = |k: &str| keys.as_ref().is_none_or(|keys| keys.iter().any(|x| x == k));
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entry = |k: &str, v: &str, source: i8| {
                DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(k))
                    .with_value(Some(str_bytes(v)))
                    .with_config_source(source)
            };
            match r.resource_type {
                RESOURCE_TOPIC => match ctx.broker().describe_topic(&r.resource_name) {
                    Ok(d) => base.with_configs(
                        d.configs
                            .iter()
                            .filter(|(k, _)| wanted(k))
                            .map(|(k, v)| entry(k, v, SOURCE_DEFAULT))
                            .collect(),
                    ),
                    Err(e) => base
                        .with_error_code(code(&e))
                        .with_error_message(Some(str_bytes(&e.message))),
                },
                RESOURCE_BROKER => {
                    let c = ctx.broker().config();
                    let settings = [
                        ("broker.id", c.node_id.to_string()),
                        ("num.partitions", c.num_partitions.to_string()),
                        ("log.segment.bytes", c.log_segment_bytes.to_string()),
                        ("log.retention.ms", c.log_retention_ms.to_string()),
                        ("log.retention.bytes", c.log_retention_bytes.to_string()),
                        ("message.max.bytes", c.message_max_bytes.to_string()),
                        ("socket.request.max.bytes", c.max_request_bytes.to_string()),
                        ("auto.create.topics.enable", c.auto_create_topics.to_string()),
                        (
                            "offsets.topic.num.partitions",
                            c.offsets_topic_num_partitions.to_string(),
                        ),
                    ];
                    base.with_configs(
                        settings
                            .iter()
                            .filter(|(k, _)| wanted(k))
                            .map(|(k, v)| entry(k, v, SOURCE_STATIC_BROKER).with_read_only(true))
                            .collect(),
                    )
                }
                other => base.with_error_code(INVALID_REQUEST).with_error_message(Some(str_bytes(
                    &format!("config resource type {other} is not supported"),
                ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Topic configs change through the controller, all of one resource's entries at once (SET and
/// DELETE; APPEND and SUBTRACT are for list-valued configs, which topics here do not have).
/// Broker resources are read-only: INVALID_REQUEST.
pub(super) async fn incremental_alter_configs(
    ctx: &Context,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let base = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let change = || {
            let mut change = strom_broker::ConfigAlteration {
                topic: r.resource_name.to_string(),
                ..Default::default()
            };
            for c in &r.configs {
                match (c.config_operation, &c.value) {
                    (0, Some(v)) => {
                        change.set.insert(c.name.to_string(), v.to_string());
                    }
                    (1, _) => change.delete.push(c.name.to_string()),
                    (op, _) => {
                        return Err((
                            INVALID_REQUEST,
                            format!(
                                "config operation {op} on {} is not supported (SET with a \
                                 value, or DELETE)",
                                c.name.as_str()
                            ),
                        ));
                    }
                }
            }
            Ok(change)
        };
        responses.push(
            match alter_resource(ctx, r.resource_type, change, req.validate_only).await {
                Ok(()) => base,
                Err((code, message)) => {
                    base.with_error_code(code).with_error_message(Some(str_bytes(&message)))
                }
            },
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// One resource of either AlterConfigs form: only topics can be altered (broker settings are
/// static); `change` builds the topic's alteration, which the broker validates as a whole and
/// applies through the controller. The error is Kafka's code and message.
async fn alter_resource(
    ctx: &Context,
    resource_type: i8,
    change: impl FnOnce() -> Result<strom_broker::ConfigAlteration, (i16, String)>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            INVALID_REQUEST,
            "only topic configs can be altered; broker settings are static".to_owned(),
        ));
    }
    let change = change()?;
    ctx.broker().alter_topic_config(change, validate_only).await.map_err(|e| (code(&e), e.message))
}

/// The legacy AlterConfigs (API 33, before KIP-339's incremental one): a topic's overrides
/// become exactly the given set, every override not named is removed (a null value removes
/// that one too). Broker resources are refused, as in IncrementalAlterConfigs.
pub(super) async fn alter_configs(ctx: &Context, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let base = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let change = || {
            let topic = r.resource_name.to_string();
            let described =
                ctx.broker().describe_topic(&topic).map_err(|e| (code(&e), e.message))?;
            let set: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            // Every setting not set here: the broker removes those that are overrides.
            let delete =
                described.configs.keys().filter(|k| !set.contains_key(*k)).cloned().collect();
            Ok(strom_broker::ConfigAlteration { topic, set, delete })
        };
        responses.push(
            match alter_resource(ctx, r.resource_type, change, req.validate_only).await {
                Ok(()) => base,
                Err((code, message)) => {
                    base.with_error_code(code).with_error_message(Some(str_bytes(&message)))
                }
            },
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}
