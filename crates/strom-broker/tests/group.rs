//! The `strom.v1.Group` service end to end: an in-process broker on port 0 and the generated
//! tonic `GroupClient`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{HANG_GUARD, Harness, batch, config};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_proto::v1::group_client::GroupClient;
use tonic::transport::Channel;

const GROUP: &str = "g1";

async fn group_client(h: &Harness) -> GroupClient<Channel> {
    let url = format!("http://{}", h.server.local_addr());
    GroupClient::connect(url).await.expect("connect")
}

fn join_request(group: &str, member_id: &str) -> pb::JoinGroupRequest {
    pb::JoinGroupRequest {
        group_id: group.into(),
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: 30_000,
        member_id: member_id.into(),
        protocol_type: "consumer".into(),
        protocols: vec![pb::JoinGroupProtocol {
            name: "range".into(),
            metadata: bytes::Bytes::from_static(b"subscription"),
        }],
        client_id: "test-client".into(),
        supports_member_id_required: false,
        group_instance_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_394_first_join_names_the_member_id_for_clients_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(config(dir.path())).await;
    let mut g = group_client(&h).await;
    let first =
        pb::JoinGroupRequest { supports_member_id_required: true, ..join_request("kip394", "") };
    let r = g.join_group(first.clone()).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::MemberIdRequired, "{}", r.error_message);
    assert!(!r.member_id.is_empty());
    // The group holds no member yet: a lost answer would leave no orphan behind.
    let rejoin = pb::JoinGroupRequest { member_id: r.member_id.clone(), ..first };
    let joined = tokio::time::timeout(HANG_GUARD, g.join_group(rejoin)).await.unwrap().unwrap();
    let joined = joined.into_inner();
    assert_eq!(joined.error_code(), ErrorCode::None, "{}", joined.error_message);
    assert_eq!(joined.member_id, r.member_id);
    assert_eq!(joined.members.len(), 1);
    h.stop().await;
}

/// Joins `group` as its only member and completes the sync; returns (member id, generation).
async fn join_and_sync(g: &mut GroupClient<Channel>, group: &str) -> (String, i32) {
    let joined = tokio::time::timeout(HANG_GUARD, g.join_group(join_request(group, "")))
        .await
        .expect("join answers")
        .unwrap()
        .into_inner();
    assert_eq!(joined.error_code(), ErrorCode::None, "join: {}", joined.error_message);
    let sync = pb::SyncGroupRequest {
        group_id: group.into(),
        generation_id: joined.generation_id,
        member_id: joined.member_id.clone(),
        assignments: vec![pb::SyncGroupAssignment {
            member_id: joined.member_id.clone(),
            assignment: bytes::Bytes::from_static(b"assignment"),
        }],
        group_instance_id: String::new(),
    };
    let synced = tokio::time::timeout(HANG_GUARD, g.sync_group(sync))
        .await
        .expect("sync answers")
        .unwrap()
        .into_inner();
    assert_eq!(synced.error_code(), ErrorCode::None, "sync: {}", synced.error_message);
    assert_eq!(&synced.assignment[..], b"assignment");
    (joined.member_id, joined.generation_id)
}

fn commit_request(
    group: &str,
    generation_id: i32,
    member_id: &str,
    offsets: &[(&str, i32, i64, &str)],
) -> pb::OffsetCommitRequest {
    let mut topics: Vec<pb::OffsetCommitTopic> = Vec::new();
    for &(topic, partition, committed_offset, metadata) in offsets {
        let p =
            pb::OffsetCommitPartition { partition, committed_offset, metadata: metadata.into() };
        match topics.last_mut() {
            Some(t) if t.name == topic => t.partitions.push(p),
            _ => topics.push(pb::OffsetCommitTopic { name: topic.into(), partitions: vec![p] }),
        }
    }
    pb::OffsetCommitRequest {
        group_id: group.into(),
        generation_id,
        member_id: member_id.into(),
        topics,
        group_instance_id: String::new(),
    }
}

/// Every (topic, partition, offset, metadata, error) of a commit response, flattened.
fn commit_codes(r: &pb::OffsetCommitResponse) -> Vec<(String, i32, ErrorCode)> {
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition, p.error_code())))
        .collect()
}

async fn fetch_offsets(
    g: &mut GroupClient<Channel>,
    group: &str,
    topics: &[(&str, &[i32])],
) -> Vec<(String, i32, i64, String)> {
    let request = pb::OffsetFetchRequest {
        group_id: group.into(),
        topics: topics
            .iter()
            .map(|(name, ps)| pb::OffsetFetchTopic {
                name: name.to_string(),
                partitions: ps.to_vec(),
            })
            .collect(),
    };
    let r = g.offset_fetch(request).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    r.topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name;
            t.partitions.into_iter().map(move |p| {
                assert_eq!(p.error_code(), ErrorCode::None);
                (name.clone(), p.partition, p.committed_offset, p.metadata)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_sync_heartbeat_leave_single_member() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(config(dir.path())).await;
    let mut g = group_client(&h).await;

    let found = g
        .find_coordinator(pb::FindCoordinatorRequest { group_id: GROUP.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.error_code(), ErrorCode::None);
    let me = found.coordinator.expect("coordinator");
    assert_eq!((me.node_id, me.port), (1, i32::from(h.server.local_addr().port())));

    let joined = g.join_group(join_request(GROUP, "")).await.unwrap().into_inner();
    assert_eq!(joined.error_code(), ErrorCode::None, "{}", joined.error_message);
    assert!(!joined.member_id.is_empty());
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    assert_eq!(joined.protocol_name, "range");
    assert_eq!(joined.members.len(), 1);
    assert_eq!(&joined.members[0].metadata[..], b"subscription");

    let sync = pb::SyncGroupRequest {
        group_id: GROUP.into(),
        generation_id: joined.generation_id,
        member_id: joined.member_id.clone(),
        assignments: vec![pb::SyncGroupAssignment {
            member_id: joined.member_id.clone(),
            assignment: bytes::Bytes::from_static(b"p0"),
        }],
        group_instance_id: String::new(),
    };
    let synced = g.sync_group(sync).await.unwrap().into_inner();
    assert_eq!(synced.error_code(), ErrorCode::None, "{}", synced.error_message);
    assert_eq!(&synced.assignment[..], b"p0");

    let beat = pb::HeartbeatRequest {
        group_id: GROUP.into(),
        generation_id: joined.generation_id,
        member_id: joined.member_id.clone(),
        group_instance_id: String::new(),
    };
    let r = g.heartbeat(beat).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);

    let leave = pb::LeaveGroupRequest {
        group_id: GROUP.into(),
        member_id: joined.member_id,
        group_instance_id: String::new(),
    };
    let r = g.leave_group(leave).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    let d = g
        .describe_groups(pb::DescribeGroupsRequest { group_ids: vec![GROUP.into()] })
        .await
        .unwrap()
        .into_inner();
    // With no members and no offsets the coordinator may already have dropped the group.
    assert!(["Empty", "Dead"].contains(&d.groups[0].state.as_str()), "{:?}", d.groups[0]);
    assert!(d.groups[0].members.is_empty());

    drop(g);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_fetch_survive_restart_and_topic_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("orders", 2, &[]).await;
    h.create("other", 1, &[]).await;
    let mut g = group_client(&h).await;

    let request = commit_request(
        GROUP,
        -1,
        "",
        &[
            ("orders", 0, 5, "m0"),
            ("orders", 1, 7, ""),
            ("orders", 9, 1, ""),
            ("nope", 0, 3, ""),
            ("other", 0, 11, ""),
        ],
    );
    let r = g.offset_commit(request).await.unwrap().into_inner();
    assert_eq!(
        commit_codes(&r),
        vec![
            ("orders".to_string(), 0, ErrorCode::None),
            ("orders".to_string(), 1, ErrorCode::None),
            ("orders".to_string(), 9, ErrorCode::UnknownTopicOrPartition),
            ("nope".to_string(), 0, ErrorCode::UnknownTopicOrPartition),
            ("other".to_string(), 0, ErrorCode::None),
        ]
    );

    let named = fetch_offsets(&mut g, GROUP, &[("orders", &[0, 1, 5])]).await;
    assert_eq!(
        named,
        vec![
            ("orders".to_string(), 0, 5, "m0".to_string()),
            ("orders".to_string(), 1, 7, String::new()),
            ("orders".to_string(), 5, -1, String::new()),
        ]
    );
    let all = fetch_offsets(&mut g, GROUP, &[]).await;
    assert_eq!(all.len(), 3, "{all:?}");

    // The commits went through the offsets topic's partitions: visible to a fetch of it.
    let d = h.describe("__consumer_offsets").await;
    assert!(d.internal);
    assert_eq!(d.configs["retention.ms"], "-1");
    assert_eq!(d.configs["retention.bytes"], "-1");
    let written: i64 = d.partitions.iter().map(|p| p.high_watermark).sum();
    assert!(written > 0, "commits appended to __consumer_offsets");
    let busy = d.partitions.iter().find(|p| p.high_watermark > 0).unwrap();
    let f = h.fetch("__consumer_offsets", busy.partition, 0).await;
    assert_eq!(f.error_code(), ErrorCode::None, "fetching the offsets topic is allowed");
    assert!(!f.records.is_empty());

    // Clients may not write or delete it.
    let p = h.produce("__consumer_offsets", 0, batch(&["x"])).await;
    assert_eq!(p.error_code(), ErrorCode::InvalidTopicException);
    assert_eq!(h.delete("__consumer_offsets").await.error_code(), ErrorCode::InvalidTopicException);

    drop(g);
    h.stop().await;

    // Committed offsets are durable across a restart on the same data directory.
    let mut h = Harness::start(config(dir.path())).await;
    let mut g = group_client(&h).await;
    let all = fetch_offsets(&mut g, GROUP, &[]).await;
    assert_eq!(
        all,
        vec![
            ("orders".to_string(), 0, 5, "m0".to_string()),
            ("orders".to_string(), 1, 7, String::new()),
            ("other".to_string(), 0, 11, String::new()),
        ]
    );

    // Deleting a topic deletes its committed offsets, also across a restart.
    assert_eq!(h.delete("orders").await.error_code(), ErrorCode::None);
    let all = fetch_offsets(&mut g, GROUP, &[]).await;
    assert_eq!(all, vec![("other".to_string(), 0, 11, String::new())]);
    drop(g);
    h.stop().await;
    let h = Harness::start(config(dir.path())).await;
    let mut g = group_client(&h).await;
    let all = fetch_offsets(&mut g, GROUP, &[]).await;
    assert_eq!(all, vec![("other".to_string(), 0, 11, String::new())]);
    drop(g);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_list_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("orders", 1, &[]).await;
    let mut g = group_client(&h).await;

    let (member, generation) = join_and_sync(&mut g, "live").await;
    // A group that only commits offsets is listed too.
    let r = g
        .offset_commit(commit_request("offsets-only", -1, "", &[("orders", 0, 1, "")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit_codes(&r)[0].2, ErrorCode::None);

    let request = pb::DescribeGroupsRequest { group_ids: vec!["live".into(), "ghost".into()] };
    let d = g.describe_groups(request).await.unwrap().into_inner().groups;
    assert_eq!(d.len(), 2);
    let live = &d[0];
    assert_eq!(live.error_code(), ErrorCode::None);
    assert_eq!(
        (live.group_id.as_str(), live.state.as_str(), live.protocol_type.as_str()),
        ("live", "Stable", "consumer")
    );
    assert_eq!((live.protocol.as_str(), live.generation_id), ("range", generation));
    assert_eq!(live.members.len(), 1);
    let m = &live.members[0];
    assert_eq!((m.member_id.as_str(), m.client_id.as_str()), (member.as_str(), "test-client"));
    assert_eq!((&m.metadata[..], &m.assignment[..]), (&b"subscription"[..], &b"assignment"[..]));
    let ghost = &d[1];
    assert_eq!(ghost.error_code(), ErrorCode::GroupIdNotFound);
    assert_eq!(ghost.state, "Dead");

    let listed = g.list_groups(pb::ListGroupsRequest {}).await.unwrap().into_inner().groups;
    let listed: Vec<_> = listed
        .iter()
        .map(|l| (l.group_id.as_str(), l.protocol_type.as_str(), l.state.as_str()))
        .collect();
    assert!(listed.contains(&("live", "consumer", "Stable")), "{listed:?}");
    assert!(listed.iter().any(|l| l.0 == "offsets-only"), "{listed:?}");

    drop(g);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_member_and_bad_generation_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("orders", 1, &[]).await;
    let mut g = group_client(&h).await;
    let (member, generation) = join_and_sync(&mut g, GROUP).await;

    let beat = |member_id: &str, generation_id: i32| pb::HeartbeatRequest {
        group_id: GROUP.into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: String::new(),
    };
    let r = g.heartbeat(beat("stranger", generation)).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::UnknownMemberId);
    let r = g.heartbeat(beat(&member, generation + 5)).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::IllegalGeneration);

    let sync = pb::SyncGroupRequest {
        group_id: GROUP.into(),
        generation_id: generation + 5,
        member_id: member.clone(),
        assignments: vec![],
        group_instance_id: String::new(),
    };
    let r = g.sync_group(sync).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::IllegalGeneration);

    let r = g
        .offset_commit(commit_request(GROUP, generation + 5, &member, &[("orders", 0, 1, "")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit_codes(&r)[0].2, ErrorCode::IllegalGeneration);
    let r = g
        .offset_commit(commit_request(GROUP, generation, "stranger", &[("orders", 0, 1, "")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit_codes(&r)[0].2, ErrorCode::UnknownMemberId);
    // Nothing of the refused commits was stored.
    assert_eq!(fetch_offsets(&mut g, GROUP, &[]).await, vec![]);

    let leave = pb::LeaveGroupRequest {
        group_id: GROUP.into(),
        member_id: "stranger".into(),
        group_instance_id: String::new(),
    };
    let r = g.leave_group(leave).await.unwrap().into_inner();
    assert_eq!(r.error_code(), ErrorCode::UnknownMemberId);

    // The member's own commit in its generation succeeds.
    let r = g
        .offset_commit(commit_request(GROUP, generation, &member, &[("orders", 0, 4, "")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit_codes(&r)[0].2, ErrorCode::None);

    drop(g);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_345_a_static_member_rejoining_keeps_its_generation_and_fences_its_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    let mut g = group_client(&h).await;
    let static_join = |member_id: &str| pb::JoinGroupRequest {
        group_instance_id: "instance-1".into(),
        supports_member_id_required: true,
        ..join_request("static", member_id)
    };
    // No MEMBER_ID_REQUIRED round trip for a static member.
    let joined = g.join_group(static_join("")).await.unwrap().into_inner();
    assert_eq!(joined.error_code(), ErrorCode::None, "{}", joined.error_message);
    let sync = pb::SyncGroupRequest {
        group_id: "static".into(),
        generation_id: joined.generation_id,
        member_id: joined.member_id.clone(),
        assignments: vec![pb::SyncGroupAssignment {
            member_id: joined.member_id.clone(),
            assignment: bytes::Bytes::from_static(b"p0,p1"),
        }],
        group_instance_id: "instance-1".into(),
    };
    let synced = g.sync_group(sync.clone()).await.unwrap().into_inner();
    assert_eq!(synced.error_code(), ErrorCode::None, "{}", synced.error_message);

    // The process restarts: same instance id, no member id.
    let again = g.join_group(static_join("")).await.unwrap().into_inner();
    assert_eq!(again.error_code(), ErrorCode::None, "{}", again.error_message);
    assert_eq!(again.generation_id, joined.generation_id, "no rebalance");
    assert_ne!(again.member_id, joined.member_id);
    let resync =
        pb::SyncGroupRequest { member_id: again.member_id.clone(), assignments: vec![], ..sync };
    let resynced = g.sync_group(resync).await.unwrap().into_inner();
    assert_eq!(&resynced.assignment[..], b"p0,p1", "the old assignment comes back");

    let beat = |member_id: &str| pb::HeartbeatRequest {
        group_id: "static".into(),
        generation_id: joined.generation_id,
        member_id: member_id.into(),
        group_instance_id: "instance-1".into(),
    };
    let old = g.heartbeat(beat(&joined.member_id)).await.unwrap().into_inner();
    assert_eq!(old.error_code(), ErrorCode::FencedInstanceId);
    let new = g.heartbeat(beat(&again.member_id)).await.unwrap().into_inner();
    assert_eq!(new.error_code(), ErrorCode::None);
    let old_commit = pb::OffsetCommitRequest {
        group_instance_id: "instance-1".into(),
        ..commit_request("static", joined.generation_id, &joined.member_id, &[("t", 0, 1, "")])
    };
    let r = g.offset_commit(old_commit).await.unwrap().into_inner();
    assert_eq!(commit_codes(&r), vec![("t".to_string(), 0, ErrorCode::FencedInstanceId)]);
    // LeaveGroup by instance id (what an operator's removal sends).
    let leave = pb::LeaveGroupRequest {
        group_id: "static".into(),
        member_id: String::new(),
        group_instance_id: "instance-1".into(),
    };
    assert_eq!(g.leave_group(leave).await.unwrap().into_inner().error_code(), ErrorCode::None);
    h.stop().await;
}
