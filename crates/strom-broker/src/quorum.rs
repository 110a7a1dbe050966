//! The broker's seam onto the metadata quorum: [`QuorumLog`] is what the broker needs of it
//! (propose a record, follow the committed image, know the active controller), whatever
//! replicates the log underneath. The Raft quorum of `strom-quorum` implements it
//! (`raft.rs`); a test or an embedder may bring another.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use strom_quorum::{
    MetadataError, MetadataRecord, NodeId, PartitionRecord as QPartition, TopicRecord as QTopic,
};
use tokio::sync::watch;

use crate::error::{ApiError, BrokerError};
use crate::metadata::{ClusterMetadata, FileMetadataStore, MetadataStore};

/// The active controller as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerView {
    /// Node id of the Raft leader, if one is known.
    pub id: Option<NodeId>,
    /// Its `host:port`, if known.
    pub address: Option<String>,
}

/// The committed metadata and how far this node has applied it.
pub use strom_quorum::MetadataImage as Image;

/// What the broker needs of the metadata quorum.
pub trait QuorumLog: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `record` through the quorum; resolves once it is committed and applied here, with
    /// the state machine's verdict. `NOT_CONTROLLER`-like failures are `ApiError`s.
    fn propose(
        &self,
        record: MetadataRecord,
    ) -> BoxFuture<'static, Result<Result<(), MetadataError>, ApiError>>;
    /// The image after every applied record.
    fn image(&self) -> watch::Receiver<Arc<Image>>;
    /// The active controller, on every change.
    fn controller(&self) -> watch::Receiver<ControllerView>;
    /// Whether this node is the active controller now.
    fn is_controller(&self) -> bool;
    /// The cluster's id.
    fn cluster_id(&self) -> String;
    /// Active controller only: makes a broker-only node a learner of the log (a non-voting
    /// member), so it follows the metadata. Resolves once it has caught up.
    fn add_learner(
        &self,
        node: NodeId,
        address: String,
    ) -> BoxFuture<'static, Result<(), ApiError>>;
    /// A Raft message from a peer (`kind` and `payload` as strom-quorum encodes them).
    fn handle_rpc(
        &self,
        kind: i32,
        payload: bytes::Bytes,
    ) -> BoxFuture<'static, Result<bytes::Bytes, ApiError>>;
    /// Raft term and log indexes for metrics; zeros when the implementation has none.
    fn raft_status(&self) -> crate::metrics::QuorumStatus {
        crate::metrics::QuorumStatus::default()
    }
    /// Stops replication; later proposals fail.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

/// The cluster id and topics of a pre-quorum data directory as metadata records (none, with a
/// fresh id, when there is no `strom-metadata.toml`).
pub(crate) fn legacy_records(
    data_dir: &Path,
) -> Result<(String, Vec<MetadataRecord>), BrokerError> {
    let Some(legacy) = FileMetadataStore::new(data_dir).load()? else {
        return Ok((ClusterMetadata::new().cluster_id, Vec::new()));
    };
    let records = legacy
        .topics
        .iter()
        .map(|t| {
            MetadataRecord::CreateTopic(QTopic {
                name: t.name.clone(),
                topic_id: format!("{}-{}", legacy.cluster_id, t.name),
                configs: t.configs.clone().into_iter().collect::<BTreeMap<_, _>>(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| QPartition {
                        partition: p.partition,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: 0,
                    })
                    .collect(),
            })
        })
        .collect();
    Ok((legacy.cluster_id, records))
}
