//! Static membership (KIP-345) and commits from the revocation callback, end to end through
//! the SDK against a real coordinator: a restarted static consumer takes its partitions back
//! without a rebalance, and a manual-commit consumer that commits in `on_partitions_revoked`
//! hands its partitions over exactly where it stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::*;
use strom_consumer::{
    AssignmentStrategy, ConsumerConfig, Offset, RebalanceCallbacks, TopicPartition,
};
use strom_coordinator::GroupState;

fn all(topic: &str, n: i32) -> Vec<TopicPartition> {
    (0..n).map(|p| tp(topic, p)).collect()
}

fn static_config(cluster: &Cluster, group: &str, instance: &str) -> ConsumerConfig {
    cluster.builder(group).group_instance_id(Some(instance.into())).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_consumer_gets_its_partitions_back_without_a_rebalance() {
    const TOPIC: &str = "static";
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 4).await;
    let a = Running::subscribe(cluster.consumer(static_config(&cluster, "g", "a")).await, &[TOPIC]);
    let b = Running::subscribe(cluster.consumer(static_config(&cluster, "g", "b")).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(TOPIC, 4)) && s.iter().all(|s| s.assignment.len() == 2)
    })
    .await;
    let before = b.seen();
    let generation = before.generation;
    let a_events = a.seen().events.len();

    // b's process stops: a static member sends no LeaveGroup, so nothing moves.
    b.stop().await.close().await.unwrap();
    let group = cluster.group.coordinator.describe_group("g");
    assert_eq!((group.state, group.generation_id), (GroupState::Stable, generation));
    assert_eq!(group.members.len(), 2, "the closed static member is still in the group");

    // A new process with the same group.instance.id comes back within the session timeout.
    let b2 =
        Running::subscribe(cluster.consumer(static_config(&cluster, "g", "b")).await, &[TOPIC]);
    wait_for(&[&b2], "the restarted member's assignment", |s| {
        s[0].generation >= 0 && !s[0].assignment.is_empty()
    })
    .await;
    let after = b2.seen();
    assert_eq!(after.generation, generation, "the group did not rebalance");
    assert_eq!(after.assignment, before.assignment, "the same partitions came back");
    let group = cluster.group.coordinator.describe_group("g");
    assert_eq!((group.state, group.generation_id), (GroupState::Stable, generation));
    assert_eq!(group.members.len(), 2);
    let seen_a = a.seen();
    assert_eq!(seen_a.generation, generation);
    assert_eq!(
        seen_a.events.len(),
        a_events,
        "the other member was never disturbed: {:?}",
        seen_a.events
    );

    // And the restarted member reads its partitions.
    for p in &after.assignment {
        cluster.produce(TOPIC, p.partition.get(), 0, 3).await;
    }
    wait_for(&[&b2], "records on the restarted member", |s| s[0].records.len() >= 6).await;
    assert!(b2.seen().records.iter().all(|(tp, _, _)| after.assignment.contains(tp)));
    a.stop().await;
    b2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_committed_in_on_partitions_revoked_let_the_next_member_resume_exactly() {
    const TOPIC: &str = "handover";
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    for p in 0..2 {
        cluster.produce(TOPIC, p, 0, 50).await;
    }
    let manual = cluster
        .builder("manual")
        .enable_auto_commit(false)
        .assignment_strategies(vec![AssignmentStrategy::Range])
        .build()
        .unwrap();

    // a commits nothing on its own: only what it processed, when its partitions are revoked.
    let seen = Arc::new(Mutex::new(Seen { generation: -1, ..Seen::default() }));
    let (s1, s2) = (Arc::clone(&seen), Arc::clone(&seen));
    let committed_in_callback = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&committed_in_callback);
    let listener = RebalanceCallbacks::new()
        .on_assigned(move |tps| s1.lock().unwrap().events.push(Event::Assigned(tps.to_vec())))
        .on_revoked_with(move |tps, ctx| {
            let mut seen = s2.lock().unwrap();
            seen.events.push(Event::Revoked(tps.to_vec()));
            for tp in tps {
                let last = seen.records.iter().filter(|r| &r.0 == tp).map(|r| r.1).max();
                if let Some(last) = last {
                    ctx.commit(&[(tp.clone(), Offset::new(last + 1))]);
                    log.lock().unwrap().push((tp.clone(), last + 1));
                }
            }
        });
    let mut consumer = cluster.consumer(manual.clone()).await;
    consumer.subscribe(vec![TOPIC.into()], Some(Box::new(listener))).unwrap();
    let a = Running::spawn(consumer, seen);
    wait_for(&[&a], "a to read all 100 records", |s| s[0].records.len() >= 100).await;
    assert!(cluster.group.coordinator.fetch_offsets("manual", None).partitions.is_empty());

    // b joins: under eager rebalancing a revokes both partitions, commits in the callback,
    // and only then rejoins.
    let b = Running::subscribe(cluster.consumer(manual).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(TOPIC, 2)) && s.iter().all(|s| s.assignment.len() == 1)
    })
    .await;
    let mut expected = committed_in_callback.lock().unwrap().clone();
    expected.sort();
    assert_eq!(expected, vec![(tp(TOPIC, 0), 50), (tp(TOPIC, 1), 50)]);
    let committed: BTreeMap<i32, Option<i64>> = cluster
        .group
        .coordinator
        .fetch_offsets("manual", None)
        .partitions
        .into_iter()
        .map(|p| (p.partition.get(), p.committed_offset.map(|o| o.get())))
        .collect();
    assert_eq!(committed, BTreeMap::from([(0, Some(50)), (1, Some(50))]));

    for p in 0..2 {
        cluster.produce(TOPIC, p, 50, 55).await;
    }
    let b_part = b.seen().assignment[0].clone();
    wait_for(&[&b], "b to read its 5 new records", |s| s[0].records.len() >= 5).await;
    let offsets: Vec<i64> = b.seen().records.iter().map(|r| r.1).collect();
    assert_eq!(offsets, (50..55).collect::<Vec<_>>(), "b resumed exactly after {b_part}'s commit");
    a.stop().await;
    b.stop().await;
}
