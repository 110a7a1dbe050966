//! The group coordinator: Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and offset commit/fetch, as one async API that the broker's gRPC service and its
//! Kafka listener both call.
//!
//! Each group sits behind its own lock with a small timer task that wakes at the group's next
//! deadline (session expiry, end of a join phase, members that never synced) and otherwise
//! sleeps; there is no polling. Locks are never held across `.await`: calls that must wait park a
//! oneshot channel in the group and await it after the lock is released. Time is
//! `tokio::time`, so tests drive timeouts with `tokio::time::pause` and `advance`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use strom_format::PartitionId;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::api::{
    GroupDescription, GroupListing, GroupResult, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResult, LeaveGroupRequest, OffsetCommitPartitionResult, OffsetCommitRequest,
    OffsetDeleteResult, OffsetFetchPartition, OffsetFetchResult, OffsetFetchTopic,
    SyncGroupRequest, SyncGroupResult,
};
use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, ErrorCode};
use crate::group::{Group, GroupState, Outcome};
use crate::member::new_member_id;
use crate::offset_store::{OffsetStore, OffsetWrite, now_ms};
use strom_format::LeaderEpoch;

/// A group, its lock, and the bell its timer task listens to.
#[derive(Debug)]
struct GroupCell {
    group: Mutex<Group>,
    wake: Notify,
}

/// Stripes of the per-group commit order: a group's commits hash to one stripe. Bounded
/// memory for any number of group ids; unrelated groups share a stripe only by chance.
const COMMIT_STRIPES: usize = 256;

#[derive(Debug)]
struct Inner {
    config: Arc<CoordinatorConfig>,
    groups: Mutex<HashMap<String, Arc<GroupCell>>>,
    offsets: Arc<OffsetStore>,
    /// Makes a commit's validation and its write one step per group: a commit validated for
    /// generation N that is slow to write (and maybe timed out for its client) finishes
    /// before the next commit of the group is even validated, so it can never land after a
    /// newer generation's commit and move the offset back. Held until the write ends, even
    /// when the caller has gone away.
    commit_order: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for cell in self.groups.get_mut().values() {
            cell.group.lock().mark_dead();
            cell.wake.notify_one();
        }
    }
}

/// Serves consumer groups and their committed offsets.
///
/// Cheap to clone (the clones share the coordinator). Must be used inside a tokio runtime: each
/// group gets a timer task. Dropping the last clone, or [`GroupCoordinator::shutdown`], unloads
/// every group and answers every waiting call with COORDINATOR_NOT_AVAILABLE.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use strom_coordinator::*;
///
/// let store = OffsetStore::load(vec![Arc::new(MemoryOffsetsLog::default()) as Arc<dyn OffsetsLog>])
///     .unwrap();
/// let coordinator = GroupCoordinator::new(CoordinatorConfig::default(), Arc::new(store));
/// let joined = coordinator
///     .join_group(JoinGroupRequest {
///         group_id: "billing".into(),
///         session_timeout: Duration::from_secs(10),
///         rebalance_timeout: Duration::from_secs(30),
///         protocol_type: "consumer".into(),
///         protocols: vec![JoinGroupProtocol { name: "range".into(), metadata: Default::default() }],
///         client_id: "app".into(),
///         ..Default::default()
///     })
///     .await;
/// assert_eq!(joined.error_code, ErrorCode::None);
/// assert_eq!(joined.leader, joined.member_id);
/// let synced = coordinator
///     .sync_group(SyncGroupRequest {
///         group_id: "billing".into(),
///         generation_id: joined.generation_id,
///         member_id: joined.member_id.clone(),
///         assignments: vec![],
///         group_instance_id: None,
///     })
///     .await;
/// assert_eq!(synced.error_code, ErrorCode::None);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
}

impl GroupCoordinator {
    /// A coordinator over an already loaded offsets store.
    ///
    /// Inside a tokio runtime this also starts the task that expires the offsets of empty
    /// groups every `offsets_retention_check_interval`; it ends with the coordinator.
    pub fn new(config: CoordinatorConfig, offsets: Arc<OffsetStore>) -> Self {
        let coordinator = GroupCoordinator {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                groups: Mutex::new(HashMap::new()),
                offsets,
                commit_order: (0..COMMIT_STRIPES).map(|_| Arc::default()).collect(),
            }),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(expire_offsets_periodically(Arc::downgrade(&coordinator.inner)));
        }
        coordinator
    }

    /// Expires the committed offsets of groups without members, as of wall-clock `now_ms`
    /// (time is a parameter so tests need not wait a week): an offset goes when both its
    /// commit and the moment its group became empty are more than `offsets_retention` ago.
    /// Tombstones are written, so the compacted `__consumer_offsets` drops them too. Runs under
    /// each group's commit-order lock, so a commit racing the expiry lands after it and stays.
    /// Returns how many offsets expired.
    pub async fn expire_offsets_at(&self, now_ms: i64) -> Result<usize, CoordinatorError> {
        let retention =
            i64::try_from(self.inner.config.offsets_retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(retention);
        let mut expired = 0;
        for group_id in self.inner.offsets.groups_with_offsets_before(cutoff) {
            let in_order = self.commit_stripe(&group_id).lock_owned().await;
            if let Some(cell) = self.group(&group_id) {
                let group = cell.group.lock();
                let live = group.state() != GroupState::Dead;
                let recently_emptied = group.empty_since_ms().is_some_and(|t| t > cutoff);
                if live && (group.has_members() || recently_emptied) {
                    continue;
                }
            }
            let store = Arc::clone(&self.inner.offsets);
            let id = group_id.clone();
            let n = tokio::task::spawn_blocking(move || {
                let n = store.expire_group(&id, cutoff);
                drop(in_order);
                n
            })
            .await
            .map_err(|e| CoordinatorError::Task(e.to_string()))??;
            expired += n;
            self.maybe_unload(&group_id);
        }
        Ok(expired)
    }

    /// The lock that orders `group_id`'s commits.
    fn commit_stripe(&self, group_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(group_id);
        let stripes = &self.inner.commit_order;
        Arc::clone(&stripes[(hash % stripes.len() as u64) as usize])
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    /// The offsets store underneath.
    pub fn offsets(&self) -> &Arc<OffsetStore> {
        &self.inner.offsets
    }

    /// Unloads every group: waiting calls get COORDINATOR_NOT_AVAILABLE, timer tasks end.
    /// Committed offsets are unaffected.
    pub fn shutdown(&self) {
        let cells: Vec<Arc<GroupCell>> = self.inner.groups.lock().drain().map(|(_, c)| c).collect();
        for cell in cells {
            cell.group.lock().mark_dead();
            cell.wake.notify_one();
        }
    }

    // ---- Membership ----------------------------------------------------------------------------

    /// JoinGroup: waits until the group's join phase ends (at most the rebalance timeout, or
    /// the initial rebalance delay for a new group), then returns the new generation. The
    /// leader's result lists every member with its metadata.
    pub async fn join_group(&self, req: JoinGroupRequest) -> JoinGroupResult {
        if let Err((code, msg)) = self.validate_join(&req) {
            return JoinGroupResult::error(code, msg, &req.member_id);
        }
        // A group can be unloaded between our lookup and our lock; then look again.
        for _ in 0..3 {
            let cell = if req.member_id.is_empty() {
                match self.group_or_create(&req.group_id) {
                    Ok(cell) => cell,
                    Err((code, msg)) => return JoinGroupResult::error(code, msg, &req.member_id),
                }
            } else {
                match self.group(&req.group_id) {
                    Some(cell) => cell,
                    None => {
                        return JoinGroupResult::error(
                            ErrorCode::UnknownMemberId,
                            "the group does not exist",
                            &req.member_id,
                        );
                    }
                }
            };
            let outcome = {
                let mut group = cell.group.lock();
                if group.state() == GroupState::Dead {
                    continue;
                }
                let outcome = group.join(&req, || new_member_id(&req.client_id), Instant::now());
                group.note_wall_clock(now_ms());
                outcome
            };
            cell.wake.notify_one();
            return match outcome {
                Outcome::Done(result) => {
                    self.maybe_unload(&req.group_id);
                    result
                }
                Outcome::Wait(rx) => rx.await.unwrap_or_else(|_| {
                    JoinGroupResult::error(
                        ErrorCode::CoordinatorNotAvailable,
                        "the group was unloaded",
                        &req.member_id,
                    )
                }),
            };
        }
        JoinGroupResult::error(
            ErrorCode::CoordinatorNotAvailable,
            "the group is being unloaded",
            &req.member_id,
        )
    }

    fn validate_join(&self, req: &JoinGroupRequest) -> Result<(), (ErrorCode, &'static str)> {
        let c = &self.inner.config;
        self.validate_group_id(&req.group_id)?;
        if req.session_timeout < c.min_session_timeout
            || req.session_timeout > c.max_session_timeout
        {
            return Err((
                ErrorCode::InvalidSessionTimeout,
                "session timeout outside the allowed range",
            ));
        }
        if req.client_id.len() > c.max_name_len
            || req.protocol_type.len() > c.max_name_len
            || req.client_host.len() > c.max_name_len
            || req.member_id.len() > c.max_name_len + 64
            || req
                .group_instance_id
                .as_ref()
                .is_some_and(|i| i.is_empty() || i.len() > c.max_name_len)
        {
            return Err((ErrorCode::InvalidRequest, "an id in the request is too long"));
        }
        if req.protocols.len() > c.max_protocols_per_member {
            return Err((ErrorCode::InvalidRequest, "too many protocols"));
        }
        let metadata: usize = req.protocols.iter().map(|p| p.name.len() + p.metadata.len()).sum();
        if metadata > c.max_member_metadata_bytes {
            return Err((ErrorCode::InvalidRequest, "protocol metadata too large"));
        }
        Ok(())
    }

    fn validate_group_id(&self, group_id: &str) -> Result<(), (ErrorCode, &'static str)> {
        if group_id.is_empty() {
            return Err((ErrorCode::InvalidGroupId, "the group id is empty"));
        }
        if group_id.len() > self.inner.config.max_group_id_len {
            return Err((ErrorCode::InvalidGroupId, "the group id is too long"));
        }
        Ok(())
    }

    /// SyncGroup: the leader hands in every member's assignment; everyone waits until it has
    /// and then gets their own.
    pub async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResult {
        if let Err((code, msg)) = self.validate_group_id(&req.group_id) {
            return SyncGroupResult::error(code, msg);
        }
        let max = self.inner.config.max_assignment_bytes;
        if req.assignments.iter().any(|a| a.assignment.len() > max)
            || req.assignments.len() > self.inner.config.max_group_size
        {
            return SyncGroupResult::error(ErrorCode::InvalidRequest, "assignment too large");
        }
        let Some(cell) = self.group(&req.group_id) else {
            return SyncGroupResult::error(ErrorCode::UnknownMemberId, "the group does not exist");
        };
        let outcome = cell.group.lock().sync(&req, Instant::now());
        cell.wake.notify_one();
        match outcome {
            Outcome::Done(result) => result,
            Outcome::Wait(rx) => rx.await.unwrap_or_else(|_| {
                SyncGroupResult::error(ErrorCode::CoordinatorNotAvailable, "the group was unloaded")
            }),
        }
    }

    /// Heartbeat: keeps the member's session alive. REBALANCE_IN_PROGRESS tells it to rejoin.
    pub fn heartbeat(&self, req: &HeartbeatRequest) -> GroupResult {
        if let Err((code, msg)) = self.validate_group_id(&req.group_id) {
            return GroupResult::error(code, msg);
        }
        let Some(cell) = self.group(&req.group_id) else {
            return GroupResult::error(ErrorCode::UnknownMemberId, "the group does not exist");
        };
        let result = cell.group.lock().heartbeat(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            Instant::now(),
        );
        cell.wake.notify_one();
        result
    }

    /// LeaveGroup: removes the member; the others rebalance.
    pub fn leave_group(&self, req: &LeaveGroupRequest) -> GroupResult {
        if let Err((code, msg)) = self.validate_group_id(&req.group_id) {
            return GroupResult::error(code, msg);
        }
        let Some(cell) = self.group(&req.group_id) else {
            return GroupResult::error(ErrorCode::UnknownMemberId, "the group does not exist");
        };
        let result = {
            let mut group = cell.group.lock();
            let result =
                group.leave(&req.member_id, req.group_instance_id.as_deref(), Instant::now());
            group.note_wall_clock(now_ms());
            result
        };
        cell.wake.notify_one();
        self.maybe_unload(&req.group_id);
        result
    }

    // ---- Offsets -------------------------------------------------------------------------------

    /// OffsetCommit: durably commits the offsets (fsync'ed before this returns NONE). One
    /// result per entry, in request order. `generation_id` -1 with an empty `member_id` commits
    /// outside group management, allowed only while the group has no members.
    pub async fn commit_offsets(
        &self,
        req: OffsetCommitRequest,
    ) -> Vec<OffsetCommitPartitionResult> {
        let fail_all = |code: ErrorCode, msg: &str| {
            req.offsets
                .iter()
                .map(|e| OffsetCommitPartitionResult {
                    topic: e.topic.clone(),
                    partition: e.partition,
                    error_code: code,
                    error_message: msg.to_owned(),
                })
                .collect::<Vec<_>>()
        };
        if let Err((code, msg)) = self.validate_group_id(&req.group_id) {
            return fail_all(code, msg);
        }
        if req.offsets.len() > self.inner.config.max_offsets_per_commit {
            return fail_all(ErrorCode::InvalidRequest, "too many partitions in one commit");
        }
        let in_order = self.commit_stripe(&req.group_id).lock_owned().await;
        match self.group(&req.group_id) {
            Some(cell) => {
                let checked = cell.group.lock().validate_commit(
                    &req.member_id,
                    req.group_instance_id.as_deref(),
                    req.generation_id,
                    Instant::now(),
                );
                cell.wake.notify_one();
                if let Err((code, msg)) = checked {
                    return fail_all(code, msg);
                }
            }
            // Not a live group: only commits outside group management make sense; anything
            // else comes from a member of a generation this coordinator no longer knows.
            None if req.generation_id < 0 => {}
            None => {
                return fail_all(ErrorCode::IllegalGeneration, "the group has no such generation");
            }
        }

        let max_metadata = self.inner.config.offset_metadata_max_bytes;
        let mut results: Vec<OffsetCommitPartitionResult> = Vec::with_capacity(req.offsets.len());
        let mut writes = Vec::new();
        let mut accepted = Vec::new();
        for (i, e) in req.offsets.iter().enumerate() {
            let error = if e.metadata.len() > max_metadata {
                Some((ErrorCode::OffsetMetadataTooLarge, "offset metadata too large"))
            } else if e.topic.is_empty() || e.topic.len() > i16::MAX as usize {
                Some((ErrorCode::InvalidRequest, "invalid topic name"))
            } else {
                None
            };
            let (code, msg) = error.unwrap_or((ErrorCode::None, ""));
            results.push(OffsetCommitPartitionResult {
                topic: e.topic.clone(),
                partition: e.partition,
                error_code: code,
                error_message: msg.to_owned(),
            });
            if error.is_none() {
                accepted.push(i);
                writes.push(OffsetWrite {
                    topic: e.topic.clone(),
                    partition: e.partition,
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata.clone(),
                });
            }
        }
        if writes.is_empty() {
            return results;
        }
        let store = Arc::clone(&self.inner.offsets);
        let group_id = req.group_id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let result = store.commit(&group_id, &writes, now_ms());
            drop(in_order);
            result
        })
        .await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(CoordinatorError::Task(e.to_string())),
        };
        if let Some(e) = failure {
            warn!(group = %req.group_id, error = %e, "offset commit failed");
            let (code, msg) = (e.code(), e.to_string());
            for i in accepted {
                if let Some(r) = results.get_mut(i) {
                    r.error_code = code;
                    r.error_message.clone_from(&msg);
                }
            }
        }
        results
    }

    /// OffsetFetch: the committed offsets of the named partitions (`None` for a partition with
    /// no commit), or of every partition the group committed when `topics` is `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[OffsetFetchTopic]>,
    ) -> OffsetFetchResult {
        if let Err((code, msg)) = self.validate_group_id(group_id) {
            return OffsetFetchResult {
                error_code: code,
                error_message: msg.to_owned(),
                partitions: Vec::new(),
            };
        }
        let store = &self.inner.offsets;
        let partitions = match topics {
            None => store
                .fetch_group(group_id)
                .into_iter()
                .map(|(topic, partition, c)| OffsetFetchPartition {
                    topic,
                    partition,
                    committed_offset: Some(c.offset),
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata,
                    error_code: ErrorCode::None,
                })
                .collect(),
            Some(topics) => topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), *p)))
                .map(|(topic, partition)| {
                    let committed = store.fetch(group_id, topic, partition);
                    OffsetFetchPartition {
                        topic: topic.to_owned(),
                        partition,
                        committed_offset: committed.as_ref().map(|c| c.offset),
                        leader_epoch: committed
                            .as_ref()
                            .map_or(LeaderEpoch::UNKNOWN, |c| c.leader_epoch),
                        metadata: committed.map(|c| c.metadata).unwrap_or_default(),
                        error_code: ErrorCode::None,
                    }
                })
                .collect(),
        };
        OffsetFetchResult { error_code: ErrorCode::None, error_message: String::new(), partitions }
    }

    /// Deletes every group's committed offsets of a deleted topic; returns how many.
    pub async fn delete_topic_offsets(&self, topic: &str) -> Result<usize, CoordinatorError> {
        let store = Arc::clone(&self.inner.offsets);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || store.delete_topic(&topic))
            .await
            .map_err(|e| CoordinatorError::Task(e.to_string()))?
    }

    /// DeleteGroups for one group: refused with NON_EMPTY_GROUP while it has members,
    /// GROUP_ID_NOT_FOUND when it has neither members nor committed offsets; otherwise its
    /// offsets are deleted (durably, before this returns NONE) and the group is unloaded.
    pub async fn delete_group(&self, group_id: &str) -> GroupResult {
        if let Err((code, msg)) = self.validate_group_id(group_id) {
            return GroupResult::error(code, msg);
        }
        {
            // Unloaded under the table lock (then the group's, as everywhere), so no member
            // can join between the check and the deletion; a later join starts a new group.
            let mut groups = self.inner.groups.lock();
            if let Some(cell) = groups.get(group_id).cloned() {
                let mut group = cell.group.lock();
                if !group.is_idle() {
                    return GroupResult::error(ErrorCode::NonEmptyGroup, "the group has members");
                }
                group.mark_dead();
                groups.remove(group_id);
                cell.wake.notify_one();
            } else if !self.inner.offsets.has_offsets(group_id) {
                return GroupResult::error(ErrorCode::GroupIdNotFound, "the group does not exist");
            }
        }
        let store = Arc::clone(&self.inner.offsets);
        let id = group_id.to_owned();
        match tokio::task::spawn_blocking(move || store.delete_group(&id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return GroupResult::error(e.code(), e.to_string()),
            Err(e) => return GroupResult::error(ErrorCode::UnknownServerError, e.to_string()),
        }
        GroupResult::ok()
    }

    /// OffsetDelete (Kafka's API 47, `kafka-consumer-groups --delete-offsets`): removes the
    /// group's committed offsets of `partitions`, except those of topics its members are
    /// subscribed to (GROUP_SUBSCRIBED_TO_TOPIC). GROUP_ID_NOT_FOUND for a group with neither
    /// members nor offsets; NON_EMPTY_GROUP for one whose members are not consumers.
    ///
    /// The subscription check and the write are not one step: a member that subscribes in
    /// between finds no committed offset and starts at its `auto.offset.reset`, as it would
    /// had the delete come a moment earlier.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, PartitionId)>,
    ) -> OffsetDeleteResult {
        let failed = |code: ErrorCode, message: String| OffsetDeleteResult {
            error_code: code,
            error_message: message,
            partitions: Vec::new(),
        };
        if let Err((code, msg)) = self.validate_group_id(group_id) {
            return failed(code, msg.to_owned());
        }
        let subscribed = match self.group(group_id) {
            Some(cell) => {
                let group = cell.group.lock();
                if group.state() == GroupState::Dead {
                    return failed(ErrorCode::GroupIdNotFound, "the group does not exist".into());
                }
                match group.subscribed_topics() {
                    Ok(s) => s,
                    Err(code) => {
                        return failed(code, "the group's members are not consumers".into());
                    }
                }
            }
            None if self.inner.offsets.has_offsets(group_id) => None,
            None => return failed(ErrorCode::GroupIdNotFound, "the group does not exist".into()),
        };
        let mut answers = Vec::with_capacity(partitions.len());
        let mut victims = Vec::new();
        for (topic, p) in partitions {
            let code = if subscribed.as_ref().is_some_and(|s| s.contains(&topic)) {
                ErrorCode::GroupSubscribedToTopic
            } else {
                victims.push((topic.clone(), p));
                ErrorCode::None
            };
            answers.push((topic, p, code));
        }
        let store = Arc::clone(&self.inner.offsets);
        let id = group_id.to_owned();
        match tokio::task::spawn_blocking(move || store.delete_offsets(&id, &victims)).await {
            Ok(Ok(_)) => OffsetDeleteResult {
                error_code: ErrorCode::None,
                error_message: String::new(),
                partitions: answers,
            },
            Ok(Err(e)) => failed(e.code(), e.to_string()),
            Err(e) => failed(ErrorCode::UnknownServerError, e.to_string()),
        }
    }

    // ---- Introspection -------------------------------------------------------------------------

    /// Every group: live ones and those that only have committed offsets, sorted by id.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let mut out: BTreeMap<String, GroupListing> = BTreeMap::new();
        for group_id in self.inner.offsets.groups() {
            out.insert(
                group_id.clone(),
                GroupListing { group_id, protocol_type: String::new(), state: GroupState::Empty },
            );
        }
        let cells: Vec<(String, Arc<GroupCell>)> =
            self.inner.groups.lock().iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        for (group_id, cell) in cells {
            let group = cell.group.lock();
            if group.state() == GroupState::Dead {
                continue;
            }
            let listing = GroupListing {
                group_id: group_id.clone(),
                protocol_type: group.protocol_type().to_owned(),
                state: group.state(),
            };
            out.insert(group_id, listing);
        }
        out.into_values().collect()
    }

    /// One group's state and members. An unknown group is GROUP_ID_NOT_FOUND in state Dead.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let mut description = GroupDescription {
            group_id: group_id.to_owned(),
            error_code: ErrorCode::None,
            error_message: String::new(),
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol: String::new(),
            generation_id: -1,
            members: Vec::new(),
        };
        if let Err((code, msg)) = self.validate_group_id(group_id) {
            description.error_code = code;
            description.error_message = msg.to_owned();
            return description;
        }
        if let Some(cell) = self.group(group_id) {
            let group = cell.group.lock();
            if group.state() != GroupState::Dead {
                return group.describe();
            }
        }
        if self.inner.offsets.has_offsets(group_id) {
            description.state = GroupState::Empty;
            description.generation_id = 0;
        } else {
            description.error_code = ErrorCode::GroupIdNotFound;
            description.error_message = "the group does not exist".to_owned();
        }
        description
    }

    // ---- Group table ---------------------------------------------------------------------------

    fn group(&self, group_id: &str) -> Option<Arc<GroupCell>> {
        self.inner.groups.lock().get(group_id).cloned()
    }

    fn group_or_create(&self, group_id: &str) -> Result<Arc<GroupCell>, (ErrorCode, &'static str)> {
        let mut groups = self.inner.groups.lock();
        if let Some(cell) = groups.get(group_id) {
            return Ok(Arc::clone(cell));
        }
        if groups.len() >= self.inner.config.max_groups {
            evict_idle(&mut groups);
            if groups.len() >= self.inner.config.max_groups {
                return Err((ErrorCode::CoordinatorNotAvailable, "too many groups"));
            }
        }
        let cell = Arc::new(GroupCell {
            group: Mutex::new(Group::new(group_id.to_owned(), Arc::clone(&self.inner.config))),
            wake: Notify::new(),
        });
        groups.insert(group_id.to_owned(), Arc::clone(&cell));
        tokio::spawn(drive(Arc::clone(&cell), group_id.to_owned(), Arc::downgrade(&self.inner)));
        debug!(group = group_id, "group created");
        Ok(cell)
    }

    fn maybe_unload(&self, group_id: &str) {
        unload_if_idle(&self.inner, group_id);
    }
}

/// Drops an empty group with no committed offsets (nothing would be lost: a new member starts a
/// new group), so abandoned groups do not accumulate. Lock order: table, then group.
fn unload_if_idle(inner: &Inner, group_id: &str) {
    if inner.offsets.has_offsets(group_id) {
        return;
    }
    let mut groups = inner.groups.lock();
    let Some(cell) = groups.get(group_id).cloned() else { return };
    let mut group = cell.group.lock();
    if group.is_idle() {
        group.mark_dead();
        groups.remove(group_id);
        cell.wake.notify_one();
        debug!(group = group_id, "unloaded idle group");
    }
}

/// Frees room in a full table by unloading groups that have no members (their offsets stay in
/// the store; only the generation counter is forgotten).
fn evict_idle(groups: &mut HashMap<String, Arc<GroupCell>>) {
    let mut evicted = BTreeSet::new();
    for (id, cell) in groups.iter() {
        if let Some(mut group) = cell.group.try_lock()
            && group.is_idle()
        {
            group.mark_dead();
            cell.wake.notify_one();
            evicted.insert(id.clone());
        }
    }
    groups.retain(|id, _| !evicted.contains(id));
}

/// Runs [`GroupCoordinator::expire_offsets_at`] every `offsets_retention_check_interval`
/// until the coordinator is dropped.
async fn expire_offsets_periodically(inner: Weak<Inner>) {
    loop {
        let Some(interval) = inner.upgrade().map(|i| i.config.offsets_retention_check_interval)
        else {
            return;
        };
        tokio::time::sleep(interval.max(std::time::Duration::from_millis(10))).await;
        let Some(inner) = inner.upgrade() else { return };
        let coordinator = GroupCoordinator { inner };
        match coordinator.expire_offsets_at(now_ms()).await {
            Ok(0) => {}
            Ok(n) => debug!(expired = n, "expired committed offsets of empty groups"),
            Err(e) => warn!(error = %e, "expiring committed offsets failed"),
        }
    }
}

/// A group's timer task: runs the group's deadlines as they come, sleeps otherwise, and ends
/// when the group is unloaded.
async fn drive(cell: Arc<GroupCell>, group_id: String, inner: Weak<Inner>) {
    loop {
        let next = {
            let mut group = cell.group.lock();
            if group.state() == GroupState::Dead {
                return;
            }
            group.on_timer(Instant::now());
            group.note_wall_clock(now_ms());
            (group.next_deadline(), group.is_idle())
        };
        if let (_, true) = next
            && let Some(inner) = inner.upgrade()
        {
            unload_if_idle(&inner, &group_id);
        }
        match next.0 {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = cell.wake.notified() => {}
                }
            }
            None => cell.wake.notified().await,
        }
    }
}
