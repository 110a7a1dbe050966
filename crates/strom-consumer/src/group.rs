//! The poll side of consumer groups: turns what the membership task reports into the
//! consumer's assignment (with the listener's callbacks and the commits that must come first),
//! starts rejoins, reads committed offsets for new partitions, and commits positions.
//!
//! Every step runs inside [`Consumer::poll`] (or `close`/`unsubscribe`) with `&mut Consumer`,
//! so no lock guards the state. Steps that await (commits, committed-offset lookups) keep
//! their progress in fields before the first `.await`, so a poll that is cancelled midway
//! leaves the step to be finished by the next poll rather than half done.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use strom_client::ErrorCode;
use strom_format::{Offset, PartitionId};
use strom_proto::v1::{
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
    OffsetFetchTopic,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::consumer::Consumer;
use crate::coordinator::GroupRpc;
use crate::membership::{self, Ended, GroupSettings, JoinPlan, Joined, Shared};
use crate::{ConsumerConfig, ConsumerError, RebalanceListener, RevokeContext, TopicPartition};

/// Most partitions one OffsetFetch asks about; larger lookups are split.
const MAX_PARTITIONS_PER_OFFSET_FETCH: usize = 10_000;

/// This consumer's place in its group, as [`Consumer::group_metadata`] reports it.
///
/// ```
/// use strom_consumer::GroupMetadata;
/// let meta = GroupMetadata {
///     group_id: "billing".into(),
///     generation_id: 3,
///     member_id: "strom-1b2c".into(),
/// };
/// assert!(meta.generation_id > 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The group.
    pub group_id: String,
    /// The generation this consumer's assignment belongs to; -1 outside any generation
    /// (manual assignment, or not joined yet).
    pub generation_id: i32,
    /// This consumer's member id; empty outside the group.
    pub member_id: String,
}

/// Aborts its task when dropped, so a dropped consumer leaves no task behind.
#[derive(Debug)]
struct TaskGuard<T>(JoinHandle<T>);

impl<T> Drop for TaskGuard<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything about the consumer's group: present whenever `group_id` is configured.
#[derive(Debug)]
pub(crate) struct GroupCtx {
    pub(crate) rpc: GroupRpc,
    settings: Arc<GroupSettings>,
    auto_commit: Option<Duration>,
    next_auto_commit: Instant,
    metadata_max_age: Duration,
    /// What this consumer last committed (or found committed), so auto-commits skip
    /// partitions that have not moved.
    committed: HashMap<TopicPartition, Offset>,
    offsets_failures: u32,
    offsets_retry_at: Option<Instant>,
    /// Present while subscribed.
    pub(crate) membership: Option<Membership>,
}

/// A subscription and this member's state in the group.
pub(crate) struct Membership {
    topics: Vec<String>,
    listener: Option<std::sync::Mutex<Box<dyn RebalanceListener>>>,
    shared: Arc<Shared>,
    task: Option<TaskGuard<()>>,
    /// The generation of the current assignment; -1 when there is none.
    generation: i32,
    /// The member id that goes with `generation`.
    member_id: String,
    /// The generation the partitions we own were assigned in, for the next subscription.
    owned_generation: i32,
    /// The leader's view of partition counts when it assigned; `None` on followers.
    partition_counts: Option<BTreeMap<String, i32>>,
    next_metadata_check: Instant,
    metadata_check: Option<TaskGuard<bool>>,
    /// Rejoin at the next opportunity.
    rejoin: bool,
    join_failures: u32,
    join_retry_at: Option<Instant>,
    /// An assignment received but not yet applied: its revocations still need their commit
    /// and callback.
    pending: Option<PendingAssignment>,
    /// Already left the group (close, unsubscribe): nothing to do on drop.
    left: bool,
    /// KIP-345: a static member never leaves on close or drop.
    is_static: bool,
    rpc: GroupRpc,
}

#[derive(Debug)]
struct PendingAssignment {
    assignment: Vec<TopicPartition>,
    revoked: Vec<TopicPartition>,
    added: Vec<TopicPartition>,
    /// Cooperative: partitions were taken away, so rejoin for them to move on.
    rejoin_after: bool,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("topics", &self.topics)
            .field("listener", &self.listener.is_some())
            .field("generation", &self.generation)
            .field("member_id", &self.member_id)
            .field("rejoin", &self.rejoin)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The task guard aborts the heartbeats. Leave too, so the group rebalances now rather
        // than after a session timeout; best effort, in the background, if a runtime is there.
        if self.left || self.is_static {
            return;
        }
        let member_id = self.shared.member_id();
        if member_id.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let rpc = self.rpc.clone();
            runtime.spawn(async move {
                if let Err(e) = rpc.leave(&member_id).await {
                    debug!(group = %rpc.group_id(), error = %e, "leaving the group on drop failed");
                }
            });
        }
    }
}

impl Membership {
    fn call_listener(&mut self, f: impl FnOnce(&mut dyn RebalanceListener)) {
        if let Some(listener) = self.listener.as_mut() {
            let listener = match listener.get_mut() {
                Ok(l) => l,
                // A callback panicked earlier; the listener's own state is its business.
                Err(poisoned) => poisoned.into_inner(),
            };
            f(listener.as_mut());
        }
    }

    /// Tells the listener `partitions` are revoked; returns the commits it asked for through
    /// the [`RevokeContext`] (built from `positions`).
    fn revoked(
        &mut self,
        partitions: &[TopicPartition],
        positions: Vec<(TopicPartition, Offset)>,
    ) -> Vec<(TopicPartition, Offset)> {
        if partitions.is_empty() {
            return Vec::new();
        }
        info!(group = %self.rpc.group_id(), partitions = ?partitions, "partitions revoked");
        let mut context = RevokeContext::new(positions);
        self.call_listener(|l| l.on_partitions_revoked_with(partitions, &mut context));
        context.into_commits()
    }

    fn lost(&mut self, partitions: &[TopicPartition]) {
        if !partitions.is_empty() {
            warn!(group = %self.rpc.group_id(), partitions = ?partitions, "partitions lost");
            self.call_listener(|l| l.on_partitions_lost(partitions));
        }
    }
}

impl GroupCtx {
    pub(crate) fn new(rpc: GroupRpc, config: &ConsumerConfig) -> Self {
        GroupCtx {
            rpc,
            settings: Arc::new(GroupSettings {
                client_id: config.client.client_id.clone(),
                session_timeout: config.session_timeout,
                rebalance_timeout: config.max_poll_interval,
                heartbeat_interval: config.heartbeat_interval,
                strategies: config.assignment_strategies.clone(),
                group_instance_id: config.group_instance_id.clone(),
            }),
            auto_commit: config.enable_auto_commit.then_some(config.auto_commit_interval),
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            metadata_max_age: config.metadata_max_age,
            committed: HashMap::new(),
            offsets_failures: 0,
            offsets_retry_at: None,
            membership: None,
        }
    }

    pub(crate) fn metadata(&self) -> GroupMetadata {
        let (generation_id, member_id) = match &self.membership {
            Some(m) if m.generation >= 0 => (m.generation, m.member_id.clone()),
            _ => (-1, String::new()),
        };
        GroupMetadata { group_id: self.rpc.group_id().to_owned(), generation_id, member_id }
    }

    pub(crate) fn auto_commit(&self) -> bool {
        self.auto_commit.is_some()
    }

    pub(crate) fn topics(&self) -> &[String] {
        self.membership.as_ref().map_or(&[], |m| &m.topics)
    }

    /// Starts (or changes) the subscription; the join happens in the next poll.
    pub(crate) fn subscribe(
        &mut self,
        topics: Vec<String>,
        listener: Option<Box<dyn RebalanceListener>>,
    ) {
        let listener = listener.map(std::sync::Mutex::new);
        if let Some(m) = self.membership.as_mut() {
            if m.topics != topics {
                m.topics = topics;
                m.rejoin = true;
            }
            m.listener = listener;
            return;
        }
        self.membership = Some(Membership {
            topics,
            listener,
            shared: Arc::new(Shared::new(String::new())),
            task: None,
            generation: -1,
            member_id: String::new(),
            owned_generation: -1,
            partition_counts: None,
            next_metadata_check: Instant::now(),
            metadata_check: None,
            rejoin: true,
            join_failures: 0,
            join_retry_at: None,
            pending: None,
            left: false,
            is_static: self.settings.is_static(),
            rpc: self.rpc.clone(),
        });
    }

    /// What [`Consumer::poll`]'s fetch wait should also wake for.
    pub(crate) fn interrupt(&self) -> Option<Arc<Shared>> {
        self.membership.as_ref().map(|m| Arc::clone(&m.shared))
    }

    /// Commits `offsets` for this member's generation, or outside group management (generation
    /// -1, no member id) when not subscribed.
    pub(crate) async fn commit(
        &mut self,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<(), ConsumerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (generation_id, member_id) = match &self.membership {
            Some(m) if m.generation >= 0 => (m.generation, m.member_id.clone()),
            Some(_) => {
                return Err(ConsumerError::CommitFailed {
                    code: ErrorCode::RebalanceInProgress,
                    message: "the consumer is not in a group generation yet (joining)".into(),
                });
            }
            None => (-1, String::new()),
        };
        self.commit_as(generation_id, member_id, offsets).await
    }

    async fn commit_as(
        &mut self,
        generation_id: i32,
        member_id: String,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<(), ConsumerError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitPartition>> = BTreeMap::new();
        let mut sent: HashMap<(&str, i32), Offset> = HashMap::new();
        for (tp, offset) in offsets {
            if offset.get() < 0 {
                return Err(ConsumerError::InvalidArgument(format!(
                    "cannot commit negative offset {offset} for {tp}"
                )));
            }
            by_topic.entry(&tp.topic).or_default().push(OffsetCommitPartition {
                partition: tp.partition.get(),
                committed_offset: offset.get(),
                metadata: String::new(),
            });
            sent.insert((&tp.topic, tp.partition.get()), *offset);
        }
        let request = OffsetCommitRequest {
            group_id: self.rpc.group_id().to_owned(),
            generation_id,
            member_id,
            group_instance_id: self.settings.instance_id(),
            topics: by_topic
                .into_iter()
                .map(|(name, partitions)| OffsetCommitTopic { name: name.to_owned(), partitions })
                .collect(),
        };
        let response = self.rpc.commit(request).await?;
        let mut failure = None;
        for topic in response.topics {
            for p in topic.partitions {
                let Some(offset) = sent.get(&(topic.name.as_str(), p.partition)) else { continue };
                let tp = TopicPartition::new(topic.name.clone(), PartitionId::new(p.partition));
                if ErrorCode::from_i32(p.error_code).is_none() {
                    self.committed.insert(tp, *offset);
                } else if failure.is_none() {
                    failure = Some(ConsumerError::CommitFailed {
                        code: ErrorCode::from_i32(p.error_code),
                        message: format!("{tp}: {}", p.error_message),
                    });
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                debug!(group = %self.rpc.group_id(), partitions = offsets.len(), "committed offsets");
                Ok(())
            }
        }
    }

    /// The group's committed offsets of `partitions` (absent: none committed).
    pub(crate) async fn fetch_committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Offset>, ConsumerError> {
        let mut out = HashMap::with_capacity(partitions.len());
        for chunk in partitions.chunks(MAX_PARTITIONS_PER_OFFSET_FETCH) {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in chunk {
                by_topic.entry(&tp.topic).or_default().push(tp.partition.get());
            }
            let request = OffsetFetchRequest {
                group_id: self.rpc.group_id().to_owned(),
                topics: by_topic
                    .into_iter()
                    .map(|(name, partitions)| OffsetFetchTopic {
                        name: name.to_owned(),
                        partitions,
                    })
                    .collect(),
            };
            let response = self.rpc.fetch_offsets(request).await?;
            let asked: HashSet<&TopicPartition> = chunk.iter().collect();
            for topic in response.topics {
                for p in topic.partitions {
                    let tp = TopicPartition::new(topic.name.clone(), PartitionId::new(p.partition));
                    if !asked.contains(&tp) {
                        continue;
                    }
                    strom_client::check_code(p.error_code, "OffsetFetch partition error")?;
                    if p.committed_offset >= 0 {
                        out.insert(tp, Offset::new(p.committed_offset));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Consumer {
    /// The group's part of a poll: act on what the membership task reported, finish a staged
    /// assignment, rejoin if needed, look up committed offsets, auto-commit. Returns when it
    /// next wants to run (a commit or retry falling due), for the fetch wait.
    pub(crate) async fn maintain_group(&mut self) -> Result<Option<Instant>, ConsumerError> {
        if self.group.is_none() {
            return Ok(None);
        }
        let failed = self.maintain_membership().await;
        self.resolve_awaiting().await?;
        self.maybe_auto_commit().await;
        failed?;
        Ok(self.group.as_ref().and_then(|g| self.next_wake(g)))
    }

    fn next_wake(&self, group: &GroupCtx) -> Option<Instant> {
        let now = Instant::now();
        let mut wakes = Vec::new();
        if group.auto_commit.is_some() && !self.assignment.is_empty() {
            wakes.push(group.next_auto_commit);
        }
        wakes.extend(group.offsets_retry_at);
        if let Some(m) = &group.membership {
            if m.rejoin {
                wakes.extend(m.join_retry_at);
            }
            if m.partition_counts.is_some() {
                wakes.push(m.next_metadata_check);
            }
        }
        // Deadlines already due were handled (or are waiting on something else): waking for
        // them again would only spin.
        wakes.into_iter().filter(|t| *t > now).min()
    }

    async fn maintain_membership(&mut self) -> Result<(), ConsumerError> {
        let Some(m) = self.membership_mut() else { return Ok(()) };
        m.shared.touch();
        // Looked at before taking its reports: a task reports before it ends, so one that had
        // ended by now and reported nothing died without a word (it panicked).
        let died = m.task.as_ref().is_some_and(|t| t.0.is_finished());
        let (joined, ended) = m.shared.take();
        let died = died && ended.is_none();
        // Both are acted on before the first `.await`, so a cancelled poll cannot drop them.
        if let Some(joined) = joined {
            self.stage_assignment(joined);
        }
        let result = match ended {
            Some(ended) => self.on_ended(ended),
            None => Ok(()),
        };
        self.finish_assignment().await;
        let Some(m) = self.membership_mut() else { return result };
        if died {
            warn!(group = %m.rpc.group_id(), "the membership task stopped; rejoining");
            m.task = None;
            m.rejoin = true;
        }
        self.check_metadata().await;
        let Some(m) = self.membership_mut() else { return result };
        let due = m.join_retry_at.is_none_or(|t| t <= Instant::now());
        if m.rejoin && due && m.pending.is_none() {
            self.rejoin().await;
        }
        result
    }

    fn membership_mut(&mut self) -> Option<&mut Membership> {
        self.group.as_mut().and_then(|g| g.membership.as_mut())
    }

    /// Records a new generation and stages its assignment: what it takes away and adds.
    fn stage_assignment(&mut self, joined: Joined) {
        let Some(group) = self.group.as_mut() else { return };
        let cooperative = group.settings.cooperative();
        let max_age = group.metadata_max_age;
        let Some(m) = group.membership.as_mut() else { return };
        m.generation = joined.generation;
        m.member_id = joined.member_id;
        m.owned_generation = joined.generation;
        m.partition_counts = joined.partition_counts;
        m.next_metadata_check = Instant::now() + max_age;
        m.metadata_check = None;
        m.join_failures = 0;
        m.join_retry_at = None;
        let old: BTreeSet<&TopicPartition> = self.assignment.iter().collect();
        let new: BTreeSet<&TopicPartition> = joined.assignment.iter().collect();
        let revoked: Vec<TopicPartition> = old.difference(&new).map(|tp| (*tp).clone()).collect();
        let added: Vec<TopicPartition> = new.difference(&old).map(|tp| (*tp).clone()).collect();
        debug!(group = %m.rpc.group_id(), generation = joined.generation,
            protocol = %joined.protocol, revoked = revoked.len(), added = added.len(),
            "new assignment");
        m.pending = Some(PendingAssignment {
            rejoin_after: cooperative && !revoked.is_empty(),
            assignment: joined.assignment,
            revoked,
            added,
        });
    }

    /// Applies a staged assignment: commits the positions of revoked partitions (auto-commit),
    /// tells the listener, and hands the new partitions to the fetcher, which waits for their
    /// committed offsets.
    async fn finish_assignment(&mut self) {
        let Some(group) = self.group.as_ref() else { return };
        let Some(pending) = group.membership.as_ref().and_then(|m| m.pending.as_ref()) else {
            return;
        };
        if group.auto_commit.is_some() && !pending.revoked.is_empty() {
            let offsets = self.positions(&pending.revoked, false);
            if let Some(group) = self.group.as_mut()
                && let Err(e) = group.commit(&offsets).await
            {
                warn!(group = %group.rpc.group_id(), error = %e,
                        "committing revoked partitions failed");
            }
        }
        let pending_revoked = self
            .group
            .as_ref()
            .and_then(|g| g.membership.as_ref())
            .and_then(|m| m.pending.as_ref())
            .map(|p| p.revoked.clone())
            .unwrap_or_default();
        let revoked_positions = self.positions(&pending_revoked, false);
        let Some(m) = self.membership_mut() else { return };
        let Some(pending) = m.pending.take() else { return };
        let commits = m.revoked(&pending.revoked, revoked_positions);
        info!(group = %m.rpc.group_id(), generation = m.generation,
            partitions = ?pending.added, "partitions assigned");
        m.call_listener(|l| l.on_partitions_assigned(&pending.added));
        if pending.rejoin_after {
            m.rejoin = true;
        }
        self.fetcher.assign(&pending.assignment, true);
        self.assignment = pending.assignment;
        // Last, so a poll cancelled here has applied the assignment already; the partitions
        // only move once this member rejoins, which happens after this returns.
        self.commit_for_revocation(&commits).await;
    }

    /// Reacts to the end of the membership task's generation.
    fn on_ended(&mut self, ended: Ended) -> Result<(), ConsumerError> {
        let Some(group) = self.group.as_mut() else { return Ok(()) };
        let Some(m) = group.membership.as_mut() else { return Ok(()) };
        m.task = None;
        m.rejoin = true;
        let (lose, forget_member) = match ended {
            Ended::Rejoin => (false, false),
            Ended::Fenced(code) => (true, code == ErrorCode::UnknownMemberId),
            Ended::SessionLost => (true, false),
            Ended::PollTimeout => (true, true),
            Ended::Failed(e) => {
                m.join_failures = m.join_failures.saturating_add(1);
                let delay = group.rpc.backoff(m.join_failures).max(Duration::from_millis(100));
                m.join_retry_at = Some(Instant::now() + delay);
                warn!(group = %group.rpc.group_id(), error = %e, "joining the group failed");
                return Err(e);
            }
        };
        if forget_member {
            m.shared.set_member_id("");
        }
        if lose {
            m.generation = -1;
            m.owned_generation = -1;
            m.pending = None;
            let lost = std::mem::take(&mut self.assignment);
            self.fetcher.assign(&[], false);
            if let Some(m) = self.membership_mut() {
                m.lost(&lost);
            }
        }
        Ok(())
    }

    /// Leaves the current generation and starts joining the next: commits first (auto-commit),
    /// gives up every partition under eager rebalancing, then starts the membership task.
    async fn rejoin(&mut self) {
        let Some(group) = self.group.as_mut() else { return };
        let cooperative = group.settings.cooperative();
        let auto_commit = group.auto_commit.is_some();
        let Some(m) = group.membership.as_mut() else { return };
        // Whatever the old task was doing (heartbeating an old generation, or joining with an
        // outdated subscription) is superseded.
        m.task = None;
        m.metadata_check = None;
        let in_generation = m.generation >= 0;
        if auto_commit && in_generation {
            let offsets = self.positions(&self.assignment, true);
            if let Some(group) = self.group.as_mut()
                && let Err(e) = group.commit(&offsets).await
            {
                warn!(group = %group.rpc.group_id(), error = %e,
                        "committing before the rebalance failed");
            }
        }
        if !cooperative {
            let revoked = std::mem::take(&mut self.assignment);
            let positions = self.positions(&revoked, false);
            self.fetcher.assign(&[], false);
            let commits = match self.membership_mut() {
                Some(m) => m.revoked(&revoked, positions),
                None => Vec::new(),
            };
            // Still in the old generation: the commits land before this member rejoins, so
            // before the rebalance can complete.
            self.commit_for_revocation(&commits).await;
        }
        let owned = self.assignment.clone();
        let Some(group) = self.group.as_mut() else { return };
        let settings = Arc::clone(&group.settings);
        let rpc = group.rpc.clone();
        let Some(m) = group.membership.as_mut() else { return };
        // A fresh mailbox per task: anything the aborted one still reports goes nowhere.
        m.shared = Arc::new(Shared::new(m.shared.member_id()));
        let plan = JoinPlan {
            topics: m.topics.clone(),
            owned_generation: if owned.is_empty() { -1 } else { m.owned_generation },
            owned,
            member_id: m.shared.member_id(),
        };
        debug!(group = %rpc.group_id(), member = %plan.member_id, owned = plan.owned.len(),
            "joining the group");
        let shared = Arc::clone(&m.shared);
        m.task = Some(TaskGuard(tokio::spawn(membership::run(rpc, settings, plan, shared))));
        m.rejoin = false;
    }

    /// The leader re-reads partition counts every `metadata_max_age` and rebalances when one
    /// changed (a subscribed topic created, deleted or grown).
    async fn check_metadata(&mut self) {
        let Some(group) = self.group.as_mut() else { return };
        let max_age = group.metadata_max_age;
        let rpc = group.rpc.clone();
        let Some(m) = group.membership.as_mut() else { return };
        let Some(counts) = m.partition_counts.clone() else { return };
        if let Some(check) = m.metadata_check.as_mut() {
            if !check.0.is_finished() {
                return;
            }
            let changed = (&mut check.0).await.unwrap_or(false);
            m.metadata_check = None;
            m.next_metadata_check = Instant::now() + max_age;
            if changed && m.generation >= 0 {
                info!(group = %rpc.group_id(), "subscribed topics changed; rebalancing");
                m.rejoin = true;
            }
            return;
        }
        if m.generation < 0 || m.rejoin || Instant::now() < m.next_metadata_check {
            return;
        }
        m.metadata_check = Some(TaskGuard(tokio::spawn(async move {
            for (topic, count) in counts {
                if membership::partition_count(&rpc, &topic).await != count {
                    return true;
                }
            }
            false
        })));
    }

    /// Looks up the committed offsets of partitions that wait for them (new partitions of a
    /// group consumer) and starts them there.
    async fn resolve_awaiting(&mut self) -> Result<(), ConsumerError> {
        let Some(group) = self.group.as_ref() else { return Ok(()) };
        if group.offsets_retry_at.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        let awaiting = self.fetcher.awaiting();
        if awaiting.is_empty() {
            return Ok(());
        }
        let result = group.fetch_committed(&awaiting).await;
        let Some(group) = self.group.as_mut() else { return Ok(()) };
        match result {
            Ok(committed) => {
                group.offsets_failures = 0;
                group.offsets_retry_at = None;
                for tp in &awaiting {
                    let offset = committed.get(tp).copied();
                    if let Some(offset) = offset {
                        group.committed.insert(tp.clone(), offset);
                    }
                    debug!(partition = %tp, committed = ?offset, "starting from the committed offset");
                    self.fetcher.resolve_committed(tp, offset);
                }
                Ok(())
            }
            Err(e) => {
                group.offsets_failures = group.offsets_failures.saturating_add(1);
                let delay = group.rpc.backoff(group.offsets_failures);
                group.offsets_retry_at = Some(Instant::now() + delay);
                let retriable = matches!(&e, ConsumerError::Client(c) if c.is_retriable());
                if retriable {
                    debug!(group = %group.rpc.group_id(), error = %e,
                        "looking up committed offsets failed; retrying");
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn maybe_auto_commit(&mut self) {
        let Some(group) = self.group.as_mut() else { return };
        let Some(interval) = group.auto_commit else { return };
        let now = Instant::now();
        if now < group.next_auto_commit {
            return;
        }
        group.next_auto_commit = now + interval;
        if let Some(m) = &group.membership
            && (m.generation < 0 || m.pending.is_some())
        {
            return;
        }
        let offsets = self.positions(&self.assignment, true);
        if let Some(group) = self.group.as_mut()
            && let Err(e) = group.commit(&offsets).await
        {
            warn!(group = %group.rpc.group_id(), error = %e, "auto-commit failed");
        }
    }

    /// Commits what a listener asked for in `on_partitions_revoked_with`, for the current
    /// generation; a failure is logged (the partitions go regardless).
    async fn commit_for_revocation(&mut self, commits: &[(TopicPartition, Offset)]) {
        if commits.is_empty() {
            return;
        }
        if let Some(group) = self.group.as_mut() {
            match group.commit(commits).await {
                Ok(()) => debug!(group = %group.rpc.group_id(), partitions = commits.len(),
                    "committed revoked partitions from the listener"),
                Err(e) => warn!(group = %group.rpc.group_id(), error = %e,
                    "committing revoked partitions from the listener failed"),
            }
        }
    }

    /// The known positions of `partitions`; with `changed_only`, only those that differ from
    /// what this consumer last committed.
    pub(crate) fn positions(
        &self,
        partitions: &[TopicPartition],
        changed_only: bool,
    ) -> Vec<(TopicPartition, Offset)> {
        let committed = self.group.as_ref().map(|g| &g.committed);
        partitions
            .iter()
            .filter_map(|tp| self.fetcher.position(tp).map(|o| (tp.clone(), o)))
            .filter(|(tp, o)| {
                !changed_only || committed.and_then(|c| c.get(tp)).is_none_or(|c| c != o)
            })
            .collect()
    }

    /// Commits (auto-commit), revokes every partition, and leaves the group: the orderly end
    /// of a subscription. Returns the first failure, after doing all of it.
    pub(crate) async fn leave_group(&mut self) -> Result<(), ConsumerError> {
        let Some(group) = self.group.as_mut() else { return Ok(()) };
        let auto_commit = group.auto_commit.is_some();
        // Out of the consumer before the first `.await`: if this is cancelled, dropping it
        // still leaves the group (in the background).
        let Some(mut m) = group.membership.take() else { return Ok(()) };
        m.task = None;
        m.metadata_check = None;
        m.pending = None;
        let revoked = std::mem::take(&mut self.assignment);
        let offsets = if auto_commit && m.generation >= 0 {
            self.positions(&revoked, true)
        } else {
            Vec::new()
        };
        let positions = self.positions(&revoked, false);
        self.fetcher.assign(&[], false);
        let Some(group) = self.group.as_mut() else { return Ok(()) };
        let mut result = group.commit_as(m.generation, m.member_id.clone(), &offsets).await;
        let commits = m.revoked(&revoked, positions);
        if m.generation >= 0 && !commits.is_empty() {
            let committed = group.commit_as(m.generation, m.member_id.clone(), &commits).await;
            if result.is_ok() {
                result = committed;
            }
        }
        let member_id = m.shared.member_id();
        if m.is_static {
            // KIP-345: no LeaveGroup; the session expiry moves the partitions unless this
            // instance comes back first.
            info!(group = %group.rpc.group_id(), member = %member_id,
                "static member closing without leaving the group");
        } else if !member_id.is_empty() {
            info!(group = %group.rpc.group_id(), member = %member_id, "leaving the group");
            if let Err(e) = group.rpc.leave(&member_id).await {
                warn!(group = %group.rpc.group_id(), error = %e, "leaving the group failed");
                if result.is_ok() {
                    result = Err(e.into());
                }
            }
        }
        m.left = true;
        result
    }
}
