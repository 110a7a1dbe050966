//! Committed offsets: a group resumes where it committed (explicitly, automatically, on close,
//! before a revocation), manual assignments commit outside group management and start from
//! the group's offsets, and stale members' commits are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use strom_consumer::ErrorCode;
use strom_consumer::{ConsumerError, Offset, SeekTo};

const TOPIC: &str = "events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_resumes_from_the_committed_offset() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    for p in 0..2 {
        cluster.produce(TOPIC, p, 0, 10).await;
    }
    let config = cluster.builder("resume").enable_auto_commit(false).build().unwrap();
    let mut first = cluster.consumer(config.clone()).await;
    first.subscribe(vec![TOPIC.into()], None).unwrap();
    let records = poll_records(&mut first, 20).await;
    assert_eq!(records.len(), 20);
    first.commit_sync().await.unwrap();
    // An explicit commit overrides partition 1: the group resumes it at 4.
    first.commit_offsets(&[(tp(TOPIC, 1), Offset::new(4))]).await.unwrap();
    assert_eq!(first.committed(&tp(TOPIC, 0)).await.unwrap(), Some(Offset::new(10)));
    assert_eq!(first.committed(&tp(TOPIC, 1)).await.unwrap(), Some(Offset::new(4)));
    // Without auto-commit, close commits nothing more.
    first.close().await.unwrap();

    for p in 0..2 {
        cluster.produce(TOPIC, p, 10, 15).await;
    }
    let mut second = cluster.consumer(config).await;
    second.subscribe(vec![TOPIC.into()], None).unwrap();
    let mut records = poll_records(&mut second, 5 + 11).await;
    records.sort();
    let p0: Vec<i64> =
        records.iter().filter(|r| r.0 == tp(TOPIC, 0)).map(|r| r.1).collect::<Vec<_>>();
    let p1: Vec<i64> = records.iter().filter(|r| r.0 == tp(TOPIC, 1)).map(|r| r.1).collect();
    assert_eq!(p0, (10..15).collect::<Vec<_>>());
    assert_eq!(p1, (4..15).collect::<Vec<_>>());
    // Nothing more arrives.
    assert!(second.poll(Duration::from_millis(300)).await.unwrap().is_empty());
    second.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_commits_periodically_and_on_close() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 1).await;
    cluster.produce(TOPIC, 0, 0, 10).await;
    let config =
        cluster.builder("auto").auto_commit_interval(Duration::from_millis(100)).build().unwrap();
    let mut consumer = cluster.consumer(config).await;
    consumer.subscribe(vec![TOPIC.into()], None).unwrap();
    poll_records(&mut consumer, 10).await;
    // The periodic commit happens inside poll.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while consumer.committed(&tp(TOPIC, 0)).await.unwrap() != Some(Offset::new(10)) {
        assert!(tokio::time::Instant::now() < give_up, "auto-commit never happened");
        assert!(consumer.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    }

    // With a long interval, only close commits.
    let config =
        cluster.builder("auto").auto_commit_interval(Duration::from_secs(3600)).build().unwrap();
    cluster.produce(TOPIC, 0, 10, 13).await;
    let mut consumer2 = cluster.consumer(config).await;
    consumer.close().await.unwrap();
    consumer2.subscribe(vec![TOPIC.into()], None).unwrap();
    let records = poll_records(&mut consumer2, 3).await;
    assert_eq!(records.iter().map(|r| r.1).collect::<Vec<_>>(), vec![10, 11, 12]);
    consumer2.close().await.unwrap();
    let coordinator = &cluster.group.coordinator;
    let committed = coordinator.offsets().fetch("auto", TOPIC, pid(0));
    assert_eq!(committed.map(|c| c.offset), Some(Offset::new(13)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_assignment_commits_outside_the_group_and_starts_from_its_offsets() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 1).await;
    cluster.produce(TOPIC, 0, 0, 10).await;
    let config = cluster.builder("simple").enable_auto_commit(false).build().unwrap();
    let mut consumer = cluster.consumer(config.clone()).await;
    consumer.assign(vec![tp(TOPIC, 0)]);
    // No committed offset yet: auto_offset_reset (earliest) applies.
    let records = poll_records(&mut consumer, 10).await;
    assert_eq!(records.first().map(|r| r.1), Some(0));
    consumer.commit_offsets(&[(tp(TOPIC, 0), Offset::new(6))]).await.unwrap();
    assert_eq!(consumer.group_metadata().unwrap().generation_id, -1);
    assert_eq!(consumer.committed(&tp(TOPIC, 0)).await.unwrap(), Some(Offset::new(6)));
    drop(consumer);

    let mut again = cluster.consumer(config).await;
    again.assign(vec![tp(TOPIC, 0)]);
    let records = poll_records(&mut again, 4).await;
    assert_eq!(records.iter().map(|r| r.1).collect::<Vec<_>>(), vec![6, 7, 8, 9]);
    // A seek still wins over the committed offset.
    again.seek(&tp(TOPIC, 0), SeekTo::Offset(Offset::new(2))).unwrap();
    let records = poll_records(&mut again, 8).await;
    assert_eq!(records.first().map(|r| r.1), Some(2));
    again.commit_sync().await.unwrap();
    assert_eq!(again.committed(&tp(TOPIC, 0)).await.unwrap(), Some(Offset::new(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dropped_from_the_group_cannot_commit_and_rejoins() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    for p in 0..2 {
        cluster.produce(TOPIC, p, 0, 5).await;
    }
    let config = cluster
        .builder("stale")
        .enable_auto_commit(false)
        .max_poll_interval(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut a = cluster.consumer(config.clone()).await;
    a.subscribe(vec![TOPIC.into()], None).unwrap();
    poll_records(&mut a, 10).await;
    assert_eq!(a.assignment().len(), 2);

    // B joins while A does not poll: the rebalance waits for A up to the rebalance timeout,
    // then completes without it.
    let b = Running::subscribe(cluster.consumer(config).await, &[TOPIC]);
    wait_for(&[&b], "B to own both partitions", |s| s[0].assignment.len() == 2).await;
    let err = a.commit_sync().await.unwrap_err();
    assert!(
        matches!(
            err,
            ConsumerError::CommitFailed {
                code: ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(cluster.group.coordinator.offsets().fetch("stale", TOPIC, pid(0)), None);

    // Polling again, A rejoins and the two share the partitions.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while a.assignment().len() != 1 {
        assert!(tokio::time::Instant::now() < give_up, "A never rejoined");
        a.poll(Duration::from_millis(50)).await.unwrap();
    }
    wait_for(&[&b], "B to keep one partition", |s| s[0].assignment.len() == 1).await;
    a.close().await.unwrap();
    b.stop().await.close().await.unwrap();
}

fn pid(p: i32) -> strom_format::PartitionId {
    strom_format::PartitionId::new(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_needs_a_group_and_a_member_commit_needs_a_generation() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 1).await;
    let config = cluster.builder("x").group(None).build().unwrap();
    let mut plain = cluster.consumer(config).await;
    assert!(matches!(plain.commit_sync().await, Err(ConsumerError::NoGroupId)));
    assert!(matches!(
        plain.commit_offsets(&[(tp(TOPIC, 0), Offset::new(1))]).await,
        Err(ConsumerError::NoGroupId)
    ));
    assert!(matches!(plain.committed(&tp(TOPIC, 0)).await, Err(ConsumerError::NoGroupId)));
    assert!(matches!(plain.subscribe(vec![TOPIC.into()], None), Err(ConsumerError::NoGroupId)));

    let mut member = cluster.consumer(cluster.config("x")).await;
    member.subscribe(vec![TOPIC.into()], None).unwrap();
    // Subscribed but not joined yet: a member commit has no generation to carry.
    let err = member.commit_offsets(&[(tp(TOPIC, 0), Offset::new(1))]).await.unwrap_err();
    assert!(
        matches!(err, ConsumerError::CommitFailed { code: ErrorCode::RebalanceInProgress, .. }),
        "{err}"
    );
    assert!(matches!(
        member.commit_offsets(&[(tp(TOPIC, 0), Offset::new(-5))]).await,
        Err(ConsumerError::CommitFailed { .. } | ConsumerError::InvalidArgument(_))
    ));
    member.close().await.unwrap();
}
