//! Produce: the records field of each partition is handed to the broker as the `Bytes` the
//! codec sliced out of the request frame, never decoded or copied here.

use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use strom_broker::ApiError;
use strom_proto::v1::ErrorCode;

use super::codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
use super::{Context, code, str_bytes};

/// `None` for acks=0: Kafka sends no answer at all.
pub(super) async fn handle(
    ctx: &Context,
    req: ProduceRequest,
    _version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let refusal: Option<(i16, String)> = if !matches!(acks, -1..=1) {
        Some((super::codes::INVALID_REQUIRED_ACKS, format!("acks must be -1, 0 or 1, got {acks}")))
    } else if req.transactional_id.is_some() {
        Some((TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactions are not supported".into()))
    } else {
        let entries = req
            .topic_data
            .iter()
            .flat_map(|t| t.partition_data.iter().map(|p| (t.name.as_str(), p.index)));
        strom_broker::check_partition_entries("produce", entries)
            .err()
            .map(|e| (code(&e), e.message))
    };
    let broker = ctx.broker();
    let refusal = &refusal;
    let timeout =
        std::time::Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0).max(1));
    let responses = join_all(req.topic_data.into_iter().map(|topic| async move {
        let name = topic.name;
        let partitions = join_all(topic.partition_data.into_iter().map(|data| {
            let name = &name;
            async move {
                let result = match (refusal, data.records) {
                    (Some((code, message)), _) => Err((*code, message.clone())),
                    (None, None) => Err((
                        super::codes::CORRUPT_MESSAGE,
                        "produce request without records".to_string(),
                    )),
                    (None, Some(records)) => broker
                        .produce(name, data.index, records, acks, timeout)
                        .await
                        .map_err(|e: ApiError| (code(&e), e.message)),
                };
                let base = PartitionProduceResponse::default().with_index(data.index);
                match result {
                    Ok(o) => base
                        .with_base_offset(o.base_offset)
                        .with_log_append_time_ms(o.log_append_time_ms)
                        .with_log_start_offset(o.log_start_offset),
                    Err((code, message)) => {
                        if code != ErrorCode::UnknownTopicOrPartition as i16 {
                            tracing::debug!(topic = %name.as_str(), partition = data.index, code, %message, "produce refused");
                        }
                        base.with_error_code(code)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(Some(str_bytes(&message)))
                    }
                }
            }
        }))
        .await;
        TopicProduceResponse::default().with_name(name).with_partition_responses(partitions)
    }))
    .await;
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}
