//! DescribeCluster, OffsetForLeaderEpoch and InitProducerId.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use super::codes::{TRANSACTIONAL_ID_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION};
use super::{ALL_CLUSTER_OPERATIONS, Context, OPERATIONS_NOT_REQUESTED, code, str_bytes};

pub(super) async fn describe_cluster(
    ctx: &Context,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let ops = if req.include_cluster_authorized_operations {
        ALL_CLUSTER_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(ctx.broker().cluster_id()))
        .with_controller_id(BrokerId(ctx.broker().controller().id.unwrap_or(-1)))
        .with_brokers(
            ctx.broker()
                .kafka_brokers()
                .into_iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.node_id))
                        .with_host(str_bytes(&b.host))
                        .with_port(b.port)
                })
                .collect(),
        )
        .with_cluster_authorized_operations(ops)
}

/// One leader epoch per partition so far: any epoch up to the current one ends at the high
/// watermark (the end of the log a consumer may see), which is what a consumer validating its
/// position after a metadata change needs.
pub(super) fn offset_for_leader_epoch(
    ctx: &Context,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let described = ctx.broker().describe_topic(&t.topic);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    match &described {
                        Err(e) => {
                            base.with_error_code(code(e)).with_leader_epoch(-1).with_end_offset(-1)
                        }
                        Ok(d) => match d.partitions.iter().find(|x| x.partition == p.partition) {
                            None => base
                                .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                                .with_leader_epoch(-1)
                                .with_end_offset(-1),
                            Some(x) if p.leader_epoch > x.leader_epoch => {
                                // An epoch from the future: Kafka answers "undefined".
                                base.with_leader_epoch(-1).with_end_offset(-1)
                            }
                            Some(x) => base
                                .with_leader_epoch(x.leader_epoch)
                                .with_end_offset(x.high_watermark),
                        },
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// Hands out a fresh producer id with epoch 0 from the broker's allocator (the one gRPC's
/// InitProducerId uses), so an idempotent client can start; the partition logs check its
/// sequences. A transactional id is refused: transactions are not supported.
pub(super) async fn init_producer_id(
    ctx: &Context,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    match ctx.shared.broker.init_producer_id().await {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(code(&e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
