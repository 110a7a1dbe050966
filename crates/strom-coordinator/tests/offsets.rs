//! Committed offsets through the coordinator: commit/fetch rules, durability across a
//! simulated broker restart on real `strom_log::Log` partitions, and all-or-nothing commits
//! when the log fails.
// Helpers outside #[test] fns unwrap too: a panic in a test is a failed assertion.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use strom_coordinator::*;
use strom_format::{LeaderEpoch, Offset, PartitionId};
use strom_log::{FlushPolicy, Log, LogConfig};
use strom_testkit::offsets_log::FaultyOffsetsLog;

/// Far longer than any event here takes; only a bug reaches it.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn entry(topic: &str, partition: i32, offset: i64, metadata: &str) -> OffsetCommitEntry {
    OffsetCommitEntry {
        topic: topic.into(),
        partition: PartitionId::new(partition),
        offset: Offset::new(offset),
        leader_epoch: LeaderEpoch::new(4),
        metadata: metadata.into(),
    }
}

fn simple_commit(group: &str, offsets: Vec<OffsetCommitEntry>) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: group.into(),
        generation_id: -1,
        member_id: String::new(),
        offsets,
        group_instance_id: None,
    }
}

fn memory_coordinator() -> GroupCoordinator {
    let logs: Vec<Arc<dyn OffsetsLog>> =
        (0..4).map(|_| Arc::new(MemoryOffsetsLog::default()) as Arc<dyn OffsetsLog>).collect();
    GroupCoordinator::new(CoordinatorConfig::default(), Arc::new(OffsetStore::load(logs).unwrap()))
}

fn topics(list: &[(&str, &[i32])]) -> Vec<OffsetFetchTopic> {
    list.iter()
        .map(|(name, parts)| OffsetFetchTopic {
            name: name.to_string(),
            partitions: parts.iter().map(|p| PartitionId::new(*p)).collect(),
        })
        .collect()
}

#[tokio::test]
async fn commit_then_fetch() {
    let c = memory_coordinator();
    let results = c
        .commit_offsets(simple_commit("g", vec![entry("t", 0, 10, "a"), entry("t", 1, 20, "b")]))
        .await;
    assert!(results.iter().all(|r| r.error_code == ErrorCode::None));
    assert_eq!(results.len(), 2);

    let fetched = c.fetch_offsets("g", Some(&topics(&[("t", &[0, 1, 2]), ("other", &[0])])));
    assert_eq!(fetched.error_code, ErrorCode::None);
    let got: Vec<(String, i32, Option<i64>, String)> = fetched
        .partitions
        .iter()
        .map(|p| {
            (
                p.topic.clone(),
                p.partition.get(),
                p.committed_offset.map(Offset::get),
                p.metadata.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("t".into(), 0, Some(10), "a".into()),
            ("t".into(), 1, Some(20), "b".into()),
            ("t".into(), 2, None, String::new()),
            ("other".into(), 0, None, String::new()),
        ]
    );
    assert_eq!(fetched.partitions[0].leader_epoch, LeaderEpoch::new(4));
    assert_eq!(fetched.partitions[2].leader_epoch, LeaderEpoch::UNKNOWN);

    // Everything the group committed, sorted.
    let all = c.fetch_offsets("g", None);
    assert_eq!(all.partitions.len(), 2);
    // Later commits win.
    c.commit_offsets(simple_commit("g", vec![entry("t", 0, 11, "")])).await;
    let p0 = c.fetch_offsets("g", Some(&topics(&[("t", &[0])])));
    assert_eq!(p0.partitions[0].committed_offset, Some(Offset::new(11)));
    assert!(c.fetch_offsets("unknown", None).partitions.is_empty());
    assert_eq!(c.fetch_offsets("", None).error_code, ErrorCode::InvalidGroupId);
}

#[tokio::test]
async fn oversized_metadata_fails_only_its_partition() {
    let c = memory_coordinator();
    let big = "x".repeat(4097);
    let results = c
        .commit_offsets(simple_commit("g", vec![entry("t", 0, 1, &big), entry("t", 1, 2, "ok")]))
        .await;
    assert_eq!(results[0].error_code, ErrorCode::OffsetMetadataTooLarge);
    assert_eq!(results[1].error_code, ErrorCode::None);
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched.partitions.len(), 1);
    assert_eq!(fetched.partitions[0].partition, PartitionId::new(1));
}

fn join_req(member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: "g".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        member_id: member_id.into(),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupProtocol { name: "range".into(), metadata: Bytes::new() }],
        client_id: "app".into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn commits_follow_kafkas_membership_rules() {
    let c = memory_coordinator();
    // A generation for a group nobody knows: a zombie of a forgotten generation.
    let r = c
        .commit_offsets(OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: 3,
            member_id: "ghost".into(),
            offsets: vec![entry("t", 0, 1, "")],
            group_instance_id: None,
        })
        .await;
    assert_eq!(r[0].error_code, ErrorCode::IllegalGeneration);

    let joined = c.join_group(join_req("")).await;
    assert_eq!(joined.error_code, ErrorCode::None);
    let member_commit = |generation_id: i32, member_id: &str| OffsetCommitRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        offsets: vec![entry("t", 0, 7, "")],
        group_instance_id: None,
    };
    // Joined but not synced: the assignment is not known yet.
    let r = c.commit_offsets(member_commit(joined.generation_id, &joined.member_id)).await;
    assert_eq!(r[0].error_code, ErrorCode::RebalanceInProgress);
    let synced = c
        .sync_group(SyncGroupRequest {
            group_id: "g".into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            assignments: vec![],
            group_instance_id: None,
        })
        .await;
    assert_eq!(synced.error_code, ErrorCode::None);
    let r = c.commit_offsets(member_commit(joined.generation_id, &joined.member_id)).await;
    assert_eq!(r[0].error_code, ErrorCode::None);
    // Manual commits are refused while the group has members.
    let r = c.commit_offsets(simple_commit("g", vec![entry("t", 0, 1, "")])).await;
    assert_eq!(r[0].error_code, ErrorCode::UnknownMemberId);
    let r = c.commit_offsets(member_commit(joined.generation_id, "stranger")).await;
    assert_eq!(r[0].error_code, ErrorCode::UnknownMemberId);
    let r = c.commit_offsets(member_commit(joined.generation_id + 1, &joined.member_id)).await;
    assert_eq!(r[0].error_code, ErrorCode::IllegalGeneration);
    // Once the member leaves, the (now empty) group accepts manual commits again.
    c.leave_group(&LeaveGroupRequest {
        group_id: "g".into(),
        member_id: joined.member_id.clone(),
        group_instance_id: None,
    });
    let r = c.commit_offsets(simple_commit("g", vec![entry("t", 0, 9, "")])).await;
    assert_eq!(r[0].error_code, ErrorCode::None);
    // The group has offsets, so it stays known, Empty, with its generation moved on.
    let d = c.describe_group("g");
    assert_eq!((d.state, d.generation_id), (GroupState::Empty, 2));
}

fn open_logs(dir: &std::path::Path, n: usize) -> Vec<Arc<Log>> {
    (0..n)
        .map(|i| {
            let config = LogConfig { flush: FlushPolicy::Manual, ..LogConfig::default() };
            Arc::new(Log::open(dir.join(format!("{CONSUMER_OFFSETS_TOPIC}-{i}")), config).unwrap())
        })
        .collect()
}

fn as_offsets_logs(logs: &[Arc<Log>]) -> Vec<Arc<dyn OffsetsLog>> {
    logs.iter().map(|l| Arc::clone(l) as Arc<dyn OffsetsLog>).collect()
}

#[tokio::test]
async fn offsets_survive_a_restart_on_strom_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = open_logs(dir.path(), 5);
        let store = Arc::new(OffsetStore::load(as_offsets_logs(&logs)).unwrap());
        let c = GroupCoordinator::new(CoordinatorConfig::default(), store);
        for g in ["billing", "my-group", "audit"] {
            let offsets = (0..3).map(|p| entry("orders", p, i64::from(p) * 100, g)).collect();
            let r = c.commit_offsets(simple_commit(g, offsets)).await;
            assert!(r.iter().all(|r| r.error_code == ErrorCode::None));
        }
        c.commit_offsets(simple_commit("billing", vec![entry("orders", 0, 555, "later")])).await;
        c.commit_offsets(simple_commit("audit", vec![entry("gone", 0, 1, "")])).await;
        assert_eq!(c.delete_topic_offsets("gone").await.unwrap(), 1);
        // No clean close: the commits were flushed, so a crash keeps them.
        drop(c);
        drop(logs);
    }
    let logs = open_logs(dir.path(), 5);
    let store = Arc::new(OffsetStore::load(as_offsets_logs(&logs)).unwrap());
    // Each group's records sit in its own partition, as Kafka would place them.
    assert!(logs[partition_for_group("billing", 5)].log_end_offset().get() > 0);
    let c = GroupCoordinator::new(CoordinatorConfig::default(), store);
    let billing = c.fetch_offsets("billing", None);
    let got: Vec<(i32, i64, &str)> = billing
        .partitions
        .iter()
        .map(|p| (p.partition.get(), p.committed_offset.unwrap().get(), p.metadata.as_str()))
        .collect();
    assert_eq!(got, vec![(0, 555, "later"), (1, 100, "billing"), (2, 200, "billing")]);
    assert_eq!(c.fetch_offsets("my-group", None).partitions.len(), 3);
    let audit = c.fetch_offsets("audit", None);
    assert!(audit.partitions.iter().all(|p| p.topic == "orders"));
    let listed: Vec<String> = c.list_groups().into_iter().map(|g| g.group_id).collect();
    assert_eq!(listed, vec!["audit", "billing", "my-group"]);
    drop(c);
    for log in logs {
        Arc::try_unwrap(log).unwrap().close().unwrap();
    }
}

#[tokio::test]
async fn a_commit_that_fails_to_append_changes_nothing() {
    let log = FaultyOffsetsLog::new();
    let store = Arc::new(OffsetStore::load(vec![Arc::clone(&log) as Arc<dyn OffsetsLog>]).unwrap());
    let c = GroupCoordinator::new(CoordinatorConfig::default(), store);
    c.commit_offsets(simple_commit("g", vec![entry("t", 0, 1, "first")])).await;
    log.fail_appends(true);
    let r = c
        .commit_offsets(simple_commit("g", vec![entry("t", 0, 2, ""), entry("t", 1, 2, "")]))
        .await;
    assert!(r.iter().all(|r| r.error_code == ErrorCode::KafkaStorageError));
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched.partitions.len(), 1);
    assert_eq!(fetched.partitions[0].committed_offset, Some(Offset::new(1)));
    assert_eq!(fetched.partitions[0].metadata, "first");
    // The log recovers; commits work again.
    log.fail_appends(false);
    let r = c.commit_offsets(simple_commit("g", vec![entry("t", 0, 3, "")])).await;
    assert_eq!(r[0].error_code, ErrorCode::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_leave_the_cache_equal_to_a_replay() {
    let logs: Vec<Arc<dyn OffsetsLog>> = vec![Arc::new(MemoryOffsetsLog::default())];
    let store = Arc::new(OffsetStore::load(logs.clone()).unwrap());
    let c = GroupCoordinator::new(CoordinatorConfig::default(), Arc::clone(&store));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let offsets = vec![entry("t", 0, t * 1000 + i, ""), entry("t", 1, i, "")];
                    let r = c.commit_offsets(simple_commit("g", offsets)).await;
                    assert!(r.iter().all(|r| r.error_code == ErrorCode::None));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let replayed = OffsetStore::load(logs).unwrap();
    assert_eq!(replayed.fetch_group("g"), store.fetch_group("g"));
}

#[tokio::test]
async fn delete_group_removes_its_offsets_and_refuses_groups_with_members() {
    let c = memory_coordinator();
    assert_eq!(c.delete_group("nobody").await.error_code, ErrorCode::GroupIdNotFound);
    let results = c.commit_offsets(simple_commit("g", vec![entry("t", 0, 10, "")])).await;
    assert!(results.iter().all(|r| r.error_code == ErrorCode::None));
    let joined = c.join_group(join_req("")).await;
    assert_eq!(joined.error_code, ErrorCode::None);
    assert_eq!(c.delete_group("g").await.error_code, ErrorCode::NonEmptyGroup);
    let left = c.leave_group(&LeaveGroupRequest {
        group_id: "g".into(),
        member_id: joined.member_id,
        group_instance_id: None,
    });
    assert_eq!(left.error_code, ErrorCode::None);
    assert_eq!(c.delete_group("g").await.error_code, ErrorCode::None);
    assert!(c.fetch_offsets("g", None).partitions.is_empty());
    assert!(!c.list_groups().iter().any(|g| g.group_id == "g"));
    assert_eq!(c.delete_group("g").await.error_code, ErrorCode::GroupIdNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_commit_whose_caller_gave_up_still_lands_before_the_next_one() {
    let log = FaultyOffsetsLog::new();
    log.hold_appends();
    let store = Arc::new(OffsetStore::load(vec![Arc::clone(&log) as Arc<dyn OffsetsLog>]).unwrap());
    let c = GroupCoordinator::new(CoordinatorConfig::default(), store);

    // The first commit gets stuck in the log; its caller times out and drops the call.
    let stuck = {
        let c = c.clone();
        tokio::spawn(async move {
            c.commit_offsets(simple_commit("g", vec![entry("t", 0, 5, "old")])).await
        })
    };
    let held = Arc::clone(&log);
    tokio::task::spawn_blocking(move || held.wait_until_held(HANG_GUARD)).await.unwrap();
    stuck.abort();
    // The next commit must wait for the stuck write, not overtake it.
    let newer = {
        let c = c.clone();
        tokio::spawn(async move {
            c.commit_offsets(simple_commit("g", vec![entry("t", 0, 9, "new")])).await
        })
    };
    // Without ordering it would be written and answered in microseconds.
    let mut newer = newer;
    let overtook = tokio::time::timeout(Duration::from_millis(300), &mut newer).await;
    assert!(overtook.is_err(), "a commit overtook the one still being written");
    log.release();
    let r = newer.await.unwrap();
    assert_eq!(r[0].error_code, ErrorCode::None);
    let fetched = c.fetch_offsets("g", None);
    assert_eq!(fetched.partitions[0].committed_offset, Some(Offset::new(9)));
    assert_eq!(fetched.partitions[0].metadata, "new");
}

fn wall_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

#[tokio::test]
async fn offsets_expire_only_once_their_group_has_been_empty_for_the_retention() {
    let c = memory_coordinator();
    let week = 7 * 24 * 60 * 60 * 1000;
    let now = wall_ms();
    let old = now - 2 * week;
    let write = |offset| OffsetWrite {
        topic: "t".into(),
        partition: PartitionId::new(0),
        offset: Offset::new(offset),
        leader_epoch: LeaderEpoch::UNKNOWN,
        metadata: String::new(),
    };
    // "idle" only ever committed, two weeks ago; "live" has a member and equally old offsets.
    c.offsets().commit("idle", &[write(1)], old).unwrap();
    let joined = c.join_group(join_req("")).await;
    let synced = c
        .sync_group(SyncGroupRequest {
            group_id: "g".into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            assignments: vec![],
            group_instance_id: None,
        })
        .await;
    assert_eq!(synced.error_code, ErrorCode::None);
    c.offsets().commit("g", &[write(2)], old).unwrap();

    assert_eq!(c.expire_offsets_at(now).await.unwrap(), 1, "only the idle group's offset");
    assert!(c.fetch_offsets("idle", None).partitions.is_empty());
    assert_eq!(c.fetch_offsets("g", None).partitions.len(), 1, "a group with members keeps");

    // The member leaves: the group is empty from now on, and the retention counts from here.
    c.leave_group(&LeaveGroupRequest {
        group_id: "g".into(),
        member_id: joined.member_id,
        group_instance_id: None,
    });
    assert_eq!(c.expire_offsets_at(now + week / 2).await.unwrap(), 0);
    assert_eq!(c.fetch_offsets("g", None).partitions.len(), 1);
    assert_eq!(c.expire_offsets_at(wall_ms() + week + 1).await.unwrap(), 1);
    assert!(c.fetch_offsets("g", None).partitions.is_empty());
    assert!(c.list_groups().iter().all(|g| g.group_id != "idle"));
}

fn offset_write(topic: &str, partition: i32, offset: i64) -> OffsetWrite {
    OffsetWrite {
        topic: topic.into(),
        partition: PartitionId::new(partition),
        offset: Offset::new(offset),
        leader_epoch: LeaderEpoch::UNKNOWN,
        metadata: format!("m{offset}"),
    }
}

#[test]
fn a_failed_append_or_flush_leaves_the_cache_unchanged() {
    let log = FaultyOffsetsLog::new();
    let store = OffsetStore::load(vec![log.clone() as Arc<dyn OffsetsLog>]).unwrap();
    store.commit("g", &[offset_write("t", 0, 1)], 1).unwrap();
    log.fail_appends(true);
    let err =
        store.commit("g", &[offset_write("t", 0, 2), offset_write("t", 1, 2)], 2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::KafkaStorageError);
    log.fail_appends(false);
    log.fail_flushes(true);
    assert!(store.commit("g", &[offset_write("t", 0, 3)], 3).is_err());
    assert_eq!(store.fetch("g", "t", PartitionId::new(0)).unwrap().offset.get(), 1);
    assert!(store.fetch("g", "t", PartitionId::new(1)).is_none());
}

/// Holds the first of `1 + followers` concurrent commits (of different groups, all on the one
/// offsets partition) inside its append until every other one has queued behind it.
fn commits_queued_behind_a_held_one(
    log: &Arc<FaultyOffsetsLog>,
    store: &Arc<OffsetStore>,
    followers: i64,
) -> Vec<std::thread::JoinHandle<Result<(), CoordinatorError>>> {
    let commit = |group: String, offset: i64| {
        let store = Arc::clone(store);
        std::thread::spawn(move || store.commit(&group, &[offset_write("t", 0, offset)], offset))
    };
    log.hold_appends();
    let mut commits = vec![commit("g0".into(), 100)];
    log.wait_until_held(HANG_GUARD);
    commits.extend((1..=followers).map(|i| commit(format!("g{i}"), 100 + i)));
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while store.queued_writes(0) < usize::try_from(followers).unwrap() {
        assert!(std::time::Instant::now() < deadline, "commits never queued");
        std::thread::yield_now();
    }
    commits
}

#[test]
fn concurrent_commits_of_different_groups_share_one_append_and_one_flush() {
    let log = FaultyOffsetsLog::new();
    let store = Arc::new(OffsetStore::load(vec![log.clone() as Arc<dyn OffsetsLog>]).unwrap());
    let commits = commits_queued_behind_a_held_one(&log, &store, 8);
    log.release();
    for c in commits {
        c.join().unwrap().unwrap();
    }
    // One append and one flush for the held commit, one of each for all eight behind it.
    assert_eq!(log.appends(), 2);
    assert_eq!(log.flushes(), 2);
    assert_eq!(store.batches_written(0), 2);
    let reloaded = OffsetStore::load(vec![log.clone() as Arc<dyn OffsetsLog>]).unwrap();
    for s in [&*store, &reloaded] {
        for i in 0..=8 {
            let c = s.fetch(&format!("g{i}"), "t", PartitionId::new(0)).unwrap();
            assert_eq!(c.offset.get(), 100 + i);
        }
    }
}

#[test]
fn a_failed_group_commit_fails_every_write_it_carried() {
    let log = FaultyOffsetsLog::new();
    let store = Arc::new(OffsetStore::load(vec![log.clone() as Arc<dyn OffsetsLog>]).unwrap());
    let commits = commits_queued_behind_a_held_one(&log, &store, 4);
    log.fail_flushes(true);
    log.release();
    for c in commits {
        let err = c.join().unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::KafkaStorageError);
    }
    for i in 0..=4 {
        assert!(store.fetch(&format!("g{i}"), "t", PartitionId::new(0)).is_none(), "g{i}");
    }
    // The log has recovered: the next commit lands.
    log.fail_flushes(false);
    store.commit("g0", &[offset_write("t", 0, 7)], 7).unwrap();
    assert_eq!(store.fetch("g0", "t", PartitionId::new(0)).unwrap().offset.get(), 7);
}
