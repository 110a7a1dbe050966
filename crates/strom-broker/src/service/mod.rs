//! The gRPC services: thin translations between `strom.v1` messages and the [`Broker`] core
//! (and its group coordinator).
//!
//! Per-topic and per-partition failures travel in the response as an error code and message;
//! a gRPC `Status` error is reserved for a request that is malformed as a whole.

pub(crate) mod admin;
pub(crate) mod broker;
pub(crate) mod fetch_route;
pub(crate) mod group;
pub(crate) mod grpc_body;
pub(crate) mod produce_route;
pub(crate) mod quorum;
pub(crate) mod recovery_gate;
pub(crate) mod replica_fetch_route;
pub(crate) mod replication;
pub(crate) mod routes;

use strom_proto::v1::ErrorCode;

use crate::error::ApiError;

/// INCONSISTENT_CLUSTER_ID (code and message, logged) for a peer request of another cluster.
pub(crate) fn foreign_peer(
    broker: &crate::broker::Broker,
    cluster_id: &str,
) -> Option<(i32, String)> {
    (cluster_id != broker.cluster_id()).then(|| {
        tracing::warn!(peer_cluster = cluster_id, "refused a peer of another cluster");
        (
            ErrorCode::InconsistentClusterId as i32,
            format!(
                "this node belongs to cluster {}, the peer to {cluster_id}",
                broker.cluster_id()
            ),
        )
    })
}

/// The `(error_code, error_message)` pair of a response entry.
pub(crate) fn error_fields<T>(result: &Result<T, ApiError>) -> (i32, String) {
    match result {
        Ok(_) => (ErrorCode::None as i32, String::new()),
        Err(e) => (e.code as i32, e.message.clone()),
    }
}
