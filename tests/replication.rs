//! Replication across real `strom-broker` processes: 3 brokers, a topic with replication factor
//! 3 and `min.insync.replicas=2`, a producer (the SDK, acks=all) running at full speed while
//! the partition's leader is killed with SIGKILL and restarted 20 times, then a follower
//! killed, then the leader frozen for 20 s (replaced meanwhile) and thawed. Afterwards every acknowledged
//! record must be readable at the offset it was acknowledged with, in order, offsets dense.
//!
//! Prints what it measured: failover time per kill (from the kill to the next acknowledged
//! record), records acknowledged, records lost (must be 0), records stored twice (must be 0:
//! the producer is idempotent, and followers keep the leader's producer state).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, admin_json, all_active, wait_for};
use common::run_ok;
use strom_consumer::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
use strom_producer::{
    Acks, PartitionId, Producer, ProducerConfig, ProducerConfigBuilder, ProducerRecord,
};

const TOPIC: &str = "acked";
const KILLS: usize = 20;
/// Records the producer keeps unacknowledged at once.
const IN_FLIGHT: usize = 256;

/// What the producer was told.
#[derive(Default)]
struct Acked {
    /// `partition << 40 | offset` -> value of every acknowledged record (the offset alone for
    /// partition 0).
    records: Mutex<BTreeMap<i64, String>>,
    /// Every failed delivery (acks=all with retries: none expected).
    errors: Mutex<Vec<String>>,
    /// When the latest acknowledgement arrived.
    last: Mutex<Option<Instant>>,
}

/// Sends `record(0)`, `record(1)`, ... until `stop`, awaiting deliveries in order with up to
/// [`IN_FLIGHT`] outstanding. `pace`: a short pause every 64 sends, a steady load rather than a
/// flood (where the point is errors, not throughput).
async fn produce(
    config: ProducerConfig,
    stop: Arc<AtomicBool>,
    acked: Arc<Acked>,
    pace: bool,
    record: impl Fn(u64) -> (String, ProducerRecord),
) {
    let producer = Producer::new(config).await.expect("producer");
    let mut pending = std::collections::VecDeque::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) || !pending.is_empty() {
        if !stop.load(Ordering::Acquire) && pending.len() < IN_FLIGHT {
            let (value, record) = record(i);
            match producer.send(record).await {
                Ok(delivery) => pending.push_back((value, delivery)),
                Err(e) => acked.errors.lock().unwrap().push(format!("send {value}: {e}")),
            }
            i += 1;
            if pace && i.is_multiple_of(64) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            continue;
        }
        let Some((value, delivery)) = pending.pop_front() else { continue };
        match delivery.await {
            Ok(meta) => {
                let offset = meta.offset.expect("acks=all reports offsets").get();
                let key = i64::from(meta.partition.get()) << 40 | offset;
                let previous = acked.records.lock().unwrap().insert(key, value.clone());
                assert!(previous.is_none(), "offset {offset} acknowledged twice");
                *acked.last.lock().unwrap() = Some(Instant::now());
            }
            Err(e) => acked.errors.lock().unwrap().push(format!("{value}: {e}")),
        }
    }
    producer.close().await;
}

/// An acks=all producer with a 5 s request timeout (a frozen leader is given up on quickly).
fn producer_config(bootstrap: &str) -> ProducerConfig {
    producer_builder(bootstrap).build().expect("valid producer config")
}

/// The settings of [`producer_config`], to adjust before building.
fn producer_builder(bootstrap: &str) -> ProducerConfigBuilder {
    ProducerConfig::builder(bootstrap).acks(Acks::All).request_timeout(Duration::from_secs(5))
}

/// Every record of partition 0 from the beginning up to `end`, as (offset, value).
async fn read_all(bootstrap: String, end: i64) -> Vec<(i64, String)> {
    let config = ConsumerConfig::builder(bootstrap)
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .expect("valid consumer config");
    let mut consumer = Consumer::new(config).await.expect("consumer");
    let tp = TopicPartition::new(TOPIC, PartitionId::new(0));
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, SeekTo::Beginning).expect("seek");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.last().is_none_or(|(o, _)| *o + 1 < end) {
        assert!(Instant::now() < deadline, "read only {} records of {end}", out.len());
        for r in consumer.poll(Duration::from_millis(500)).await.expect("poll") {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into();
            out.push((r.offset.get(), value));
        }
    }
    out
}

/// Creates `topic` with `partitions` partitions, 3 replicas each, `min.insync.replicas=2`.
fn create_rf3_topic(addr: &str, topic: &str, partitions: u32) {
    let partitions = partitions.to_string();
    let args = [
        "--bootstrap",
        addr,
        "topics",
        "create",
        topic,
        "--partitions",
        &partitions,
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
    ];
    run_ok("strom-admin", &args, None);
}

/// Leader, ISR and high watermark of partition 0, as `addr` describes it.
fn partition0(addr: &str) -> Option<(i64, Vec<i64>, i64)> {
    let v = admin_json(addr, &["topics", "describe", TOPIC])?;
    let p = &v[0]["partitions"][0];
    let isr = p["isr"].as_array()?.iter().filter_map(|n| n.as_i64()).collect();
    Some((p["leader"].as_i64()?, isr, p["high_watermark"].as_i64().unwrap_or(-1)))
}

/// Leader and ISR of partition 0 once it has a leader and all three replicas in sync, as node 1
/// (or, while it is down, node 2) describes it.
fn full_isr(cluster: &Cluster) -> Option<(i64, Vec<i64>)> {
    let (leader, isr, _) =
        partition0(&cluster.node(1).addr).or_else(|| partition0(&cluster.node(2).addr))?;
    (leader > 0 && isr.len() == 3).then_some((leader, isr))
}

/// A node other than `not` that answers admin requests.
fn observer(cluster: &Cluster, not: &[i64]) -> String {
    let id = (1..=3).find(|n| !not.contains(n)).expect("an observer");
    cluster.node(id).addr.clone()
}

fn wait_acked_after(acked: &Acked, since: Instant, what: &str) -> Duration {
    let (_, took) = wait_for(what, || {
        let last = (*acked.last.lock().unwrap())?;
        (last > since).then_some(())
    });
    took
}

#[test]
fn acknowledged_records_survive_leader_kills_follower_kill_and_a_frozen_leader() {
    let mut cluster = Cluster::start_with(3, &["--replica-lag-time-max-ms", "2000"]);
    let ids = [1, 2, 3];
    wait_for("3 nodes active", || all_active(&cluster.node(1).addr, &ids));
    create_rf3_topic(&cluster.node(1).addr, TOPIC, 1);
    wait_for("partition 0 with a full ISR", || {
        let (leader, isr, _) = partition0(&cluster.node(2).addr)?;
        (leader > 0 && isr.len() == 3).then_some(())
    });

    let bootstrap = cluster.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Acked::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = producer_builder(&bootstrap)
        .linger(Duration::from_millis(1))
        .build()
        .expect("valid producer config");
    let producer = runtime.spawn(produce(config, stop.clone(), acked.clone(), false, |i| {
        let value = format!("v{i}");
        (value.clone(), ProducerRecord::new(TOPIC).partition(PartitionId::new(0)).value(value))
    }));
    wait_acked_after(&acked, Instant::now(), "first acknowledgement");

    // The leader dies 20 times; each time a follower from the ISR takes over.
    let mut failovers = Vec::new();
    for round in 1..=KILLS {
        let (leader, _) = wait_for("a leader with a full ISR", || full_isr(&cluster)).0;
        cluster.node_mut(leader).kill();
        let killed = Instant::now();
        let failover = wait_acked_after(&acked, killed, "an acknowledgement after the kill");
        let (new_leader, _) = wait_for("a new leader", || {
            let (l, _, _) = partition0(&observer(&cluster, &[leader]))?;
            (l > 0 && l != leader).then_some(l)
        });
        println!(
            "kill {round:2}: leader {leader} -> {new_leader}, acks resumed {:.2}s after the kill, {} acknowledged so far",
            failover.as_secs_f64(),
            acked.records.lock().unwrap().len()
        );
        failovers.push(failover);
        cluster.node_mut(leader).restart();
    }

    // A follower dies: the ISR shrinks to 2 (>= min.insync.replicas) and acks go on.
    let (leader, isr) = wait_for("a full ISR again", || full_isr(&cluster)).0;
    let follower = *isr.iter().find(|n| **n != leader).expect("a follower");
    cluster.node_mut(follower).kill();
    let killed = Instant::now();
    wait_for("the ISR shrinks without the follower", || {
        let (_, isr, _) = partition0(&cluster.node(leader).addr)?;
        (!isr.contains(&follower)).then_some(())
    });
    let resumed = wait_acked_after(&acked, Instant::now(), "acks with a shrunk ISR");
    println!(
        "follower {follower} killed: ISR shrank and acks continued {:.2}s after the kill",
        (killed.elapsed() - resumed).as_secs_f64()
    );
    cluster.node_mut(follower).restart();

    // The leader freezes past its session: replaced; thawed, it truncates what only it has and
    // follows.
    let (leader, _) = wait_for("a full ISR before the freeze", || full_isr(&cluster)).0;
    cluster.node(leader).freeze();
    let frozen = Instant::now();
    let (replacement, _) = wait_for("a new leader while the old one is frozen", || {
        let (l, _, _) = partition0(&observer(&cluster, &[leader]))?;
        (l > 0 && l != leader).then_some(l)
    });
    wait_acked_after(&acked, Instant::now(), "acks from the new leader");
    println!(
        "leader {leader} frozen: node {replacement} leads {:.2}s later",
        frozen.elapsed().as_secs_f64()
    );
    // Frozen for 20 s in all, as a long GC pause or a stalled disk would.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(frozen.elapsed()));
    cluster.node(leader).thaw();
    let (_, rejoined) = wait_for("the thawed node back in the ISR", || {
        let (_, isr, _) = partition0(&observer(&cluster, &[leader]))?;
        isr.contains(&leader).then_some(())
    });
    println!("thawed node {leader} rejoined the ISR after {:.2}s", rejoined.as_secs_f64());

    stop.store(true, Ordering::Release);
    runtime.block_on(producer).expect("producer task");
    let acked_records = std::mem::take(&mut *acked.records.lock().unwrap());
    let errors = acked.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{} deliveries failed, first: {:?}", errors.len(), errors.first());

    // Every acknowledged record is where it was acknowledged, offsets dense, in order.
    let end = acked_records.keys().next_back().copied().expect("something acknowledged") + 1;
    let read = runtime.block_on(read_all(bootstrap, end));
    for (i, (offset, _)) in read.iter().enumerate() {
        assert_eq!(*offset, i as i64, "offsets dense from 0");
    }
    // The producer is idempotent (the default): a retry of a batch the killed leader had
    // stored and replicated, but not acknowledged, is recognised by the new leader.
    let mut distinct = std::collections::HashSet::new();
    let duplicates = read.iter().filter(|(_, v)| !distinct.insert(v.as_str())).count();
    println!("{duplicates} duplicates among {} records read", read.len());
    assert_eq!(duplicates, 0, "records stored twice across leader kills");
    let lost: Vec<_> = acked_records
        .iter()
        .filter(|(offset, value)| read.get(**offset as usize).is_none_or(|(_, v)| v != *value))
        .collect();
    let mut sorted: Vec<f64> = failovers.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{} records acknowledged, {} read back, {} lost; failover p50 {:.2}s max {:.2}s",
        acked_records.len(),
        read.len(),
        lost.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    assert!(lost.is_empty(), "acknowledged records lost or moved: first {:?}", lost.first());
    // Values are produced in order: acknowledged ones sit at increasing offsets in that order.
    let numbers: Vec<u64> =
        acked_records.values().filter_map(|v| v.strip_prefix('v')?.parse().ok()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "acknowledged records out of order");
}

/// Node id of `group`'s coordinator, from FindCoordinator through `bootstrap`.
async fn coordinator_of(bootstrap: &str, group: &str) -> Option<i32> {
    use strom_client::proto::v1::FindCoordinatorRequest;
    let client =
        strom_client::Client::connect(strom_client::ClientConfig::new(bootstrap)).await.ok()?;
    let response = client
        .group()
        .find_coordinator(client.request(FindCoordinatorRequest { group_id: group.into() }))
        .await
        .ok()?
        .into_inner();
    (response.error_code == 0).then_some(response.coordinator?.node_id)
}

/// A group member reading `events` until `stop`, committing after every poll; records the
/// values it saw.
async fn consume(
    bootstrap: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<std::collections::HashSet<String>>>,
) {
    let config = ConsumerConfig::builder(bootstrap)
        .group_id("riders")
        .enable_auto_commit(false)
        .auto_offset_reset(strom_consumer::OffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
        .build()
        .expect("valid consumer config");
    let mut consumer = Consumer::new(config).await.expect("consumer");
    consumer.subscribe(vec!["events".into()], None).expect("subscribe");
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                {
                    let mut seen = seen.lock().unwrap();
                    for r in &records {
                        seen.insert(
                            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into(),
                        );
                    }
                }
                if !records.is_empty() {
                    // Commits may fail while the coordinator moves; the next one catches up.
                    let _ = consumer.commit_sync().await;
                }
            }
            Err(e) => println!("poll error (retried): {e}"),
        }
    }
    let _ = consumer.close().await;
}

#[test]
fn a_group_and_a_producer_ride_through_a_coordinator_kill_and_a_rolling_restart() {
    let mut cluster = Cluster::start_with(3, &["--replica-lag-time-max-ms", "2000"]);
    let ids = [1, 2, 3];
    wait_for("3 nodes active", || all_active(&cluster.node(1).addr, &ids));
    create_rf3_topic(&cluster.node(1).addr, "events", 3);
    let bootstrap = cluster.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    wait_for("__consumer_offsets replicated 3 ways", || {
        let v = admin_json(&cluster.node(1).addr, &["topics", "describe", "__consumer_offsets"])?;
        let p = &v[0]["partitions"][0];
        (p["replicas"].as_array()?.len() == 3).then_some(())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop_producer = Arc::new(AtomicBool::new(false));
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Acked::default());
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let producer = runtime.spawn(produce(
        producer_config(&bootstrap),
        stop_producer.clone(),
        acked.clone(),
        true,
        |i| {
            let value = format!("e{i}");
            let record = ProducerRecord::new("events").key(format!("k{}", i % 97));
            (value.clone(), record.value(value))
        },
    ));
    let consumer = runtime.spawn(consume(bootstrap.clone(), stop_consumer.clone(), seen.clone()));
    wait_for("the group consuming", || (!seen.lock().unwrap().is_empty()).then_some(()));

    // The broker holding the group's coordinator dies; the group finds the new one.
    let coordinator = wait_for("the group's coordinator", || {
        runtime.block_on(coordinator_of(&bootstrap, "riders"))
    })
    .0;
    cluster.node_mut(i64::from(coordinator)).kill();
    let killed = Instant::now();
    let before = seen.lock().unwrap().len();
    let (moved_to, _) = wait_for("a new coordinator", || {
        let other = cluster.nodes.iter().enumerate().find(|(i, _)| *i as i32 + 1 != coordinator)?.1;
        let c = runtime.block_on(coordinator_of(&other.addr, "riders"))?;
        (c != coordinator).then_some(c)
    });
    wait_for("the group consuming after the coordinator kill", || {
        (seen.lock().unwrap().len() > before + 100).then_some(())
    });
    println!(
        "coordinator {coordinator} killed: node {moved_to} coordinates, group consuming again {:.2}s after the kill",
        killed.elapsed().as_secs_f64()
    );
    cluster.node_mut(i64::from(coordinator)).restart();
    wait_for("3 nodes active after the restart", || all_active(&cluster.node(1).addr, &ids));

    // A rolling restart: each node stopped cleanly (leadership moved first) and restarted.
    for id in ids {
        let full_isr = || {
            let v = admin_json(&cluster.node(id % 3 + 1).addr, &["topics", "describe", "events"])?;
            let all = v[0]["partitions"].as_array()?.iter().all(|p| {
                p["isr"].as_array().is_some_and(|isr| isr.len() == 3)
                    && p["leader"].as_i64() > Some(0)
            });
            all.then_some(())
        };
        wait_for("every events partition with a full ISR", full_isr);
        let started = Instant::now();
        cluster.node_mut(id).stop();
        let stopped = started.elapsed();
        cluster.node_mut(id).restart();
        wait_for("node back", || all_active(&cluster.node(id).addr, &ids));
        println!("rolling restart: node {id} stopped in {:.2}s and is back", stopped.as_secs_f64());
    }
    wait_acked_after(&acked, Instant::now(), "acks after the rolling restart");

    stop_producer.store(true, Ordering::Release);
    runtime.block_on(producer).expect("producer task");
    let errors = acked.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} produce errors surfaced, first: {:?}",
        errors.len(),
        errors.first()
    );
    let values: Vec<String> = acked.records.lock().unwrap().values().cloned().collect();
    wait_for("the group read every acknowledged record", || {
        let seen = seen.lock().unwrap();
        values.iter().all(|v| seen.contains(v)).then_some(())
    });
    stop_consumer.store(true, Ordering::Release);
    runtime.block_on(consumer).expect("consumer task");
    println!("{} records acknowledged, all read by the group, 0 produce errors", values.len());
}
