//! The [`Broker`] core: topics, partitions and the operations on them, with no network in it.
//! The gRPC services (and later the Kafka listener) are thin translations onto these methods.
//!
//! Log I/O is blocking, so every operation that touches a log runs on tokio's blocking pool;
//! no lock is held across it or across an `.await`.

use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use strom_coordinator::{
    CONSUMER_OFFSETS_TOPIC, CoordinatorConfig, GroupCoordinator, OffsetStore, OffsetsLog,
};
use strom_format::Offset;
use strom_proto::v1::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BrokerConfig, MAX_PARTITIONS, TopicConfig};
use crate::controller::{Command, Controller, ControllerHandle, RECLAIM_PATIENCE, dismantle};
use crate::error::{ApiError, BrokerError};
use crate::metadata::{FileMetadataStore, MetadataStore};
use crate::partition::Partition;
use crate::topic::{Registry, Topic, validate_topic_name};
use crate::types::{
    BrokerEndpoint, ClusterView, ListedOffset, NewTopic, PartitionDescription, ProduceOutcome,
    TopicDescription, TopicListing,
};

/// Most topics one admin request may name.
pub const MAX_TOPICS_PER_REQUEST: usize = 1000;

/// Segment size of `__consumer_offsets` (Kafka's `offsets.topic.segment.bytes`): commits are
/// small, and smaller segments keep a replay's files few MB, not a GiB each.
const OFFSETS_SEGMENT_BYTES: u64 = 100 << 20;

/// A single-node broker: controller and partition leader for every topic.
///
/// ```no_run
/// # async fn demo() -> Result<(), strom_broker::BrokerError> {
/// use strom_broker::{Broker, BrokerConfig, NewTopic};
/// let broker = Broker::open(BrokerConfig::default()).await?;
/// let topic = NewTopic { name: "orders".into(), num_partitions: 3, ..Default::default() };
/// broker.create_topic(topic, false).await.expect("created");
/// broker.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Broker {
    config: Arc<BrokerConfig>,
    registry: Arc<Registry>,
    controller: ControllerHandle,
    cluster_id: String,
    advertised: RwLock<(String, i32)>,
    /// Flips to `true` once: parked fetches answer and background work stops.
    shutdown: watch::Sender<bool>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Released at the end of shutdown, even if something still holds the `Broker`.
    lock: Mutex<Option<DataDirLock>>,
    /// The consumer-group coordinator over `__consumer_offsets`; taken out at shutdown so its
    /// hold on the offsets partitions ends before the logs are closed.
    coordinator: RwLock<Option<GroupCoordinator>>,
}

impl Broker {
    /// Opens the data directory (creating it), loads the topics and their logs, and starts the
    /// controller and the background flush/retention task. Needs a tokio runtime.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        config.validate()?;
        let config = Arc::new(config);
        let store = Box::new(FileMetadataStore::new(&config.data_dir));
        Self::open_with_store(config, store).await
    }

    /// Like [`Broker::open`] with another metadata store.
    pub async fn open_with_store(
        config: Arc<BrokerConfig>,
        store: Box<dyn MetadataStore>,
    ) -> Result<Arc<Broker>, BrokerError> {
        let registry = Arc::new(Registry::default());
        let (lock, controller) = {
            let (config, registry) = (config.clone(), registry.clone());
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
                    context: format!("creating data directory {}", config.data_dir.display()),
                    source,
                })?;
                let lock = DataDirLock::acquire(&config.data_dir)?;
                let controller = Controller::load(config, registry, store)?;
                Ok::<_, BrokerError>((lock, controller))
            })
            .await
            .map_err(|e| BrokerError::Internal(format!("opening the broker: {e}")))??
        };
        let cluster_id = controller.cluster_id().to_string();
        let controller = ControllerHandle::spawn(controller)?;
        let (shutdown, _) = watch::channel(false);
        let maintenance = tokio::spawn(maintenance(
            registry.clone(),
            Duration::from_millis(config.log_flush_scheduler_interval_ms),
            Duration::from_millis(config.log_retention_check_interval_ms),
            shutdown.subscribe(),
        ));
        let advertised = config.advertised(config.listen);
        tracing::info!(
            node_id = config.node_id,
            %cluster_id,
            data_dir = %config.data_dir.display(),
            topics = registry.topics().len(),
            "broker opened"
        );
        let broker = Arc::new(Broker {
            config,
            registry,
            controller,
            cluster_id,
            advertised: RwLock::new(advertised),
            shutdown,
            maintenance: Mutex::new(Some(maintenance)),
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            coordinator: RwLock::new(None),
        });
        if let Err(e) = broker.start_coordinator().await {
            if let Err(close) = broker.shutdown().await {
                tracing::error!(error = %close, "closing after a failed start");
            }
            return Err(e);
        }
        Ok(broker)
    }

    /// Creates `__consumer_offsets` if it is missing (unlimited retention: committed offsets
    /// are only ever superseded, never aged out), loads the committed offsets from every
    /// partition of it and starts the group coordinator over them.
    async fn start_coordinator(&self) -> Result<(), BrokerError> {
        if !self.registry.contains(CONSUMER_OFFSETS_TOPIC) {
            let configs = [
                ("retention.ms", "-1".to_string()),
                ("retention.bytes", "-1".to_string()),
                ("segment.bytes", OFFSETS_SEGMENT_BYTES.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let name = CONSUMER_OFFSETS_TOPIC.to_string();
            let partitions = self.config.offsets_topic_num_partitions;
            let created = self
                .controller
                .call(|reply| Command::CreateTopic { name, partitions, configs, reply })
                .await;
            match created {
                Ok(()) => tracing::info!(partitions, "created {CONSUMER_OFFSETS_TOPIC}"),
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                Err(e) => {
                    return Err(BrokerError::Internal(format!(
                        "creating {CONSUMER_OFFSETS_TOPIC}: {e}"
                    )));
                }
            }
        }
        let topic = self.registry.topic(CONSUMER_OFFSETS_TOPIC).ok_or_else(|| {
            BrokerError::Internal(format!("{CONSUMER_OFFSETS_TOPIC} vanished after creation"))
        })?;
        let logs: Vec<Arc<dyn OffsetsLog>> =
            topic.partitions.iter().map(|p| Arc::clone(p) as Arc<dyn OffsetsLog>).collect();
        drop(topic);
        let store = tokio::task::spawn_blocking(move || OffsetStore::load(logs))
            .await
            .map_err(|e| BrokerError::Internal(format!("loading committed offsets: {e}")))?
            .map_err(|e| BrokerError::Internal(format!("loading committed offsets: {e}")))?;
        tracing::info!(
            partitions = store.num_partitions(),
            groups = store.groups().len(),
            "loaded committed offsets"
        );
        let coordinator = GroupCoordinator::new(CoordinatorConfig::default(), Arc::new(store));
        *self.coordinator.write() = Some(coordinator);
        Ok(())
    }

    /// The consumer-group coordinator; `None` once shutdown has taken it down.
    pub fn group_coordinator(&self) -> Option<GroupCoordinator> {
        self.coordinator.read().clone()
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster's stable id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Sets the address Metadata advertises, once the listener knows its port.
    pub fn set_listen_address(&self, bound: std::net::SocketAddr) {
        *self.advertised.write() = self.config.advertised(bound);
    }

    /// A receiver that turns `true` when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Begins shutdown without waiting: parked fetches answer at once, new ones do not wait,
    /// background work stops. [`Broker::shutdown`] finishes the job.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Creates a topic, or with `validate_only` checks that it could be created.
    ///
    /// Errors: `INVALID_TOPIC_EXCEPTION`, `INVALID_PARTITIONS` (outside 1..=10000),
    /// `INVALID_REPLICATION_FACTOR` (more than the one broker), `INVALID_CONFIG`,
    /// `TOPIC_ALREADY_EXISTS`, `KAFKA_STORAGE_ERROR`.
    pub async fn create_topic(&self, topic: NewTopic, validate_only: bool) -> Result<(), ApiError> {
        validate_topic_name(&topic.name)?;
        let partitions = match topic.num_partitions {
            -1 => self.config.num_partitions,
            n if (1..=MAX_PARTITIONS).contains(&n) => n,
            n => {
                return Err(ApiError::new(
                    ErrorCode::InvalidPartitions,
                    format!("number of partitions must be in 1..={MAX_PARTITIONS}, got {n}"),
                ));
            }
        };
        if !matches!(topic.replication_factor, -1..=1) {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is not possible with 1 broker",
                    topic.replication_factor
                ),
            ));
        }
        TopicConfig::resolve(&self.config, &topic.configs)?;
        if self.registry.contains(&topic.name) {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", topic.name),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let NewTopic { name, configs, .. } = topic;
        self.controller
            .call(|reply| Command::CreateTopic { name, partitions, configs, reply })
            .await
    }

    /// Deletes a topic and its logs. `UNKNOWN_TOPIC_OR_PARTITION` if there is none.
    /// `__consumer_offsets` cannot be deleted (`INVALID_TOPIC_EXCEPTION`). The topic's committed
    /// offsets are deleted with it, so a new topic of the same name starts without them.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ApiError> {
        if name == CONSUMER_OFFSETS_TOPIC {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!("internal topic {name:?} cannot be deleted"),
            ));
        }
        let topic = name.to_string();
        self.controller.call(|reply| Command::DeleteTopic { name: topic, reply }).await?;
        if let Some(coordinator) = self.group_coordinator() {
            match coordinator.delete_topic_offsets(name).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(topic = name, offsets = n, "deleted committed offsets"),
                // The topic is gone either way; stale offsets only matter if it is recreated.
                Err(e) => tracing::error!(topic = name, error = %e, "deleting offsets failed"),
            }
        }
        Ok(())
    }

    /// Every topic, sorted by name; internal ones only with `include_internal`.
    pub fn list_topics(&self, include_internal: bool) -> Vec<TopicListing> {
        self.registry
            .topics()
            .iter()
            .filter(|t| include_internal || !t.internal())
            .map(|t| TopicListing {
                name: t.name.clone(),
                num_partitions: t.partitions.len() as i32,
                internal: t.internal(),
            })
            .collect()
    }

    /// A topic's partitions, offsets and effective settings.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, ApiError> {
        let topic = self.registry.topic(name).ok_or_else(|| ApiError::unknown_topic(name))?;
        Ok(self.describe(&topic))
    }

    fn describe(&self, topic: &Topic) -> TopicDescription {
        let node = self.config.node_id;
        TopicDescription {
            name: topic.name.clone(),
            internal: topic.internal(),
            partitions: topic
                .partitions
                .iter()
                .map(|p| PartitionDescription {
                    partition: p.id().get(),
                    leader: node,
                    leader_epoch: p.leader_epoch().get(),
                    replicas: vec![node],
                    isr: vec![node],
                    log_start_offset: p.log_start_offset().get(),
                    high_watermark: p.high_watermark().get(),
                    storage_error: p.storage_error(),
                })
                .collect(),
            configs: topic.config.effective(),
        }
    }

    /// This broker, the controller, and the named topics (all when `topics` is empty). With
    /// `auto_create_topics`, unknown names are created with the default partition count.
    pub async fn metadata(&self, topics: &[String]) -> ClusterView {
        let node_id = self.config.node_id;
        let (host, port) = self.advertised.read().clone();
        let described = if topics.is_empty() {
            let all = self.registry.topics();
            all.iter().map(|t| (t.name.clone(), Ok(self.describe(t)))).collect()
        } else {
            let mut described = Vec::with_capacity(topics.len());
            for name in topics {
                if self.config.auto_create_topics && !self.registry.contains(name) {
                    let new =
                        NewTopic { name: name.clone(), num_partitions: -1, ..NewTopic::default() };
                    match self.create_topic(new, false).await {
                        Ok(()) => tracing::info!(topic = %name, "auto-created topic"),
                        Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                        Err(e) => {
                            described.push((name.clone(), Err(e)));
                            continue;
                        }
                    }
                }
                described.push((name.clone(), self.describe_topic(name)));
            }
            described
        };
        ClusterView {
            cluster_id: self.cluster_id.clone(),
            controller_id: node_id,
            brokers: vec![BrokerEndpoint { node_id, host, port }],
            topics: described,
        }
    }

    /// Appends one or more RecordBatch v2 (back to back) to a partition and returns the first
    /// offset assigned. The batches are checked (shape, size against `max.message.bytes`, CRC,
    /// records) and appended all or nothing.
    ///
    /// On one node acks 0, 1 and all are the same: when this returns, the records are in the
    /// leader's log, below the high watermark, and fsynced if the flush policy asked for it.
    ///
    /// `__consumer_offsets` is written by the coordinator only: `INVALID_TOPIC_EXCEPTION`.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> Result<ProduceOutcome, ApiError> {
        if topic == CONSUMER_OFFSETS_TOPIC {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!("internal topic {topic:?} cannot be produced to"),
            ));
        }
        let p = self.registry.partition(topic, partition)?;
        run_blocking(move || {
            let info = p.append(records)?;
            Ok(ProduceOutcome {
                base_offset: info.first_offset.get(),
                log_start_offset: p.log_start_offset().get(),
                log_append_time_ms: -1,
            })
        })
        .await
    }

    /// Resolves `timestamp` (-2 earliest, -1 latest = high watermark, else the first record
    /// at or after it) to an offset.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<ListedOffset, ApiError> {
        let p = self.registry.partition(topic, partition)?;
        run_blocking(move || {
            let (offset, timestamp) = p.offset_for(timestamp)?;
            Ok(ListedOffset { offset, timestamp })
        })
        .await
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs one retention pass over every partition now (the background task also does, every
    /// `log_retention_check_interval_ms`). Returns the number of segments deleted.
    pub async fn enforce_retention(&self) -> usize {
        run_maintenance(&self.registry, Chore::Retention).await
    }

    /// Stops the broker: wakes parked fetches, stops background work and the controller, then
    /// flushes and closes every log (writing its clean-shutdown marker). Requests should be
    /// drained first (the server does). Idempotent.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.begin_shutdown();
        let coordinator = self.coordinator.write().take();
        if let Some(coordinator) = coordinator {
            coordinator.shutdown();
        }
        let task = self.maintenance.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // The controller finishes queued changes first, so no topic appears after the drain.
        if let Some(thread) = self.controller.stop() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("controller thread panicked");
            }
        }
        let topics = self.registry.drain();
        let closed = tokio::task::spawn_blocking(move || close_topics(topics))
            .await
            .map_err(|e| BrokerError::Internal(format!("closing logs: {e}")))
            .and_then(|r| r);
        self.lock.lock().take();
        closed?;
        tracing::info!("broker stopped; logs flushed and closed");
        Ok(())
    }
}

/// Runs blocking log work off the async runtime, mapping a panic to an error response.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "log task failed");
        Err(ApiError::new(ErrorCode::UnknownServerError, "internal error in the log task"))
    })
}

fn close_topics(topics: Vec<Arc<Topic>>) -> Result<(), BrokerError> {
    let deadline = Instant::now() + RECLAIM_PATIENCE;
    let mut first_error = None;
    for topic in topics {
        for reclaimed in dismantle(topic, deadline) {
            let result = match reclaimed {
                Ok(p) => {
                    let name = p.name().to_string();
                    p.into_log()
                        .close()
                        .map_err(|source| BrokerError::Log { partition: name, source })
                }
                Err(p) => {
                    tracing::warn!(partition = p.name(), "still in use at shutdown; flushing only");
                    p.log()
                        .flush()
                        .map_err(|source| BrokerError::Log { partition: p.name().into(), source })
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "closing partition failed");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[derive(Debug, Clone, Copy)]
enum Chore {
    Flush,
    Retention,
}

async fn maintenance(
    registry: Arc<Registry>,
    flush_every: Duration,
    retention_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut flush = tokio::time::interval(flush_every);
    let mut retention = tokio::time::interval(retention_every);
    for timer in [&mut flush, &mut retention] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = flush.tick() => { run_maintenance(&registry, Chore::Flush).await; }
            _ = retention.tick() => { run_maintenance(&registry, Chore::Retention).await; }
            () = stopped(&mut shutdown) => break,
        }
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, before the task yields again.
    let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
}

/// One pass of `chore` over every partition; returns segments deleted by retention.
async fn run_maintenance(registry: &Registry, chore: Chore) -> usize {
    let partitions = registry.partitions();
    let pass = tokio::task::spawn_blocking(move || {
        let mut deleted = 0;
        // By value, so each partition is let go of as soon as it is done and a topic deletion
        // waits for one partition's chore at most.
        for p in partitions {
            if p.is_deleted() {
                continue;
            }
            deleted += run_chore(&p, chore);
        }
        deleted
    });
    match pass.await {
        Ok(deleted) => deleted,
        Err(e) => {
            tracing::error!(error = %e, "maintenance task failed");
            0
        }
    }
}

fn run_chore(p: &Partition, chore: Chore) -> usize {
    match chore {
        Chore::Flush => {
            if let Err(e) = p.log().flush_if_due() {
                p.clamp_high_watermark();
                tracing::error!(partition = p.name(), error = %e, "scheduled flush failed");
            }
            0
        }
        Chore::Retention => match p.log().enforce_retention() {
            Ok(0) => 0,
            Ok(n) => {
                tracing::info!(
                    partition = p.name(),
                    segments = n,
                    log_start_offset = %p.log_start_offset(),
                    "retention deleted segments"
                );
                n
            }
            Err(e) => {
                tracing::error!(partition = p.name(), error = %e, "retention failed");
                0
            }
        },
    }
}

/// An exclusive lock on the data directory, so two brokers never write the same logs.
#[derive(Debug)]
struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    fn acquire(dir: &std::path::Path) -> Result<Self, BrokerError> {
        let path = dir.join(".lock");
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(
                |source| BrokerError::Io { context: format!("opening {}", path.display()), source },
            )?;
        lock_exclusive(&file).map_err(|_| BrokerError::DataDirLocked(dir.display().to_string()))?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(unix)]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call. The lock
    // goes away with the descriptor, also when the process dies.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> std::io::Result<()> {
    Ok(())
}

/// The offset a fetch asked for, if it is one.
pub(crate) fn fetch_offset(raw: i64) -> Option<Offset> {
    (raw >= 0).then_some(Offset::new(raw))
}
