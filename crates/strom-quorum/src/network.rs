//! The network seam: the broker carries Raft RPCs between nodes over its internal gRPC service
//! by implementing [`Transport`]; the simulation implements it in memory. This module encodes
//! openraft's requests and replies (JSON), applies a per-RPC timeout, and maps failures onto
//! openraft's error types (a transport error is a network error, which openraft retries).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::metadata::NodeId;
use crate::types::{TypeConfig, node_id};

/// Which Raft RPC a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RpcKind {
    /// Log replication and heartbeats.
    AppendEntries,
    /// A candidate asking for a vote.
    Vote,
    /// One chunk of a snapshot.
    InstallSnapshot,
}

/// A peer could not be reached or did not answer; openraft retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quorum transport: {0}")]
pub struct TransportError(pub String);

/// Carries one Raft RPC to a peer. Implemented by the broker over gRPC, by the simulation in
/// memory.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends one Raft RPC (payload encoded by this crate) to `target` at `address`; returns
    /// the encoded reply. Errors = unreachable (openraft retries).
    fn call(
        &self,
        target: NodeId,
        address: &str,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>>;
}

/// openraft's network factory over a [`Transport`].
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    transport: Arc<dyn Transport>,
    rpc_timeout: Duration,
    retry_backoff: Duration,
}

impl NetworkFactory {
    /// A factory whose RPCs give up after `rpc_timeout` and which retries an unreachable peer
    /// every `retry_backoff`.
    pub fn new(
        transport: Arc<dyn Transport>,
        rpc_timeout: Duration,
        retry_backoff: Duration,
    ) -> NetworkFactory {
        NetworkFactory { transport, rpc_timeout, retry_backoff }
    }
}

/// The connection to one peer.
#[derive(Debug)]
pub struct PeerClient {
    target: u64,
    address: String,
    transport: Arc<dyn Transport>,
    rpc_timeout: Duration,
    retry_backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            address: node.addr.clone(),
            transport: Arc::clone(&self.transport),
            rpc_timeout: self.rpc_timeout,
            retry_backoff: self.retry_backoff,
        }
    }
}

/// Encodes a message for the wire.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(value).map(Bytes::from)
}

/// Decodes a message from the wire.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}

type RpcResult<R, E> = Result<R, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        action: RPCTypes,
        req: &Req,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let Some(target) = node_id(self.target) else {
            let e = TransportError(format!("node id {} out of range", self.target));
            return Err(RPCError::Network(NetworkError::new(&e)));
        };
        let call = self.transport.call(target, &self.address, kind, payload);
        let reply = match tokio::time::timeout(self.rpc_timeout, call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.target,
                    target: self.target,
                    timeout: self.rpc_timeout,
                }));
            }
            // Unreachable, not a network error: openraft backs off (see `backoff`) instead of
            // retrying a dead peer in a tight loop.
            Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
            Ok(Ok(reply)) => reply,
        };
        let reply: Result<Resp, RaftError<u64, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        self.call(RpcKind::AppendEntries, RPCTypes::AppendEntries, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(RpcKind::InstallSnapshot, RPCTypes::InstallSnapshot, &rpc).await
    }

    fn backoff(&self) -> Backoff {
        // A restarted peer should be caught up quickly; a dead one costs one call per period.
        Backoff::new(std::iter::repeat(self.retry_backoff))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(RpcKind::Vote, RPCTypes::Vote, &rpc).await
    }
}
