//! The idempotent producer across broker crashes: the SDK producer (idempotence on by default,
//! acks=all) writes numbered records with batches in flight while the broker is killed with
//! SIGKILL and restarted five times. Requests the broker stored but could not answer are
//! retried with the same producer id and sequence; the restarted broker rebuilds its producer
//! state from the log (snapshot plus tail) and answers them with the original offsets. Every
//! record must then be in the log exactly once, each partition in send order.
//!
//! Prints what it measured: records sent, read back, duplicates (must be 0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::{BrokerProcess, run_ok};
use strom_consumer::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
use strom_format::{Offset, PartitionId};
use strom_producer::{Producer, ProducerConfig, ProducerRecord};

const TOPIC: &str = "idem";
const PARTITIONS: i32 = 3;
const RECORDS: u64 = 30_000;
/// Deliveries awaited at once: enough that batches are always in flight at a kill.
const WINDOW: usize = 2_000;
/// Kill the broker after this many more acknowledgements, [`KILLS`] times.
const KILL_EVERY: usize = 5_000;
const KILLS: usize = 5;

#[test]
fn idempotent_producer_retries_across_broker_kills_store_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the restarted broker loads a roll snapshot and replays the tail.
    // fsync before every answer: most of an append's time lies between storing the batch and
    // answering, so a kill there leaves stored batches unanswered, and their retries would be
    // duplicates without idempotence (the same run with it off stored hundreds of records twice in
    // about half of the runs).
    let args = ["--segment-bytes", "262144", "--flush-messages", "1"];
    let mut broker = BrokerProcess::start(dir.path(), &args);
    let addr = broker.addr.clone();
    let create = ["--bootstrap", &addr, "topics", "create", TOPIC, "--partitions", "3"];
    run_ok("strom-admin", &create, None);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let (kills, failed) = rt.block_on(async {
        let config = ProducerConfig::builder(addr.clone())
            .linger(Duration::from_millis(2))
            .request_timeout(Duration::from_secs(3))
            .delivery_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        assert!(config.enable_idempotence, "idempotence is the default");
        let producer = Producer::new(config).await.unwrap();
        let mut pending = VecDeque::new();
        let (mut acked, mut kills, mut failed) = (0usize, 0usize, Vec::new());
        for i in 0..RECORDS {
            let record =
                ProducerRecord::new(TOPIC).key(format!("k{}", i % 101)).value(format!("v{i}"));
            pending.push_back(producer.send(record).await.expect("send"));
            if pending.len() >= WINDOW {
                match pending.pop_front().expect("pending").await {
                    Ok(_) => acked += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                if kills < KILLS && acked >= KILL_EVERY * (kills + 1) {
                    // Blocks this worker only: the producer's sender keeps retrying meanwhile.
                    tokio::task::block_in_place(|| {
                        broker.kill();
                        broker.restart();
                    });
                    kills += 1;
                }
            }
        }
        for delivery in pending {
            if let Err(e) = delivery.await {
                failed.push(e.to_string());
            }
        }
        producer.close().await;
        (kills, failed)
    });
    assert_eq!(kills, KILLS);
    assert!(failed.is_empty(), "{} deliveries failed, first: {:?}", failed.len(), failed.first());

    let addr = broker.addr.clone();
    let (read, duplicates, order_ok) = rt.block_on(async {
        let mut consumer = Consumer::new(ConsumerConfig::new(addr.clone())).await.unwrap();
        let tps: Vec<TopicPartition> =
            (0..PARTITIONS).map(|p| TopicPartition::new(TOPIC, PartitionId::new(p))).collect();
        consumer.assign(tps.clone());
        let mut end = HashMap::new();
        for tp in &tps {
            consumer.seek(tp, SeekTo::Beginning).unwrap();
            let leo = consumer
                .client()
                .list_offset(&tp.topic, tp.partition, strom_client::OffsetSpec::Latest)
                .await
                .unwrap()
                .unwrap_or(Offset::ZERO);
            end.insert(tp.partition.get(), leo.get());
        }
        let mut next: HashMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        let mut last_seen: HashMap<i32, u64> = HashMap::new();
        let mut counts: HashMap<u64, u32> = HashMap::new();
        let mut order_ok = true;
        let deadline = Instant::now() + Duration::from_secs(60);
        while next.iter().any(|(p, o)| *o < end[p]) {
            assert!(Instant::now() < deadline, "consumer stalled at {next:?}, end {end:?}");
            for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                let p = r.partition.get();
                next.insert(p, r.offset.get() + 1);
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                let n: u64 = value.strip_prefix('v').and_then(|v| v.parse().ok()).expect("v<n>");
                // Records of one partition come back in the order they were sent.
                order_ok &= last_seen.insert(p, n).is_none_or(|prev| prev < n);
                *counts.entry(n).or_default() += 1;
            }
        }
        let duplicates: u64 = counts.values().map(|c| u64::from(c - 1)).sum();
        (counts.len() as u64, duplicates, order_ok)
    });
    println!(
        "idempotent producer across {kills} broker kills: {RECORDS} records sent, {read} distinct read back, {duplicates} duplicates"
    );
    assert_eq!(duplicates, 0, "records stored twice");
    assert_eq!(read, RECORDS, "records missing");
    assert!(order_ok, "a partition's records are out of send order");
}
