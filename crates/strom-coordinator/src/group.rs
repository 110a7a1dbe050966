//! The state machine of one consumer group, as Kafka's `GroupMetadata` and the classic
//! `GroupCoordinator` drive it: Empty -> PreparingRebalance -> CompletingRebalance -> Stable,
//! back to PreparingRebalance whenever membership changes, Dead when the group is unloaded.
//!
//! Pure and synchronous: every method takes the current time and returns at once; calls that
//! must wait (JoinGroup until the join phase ends, SyncGroup until the leader's assignment)
//! get a oneshot receiver that a later transition answers. The coordinator owns the lock and
//! the timer that calls [`Group::on_timer`] at [`Group::next_deadline`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use crate::api::{
    GroupDescription, GroupResult, MemberDescription, SyncGroupRequest, SyncGroupResult,
};
use crate::config::CoordinatorConfig;
use crate::error::ErrorCode;
use crate::member::Member;

mod join;

/// The `protocol_type` of Kafka's consumers: only their subscriptions can be read.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// What a group's members subscribe to, for OffsetDelete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subscribed {
    /// Some subscription could not be read: treat every topic as subscribed.
    All,
    /// The union of the members' subscriptions.
    Topics(HashSet<String>),
}

impl Subscribed {
    pub(crate) fn contains(&self, topic: &str) -> bool {
        match self {
            Subscribed::All => true,
            Subscribed::Topics(t) => t.contains(topic),
        }
    }
}

/// The state of a group, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (it may still have committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Join phase done; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Unknown to, or unloaded from, this coordinator.
    Dead,
}

impl GroupState {
    /// Kafka's name of the state (`"PreparingRebalance"`, ...), as DescribeGroups reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a JoinGroup or SyncGroup call gets from the state machine.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// The answer is known now.
    Done(T),
    /// The answer comes when the group moves on.
    Wait(oneshot::Receiver<T>),
}

/// Kafka's `InitialDelayedJoin`: the first rebalance of an empty group waits a little for more
/// members, and each new member buys another delay while the rebalance timeout allows.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    remaining: Duration,
    new_member_added: bool,
}

/// One group's membership and rebalance state.
#[derive(Debug)]
pub(crate) struct Group {
    id: String,
    config: Arc<CoordinatorConfig>,
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// KIP-345: `group.instance.id` -> the member id that currently holds it.
    static_members: HashMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, and when they lapse unless used.
    pending: HashMap<String, Instant>,
    next_join_seq: u64,
    /// In PreparingRebalance: when the join phase ends whoever has rejoined.
    join_deadline: Option<Instant>,
    initial_delay: Option<InitialDelay>,
    /// After a join phase: members that have not synced yet, and until when they may.
    pending_sync: HashSet<String>,
    sync_deadline: Option<Instant>,
    /// Wall-clock milliseconds since which the group has been Empty (KIP-211: offsets expire
    /// counting from here); `None` while it has members, or when unknown.
    empty_since_ms: Option<i64>,
}

impl Group {
    pub(crate) fn new(id: String, config: Arc<CoordinatorConfig>) -> Self {
        Group {
            id,
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: HashMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            next_join_seq: 0,
            join_deadline: None,
            initial_delay: None,
            pending_sync: HashSet::new(),
            sync_deadline: None,
            empty_since_ms: None,
        }
    }

    /// Records when the group became Empty, given the wall clock now; the coordinator calls it
    /// after every call that can change the membership.
    pub(crate) fn note_wall_clock(&mut self, now_ms: i64) {
        if self.state == GroupState::Empty && self.members.is_empty() {
            self.empty_since_ms.get_or_insert(now_ms);
        } else {
            self.empty_since_ms = None;
        }
    }

    /// Since when (wall-clock ms) the group has had no members; `None` while it has some.
    pub(crate) fn empty_since_ms(&self) -> Option<i64> {
        self.empty_since_ms
    }

    /// True while members (joined or about to) are in the group: its offsets never expire.
    pub(crate) fn has_members(&self) -> bool {
        !self.members.is_empty() || !self.pending.is_empty()
    }

    pub(crate) fn state(&self) -> GroupState {
        self.state
    }

    pub(crate) fn protocol_type(&self) -> &str {
        &self.protocol_type
    }

    /// Empty with nobody about to join: nothing here but the generation counter.
    pub(crate) fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// Which topics OffsetDelete must leave alone (Kafka's `isSubscribedToTopic`): `None` when
    /// the group has no members (every offset may go); the topics its consumer members
    /// subscribe to otherwise. A member whose subscription cannot be read counts as subscribed
    /// to everything, as in Kafka. NON_EMPTY_GROUP for a group with members of another
    /// protocol type, whose subscriptions mean nothing here.
    pub(crate) fn subscribed_topics(&self) -> Result<Option<Subscribed>, ErrorCode> {
        if self.members.is_empty() {
            return Ok(None);
        }
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE {
            return Err(ErrorCode::NonEmptyGroup);
        }
        let protocol = self.protocol.as_deref().unwrap_or_default();
        let mut topics = HashSet::new();
        for m in self.members.values() {
            match crate::consumer_protocol::Subscription::decode(&m.metadata(protocol)) {
                Ok(sub) => topics.extend(sub.topics),
                Err(_) => return Ok(Some(Subscribed::All)),
            }
        }
        Ok(Some(Subscribed::Topics(topics)))
    }

    /// Unloads the group: every parked call is answered, every later call retries elsewhere.
    pub(crate) fn mark_dead(&mut self) {
        for m in self.members.values_mut() {
            m.fail_waiters(ErrorCode::CoordinatorNotAvailable, "the group was unloaded");
        }
        self.members.clear();
        self.static_members.clear();
        self.pending.clear();
        self.pending_sync.clear();
        self.join_deadline = None;
        self.sync_deadline = None;
        self.initial_delay = None;
        self.state = GroupState::Dead;
    }

    // ---- Rebalance transitions ---------------------------------------------------------------

    fn group_rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default()
    }

    fn maybe_prepare_rebalance(&mut self, now: Instant, reason: &str) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, reason);
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, reason: &str) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for this generation's assignment will never get it: send them
            // back to JoinGroup.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                m.complete_sync(SyncGroupResult::error(
                    ErrorCode::RebalanceInProgress,
                    "the group is rebalancing",
                ));
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let rebalance_timeout = self.group_rebalance_timeout();
        let delay = self.config.initial_rebalance_delay;
        if self.state == GroupState::Empty && !delay.is_zero() {
            self.initial_delay = Some(InitialDelay {
                remaining: rebalance_timeout.saturating_sub(delay),
                new_member_added: false,
            });
            self.join_deadline = Some(now + delay);
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now + rebalance_timeout);
        }
        info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            reason,
            "preparing to rebalance"
        );
        self.state = GroupState::PreparingRebalance;
    }

    /// Ends the join phase if everyone known has rejoined (and no initial delay is running).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance || self.initial_delay.is_some() {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(Member::is_awaiting_join);
        if all_joined {
            self.complete_join(now);
        }
    }

    /// Kafka's `onCompleteJoin`: drop members that did not rejoin, start the next generation
    /// and answer every parked JoinGroup. A member whose JoinGroup caller has gone is dropped
    /// too: carried into the generation, it would hold partitions nobody reads until its
    /// session expired, and then force another rebalance.
    fn complete_join(&mut self, now: Instant) {
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() || m.join_caller_gone())
            .map(|m| m.id.clone())
            .collect();
        for id in laggards {
            info!(group = %self.id, member = %id, "removing member that did not rejoin in time");
            self.remove_member(&id);
        }
        self.join_deadline = None;
        self.initial_delay = None;
        self.generation = self.generation.saturating_add(1);
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.state = GroupState::Empty;
            info!(group = %self.id, generation = self.generation, "group is empty");
            return;
        }
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.values().min_by_key(|m| m.join_seq).map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in &ids {
            let result = self.join_result_for(id);
            if let Some(m) = self.members.get_mut(id) {
                m.heartbeat(now);
                m.complete_join(result);
            }
        }
        self.pending_sync = ids.into_iter().collect();
        self.sync_deadline = Some(now + self.group_rebalance_timeout());
        info!(
            group = %self.id,
            generation = self.generation,
            protocol = self.protocol.as_deref().unwrap_or(""),
            members = self.members.len(),
            "join phase complete"
        );
    }

    /// Removes a member, answering its parked calls; the caller decides what follows.
    fn remove_member(&mut self, id: &str) {
        let Some(mut member) = self.members.remove(id) else { return };
        member.fail_waiters(ErrorCode::UnknownMemberId, "the member was removed from the group");
        if let Some(instance) = member.group_instance_id.as_deref()
            && self.static_members.get(instance).is_some_and(|holder| holder == id)
        {
            self.static_members.remove(instance);
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.values().min_by_key(|m| m.join_seq).map(|m| m.id.clone());
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`: after a member goes, the others must rebalance.
    fn remove_member_and_update(&mut self, id: &str, now: Instant, reason: &str) {
        self.remove_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, reason);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ----------------------------------------------------

    /// Handles a SyncGroup whose assignment sizes the coordinator already validated.
    pub(crate) fn sync(
        &mut self,
        req: &SyncGroupRequest,
        now: Instant,
    ) -> Outcome<SyncGroupResult> {
        let fail = |code, msg: &str| Outcome::Done(SyncGroupResult::error(code, msg));
        if self.state == GroupState::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable, "the group is being unloaded");
        }
        if let Err((code, msg)) =
            self.check_instance(&req.member_id, req.group_instance_id.as_deref())
        {
            return fail(code, msg);
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(ErrorCode::UnknownMemberId, "the member is not in the group");
        }
        if req.generation_id != self.generation {
            return fail(ErrorCode::IllegalGeneration, "stale generation");
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                fail(ErrorCode::UnknownMemberId, "the member is not in the group")
            }
            GroupState::PreparingRebalance => {
                fail(ErrorCode::RebalanceInProgress, "the group is rebalancing")
            }
            GroupState::CompletingRebalance => {
                self.synced(&req.member_id, now);
                let Some(member) = self.members.get_mut(&req.member_id) else {
                    return fail(ErrorCode::UnknownMemberId, "the member is not in the group");
                };
                let rx = member.await_sync();
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    self.apply_assignment(req);
                }
                Outcome::Wait(rx)
            }
            GroupState::Stable => {
                self.synced(&req.member_id, now);
                let assignment = self
                    .members
                    .get(&req.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Outcome::Done(SyncGroupResult {
                    error_code: ErrorCode::None,
                    error_message: String::new(),
                    assignment,
                })
            }
        }
    }

    fn synced(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat(now);
        }
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }

    /// Stores the leader's assignment, moves to Stable and answers every parked SyncGroup.
    /// Members the leader left out get empty bytes; assignments for unknown ids are ignored.
    fn apply_assignment(&mut self, req: &SyncGroupRequest) {
        let given: HashMap<&str, &Bytes> =
            req.assignments.iter().map(|a| (a.member_id.as_str(), &a.assignment)).collect();
        for m in self.members.values_mut() {
            m.assignment = given.get(m.id.as_str()).map(|b| (*b).clone()).unwrap_or_default();
            let result = SyncGroupResult {
                error_code: ErrorCode::None,
                error_message: String::new(),
                assignment: m.assignment.clone(),
            };
            m.complete_sync(result);
        }
        self.state = GroupState::Stable;
        info!(group = %self.id, generation = self.generation, "group is stable");
    }

    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> GroupResult {
        if self.state == GroupState::Dead {
            return GroupResult::error(
                ErrorCode::CoordinatorNotAvailable,
                "the group is being unloaded",
            );
        }
        if let Err((code, msg)) = self.check_instance(member_id, instance) {
            return GroupResult::error(code, msg);
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return GroupResult::error(
                ErrorCode::UnknownMemberId,
                "the member is not in the group",
            );
        };
        if generation != self.generation {
            return GroupResult::error(ErrorCode::IllegalGeneration, "stale generation");
        }
        match self.state {
            GroupState::PreparingRebalance => {
                member.heartbeat(now);
                GroupResult::error(
                    ErrorCode::RebalanceInProgress,
                    "the group is rebalancing: rejoin",
                )
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.heartbeat(now);
                GroupResult::ok()
            }
            GroupState::Empty | GroupState::Dead => {
                GroupResult::error(ErrorCode::UnknownMemberId, "the member is not in the group")
            }
        }
    }

    /// LeaveGroup of one member, named by member id, by `group.instance.id` (LeaveGroup v3+
    /// with an empty member id), or both (then they must agree).
    pub(crate) fn leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now: Instant,
    ) -> GroupResult {
        if self.state == GroupState::Dead {
            return GroupResult::error(
                ErrorCode::CoordinatorNotAvailable,
                "the group is being unloaded",
            );
        }
        let resolved;
        let member_id = match instance {
            Some(i) if member_id.is_empty() => match self.static_members.get(i) {
                Some(holder) => {
                    resolved = holder.clone();
                    resolved.as_str()
                }
                None => {
                    return GroupResult::error(
                        ErrorCode::UnknownMemberId,
                        "no member holds this group.instance.id",
                    );
                }
            },
            _ => {
                if let Err((code, msg)) = self.check_instance(member_id, instance) {
                    return GroupResult::error(code, msg);
                }
                member_id
            }
        };
        if self.pending.remove(member_id).is_some() {
            self.try_complete_join(now);
            return GroupResult::ok();
        }
        if !self.members.contains_key(member_id) {
            return GroupResult::error(
                ErrorCode::UnknownMemberId,
                "the member is not in the group",
            );
        }
        info!(group = %self.id, member = %member_id, "member left the group");
        self.remove_member_and_update(member_id, now, "a member left the group");
        GroupResult::ok()
    }

    /// Checks that a commit may go ahead (Kafka's `validateOffsetCommit` and the state rules of
    /// `doCommitOffsets`); a member's commit also counts as a heartbeat.
    pub(crate) fn validate_commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), (ErrorCode, &'static str)> {
        if self.state == GroupState::Dead {
            return Err((ErrorCode::CoordinatorNotAvailable, "the group is being unloaded"));
        }
        if !member_id.is_empty() {
            self.check_instance(member_id, instance)?;
        }
        if generation < 0 && member_id.is_empty() {
            return if self.state == GroupState::Empty {
                Ok(())
            } else {
                Err((ErrorCode::UnknownMemberId, "only members may commit for an active group"))
            };
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Err((ErrorCode::UnknownMemberId, "the member is not in the group"));
        };
        if generation != self.generation {
            return Err((ErrorCode::IllegalGeneration, "stale generation"));
        }
        match self.state {
            // The member has this generation's JoinGroup answer but not its assignment yet.
            GroupState::CompletingRebalance => {
                Err((ErrorCode::RebalanceInProgress, "the group is rebalancing"))
            }
            // Still allowed while preparing: members commit before they rejoin.
            GroupState::Stable | GroupState::PreparingRebalance => {
                member.heartbeat(now);
                Ok(())
            }
            GroupState::Empty | GroupState::Dead => {
                Err((ErrorCode::UnknownMemberId, "the member is not in the group"))
            }
        }
    }

    // ---- Timers ------------------------------------------------------------------------------

    /// The earliest moment [`Group::on_timer`] has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.members.values().map(|m| m.session_deadline);
        let pending = self.pending.values().copied();
        sessions.chain(pending).chain(self.join_deadline).chain(self.sync_deadline).min()
    }

    /// Runs every deadline that has passed: lapsed KIP-394 ids, expired sessions, the end of
    /// the join phase, members that never synced.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.state == GroupState::Dead {
            return;
        }
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before {
            self.try_complete_join(now);
        }

        let mut expired = Vec::new();
        for m in self.members.values_mut() {
            if m.session_deadline <= now {
                if m.is_kept_alive() {
                    m.heartbeat(now);
                } else {
                    expired.push(m.id.clone());
                }
            }
        }
        expired.sort();
        for id in expired {
            info!(group = %self.id, member = %id, "session expired");
            self.remove_member_and_update(&id, now, "a member's session expired");
        }

        if self.state == GroupState::PreparingRebalance
            && self.join_deadline.is_some_and(|d| d <= now)
        {
            match self.initial_delay {
                Some(delay) if delay.new_member_added && !delay.remaining.is_zero() => {
                    let step = self.config.initial_rebalance_delay.min(delay.remaining);
                    self.initial_delay = Some(InitialDelay {
                        remaining: delay.remaining.saturating_sub(step),
                        new_member_added: false,
                    });
                    self.join_deadline = Some(now + step);
                }
                _ => self.complete_join(now),
            }
        }

        if self.sync_deadline.is_some_and(|d| d <= now)
            && matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
        {
            let mut laggards: Vec<String> = self.pending_sync.drain().collect();
            laggards.sort();
            self.sync_deadline = None;
            if !laggards.is_empty() {
                for id in &laggards {
                    info!(group = %self.id, member = %id, "removing member that did not sync in time");
                    self.remove_member(id);
                }
                self.prepare_rebalance(now, "members did not sync in time");
                self.try_complete_join(now);
            }
        }
    }

    // ---- Introspection -----------------------------------------------------------------------

    pub(crate) fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.join_seq);
        let stable = self.state == GroupState::Stable;
        GroupDescription {
            group_id: self.id.clone(),
            error_code: ErrorCode::None,
            error_message: String::new(),
            state: self.state,
            protocol_type: self.protocol_type.clone(),
            protocol: protocol.clone(),
            generation_id: self.generation,
            members: members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable { m.metadata(&protocol) } else { Bytes::new() },
                    assignment: if stable { m.assignment.clone() } else { Bytes::new() },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
