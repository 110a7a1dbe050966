//! The Raft metadata quorum behind the broker's [`QuorumLog`] seam: [`RaftQuorum`] runs a
//! `strom_quorum::Quorum` whose peers talk over this node's gRPC port (`strom.v1.Quorum/Raft`,
//! [`GrpcTransport`]).
//!
//! Identity: a cluster's id is derived from its voters (ids and addresses), so nodes started
//! with voters lists that disagree form different clusters and refuse each other's messages
//! (INCONSISTENT_CLUSTER_ID, logged) instead of electing two leaders over one set of ids. The
//! id is kept in `<data_dir>/cluster-id` on first start and checked at every later start. A
//! node without `--voters` is a quorum of one; its id is random (or the id of the pre-quorum
//! `strom-metadata.toml`, whose topics are migrated into the log on first start).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_quorum::{
    LeaderInfo, MetadataError, MetadataRecord, NodeId, Quorum, QuorumConfig, QuorumError, RpcKind,
    Transport, TransportError,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::config::BrokerConfig;
use crate::error::{ApiError, BrokerError};
use crate::metadata::{ClusterMetadata, METADATA_FILE};
use crate::quorum::{ControllerView, Image, QuorumLog, legacy_records};

const CLUSTER_ID_FILE: &str = "cluster-id";
/// The address a quorum of one records for itself: it has no peers, and a stable value keeps
/// its identity the same across restarts on other ports.
const SOLO_ADDRESS: &str = "localhost:0";
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest a metadata proposal waits to commit.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A `strom_quorum::Quorum` as the broker's metadata log.
#[derive(Debug)]
pub(crate) struct RaftQuorum {
    quorum: Quorum,
    cluster_id: String,
    controller: watch::Receiver<ControllerView>,
    forward: tokio::task::JoinHandle<()>,
}

impl RaftQuorum {
    /// Starts this node's quorum member (a voter, or a learner when not among `voters`).
    pub(crate) async fn start(config: &BrokerConfig) -> Result<RaftQuorum, BrokerError> {
        let solo = config.voters.is_empty();
        let voters: BTreeMap<NodeId, String> = if solo {
            [(config.node_id, SOLO_ADDRESS.to_string())].into_iter().collect()
        } else {
            config.voters.clone()
        };
        let (host, port) = config.advertised(config.listen);
        let address = if solo { SOLO_ADDRESS.to_string() } else { format!("{host}:{port}") };
        let (cluster_id, legacy) = {
            let (dir, voters) = (config.data_dir.clone(), voters.clone());
            tokio::task::spawn_blocking(move || cluster_identity(&dir, solo, &voters))
                .await
                .map_err(|e| BrokerError::Internal(format!("reading the cluster id: {e}")))??
        };
        let transport = Arc::new(GrpcTransport {
            cluster_id: cluster_id.clone(),
            from: config.node_id,
            channels: parking_lot::Mutex::new(BTreeMap::new()),
        });
        let quorum_config =
            QuorumConfig::new(config.node_id, config.data_dir.join("quorum"), voters, address);
        let quorum = Quorum::start(quorum_config, None, transport)
            .await
            .map_err(|e| BrokerError::Metadata(format!("starting the metadata quorum: {e}")))?;
        let (view_tx, controller) = watch::channel(ControllerView::default());
        let forward = tokio::spawn(forward_leader(quorum.leader(), view_tx));
        let raft = RaftQuorum { quorum, cluster_id, controller, forward };
        if !legacy.is_empty() {
            raft.migrate(config, legacy).await?;
        }
        Ok(raft)
    }

    /// Writes the topics of a pre-quorum data directory into the fresh log (a quorum of one
    /// elects itself at once), then renames the old file so this happens once.
    async fn migrate(
        &self,
        config: &BrokerConfig,
        records: Vec<MetadataRecord>,
    ) -> Result<(), BrokerError> {
        let mut leader = self.quorum.leader();
        let waited =
            tokio::time::timeout(Duration::from_secs(30), leader.wait_for(|l| l.is_self)).await;
        if !matches!(waited, Ok(Ok(_))) {
            return Err(BrokerError::Metadata("the quorum of one elected no leader".into()));
        }
        let count = records.len();
        for record in records {
            match self.quorum.propose(record).await {
                Ok(Ok(())) | Ok(Err(MetadataError::TopicExists(_))) => {}
                Ok(Err(e)) => return Err(BrokerError::Metadata(format!("migrating: {e}"))),
                Err(e) => return Err(BrokerError::Metadata(format!("migrating: {e}"))),
            }
        }
        let from = config.data_dir.join(METADATA_FILE);
        let to = config.data_dir.join(format!("{METADATA_FILE}.migrated"));
        std::fs::rename(&from, &to).map_err(|source| BrokerError::Io {
            context: format!("renaming {}", from.display()),
            source,
        })?;
        tracing::info!(topics = count, "migrated {METADATA_FILE} into the metadata quorum");
        Ok(())
    }
}

async fn forward_leader(
    mut leader: watch::Receiver<LeaderInfo>,
    view: watch::Sender<ControllerView>,
) {
    loop {
        let info = leader.borrow_and_update().clone();
        view.send_replace(ControllerView {
            id: info.leader.as_ref().map(|(id, _)| *id),
            address: info.leader.map(|(_, addr)| addr),
        });
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// The cluster id (checked against `<data_dir>/cluster-id`) and, for a new quorum of one over a
/// pre-quorum data directory, the records that carry its topics over. Blocking.
fn cluster_identity(
    data_dir: &Path,
    solo: bool,
    voters: &BTreeMap<NodeId, String>,
) -> Result<(String, Vec<MetadataRecord>), BrokerError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(BrokerError::Io { context: format!("reading {}", path.display()), source });
        }
    };
    let derived = (!solo).then(|| voters_cluster_id(voters));
    if let Some(stored) = stored {
        if let Some(derived) = derived.filter(|d| *d != stored) {
            return Err(BrokerError::Config(format!(
                "{} belongs to cluster {stored}, but --voters {} describes cluster {derived}; \
                 start the node with the voters it was created with, or with an empty data dir",
                data_dir.display(),
                voters.iter().map(|(id, a)| format!("{id}@{a}")).collect::<Vec<_>>().join(",")
            )));
        }
        return Ok((stored, Vec::new()));
    }
    let (id, records) = match derived {
        Some(id) => {
            if data_dir.join(METADATA_FILE).exists() {
                return Err(BrokerError::Config(format!(
                    "{} holds a single-node broker's data; a cluster member needs an empty data \
                     directory (or start it without --voters)",
                    data_dir.display()
                )));
            }
            (id, Vec::new())
        }
        None => legacy_records(data_dir)?,
    };
    let id = if id.is_empty() { ClusterMetadata::new().cluster_id } else { id };
    crate::metadata::replace_file(data_dir, CLUSTER_ID_FILE, id.as_bytes())?;
    Ok((id, records))
}

/// Same voters (ids and addresses), same id; FNV-1a, stable across builds and platforms.
fn voters_cluster_id(voters: &BTreeMap<NodeId, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in voters {
        for b in format!("{id}@{addr};").bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("strom-{h:016x}")
}

fn quorum_error(e: QuorumError) -> ApiError {
    match e {
        QuorumError::NotLeader { leader } => ApiError::new(
            ErrorCode::NotController,
            match leader {
                Some((id, addr)) => format!("node {id} at {addr} is the active controller"),
                None => "no active controller right now; the quorum is electing one".into(),
            },
        ),
        QuorumError::Shutdown => {
            ApiError::new(ErrorCode::NotController, "the node is shutting down")
        }
        other => ApiError::new(ErrorCode::UnknownServerError, other.to_string()),
    }
}

impl QuorumLog for RaftQuorum {
    fn propose(
        &self,
        record: MetadataRecord,
    ) -> BoxFuture<'static, Result<Result<(), MetadataError>, ApiError>> {
        let quorum = self.quorum.clone();
        Box::pin(async move {
            // Without a majority a proposal would wait forever; the caller gets a clear
            // timeout instead, and the outcome is unknown (it may still commit later).
            match tokio::time::timeout(PROPOSE_TIMEOUT, quorum.propose(record)).await {
                Ok(result) => result.map_err(quorum_error),
                Err(_) => Err(ApiError::new(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "the metadata change did not commit within {PROPOSE_TIMEOUT:?}; a majority \
                         of the voters may be unreachable (outcome unknown)"
                    ),
                )),
            }
        })
    }

    fn image(&self) -> watch::Receiver<Arc<Image>> {
        self.quorum.image()
    }

    fn controller(&self) -> watch::Receiver<ControllerView> {
        self.controller.clone()
    }

    fn is_controller(&self) -> bool {
        self.quorum.leader().borrow().is_self
    }

    fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }

    fn raft_status(&self) -> crate::metrics::QuorumStatus {
        let metrics = self.quorum.metrics();
        let m = metrics.borrow();
        crate::metrics::QuorumStatus {
            controller: None,
            is_controller: self.is_controller(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |id| id.index),
        }
    }

    fn add_learner(
        &self,
        node: NodeId,
        address: String,
    ) -> BoxFuture<'static, Result<(), ApiError>> {
        let quorum = self.quorum.clone();
        Box::pin(async move { quorum.add_learner(node, address).await.map_err(quorum_error) })
    }

    fn handle_rpc(&self, kind: i32, payload: Bytes) -> BoxFuture<'static, Result<Bytes, ApiError>> {
        let quorum = self.quorum.clone();
        Box::pin(async move {
            let kind = rpc_kind_from(kind).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown Raft message kind {kind}"),
                )
            })?;
            quorum.handle_rpc(kind, payload).await.map_err(|e| match e {
                QuorumError::BadRequest(m) => ApiError::new(ErrorCode::InvalidRequest, m),
                other => quorum_error(other),
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let quorum = self.quorum.clone();
        self.forward.abort();
        Box::pin(async move {
            if let Err(e) = quorum.shutdown().await {
                tracing::warn!(error = %e, "stopping the metadata quorum");
            }
        })
    }
}

fn rpc_kind_to(kind: RpcKind) -> i32 {
    match kind {
        RpcKind::AppendEntries => 0,
        RpcKind::Vote => 1,
        RpcKind::InstallSnapshot => 2,
    }
}

fn rpc_kind_from(kind: i32) -> Option<RpcKind> {
    match kind {
        0 => Some(RpcKind::AppendEntries),
        1 => Some(RpcKind::Vote),
        2 => Some(RpcKind::InstallSnapshot),
        _ => None,
    }
}

/// Raft messages over the peers' `strom.v1.Quorum/Raft`, one lazily connected channel each.
#[derive(Debug)]
struct GrpcTransport {
    cluster_id: String,
    from: NodeId,
    channels: parking_lot::Mutex<BTreeMap<String, Channel>>,
}

impl GrpcTransport {
    fn channel(&self, address: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| TransportError(format!("peer address {address}: {e}")))?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        target: NodeId,
        address: &str,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let channel = self.channel(address);
        let request = pb::RaftRequest {
            cluster_id: self.cluster_id.clone(),
            from_node: self.from,
            kind: rpc_kind_to(kind),
            payload,
        };
        let address = address.to_string();
        Box::pin(async move {
            let mut client = pb::quorum_client::QuorumClient::new(channel?)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20);
            let reply = client
                .raft(request)
                .await
                .map_err(|s| {
                    TransportError(format!("node {target} at {address}: {}", s.message()))
                })?
                .into_inner();
            if reply.error_code != ErrorCode::None as i32 {
                if reply.error_code == ErrorCode::InconsistentClusterId as i32 {
                    tracing::error!(target, %address, "peer refused us: {}", reply.error_message);
                }
                return Err(TransportError(format!(
                    "node {target} at {address}: {}",
                    reply.error_message
                )));
            }
            Ok(reply.payload)
        })
    }
}
