//! The `strom.v1.Replication` service: followers' fetches (served by this node's leaders),
//! and ISR changes and controlled shutdowns for the active controller (answered
//! NOT_CONTROLLER elsewhere, or forwarded when the caller is not a peer). Peers of another
//! cluster are refused.

use std::sync::Arc;

use strom_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::service::error_fields;

#[derive(Debug, Clone)]
pub(crate) struct ReplicationService {
    broker: Arc<Broker>,
}

impl ReplicationService {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        ReplicationService { broker }
    }

    fn foreign(&self, cluster_id: &str) -> Option<(i32, String)> {
        crate::service::foreign_peer(&self.broker, cluster_id)
    }

    /// Serves one follower fetch (a peer of another cluster is refused).
    pub(crate) async fn replica_fetch_response(
        &self,
        request: pb::ReplicaFetchRequest,
    ) -> pb::ReplicaFetchResponse {
        if let Some((error_code, error_message)) = self.foreign(&request.cluster_id) {
            return pb::ReplicaFetchResponse { error_code, error_message, partitions: Vec::new() };
        }
        crate::replication::serve_replica_fetch(&self.broker, request).await
    }
}

#[tonic::async_trait]
impl pb::replication_server::Replication for ReplicationService {
    async fn replica_fetch(
        &self,
        request: Request<pb::ReplicaFetchRequest>,
    ) -> Result<Response<pb::ReplicaFetchResponse>, Status> {
        // The server answers ReplicaFetch through `replica_fetch_route` (no copy of the
        // records); this is the same answer for callers of the service itself.
        Ok(Response::new(self.replica_fetch_response(request.into_inner()).await))
    }

    async fn alter_partition(
        &self,
        request: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        let request = request.into_inner();
        if let Some((error_code, error_message)) = self.foreign(&request.cluster_id) {
            return Ok(Response::new(pb::AlterPartitionResponse { error_code, error_message }));
        }
        // Only leaders send these, to the node they believe is the controller: a node that is
        // not answers NOT_CONTROLLER and the leader tries again on its next round.
        let result = self.broker.alter_partition_local(&request).await;
        let (error_code, error_message) = error_fields(&result);
        Ok(Response::new(pb::AlterPartitionResponse { error_code, error_message }))
    }

    async fn controlled_shutdown(
        &self,
        request: Request<pb::ControlledShutdownRequest>,
    ) -> Result<Response<pb::ControlledShutdownResponse>, Status> {
        let request = request.into_inner();
        if let Some((error_code, error_message)) = self.foreign(&request.cluster_id) {
            return Ok(Response::new(pb::ControlledShutdownResponse { error_code, error_message }));
        }
        let node_id = request.broker_id;
        let result = self
            .broker
            .controller_call(|reply| crate::controller::Command::ControlledShutdown {
                node_id,
                reply,
            })
            .await;
        let (error_code, error_message) = error_fields(&result);
        Ok(Response::new(pb::ControlledShutdownResponse { error_code, error_message }))
    }
}
