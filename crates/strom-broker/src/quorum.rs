//! The broker's seam onto the metadata quorum: [`QuorumLog`] is what the broker needs of it
//! (propose a record, follow the committed image, know the active controller), whatever
//! replicates the log underneath.
//!
//! [`LocalQuorum`] is the quorum of one node without Raft: every proposal is applied at once and
//! the image is persisted (temp file, fsync, rename, fsync dir) before the proposal returns. It
//! serves embedded brokers and tests that want no network; a cluster uses the Raft quorum of
//! `strom-quorum` behind the same trait. The image of the single-node releases before the quorum
//! (`strom-metadata.toml`) is migrated into records on first start, keeping its cluster id.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strom_proto::v1::ErrorCode;
use strom_quorum::{
    MetadataError, MetadataRecord, MetadataState, NodeId, PartitionRecord as QPartition,
    TopicRecord as QTopic,
};
use tokio::sync::watch;

use crate::error::{ApiError, BrokerError};
use crate::metadata::{ClusterMetadata, FileMetadataStore, METADATA_FILE, MetadataStore, sync_dir};

/// Largest local image file read back.
const MAX_IMAGE_BYTES: u64 = 256 << 20;
/// File of [`LocalQuorum`]'s image inside `<data_dir>/quorum/`.
const LOCAL_IMAGE_FILE: &str = "local-image.json";

/// The active controller as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerView {
    /// Node id of the Raft leader, if one is known.
    pub id: Option<NodeId>,
    /// Its `host:port`, if known.
    pub address: Option<String>,
}

/// The committed metadata and how far this node has applied it.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// The state after applying the log up to `applied`.
    pub state: MetadataState,
    /// Index of the last applied record (grows with every change).
    pub applied: u64,
}

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
    /// A Raft message from a peer (`kind` and `payload` as strom-quorum encodes them).
    fn handle_rpc(
        &self,
        kind: i32,
        payload: bytes::Bytes,
    ) -> BoxFuture<'static, Result<bytes::Bytes, ApiError>>;
    /// Stops replication; later proposals fail.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

#[derive(Debug, Serialize, Deserialize)]
struct LocalImageFile {
    cluster_id: String,
    applied: u64,
    state: MetadataState,
}

/// The single-node quorum without Raft. See the module docs.
#[derive(Debug)]
pub struct LocalQuorum {
    dir: PathBuf,
    cluster_id: String,
    /// Serialises proposals; held across the fsync on purpose (one writer, like Raft's log).
    write: Mutex<()>,
    image: watch::Sender<Arc<Image>>,
    controller: watch::Sender<ControllerView>,
}

impl LocalQuorum {
    /// Opens (or creates) the image under `<data_dir>/quorum/`, migrating `strom-metadata.toml`
    /// if that is all there is. Blocking.
    pub fn open(data_dir: &Path, node_id: NodeId, address: String) -> Result<Self, BrokerError> {
        let dir = data_dir.join("quorum");
        fs::create_dir_all(&dir).map_err(|source| BrokerError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        let path = dir.join(LOCAL_IMAGE_FILE);
        let (cluster_id, image) = match read_image(&path)? {
            Some(file) => (file.cluster_id, Image { state: file.state, applied: file.applied }),
            None => {
                let (cluster_id, records) = legacy_records(data_dir)?;
                let mut state = MetadataState::default();
                for record in &records {
                    state.apply(record).map_err(|e| {
                        BrokerError::Metadata(format!("migrating {METADATA_FILE}: {e}"))
                    })?;
                }
                let image = Image { state, applied: records.len() as u64 };
                write_image(&dir, &cluster_id, &image)?;
                if !records.is_empty() {
                    tracing::info!(records = records.len(), "migrated {METADATA_FILE}");
                }
                (cluster_id, image)
            }
        };
        let (image, _) = watch::channel(Arc::new(image));
        let (controller, _) =
            watch::channel(ControllerView { id: Some(node_id), address: Some(address) });
        Ok(LocalQuorum { dir, cluster_id, write: Mutex::new(()), image, controller })
    }

    /// Applies and persists one record. Blocking (fsync).
    fn apply(&self, record: &MetadataRecord) -> Result<Result<(), MetadataError>, ApiError> {
        let _writer = self.write.lock();
        let current = self.image.borrow().clone();
        let mut state = current.state.clone();
        if let Err(e) = state.apply(record) {
            return Ok(Err(e));
        }
        let next = Image { state, applied: current.applied + 1 };
        write_image(&self.dir, &self.cluster_id, &next)
            .map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, e.to_string()))?;
        self.image.send_replace(Arc::new(next));
        Ok(Ok(()))
    }
}

impl QuorumLog for Arc<LocalQuorum> {
    fn propose(
        &self,
        record: MetadataRecord,
    ) -> BoxFuture<'static, Result<Result<(), MetadataError>, ApiError>> {
        let this = Arc::clone(self);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.apply(&record)).await.unwrap_or_else(|e| {
                Err(ApiError::new(ErrorCode::UnknownServerError, format!("metadata write: {e}")))
            })
        })
    }

    fn image(&self) -> watch::Receiver<Arc<Image>> {
        self.image.subscribe()
    }

    fn controller(&self) -> watch::Receiver<ControllerView> {
        self.controller.subscribe()
    }

    fn is_controller(&self) -> bool {
        true
    }

    fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }

    fn handle_rpc(
        &self,
        _kind: i32,
        _payload: bytes::Bytes,
    ) -> BoxFuture<'static, Result<bytes::Bytes, ApiError>> {
        Box::pin(async {
            Err(ApiError::new(ErrorCode::InvalidRequest, "this node runs a quorum of one"))
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

fn read_image(path: &Path) -> Result<Option<LocalImageFile>, BrokerError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BrokerError::Io { context: format!("opening {}", path.display()), source });
        }
    };
    let mut raw = Vec::new();
    file.take(MAX_IMAGE_BYTES + 1).read_to_end(&mut raw).map_err(|source| BrokerError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    if raw.len() as u64 > MAX_IMAGE_BYTES {
        return Err(BrokerError::Metadata(format!("{} is too large", path.display())));
    }
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| BrokerError::Metadata(format!("{}: {e}", path.display())))
}

fn write_image(dir: &Path, cluster_id: &str, image: &Image) -> Result<(), BrokerError> {
    let file = LocalImageFile {
        cluster_id: cluster_id.to_string(),
        applied: image.applied,
        state: image.state.clone(),
    };
    let bytes = serde_json::to_vec(&file)
        .map_err(|e| BrokerError::Metadata(format!("encoding the image: {e}")))?;
    let path = dir.join(LOCAL_IMAGE_FILE);
    let tmp = dir.join(format!("{LOCAL_IMAGE_FILE}.tmp"));
    let io = |context: String| move |source| BrokerError::Io { context, source };
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    out.write_all(&bytes).map_err(io(format!("writing {}", tmp.display())))?;
    out.sync_all().map_err(io(format!("syncing {}", tmp.display())))?;
    drop(out);
    fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
    sync_dir(dir)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionRecord, TopicRecord};

    #[tokio::test]
    async fn local_quorum_persists_and_migrates_the_legacy_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut legacy = ClusterMetadata::new();
        legacy.topics.push(TopicRecord {
            name: "old".into(),
            configs: BTreeMap::new(),
            partitions: vec![PartitionRecord {
                partition: 0,
                leader: 1,
                leader_epoch: 3,
                replicas: vec![1],
                isr: vec![1],
            }],
        });
        FileMetadataStore::new(dir.path()).persist(&legacy).expect("legacy image");
        let quorum = Arc::new(LocalQuorum::open(dir.path(), 1, "h:1".into()).expect("open"));
        assert_eq!(quorum.cluster_id(), legacy.cluster_id);
        let image = quorum.image().borrow().clone();
        assert_eq!(image.state.partition("old", 0).map(|p| p.leader_epoch), Some(3));
        let record = MetadataRecord::DeleteTopic { name: "old".into() };
        assert_eq!(quorum.propose(record.clone()).await, Ok(Ok(())));
        assert!(matches!(quorum.propose(record).await, Ok(Err(MetadataError::UnknownTopic(_)))));
        drop(quorum);
        let reopened = Arc::new(LocalQuorum::open(dir.path(), 1, "h:1".into()).expect("reopen"));
        assert!(reopened.image().borrow().state.topics().is_empty());
        assert_eq!(reopened.cluster_id(), legacy.cluster_id);
    }
}
