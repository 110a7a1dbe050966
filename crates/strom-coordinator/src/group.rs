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
use tracing::{debug, info};

use crate::api::{
    GroupDescription, GroupResult, JoinGroupMember, JoinGroupRequest, JoinGroupResult,
    MemberDescription, SyncGroupRequest, SyncGroupResult,
};
use crate::config::CoordinatorConfig;
use crate::error::ErrorCode;
use crate::member::Member;

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

    // ---- JoinGroup ---------------------------------------------------------------------------

    /// Handles a JoinGroup whose fields the coordinator already validated. `new_id` makes the
    /// id of a member joining for the first time.
    pub(crate) fn join(
        &mut self,
        req: &JoinGroupRequest,
        new_id: impl FnOnce() -> String,
        now: Instant,
    ) -> Outcome<JoinGroupResult> {
        let fail =
            |code, msg: &str| Outcome::Done(JoinGroupResult::error(code, msg, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable, "the group is being unloaded");
        }
        if req.member_id.is_empty()
            && let Some(instance) = req.group_instance_id.as_deref()
            && let Some(old_id) = self.static_members.get(instance).cloned()
        {
            if !self.supports_protocols(Some(&old_id), req) {
                return fail(
                    ErrorCode::InconsistentGroupProtocol,
                    "no protocol in common with the group's members",
                );
            }
            return self.replace_static_member(&old_id, new_id(), req, now);
        }
        if req.member_id.is_empty() {
            if self.members.len() + self.pending.len() >= self.config.max_group_size {
                return fail(ErrorCode::GroupMaxSizeReached, "the group is full");
            }
            if !self.supports_protocols(None, req) {
                return fail(
                    ErrorCode::InconsistentGroupProtocol,
                    "no protocol in common with the group's members",
                );
            }
            let id = new_id();
            // A static member is named by its instance id already: no KIP-394 round trip.
            if req.require_known_member_id && req.group_instance_id.is_none() {
                self.pending.insert(id.clone(), now + req.session_timeout);
                return Outcome::Done(JoinGroupResult::error(
                    ErrorCode::MemberIdRequired,
                    "rejoin with the assigned member id",
                    &id,
                ));
            }
            return Outcome::Wait(self.add_member_and_rebalance(id, req, now));
        }
        if self.pending.contains_key(&req.member_id) {
            if !self.supports_protocols(None, req) {
                return fail(
                    ErrorCode::InconsistentGroupProtocol,
                    "no protocol in common with the group's members",
                );
            }
            self.pending.remove(&req.member_id);
            return Outcome::Wait(self.add_member_and_rebalance(req.member_id.clone(), req, now));
        }
        if let Err((code, msg)) =
            self.check_instance(&req.member_id, req.group_instance_id.as_deref())
        {
            return fail(code, msg);
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(ErrorCode::UnknownMemberId, "the member is not in the group");
        }
        if !self.supports_protocols(Some(&req.member_id), req) {
            return fail(
                ErrorCode::InconsistentGroupProtocol,
                "no protocol in common with the group's members",
            );
        }
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let matches = self.members.get(&req.member_id).is_some_and(|m| m.matches(&req.protocols));
        match self.state {
            GroupState::PreparingRebalance => {
                Outcome::Wait(self.update_member_and_rebalance(req, now))
            }
            // The member lost our JoinGroup answer and asks again: same answer, no rebalance.
            GroupState::CompletingRebalance if matches => {
                Outcome::Done(self.join_result_for(&req.member_id))
            }
            // A follower rejoining with unchanged metadata changes nothing; the leader rejoining
            // asks for a new assignment (e.g. it saw topic metadata change).
            GroupState::Stable if matches && !is_leader => {
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.heartbeat(now);
                }
                Outcome::Done(self.join_result_for(&req.member_id))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                Outcome::Wait(self.update_member_and_rebalance(req, now))
            }
            GroupState::Empty | GroupState::Dead => {
                fail(ErrorCode::UnknownMemberId, "the member is not in the group")
            }
        }
    }

    /// KIP-345: a static member rejoined with an empty member id (it restarted). It takes its
    /// old place under a new member id; whatever the old id still waits on is answered with
    /// FENCED_INSTANCE_ID. In a Stable group with unchanged protocols nothing else happens: the
    /// member gets the current generation back and SyncGroup hands it its old assignment.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: &JoinGroupRequest,
        now: Instant,
    ) -> Outcome<JoinGroupResult> {
        let rebalance_timeout = self.clamp_rebalance_timeout(req);
        let Some(mut member) = self.members.remove(old_id) else {
            // The map and the members disagree: forget the stale entry, join as new.
            if let Some(instance) = req.group_instance_id.as_deref() {
                self.static_members.remove(instance);
            }
            return Outcome::Wait(self.add_member_and_rebalance(new_id, req, now));
        };
        member.fail_waiters(
            ErrorCode::FencedInstanceId,
            "a newer member took over this group.instance.id",
        );
        let unchanged = member.matches(&req.protocols);
        member.id.clone_from(&new_id);
        member.client_id.clone_from(&req.client_id);
        member.client_host.clone_from(&req.client_host);
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = rebalance_timeout;
        member.protocols.clone_from(&req.protocols);
        member.heartbeat(now);
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance) = req.group_instance_id.clone() {
            self.static_members.insert(instance, new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        info!(group = %self.id, old = %old_id, new = %new_id,
            instance = req.group_instance_id.as_deref().unwrap_or(""),
            "static member rejoined; old member id fenced");
        if self.state == GroupState::Stable && unchanged {
            let mut result = self.join_result_for(&new_id);
            if req.supports_skip_assignment {
                // KIP-814: the leader keeps watching the members' subscriptions, but must not
                // assign: the Stable group would ignore a new assignment.
                result.skip_assignment = was_leader;
            } else if was_leader {
                // Before v9 the only way to stop the assignor is to name someone else as the
                // leader: the id this member had, which it no longer matches (Kafka does so).
                result.leader = old_id.to_owned();
                result.members.clear();
            }
            return Outcome::Done(result);
        }
        let rejoin = JoinGroupRequest { member_id: new_id, ..req.clone() };
        Outcome::Wait(self.update_member_and_rebalance(&rejoin, now))
    }

    /// KIP-345: a request naming a `group.instance.id` that another member id now holds comes
    /// from a fenced zombie.
    fn check_instance(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), (ErrorCode, &'static str)> {
        match instance.and_then(|i| self.static_members.get(i)) {
            Some(holder) if holder != member_id => {
                Err((ErrorCode::FencedInstanceId, "another member holds this group.instance.id"))
            }
            _ => Ok(()),
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: &JoinGroupRequest,
        now: Instant,
    ) -> oneshot::Receiver<JoinGroupResult> {
        if self.members.is_empty() {
            self.protocol_type = req.protocol_type.clone();
        }
        let seq = self.next_join_seq;
        self.next_join_seq += 1;
        let rebalance_timeout = self.clamp_rebalance_timeout(req);
        let mut member = Member::new(id.clone(), req, rebalance_timeout, seq, now);
        let rx = member.await_join();
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if let Some(delay) = self.initial_delay.as_mut() {
            delay.new_member_added = true;
        }
        debug!(group = %self.id, member = %id, "member joined");
        if let Some(instance) = req.group_instance_id.clone() {
            self.static_members.insert(instance, id.clone());
        }
        self.members.insert(id, member);
        self.maybe_prepare_rebalance(now, "a new member joined");
        self.try_complete_join(now);
        rx
    }

    fn update_member_and_rebalance(
        &mut self,
        req: &JoinGroupRequest,
        now: Instant,
    ) -> oneshot::Receiver<JoinGroupResult> {
        let rebalance_timeout = self.clamp_rebalance_timeout(req);
        if self.members.len() == 1 {
            self.protocol_type = req.protocol_type.clone();
        }
        let rx = match self.members.get_mut(&req.member_id) {
            Some(m) => {
                m.protocols = req.protocols.clone();
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = rebalance_timeout;
                m.heartbeat(now);
                m.await_join()
            }
            // Callers check membership first; answer rather than panic if that ever changes.
            None => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(JoinGroupResult::error(
                    ErrorCode::UnknownMemberId,
                    "the member is not in the group",
                    &req.member_id,
                ));
                return rx;
            }
        };
        self.maybe_prepare_rebalance(now, "a member rejoined");
        self.try_complete_join(now);
        rx
    }

    fn clamp_rebalance_timeout(&self, req: &JoinGroupRequest) -> Duration {
        req.rebalance_timeout.min(self.config.max_rebalance_timeout)
    }

    /// Can a member with these protocols be in the group (Kafka's `supportsProtocols`)?
    /// `except` is a member that is replacing its own protocols.
    fn supports_protocols(&self, except: Option<&str>, req: &JoinGroupRequest) -> bool {
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return false;
        }
        let mut others = self.members.values().filter(|m| Some(m.id.as_str()) != except).peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type != req.protocol_type {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        req.protocols.iter().any(|p| others.iter().all(|m| m.supports(&p.name)))
    }

    /// The protocol for the next generation: among those every member supports, the one most
    /// members list first (Kafka's vote); ties go to the leader's preference.
    fn select_protocol(&self) -> Option<String> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.join_seq);
        let first = members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in &members {
            if let Some(p) = m.protocols.iter().find(|p| candidates.contains(&p.name.as_str())) {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let leader = self.leader.as_ref().and_then(|l| self.members.get(l)).unwrap_or(first);
        let preference =
            |name: &str| leader.protocols.iter().position(|p| p.name == name).unwrap_or(usize::MAX);
        candidates
            .iter()
            .max_by(|a, b| {
                let va = votes.get(*a).copied().unwrap_or(0);
                let vb = votes.get(*b).copied().unwrap_or(0);
                va.cmp(&vb).then_with(|| preference(b).cmp(&preference(a)))
            })
            .map(|s| (*s).to_owned())
    }

    fn join_result_for(&self, member_id: &str) -> JoinGroupResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            let mut all: Vec<&Member> = self.members.values().collect();
            all.sort_by_key(|m| m.join_seq);
            all.iter()
                .map(|m| JoinGroupMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResult {
            error_code: ErrorCode::None,
            error_message: String::new(),
            generation_id: self.generation,
            protocol_name: protocol,
            leader,
            member_id: member_id.to_owned(),
            members,
            skip_assignment: false,
        }
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
mod tests {
    use super::*;
    use crate::api::{JoinGroupProtocol, SyncGroupAssignment};

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn group() -> Group {
        Group::new("g".into(), Arc::new(CoordinatorConfig::default()))
    }

    fn join_req(member_id: &str, protocols: &[&str]) -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: "g".into(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            member_id: member_id.into(),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| JoinGroupProtocol {
                    name: p.to_string(),
                    metadata: Bytes::copy_from_slice(p.as_bytes()),
                })
                .collect(),
            client_id: "c".into(),
            ..Default::default()
        }
    }

    fn done<T: std::fmt::Debug>(o: Outcome<T>) -> T {
        match o {
            Outcome::Done(t) => t,
            Outcome::Wait(mut rx) => rx.try_recv().expect("answered"),
        }
    }

    fn pending<T>(o: Outcome<T>) -> oneshot::Receiver<T> {
        match o {
            Outcome::Wait(rx) => rx,
            Outcome::Done(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn single_member_joins_syncs_and_is_stable() {
        let mut g = group();
        let now = Instant::now();
        let r = done(g.join(&join_req("", &["range"]), || "m1".into(), now));
        assert_eq!(r.error_code, ErrorCode::None);
        assert_eq!(
            (r.generation_id, r.leader.as_str(), r.protocol_name.as_str()),
            (1, "m1", "range")
        );
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let sync = SyncGroupRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: "m1".into(),
            assignments: vec![SyncGroupAssignment {
                member_id: "m1".into(),
                assignment: "a".into(),
            }],
            group_instance_id: None,
        };
        let s = done(g.sync(&sync, now));
        assert_eq!(s.assignment, Bytes::from("a"));
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn protocol_is_chosen_by_votes_among_common_protocols() {
        let mut g = group();
        let now = Instant::now();
        let _ = done(g.join(&join_req("", &["range", "roundrobin"]), || "m1".into(), now));
        // m2 joins: a rebalance starts; m1 must rejoin.
        let rx2 = pending(g.join(&join_req("", &["roundrobin", "range"]), || "m2".into(), now));
        let _rx1 =
            pending(g.join(&join_req("m1", &["roundrobin", "range"]), || unreachable!(), now));
        let r2 = rx2.blocking_recv_for_test();
        assert_eq!(r2.protocol_name, "roundrobin");
        assert_eq!(r2.generation_id, 2);
        // A member with nothing in common is refused.
        let r = done(g.join(&join_req("", &["sticky"]), || "m3".into(), now));
        assert_eq!(r.error_code, ErrorCode::InconsistentGroupProtocol);
    }

    #[test]
    fn a_member_whose_join_caller_left_is_not_carried_into_the_generation() {
        let mut g = group();
        let now = Instant::now();
        let _ = done(g.join(&join_req("", &["range"]), || "m1".into(), now));
        // m2 joins and gives up (its connection closed) before the join phase completes.
        let rx2 = pending(g.join(&join_req("", &["range"]), || "m2".into(), now));
        drop(rx2);
        let r1 = pending(g.join(&join_req("m1", &["range"]), || unreachable!(), now))
            .blocking_recv_for_test();
        assert_eq!(r1.error_code, ErrorCode::None);
        assert_eq!(r1.generation_id, 2);
        let ids: Vec<_> = r1.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(ids, ["m1"], "the gone member got partitions: {ids:?}");
    }

    #[test]
    fn member_id_required_then_join() {
        let mut g = group();
        let now = Instant::now();
        let mut req = join_req("", &["range"]);
        req.require_known_member_id = true;
        let r = done(g.join(&req, || "c-123".into(), now));
        assert_eq!(r.error_code, ErrorCode::MemberIdRequired);
        assert_eq!(r.member_id, "c-123");
        let r = done(g.join(&join_req("c-123", &["range"]), || unreachable!(), now));
        assert_eq!(r.error_code, ErrorCode::None);
        assert_eq!(r.member_id, "c-123");
        // An id never handed out is refused.
        let r = done(g.join(&join_req("forged", &["range"]), || unreachable!(), now));
        assert_eq!(r.error_code, ErrorCode::UnknownMemberId);
    }

    #[test]
    fn pending_member_id_lapses_after_the_session_timeout() {
        let mut g = group();
        let now = Instant::now();
        let mut req = join_req("", &["range"]);
        req.require_known_member_id = true;
        let _ = done(g.join(&req, || "p".into(), now));
        assert_eq!(g.next_deadline(), Some(now + SESSION));
        g.on_timer(now + SESSION);
        assert!(g.is_idle());
    }

    #[test]
    fn group_max_size_is_enforced() {
        let config = CoordinatorConfig { max_group_size: 1, ..Default::default() };
        let mut g = Group::new("g".into(), Arc::new(config));
        let now = Instant::now();
        let _ = done(g.join(&join_req("", &["range"]), || "m1".into(), now));
        let r = done(g.join(&join_req("", &["range"]), || "m2".into(), now));
        assert_eq!(r.error_code, ErrorCode::GroupMaxSizeReached);
    }

    #[test]
    fn laggards_are_removed_when_the_join_phase_times_out() {
        let mut g = group();
        let now = Instant::now();
        let _ = done(g.join(&join_req("", &["range"]), || "m1".into(), now));
        let _ = done(g.join(&join_req("m1", &["range"]), || unreachable!(), now)); // retransmit
        let rx2 = pending(g.join(&join_req("", &["range"]), || "m2".into(), now));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        // m1 keeps heartbeating but never rejoins.
        assert_eq!(g.heartbeat("m1", None, 1, now).error_code, ErrorCode::RebalanceInProgress);
        g.on_timer(now + REBALANCE);
        let r2 = rx2.blocking_recv_for_test();
        assert_eq!((r2.generation_id, r2.leader.as_str()), (2, "m2"));
        assert_eq!(g.heartbeat("m1", None, 1, now).error_code, ErrorCode::UnknownMemberId);
    }

    fn static_req(instance: &str) -> JoinGroupRequest {
        JoinGroupRequest {
            group_instance_id: Some(instance.into()),
            require_known_member_id: true,
            ..join_req("", &["range"])
        }
    }

    fn sync_req(member: &str, generation: i32, assign: &[(&str, &str)]) -> SyncGroupRequest {
        SyncGroupRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            assignments: assign
                .iter()
                .map(|(m, a)| SyncGroupAssignment {
                    member_id: (*m).into(),
                    assignment: Bytes::copy_from_slice(a.as_bytes()),
                })
                .collect(),
            group_instance_id: None,
        }
    }

    /// Two static members "a" (m1, leader) and "b" (m2), Stable in generation 2.
    fn stable_static_group(now: Instant) -> Group {
        let mut g = group();
        // No MEMBER_ID_REQUIRED round trip for static members.
        let r1 = done(g.join(&static_req("a"), || "m1".into(), now));
        assert_eq!((r1.error_code, r1.member_id.as_str()), (ErrorCode::None, "m1"));
        let rx2 = pending(g.join(&static_req("b"), || "m2".into(), now));
        let rx1 = pending(g.join(
            &JoinGroupRequest { member_id: "m1".into(), ..static_req("a") },
            || unreachable!(),
            now,
        ));
        let (r1, r2) = (rx1.blocking_recv_for_test(), rx2.blocking_recv_for_test());
        assert_eq!((r1.generation_id, r2.generation_id), (2, 2));
        let instances: Vec<_> =
            r1.members.iter().map(|m| m.group_instance_id.clone().unwrap_or_default()).collect();
        assert_eq!(instances, ["a", "b"]);
        let rx = pending(g.sync(&sync_req("m1", 2, &[("m1", "p0"), ("m2", "p1")]), now));
        assert_eq!(rx.blocking_recv_for_test().assignment, Bytes::from("p0"));
        let s2 = done(g.sync(&sync_req("m2", 2, &[]), now));
        assert_eq!(s2.assignment, Bytes::from("p1"));
        assert_eq!(g.state(), GroupState::Stable);
        g
    }

    #[test]
    fn restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
        let now = Instant::now();
        let mut g = stable_static_group(now);
        // "b" restarts: it rejoins with no member id but the same instance id.
        let r = done(g.join(&static_req("b"), || "m2-new".into(), now));
        assert_eq!(r.error_code, ErrorCode::None);
        assert_eq!((r.generation_id, r.member_id.as_str()), (2, "m2-new"));
        assert_eq!(g.state(), GroupState::Stable, "no rebalance");
        let s = done(g.sync(&sync_req("m2-new", 2, &[]), now));
        assert_eq!(s.assignment, Bytes::from("p1"), "same partitions");
        // The other member never hears of it.
        assert_eq!(g.heartbeat("m1", Some("a"), 2, now).error_code, ErrorCode::None);
        // The old incarnation is fenced.
        assert_eq!(g.heartbeat("m2", Some("b"), 2, now).error_code, ErrorCode::FencedInstanceId);
        assert_eq!(g.heartbeat("m2", None, 2, now).error_code, ErrorCode::UnknownMemberId);
        assert_eq!(
            g.validate_commit("m2", Some("b"), 2, now).unwrap_err().0,
            ErrorCode::FencedInstanceId
        );
        assert!(g.validate_commit("m2-new", Some("b"), 2, now).is_ok());
        assert_eq!(g.heartbeat("m2-new", Some("b"), 2, now).error_code, ErrorCode::None);
    }

    #[test]
    fn restarted_static_leader_stays_leader_without_a_rebalance() {
        let now = Instant::now();
        let mut g = stable_static_group(now);
        // KIP-814 (JoinGroup v9+): it is the leader and sees the members, but must not assign.
        let v9 = JoinGroupRequest { supports_skip_assignment: true, ..static_req("a") };
        let r = done(g.join(&v9, || "m1-new".into(), now));
        assert_eq!((r.generation_id, r.leader.as_str()), (2, "m1-new"));
        assert!(r.skip_assignment);
        assert_eq!(r.members.len(), 2);
        // The leader's SyncGroup in a Stable group changes no assignment.
        let s = done(g.sync(&sync_req("m1-new", 2, &[("m1-new", "zz")]), now));
        assert_eq!(s.assignment, Bytes::from("p0"));
        assert_eq!(g.state(), GroupState::Stable);
        // A static follower that rejoins is never told to skip (it does not assign anyway).
        let v9 = JoinGroupRequest { supports_skip_assignment: true, ..static_req("b") };
        let r = done(g.join(&v9, || "m2-new".into(), now));
        assert!(!r.skip_assignment && r.members.is_empty());
        assert_eq!(r.leader, "m1-new");
    }

    #[test]
    fn restarted_static_leader_of_an_old_client_is_told_another_id_leads() {
        let now = Instant::now();
        let mut g = stable_static_group(now);
        // Before v9 a client assigns whenever it is named the leader: name its old id, as
        // Kafka does, so it does not compute an assignment the Stable group would drop.
        let r = done(g.join(&static_req("a"), || "m1-new".into(), now));
        assert_eq!((r.generation_id, r.member_id.as_str()), (2, "m1-new"));
        assert_eq!(r.leader, "m1");
        assert!(r.members.is_empty() && !r.skip_assignment);
        let s = done(g.sync(&sync_req("m1-new", 2, &[]), now));
        assert_eq!(s.assignment, Bytes::from("p0"));
        assert_eq!(g.state(), GroupState::Stable);
        // The group itself knows the new id leads: a later rebalance starts from it.
        assert_eq!(g.heartbeat("m1-new", Some("a"), 2, now).error_code, ErrorCode::None);
    }

    #[test]
    fn static_member_session_expiry_rebalances_and_frees_the_instance_id() {
        let now = Instant::now();
        let mut g = stable_static_group(now);
        let later = now + SESSION / 2;
        assert_eq!(g.heartbeat("m1", Some("a"), 2, later).error_code, ErrorCode::None);
        g.on_timer(now + SESSION);
        assert_eq!(g.state(), GroupState::PreparingRebalance, "m2's session expired");
        assert_eq!(
            g.heartbeat("m1", Some("a"), 2, now + SESSION).error_code,
            ErrorCode::RebalanceInProgress
        );
        // "b" coming back now is a new member: it joins the rebalance.
        let rx = pending(g.join(&static_req("b"), || "m2-new".into(), now + SESSION));
        let _rx1 = pending(g.join(
            &JoinGroupRequest { member_id: "m1".into(), ..static_req("a") },
            || unreachable!(),
            now + SESSION,
        ));
        assert_eq!(rx.blocking_recv_for_test().generation_id, 3);
    }

    #[test]
    fn static_member_leaves_by_instance_id() {
        let now = Instant::now();
        let mut g = stable_static_group(now);
        assert_eq!(g.leave("", Some("zz"), now).error_code, ErrorCode::UnknownMemberId);
        assert_eq!(g.leave("m1", Some("b"), now).error_code, ErrorCode::FencedInstanceId);
        assert_eq!(g.leave("", Some("b"), now).error_code, ErrorCode::None);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat("m2", Some("b"), 2, now).error_code, ErrorCode::UnknownMemberId);
    }

    trait RecvNow<T> {
        fn blocking_recv_for_test(self) -> T;
    }

    impl<T> RecvNow<T> for oneshot::Receiver<T> {
        fn blocking_recv_for_test(mut self) -> T {
            self.try_recv().expect("answered")
        }
    }
}
