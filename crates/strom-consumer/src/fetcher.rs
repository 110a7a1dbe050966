//! The fetch engine: turns the positions of a set of partitions into pipelined Fetch RPCs (at
//! most one in flight per leader broker), resolves missing positions with ListOffsets, and hands
//! decoded records out in offset order.
//!
//! It does not decide which partitions to read: [`Consumer`](crate::Consumer) feeds it a manual
//! assignment or the one its consumer group hands out, through [`Fetcher::assign`]. Partitions
//! whose starting point is the group's committed offset wait in [`Position::Awaiting`] until
//! the consumer has read it; nothing is fetched for them before.
//!
//! Every RPC runs as a task in a [`JoinSet`], so fetches progress while the application works
//! on the previous poll's records; all bookkeeping stays in this struct and is touched only by
//! the caller's `&mut self`, so no lock exists, let alone one held across `.await`. A
//! partition's `epoch` changes whenever its position is set from outside (seek, reset), and a
//! response fetched for an older epoch is dropped: nothing below or beside the position the
//! application chose is ever returned.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use strom_client::{Client, ClientError, ErrorCode, TopicInfo};
use strom_format::{Offset, PartitionId};
use strom_proto::v1::broker_client::BrokerClient;
use strom_proto::v1::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsTopic,
};
use tokio::sync::Notify;
use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::decode::{Decoded, decode_partition};
use crate::{ConsumerConfig, ConsumerError, ConsumerRecord, OffsetReset, SeekTo, TopicPartition};

/// Ceiling of the exponential backoff after repeated retriable failures (unless the configured
/// base backoff is larger).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// ListOffsets' special timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
/// Errors kept for later polls; beyond this they are only logged.
const MAX_PENDING_ERRORS: usize = 64;
/// Room left in a gRPC message for everything but record bytes.
const RESPONSE_OVERHEAD: usize = 64 * 1024;
/// Slack on top of the RPC deadline before the task gives up on its own, in case the
/// transport does not enforce the deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// The fetch settings of a [`ConsumerConfig`], checked and converted to wire units.
#[derive(Debug, Clone)]
struct Settings {
    min_bytes: u32,
    max_wait: Duration,
    max_wait_ms: u32,
    max_bytes: u32,
    partition_max_bytes: u32,
    reset: OffsetReset,
    max_poll_records: usize,
    retry_backoff: Duration,
    storage_error_timeout: Duration,
    rpc_deadline: Duration,
    /// Largest batch the consumer will ask for when one does not fit the usual limits.
    max_batch_bytes: usize,
}

/// Where a partition without a known position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTo {
    Earliest,
    Latest,
    Timestamp(i64),
    /// `auto_offset_reset`.
    Policy,
}

#[derive(Debug, Clone, Copy)]
enum Position {
    /// The offset of the next record to hand to the application.
    Known(Offset),
    /// To be resolved with ListOffsets before fetching.
    Reset(ResetTo),
    /// Waiting for the consumer to look up the group's committed offset.
    Awaiting,
}

#[derive(Debug)]
struct PartitionState {
    /// Shared by every record of the partition.
    topic: Arc<str>,
    position: Position,
    /// Changes when the position is set from outside; responses for another epoch are stale.
    epoch: u64,
    /// The Fetch or ListOffsets task that includes this partition.
    in_flight: Option<TaskId>,
    /// Fetched data of this partition waits in `Fetcher::completed`.
    buffered: bool,
    /// Consecutive retriable failures, for the exponential backoff.
    failures: u32,
    retry_at: Option<Instant>,
    /// When the partition's current run of KAFKA_STORAGE_ERROR answers began.
    storage_error_since: Option<Instant>,
    /// Raised per-partition fetch limit after a response held only part of a large batch.
    max_bytes_override: Option<u32>,
    /// The high watermark of the partition's last fetch response: a position at or past it
    /// means the broker had nothing more when it answered (see [`PartitionState::drained`]).
    high_watermark: Option<Offset>,
}

impl PartitionState {
    fn new(topic: Arc<str>, epoch: u64, position: Position) -> Self {
        PartitionState {
            topic,
            position,
            epoch,
            in_flight: None,
            buffered: false,
            failures: 0,
            retry_at: None,
            storage_error_since: None,
            max_bytes_override: None,
            high_watermark: None,
        }
    }

    /// Whether the broker's last answer said there is nothing past this partition's position:
    /// a fetch of drained partitions alone would be parked for up to `fetch.max.wait`.
    fn drained(&self) -> bool {
        match (self.position, self.high_watermark) {
            (Position::Known(position), Some(hw)) => position >= hw,
            _ => false,
        }
    }

    /// Whether the partition will be ready to fetch as soon as the application takes its
    /// buffered records or its position lookup returns: something to wait for rather than
    /// park a fetch of drained partitions in front of.
    fn about_to_fetch(&self) -> bool {
        self.buffered || (matches!(self.position, Position::Reset(_)) && self.in_flight.is_some())
    }

    fn ready(&self, now: Instant) -> bool {
        self.in_flight.is_none() && !self.buffered && self.retry_at.is_none_or(|t| t <= now)
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.storage_error_since = None;
    }
}

/// One partition of a fetch request.
#[derive(Debug, Clone)]
struct Planned {
    tp: TopicPartition,
    topic: Arc<str>,
    epoch: u64,
    fetch_offset: Offset,
    max_bytes: u32,
}

/// What the fetcher remembers about each running task; the task itself only returns data.
#[derive(Debug)]
enum Request {
    Fetch { broker: i32, plan: Vec<Planned>, reserved: usize },
    Reset { broker: i32, plan: Vec<PlannedReset> },
    Metadata { topic: Arc<str> },
}

/// One partition of a ListOffsets request.
#[derive(Debug, Clone)]
struct PlannedReset {
    tp: TopicPartition,
    topic: Arc<str>,
    epoch: u64,
    /// ListOffsets' encoding: -2 earliest, -1 latest, else a timestamp.
    timestamp: i64,
}

#[derive(Debug)]
enum TaskOutput {
    /// One outcome per planned partition, in plan order.
    Fetch(Result<Vec<PartitionOutcome>, ClientError>),
    /// One offset (or error) per planned partition, in plan order.
    Reset(Result<Vec<Result<Offset, ClientError>>, ClientError>),
    Metadata(Result<(), ClientError>),
}

#[derive(Debug)]
enum PartitionOutcome {
    /// The partition's records, and its high watermark when the broker answered (-1: unknown).
    Data(Decoded, i64),
    Error {
        code: i32,
        message: String,
    },
    /// The broker left the partition out of its response.
    Missing,
}

/// Fetched records of one partition, waiting to be handed out.
#[derive(Debug)]
struct Completed {
    tp: TopicPartition,
    epoch: u64,
    records: std::vec::IntoIter<ConsumerRecord>,
    /// The position once every record above has been handed out.
    next_offset: Offset,
    /// Raised once the records before it have been handed out.
    error: Option<ConsumerError>,
    bytes: usize,
}

impl Completed {
    /// A partition's answer that is only an error: no records, position unchanged.
    fn failed(p: &Planned, error: ConsumerError) -> Completed {
        Completed {
            tp: p.tp.clone(),
            epoch: p.epoch,
            records: Vec::new().into_iter(),
            next_offset: p.fetch_offset,
            error: Some(error),
            bytes: 0,
        }
    }
}

/// The fetch engine; see the module documentation.
#[derive(Debug)]
pub(crate) struct Fetcher {
    client: Client,
    settings: Settings,
    partitions: HashMap<TopicPartition, PartitionState>,
    completed: VecDeque<Completed>,
    /// Bytes of fetched data in `completed`.
    buffered_bytes: usize,
    /// Response bytes the in-flight fetches may bring.
    reserved_bytes: usize,
    tasks: JoinSet<TaskOutput>,
    requests: HashMap<TaskId, Request>,
    busy_brokers: HashSet<i32>,
    /// Brokers with a ListOffsets in flight (one each, like fetches).
    resetting_brokers: HashSet<i32>,
    /// Topics whose metadata should be refreshed before their partitions are retried.
    stale_topics: HashSet<Arc<str>>,
    refreshing: HashSet<Arc<str>>,
    /// Errors not tied to buffered data, raised by the next poll.
    errors: VecDeque<ConsumerError>,
    next_epoch: u64,
}

impl Fetcher {
    pub(crate) fn new(client: Client, config: &ConsumerConfig) -> Self {
        let max_wait_ms = u32::try_from(config.fetch_max_wait.as_millis()).unwrap_or(u32::MAX);
        let max_message = client.config().max_message_bytes;
        let settings = Settings {
            min_bytes: config.fetch_min_bytes,
            max_wait: config.fetch_max_wait,
            max_wait_ms,
            max_bytes: config.fetch_max_bytes,
            partition_max_bytes: config.max_partition_fetch_bytes,
            reset: config.auto_offset_reset,
            max_poll_records: config.max_poll_records,
            retry_backoff: config.retry_backoff,
            storage_error_timeout: config.storage_error_timeout,
            rpc_deadline: client
                .config()
                .request_timeout
                .saturating_add(config.fetch_max_wait)
                .saturating_add(DEADLINE_SLACK),
            max_batch_bytes: max_message
                .saturating_sub(RESPONSE_OVERHEAD)
                .min(u32::MAX as usize)
                .max(1),
        };
        Fetcher {
            client,
            settings,
            partitions: HashMap::new(),
            completed: VecDeque::new(),
            buffered_bytes: 0,
            reserved_bytes: 0,
            tasks: JoinSet::new(),
            requests: HashMap::new(),
            busy_brokers: HashSet::new(),
            resetting_brokers: HashSet::new(),
            stale_topics: HashSet::new(),
            refreshing: HashSet::new(),
            errors: VecDeque::new(),
            next_epoch: 0,
        }
    }

    /// Replaces the set of partitions read. Partitions that stay keep their positions and any
    /// data already fetched; new ones start without a position: `auto_offset_reset`, or, with
    /// `await_committed`, nothing until [`Fetcher::resolve_committed`] says where.
    pub(crate) fn assign(&mut self, partitions: &[TopicPartition], await_committed: bool) {
        let initial =
            if await_committed { Position::Awaiting } else { Position::Reset(ResetTo::Policy) };
        let mut topics: HashMap<&str, Arc<str>> = HashMap::new();
        let mut next = HashMap::with_capacity(partitions.len());
        for tp in partitions {
            if next.contains_key(tp) {
                continue;
            }
            let state = match self.partitions.remove(tp) {
                Some(state) => state,
                None => {
                    let topic = topics
                        .entry(tp.topic.as_str())
                        .or_insert_with(|| Arc::from(tp.topic.as_str()))
                        .clone();
                    let epoch = self.bump_epoch();
                    PartitionState::new(topic, epoch, initial)
                }
            };
            next.insert(tp.clone(), state);
        }
        self.partitions = next;
        let partitions = &self.partitions;
        let freed = remove_completed(&mut self.completed, |c| !partitions.contains_key(&c.tp));
        self.buffered_bytes = self.buffered_bytes.saturating_sub(freed);
    }

    /// The partitions still waiting for their committed offset.
    pub(crate) fn awaiting(&self) -> Vec<TopicPartition> {
        let mut out: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| matches!(s.position, Position::Awaiting))
            .map(|(tp, _)| tp.clone())
            .collect();
        out.sort();
        out
    }

    /// Starts a partition that waits for its committed offset: there, or per
    /// `auto_offset_reset` without one. A partition sought in the meantime keeps that position.
    pub(crate) fn resolve_committed(&mut self, tp: &TopicPartition, committed: Option<Offset>) {
        let epoch = self.bump_epoch();
        let Some(state) = self.partitions.get_mut(tp) else { return };
        if !matches!(state.position, Position::Awaiting) {
            return;
        }
        state.position = match committed {
            Some(offset) if offset.get() >= 0 => Position::Known(offset),
            _ => Position::Reset(ResetTo::Policy),
        };
        state.epoch = epoch;
    }

    /// Sets where the next record of `tp` comes from; data fetched from elsewhere is dropped.
    pub(crate) fn seek(&mut self, tp: &TopicPartition, to: SeekTo) -> Result<(), ConsumerError> {
        let position = match to {
            SeekTo::Beginning => Position::Reset(ResetTo::Earliest),
            SeekTo::End => Position::Reset(ResetTo::Latest),
            SeekTo::Offset(o) if o.get() >= 0 => Position::Known(o),
            SeekTo::Offset(o) => {
                return Err(ConsumerError::InvalidArgument(format!("negative offset {o}")));
            }
            SeekTo::Timestamp(t) if t >= 0 => Position::Reset(ResetTo::Timestamp(t)),
            SeekTo::Timestamp(t) => {
                return Err(ConsumerError::InvalidArgument(format!("negative timestamp {t}")));
            }
        };
        let epoch = self.bump_epoch();
        let state =
            self.partitions.get_mut(tp).ok_or_else(|| ConsumerError::NotAssigned(tp.clone()))?;
        state.position = position;
        state.epoch = epoch;
        state.succeeded();
        state.max_bytes_override = None;
        if state.buffered {
            state.buffered = false;
            let freed = remove_completed(&mut self.completed, |c| &c.tp == tp);
            self.buffered_bytes = self.buffered_bytes.saturating_sub(freed);
        }
        Ok(())
    }

    /// The offset of the next record `poll` returns for `tp`, if known.
    pub(crate) fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        match self.partitions.get(tp)?.position {
            Position::Known(offset) => Some(offset),
            Position::Reset(_) | Position::Awaiting => None,
        }
    }

    /// Returns buffered records at once, else waits up to `timeout` for some to arrive; then
    /// starts the next fetches before returning, so they overlap the application's work.
    ///
    /// `interrupt` ends the wait early with no records (the group needs the consumer's
    /// attention). Cancel-safe: the only `.await` is the wait, which comes before any record
    /// is taken from the buffer, so a dropped poll loses nothing.
    pub(crate) async fn poll(
        &mut self,
        timeout: Duration,
        interrupt: Option<&Notify>,
    ) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        let start = Instant::now();
        // A timeout too large to represent means "no timeout" in practice.
        let deadline =
            start.checked_add(timeout).unwrap_or_else(|| start + Duration::from_secs(86_400));
        loop {
            while let Some(joined) = self.tasks.try_join_next_with_id() {
                self.on_joined(joined);
            }
            if let Some(e) = self.errors.pop_front() {
                return Err(e);
            }
            if self.settings.reset == OffsetReset::None {
                let missing = self.partitions.iter().find(|(_, s)| {
                    matches!(s.position, Position::Reset(ResetTo::Policy)) && s.in_flight.is_none()
                });
                if let Some((tp, _)) = missing {
                    return Err(ConsumerError::NoOffset(tp.clone()));
                }
            }
            let records = self.drain()?;
            self.start_work();
            if !records.is_empty() {
                return Ok(records);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            if self.wait(deadline, interrupt).await {
                return Ok(Vec::new());
            }
        }
    }

    fn bump_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// Hands out up to `max_poll_records` buffered records, oldest fetch first, and advances
    /// positions past them. A buffered error is raised once the records before it are out.
    fn drain(&mut self) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        let max = self.settings.max_poll_records;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(front) = self.completed.front_mut() else { break };
            let state = self.partitions.get_mut(&front.tp).filter(|s| s.epoch == front.epoch);
            let Some(state) = state else {
                // Unassigned or sought since it was fetched.
                self.pop_completed();
                continue;
            };
            let room = max - out.len();
            if out.is_empty() {
                out.reserve(room.min(front.records.len()));
            }
            for record in front.records.by_ref().take(room) {
                state.position = Position::Known(record.offset.next());
                out.push(record);
            }
            if front.records.len() > 0 || (front.error.is_some() && !out.is_empty()) {
                break;
            }
            if let Position::Known(current) = state.position {
                state.position = Position::Known(current.max(front.next_offset));
            }
            state.buffered = false;
            if let Some(done) = self.pop_completed()
                && let Some(e) = done.error
            {
                return Err(e);
            }
        }
        Ok(out)
    }

    fn pop_completed(&mut self) -> Option<Completed> {
        let done = self.completed.pop_front()?;
        self.buffered_bytes = self.buffered_bytes.saturating_sub(done.bytes);
        Some(done)
    }

    /// Starts whatever RPCs the current state calls for. Never waits: the RPCs run as tasks,
    /// and partitions whose topic metadata is not cached yet go after the refresh it starts.
    fn start_work(&mut self) {
        let now = Instant::now();
        self.start_resets(now);
        self.start_fetches(now);
        self.start_metadata_refreshes();
    }

    fn start_metadata_refreshes(&mut self) {
        let stale: Vec<Arc<str>> = self.stale_topics.drain().collect();
        for topic in stale {
            if !self.refreshing.insert(Arc::clone(&topic)) {
                continue;
            }
            let client = self.client.clone();
            let name = Arc::clone(&topic);
            let handle = self.tasks.spawn(async move {
                TaskOutput::Metadata(client.refresh_metadata(&name).await.map(|_| ()))
            });
            self.requests.insert(handle.id(), Request::Metadata { topic });
        }
    }

    /// Resolves missing positions with one ListOffsets per leader broker, so every partition
    /// of a fresh assignment gets its position (and its first fetch) together.
    fn start_resets(&mut self, now: Instant) {
        let policy = self.settings.reset;
        let mut candidates = Vec::new();
        for (tp, state) in &self.partitions {
            let Position::Reset(to) = state.position else { continue };
            if !state.ready(now) {
                continue;
            }
            let timestamp = match (to, policy) {
                (ResetTo::Earliest, _) | (ResetTo::Policy, OffsetReset::Earliest) => EARLIEST,
                (ResetTo::Latest, _) | (ResetTo::Policy, OffsetReset::Latest) => LATEST,
                (ResetTo::Timestamp(t), _) => t,
                // `poll` raises NoOffset for it.
                (ResetTo::Policy, OffsetReset::None) => continue,
            };
            candidates.push(PlannedReset {
                tp: tp.clone(),
                topic: Arc::clone(&state.topic),
                epoch: state.epoch,
                timestamp,
            });
        }
        if candidates.is_empty() {
            return;
        }
        let routed = self.route(candidates, |c| (&c.tp, &c.topic));
        for (broker, plan) in routed {
            if self.resetting_brokers.contains(&broker) {
                continue;
            }
            let Some(channel) = self.leader_or_retry(broker, &plan, |p| (&p.tp, &p.topic)) else {
                continue;
            };
            let targets: Vec<(Arc<str>, PartitionId, i64)> =
                plan.iter().map(|p| (Arc::clone(&p.topic), p.tp.partition, p.timestamp)).collect();
            let client = self.client.clone();
            let handle = self.tasks.spawn(async move {
                TaskOutput::Reset(list_offsets(&client, channel, targets).await)
            });
            for p in &plan {
                if let Some(state) = self.partitions.get_mut(&p.tp) {
                    state.in_flight = Some(handle.id());
                }
            }
            self.resetting_brokers.insert(broker);
            self.requests.insert(handle.id(), Request::Reset { broker, plan });
        }
    }

    /// The data-plane client of `broker`, or `None` after every partition of `plan` was put
    /// on backoff because the broker cannot be reached.
    fn leader_or_retry<T>(
        &mut self,
        broker: i32,
        plan: &[T],
        key: impl Fn(&T) -> (&TopicPartition, &Arc<str>),
    ) -> Option<BrokerClient<Channel>> {
        match self.client.broker_by_id(broker) {
            Ok(channel) => Some(channel),
            Err(e) => {
                debug!(broker, error = %e, "no connection to leader; retrying later");
                for item in plan {
                    let (tp, topic) = key(item);
                    self.retry_later(tp, topic);
                }
                None
            }
        }
    }

    /// Groups partitions by their leader broker, from the client's metadata cache. A topic
    /// missing from the cache gets a refresh task and its partitions wait for it (the task's
    /// end wakes the poll loop); partitions without a known leader back off.
    fn route<T>(
        &mut self,
        items: Vec<T>,
        key: impl Fn(&T) -> (&TopicPartition, &Arc<str>),
    ) -> BTreeMap<i32, Vec<T>> {
        let mut metadata: HashMap<Arc<str>, Option<Arc<TopicInfo>>> = HashMap::new();
        for item in &items {
            let (_, topic) = key(item);
            if metadata.contains_key(topic) {
                continue;
            }
            let info = self.client.cached_topic(topic);
            if info.is_none() && !self.refreshing.contains(topic) {
                self.stale_topics.insert(Arc::clone(topic));
            }
            metadata.insert(Arc::clone(topic), info);
        }
        let mut by_broker: BTreeMap<i32, Vec<T>> = BTreeMap::new();
        for item in items {
            let (tp, topic) = key(&item);
            // Not cached: a refresh is on its way and wakes the poll loop when done.
            let Some(Some(info)) = metadata.get(topic) else { continue };
            let leader =
                info.partition(tp.partition).map(|p| p.leader).filter(|&leader| leader >= 0);
            match leader {
                Some(leader) => by_broker.entry(leader).or_default().push(item),
                None => {
                    debug!(partition = %tp, "partition has no known leader; retrying later");
                    let (tp, topic) = (tp.clone(), Arc::clone(topic));
                    self.retry_later(&tp, &topic);
                }
            }
        }
        by_broker
    }

    /// Sends one Fetch to each idle leader broker, covering every ready partition it leads.
    fn start_fetches(&mut self, now: Instant) {
        let budget = (self.settings.max_bytes as usize)
            .saturating_sub(self.buffered_bytes)
            .saturating_sub(self.reserved_bytes);
        if budget == 0 {
            return;
        }
        let mut candidates: Vec<Planned> = Vec::new();
        for (tp, state) in &self.partitions {
            let Position::Known(fetch_offset) = state.position else { continue };
            if state.ready(now) {
                candidates.push(Planned {
                    tp: tp.clone(),
                    topic: Arc::clone(&state.topic),
                    epoch: state.epoch,
                    fetch_offset,
                    max_bytes: state
                        .max_bytes_override
                        .unwrap_or(self.settings.partition_max_bytes),
                });
            }
        }
        if candidates.is_empty() {
            return;
        }
        let by_broker = self.route(candidates, |c| (&c.tp, &c.topic));
        let waiting_for = self.brokers_about_to_fetch();
        let mut budget = budget;
        for (broker, plan) in by_broker {
            if budget == 0 {
                break;
            }
            if self.busy_brokers.contains(&broker) {
                continue;
            }
            // One fetch per broker at a time: a fetch of drained partitions alone would be
            // parked for up to `fetch.max.wait` and keep out the partition the application is
            // about to finish, whose next data may already be there (the stall at the end of
            // a multi-partition read). Those partitions go with that partition's fetch instead;
            // the drain that frees it starts the fetch in the same poll.
            if waiting_for.contains(&broker) && plan.iter().all(|p| self.is_drained(&p.tp)) {
                continue;
            }
            let Some(channel) = self.leader_or_retry(broker, &plan, |p| (&p.tp, &p.topic)) else {
                continue;
            };
            let max_bytes = u32::try_from(budget).unwrap_or(u32::MAX);
            let reserved = plan
                .iter()
                .map(|p| p.max_bytes as usize)
                .sum::<usize>()
                .min(max_bytes as usize)
                // At least one batch comes back even if larger than every limit.
                .max(plan.iter().map(|p| p.max_bytes as usize).max().unwrap_or(0));
            budget = budget.saturating_sub(reserved);
            let request = build_request(&plan, &self.settings, max_bytes);
            let request = self.client.request_with_extra(request, self.settings.max_wait);
            let targets: Vec<(Arc<str>, PartitionId, Offset)> = plan
                .iter()
                .map(|p| (Arc::clone(&p.topic), p.tp.partition, p.fetch_offset))
                .collect();
            let deadline = self.settings.rpc_deadline;
            let handle = self.tasks.spawn(fetch(channel, request, targets, deadline));
            for p in &plan {
                if let Some(state) = self.partitions.get_mut(&p.tp) {
                    state.in_flight = Some(handle.id());
                }
            }
            self.busy_brokers.insert(broker);
            self.reserved_bytes += reserved;
            self.requests.insert(handle.id(), Request::Fetch { broker, plan, reserved });
        }
    }

    fn is_drained(&self, tp: &TopicPartition) -> bool {
        self.partitions.get(tp).is_some_and(PartitionState::drained)
    }

    /// The leader brokers of partitions that are [about to fetch](PartitionState::about_to_fetch),
    /// from the metadata cache (a partition whose leader is unknown there counts for none).
    fn brokers_about_to_fetch(&self) -> HashSet<i32> {
        let mut brokers = HashSet::new();
        let mut topics: HashMap<&str, Option<Arc<TopicInfo>>> = HashMap::new();
        for (tp, state) in &self.partitions {
            if !state.about_to_fetch() {
                continue;
            }
            let info = topics
                .entry(&*state.topic)
                .or_insert_with(|| self.client.cached_topic(&state.topic));
            if let Some(leader) =
                info.as_ref().and_then(|i| i.partition(tp.partition)).map(|p| p.leader)
                && leader >= 0
            {
                brokers.insert(leader);
            }
        }
        brokers
    }

    /// Waits for the next task to finish, a backoff to expire, the deadline, or `interrupt`;
    /// true when interrupted.
    async fn wait(&mut self, deadline: Instant, interrupt: Option<&Notify>) -> bool {
        let wake = self.next_retry(Instant::now()).map_or(deadline, |t| t.min(deadline));
        let interrupted = async {
            match interrupt {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        if self.tasks.is_empty() {
            return tokio::select! {
                () = tokio::time::sleep_until(wake) => false,
                () = interrupted => true,
            };
        }
        let joined = tokio::select! {
            joined = self.tasks.join_next_with_id() => joined,
            () = tokio::time::sleep_until(wake) => None,
            () = interrupted => return true,
        };
        if let Some(joined) = joined {
            self.on_joined(joined);
        }
        false
    }

    /// The earliest backoff expiry still ahead, among partitions waiting for nothing else.
    /// Expired ones are left out: a partition that is due but not fetched waits for a busy
    /// broker, whose reply wakes the loop, and waking for it now would spin.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.partitions
            .values()
            .filter(|s| s.in_flight.is_none() && !s.buffered)
            .filter_map(|s| s.retry_at)
            .filter(|&t| t > now)
            .min()
    }

    fn on_joined(&mut self, joined: Result<(TaskId, TaskOutput), JoinError>) {
        let (id, output) = match joined {
            Ok((id, output)) => (id, Ok(output)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(request) = self.requests.remove(&id) else { return };
        match request {
            Request::Fetch { broker, plan, reserved } => {
                self.busy_brokers.remove(&broker);
                self.reserved_bytes = self.reserved_bytes.saturating_sub(reserved);
                for p in &plan {
                    if let Some(state) = self.partitions.get_mut(&p.tp)
                        && state.in_flight == Some(id)
                    {
                        state.in_flight = None;
                    }
                }
                match output {
                    Ok(TaskOutput::Fetch(Ok(outcomes))) => {
                        for (p, outcome) in plan.iter().zip(outcomes) {
                            self.on_partition(p, outcome);
                        }
                    }
                    Ok(TaskOutput::Fetch(Err(e))) => self.on_fetch_failed(broker, &plan, e),
                    other => {
                        warn!(broker, outcome = ?other.err(), "fetch task ended abnormally");
                        for p in &plan {
                            self.retry_later(&p.tp, &p.topic);
                        }
                    }
                }
            }
            Request::Reset { broker, plan } => {
                self.resetting_brokers.remove(&broker);
                for p in &plan {
                    if let Some(state) = self.partitions.get_mut(&p.tp)
                        && state.in_flight == Some(id)
                    {
                        state.in_flight = None;
                    }
                }
                match output {
                    Ok(TaskOutput::Reset(Ok(offsets))) => {
                        for (p, result) in plan.iter().zip(offsets) {
                            self.on_reset(p, result);
                        }
                    }
                    Ok(TaskOutput::Reset(Err(e))) => {
                        for p in &plan {
                            self.retry_later(&p.tp, &p.topic);
                        }
                        if retriable(&e) {
                            debug!(broker, error = %e, "offset lookup failed; retrying");
                        } else {
                            self.push_error(ConsumerError::Client(e));
                        }
                    }
                    other => {
                        warn!(broker, outcome = ?other.err(), "offset lookup ended abnormally");
                        for p in &plan {
                            self.retry_later(&p.tp, &p.topic);
                        }
                    }
                }
            }
            Request::Metadata { topic } => {
                self.refreshing.remove(&topic);
                let failed = match output {
                    Ok(TaskOutput::Metadata(Ok(()))) => false,
                    Ok(TaskOutput::Metadata(Err(e))) => {
                        debug!(%topic, error = %e, "metadata refresh failed");
                        true
                    }
                    other => {
                        warn!(%topic, outcome = ?other.err(), "metadata task ended abnormally");
                        true
                    }
                };
                if failed {
                    // Back the topic's partitions off; the next attempt asks for metadata again
                    // once they are due, so an unknown topic is not asked for in a tight loop.
                    let now = Instant::now();
                    let ceiling = MAX_BACKOFF.max(self.settings.retry_backoff);
                    for state in self.partitions.values_mut() {
                        if state.topic == topic && state.ready(now) {
                            state.failures = state.failures.saturating_add(1);
                            let doublings = state.failures.saturating_sub(1).min(16);
                            let delay = self
                                .settings
                                .retry_backoff
                                .saturating_mul(1 << doublings)
                                .min(ceiling);
                            state.retry_at = Some(now + delay);
                        }
                    }
                }
            }
        }
    }

    fn on_reset(&mut self, p: &PlannedReset, result: Result<Offset, ClientError>) {
        let Some(state) = self.partitions.get_mut(&p.tp) else { return };
        if state.epoch != p.epoch {
            return;
        }
        match result {
            Ok(offset) => {
                debug!(partition = %p.tp, %offset, "position reset");
                state.position = Position::Known(offset);
                state.succeeded();
            }
            Err(e) => {
                self.retry_later(&p.tp, &p.topic);
                if retriable(&e) {
                    debug!(partition = %p.tp, error = %e, "offset lookup failed; retrying");
                } else {
                    self.push_error(ConsumerError::Client(e));
                }
            }
        }
    }

    fn on_fetch_failed(&mut self, broker: i32, plan: &[Planned], error: ClientError) {
        if retriable(&error) {
            debug!(broker, error = %error, "fetch failed; retrying after backoff");
        } else {
            warn!(broker, error = %error, "fetch failed");
        }
        for p in plan {
            self.retry_later(&p.tp, &p.topic);
        }
        if !retriable(&error) {
            self.push_error(ConsumerError::Client(error));
        }
    }

    fn on_partition(&mut self, p: &Planned, outcome: PartitionOutcome) {
        let Some(state) = self.partitions.get_mut(&p.tp) else { return };
        if state.epoch != p.epoch {
            return;
        }
        let decoded = match outcome {
            PartitionOutcome::Missing => return,
            PartitionOutcome::Error { code, message } => {
                self.on_partition_error(p, code, message);
                return;
            }
            PartitionOutcome::Data(decoded, high_watermark) => {
                state.high_watermark = (high_watermark >= 0).then(|| Offset::new(high_watermark));
                decoded
            }
        };
        state.succeeded();
        let progress = !decoded.records.is_empty()
            || decoded.error.is_some()
            || decoded.next_offset != p.fetch_offset;
        if !progress {
            let Some(size) = decoded.oversized else { return };
            let error = if size <= p.max_bytes as usize {
                // The broker cut a batch that fits the limit it was given.
                Some(ConsumerError::InvalidResponse(format!(
                    "partial batch of {size} bytes in {} although {} bytes were allowed",
                    p.tp, p.max_bytes
                )))
            } else if size > self.settings.max_batch_bytes {
                Some(ConsumerError::RecordTooLarge {
                    partition: p.tp.clone(),
                    offset: p.fetch_offset,
                    size,
                })
            } else {
                debug!(partition = %p.tp, size, "raising the partition fetch limit for a large batch");
                state.max_bytes_override = u32::try_from(size).ok();
                None
            };
            if let Some(error) = error {
                state.buffered = true;
                self.completed.push_back(Completed {
                    tp: p.tp.clone(),
                    epoch: p.epoch,
                    records: Vec::new().into_iter(),
                    next_offset: p.fetch_offset,
                    error: Some(error),
                    bytes: 0,
                });
            }
            return;
        }
        state.max_bytes_override = None;
        state.buffered = true;
        let error = decoded.error.map(|(offset, source)| ConsumerError::Corrupt {
            partition: p.tp.clone(),
            offset,
            source,
        });
        self.buffered_bytes += decoded.bytes;
        self.completed.push_back(Completed {
            tp: p.tp.clone(),
            epoch: p.epoch,
            records: decoded.records.into_iter(),
            next_offset: decoded.next_offset,
            error,
            bytes: decoded.bytes,
        });
    }

    fn on_partition_error(&mut self, p: &Planned, code: i32, message: String) {
        let Some(state) = self.partitions.get_mut(&p.tp) else { return };
        let code = ErrorCode::from_i32(code);
        if code == ErrorCode::OffsetOutOfRange {
            if self.settings.reset == OffsetReset::None {
                state.buffered = true;
                self.completed.push_back(Completed::failed(
                    p,
                    ConsumerError::OffsetOutOfRange {
                        partition: p.tp.clone(),
                        offset: p.fetch_offset,
                    },
                ));
            } else {
                warn!(partition = %p.tp, offset = %p.fetch_offset, policy = ?self.settings.reset,
                    "fetch offset out of range; resetting");
                self.next_epoch += 1;
                state.position = Position::Reset(ResetTo::Policy);
                state.epoch = self.next_epoch;
            }
            return;
        }
        if code == ErrorCode::KafkaStorageError {
            let since = *state.storage_error_since.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= self.settings.storage_error_timeout {
                // Retrying silently forever would look like the end of the topic: give up
                // loudly, position unchanged, so the application can decide (and a later poll
                // tries again).
                state.storage_error_since = None;
                state.buffered = true;
                self.completed.push_back(Completed::failed(
                    p,
                    ConsumerError::Storage {
                        partition: p.tp.clone(),
                        offset: p.fetch_offset,
                        elapsed,
                        message,
                    },
                ));
                return;
            }
            warn!(partition = %p.tp, offset = %p.fetch_offset, %message,
                "storage error on the broker; retrying");
        }
        if code_retriable(code) {
            debug!(partition = %p.tp, ?code, %message, "retriable fetch error");
            self.retry_later(&p.tp, &p.topic);
            return;
        }
        state.buffered = true;
        self.completed.push_back(Completed {
            tp: p.tp.clone(),
            epoch: p.epoch,
            records: Vec::new().into_iter(),
            next_offset: p.fetch_offset,
            error: Some(ConsumerError::Broker { partition: p.tp.clone(), code, message }),
            bytes: 0,
        });
    }

    /// Backs the partition off exponentially and marks its topic's metadata stale.
    fn retry_later(&mut self, tp: &TopicPartition, topic: &Arc<str>) {
        if let Some(state) = self.partitions.get_mut(tp) {
            state.failures = state.failures.saturating_add(1);
            let doublings = state.failures.saturating_sub(1).min(16);
            let ceiling = MAX_BACKOFF.max(self.settings.retry_backoff);
            let delay = self.settings.retry_backoff.saturating_mul(1 << doublings).min(ceiling);
            state.retry_at = Some(Instant::now() + delay);
        }
        if !self.refreshing.contains(topic) {
            self.stale_topics.insert(Arc::clone(topic));
        }
    }

    fn push_error(&mut self, error: ConsumerError) {
        if self.errors.len() < MAX_PENDING_ERRORS {
            self.errors.push_back(error);
        } else {
            warn!(%error, "dropping consumer error: too many pending");
        }
    }
}

/// Drops the completed fetches `remove` selects; returns their bytes.
fn remove_completed(
    completed: &mut VecDeque<Completed>,
    mut remove: impl FnMut(&Completed) -> bool,
) -> usize {
    let mut freed = 0;
    completed.retain(|c| {
        let gone = remove(c);
        if gone {
            freed += c.bytes;
        }
        !gone
    });
    freed
}

/// Whether a client error may clear up after a metadata refresh and a backoff. Unlike the
/// client's own rule, unknown topics count: a topic can be created (or its metadata reach this
/// broker) after the consumer was assigned to it.
fn retriable(error: &ClientError) -> bool {
    error.is_retriable()
        || matches!(error, ClientError::UnknownTopic(_))
        || error.code().is_some_and(code_retriable)
}

fn code_retriable(code: ErrorCode) -> bool {
    code.is_retriable() || code == ErrorCode::UnknownTopicOrPartition
}

fn build_request(plan: &[Planned], settings: &Settings, max_bytes: u32) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for p in plan {
        topics.entry(&*p.topic).or_default().push(FetchPartition {
            partition: p.tp.partition.get(),
            fetch_offset: p.fetch_offset.get(),
            partition_max_bytes: p.max_bytes,
            // Not sent yet: the consumer would need to handle FENCED/UNKNOWN_LEADER_EPOCH by
            // refreshing metadata, which belongs with replication's leader changes.
            current_leader_epoch: None,
        });
    }
    FetchRequest {
        max_wait_ms: settings.max_wait_ms,
        min_bytes: settings.min_bytes,
        max_bytes,
        topics: topics
            .into_iter()
            .map(|(name, partitions)| FetchTopic { name: name.to_owned(), partitions })
            .collect(),
    }
}

/// One Fetch RPC; decodes the answer here, so decoding overlaps the application's work too.
async fn fetch(
    mut broker: BrokerClient<Channel>,
    request: tonic::Request<FetchRequest>,
    targets: Vec<(Arc<str>, PartitionId, Offset)>,
    deadline: Duration,
) -> TaskOutput {
    let response = match tokio::time::timeout(deadline, broker.fetch(request)).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return TaskOutput::Fetch(Err(ClientError::from(status))),
        Err(_) => return TaskOutput::Fetch(Err(ClientError::Timeout)),
    };
    TaskOutput::Fetch(Ok(match_response(&targets, response)))
}

/// Pairs each requested partition with its part of the response; unrequested ones are ignored.
fn match_response(
    targets: &[(Arc<str>, PartitionId, Offset)],
    response: FetchResponse,
) -> Vec<PartitionOutcome> {
    let index: HashMap<(&str, i32), usize> =
        targets.iter().enumerate().map(|(i, (t, p, _))| ((&**t, p.get()), i)).collect();
    let mut outcomes: Vec<PartitionOutcome> =
        targets.iter().map(|_| PartitionOutcome::Missing).collect();
    for topic in response.topics {
        for part in topic.partitions {
            let Some(&i) = index.get(&(topic.name.as_str(), part.partition)) else { continue };
            let (Some((name, partition, offset)), Some(slot)) =
                (targets.get(i), outcomes.get_mut(i))
            else {
                continue;
            };
            *slot = if !ErrorCode::from_i32(part.error_code).is_none() {
                PartitionOutcome::Error { code: part.error_code, message: part.error_message }
            } else {
                let decoded = decode_partition(name, *partition, *offset, part.records);
                PartitionOutcome::Data(decoded, part.high_watermark)
            };
        }
    }
    outcomes
}

/// One ListOffsets RPC (two when a timestamp lies after the last record, which means the
/// end): an offset or an error per target, in order.
async fn list_offsets(
    client: &Client,
    mut broker: BrokerClient<Channel>,
    targets: Vec<(Arc<str>, PartitionId, i64)>,
) -> Result<Vec<Result<Offset, ClientError>>, ClientError> {
    let mut results = lookup(client, &mut broker, &targets).await?;
    let past_end: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Ok(None)))
        .filter(|&(i, _)| targets.get(i).is_some_and(|(_, _, ts)| *ts >= 0))
        .map(|(i, _)| i)
        .collect();
    if !past_end.is_empty() {
        let again: Vec<(Arc<str>, PartitionId, i64)> = past_end
            .iter()
            .filter_map(|&i| targets.get(i))
            .map(|(t, p, _)| (Arc::clone(t), *p, LATEST))
            .collect();
        let ends = lookup(client, &mut broker, &again).await?;
        for (&i, end) in past_end.iter().zip(ends) {
            if let Some(slot) = results.get_mut(i) {
                *slot = end;
            }
        }
    }
    Ok(targets
        .iter()
        .zip(results)
        .map(|((topic, partition, ts), result)| {
            result?.ok_or_else(|| ClientError::Broker {
                code: ErrorCode::UnknownServerError,
                message: format!("ListOffsets gave no offset for {topic}-{partition} at {ts}"),
            })
        })
        .collect())
}

/// One ListOffsets RPC; `Ok(None)` where the broker has no offset (-1) for a target.
async fn lookup(
    client: &Client,
    broker: &mut BrokerClient<Channel>,
    targets: &[(Arc<str>, PartitionId, i64)],
) -> Result<Vec<Result<Option<Offset>, ClientError>>, ClientError> {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (topic, partition, timestamp) in targets {
        topics
            .entry(&**topic)
            .or_default()
            .push(ListOffsetsPartition { partition: partition.get(), timestamp: *timestamp });
    }
    let request = ListOffsetsRequest {
        topics: topics
            .into_iter()
            .map(|(name, partitions)| ListOffsetsTopic { name: name.to_owned(), partitions })
            .collect(),
    };
    let response = broker.list_offsets(client.request(request)).await?.into_inner();
    let index: HashMap<(&str, i32), usize> =
        targets.iter().enumerate().map(|(i, (t, p, _))| ((&**t, p.get()), i)).collect();
    let mut results: Vec<Result<Option<Offset>, ClientError>> = targets
        .iter()
        .map(|(t, p, _)| {
            Err(ClientError::Broker {
                code: ErrorCode::UnknownServerError,
                message: format!("ListOffsets response lacks {t}-{p}"),
            })
        })
        .collect();
    for topic in response.topics {
        for part in topic.partitions {
            let Some(&i) = index.get(&(topic.name.as_str(), part.partition)) else { continue };
            let Some(slot) = results.get_mut(i) else { continue };
            *slot = strom_client::check_code(part.error_code, &part.error_message)
                .map(|()| (part.offset >= 0).then_some(Offset::new(part.offset)));
        }
    }
    Ok(results)
}
