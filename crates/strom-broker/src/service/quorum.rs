//! The `strom.v1.Quorum` service: node-to-node traffic. Raft messages go to the quorum (once the
//! Raft quorum is wired); broker heartbeats go to this node's controller, which answers
//! NOT_CONTROLLER when it is not the active one. Peers of another cluster are refused.

use std::sync::Arc;

use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_quorum::BrokerRegistration;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::service::error_fields;

#[derive(Debug, Clone)]
pub(crate) struct QuorumService {
    broker: Arc<Broker>,
}

impl QuorumService {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        QuorumService { broker }
    }

    fn foreign(&self, cluster_id: &str) -> Option<(i32, String)> {
        crate::service::foreign_peer(&self.broker, cluster_id)
    }
}

#[tonic::async_trait]
impl pb::quorum_server::Quorum for QuorumService {
    async fn raft(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let request = request.into_inner();
        if let Some((error_code, error_message)) = self.foreign(&request.cluster_id) {
            return Ok(Response::new(pb::RaftReply {
                error_code,
                error_message,
                payload: Default::default(),
            }));
        }
        match self.broker.raft_rpc(request.kind, request.payload).await {
            Ok(payload) => Ok(Response::new(pb::RaftReply {
                error_code: ErrorCode::None as i32,
                error_message: String::new(),
                payload,
            })),
            Err(e) => Ok(Response::new(pb::RaftReply {
                error_code: e.code as i32,
                error_message: e.message,
                payload: Default::default(),
            })),
        }
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let request = request.into_inner();
        if let Some((error_code, error_message)) = self.foreign(&request.cluster_id) {
            return Ok(Response::new(pb::BrokerHeartbeatResponse { error_code, error_message }));
        }
        let registration = BrokerRegistration {
            node_id: request.node_id,
            address: request.address,
            kafka_address: (!request.kafka_address.is_empty()).then_some(request.kafka_address),
            incarnation: request.incarnation,
        };
        let result = self.broker.broker_heartbeat(registration).await;
        let (error_code, error_message) = error_fields(&result);
        Ok(Response::new(pb::BrokerHeartbeatResponse { error_code, error_message }))
    }
}
