//! JoinGroup for one group: new, pending (KIP-394) and known members, static members
//! (KIP-345, KIP-814) taking their old place, and the protocol every member supports. The
//! transitions a join triggers are in the parent module.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{Group, GroupState, Outcome};
use crate::api::{JoinGroupMember, JoinGroupRequest, JoinGroupResult};
use crate::error::ErrorCode;
use crate::member::Member;

impl Group {
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
    pub(super) fn replace_static_member(
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
    pub(super) fn check_instance(
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

    pub(super) fn add_member_and_rebalance(
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

    pub(super) fn update_member_and_rebalance(
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

    pub(super) fn clamp_rebalance_timeout(&self, req: &JoinGroupRequest) -> Duration {
        req.rebalance_timeout.min(self.config.max_rebalance_timeout)
    }

    /// Can a member with these protocols be in the group (Kafka's `supportsProtocols`)?
    /// `except` is a member that is replacing its own protocols.
    pub(super) fn supports_protocols(&self, except: Option<&str>, req: &JoinGroupRequest) -> bool {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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

    pub(super) fn join_result_for(&self, member_id: &str) -> JoinGroupResult {
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
}
