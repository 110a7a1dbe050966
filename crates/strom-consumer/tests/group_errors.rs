//! Group failures: a coordinator that moves (NOT_COORDINATOR) is found again, a coordinator
//! that refuses the member's settings surfaces as an error from poll, and misuse of
//! subscribe/assign is refused or handled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use strom_consumer::ErrorCode;
use strom_consumer::{ConsumerError, Offset};
use strom_coordinator::{CoordinatorConfig, GroupState};
use tokio::time::Instant;

const TOPIC: &str = "jobs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_coordinator_is_found_again() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    cluster.produce(TOPIC, 0, 0, 3).await;
    // The first joins are answered NOT_COORDINATOR.
    cluster.group.not_coordinator.store(3, Ordering::SeqCst);
    let mut consumer = cluster.consumer(cluster.config("moving")).await;
    consumer.subscribe(vec![TOPIC.into()], None).unwrap();
    let records = poll_records(&mut consumer, 3).await;
    assert_eq!(records.len(), 3);
    assert_eq!(consumer.assignment().len(), 2);
    assert!(cluster.group.find_coordinator_calls.load(Ordering::SeqCst) >= 4);
    // A commit that meets NOT_COORDINATOR is retried after finding the coordinator again.
    cluster.group.not_coordinator.store(1, Ordering::SeqCst);
    consumer.commit_offsets(&[(tp(TOPIC, 0), Offset::new(3))]).await.unwrap();
    assert_eq!(consumer.committed(&tp(TOPIC, 0)).await.unwrap(), Some(Offset::new(3)));
    // Heartbeats that meet it keep the membership: the generation does not change.
    let generation = consumer.group_metadata().unwrap().generation_id;
    cluster.group.not_coordinator.store(2, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        consumer.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(cluster.group.not_coordinator.load(Ordering::SeqCst), 0);
    assert_eq!(consumer.group_metadata().unwrap().generation_id, generation);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_is_an_error_from_poll_and_is_retried() {
    let cluster = Cluster::start_with(CoordinatorConfig {
        min_session_timeout: Duration::from_secs(20),
        ..CoordinatorConfig::default()
    })
    .await;
    cluster.create_topic(TOPIC, 1).await;
    let mut consumer = cluster.consumer(cluster.config("strict")).await;
    consumer.subscribe(vec![TOPIC.into()], None).unwrap();
    let mut refusals = 0;
    let give_up = Instant::now() + PATIENCE;
    while refusals < 2 {
        assert!(Instant::now() < give_up, "the refusal never surfaced");
        match consumer.poll(Duration::from_millis(50)).await {
            Ok(records) => assert!(records.is_empty()),
            Err(ConsumerError::Group { code, .. }) => {
                assert_eq!(code, ErrorCode::InvalidSessionTimeout);
                refusals += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(consumer.assignment().is_empty());
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_assign_exclude_each_other() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    let mut consumer = cluster.consumer(cluster.config("mixed")).await;
    consumer.assign(vec![tp(TOPIC, 0)]);
    assert!(matches!(
        consumer.subscribe(vec![TOPIC.into()], None),
        Err(ConsumerError::InvalidArgument(_))
    ));
    assert!(matches!(consumer.subscribe(vec![], None), Err(ConsumerError::InvalidArgument(_))));
    consumer.assign(vec![]);
    consumer.subscribe(vec![TOPIC.into(), TOPIC.into()], None).unwrap();
    assert_eq!(consumer.subscription(), [TOPIC.to_owned()]);
    let give_up = Instant::now() + PATIENCE;
    while consumer.assignment().len() != 2 {
        assert!(Instant::now() < give_up, "never joined");
        consumer.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(cluster.group.coordinator.describe_group("mixed").members.len(), 1);
    // A manual assignment ends the subscription; the member leaves in the background.
    consumer.assign(vec![tp(TOPIC, 1)]);
    assert!(consumer.subscription().is_empty());
    assert_eq!(consumer.assignment(), [tp(TOPIC, 1)]);
    let give_up = Instant::now() + PATIENCE;
    while cluster.group.coordinator.describe_group("mixed").state != GroupState::Dead {
        assert!(Instant::now() < give_up, "the member never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping a subscribed consumer also leaves its group.
    let mut other = cluster.consumer(cluster.config("dropped")).await;
    other.subscribe(vec![TOPIC.into()], None).unwrap();
    while other.assignment().is_empty() {
        assert!(Instant::now() < give_up, "never joined");
        other.poll(Duration::from_millis(50)).await.unwrap();
    }
    drop(other);
    while cluster.group.coordinator.describe_group("dropped").state != GroupState::Dead {
        assert!(Instant::now() < give_up, "the dropped member never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_commits_revokes_and_leaves() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 1).await;
    cluster.produce(TOPIC, 0, 0, 4).await;
    let running = Running::subscribe(cluster.consumer(cluster.config("bye")).await, &[TOPIC]);
    wait_for(&[&running], "four records", |s| s[0].records.len() == 4).await;
    let seen = running.seen.clone();
    let mut consumer = running.stop().await;
    consumer.unsubscribe().await.unwrap();
    assert!(consumer.assignment().is_empty());
    assert_eq!(seen.lock().unwrap().events.last(), Some(&Event::Revoked(vec![tp(TOPIC, 0)])));
    assert_eq!(consumer.committed(&tp(TOPIC, 0)).await.unwrap(), Some(Offset::new(4)));
    assert_eq!(cluster.group.coordinator.describe_group("bye").state, GroupState::Empty);
    // Unsubscribed, polling returns nothing and does not rejoin.
    assert!(consumer.poll(Duration::from_millis(100)).await.unwrap().is_empty());
    assert!(cluster.group.coordinator.describe_group("bye").members.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_to_other_topics_rebalances() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    cluster.create_topic("more", 1).await;
    let mut consumer = cluster.consumer(cluster.config("resub")).await;
    consumer.subscribe(vec![TOPIC.into()], None).unwrap();
    let give_up = Instant::now() + PATIENCE;
    while consumer.assignment().len() != 2 {
        assert!(Instant::now() < give_up, "never joined");
        consumer.poll(Duration::from_millis(50)).await.unwrap();
    }
    let generation = consumer.group_metadata().unwrap().generation_id;
    consumer.subscribe(vec!["more".into()], None).unwrap();
    while consumer.assignment() != [tp("more", 0)] {
        assert!(Instant::now() < give_up, "never rebalanced: {:?}", consumer.assignment());
        consumer.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert!(consumer.group_metadata().unwrap().generation_id > generation);
    assert_eq!(consumer.subscription(), ["more".to_owned()]);
    consumer.close().await.unwrap();
}
