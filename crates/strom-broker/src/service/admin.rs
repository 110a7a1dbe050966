//! The `strom.v1.Admin` service: topic administration and cluster metadata.

use std::sync::Arc;

use strom_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::broker::{Broker, MAX_TOPICS_PER_REQUEST};
use crate::error::ApiError;
use crate::peers::FORWARDED_HEADER;
use crate::service::error_fields;
use crate::types::{ConfigAlteration, NewPartitions, NewTopic, TopicDescription};

/// Serves topic administration and metadata of one [`Broker`].
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        AdminService { broker }
    }
}

fn check_count(count: usize) -> Result<(), Status> {
    if count > MAX_TOPICS_PER_REQUEST {
        return Err(Status::invalid_argument(format!(
            "a request may name at most {MAX_TOPICS_PER_REQUEST} topics, got {count}"
        )));
    }
    Ok(())
}

fn topic_result(name: String, result: &Result<(), ApiError>) -> pb::TopicResult {
    let (error_code, error_message) = error_fields(result);
    pb::TopicResult { name, error_code, error_message }
}

fn partition_descriptions(d: &TopicDescription) -> Vec<pb::PartitionDescription> {
    d.partitions
        .iter()
        .map(|p| pb::PartitionDescription {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            log_start_offset: p.log_start_offset,
            high_watermark: p.high_watermark,
            storage_error: p.storage_error.clone().unwrap_or_default(),
        })
        .collect()
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn alter_configs(
        &self,
        request: Request<pb::AlterConfigsRequest>,
    ) -> Result<Response<pb::AlterConfigsResponse>, Status> {
        let forward = !request.metadata().contains_key(FORWARDED_HEADER);
        let request = request.into_inner();
        let change = ConfigAlteration {
            topic: request.topic,
            set: request.set.into_iter().collect(),
            delete: request.delete,
        };
        let result =
            self.broker.alter_topic_config_with(change, request.validate_only, forward).await;
        let (error_code, error_message) = error_fields(&result);
        Ok(Response::new(pb::AlterConfigsResponse { error_code, error_message }))
    }

    async fn create_topics(
        &self,
        request: Request<pb::CreateTopicsRequest>,
    ) -> Result<Response<pb::CreateTopicsResponse>, Status> {
        let forward = !request.metadata().contains_key(FORWARDED_HEADER);
        let request = request.into_inner();
        check_count(request.topics.len())?;
        let mut topics = Vec::with_capacity(request.topics.len());
        // One at a time: the controller serialises them anyway, and a repeated name then
        // fails with TOPIC_ALREADY_EXISTS rather than racing.
        for topic in request.topics {
            let new = NewTopic {
                name: topic.name.clone(),
                num_partitions: topic.num_partitions,
                replication_factor: topic.replication_factor,
                configs: topic.configs.into_iter().collect(),
            };
            let result = self.broker.create_topic_with(new, request.validate_only, forward).await;
            topics.push(topic_result(topic.name, &result));
        }
        Ok(Response::new(pb::CreateTopicsResponse { topics }))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        let forward = !request.metadata().contains_key(FORWARDED_HEADER);
        let request = request.into_inner();
        check_count(request.topics.len())?;
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let name = topic.name.clone();
            // No lists: placed by the controller (Kafka's null `assignments`).
            let assignment = (!topic.assignments.is_empty())
                .then(|| topic.assignments.into_iter().map(|l| l.replicas).collect());
            let new = NewPartitions { topic: topic.name, count: topic.count, assignment };
            let result =
                self.broker.create_partitions_with(new, request.validate_only, forward).await;
            topics.push(topic_result(name, &result));
        }
        Ok(Response::new(pb::CreatePartitionsResponse { topics }))
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        let request = request.into_inner();
        let entries = request.partitions.iter().map(|p| (p.topic.as_str(), p.partition));
        crate::limits::check_partition_entries("delete records", entries)
            .map_err(|e| Status::invalid_argument(e.message))?;
        let timeout = match request.timeout_ms {
            0 => crate::DEFAULT_DELETE_RECORDS_TIMEOUT,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        // Concurrently: each waits for its own followers.
        let results =
            futures::future::join_all(request.partitions.into_iter().map(|p| async move {
                let result =
                    self.broker.delete_records(&p.topic, p.partition, p.offset, timeout).await;
                let (error_code, error_message) = error_fields(&result);
                pb::DeleteRecordsResult {
                    topic: p.topic,
                    partition: p.partition,
                    error_code,
                    error_message,
                    low_watermark: result.map_or(-1, |o| o.get()),
                }
            }))
            .await;
        Ok(Response::new(pb::DeleteRecordsResponse { partitions: results }))
    }

    async fn elect_leaders(
        &self,
        request: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        let forward = !request.metadata().contains_key(FORWARDED_HEADER);
        let request = request.into_inner();
        let election = i8::try_from(request.election_type)
            .ok()
            .and_then(crate::ElectionType::from_kafka)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown election type {} (0 preferred, 1 unclean)",
                    request.election_type
                ))
            })?;
        let partitions = (!request.all_partitions).then(|| {
            request.partitions.into_iter().map(|p| (p.topic, p.partition)).collect::<Vec<_>>()
        });
        if let Some(list) = &partitions {
            let entries = list.iter().map(|(t, p)| (t.as_str(), *p));
            crate::limits::check_partition_entries("elect leaders", entries)
                .map_err(|e| Status::invalid_argument(e.message))?;
        }
        let outcomes = match self.broker.elect_leaders_with(election, partitions, forward).await {
            Ok(outcomes) => outcomes,
            Err(e) => return Err(Status::unavailable(e.message)),
        };
        let partitions = outcomes
            .into_iter()
            .map(|o| {
                let (error_code, error_message) = error_fields(&o.result);
                pb::ElectionResult {
                    topic: o.topic,
                    partition: o.partition,
                    error_code,
                    error_message,
                    leader: o.result.unwrap_or(-1),
                }
            })
            .collect();
        Ok(Response::new(pb::ElectLeadersResponse { partitions }))
    }

    async fn delete_topics(
        &self,
        request: Request<pb::DeleteTopicsRequest>,
    ) -> Result<Response<pb::DeleteTopicsResponse>, Status> {
        let forward = !request.metadata().contains_key(FORWARDED_HEADER);
        let request = request.into_inner();
        check_count(request.names.len())?;
        let mut topics = Vec::with_capacity(request.names.len());
        for name in request.names {
            let result = self.broker.delete_topic_with(&name, forward).await;
            topics.push(topic_result(name, &result));
        }
        Ok(Response::new(pb::DeleteTopicsResponse { topics }))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let include_internal = request.into_inner().include_internal;
        let topics = self
            .broker
            .list_topics(include_internal)
            .into_iter()
            .map(|t| pb::TopicListing {
                name: t.name,
                num_partitions: t.num_partitions,
                internal: t.internal,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topics(
        &self,
        request: Request<pb::DescribeTopicsRequest>,
    ) -> Result<Response<pb::DescribeTopicsResponse>, Status> {
        let request = request.into_inner();
        check_count(request.names.len())?;
        // No names: every topic, internal ones included.
        let names = if request.names.is_empty() {
            self.broker.list_topics(true).into_iter().map(|t| t.name).collect()
        } else {
            request.names
        };
        let topics = names
            .into_iter()
            .map(|name| {
                let result = self.broker.describe_topic(&name);
                let (error_code, error_message) = error_fields(&result);
                match result {
                    Ok(d) => pb::TopicDescription {
                        partitions: partition_descriptions(&d),
                        name: d.name,
                        error_code,
                        error_message,
                        internal: d.internal,
                        configs: d.configs.into_iter().collect(),
                    },
                    Err(_) => pb::TopicDescription {
                        name,
                        error_code,
                        error_message,
                        ..Default::default()
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::DescribeTopicsResponse { topics }))
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let request = request.into_inner();
        check_count(request.topics.len())?;
        let view = self.broker.metadata(&request.topics).await;
        let topics = view
            .topics
            .into_iter()
            .map(|(name, result)| {
                let (error_code, error_message) = error_fields(&result);
                let partitions = result
                    .map(|d| {
                        d.partitions
                            .into_iter()
                            .map(|p| pb::PartitionMetadata {
                                partition: p.partition,
                                error_code: pb::ErrorCode::None as i32,
                                leader_id: p.leader,
                                leader_epoch: p.leader_epoch,
                                replicas: p.replicas,
                                isr: p.isr,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                pb::TopicMetadata { name, error_code, error_message, partitions }
            })
            .collect();
        Ok(Response::new(pb::MetadataResponse {
            cluster_id: view.cluster_id,
            controller_id: view.controller_id,
            brokers: view
                .brokers
                .into_iter()
                .map(|b| pb::BrokerInfo { node_id: b.node_id, host: b.host, port: b.port })
                .collect(),
            topics,
        }))
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let nodes = self
            .broker
            .describe_nodes()
            .into_iter()
            .map(|n| pb::NodeInfo {
                node_id: n.node_id,
                address: n.address,
                fenced: n.fenced,
                voter: n.voter,
                leader_partitions: i32::try_from(n.leader_partitions).unwrap_or(i32::MAX),
                under_replicated_partitions: i32::try_from(n.under_replicated_partitions)
                    .unwrap_or(i32::MAX),
                offline_partitions: i32::try_from(n.offline_partitions).unwrap_or(i32::MAX),
            })
            .collect();
        Ok(Response::new(pb::DescribeClusterResponse {
            cluster_id: self.broker.cluster_id().to_string(),
            controller_id: self.broker.controller().id.unwrap_or(-1),
            nodes,
        }))
    }
}
