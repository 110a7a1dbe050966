//! Fetch and ListOffsets. Fetch serves KIP-227 sessions (`fetch_session.rs` decides, this
//! module fetches and shapes the answer): epoch -1 is sessionless, a full request (epoch 0)
//! gets a session id when the cache has room, and an incremental one names only changed and
//! forgotten partitions and is answered only with partitions that have news. The records of
//! each partition are the log's bytes, unchanged.

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

use super::codes::UNKNOWN_SERVER_ERROR;
use super::{Context, code, topic_name};
use crate::fetch_session::{Answered, FetchPosition, NO_SESSION, PartitionKey, Plan};

pub(super) async fn handle(ctx: &Context, req: FetchRequest, _version: i16) -> FetchResponse {
    // Before v7 the fields are absent and decode as session 0, epoch -1: sessionless.
    let changed: Vec<(PartitionKey, FetchPosition)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let position = FetchPosition {
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                };
                ((t.topic.to_string(), p.partition), position)
            })
        })
        .collect();
    let forgotten: Vec<PartitionKey> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
        .collect();
    let now = ctx.shared.now_ms();
    let plan = ctx.shared.fetch_sessions.lock().begin(
        req.session_id,
        req.session_epoch,
        &changed,
        &forgotten,
        now,
    );
    let to_fetch = match &plan {
        Plan::Error(error) => {
            tracing::debug!(peer = %ctx.peer, session_id = req.session_id,
                epoch = req.session_epoch, error, "fetch session refused");
            return FetchResponse::default().with_error_code(*error).with_session_id(NO_SESSION);
        }
        Plan::Incremental { partitions, .. } => partitions.clone(),
        Plan::Sessionless | Plan::Full => changed,
    };
    let params = FetchParams {
        max_wait: Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)),
        min_bytes: usize::try_from(req.min_bytes).unwrap_or(0),
        // A non-positive limit would answer nothing; treat it as "the broker's cap".
        max_bytes: usize::try_from(req.max_bytes).unwrap_or(0),
        partitions: to_fetch
            .iter()
            .map(|((topic, partition), position)| FetchPartitionParams {
                topic: topic.clone(),
                partition: *partition,
                fetch_offset: position.fetch_offset,
                max_bytes: usize::try_from(position.partition_max_bytes).unwrap_or(0),
                // -1 (and versions before 9): the client does not know, nothing to check.
                current_leader_epoch: (position.current_leader_epoch >= 0)
                    .then_some(position.current_leader_epoch),
            })
            .collect(),
    };
    let mut fetched = ctx.broker().fetch(params).await.into_iter();
    let answers: Vec<PartitionData> = to_fetch
        .iter()
        .map(|((_, partition), _)| {
            let base = PartitionData::default().with_partition_index(*partition);
            match fetched.next() {
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
    let answered = |d: &PartitionData| Answered {
        records_len: d.records.as_ref().map_or(0, Bytes::len),
        error_code: d.error_code,
        high_watermark: d.high_watermark,
        log_start_offset: d.log_start_offset,
    };
    let (session_id, keep) = match plan {
        Plan::Full => {
            let entries = to_fetch
                .iter()
                .zip(&answers)
                .map(|((key, position), d)| (key.clone(), *position, answered(d)))
                .collect();
            let id = ctx.shared.fetch_sessions.lock().create(entries, ctx.shared.now_ms());
            (id, vec![true; answers.len()])
        }
        Plan::Incremental { session_id, .. } => {
            let entries: Vec<(PartitionKey, Answered)> = to_fetch
                .iter()
                .zip(&answers)
                .map(|((key, _), d)| (key.clone(), answered(d)))
                .collect();
            (session_id, ctx.shared.fetch_sessions.lock().filter(session_id, &entries))
        }
        Plan::Sessionless | Plan::Error(_) => (NO_SESSION, vec![true; answers.len()]),
    };
    // Consecutive partitions of one topic share an entry, which keeps a full request's shape.
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    for ((((topic, _), _), data), keep) in to_fetch.iter().zip(answers).zip(keep) {
        if !keep {
            continue;
        }
        match responses.last_mut() {
            Some(last) if last.topic.as_str() == topic.as_str() => last.partitions.push(data),
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![data]),
            ),
        }
    }
    FetchResponse::default().with_session_id(session_id).with_responses(responses)
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
