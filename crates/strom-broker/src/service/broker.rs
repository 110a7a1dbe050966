//! The `strom.v1.Broker` service: Produce, Fetch and ListOffsets.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::limits::check_partition_entries;
use crate::service::error_fields;
use crate::types::{FetchParams, FetchPartitionParams};

/// Serves the data plane of one [`Broker`].
#[derive(Debug, Clone)]
pub(crate) struct BrokerService {
    broker: Arc<Broker>,
}

impl BrokerService {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        BrokerService { broker }
    }

    /// Serves one Produce: appends every partition's records concurrently and answers per
    /// partition, in request order. A request naming too many partitions, or one twice, is
    /// refused whole (every partition INVALID_REQUEST).
    pub(crate) async fn produce_response(
        &self,
        request: pb::ProduceRequest,
    ) -> pb::ProduceResponse {
        let acks = i16::try_from(request.acks).unwrap_or(i16::MAX);
        let timeout = produce_timeout(request.timeout_ms);
        let broker = &self.broker;
        let refusal = &check_partition_entries(
            "produce",
            request
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition))),
        )
        .err();
        // Partitions are independent logs: append to all of them concurrently.
        let topics = join_all(request.topics.into_iter().map(|topic| async move {
            let name = topic.name;
            let partitions = join_all(topic.partitions.into_iter().map(|data| {
                let name = &name;
                async move {
                    let result = match refusal {
                        Some(e) => Err(e.clone()),
                        None => {
                            broker.produce(name, data.partition, data.records, acks, timeout).await
                        }
                    };
                    let (error_code, error_message) = error_fields(&result);
                    let outcome = result.ok();
                    pb::PartitionProduceResponse {
                        partition: data.partition,
                        error_code,
                        error_message,
                        base_offset: outcome.map_or(-1, |o| o.base_offset),
                        log_append_time_ms: outcome.map_or(-1, |o| o.log_append_time_ms),
                        log_start_offset: outcome.map_or(-1, |o| o.log_start_offset),
                    }
                }
            }))
            .await;
            pb::TopicProduceResponse { name, partitions }
        }))
        .await;
        pb::ProduceResponse { topics }
    }

    /// Serves one Fetch: long-polls the broker core and answers per topic, in request order.
    pub(crate) async fn fetch_response(&self, request: pb::FetchRequest) -> pb::FetchResponse {
        let mut partitions = Vec::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                partitions.push(FetchPartitionParams {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes as usize,
                    current_leader_epoch: p.current_leader_epoch,
                });
            }
        }
        let params = FetchParams {
            max_wait: Duration::from_millis(u64::from(request.max_wait_ms)),
            min_bytes: request.min_bytes as usize,
            max_bytes: request.max_bytes as usize,
            partitions,
        };
        let mut answers = self.broker.fetch(params).await.into_iter();
        // The core answers in request order; regroup by topic as the request was.
        let topics = request
            .topics
            .into_iter()
            .map(|topic| pb::FetchTopicResponse {
                partitions: topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let answer = answers.next();
                        let (error_code, error_message, records, high_watermark, log_start) =
                            match answer {
                                Some(a) => {
                                    let (code, message) = error_fields(&a.records);
                                    let records = a.records.unwrap_or_default();
                                    (code, message, records, a.high_watermark, a.log_start_offset)
                                }
                                None => (
                                    ErrorCode::UnknownServerError as i32,
                                    "missing fetch answer".to_string(),
                                    Default::default(),
                                    -1,
                                    -1,
                                ),
                            };
                        pb::FetchPartitionResponse {
                            partition: p.partition,
                            error_code,
                            error_message,
                            high_watermark,
                            log_start_offset: log_start,
                            records,
                        }
                    })
                    .collect(),
                name: topic.name,
            })
            .collect();
        pb::FetchResponse { topics }
    }
}

/// A produce request's `timeout_ms`; 0 (unset) means Kafka's default `request.timeout.ms`.
fn produce_timeout(timeout_ms: u32) -> Duration {
    match timeout_ms {
        0 => Duration::from_secs(30),
        ms => Duration::from_millis(u64::from(ms)),
    }
}

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        // The server answers Produce through `produce_route` (the request's frames are not
        // copied); this is the same answer for callers of the service itself.
        Ok(Response::new(self.produce_response(request.into_inner()).await))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        // The server answers Fetch through `fetch_route` (no copy of the records); this is
        // the same answer for callers of the service itself.
        Ok(Response::new(self.fetch_response(request.into_inner()).await))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let broker = &self.broker;
        let refusal = &check_partition_entries(
            "list offsets",
            request
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition))),
        )
        .err();
        let topics = join_all(request.topics.into_iter().map(|topic| async move {
            let name = topic.name;
            let partitions = join_all(topic.partitions.into_iter().map(|p| {
                let name = &name;
                async move {
                    let result = match refusal {
                        Some(e) => Err(e.clone()),
                        None => broker.list_offsets(name, p.partition, p.timestamp).await,
                    };
                    let (error_code, error_message) = error_fields(&result);
                    let listed = result.ok();
                    pb::ListOffsetsPartitionResponse {
                        partition: p.partition,
                        error_code,
                        error_message,
                        offset: listed.map_or(-1, |l| l.offset),
                        timestamp: listed.map_or(-1, |l| l.timestamp),
                    }
                }
            }))
            .await;
            pb::ListOffsetsTopicResponse { name, partitions }
        }))
        .await;
        Ok(Response::new(pb::ListOffsetsResponse { topics }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let result = self.broker.init_producer_id().await;
        let (error_code, error_message) = error_fields(&result);
        let (producer_id, producer_epoch) = result.unwrap_or((-1, -1));
        Ok(Response::new(pb::InitProducerIdResponse {
            error_code,
            error_message,
            producer_id,
            producer_epoch: i32::from(producer_epoch),
        }))
    }
}
