//! The controller: the single writer of cluster metadata. It runs on its own thread, takes
//! topic changes one at a time from a bounded queue, makes each durable through the
//! [`MetadataStore`] and only then publishes it to the registry that requests read.
//!
//! Serialising changes here (instead of locking around them) is what a Raft-backed controller
//! will do too: it will append each change to the metadata log and apply it once committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strom_format::LeaderEpoch;
use strom_proto::v1::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::{ApiError, BrokerError};
use crate::metadata::{ClusterMetadata, MetadataStore, PartitionRecord, TopicRecord};
use crate::partition::{Partition, partition_dir};
use crate::topic::{Registry, Topic, validate_topic_name};

/// Admin requests waiting for the controller beyond this many are refused with back-pressure.
const QUEUE_LEN: usize = 256;
/// How long deletion or shutdown waits for in-flight requests to let go of a partition.
pub(crate) const RECLAIM_PATIENCE: Duration = Duration::from_secs(10);

pub(crate) enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        configs: BTreeMap<String, String>,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    DeleteTopic {
        name: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
}

/// The controller's state, owned by its thread.
#[derive(Debug)]
pub(crate) struct Controller {
    config: Arc<BrokerConfig>,
    registry: Arc<Registry>,
    store: Box<dyn MetadataStore>,
    image: ClusterMetadata,
}

impl Controller {
    /// Loads the persisted image (or creates one) and opens every partition log in it,
    /// publishing the topics to `registry`. Blocking.
    pub(crate) fn load(
        config: Arc<BrokerConfig>,
        registry: Arc<Registry>,
        mut store: Box<dyn MetadataStore>,
    ) -> Result<Controller, BrokerError> {
        let image = match store.load()? {
            Some(image) => image,
            None => {
                let image = ClusterMetadata::new();
                store.persist(&image)?;
                tracing::info!(cluster_id = %image.cluster_id, "created new cluster metadata");
                image
            }
        };
        for record in &image.topics {
            let topic_config = TopicConfig::resolve(&config, &record.configs).map_err(|e| {
                BrokerError::Metadata(format!("topic {:?}: {}", record.name, e.message))
            })?;
            let mut partitions = Vec::with_capacity(record.partitions.len());
            for p in &record.partitions {
                let partition = Partition::open(
                    &config.data_dir,
                    &record.name,
                    p.partition,
                    topic_config.log_config(),
                    LeaderEpoch::new(p.leader_epoch),
                )?;
                partitions.push(Arc::new(partition));
            }
            tracing::info!(topic = %record.name, partitions = partitions.len(), "loaded topic");
            registry.insert(Arc::new(Topic {
                name: record.name.clone(),
                config: topic_config,
                partitions,
            }));
        }
        warn_about_orphans(&config.data_dir, &image);
        Ok(Controller { config, registry, store, image })
    }

    pub(crate) fn cluster_id(&self) -> &str {
        &self.image.cluster_id
    }

    fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.blocking_recv() {
            match command {
                Command::CreateTopic { name, partitions, configs, reply } => {
                    let result = self.create_topic(&name, partitions, configs);
                    let _ = reply.send(result);
                }
                Command::DeleteTopic { name, reply } => {
                    let result = self.delete_topic(&name);
                    let _ = reply.send(result);
                }
            }
        }
        tracing::debug!("controller stopped");
    }

    fn create_topic(
        &mut self,
        name: &str,
        count: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        if self.registry.contains(name) || self.image.topic(name).is_some() {
            return Err(topic_exists(name));
        }
        let topic_config = TopicConfig::resolve(&self.config, &configs)?;
        let node = self.config.node_id;
        let epoch = LeaderEpoch::new(0);
        let mut partitions = Vec::new();
        for id in 0..count {
            let dir = partition_dir(&self.config.data_dir, name, id);
            // Not in the metadata, so whatever is there is left from an interrupted delete
            // and must not resurface as this topic's records.
            if dir.exists() {
                tracing::warn!(dir = %dir.display(), "removing stale partition directory");
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    discard(partitions);
                    return Err(ApiError::storage(format!("removing {}: {e}", dir.display())));
                }
            }
            match Partition::open(&self.config.data_dir, name, id, topic_config.log_config(), epoch)
            {
                Ok(p) => partitions.push(p),
                Err(e) => {
                    tracing::error!(topic = name, error = %e, "creating partition failed");
                    discard(partitions);
                    return Err(ApiError::storage(e.to_string()));
                }
            }
        }
        let mut image = self.image.clone();
        image.topics.push(TopicRecord {
            name: name.to_string(),
            configs,
            partitions: (0..count)
                .map(|partition| PartitionRecord {
                    partition,
                    leader: node,
                    leader_epoch: epoch.get(),
                    replicas: vec![node],
                    isr: vec![node],
                })
                .collect(),
        });
        if let Err(e) = self.store.persist(&image) {
            tracing::error!(topic = name, error = %e, "persisting metadata failed");
            discard(partitions);
            return Err(ApiError::storage(e.to_string()));
        }
        self.image = image;
        self.registry.insert(Arc::new(Topic {
            name: name.to_string(),
            config: topic_config,
            partitions: partitions.into_iter().map(Arc::new).collect(),
        }));
        tracing::info!(topic = name, partitions = count, "created topic");
        Ok(())
    }

    fn delete_topic(&mut self, name: &str) -> Result<(), ApiError> {
        if self.image.topic(name).is_none() {
            return Err(ApiError::unknown_topic(name));
        }
        let mut image = self.image.clone();
        image.topics.retain(|t| t.name != name);
        // Durable first: a crash after this point leaves only orphan directories, which the
        // next create of the name clears; never a topic whose logs are half gone.
        if let Err(e) = self.store.persist(&image) {
            tracing::error!(topic = name, error = %e, "persisting metadata failed");
            return Err(ApiError::storage(e.to_string()));
        }
        self.image = image;
        if let Some(topic) = self.registry.remove(name) {
            for p in &topic.partitions {
                p.mark_deleted();
            }
            let deadline = Instant::now() + RECLAIM_PATIENCE;
            for reclaimed in dismantle(topic, deadline) {
                match reclaimed {
                    Ok(p) => {
                        let dir = p.dir().to_path_buf();
                        if let Err(e) = p.into_log().delete() {
                            tracing::warn!(dir = %dir.display(), error = %e, "deleting log failed");
                            remove_dir(&dir);
                        }
                    }
                    Err(p) => {
                        tracing::warn!(
                            partition = p.name(),
                            "partition still in use after {RECLAIM_PATIENCE:?}; removing its files"
                        );
                        remove_dir(p.dir());
                    }
                }
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }
}

/// Partition directories no topic owns are left from a delete interrupted by a crash. They are
/// reported, not removed: deleting data on a guess is worse than a warning.
fn warn_about_orphans(data_dir: &std::path::Path, image: &ClusterMetadata) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((topic, partition)) = name.rsplit_once('-') else { continue };
        let owned = image
            .topic(topic)
            .is_some_and(|t| partition.parse::<usize>().is_ok_and(|p| p < t.partitions.len()));
        let looks_like_partition = entry.path().is_dir()
            && !partition.is_empty()
            && partition.bytes().all(|b| b.is_ascii_digit())
            && validate_topic_name(topic).is_ok();
        if looks_like_partition && !owned {
            tracing::warn!(
                dir = %entry.path().display(),
                "partition directory belongs to no topic (interrupted delete?); leaving it"
            );
        }
    }
}

fn topic_exists(name: &str) -> ApiError {
    ApiError::new(ErrorCode::TopicAlreadyExists, format!("topic {name:?} already exists"))
}

fn remove_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing directory failed");
        }
    }
}

/// Deletes the logs of partitions created for a topic that then failed to come into being.
fn discard(partitions: Vec<Partition>) {
    for p in partitions {
        let dir = p.dir().to_path_buf();
        if let Err(e) = p.into_log().delete() {
            tracing::warn!(dir = %dir.display(), error = %e, "discarding log failed");
        }
    }
}

/// Takes sole ownership of `arc`, waiting until `deadline` for other holders (requests in
/// flight) to drop their clones. Blocking.
pub(crate) fn reclaim<T>(mut arc: Arc<T>, deadline: Instant) -> Result<T, Arc<T>> {
    loop {
        match Arc::try_unwrap(arc) {
            Ok(value) => return Ok(value),
            Err(back) if Instant::now() >= deadline => return Err(back),
            Err(back) => {
                arc = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Takes a topic out of service and returns its partitions, owned where nobody else holds
/// them any more. Blocking.
pub(crate) fn dismantle(
    topic: Arc<Topic>,
    deadline: Instant,
) -> Vec<Result<Partition, Arc<Partition>>> {
    let partitions = match reclaim(topic, deadline) {
        Ok(topic) => topic.partitions,
        Err(shared) => shared.partitions.clone(),
    };
    partitions.into_iter().map(|p| reclaim(p, deadline)).collect()
}

/// The request side's handle on the controller thread.
#[derive(Debug)]
pub(crate) struct ControllerHandle {
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ControllerHandle {
    pub(crate) fn spawn(controller: Controller) -> Result<ControllerHandle, BrokerError> {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let thread = std::thread::Builder::new()
            .name("strom-controller".into())
            .spawn(move || controller.run(rx))
            .map_err(|source| BrokerError::Io {
                context: "spawning the controller thread".into(),
                source,
            })?;
        Ok(ControllerHandle { commands: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Sends a command and waits for the controller's answer.
    pub(crate) async fn call(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), ApiError>>) -> Command,
    ) -> Result<(), ApiError> {
        let unavailable =
            || ApiError::new(ErrorCode::UnknownServerError, "the controller is shutting down");
        let Some(commands) = self.commands.lock().clone() else {
            return Err(unavailable());
        };
        let (reply, answer) = oneshot::channel();
        commands.send(command(reply)).await.map_err(|_| unavailable())?;
        answer.await.map_err(|_| unavailable())?
    }

    /// Closes the queue; the thread finishes the commands already queued, then exits.
    pub(crate) fn stop(&self) -> Option<JoinHandle<()>> {
        self.commands.lock().take();
        self.thread.lock().take()
    }
}
