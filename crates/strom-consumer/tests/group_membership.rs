//! Consumer groups end to end: members split the partitions of their topics, rebalance as
//! members come and go (eagerly and cooperatively), read every record exactly once while the
//! group is stable, and a member that stops polling leaves and loses its partitions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use strom_consumer::TopicPartition;

const TOPIC: &str = "orders";

fn all(n: i32) -> Vec<TopicPartition> {
    (0..n).map(|p| tp(TOPIC, p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_split_six_partitions_and_read_each_record_once() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 6).await;
    let a = Running::subscribe(cluster.consumer(cluster.config("g")).await, &[TOPIC]);
    let b = Running::subscribe(cluster.consumer(cluster.config("g")).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(6)) && s.iter().all(|s| s.assignment.len() == 3)
    })
    .await;

    for p in 0..6 {
        cluster.produce(TOPIC, p, 0, 20).await;
    }
    wait_for(&[&a, &b], "all 120 records", |s| {
        s.iter().map(|s| s.records.len()).sum::<usize>() >= 120
    })
    .await;
    let (sa, sb) = (a.seen(), b.seen());
    let mut all_values = BTreeSet::new();
    for s in [&sa, &sb] {
        for (tp, offset, value) in &s.records {
            assert!(s.assignment.contains(tp), "read {tp} outside the assignment");
            assert_eq!(value, &format!("{TOPIC}/{}/{offset}", tp.partition));
            assert!(all_values.insert(value.clone()), "{value} read twice");
        }
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }
    assert_eq!(all_values.len(), 120);
    // Each member heard about exactly what it holds.
    for s in [&sa, &sb] {
        let mut held: BTreeSet<TopicPartition> = BTreeSet::new();
        for e in &s.events {
            match e {
                Event::Assigned(tps) => held.extend(tps.iter().cloned()),
                Event::Revoked(tps) | Event::Lost(tps) => {
                    for tp in tps {
                        held.remove(tp);
                    }
                }
            }
        }
        assert_eq!(held, s.assignment.iter().cloned().collect(), "{:?}", s.events);
    }
    a.stop().await.close().await.unwrap();
    b.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_on_two_partitions_leave_one_idle() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    let members: Vec<Running> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(Running::subscribe(cluster.consumer(cluster.config("g")).await, &[TOPIC]));
        }
        v
    };
    let refs: Vec<&Running> = members.iter().collect();
    wait_for(&refs, "two busy members and an idle one", |s| {
        balanced(s, &all(2)) && s.iter().filter(|s| s.assignment.is_empty()).count() == 1
    })
    .await;
    let description = cluster.group.coordinator.describe_group("g");
    assert_eq!(description.members.len(), 3);
    assert_eq!(description.protocol, "range");
    for m in members {
        m.stop().await.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_consumer_hands_all_its_partitions_to_the_other() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 4).await;
    let a = Running::subscribe(cluster.consumer(cluster.config("g")).await, &[TOPIC]);
    let b = Running::subscribe(cluster.consumer(cluster.config("g")).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(4)) && s.iter().all(|s| s.assignment.len() == 2)
    })
    .await;
    let seen_by_b = b.seen.clone();
    let b_partitions = b.seen().assignment;
    b.stop().await.close().await.unwrap();
    // Close revoked B's partitions through its listener.
    let events = seen_by_b.lock().unwrap().events.clone();
    assert_eq!(events.last(), Some(&Event::Revoked(b_partitions)), "{events:?}");
    // A gets everything, well before B's session could have expired.
    wait_for(&[&a], "A to own all partitions", |s| balanced(s, &all(4))).await;
    assert_eq!(cluster.group.coordinator.describe_group("g").members.len(), 1);
    a.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalancing_moves_only_what_must_move() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 4).await;
    let config = || cluster.builder("coop").assignment_strategies(cooperative()).build().unwrap();
    let a = Running::subscribe(cluster.consumer(config()).await, &[TOPIC]);
    wait_for(&[&a], "A to own all partitions", |s| balanced(s, &all(4))).await;
    for p in 0..4 {
        cluster.produce(TOPIC, p, 0, 5).await;
    }
    wait_for(&[&a], "A to read 20 records", |s| s[0].records.len() >= 20).await;

    let b = Running::subscribe(cluster.consumer(config()).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(4)) && s.iter().all(|s| s.assignment.len() == 2)
    })
    .await;
    let sa = a.seen();
    // A gave up exactly the two partitions B now holds, and nothing else, never all at once.
    let revoked: Vec<TopicPartition> = sa
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Revoked(tps) => Some(tps.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let b_holds = b.seen().assignment;
    assert_eq!(revoked, b_holds, "{:?}", sa.events);
    assert!(!sa.events.iter().any(|e| matches!(e, Event::Lost(_))), "{:?}", sa.events);
    assert_eq!(cluster.group.coordinator.describe_group("coop").protocol, "cooperative-sticky");

    // B starts where A committed on revoking: it reads only records produced after.
    for p in 0..4 {
        cluster.produce(TOPIC, p, 5, 8).await;
    }
    wait_for(&[&a, &b], "the 12 new records", |s| {
        s.iter().map(|s| s.records.len()).sum::<usize>() >= 32
    })
    .await;
    // One more record per partition: once every one has arrived, anything read twice before
    // it has arrived too, so the counts below are final.
    for p in 0..4 {
        cluster.produce(TOPIC, p, 8, 9).await;
    }
    wait_for(&[&a, &b], "the 4 closing records", |s| {
        s.iter().flat_map(|s| &s.records).filter(|(_, offset, _)| *offset == 8).count() == 4
    })
    .await;
    let sb = b.seen();
    assert!(sb.records.iter().all(|(_, offset, _)| *offset >= 5), "{:?}", sb.records);
    assert_eq!(sb.records.len(), 8, "{:?}", sb.records);
    a.stop().await.close().await.unwrap();
    b.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_polling_leaves_and_loses_its_partitions() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    let config =
        || cluster.builder("slow").max_poll_interval(Duration::from_secs(2)).build().unwrap();
    let a = Running::subscribe(cluster.consumer(config()).await, &[TOPIC]);
    let b = Running::subscribe(cluster.consumer(config()).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(2)) && s.iter().all(|s| s.assignment.len() == 1)
    })
    .await;
    let a_partition = a.seen().assignment;
    a.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    // B takes over once A's heartbeat task notices the silence and leaves the group.
    wait_for(&[&b], "B to own both partitions", |s| balanced(s, &all(2))).await;
    a.paused.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for(&[&a, &b], "A back in the group", |s| {
        balanced(s, &all(2)) && s.iter().all(|s| s.assignment.len() == 1)
    })
    .await;
    let events = a.seen().events;
    assert!(events.contains(&Event::Lost(a_partition)), "{events:?}");
    a.stop().await.close().await.unwrap();
    b.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rebalances_when_a_subscribed_topic_appears() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 2).await;
    let config =
        cluster.builder("meta").metadata_max_age(Duration::from_millis(200)).build().unwrap();
    let a = Running::subscribe(cluster.consumer(config).await, &[TOPIC, "later"]);
    wait_for(&[&a], "A to own the existing topic", |s| balanced(s, &all(2))).await;
    // The leader notices the new topic on its periodic metadata check and rebalances.
    cluster.create_topic("later", 3).await;
    let mut everything = all(2);
    everything.extend((0..3).map(|p| tp("later", p)));
    wait_for(&[&a], "A to own the new topic too", |s| balanced(s, &everything)).await;
    a.stop().await.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eager_rebalance_commits_before_revoking_so_nothing_is_read_twice() {
    let cluster = Cluster::start().await;
    cluster.create_topic(TOPIC, 4).await;
    let a = Running::subscribe(cluster.consumer(cluster.config("eager")).await, &[TOPIC]);
    wait_for(&[&a], "A to own all partitions", |s| balanced(s, &all(4))).await;
    for p in 0..4 {
        cluster.produce(TOPIC, p, 0, 5).await;
    }
    wait_for(&[&a], "A to read 20 records", |s| s[0].records.len() >= 20).await;

    let b = Running::subscribe(cluster.consumer(cluster.config("eager")).await, &[TOPIC]);
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all(4)) && s.iter().all(|s| s.assignment.len() == 2)
    })
    .await;
    // Eager: A gave up everything at the start of the rebalance.
    let events = a.seen().events;
    assert!(events.contains(&Event::Revoked(all(4))), "{events:?}");
    for p in 0..4 {
        cluster.produce(TOPIC, p, 5, 7).await;
    }
    wait_for(&[&a, &b], "the 8 new records", |s| {
        s.iter().map(|s| s.records.len()).sum::<usize>() >= 28
    })
    .await;
    // A closing record per partition makes the counts final (see above).
    for p in 0..4 {
        cluster.produce(TOPIC, p, 7, 8).await;
    }
    wait_for(&[&a, &b], "the 4 closing records", |s| {
        s.iter().flat_map(|s| &s.records).filter(|(_, offset, _)| *offset == 7).count() == 4
    })
    .await;
    let (sa, sb) = (a.seen(), b.seen());
    assert_eq!(sa.records.len() + sb.records.len(), 32, "{sa:?} {sb:?}");
    assert!(sb.records.iter().all(|(_, offset, _)| *offset >= 5), "{:?}", sb.records);
    a.stop().await.close().await.unwrap();
    b.stop().await.close().await.unwrap();
}
