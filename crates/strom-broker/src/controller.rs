//! The active controller's shell: one task on every node that acts only while the node is the
//! quorum's leader. It takes topic changes and broker heartbeats one at a time from a bounded
//! queue, decides with the pure logic of [`strom_quorum::controller`], and proposes the
//! resulting records. Nothing here changes local state: every node (this one included) acts on
//! the records once they are committed (`replicas.rs`).
//!
//! Serialising decisions in one task means each is made on the image the previous one left:
//! two creates of one name cannot both pass validation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strom_coordinator::CONSUMER_OFFSETS_TOPIC;
use strom_proto::v1::ErrorCode;
use strom_quorum::controller::{
    AlterPartitionError, Controller, ControllerConfig, PlacementError, alter_partition,
    controlled_shutdown, place_partitions,
};
use strom_quorum::{
    BrokerRegistration, MetadataError, MetadataRecord, MetadataState, NewPartitionsError,
    TopicRecord, new_partitions,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::ApiError;
use crate::quorum::QuorumLog;

/// Requests waiting for the controller beyond this many are refused with back-pressure.
const QUEUE_LEN: usize = 1024;
/// How often the controller looks for expired sessions and leaderless partitions.
const TICK: Duration = Duration::from_millis(100);
/// How long a new controller waits for every voter to register before it creates
/// `__consumer_offsets` over whichever brokers are live.
const OFFSETS_TOPIC_GRACE: Duration = Duration::from_secs(5);
/// Segment size of `__consumer_offsets` (Kafka's `offsets.topic.segment.bytes`).
const OFFSETS_SEGMENT_BYTES: u64 = 100 << 20;

/// A request to the active controller.
#[derive(Debug)]
pub(crate) enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    DeleteTopic {
        name: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Heartbeat {
        registration: BrokerRegistration,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// A partition leader's ISR change; answers whether a change was committed.
    AlterPartition {
        request: AlterPartition,
        reply: oneshot::Sender<Result<bool, ApiError>>,
    },
    /// Adds partitions to a topic.
    CreatePartitions {
        request: crate::types::NewPartitions,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Sets and removes topic config overrides.
    AlterConfig {
        change: crate::types::ConfigAlteration,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// ElectLeaders: one result per partition, in order (the new leader, or why none).
    ElectLeaders {
        election: crate::elect_leaders::ElectionType,
        partitions: Vec<(String, i32)>,
        reply: oneshot::Sender<Result<Vec<Result<i32, ApiError>>, ApiError>>,
    },
    /// A broker shutting down cleanly: fence it and move its leadership away now.
    ControlledShutdown {
        node_id: i32,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
}

/// A leader's ISR change as the controller receives it.
#[derive(Debug, Clone)]
pub(crate) struct AlterPartition {
    pub(crate) from: i32,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) partition_epoch: i32,
    pub(crate) isr: Vec<i32>,
}

impl From<&strom_proto::v1::AlterPartitionRequest> for AlterPartition {
    fn from(r: &strom_proto::v1::AlterPartitionRequest) -> Self {
        AlterPartition {
            from: r.broker_id,
            topic: r.topic.clone(),
            partition: r.partition,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            isr: r.new_isr.clone(),
        }
    }
}

/// The error a node that is not the controller answers with; callers forward to the leader.
pub(crate) fn not_controller() -> ApiError {
    ApiError::new(ErrorCode::NotController, "this node is not the active controller")
}

/// The request side's handle on the controller task.
#[derive(Debug)]
pub(crate) struct ControllerHandle {
    commands: mpsc::Sender<Command>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl ControllerHandle {
    pub(crate) fn spawn(
        config: Arc<BrokerConfig>,
        quorum: Arc<dyn QuorumLog>,
        voters: usize,
        shutdown: watch::Receiver<bool>,
    ) -> ControllerHandle {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let task = tokio::spawn(run(config, quorum, voters, rx, shutdown));
        ControllerHandle { commands: tx, task: parking_lot::Mutex::new(Some(task)) }
    }

    /// Sends a command and waits for the controller's answer.
    pub(crate) async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Command,
    ) -> Result<T, ApiError> {
        let unavailable =
            || ApiError::new(ErrorCode::UnknownServerError, "the controller is shutting down");
        let (reply, answer) = oneshot::channel();
        self.commands.try_send(command(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                ErrorCode::RequestTimedOut,
                format!("the controller has {QUEUE_LEN} requests queued; try again"),
            ),
            mpsc::error::TrySendError::Closed(_) => unavailable(),
        })?;
        answer.await.map_err(|_| unavailable())?
    }

    pub(crate) fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().take()
    }
}

struct Active {
    config: Arc<BrokerConfig>,
    quorum: Arc<dyn QuorumLog>,
    image: watch::Receiver<Arc<crate::quorum::Image>>,
    voters: usize,
    /// Soft state of the current term of leadership; `None` while not the leader.
    logic: Option<(Controller, Instant)>,
    /// Broker-only nodes being added as learners (or added) in this term of leadership.
    learners: Arc<parking_lot::Mutex<std::collections::BTreeSet<i32>>>,
    epoch: Instant,
}

async fn run(
    config: Arc<BrokerConfig>,
    quorum: Arc<dyn QuorumLog>,
    voters: usize,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let image = quorum.image();
    let learners = Arc::default();
    let mut active =
        Active { config, quorum, image, voters, logic: None, learners, epoch: Instant::now() };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => active.handle(command).await,
                None => break,
            },
            _ = tick.tick() => active.tick().await,
            () = crate::broker::stopped(&mut shutdown) => break,
        }
    }
    tracing::debug!("controller task stopped");
}

impl Active {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn state(&self) -> MetadataState {
        self.image.borrow().state.clone()
    }

    /// The pure controller of this term of leadership, created when leadership is (re)gained.
    fn logic(&mut self) -> Option<&mut Controller> {
        if !self.quorum.is_controller() {
            self.logic = None;
            self.learners.lock().clear();
            return None;
        }
        if self.logic.is_none() {
            let now = self.now_ms();
            let config =
                ControllerConfig { session_timeout_ms: self.config.broker_session_timeout_ms };
            tracing::info!(node_id = self.config.node_id, "became the active controller");
            self.logic = Some((Controller::new(config, now), Instant::now()));
        }
        self.logic.as_mut().map(|(c, _)| c)
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::CreateTopic { name, partitions, replication_factor, configs, reply } => {
                let result = self.create_topic(name, partitions, replication_factor, configs).await;
                let _ = reply.send(result);
            }
            Command::DeleteTopic { name, reply } => {
                let result = self.delete_topic(name).await;
                let _ = reply.send(result);
            }
            Command::Heartbeat { registration, reply } => {
                let result = self.heartbeat(registration).await;
                let _ = reply.send(result);
            }
            Command::AlterPartition { request, reply } => {
                let result = self.alter_partition(request).await;
                let _ = reply.send(result);
            }
            Command::CreatePartitions { request, reply } => {
                let result = self.create_partitions(request).await;
                let _ = reply.send(result);
            }
            Command::AlterConfig { change, reply } => {
                let result = self.alter_config(change).await;
                let _ = reply.send(result);
            }
            Command::ControlledShutdown { node_id, reply } => {
                let result = self.controlled_shutdown(node_id).await;
                let _ = reply.send(result);
            }
            Command::ElectLeaders { election, partitions, reply } => {
                let result = self.elect_leaders(election, partitions).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn tick(&mut self) {
        let now = self.now_ms();
        let state = self.state();
        let Some(logic) = self.logic() else { return };
        let records = logic.tick(&state, now);
        self.propose_all(records).await;
        self.ensure_offsets_topic().await;
    }

    async fn heartbeat(&mut self, registration: BrokerRegistration) -> Result<(), ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let node_id = registration.node_id;
        self.ensure_learner(node_id, &registration.address);
        let mut state = self.state();
        let previous = state.broker(node_id).map(|b| (b.registration.incarnation, b.fenced));
        if node_id == self.config.node_id
            && previous.is_some_and(|(i, fenced)| i != registration.incarnation && !fenced)
        {
            // This process is the new incarnation of the controller's own node: the old one is
            // certainly gone (the data directory is locked), so it is fenced now rather than
            // after its session, moving its leaderships to new epochs before this one leads.
            let fence = controlled_shutdown(&state, node_id);
            self.propose_all(fence).await;
            state = self.state();
        }
        let now = self.now_ms();
        let records = match self.logic() {
            Some(logic) => logic.on_register(&state, registration.clone(), now).map_err(|e| {
                ApiError::new(
                    ErrorCode::DuplicateBrokerRegistration,
                    format!("{e}; retrying until the old incarnation's session expires"),
                )
            })?,
            None => return Err(not_controller()),
        };
        if records.iter().any(|r| matches!(r, MetadataRecord::RegisterBroker(_))) {
            tracing::info!(node_id, address = %registration.address, "broker registered");
        }
        for record in records {
            self.propose(record).await?;
        }
        Ok(())
    }

    async fn alter_partition(&mut self, r: AlterPartition) -> Result<bool, ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let state = self.state();
        let change = alter_partition(
            &state,
            &r.topic,
            r.partition,
            r.from,
            r.leader_epoch,
            r.partition_epoch,
            r.isr,
        )
        .map_err(alter_partition_error)?;
        let Some(change) = change else { return Ok(false) };
        tracing::info!(topic = %change.topic, partition = change.partition, isr = ?change.isr,
            partition_epoch = change.partition_epoch, "ISR change");
        self.propose(MetadataRecord::PartitionChange(change)).await?;
        Ok(true)
    }

    async fn alter_config(
        &mut self,
        change: crate::types::ConfigAlteration,
    ) -> Result<(), ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let state = self.state();
        let topic =
            state.topic(&change.topic).ok_or_else(|| ApiError::unknown_topic(&change.topic))?;
        let records = config_records(&self.config, &change, &topic.configs)?;
        for record in records {
            self.propose(record).await?;
        }
        Ok(())
    }

    async fn create_partitions(
        &mut self,
        request: crate::types::NewPartitions,
    ) -> Result<(), ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let record = new_partitions_record(&self.state(), &request)?;
        if let MetadataRecord::CreatePartitions { name, partitions } = &record {
            tracing::info!(topic = %name, added = partitions.len(), count = request.count,
                "adding partitions");
        }
        self.propose(record).await
    }

    /// One election per partition, each decided on the image the previous one left.
    async fn elect_leaders(
        &mut self,
        election: crate::elect_leaders::ElectionType,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<i32, ApiError>>, ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let mut out = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let state = self.state();
            let result =
                match crate::elect_leaders::election_change(&state, election, &topic, partition) {
                    Ok(change) => {
                        let leader = change.leader;
                        tracing::info!(%topic, partition, leader, ?election,
                            leader_epoch = change.leader_epoch, "leader election asked for");
                        self.propose(MetadataRecord::PartitionChange(change)).await.map(|()| leader)
                    }
                    Err(e) => Err(e),
                };
            out.push(result);
        }
        Ok(out)
    }

    async fn controlled_shutdown(&mut self, node_id: i32) -> Result<(), ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let state = self.state();
        let records = match self.logic() {
            Some(logic) => logic.on_controlled_shutdown(&state, node_id),
            None => return Err(not_controller()),
        };
        if !records.is_empty() {
            tracing::info!(node_id, changes = records.len() - 1, "controlled shutdown");
        }
        for record in records {
            self.propose(record).await?;
        }
        Ok(())
    }

    /// A node outside the voters follows the metadata log as a Raft learner; adding it waits
    /// for it to catch up, so it runs beside the controller loop.
    fn ensure_learner(&self, node_id: i32, address: &str) {
        let voter = if self.config.voters.is_empty() {
            node_id == self.config.node_id
        } else {
            self.config.voters.contains_key(&node_id)
        };
        if voter || !self.learners.lock().insert(node_id) {
            return;
        }
        let (learners, adding) =
            (self.learners.clone(), self.quorum.add_learner(node_id, address.to_string()));
        tracing::info!(
            node_id,
            address,
            "adding broker-only node as a learner of the metadata log"
        );
        tokio::spawn(async move {
            if let Err(e) = adding.await {
                tracing::warn!(node_id, error = %e, "adding learner failed; retrying on its next heartbeat");
                learners.lock().remove(&node_id);
            }
        });
    }

    /// Creates `__consumer_offsets` once every voter has registered (or after a grace period,
    /// over the live brokers), so its partitions spread over the whole cluster.
    async fn ensure_offsets_topic(&mut self) {
        let state = self.state();
        if let Some(topic) = state.topic(CONSUMER_OFFSETS_TOPIC) {
            // Created before offsets were compacted: it has no cleanup.policy of its own, so
            // it would grow forever under `delete` with infinite retention. An operator's
            // explicit choice (any value) is kept.
            if !topic.configs.contains_key("cleanup.policy") && self.logic.is_some() {
                let record = MetadataRecord::ConfigChange {
                    topic: CONSUMER_OFFSETS_TOPIC.into(),
                    key: "cleanup.policy".into(),
                    value: Some("compact".into()),
                };
                match self.propose(record).await {
                    Ok(()) => tracing::info!("{CONSUMER_OFFSETS_TOPIC} is now compacted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "compacting {CONSUMER_OFFSETS_TOPIC} failed")
                    }
                }
            }
            return;
        }
        let Some((_, since)) = &self.logic else { return };
        let live = state.live_brokers().len();
        if live == 0 || (live < self.voters && since.elapsed() < OFFSETS_TOPIC_GRACE) {
            return;
        }
        let configs = [
            ("retention.ms", "-1".to_string()),
            ("retention.bytes", "-1".to_string()),
            ("segment.bytes", OFFSETS_SEGMENT_BYTES.to_string()),
            // Kafka's: the cleaner keeps the latest commit per (group, partition) and drops
            // the tombstones of expired or deleted groups.
            ("cleanup.policy", "compact".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let rf = self.config.offsets_topic_replication_factor.min(live as i32).max(1);
        let partitions = self.config.offsets_topic_num_partitions;
        match self.create_topic(CONSUMER_OFFSETS_TOPIC.into(), partitions, rf, configs).await {
            Ok(()) => tracing::info!(partitions, rf, "created {CONSUMER_OFFSETS_TOPIC}"),
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
            Err(e) => tracing::warn!(error = %e, "creating {CONSUMER_OFFSETS_TOPIC} failed"),
        }
    }

    async fn create_topic(
        &mut self,
        name: String,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        let state = self.state();
        if state.topic(&name).is_some() {
            return Err(topic_exists(&name));
        }
        TopicConfig::resolve(&self.config, &configs)?;
        let rf = if replication_factor <= 0 {
            self.config.default_replication_factor.min(state.live_brokers().len() as i32).max(1)
        } else {
            replication_factor
        };
        let placed = place_partitions(&state, 0, partitions, rf).map_err(placement_error)?;
        let record = MetadataRecord::CreateTopic(TopicRecord {
            topic_id: topic_id(&name, self.now_ms(), self.config.node_id),
            name,
            configs,
            partitions: placed,
        });
        self.propose(record).await
    }

    async fn delete_topic(&mut self, name: String) -> Result<(), ApiError> {
        if self.logic().is_none() {
            return Err(not_controller());
        }
        if self.state().topic(&name).is_none() {
            return Err(ApiError::unknown_topic(&name));
        }
        self.propose(MetadataRecord::DeleteTopic { name }).await
    }

    async fn propose(&mut self, record: MetadataRecord) -> Result<(), ApiError> {
        match self.quorum.propose(record).await? {
            Ok(()) => Ok(()),
            Err(MetadataError::TopicExists(name)) => Err(topic_exists(&name)),
            Err(MetadataError::UnknownTopic(name)) => Err(ApiError::unknown_topic(&name)),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidRequest, e.to_string())),
        }
    }

    async fn propose_all(&mut self, records: Vec<MetadataRecord>) {
        for record in records {
            if let Err(e) = self.propose(record.clone()).await {
                // The next tick decides again on the image as it then is.
                tracing::warn!(error = %e, ?record, "controller proposal failed");
                return;
            }
        }
    }
}

/// The ConfigChange records of `change` on a topic whose overrides are `current`, after
/// checking that the result is a valid topic config (all or nothing).
pub(crate) fn config_records(
    config: &BrokerConfig,
    change: &crate::types::ConfigAlteration,
    current: &BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let mut merged = current.clone();
    for key in &change.delete {
        merged.remove(key);
    }
    for (key, value) in &change.set {
        merged.insert(key.clone(), value.clone());
    }
    TopicConfig::resolve(config, &merged)?;
    let mut records = Vec::new();
    for key in &change.delete {
        if current.contains_key(key) && !change.set.contains_key(key) {
            records.push(MetadataRecord::ConfigChange {
                topic: change.topic.clone(),
                key: key.clone(),
                value: None,
            });
        }
    }
    for (key, value) in &change.set {
        if current.get(key) != Some(value) {
            records.push(MetadataRecord::ConfigChange {
                topic: change.topic.clone(),
                key: key.clone(),
                value: Some(value.clone()),
            });
        }
    }
    Ok(records)
}

/// The CreatePartitions record for `request` on `state`, or the Kafka error that refuses it.
/// The receiving broker runs it too, for `validate_only` and to answer without a round trip.
pub(crate) fn new_partitions_record(
    state: &MetadataState,
    request: &crate::types::NewPartitions,
) -> Result<MetadataRecord, ApiError> {
    if request.topic == CONSUMER_OFFSETS_TOPIC {
        // Groups map to offsets partitions by `hash % offsets_topic_num_partitions`: more
        // partitions would move groups away from their committed offsets.
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!("partitions cannot be added to the internal topic {CONSUMER_OFFSETS_TOPIC}"),
        ));
    }
    new_partitions(
        state,
        &request.topic,
        request.count,
        request.assignment.as_deref(),
        crate::config::MAX_PARTITIONS,
    )
    .map_err(|e| {
        let code = match &e {
            NewPartitionsError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            NewPartitionsError::InvalidCount(_) => ErrorCode::InvalidPartitions,
            NewPartitionsError::InvalidAssignment(_) => ErrorCode::InvalidReplicaAssignment,
            _ => ErrorCode::InvalidReplicationFactor,
        };
        ApiError::new(code, e.to_string())
    })
}

fn alter_partition_error(e: AlterPartitionError) -> ApiError {
    let code = match &e {
        AlterPartitionError::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
        AlterPartitionError::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
        AlterPartitionError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
        AlterPartitionError::StalePartitionEpoch { .. } => ErrorCode::InvalidUpdateVersion,
        AlterPartitionError::IneligibleReplica { .. } => ErrorCode::IneligibleReplica,
        _ => ErrorCode::InvalidRequest,
    };
    ApiError::new(code, e.to_string())
}

fn placement_error(e: PlacementError) -> ApiError {
    ApiError::new(ErrorCode::InvalidReplicationFactor, e.to_string())
}

fn topic_exists(name: &str) -> ApiError {
    ApiError::new(ErrorCode::TopicAlreadyExists, format!("topic {name:?} already exists"))
}

/// A topic id unique per creation: the name alone would make a re-created topic look like
/// the old one to a broker that missed the deletion.
fn topic_id(name: &str, now_ms: u64, node: i32) -> String {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(now_ms);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:016x}{:016x}", h ^ (node as u64), wall)
}
