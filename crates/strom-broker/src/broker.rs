//! The [`Broker`] core: topics, partitions and the operations on them, with no network in it.
//! The gRPC services (and the Kafka listener) are thin translations onto these methods.
//!
//! Topic metadata comes from the metadata quorum ([`QuorumLog`]): changes go to the active
//! controller (`controller.rs`, forwarded over gRPC when another node is the controller), and
//! every node follows the committed image (`replicas.rs`), opening the logs of the partitions
//! it holds. Log I/O is blocking, so every operation that touches a log runs on tokio's blocking
//! pool; no lock is held across it or across an `.await`.

use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use strom_coordinator::{
    CONSUMER_OFFSETS_TOPIC, GroupCoordinator, OffsetStore, OffsetsLog, OffsetsLogError,
};
use strom_format::{Offset, TimestampType};

use crate::limits::AppendBudget;
use strom_proto::v1::ErrorCode;
use strom_quorum::{BrokerRegistration, NO_LEADER, NodeId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{BrokerConfig, MAX_PARTITIONS, TopicConfig};
use crate::controller::{AlterPartition, Command, ControllerHandle};
use crate::error::{ApiError, BrokerError};
use crate::fetcher::Fetchers;
use crate::partition::Partition;
use crate::peers::Peers;
use crate::producer_ids::ProducerIdAllocator;
use crate::quorum::{ControllerView, Image, QuorumLog};
use crate::raft::RaftQuorum;
use crate::replicas::{RECLAIM_PATIENCE, Reconciled, dismantle};
use crate::replication::{ISR_QUEUE_LEN, IsrProposal};
use crate::topic::{Registry, Topic, validate_topic_name};
use crate::types::{
    BrokerEndpoint, ClusterView, ConfigAlteration, ListedOffset, NewPartitions, NewTopic,
    NodeDescription, PartitionDescription, ProduceOutcome, TopicDescription, TopicListing,
};

/// Most topics one admin request may name.
pub const MAX_TOPICS_PER_REQUEST: usize = 1000;

/// How long an admin change waits for this node to apply it before answering anyway.
const APPLY_PATIENCE: Duration = Duration::from_secs(15);
/// How long shutdown waits for a background task to finish its current pass.
const TASK_STOP_PATIENCE: Duration = Duration::from_secs(5);
/// How long shutdown waits for the controller to move leadership away.
const CONTROLLED_SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);
/// How long a single-node broker's start waits for its quorum of one to be ready.
const SINGLE_NODE_START_PATIENCE: Duration = Duration::from_secs(30);

/// The group coordinator over the `__consumer_offsets` partitions this node leads.
#[derive(Debug, Clone)]
struct CoordinatorSlot {
    /// Per offsets partition: whether this node led it when the coordinator was built.
    led: Vec<bool>,
    coordinator: GroupCoordinator,
}

/// A broker node: replica of some partitions, leader of some, maybe the active controller.
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
    quorum: Arc<dyn QuorumLog>,
    controller: ControllerHandle,
    peers: Arc<Peers>,
    /// Follower side of replication: one fetcher task per leader this node follows.
    fetchers: Arc<Fetchers>,
    /// Leader side: ISR changes on their way to the controller.
    isr_changes: mpsc::Sender<IsrProposal>,
    cluster_id: String,
    incarnation: u64,
    advertised: RwLock<(String, i32)>,
    /// `host:port` Kafka clients dial on this node, once its Kafka listener is bound.
    kafka_advertised: RwLock<Option<String>>,
    /// Applied index of the last image the replica manager finished.
    reconciled: watch::Receiver<u64>,
    /// Turns `true` once this process has caught up with the quorum (`recovery.rs`).
    pub(crate) serving: watch::Receiver<bool>,
    /// Flips to `true` once: parked fetches answer and background work stops.
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Set by controlled shutdown: a heartbeat now would unfence this node again.
    heartbeats_stopped: AtomicBool,
    /// Released at the end of shutdown, even if something still holds the `Broker`.
    lock: Mutex<Option<DataDirLock>>,
    /// Taken out at shutdown so its hold on the offsets partitions ends before logs close.
    coordinator: Arc<RwLock<Option<CoordinatorSlot>>>,
    /// Bytes of appends queued for or running on the blocking pool, broker-wide.
    append_budget: AppendBudget,
    /// Fetches parked waiting for data ([`Broker::parked_fetches`]).
    parked_fetches: AtomicUsize,
    /// Request and connection counters (`metrics.rs`).
    pub(crate) metrics: Arc<crate::metrics::BrokerMetrics>,
    /// Idempotent producer ids, unique in the cluster and across restarts.
    producer_ids: Arc<ProducerIdAllocator>,
}

impl Broker {
    /// Opens the data directory (creating it), joins the metadata quorum and starts following
    /// it, the controller task, broker heartbeats and the background flush/retention task.
    /// Needs a tokio runtime.
    ///
    /// Without `voters` (or with only this node) the node is a quorum of one: `open` returns
    /// once its topics are open and the group coordinator serves.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        config.validate()?;
        let config = Arc::new(config);
        let lock = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
                    context: format!("creating data directory {}", config.data_dir.display()),
                    source,
                })?;
                DataDirLock::acquire(&config.data_dir)
            })
            .await
            .map_err(|e| BrokerError::Internal(format!("opening the broker: {e}")))??
        };
        let quorum: Arc<dyn QuorumLog> = Arc::new(RaftQuorum::start(&config).await?);
        Self::open_with_quorum(config, quorum, lock).await
    }

    async fn open_with_quorum(
        config: Arc<BrokerConfig>,
        quorum: Arc<dyn QuorumLog>,
        lock: DataDirLock,
    ) -> Result<Arc<Broker>, BrokerError> {
        let registry = Arc::new(Registry::default());
        let producer_ids = {
            let (dir, node) = (config.data_dir.clone(), config.node_id);
            tokio::task::spawn_blocking(move || ProducerIdAllocator::open(&dir, node))
                .await
                .map_err(|e| BrokerError::Internal(format!("opening producer ids: {e}")))??
        };
        let (shutdown, _) = watch::channel(false);
        let voters = config.voters.len().max(1);
        let controller =
            ControllerHandle::spawn(config.clone(), quorum.clone(), voters, shutdown.subscribe());
        let (reconciled_tx, reconciled) = watch::channel(0);
        let (serving_tx, serving) = watch::channel(false);
        let coordinator: Arc<RwLock<Option<CoordinatorSlot>>> = Arc::new(RwLock::new(None));
        let cluster_id = quorum.cluster_id();
        let advertised = config.advertised(config.listen);
        let peers = Arc::new(Peers::new(cluster_id.clone()));
        let fetchers = Arc::new(Fetchers::new(
            config.clone(),
            cluster_id.clone(),
            quorum.image(),
            shutdown.subscribe(),
        ));
        let (isr_changes, isr_queue) = mpsc::channel(ISR_QUEUE_LEN);
        let broker = Arc::new(Broker {
            config: config.clone(),
            registry: registry.clone(),
            quorum: quorum.clone(),
            controller,
            peers,
            fetchers: fetchers.clone(),
            isr_changes,
            cluster_id: cluster_id.clone(),
            incarnation: rand::random(),
            advertised: RwLock::new(advertised),
            kafka_advertised: RwLock::new(None),
            reconciled,
            serving,
            shutdown,
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            heartbeats_stopped: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            coordinator: coordinator.clone(),
            append_budget: AppendBudget::new(config.queued_max_request_bytes),
            parked_fetches: AtomicUsize::new(0),
            metrics: Arc::default(),
            producer_ids: Arc::new(producer_ids),
        });
        let follow = {
            let (config, registry, coordinator) =
                (config.clone(), registry.clone(), coordinator.clone());
            let metrics = broker.metrics.clone();
            let on_change = move |outcome: Reconciled| {
                metrics.count_isr_moves(outcome.isr_moves);
                fetchers.update(&registry);
                rebuild_coordinator(&config, &registry, &coordinator, &outcome);
            };
            tokio::spawn(crate::replicas::follow(
                broker.config.clone(),
                broker.registry.clone(),
                quorum.image(),
                reconciled_tx,
                broker.incarnation,
                on_change,
                broker.shutdown.subscribe(),
            ))
        };
        let maintenance = tokio::spawn(maintenance(
            registry.clone(),
            Duration::from_millis(config.log_flush_scheduler_interval_ms),
            Duration::from_millis(config.log_retention_check_interval_ms),
            broker.shutdown.subscribe(),
        ));
        if config.log_cleaner_enable {
            let cleaner = tokio::spawn(crate::log_cleaner::run(
                registry.clone(),
                broker.metrics.clone(),
                crate::log_cleaner::limits(&config),
                Duration::from_millis(config.log_cleaner_backoff_ms.max(1)),
                broker.shutdown.subscribe(),
            ));
            broker.tasks.lock().push(cleaner);
        }
        let heartbeats = tokio::spawn(heartbeat_loop(Arc::downgrade(&broker)));
        let isr = tokio::spawn(crate::replication::isr_loop(Arc::downgrade(&broker), isr_queue));
        let recovery = tokio::spawn(crate::recovery::latch(Arc::downgrade(&broker), serving_tx));
        broker.tasks.lock().extend([follow, maintenance, heartbeats, isr, recovery]);
        tracing::info!(
            node_id = config.node_id,
            %cluster_id,
            data_dir = %config.data_dir.display(),
            voters = voters,
            "broker opened"
        );
        if voters == 1
            && let Err(e) = broker.wait_until_serving(SINGLE_NODE_START_PATIENCE).await
        {
            if let Err(close) = broker.shutdown().await {
                tracing::error!(error = %close, "closing after a failed start");
            }
            return Err(e);
        }
        Ok(broker)
    }

    /// Waits until this process is registered, every partition it holds has a leader, the image
    /// that says so is reconciled (every topic open, every replica in its role) and the group
    /// coordinator serves. Single-node start only: there every partition is this node's.
    async fn wait_until_serving(&self, patience: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut reconciled = self.reconciled.clone();
        let mut images = self.quorum.image();
        loop {
            let registered_at = {
                let image = images.borrow_and_update();
                let me = self.config.node_id;
                // Registered, and the elections that follow registration are in: no partition
                // of this node's is waiting for a leader.
                let elected = image
                    .state
                    .partitions()
                    .all(|(_, p)| !p.replicas.contains(&me) || p.leader != NO_LEADER);
                self.registered_at(&image).filter(|_| elected)
            };
            let ready = registered_at.is_some_and(|at| *reconciled.borrow_and_update() >= at);
            if ready && self.coordinator.read().is_some() {
                return Ok(());
            }
            tokio::select! {
                changed = reconciled.changed() => if changed.is_err() {
                    return Err(BrokerError::Internal("the replica manager stopped".into()));
                },
                _ = images.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BrokerError::Internal(format!(
                        "the broker did not become ready within {patience:?}"
                    )));
                }
            }
        }
    }

    /// The consumer-group coordinator; `None` before it is built or once shutdown took it.
    pub fn group_coordinator(&self) -> Option<GroupCoordinator> {
        self.coordinator.read().as_ref().map(|slot| slot.coordinator.clone())
    }

    /// The coordinator of `group_id` if this node is it: NOT_COORDINATOR when another node
    /// leads the group's `__consumer_offsets` partition, COORDINATOR_NOT_AVAILABLE when none
    /// does (yet).
    pub fn coordinator_for(&self, group_id: &str) -> Result<GroupCoordinator, ApiError> {
        let slot = self.coordinator.read().clone();
        let Some(slot) = slot else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                "the group coordinator is not loaded on this broker",
            ));
        };
        let partition = slot.coordinator.offsets().partition_for(group_id);
        if slot.led.get(partition).copied().unwrap_or(false) {
            Ok(slot.coordinator)
        } else {
            Err(ApiError::new(
                ErrorCode::NotCoordinator,
                format!("this broker is not the coordinator of group {group_id:?}"),
            ))
        }
    }

    /// UNKNOWN_TOPIC_OR_PARTITION unless the metadata has `topic`-`partition`.
    pub(crate) fn partition_exists(&self, topic: &str, partition: i32) -> Result<(), ApiError> {
        match self.image().state.partition(topic, partition) {
            Some(_) => Ok(()),
            None => Err(ApiError::unknown_topic_or_partition(topic, partition)),
        }
    }

    /// The node coordinating `group_id`: the leader of its `__consumer_offsets` partition.
    pub fn find_coordinator(&self, group_id: &str) -> Result<BrokerEndpoint, ApiError> {
        let image = self.image();
        let not_available = |why: &str| {
            ApiError::new(ErrorCode::CoordinatorNotAvailable, format!("group {group_id:?}: {why}"))
        };
        let topic = image
            .state
            .topic(CONSUMER_OFFSETS_TOPIC)
            .ok_or_else(|| not_available("the offsets topic is not created yet"))?;
        let index = strom_coordinator::partition_for_group(group_id, topic.partitions.len());
        let leader = topic.partitions.get(index).map_or(NO_LEADER, |p| p.leader);
        if leader == NO_LEADER {
            return Err(not_available("its offsets partition has no leader"));
        }
        self.endpoint(&image, leader).ok_or_else(|| not_available("its coordinator is not live"))
    }

    fn endpoint(&self, image: &Image, node: NodeId) -> Option<BrokerEndpoint> {
        let broker = image.state.broker(node).filter(|b| !b.fenced)?;
        let (host, port) = split_host_port(&broker.registration.address)?;
        Some(BrokerEndpoint { node_id: node, host, port })
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster's stable id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The committed metadata image as this node has applied it.
    pub(crate) fn image(&self) -> Arc<Image> {
        self.quorum.image().borrow().clone()
    }

    /// The metadata quorum behind this node.
    pub(crate) fn quorum_log(&self) -> &Arc<dyn QuorumLog> {
        &self.quorum
    }

    /// Applied index of the last image whose replicas this node has opened.
    pub(crate) fn reconciled_index(&self) -> u64 {
        *self.reconciled.borrow()
    }

    /// A receiver of [`Broker::reconciled_index`].
    pub(crate) fn reconciled_signal(&self) -> watch::Receiver<u64> {
        self.reconciled.clone()
    }

    /// This process's registration incarnation: a restart gets a new one.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The active controller as this node knows it.
    pub fn controller(&self) -> ControllerView {
        self.quorum.controller().borrow().clone()
    }

    /// Sets the address Metadata advertises, once the listener knows its port. The next
    /// heartbeat re-registers the node with it.
    pub fn set_listen_address(&self, bound: std::net::SocketAddr) {
        *self.advertised.write() = self.config.advertised(bound);
    }

    fn registration(&self) -> BrokerRegistration {
        let (host, port) = self.advertised.read().clone();
        BrokerRegistration {
            node_id: self.config.node_id,
            address: format!("{host}:{port}"),
            kafka_address: self.kafka_advertised.read().clone(),
            incarnation: self.incarnation,
        }
    }

    /// Sets the `host:port` this node's Kafka listener advertises; the next heartbeat
    /// registers it, so every node's Kafka Metadata lists it.
    pub fn set_kafka_address(&self, address: String) {
        *self.kafka_advertised.write() = Some(address);
    }

    /// The live brokers with a Kafka listener, as Kafka clients should dial them (this node
    /// included as soon as its listener is bound, even before its registration commits).
    pub fn kafka_brokers(&self) -> Vec<BrokerEndpoint> {
        let image = self.image();
        let me = self.config.node_id;
        let mut nodes = image.state.live_brokers();
        if !nodes.contains(&me) {
            nodes.push(me);
            nodes.sort_unstable();
        }
        nodes.into_iter().filter_map(|n| self.kafka_endpoint_in(&image, n)).collect()
    }

    /// Node `node`'s Kafka listener, if it is registered with one.
    pub fn kafka_endpoint(&self, node: NodeId) -> Option<BrokerEndpoint> {
        self.kafka_endpoint_in(&self.image(), node)
    }

    /// This node's address is known before its registration carrying it commits.
    fn kafka_endpoint_in(&self, image: &Image, node: NodeId) -> Option<BrokerEndpoint> {
        let address = if node == self.config.node_id {
            self.kafka_advertised.read().clone()?
        } else {
            image.state.broker(node)?.registration.kafka_address.clone()?
        };
        let (host, port) = split_host_port(&address)?;
        Some(BrokerEndpoint { node_id: node, host, port })
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

    /// Runs `command` on the active controller: here if this node is it, else forwarded to it.
    pub(crate) async fn controller_call<T>(
        &self,
        command: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, ApiError>>) -> Command,
    ) -> Result<T, ApiError> {
        self.controller.call(command).await
    }

    /// Queues a leader's ISR change for the controller; a full queue drops it (the partition
    /// proposes again on a later tick or fetch).
    pub(crate) fn propose_isr_change(&self, proposal: IsrProposal) {
        if let Err(e) = self.isr_changes.try_send(proposal) {
            let (partition, _) = match e {
                mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
            };
            partition.isr_change_failed();
        }
    }

    /// Sends an ISR change to the active controller (this node's, or forwarded). `Ok(true)`
    /// when a change was committed.
    pub(crate) async fn alter_partition(
        &self,
        request: strom_proto::v1::AlterPartitionRequest,
    ) -> Result<bool, ApiError> {
        match self.alter_partition_local(&request).await {
            Err(e) if e.code == ErrorCode::NotController => {
                self.peers.alter_partition(&self.controller(), request).await
            }
            other => other,
        }
    }

    /// An ISR change on this node's controller (NOT_CONTROLLER when it is not the active one).
    pub(crate) async fn alter_partition_local(
        &self,
        request: &strom_proto::v1::AlterPartitionRequest,
    ) -> Result<bool, ApiError> {
        let request = AlterPartition::from(request);
        self.controller_call(|reply| Command::AlterPartition { request, reply }).await
    }

    /// Controlled shutdown (Kafka's): stops heartbeating and asks the active controller to
    /// fence this node now, which moves leadership of its partitions to other ISR members at
    /// once, then waits (bounded) until this node has applied that. Producers and consumers
    /// move to the new leaders while this node still answers them with NOT_LEADER, so a
    /// rolling restart costs no availability. Skipped when this node is the only broker.
    pub(crate) async fn controlled_shutdown(&self) {
        let me = self.config.node_id;
        let others = self.image().state.live_brokers().into_iter().any(|n| n != me);
        if !others || self.heartbeats_stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let started = Instant::now();
        let asked = async {
            match self
                .controller_call(|reply| Command::ControlledShutdown { node_id: me, reply })
                .await
            {
                Err(e) if e.code == ErrorCode::NotController => {
                    self.peers.controlled_shutdown(&self.controller(), me).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(CONTROLLED_SHUTDOWN_PATIENCE, asked).await {
            Ok(Ok(())) => {
                let fenced = |image: &Image| !image.state.is_live(me);
                tokio::time::timeout(CONTROLLED_SHUTDOWN_PATIENCE, self.wait_applied(fenced))
                    .await
                    .ok();
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "controlled shutdown: leadership moved to other replicas"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "controlled shutdown refused; stopping anyway")
            }
            Err(_) => tracing::warn!("controlled shutdown timed out; stopping anyway"),
        }
    }

    /// A Raft message from a peer.
    pub(crate) async fn raft_rpc(&self, kind: i32, payload: Bytes) -> Result<Bytes, ApiError> {
        self.quorum.handle_rpc(kind, payload).await
    }

    /// Handles a heartbeat of `registration`'s broker on this node's controller.
    pub(crate) async fn broker_heartbeat(
        &self,
        registration: BrokerRegistration,
    ) -> Result<(), ApiError> {
        self.controller.call(|reply| Command::Heartbeat { registration, reply }).await
    }

    /// Creates a topic, or with `validate_only` checks that it could be created. Answers once
    /// this node has applied the creation (its local replicas are open).
    ///
    /// Errors: `INVALID_TOPIC_EXCEPTION`, `INVALID_PARTITIONS` (outside 1..=10000),
    /// `INVALID_REPLICATION_FACTOR` (more than the live brokers), `INVALID_CONFIG`,
    /// `TOPIC_ALREADY_EXISTS`, `NOT_CONTROLLER` when no controller can be reached.
    pub async fn create_topic(&self, topic: NewTopic, validate_only: bool) -> Result<(), ApiError> {
        self.create_topic_with(topic, validate_only, true).await
    }

    /// [`Broker::create_topic`]; `forward: false` for a request a peer forwarded here.
    pub(crate) async fn create_topic_with(
        &self,
        topic: NewTopic,
        validate_only: bool,
        forward: bool,
    ) -> Result<(), ApiError> {
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
        let live = self.image().state.live_brokers().len() as i32;
        if topic.replication_factor > live.max(1) || topic.replication_factor < -1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is not possible with {live} live broker(s)",
                    topic.replication_factor
                ),
            ));
        }
        TopicConfig::resolve(&self.config, &topic.configs)?;
        if self.image().state.topic(&topic.name).is_some() {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", topic.name),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let NewTopic { name, configs, replication_factor, .. } = topic;
        let wanted = name.clone();
        let local = {
            let (name, configs) = (name.clone(), configs.clone());
            self.controller_call(|reply| Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                reply,
            })
            .await
        };
        match local {
            Err(e) if forward && e.code == ErrorCode::NotController => {
                let new =
                    NewTopic { name, num_partitions: partitions, replication_factor, configs };
                self.peers.create_topic(&self.controller(), new).await?;
            }
            other => other?,
        }
        self.wait_applied(|image| image.state.topic(&wanted).is_some()).await;
        Ok(())
    }

    /// Deletes a topic and its logs on every replica. `UNKNOWN_TOPIC_OR_PARTITION` if there is
    /// none. `__consumer_offsets` cannot be deleted (`INVALID_TOPIC_EXCEPTION`). The topic's
    /// committed offsets are deleted with it, so a new topic of the same name starts without
    /// them.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ApiError> {
        self.delete_topic_with(name, true).await
    }

    /// [`Broker::delete_topic`]; `forward: false` for a request a peer forwarded here.
    pub(crate) async fn delete_topic_with(
        &self,
        name: &str,
        forward: bool,
    ) -> Result<(), ApiError> {
        if name == CONSUMER_OFFSETS_TOPIC {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!("internal topic {name:?} cannot be deleted"),
            ));
        }
        let topic = name.to_string();
        match self.controller_call(|reply| Command::DeleteTopic { name: topic, reply }).await {
            Err(e) if forward && e.code == ErrorCode::NotController => {
                self.peers.delete_topic(&self.controller(), name).await?;
            }
            other => other?,
        }
        self.wait_applied(|image| image.state.topic(name).is_none()).await;
        // Every node's replica manager drops the topic's offsets from its coordinator; doing
        // it here too means the caller's next OffsetFetch on this node cannot see them.
        if let Some(coordinator) = self.group_coordinator()
            && let Err(e) = coordinator.delete_topic_offsets(name).await
        {
            tracing::error!(topic = name, error = %e, "deleting offsets failed");
        }
        Ok(())
    }

    /// Grows a topic to `request.count` partitions (Kafka's CreatePartitions), or with
    /// `validate_only` checks that it could. Answers once this node has applied the change (its
    /// replicas of the new partitions are open), so producers and consumers that refresh their
    /// metadata through it see the new partitions at once.
    ///
    /// Errors as Kafka's: `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_PARTITIONS` (the count does not
    /// grow, exceeds 10000, or the topic is `__consumer_offsets`), `INVALID_REPLICA_ASSIGNMENT`,
    /// `INVALID_REPLICATION_FACTOR` (fewer live brokers than the topic's replicas),
    /// `NOT_CONTROLLER` when no controller can be reached.
    pub async fn create_partitions(
        &self,
        request: NewPartitions,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.create_partitions_with(request, validate_only, true).await
    }

    /// [`Broker::create_partitions`]; `forward: false` for a request a peer forwarded here.
    pub(crate) async fn create_partitions_with(
        &self,
        request: NewPartitions,
        validate_only: bool,
        forward: bool,
    ) -> Result<(), ApiError> {
        // Checked here first so that validate_only and plain mistakes need no controller; the
        // controller checks again on its own image, which may be newer.
        crate::controller::new_partitions_record(&self.image().state, &request)?;
        if validate_only {
            return Ok(());
        }
        let local = {
            let request = request.clone();
            self.controller_call(|reply| Command::CreatePartitions { request, reply }).await
        };
        match local {
            Err(e) if forward && e.code == ErrorCode::NotController => {
                self.peers.create_partitions(&self.controller(), request.clone()).await?;
            }
            other => other?,
        }
        let count = usize::try_from(request.count).unwrap_or(usize::MAX);
        self.wait_applied(|image| {
            image.state.topic(&request.topic).is_some_and(|t| t.partitions.len() >= count)
        })
        .await;
        Ok(())
    }

    /// Sets and removes a topic's config overrides (validated as a whole: all or nothing).
    /// Answers once this node applied the change. `UNKNOWN_TOPIC_OR_PARTITION`,
    /// `INVALID_CONFIG`, `NOT_CONTROLLER` when no controller can be reached.
    pub async fn alter_topic_config(
        &self,
        change: ConfigAlteration,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.alter_topic_config_with(change, validate_only, true).await
    }

    /// [`Broker::alter_topic_config`]; `forward: false` for a request a peer forwarded here.
    pub(crate) async fn alter_topic_config_with(
        &self,
        change: ConfigAlteration,
        validate_only: bool,
        forward: bool,
    ) -> Result<(), ApiError> {
        let current = match self.image().state.topic(&change.topic) {
            Some(t) => t.configs.clone(),
            None => return Err(ApiError::unknown_topic(&change.topic)),
        };
        let expected = crate::controller::config_records(&self.config, &change, &current)?;
        if validate_only || expected.is_empty() {
            return Ok(());
        }
        let local = {
            let change = change.clone();
            self.controller_call(|reply| Command::AlterConfig { change, reply }).await
        };
        match local {
            Err(e) if forward && e.code == ErrorCode::NotController => {
                self.peers.alter_configs(&self.controller(), change.clone()).await?;
            }
            other => other?,
        }
        let wanted = change.clone();
        self.wait_applied(move |image| {
            image.state.topic(&wanted.topic).is_some_and(|t| {
                wanted.set.iter().all(|(k, v)| t.configs.get(k) == Some(v))
                    && wanted
                        .delete
                        .iter()
                        .all(|k| wanted.set.contains_key(k) || !t.configs.contains_key(k))
            })
        })
        .await;
        Ok(())
    }

    /// Waits (bounded) until the image satisfies `done` and this node has reconciled it.
    pub(crate) async fn wait_applied(&self, done: impl Fn(&Image) -> bool) {
        let deadline = tokio::time::Instant::now() + APPLY_PATIENCE;
        let mut images = self.quorum.image();
        let mut reconciled = self.reconciled.clone();
        loop {
            let target = {
                let image = images.borrow_and_update();
                done(&image).then_some(image.applied)
            };
            if let Some(applied) = target {
                if *reconciled.borrow_and_update() >= applied {
                    return;
                }
                tokio::select! {
                    _ = reconciled.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                }
            } else {
                tokio::select! {
                    _ = images.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                }
            }
        }
    }

    /// Every topic, sorted by name; internal ones only with `include_internal`.
    pub fn list_topics(&self, include_internal: bool) -> Vec<TopicListing> {
        self.image()
            .state
            .topics()
            .iter()
            .filter(|(name, _)| include_internal || !crate::topic::is_internal_topic(name))
            .map(|(name, t)| TopicListing {
                name: name.clone(),
                num_partitions: t.partitions.len() as i32,
                internal: crate::topic::is_internal_topic(name),
            })
            .collect()
    }

    /// A topic's partitions (placement from the metadata; offsets where this node holds the
    /// replica, `-1` elsewhere) and effective settings.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, ApiError> {
        let image = self.image();
        let meta = image.state.topic(name).ok_or_else(|| ApiError::unknown_topic(name))?;
        let local = self.registry.topic(name);
        let config = TopicConfig::resolve(&self.config, &meta.configs)?;
        Ok(TopicDescription {
            name: name.to_string(),
            internal: crate::topic::is_internal_topic(name),
            partitions: meta
                .partitions
                .iter()
                .map(|p| {
                    let replica = local
                        .as_ref()
                        .and_then(|t| t.partitions.get(p.partition as usize).cloned().flatten())
                        .filter(|r| r.is_leader());
                    PartitionDescription {
                        partition: p.partition,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        log_start_offset: replica
                            .as_ref()
                            .map_or(-1, |r| r.log_start_offset().get()),
                        high_watermark: replica.as_ref().map_or(-1, |r| r.high_watermark().get()),
                        storage_error: replica.as_ref().and_then(|r| r.storage_error()),
                    }
                })
                .collect(),
            configs: config.effective(),
        })
    }

    /// Every node of the cluster as the metadata knows it.
    pub fn describe_nodes(&self) -> Vec<NodeDescription> {
        let image = self.image();
        image
            .state
            .brokers()
            .values()
            .map(|b| {
                let id = b.registration.node_id;
                let led = image.state.partitions().filter(|(_, p)| p.leader == id);
                let (mut leader_partitions, mut under_replicated_partitions) = (0, 0);
                for (_, p) in led {
                    leader_partitions += 1;
                    if p.isr.len() < p.replicas.len() {
                        under_replicated_partitions += 1;
                    }
                }
                let offline_partitions = image
                    .state
                    .partitions()
                    .filter(|(_, p)| p.leader == NO_LEADER && p.replicas.contains(&id))
                    .count();
                NodeDescription {
                    node_id: id,
                    address: b.registration.address.clone(),
                    fenced: b.fenced,
                    voter: self.config.voters.is_empty() && id == self.config.node_id
                        || self.config.voters.contains_key(&id),
                    leader_partitions,
                    under_replicated_partitions,
                    offline_partitions,
                }
            })
            .collect()
    }

    /// The live brokers, the controller, and the named topics (all when `topics` is empty).
    /// With `auto_create_topics`, unknown names are created with the default partition count.
    pub async fn metadata(&self, topics: &[String]) -> ClusterView {
        let described = if topics.is_empty() {
            self.list_topics(true)
                .into_iter()
                .map(|t| {
                    let d = self.describe_topic(&t.name);
                    (t.name, d)
                })
                .collect()
        } else {
            let mut described = Vec::with_capacity(topics.len());
            for name in topics {
                if self.config.auto_create_topics && self.image().state.topic(name).is_none() {
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
        let image = self.image();
        let mut brokers: Vec<BrokerEndpoint> = image
            .state
            .live_brokers()
            .into_iter()
            .filter_map(|n| self.endpoint(&image, n))
            .collect();
        if brokers.is_empty() {
            // Before the first registration commits, clients can still reach this node.
            let (host, port) = self.advertised.read().clone();
            brokers.push(BrokerEndpoint { node_id: self.config.node_id, host, port });
        }
        ClusterView {
            cluster_id: self.cluster_id.clone(),
            controller_id: self.controller().id.unwrap_or(-1),
            brokers,
            topics: described,
        }
    }

    /// Appends one or more RecordBatch v2 (back to back) to a partition and returns the first
    /// offset assigned. The batches are checked (shape, size against `max.message.bytes`, CRC,
    /// records) and appended all or nothing.
    ///
    /// `acks` as in Kafka: 0 and 1 answer once the leader appended; -1 (all) first requires
    /// the committed ISR to hold `min.insync.replicas` (else NOT_ENOUGH_REPLICAS, nothing
    /// written) and answers once every ISR member has the records (the high watermark passed
    /// them). Within `timeout` or REQUEST_TIMED_OUT (outcome unknown: the records may still
    /// commit). Durability on each replica is the topic's flush policy.
    ///
    /// `__consumer_offsets` is written by the coordinator only: `INVALID_TOPIC_EXCEPTION`.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<ProduceOutcome, ApiError> {
        let result = self.produce_unmetered(topic, partition, records, acks, timeout).await;
        if let Err(e) = &result {
            self.metrics.count_error(crate::metrics::RequestKind::Produce, e.code.as_str_name());
        }
        result
    }

    async fn produce_unmetered(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> Result<ProduceOutcome, ApiError> {
        if topic == CONSUMER_OFFSETS_TOPIC {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!("internal topic {topic:?} cannot be produced to"),
            ));
        }
        if !matches!(acks, -1..=1) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequiredAcks,
                format!("acks must be -1, 0 or 1, got {acks}"),
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let p = self.registry.partition(topic, partition)?;
        let _in_flight = self.append_budget.reserve(records.len()).await;
        // The partition's writer checks min.insync.replicas (acks=all) and appends.
        let (info, epoch) = p.append_queued(records, acks == -1, deadline).await?;
        // Under LogAppendTime every batch of the append carries the log's clock as its max
        // timestamp, which Kafka reports back so clients learn the stored time.
        let stamped = p.log().config().timestamp_type == TimestampType::LogAppendTime;
        let outcome = ProduceOutcome {
            base_offset: info.first_offset.get(),
            log_start_offset: p.log_start_offset().get(),
            log_append_time_ms: if stamped { info.max_timestamp } else { -1 },
        };
        let end = info.last_offset.next();
        if acks == -1 {
            p.wait_committed(end, epoch, deadline).await?;
        }
        Ok(outcome)
    }

    /// A fresh idempotent producer id with epoch 0, for InitProducerId of either front end:
    /// unique in the cluster and across restarts (`producer_ids.rs`).
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ApiError> {
        let ids = self.producer_ids.clone();
        run_blocking(move || ids.allocate().map(|id| (id, 0))).await
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

    pub(crate) fn parked_fetches_counter(&self) -> &AtomicUsize {
        &self.parked_fetches
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.peers
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs one retention pass over every partition now (the background task also does, every
    /// `log_retention_check_interval_ms`). Returns the number of segments deleted.
    pub async fn enforce_retention(&self) -> usize {
        run_maintenance(&self.registry, Chore::Retention).await
    }

    /// Runs one log-cleaner pass over every local partition of a compacted topic now (the
    /// background task also does, every `log_cleaner_backoff_ms`), below each one's high
    /// watermark.
    pub async fn clean_logs(&self) -> crate::log_cleaner::CleanerPass {
        let limits = crate::log_cleaner::limits(&self.config);
        crate::log_cleaner::clean_all(&self.registry, &self.metrics, &limits).await
    }

    /// Stops the broker: wakes parked fetches, stops background work and the controller, then
    /// flushes and closes every log (writing its clean-shutdown marker). Requests should be
    /// drained first (the server does). Idempotent.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if !self.is_shutting_down() {
            self.controlled_shutdown().await;
        }
        self.begin_shutdown();
        self.fetchers.stop();
        let slot = self.coordinator.write().take();
        if let Some(slot) = slot {
            slot.coordinator.shutdown();
        }
        // Background tasks (replica manager, controller, heartbeats) stop on the signal; the
        // replica manager finishes the image it is on, so no log opens after the drain.
        // The controller may be waiting on a proposal that cannot commit (no majority left)
        // and heartbeats on an unreachable peer: neither holds state worth waiting for. The
        // replica manager and maintenance finish their pass (bounded), so no log opens or
        // flushes behind the drain.
        if let Some(controller) = self.controller.take_task() {
            controller.abort();
        }
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for mut task in tasks {
            if tokio::time::timeout(TASK_STOP_PATIENCE, &mut task).await.is_err() {
                tracing::warn!(
                    "a background task did not stop in {TASK_STOP_PATIENCE:?}; aborting it"
                );
                task.abort();
            }
        }
        self.quorum.shutdown().await;
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
                    p.checkpoint_high_watermark();
                    p.into_log()
                        .close()
                        .map_err(|source| BrokerError::Log { partition: name, source })
                }
                Err(p) => {
                    tracing::warn!(partition = p.name(), "still in use at shutdown; flushing only");
                    p.checkpoint_high_watermark();
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

pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
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
            p.checkpoint_high_watermark_if_due(Instant::now());
            let (before, started) = (p.log().flushed_offset(), Instant::now());
            if let Err(e) = p.log().flush_if_due() {
                p.clamp_high_watermark();
                tracing::error!(partition = p.name(), error = %e, "scheduled flush failed");
            } else if p.log().flushed_offset() != before {
                p.counters().flushed(started.elapsed());
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

/// Heartbeats this node to the active controller (itself or a peer) every
/// `broker_heartbeat_interval_ms`: registers it, keeps it unfenced, and re-registers it when
/// its address changes. Stops when the broker is dropped or shuts down.
async fn heartbeat_loop(broker: std::sync::Weak<Broker>) {
    let (interval, mut shutdown) = match broker.upgrade() {
        Some(b) => {
            (Duration::from_millis(b.config.broker_heartbeat_interval_ms), b.shutdown_signal())
        }
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut shutdown) => return,
        }
        let Some(broker) = broker.upgrade() else { return };
        if broker.heartbeats_stopped.load(Ordering::Acquire) {
            return;
        }
        let registration = broker.registration();
        let send = async {
            match broker.broker_heartbeat(registration.clone()).await {
                Err(e) if e.code == ErrorCode::NotController => {
                    let controller = broker.controller();
                    if controller.address.is_some() {
                        broker.peers.heartbeat(&controller, registration).await
                    } else {
                        // A broker-only node learns the controller from the log it is not
                        // yet a learner of: ask the voters; the controller among them answers.
                        heartbeat_any_voter(&broker, registration).await
                    }
                }
                other => other,
            }
        };
        // A heartbeat stuck on a frozen (former) controller must not hold back the next one
        // to the new controller past this node's session: bound it to a third of the session.
        let patience = Duration::from_millis(broker.config.broker_session_timeout_ms / 3);
        let sent = match tokio::time::timeout(patience, send).await {
            Ok(sent) => sent,
            Err(_) => Err(crate::controller::not_controller()),
        };
        match sent {
            Ok(()) => failing_since = None,
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(error = %e, "cannot reach the controller; retrying");
                    failing_since = Some(Instant::now());
                } else {
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
        }
    }
}

async fn heartbeat_any_voter(
    broker: &Broker,
    registration: BrokerRegistration,
) -> Result<(), ApiError> {
    let mut last = crate::controller::not_controller();
    for (id, address) in &broker.config.voters {
        let view = ControllerView { id: Some(*id), address: Some(address.clone()) };
        match broker.peers.heartbeat(&view, registration.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// An offsets partition this node does not lead: no offsets to replay, commits refused.
#[derive(Debug)]
struct NotLed;

impl OffsetsLog for NotLed {
    fn append(&self, _batch: Bytes) -> Result<Offset, OffsetsLogError> {
        Err(OffsetsLogError::new(ApiError::new(
            ErrorCode::NotCoordinator,
            "this broker does not lead the group's offsets partition",
        )))
    }

    fn read(&self, _from: Offset, _max_bytes: usize) -> Result<Bytes, OffsetsLogError> {
        Ok(Bytes::new())
    }

    fn log_start_offset(&self) -> Offset {
        Offset::new(0)
    }

    fn log_end_offset(&self) -> Offset {
        Offset::new(0)
    }

    fn flush(&self) -> Result<(), OffsetsLogError> {
        Ok(())
    }
}

/// Rebuilds the group coordinator when the set of `__consumer_offsets` partitions this node
/// leads changed (groups of a partition that moved here load its offsets; members of groups
/// that moved away get NOT_COORDINATOR and find the new one), and drops the committed offsets
/// of deleted topics. Blocking (replays offsets).
fn rebuild_coordinator(
    config: &BrokerConfig,
    registry: &Registry,
    slot: &RwLock<Option<CoordinatorSlot>>,
    outcome: &Reconciled,
) {
    let Some(topic) = registry.topic(CONSUMER_OFFSETS_TOPIC) else { return };
    let led: Vec<bool> =
        topic.partitions.iter().map(|p| p.as_ref().is_some_and(|p| p.is_leader())).collect();
    let current = slot.read().clone();
    if let Some(current) = &current {
        if current.led == led {
            delete_offsets(&current.coordinator, &outcome.removed);
            return;
        }
        current.coordinator.shutdown();
    }
    let logs: Vec<Arc<dyn OffsetsLog>> = topic
        .partitions
        .iter()
        .map(|p| match p {
            Some(p) if p.is_leader() => Arc::clone(p) as Arc<dyn OffsetsLog>,
            _ => Arc::new(NotLed) as Arc<dyn OffsetsLog>,
        })
        .collect();
    drop(topic);
    match OffsetStore::load(logs) {
        Ok(store) => {
            tracing::info!(
                node_id = config.node_id,
                led = led.iter().filter(|l| **l).count(),
                groups = store.groups().len(),
                "group coordinator loaded"
            );
            let coordinator = GroupCoordinator::new(config.coordinator_config(), Arc::new(store));
            delete_offsets(&coordinator, &outcome.removed);
            *slot.write() = Some(CoordinatorSlot { led, coordinator });
        }
        Err(e) => {
            tracing::error!(error = %e, "loading committed offsets failed; groups unavailable here");
            *slot.write() = None;
        }
    }
}

fn delete_offsets(coordinator: &GroupCoordinator, topics: &[String]) {
    for topic in topics {
        let (coordinator, topic) = (coordinator.clone(), topic.clone());
        tokio::spawn(async move {
            match coordinator.delete_topic_offsets(&topic).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(topic, offsets = n, "deleted committed offsets"),
                Err(e) => tracing::error!(topic, error = %e, "deleting offsets failed"),
            }
        });
    }
}

/// `host:port` split for a client's endpoint.
fn split_host_port(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
}
