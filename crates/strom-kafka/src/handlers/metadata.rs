//! Metadata: brokers (this node with its Kafka listener) and topics, from the broker core's
//! cluster view.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::codes::UNKNOWN_TOPIC_ID;
use super::{
    ALL_CLUSTER_OPERATIONS, ALL_TOPIC_OPERATIONS, Context, OPERATIONS_NOT_REQUESTED, code,
    str_bytes, topic_name,
};

pub(super) async fn handle(ctx: &Context, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v1+: null asks for every topic, an empty list for none.
    let (names, all, by_id_only) = match &req.topics {
        None => (Vec::new(), true, 0),
        Some(topics) => {
            let names: Vec<String> =
                topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.to_string())).collect();
            let by_id_only = topics.len() - names.len();
            (names, false, by_id_only)
        }
    };
    let view =
        if all || !names.is_empty() { Some(ctx.broker().metadata(&names).await) } else { None };
    let (cluster_id, controller_id, view_topics) = match view {
        Some(v) => (v.cluster_id, v.controller_id, v.topics),
        None => (ctx.broker().cluster_id().to_string(), ctx.node_id(), Vec::new()),
    };
    let topic_ops = if req.include_topic_authorized_operations {
        ALL_TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let mut topics: Vec<MetadataResponseTopic> = view_topics
        .into_iter()
        .map(|(name, described)| {
            let base = MetadataResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_topic_authorized_operations(topic_ops);
            match described {
                Ok(d) => base.with_is_internal(d.internal).with_partitions(
                    d.partitions
                        .iter()
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_leader_id(BrokerId(p.leader))
                                .with_leader_epoch(p.leader_epoch)
                                .with_replica_nodes(
                                    p.replicas.iter().map(|&r| BrokerId(r)).collect(),
                                )
                                .with_isr_nodes(p.isr.iter().map(|&r| BrokerId(r)).collect())
                        })
                        .collect(),
                ),
                Err(e) => base.with_error_code(code(&e)),
            }
        })
        .collect();
    // Strom topics have no ids yet: a topic asked for by id only is unknown.
    topics.extend(
        (0..by_id_only).map(|_| MetadataResponseTopic::default().with_error_code(UNKNOWN_TOPIC_ID)),
    );
    let brokers = ctx
        .broker()
        .kafka_brokers()
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
        })
        .collect();
    let cluster_ops = if version <= 10 && req.include_cluster_authorized_operations {
        ALL_CLUSTER_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&cluster_id)))
        .with_controller_id(BrokerId(controller_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops)
}
