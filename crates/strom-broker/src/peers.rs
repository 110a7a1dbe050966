//! Calls from this node to its peers over their gRPC port: admin changes forwarded to the
//! active controller, and broker heartbeats. One lazily connected channel per peer address.
//!
//! A forwarded request carries the `strom-forwarded` header, and a node never forwards a
//! request that has it: two nodes with stale, crossed views of the controller answer
//! NOT_CONTROLLER instead of bouncing the request between them.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_quorum::BrokerRegistration;
use tonic::transport::{Channel, Endpoint};

use crate::error::ApiError;
use crate::quorum::ControllerView;
use crate::types::NewTopic;

/// gRPC metadata key marking a request forwarded by a peer.
pub(crate) const FORWARDED_HEADER: &str = "strom-forwarded";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 flow-control windows of peer channels (receive side: follower fetch responses).
pub(crate) const PEER_STREAM_WINDOW: u32 = 16 << 20;
pub(crate) const PEER_CONNECTION_WINDOW: u32 = 32 << 20;
/// Peer channels kept; more peers than this means something is wrong, and the cache restarts.
const MAX_PEERS: usize = 1024;

/// Channels to the other nodes.
#[derive(Debug)]
pub(crate) struct Peers {
    cluster_id: String,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub(crate) fn new(cluster_id: String) -> Self {
        Peers { cluster_id, channels: Mutex::new(HashMap::new()) }
    }

    /// The (lazily connected) channel to the node at `address`.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, ApiError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                ApiError::new(ErrorCode::UnknownServerError, format!("peer {address}: {e}"))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            // Follower fetches carry megabytes: h2's default 64 KiB windows would stall every
            // response on window updates.
            .initial_stream_window_size(PEER_STREAM_WINDOW)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW);
        let channel = endpoint.connect_lazy();
        if channels.len() >= MAX_PEERS {
            channels.clear();
        }
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    fn controller_channel(&self, controller: &ControllerView) -> Result<Channel, ApiError> {
        match &controller.address {
            Some(address) => self.channel(address),
            None => Err(ApiError::new(
                ErrorCode::NotController,
                "no active controller is known; the quorum may be electing one",
            )),
        }
    }

    fn forwarded<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        request
    }

    /// Creates a topic through the active controller.
    pub(crate) async fn create_topic(
        &self,
        controller: &ControllerView,
        topic: NewTopic,
    ) -> Result<(), ApiError> {
        let mut client = pb::admin_client::AdminClient::new(self.controller_channel(controller)?);
        let name = topic.name.clone();
        let request = pb::CreateTopicsRequest {
            topics: vec![pb::NewTopic {
                name: topic.name,
                num_partitions: topic.num_partitions,
                replication_factor: topic.replication_factor,
                configs: topic.configs.into_iter().collect(),
            }],
            validate_only: false,
        };
        let response = client.create_topics(Self::forwarded(request)).await.map_err(unreachable)?;
        first_result(response.into_inner().topics, &name)
    }

    /// Deletes a topic through the active controller.
    pub(crate) async fn delete_topic(
        &self,
        controller: &ControllerView,
        name: &str,
    ) -> Result<(), ApiError> {
        let mut client = pb::admin_client::AdminClient::new(self.controller_channel(controller)?);
        let request = pb::DeleteTopicsRequest { names: vec![name.to_string()] };
        let response = client.delete_topics(Self::forwarded(request)).await.map_err(unreachable)?;
        first_result(response.into_inner().topics, name)
    }

    /// Sends this node's heartbeat to the active controller.
    pub(crate) async fn heartbeat(
        &self,
        controller: &ControllerView,
        registration: BrokerRegistration,
    ) -> Result<(), ApiError> {
        let mut client = pb::quorum_client::QuorumClient::new(self.controller_channel(controller)?);
        let request = pb::BrokerHeartbeatRequest {
            cluster_id: self.cluster_id.clone(),
            node_id: registration.node_id,
            address: registration.address,
            kafka_address: registration.kafka_address.unwrap_or_default(),
            incarnation: registration.incarnation,
        };
        let response =
            client.broker_heartbeat(Self::forwarded(request)).await.map_err(unreachable)?;
        let response = response.into_inner();
        answered(response.error_code, response.error_message)
    }
}

impl Peers {
    /// The high watermarks of `partitions` as the node at `address` (their leader) reports
    /// them: a ListOffsets for "latest". Partitions the peer answers with an error are left
    /// out; a peer that does not answer within `patience` is an error.
    pub(crate) async fn high_watermarks(
        &self,
        address: &str,
        partitions: &[(String, i32)],
        patience: Duration,
    ) -> Result<Vec<((String, i32), i64)>, ApiError> {
        let mut client = pb::broker_client::BrokerClient::new(self.channel(address)?);
        let mut topics: Vec<pb::ListOffsetsTopic> = Vec::new();
        for (topic, partition) in partitions {
            let wanted = pb::ListOffsetsPartition {
                partition: *partition,
                timestamp: crate::partition::LATEST_TIMESTAMP,
            };
            match topics.iter_mut().find(|t| &t.name == topic) {
                Some(t) => t.partitions.push(wanted),
                None => topics
                    .push(pb::ListOffsetsTopic { name: topic.clone(), partitions: vec![wanted] }),
            }
        }
        let mut request = tonic::Request::new(pb::ListOffsetsRequest { topics });
        request.set_timeout(patience);
        let response = client.list_offsets(request).await.map_err(|status| {
            ApiError::new(
                ErrorCode::RequestTimedOut,
                format!("peer {address} did not list offsets: {}", status.message()),
            )
        })?;
        Ok(response
            .into_inner()
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .filter(|p| p.error_code == ErrorCode::None as i32 && p.offset >= 0)
                    .map(move |p| ((name.clone(), p.partition), p.offset))
            })
            .collect())
    }
}

impl Peers {
    /// Sends a partition leader's ISR change to the active controller. `Ok(true)` when a
    /// change was committed.
    pub(crate) async fn alter_partition(
        &self,
        controller: &ControllerView,
        request: pb::AlterPartitionRequest,
    ) -> Result<bool, ApiError> {
        let mut client =
            pb::replication_client::ReplicationClient::new(self.controller_channel(controller)?);
        let response =
            client.alter_partition(Self::forwarded(request)).await.map_err(unreachable)?;
        let response = response.into_inner();
        answered(response.error_code, response.error_message).map(|()| true)
    }

    /// Changes a topic's config through the active controller.
    pub(crate) async fn alter_configs(
        &self,
        controller: &ControllerView,
        change: crate::types::ConfigAlteration,
    ) -> Result<(), ApiError> {
        let mut client = pb::admin_client::AdminClient::new(self.controller_channel(controller)?);
        let request = pb::AlterConfigsRequest {
            topic: change.topic,
            set: change.set.into_iter().collect(),
            delete: change.delete,
            validate_only: false,
        };
        let response = client.alter_configs(Self::forwarded(request)).await.map_err(unreachable)?;
        let response = response.into_inner();
        answered(response.error_code, response.error_message)
    }

    /// Adds partitions to a topic through the active controller.
    pub(crate) async fn create_partitions(
        &self,
        controller: &ControllerView,
        request: crate::types::NewPartitions,
    ) -> Result<(), ApiError> {
        let mut client = pb::admin_client::AdminClient::new(self.controller_channel(controller)?);
        let name = request.topic.clone();
        let request =
            pb::CreatePartitionsRequest { topics: vec![increase(request)], validate_only: false };
        let response =
            client.create_partitions(Self::forwarded(request)).await.map_err(unreachable)?;
        first_result(response.into_inner().topics, &name)
    }

    /// Runs an election through the active controller: one result per partition, in order.
    pub(crate) async fn elect_leaders(
        &self,
        controller: &ControllerView,
        election: crate::elect_leaders::ElectionType,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<i32, ApiError>>, ApiError> {
        let mut client = pb::admin_client::AdminClient::new(self.controller_channel(controller)?);
        let request = pb::ElectLeadersRequest {
            election_type: i32::from(election.kafka_value()),
            partitions: partitions
                .iter()
                .map(|(topic, partition)| pb::ElectionPartition {
                    topic: topic.clone(),
                    partition: *partition,
                })
                .collect(),
            all_partitions: false,
        };
        let response = client.elect_leaders(Self::forwarded(request)).await.map_err(unreachable)?;
        let answers = response.into_inner().partitions;
        if answers.len() != partitions.len() {
            return Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!(
                    "the controller answered {} of {} partitions",
                    answers.len(),
                    partitions.len()
                ),
            ));
        }
        Ok(answers
            .into_iter()
            .map(|a| answered(a.error_code, a.error_message).map(|()| a.leader))
            .collect())
    }

    /// Asks the active controller to move leadership off `node_id` before it stops.
    pub(crate) async fn controlled_shutdown(
        &self,
        controller: &ControllerView,
        node_id: i32,
    ) -> Result<(), ApiError> {
        let mut client =
            pb::replication_client::ReplicationClient::new(self.controller_channel(controller)?);
        let request = pb::ControlledShutdownRequest {
            cluster_id: self.cluster_id.clone(),
            broker_id: node_id,
        };
        let response =
            client.controlled_shutdown(Self::forwarded(request)).await.map_err(unreachable)?;
        let response = response.into_inner();
        answered(response.error_code, response.error_message)
    }
}

/// A peer's answer as a result: `NONE` is `Ok`, any other code (unknown ones as
/// UNKNOWN_SERVER_ERROR) an error with the peer's message.
fn answered(code: i32, message: String) -> Result<(), ApiError> {
    match ErrorCode::try_from(code) {
        Ok(ErrorCode::None) => Ok(()),
        Ok(code) => Err(ApiError::new(code, message)),
        Err(_) => Err(ApiError::new(ErrorCode::UnknownServerError, message)),
    }
}

/// The protobuf form of a partition increase.
pub(crate) fn increase(request: crate::types::NewPartitions) -> pb::PartitionsIncrease {
    pb::PartitionsIncrease {
        name: request.topic,
        count: request.count,
        assignments: request
            .assignment
            .unwrap_or_default()
            .into_iter()
            .map(|replicas| pb::ReplicaList { replicas })
            .collect(),
    }
}

fn unreachable(status: tonic::Status) -> ApiError {
    ApiError::new(
        ErrorCode::NotController,
        format!("the controller could not be reached: {}", status.message()),
    )
}

fn first_result(results: Vec<pb::TopicResult>, name: &str) -> Result<(), ApiError> {
    let Some(result) = results.into_iter().next() else {
        return Err(ApiError::new(
            ErrorCode::UnknownServerError,
            format!("no answer for {name:?}"),
        ));
    };
    match ErrorCode::try_from(result.error_code) {
        Ok(ErrorCode::None) => Ok(()),
        Ok(code) => Err(ApiError::new(code, result.error_message)),
        Err(_) => Err(ApiError::new(ErrorCode::UnknownServerError, result.error_message)),
    }
}
