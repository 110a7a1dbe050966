//! The group protocol end to end through the coordinator's async API: concurrent joiners,
//! leader-computed assignments, rebalances on join/leave/session expiry, and the errors stale
//! members get. Time is tokio's paused clock, so every timeout here is deterministic.
// Helpers outside #[test] fns unwrap too: a panic in a test is a failed assertion.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "server")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_coordinator::assignor::{Assignor, MemberSubscription, RangeAssignor};
use strom_coordinator::consumer_protocol::{Assignment, Subscription, group_by_topic};
use strom_coordinator::*;
use strom_format::{LeaderEpoch, Offset, PartitionId};

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);
const GROUP: &str = "billing";

fn coordinator(config: CoordinatorConfig) -> GroupCoordinator {
    let logs: Vec<Arc<dyn OffsetsLog>> = vec![Arc::new(MemoryOffsetsLog::default())];
    GroupCoordinator::new(config, Arc::new(OffsetStore::load(logs).unwrap()))
}

fn join_req(member_id: &str, topics: &[&str]) -> JoinGroupRequest {
    let sub = Subscription {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    JoinGroupRequest {
        group_id: GROUP.into(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        member_id: member_id.into(),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupProtocol {
            name: "range".into(),
            metadata: sub.encode(1).unwrap(),
        }],
        client_id: "app".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: false,
        group_instance_id: None,
        supports_skip_assignment: false,
    }
}

fn sync_req(
    generation_id: i32,
    member_id: &str,
    assignments: Vec<SyncGroupAssignment>,
) -> SyncGroupRequest {
    SyncGroupRequest {
        group_id: GROUP.into(),
        generation_id,
        member_id: member_id.into(),
        assignments,
        group_instance_id: None,
    }
}

fn heartbeat(c: &GroupCoordinator, generation_id: i32, member_id: &str) -> ErrorCode {
    c.heartbeat(&HeartbeatRequest {
        group_id: GROUP.into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
    })
    .error_code
}

/// What a consumer leader does: decode every subscription, run the assignor, encode.
fn leader_assignments(joined: &JoinGroupResult, partitions: i32) -> Vec<SyncGroupAssignment> {
    let members: Vec<MemberSubscription> = joined
        .members
        .iter()
        .map(|m| {
            MemberSubscription::from_subscription(
                &m.member_id,
                &Subscription::decode(&m.metadata).unwrap(),
            )
        })
        .collect();
    let topics = BTreeMap::from([("orders".to_string(), partitions)]);
    RangeAssignor
        .assign(&members, &topics)
        .into_iter()
        .map(|(member_id, tps)| SyncGroupAssignment {
            member_id,
            assignment: Assignment { partitions: group_by_topic(&tps), user_data: None }
                .encode(0)
                .unwrap(),
        })
        .collect()
}

/// Joins, syncs (computing the assignment when leader) and returns both answers.
async fn join_and_sync(
    c: &GroupCoordinator,
    member_id: &str,
) -> (JoinGroupResult, SyncGroupResult) {
    let joined = c.join_group(join_req(member_id, &["orders"])).await;
    assert_eq!(joined.error_code, ErrorCode::None, "{}", joined.error_message);
    let assignments =
        if joined.leader == joined.member_id { leader_assignments(&joined, 6) } else { Vec::new() };
    let synced = c.sync_group(sync_req(joined.generation_id, &joined.member_id, assignments)).await;
    (joined, synced)
}

#[tokio::test(start_paused = true)]
async fn concurrent_joiners_share_one_generation_and_one_leader() {
    // The initial delay lets every joiner of a new group land in the first generation.
    let c = coordinator(CoordinatorConfig {
        initial_rebalance_delay: Duration::from_secs(3),
        ..Default::default()
    });
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { join_and_sync(&c, "").await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let generations: BTreeSet<i32> = results.iter().map(|(j, _)| j.generation_id).collect();
    assert_eq!(generations, BTreeSet::from([1]));
    let leaders: BTreeSet<&str> = results.iter().map(|(j, _)| j.leader.as_str()).collect();
    assert_eq!(leaders.len(), 1);
    let ids: BTreeSet<&str> = results.iter().map(|(j, _)| j.member_id.as_str()).collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.contains(leaders.iter().next().unwrap()));
    for id in &ids {
        assert!(id.starts_with("app-"));
    }
    // Only the leader sees the member list.
    for (joined, _) in &results {
        let expected = if joined.leader == joined.member_id { 5 } else { 0 };
        assert_eq!(joined.members.len(), expected);
    }
    // Everyone got their own part of the leader's assignment; together they cover it all once.
    let mut all = Vec::new();
    for (_, synced) in &results {
        assert_eq!(synced.error_code, ErrorCode::None);
        all.extend(Assignment::decode(&synced.assignment).unwrap().topic_partitions());
    }
    all.sort();
    let expected: Vec<(String, i32)> = (0..6).map(|p| ("orders".to_string(), p)).collect();
    assert_eq!(all, expected);
    let d = c.describe_group(GROUP);
    assert_eq!((d.state, d.generation_id, d.members.len()), (GroupState::Stable, 1, 5));
    assert_eq!(d.protocol, "range");
    assert!(d.members.iter().all(|m| !m.assignment.is_empty() && m.client_host == "/127.0.0.1"));
}

#[tokio::test(start_paused = true)]
async fn follower_sync_waits_for_the_leader() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    // b joins; a learns of the rebalance by heartbeat and rejoins.
    let c2 = c.clone();
    let b_join = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    assert_eq!(heartbeat(&c, 1, &a.member_id), ErrorCode::RebalanceInProgress);
    let a2 = c.join_group(join_req(&a.member_id, &["orders"])).await;
    let b = b_join.await.unwrap();
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    assert_eq!(a2.leader, a.member_id, "the first member stays leader");
    // The follower syncs first and has to wait.
    let c3 = c.clone();
    let b_id = b.member_id.clone();
    let b_sync = tokio::spawn(async move { c3.sync_group(sync_req(2, &b_id, Vec::new())).await });
    tokio::task::yield_now().await;
    assert!(!b_sync.is_finished());
    assert_eq!(c.describe_group(GROUP).state, GroupState::CompletingRebalance);
    let assignments = leader_assignments(&a2, 6);
    let expected_b =
        assignments.iter().find(|x| x.member_id == b.member_id).unwrap().assignment.clone();
    let a_sync = c.sync_group(sync_req(2, &a.member_id, assignments)).await;
    assert_eq!(a_sync.error_code, ErrorCode::None);
    let b_sync = b_sync.await.unwrap();
    assert_eq!(b_sync.error_code, ErrorCode::None);
    assert_eq!(b_sync.assignment, expected_b);
    assert_eq!(Assignment::decode(&b_sync.assignment).unwrap().topic_partitions().len(), 3);
    assert_eq!(heartbeat(&c, 2, &b.member_id), ErrorCode::None);
}

#[tokio::test(start_paused = true)]
async fn leader_rejoin_increments_the_generation() {
    let c = coordinator(CoordinatorConfig::default());
    let (j1, s1) = join_and_sync(&c, "").await;
    assert_eq!((j1.generation_id, s1.error_code), (1, ErrorCode::None));
    let (j2, s2) = join_and_sync(&c, &j1.member_id).await;
    assert_eq!((j2.generation_id, s2.error_code), (2, ErrorCode::None));
    assert_eq!(j2.member_id, j1.member_id);
    // The old generation is now stale everywhere.
    assert_eq!(heartbeat(&c, 1, &j1.member_id), ErrorCode::IllegalGeneration);
    let stale = c.sync_group(sync_req(1, &j1.member_id, Vec::new())).await;
    assert_eq!(stale.error_code, ErrorCode::IllegalGeneration);
    let commit = c
        .commit_offsets(OffsetCommitRequest {
            group_id: GROUP.into(),
            generation_id: 1,
            member_id: j1.member_id.clone(),
            offsets: vec![entry("orders", 0, 1)],
            group_instance_id: None,
        })
        .await;
    assert_eq!(commit[0].error_code, ErrorCode::IllegalGeneration);
    // Unknown members are told so.
    assert_eq!(heartbeat(&c, 2, "nobody"), ErrorCode::UnknownMemberId);
    let r = c.sync_group(sync_req(2, "nobody", Vec::new())).await;
    assert_eq!(r.error_code, ErrorCode::UnknownMemberId);
    let r = c.join_group(join_req("nobody", &["orders"])).await;
    assert_eq!(r.error_code, ErrorCode::UnknownMemberId);
}

fn entry(topic: &str, partition: i32, offset: i64) -> OffsetCommitEntry {
    OffsetCommitEntry {
        topic: topic.into(),
        partition: PartitionId::new(partition),
        offset: Offset::new(offset),
        leader_epoch: LeaderEpoch::UNKNOWN,
        metadata: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_member_expires_and_the_group_rebalances() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    let c2 = c.clone();
    let b_task = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    let a2 = c.join_group(join_req(&a.member_id, &["orders"])).await;
    let b = b_task.await.unwrap();
    let s = c.sync_group(sync_req(2, &a.member_id, leader_assignments(&a2, 6))).await;
    assert_eq!(s.error_code, ErrorCode::None);
    let s = c.sync_group(sync_req(2, &b.member_id, Vec::new())).await;
    assert_eq!(s.error_code, ErrorCode::None);

    // a heartbeats every 3 s; b says nothing. b's session (10 s) runs out.
    let mut saw_rebalance = false;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        match heartbeat(&c, 2, &a.member_id) {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress => {
                saw_rebalance = true;
                break;
            }
            other => panic!("unexpected heartbeat answer {other}"),
        }
    }
    assert!(saw_rebalance, "b's expiry must trigger a rebalance");
    assert_eq!(heartbeat(&c, 2, &b.member_id), ErrorCode::UnknownMemberId);
    let (a3, s3) = join_and_sync(&c, &a.member_id).await;
    assert_eq!((a3.generation_id, a3.members.len()), (3, 1));
    assert_eq!(Assignment::decode(&s3.assignment).unwrap().topic_partitions().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stops_heartbeating_alone_leaves_an_empty_group() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    tokio::time::sleep(SESSION + Duration::from_secs(1)).await;
    assert_eq!(heartbeat(&c, 1, &a.member_id), ErrorCode::UnknownMemberId);
    // No committed offsets: the empty group is unloaded entirely.
    assert_eq!(c.describe_group(GROUP).error_code, ErrorCode::GroupIdNotFound);
    assert!(c.list_groups().is_empty());
}

#[tokio::test(start_paused = true)]
async fn leave_triggers_a_rebalance() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    let c2 = c.clone();
    let b_task = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    let a2 = c.join_group(join_req(&a.member_id, &["orders"])).await;
    let b = b_task.await.unwrap();
    c.sync_group(sync_req(2, &a.member_id, leader_assignments(&a2, 6))).await;
    c.sync_group(sync_req(2, &b.member_id, Vec::new())).await;

    let left = c.leave_group(&LeaveGroupRequest {
        group_id: GROUP.into(),
        member_id: b.member_id.clone(),
        group_instance_id: None,
    });
    assert_eq!(left.error_code, ErrorCode::None);
    assert_eq!(heartbeat(&c, 2, &a.member_id), ErrorCode::RebalanceInProgress);
    assert_eq!(c.describe_group(GROUP).state, GroupState::PreparingRebalance);
    let (a3, _) = join_and_sync(&c, &a.member_id).await;
    assert_eq!((a3.generation_id, a3.members.len()), (3, 1));
    let again = c.leave_group(&LeaveGroupRequest {
        group_id: GROUP.into(),
        member_id: b.member_id,
        group_instance_id: None,
    });
    assert_eq!(again.error_code, ErrorCode::UnknownMemberId);
}

#[tokio::test(start_paused = true)]
async fn sync_during_a_rebalance_is_told_to_rejoin() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    let c2 = c.clone();
    let _b = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    let r = c.sync_group(sync_req(1, &a.member_id, Vec::new())).await;
    assert_eq!(r.error_code, ErrorCode::RebalanceInProgress);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_never_syncs_is_removed_and_followers_rejoin() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    let c2 = c.clone();
    let b_task = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    let _a2 = c.join_group(join_req(&a.member_id, &["orders"])).await;
    let b = b_task.await.unwrap();
    // b syncs and waits; the leader a never does (but keeps heartbeating).
    let c3 = c.clone();
    let b_id = b.member_id.clone();
    let b_sync = tokio::spawn(async move { c3.sync_group(sync_req(2, &b_id, Vec::new())).await });
    let a_id = a.member_id.clone();
    let c4 = c.clone();
    let beats = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if heartbeat(&c4, 2, &a_id) != ErrorCode::None {
                break;
            }
        }
    });
    let r = b_sync.await.unwrap();
    assert_eq!(r.error_code, ErrorCode::RebalanceInProgress);
    beats.await.unwrap();
    assert_eq!(heartbeat(&c, 2, &a.member_id), ErrorCode::UnknownMemberId);
    let (b2, _) = join_and_sync(&c, &b.member_id).await;
    assert_eq!((b2.generation_id, b2.leader.as_str()), (3, b.member_id.as_str()));
}

#[tokio::test(start_paused = true)]
async fn join_phase_ends_at_the_rebalance_timeout_without_laggards() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    // a keeps heartbeating (so its session never expires) but never rejoins.
    let c2 = c.clone();
    let a_id = a.member_id.clone();
    let beats = tokio::spawn(async move {
        let mut answers = Vec::new();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let e = heartbeat(&c2, 1, &a_id);
            answers.push(e);
            if e == ErrorCode::UnknownMemberId {
                break;
            }
        }
        answers
    });
    let start = tokio::time::Instant::now();
    let b = c.join_group(join_req("", &["orders"])).await;
    assert!(tokio::time::Instant::now() - start >= REBALANCE);
    assert_eq!((b.generation_id, b.leader.as_str(), b.members.len()), (2, b.member_id.as_str(), 1));
    let answers = beats.await.unwrap();
    assert!(answers.contains(&ErrorCode::RebalanceInProgress));
    assert_eq!(answers.last(), Some(&ErrorCode::UnknownMemberId));
}

#[tokio::test(start_paused = true)]
async fn member_id_required_round_trip() {
    let c = coordinator(CoordinatorConfig::default());
    let mut req = join_req("", &["orders"]);
    req.require_known_member_id = true;
    let first = c.join_group(req.clone()).await;
    assert_eq!(first.error_code, ErrorCode::MemberIdRequired);
    assert!(first.member_id.starts_with("app-"));
    req.member_id = first.member_id.clone();
    let second = c.join_group(req).await;
    assert_eq!(second.error_code, ErrorCode::None);
    assert_eq!((second.member_id, second.generation_id), (first.member_id, 1));
}

#[tokio::test(start_paused = true)]
async fn requests_are_validated() {
    let c = coordinator(CoordinatorConfig { max_group_size: 2, ..Default::default() });
    let mut req = join_req("", &["orders"]);
    req.session_timeout = Duration::from_millis(100);
    assert_eq!(c.join_group(req).await.error_code, ErrorCode::InvalidSessionTimeout);
    let mut req = join_req("", &["orders"]);
    req.session_timeout = Duration::from_secs(24 * 3600);
    assert_eq!(c.join_group(req).await.error_code, ErrorCode::InvalidSessionTimeout);
    let mut req = join_req("", &["orders"]);
    req.group_id = String::new();
    assert_eq!(c.join_group(req).await.error_code, ErrorCode::InvalidGroupId);
    let mut req = join_req("", &["orders"]);
    req.protocols.clear();
    assert_eq!(c.join_group(req).await.error_code, ErrorCode::InconsistentGroupProtocol);
    let mut req = join_req("", &["orders"]);
    req.protocols[0].metadata = Bytes::from(vec![0u8; 2 << 20]);
    assert_eq!(c.join_group(req).await.error_code, ErrorCode::InvalidRequest);

    let (a, _) = join_and_sync(&c, "").await;
    // A different protocol than the group's: refused.
    let mut req = join_req("", &["orders"]);
    req.protocols[0].name = "roundrobin".into();
    assert_eq!(c.join_group(req).await.error_code, ErrorCode::InconsistentGroupProtocol);
    // The group holds two at most.
    let c2 = c.clone();
    let _b = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    assert_eq!(
        c.join_group(join_req("", &["orders"])).await.error_code,
        ErrorCode::GroupMaxSizeReached
    );
    assert_eq!(heartbeat(&c, 1, &a.member_id), ErrorCode::RebalanceInProgress);
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_waiting_members() {
    let c = coordinator(CoordinatorConfig {
        initial_rebalance_delay: Duration::from_secs(3),
        ..Default::default()
    });
    let c2 = c.clone();
    let waiting = tokio::spawn(async move { c2.join_group(join_req("", &["orders"])).await });
    tokio::task::yield_now().await;
    c.shutdown();
    assert_eq!(waiting.await.unwrap().error_code, ErrorCode::CoordinatorNotAvailable);
    assert!(c.list_groups().is_empty());
}

#[tokio::test(start_paused = true)]
async fn list_and_describe_groups() {
    let c = coordinator(CoordinatorConfig::default());
    let (a, _) = join_and_sync(&c, "").await;
    let simple = c
        .commit_offsets(OffsetCommitRequest {
            group_id: "manual".into(),
            generation_id: -1,
            member_id: String::new(),
            offsets: vec![entry("orders", 0, 5)],
            group_instance_id: None,
        })
        .await;
    assert_eq!(simple[0].error_code, ErrorCode::None);
    let groups = c.list_groups();
    let summary: Vec<(&str, &str, GroupState)> =
        groups.iter().map(|g| (g.group_id.as_str(), g.protocol_type.as_str(), g.state)).collect();
    assert_eq!(
        summary,
        vec![(GROUP, "consumer", GroupState::Stable), ("manual", "", GroupState::Empty)]
    );
    let d = c.describe_group(GROUP);
    assert_eq!(d.members[0].member_id, a.member_id);
    assert_eq!(d.members[0].client_id, "app");
    assert_eq!(
        Subscription::decode(&d.members[0].metadata).unwrap().topics,
        vec!["orders".to_string()]
    );
    assert_eq!(c.describe_group("manual").state, GroupState::Empty);
    assert_eq!(c.describe_group("nope").state, GroupState::Dead);
}

#[tokio::test]
async fn offset_delete_keeps_subscribed_topics_and_refuses_unknown_groups() {
    let c = coordinator(CoordinatorConfig::default());
    let p = PartitionId::new;
    let none = c.delete_offsets("nobody", vec![("t".into(), p(0))]).await;
    assert_eq!(none.error_code, ErrorCode::GroupIdNotFound);

    // A member subscribed to "orders"; the group also has offsets of "old".
    let (joined, synced) = join_and_sync(&c, "").await;
    assert_eq!(synced.error_code, ErrorCode::None);
    let commit = |topic: &str, partition: i32| strom_coordinator::OffsetWrite {
        topic: topic.into(),
        partition: p(partition),
        offset: strom_format::Offset::new(7),
        leader_epoch: strom_format::LeaderEpoch::UNKNOWN,
        metadata: String::new(),
    };
    c.offsets()
        .commit(GROUP, &[commit("orders", 0), commit("old", 0), commit("old", 1)], 1)
        .unwrap();

    let r = c
        .delete_offsets(
            GROUP,
            vec![("orders".into(), p(0)), ("old".into(), p(0)), ("old".into(), p(5))],
        )
        .await;
    assert_eq!(r.error_code, ErrorCode::None, "{}", r.error_message);
    let codes: Vec<_> = r.partitions.iter().map(|(t, p, c)| (t.as_str(), p.get(), *c)).collect();
    assert_eq!(
        codes,
        [
            ("orders", 0, ErrorCode::GroupSubscribedToTopic),
            ("old", 0, ErrorCode::None),
            ("old", 5, ErrorCode::None), // never committed: nothing to delete, no error
        ]
    );
    let left: Vec<_> =
        c.offsets().fetch_group(GROUP).into_iter().map(|(t, p, _)| (t, p.get())).collect();
    assert_eq!(left, [("old".to_string(), 1), ("orders".to_string(), 0)]);

    // Once the member leaves, its topic's offsets may go too.
    c.leave_group(&LeaveGroupRequest {
        group_id: GROUP.into(),
        member_id: joined.member_id,
        group_instance_id: None,
    });
    let r = c.delete_offsets(GROUP, vec![("orders".into(), p(0))]).await;
    assert_eq!(r.partitions[0].2, ErrorCode::None);
    assert!(c.offsets().fetch(GROUP, "orders", p(0)).is_none());
}
