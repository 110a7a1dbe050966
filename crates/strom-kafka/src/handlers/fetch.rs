//! Fetch and ListOffsets. Fetch is sessionless: the answer always carries session id 0, which
//! KIP-227 lets a broker use to decline a session, so clients keep sending full requests. The
//! records of each partition are the log's bytes, unchanged.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use strom_broker::{FetchParams, FetchPartitionParams};

use super::codes::{FETCH_SESSION_ID_NOT_FOUND, UNKNOWN_SERVER_ERROR};
use super::{Context, code};

pub(super) async fn handle(ctx: &Context, req: FetchRequest, _version: i16) -> FetchResponse {
    if req.session_id != 0 {
        // We never hand out a session, so any id is one we do not know.
        return FetchResponse::default().with_error_code(FETCH_SESSION_ID_NOT_FOUND);
    }
    let mut partitions = Vec::new();
    for topic in &req.topics {
        for p in &topic.partitions {
            partitions.push(FetchPartitionParams {
                topic: topic.topic.to_string(),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                // -1 (and versions before 9): the client does not know, nothing to check.
                current_leader_epoch: (p.current_leader_epoch >= 0)
                    .then_some(p.current_leader_epoch),
            });
        }
    }
    let params = FetchParams {
        max_wait: Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)),
        min_bytes: usize::try_from(req.min_bytes).unwrap_or(0),
        // A non-positive limit would answer nothing; treat it as "the broker's cap".
        max_bytes: usize::try_from(req.max_bytes).unwrap_or(0),
        partitions,
    };
    let mut answers = ctx.broker().fetch(params).await.into_iter();
    let responses = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let base = PartitionData::default().with_partition_index(p.partition);
                    match answers.next() {
                        Some(a) => {
                            let (error_code, records) = match a.records {
                                Ok(r) => (0, r),
                                Err(e) => (code(&e), Bytes::new()),
                            };
                            base.with_error_code(error_code)
                                .with_high_watermark(a.high_watermark)
                                // No transactions: everything below the high watermark is stable.
                                .with_last_stable_offset(a.high_watermark)
                                .with_log_start_offset(a.log_start_offset)
                                .with_records(Some(records))
                        }
                        None => base
                            .with_error_code(UNKNOWN_SERVER_ERROR)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                            .with_records(Some(Bytes::new())),
                    }
                })
                .collect();
            FetchableTopicResponse::default().with_topic(topic.topic).with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_session_id(0).with_responses(responses)
}

pub(super) async fn list_offsets(ctx: &Context, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let broker = ctx.broker();
    let refusal = &strom_broker::check_partition_entries(
        "list offsets",
        req.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition_index))),
    )
    .err();
    let topics = join_all(req.topics.into_iter().map(|topic| async move {
        let name = topic.name;
        let partitions = join_all(topic.partitions.into_iter().map(|p| {
            let name = &name;
            async move {
                let result = match refusal {
                    Some(e) => Err(e.clone()),
                    None => broker.list_offsets(name, p.partition_index, p.timestamp).await,
                };
                let base = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_leader_epoch(-1);
                match result {
                    Ok(l) => base.with_offset(l.offset).with_timestamp(l.timestamp),
                    Err(e) => base.with_error_code(code(&e)).with_offset(-1).with_timestamp(-1),
                }
            }
        }))
        .await;
        ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
    }))
    .await;
    ListOffsetsResponse::default().with_topics(topics)
}
