//! Where the cluster's metadata (topics, their settings, partition assignments and leader
//! epochs) survives restarts: the [`MetadataStore`] abstraction and its single-node file store.
//!
//! The controller is the only writer. It holds the image in memory and asks the store to make
//! every change durable before it takes effect. A Raft-replicated metadata log will be another
//! implementation of the same trait: `persist` then means "committed by the quorum".

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::MAX_PARTITIONS;
use crate::error::BrokerError;
use crate::topic::validate_topic_name;

/// Version of the image layout written by this build.
const IMAGE_VERSION: u32 = 1;
/// A metadata file larger than this is refused rather than read into memory.
const MAX_IMAGE_BYTES: u64 = 256 << 20;
/// File name of the image inside the data directory.
pub const METADATA_FILE: &str = "strom-metadata.toml";

/// The whole metadata image: what every broker needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Layout version, for future migrations.
    pub version: u32,
    /// Stable id of the cluster, generated when the image is first created.
    pub cluster_id: String,
    /// Every topic, in creation order.
    #[serde(default)]
    pub topics: Vec<TopicRecord>,
}

/// One topic as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Per-topic overrides exactly as the creator gave them (Kafka names).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Partitions `0..n`, in order.
    pub partitions: Vec<PartitionRecord>,
}

/// One partition's assignment as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Partition number.
    pub partition: i32,
    /// Node id of the leader.
    pub leader: i32,
    /// Epoch of the current leadership; grows on every leader change.
    pub leader_epoch: i32,
    /// Node ids holding a replica.
    pub replicas: Vec<i32>,
    /// Node ids in sync with the leader.
    pub isr: Vec<i32>,
}

impl ClusterMetadata {
    /// An empty image with a fresh cluster id.
    pub fn new() -> Self {
        ClusterMetadata {
            version: IMAGE_VERSION,
            cluster_id: generate_cluster_id(),
            topics: Vec::new(),
        }
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Rejects an image no broker could have written: bad names, duplicates, gaps.
    pub fn check(&self) -> Result<(), BrokerError> {
        let bad = |msg: String| Err(BrokerError::Metadata(msg));
        if self.version != IMAGE_VERSION {
            return bad(format!("unsupported metadata version {}", self.version));
        }
        let mut seen = HashSet::new();
        for topic in &self.topics {
            if let Err(e) = validate_topic_name(&topic.name) {
                return bad(format!("topic {:?}: {}", topic.name, e.message));
            }
            if !seen.insert(topic.name.as_str()) {
                return bad(format!("topic {:?} listed twice", topic.name));
            }
            if topic.partitions.is_empty() || topic.partitions.len() > MAX_PARTITIONS as usize {
                return bad(format!(
                    "topic {:?} has {} partitions",
                    topic.name,
                    topic.partitions.len()
                ));
            }
            for (i, p) in topic.partitions.iter().enumerate() {
                if usize::try_from(p.partition).ok() != Some(i) {
                    return bad(format!(
                        "topic {:?}: partition {} out of order",
                        topic.name, p.partition
                    ));
                }
                if p.leader_epoch < 0 {
                    return bad(format!("topic {:?}: negative leader epoch", topic.name));
                }
            }
        }
        Ok(())
    }
}

impl Default for ClusterMetadata {
    fn default() -> Self {
        Self::new()
    }
}

fn generate_cluster_id() -> String {
    // Unique enough to tell two clusters apart in logs; not a security token.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("strom-{mixed:016x}")
}

/// Durable storage of the metadata image. Called only from the controller, one call at a time.
pub trait MetadataStore: Send + std::fmt::Debug + 'static {
    /// The last image persisted, or `None` when there has never been one.
    fn load(&mut self) -> Result<Option<ClusterMetadata>, BrokerError>;

    /// Makes `image` the current image. Returns only once it survives a crash; on error the
    /// previous image is still the current one.
    fn persist(&mut self, image: &ClusterMetadata) -> Result<(), BrokerError>;
}

/// Keeps the image as a TOML file in the data directory, replaced atomically (write a temp
/// file, fsync it, rename it over the old one, fsync the directory).
#[derive(Debug)]
pub struct FileMetadataStore {
    dir: PathBuf,
}

impl FileMetadataStore {
    /// A store for `<dir>/strom-metadata.toml`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileMetadataStore { dir: dir.into() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(METADATA_FILE)
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> BrokerError {
    move |source| BrokerError::Io { context, source }
}

impl MetadataStore for FileMetadataStore {
    fn load(&mut self) -> Result<Option<ClusterMetadata>, BrokerError> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("opening {}", path.display()))(e)),
        };
        let mut raw = Vec::new();
        file.take(MAX_IMAGE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if raw.len() as u64 > MAX_IMAGE_BYTES {
            return Err(BrokerError::Metadata(format!(
                "{} is larger than {MAX_IMAGE_BYTES} bytes",
                path.display()
            )));
        }
        let text = String::from_utf8(raw)
            .map_err(|_| BrokerError::Metadata(format!("{} is not UTF-8", path.display())))?;
        let image: ClusterMetadata = toml::from_str(&text)
            .map_err(|e| BrokerError::Metadata(format!("{}: {e}", path.display())))?;
        image.check()?;
        Ok(Some(image))
    }

    fn persist(&mut self, image: &ClusterMetadata) -> Result<(), BrokerError> {
        let text = toml::to_string(image)
            .map_err(|e| BrokerError::Metadata(format!("encoding metadata: {e}")))?;
        replace_file(&self.dir, METADATA_FILE, text.as_bytes())
    }
}

/// Replaces `<dir>/<name>` atomically and durably (temp file, fsync, rename, fsync dir).
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), BrokerError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    file.write_all(bytes).map_err(io_err(format!("writing {}", tmp.display())))?;
    file.sync_all().map_err(io_err(format!("syncing {}", tmp.display())))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))?;
    sync_dir(dir)
}

/// Fsyncs a directory so a rename or create inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BrokerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing directory {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterMetadata {
        let mut image = ClusterMetadata::new();
        image.topics.push(TopicRecord {
            name: "orders.v1".into(),
            configs: [("retention.ms".to_string(), "1000".to_string())].into_iter().collect(),
            partitions: (0..3)
                .map(|p| PartitionRecord {
                    partition: p,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                })
                .collect(),
        });
        image
    }

    #[test]
    fn persist_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        let image = sample();
        store.persist(&image).unwrap();
        assert_eq!(FileMetadataStore::new(dir.path()).load().unwrap(), Some(image.clone()));
        // Replacing keeps only the newest image and leaves no temp file behind.
        let mut smaller = image;
        smaller.topics.clear();
        store.persist(&smaller).unwrap();
        assert_eq!(store.load().unwrap(), Some(smaller));
        assert!(!dir.path().join(format!("{METADATA_FILE}.tmp")).exists());
    }

    #[test]
    fn garbage_and_inconsistent_images_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::new(dir.path());
        fs::write(dir.path().join(METADATA_FILE), b"\x00\xffnot toml[[").unwrap();
        assert!(matches!(store.load(), Err(BrokerError::Metadata(_))));

        let mut image = sample();
        image.topics[0].partitions[1].partition = 7;
        store.persist(&image).unwrap();
        assert!(matches!(store.load(), Err(BrokerError::Metadata(_))));

        let mut image = sample();
        image.topics.push(image.topics[0].clone());
        store.persist(&image).unwrap();
        assert!(matches!(store.load(), Err(BrokerError::Metadata(_))));
    }
}
