//! Unit tests of the group state machine, driven with explicit times.

use super::*;
use crate::api::{JoinGroupProtocol, JoinGroupRequest, SyncGroupAssignment};

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
    assert_eq!((r.generation_id, r.leader.as_str(), r.protocol_name.as_str()), (1, "m1", "range"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let sync = SyncGroupRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: "m1".into(),
        assignments: vec![SyncGroupAssignment { member_id: "m1".into(), assignment: "a".into() }],
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
    let _rx1 = pending(g.join(&join_req("m1", &["roundrobin", "range"]), || unreachable!(), now));
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
