//! DeleteRecords (API 21): every named partition's records below an offset are deleted on its
//! leader, which answers once the in-sync replicas' log starts followed (the low watermark).
//! Partitions are served concurrently; a partition led elsewhere answers
//! NOT_LEADER_OR_FOLLOWER, so the client asks its leader (Kafka clients route by leader).

use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{Context, code};

pub(super) async fn delete_records(
    ctx: &Context,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let broker = ctx.broker();
    let refusal = &strom_broker::check_partition_entries(
        "delete records",
        req.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition_index))),
    )
    .err();
    // Negative timeouts wait not at all; the broker caps the wait (MAX_DELETE_RECORDS_WAIT).
    let wait = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    let topics = join_all(req.topics.into_iter().map(|topic| async move {
        let name = topic.name;
        let partitions = join_all(topic.partitions.into_iter().map(|p| {
            let name = &name;
            async move {
                let result = match refusal {
                    Some(e) => Err(e.clone()),
                    None => broker.delete_records(name, p.partition_index, p.offset, wait).await,
                };
                let base =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                match result {
                    Ok(low) => base.with_low_watermark(low.get()),
                    Err(e) => base.with_error_code(code(&e)).with_low_watermark(-1),
                }
            }
        }))
        .await;
        DeleteRecordsTopicResult::default().with_name(name).with_partitions(partitions)
    }))
    .await;
    DeleteRecordsResponse::default().with_topics(topics)
}
