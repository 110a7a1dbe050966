//! Kill the broker (SIGKILL) while a producer is writing with acks=all, restart it, and read
//! everything back: every acknowledged record is at the offset it was acknowledged with, offsets
//! are dense, and the broker accepts writes again. SIGKILL leaves the page cache intact, so this
//! tests the log's recovery of a torn tail and the broker's acknowledgement order, not fsync.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{BrokerProcess, run_ok};
use strom_consumer::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
use strom_format::{Offset, PartitionId};
use strom_producer::{Acks, Producer, ProducerConfig, ProducerRecord};

const PARTITIONS: i32 = 3;
/// Acknowledgements to collect before the broker is killed.
const ACKED_BEFORE_KILL: usize = 20_000;

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--segment-bytes", "1048576"]);
    let addr = broker.addr.clone();
    run_ok(
        "strom-admin",
        &[
            "--bootstrap",
            &addr,
            "topics",
            "create",
            "crash",
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();

    // (partition, offset) -> value of every acknowledged record.
    let acked: HashMap<(i32, i64), String> = rt.block_on(async {
        let config = ProducerConfig::builder(addr.clone())
            .acks(Acks::All)
            .linger(Duration::from_millis(1))
            .delivery_timeout(Duration::from_secs(5))
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let producer = Producer::new(config).await.unwrap();
        let mut acked = HashMap::new();
        let mut pending = std::collections::VecDeque::new();
        let mut killed = false;
        let mut i = 0u64;
        loop {
            if !killed {
                let record =
                    ProducerRecord::new("crash").key(format!("k{}", i % 97)).value(format!("v{i}"));
                match producer.send(record).await {
                    Ok(fut) => pending.push_back((i, fut)),
                    Err(_) => break,
                }
                i += 1;
            }
            // Keep a bounded window of in-flight sends; harvest acknowledgements in order.
            if pending.len() >= 2_000 || (killed && !pending.is_empty()) {
                let (n, fut) = pending.pop_front().unwrap();
                if let Ok(meta) = fut.await {
                    let offset = meta.offset.expect("acks=all reports offsets");
                    acked.insert((meta.partition.get(), offset.get()), format!("v{n}"));
                }
                if !killed && acked.len() >= ACKED_BEFORE_KILL {
                    broker.kill();
                    killed = true;
                }
            }
            if killed && pending.is_empty() {
                break;
            }
        }
        acked
    });
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    broker.restart();
    let addr = broker.addr.clone();
    rt.block_on(async {
        let mut consumer = Consumer::new(ConsumerConfig::new(addr.clone())).await.unwrap();
        let tps: Vec<TopicPartition> =
            (0..PARTITIONS).map(|p| TopicPartition::new("crash", PartitionId::new(p))).collect();
        consumer.assign(tps.clone());
        for tp in &tps {
            consumer.seek(tp, SeekTo::Beginning).unwrap();
        }
        let mut end = HashMap::new();
        for tp in &tps {
            let leo = consumer
                .client()
                .list_offset(&tp.topic, tp.partition, strom_client::OffsetSpec::Latest)
                .await
                .unwrap()
                .unwrap_or(Offset::ZERO);
            end.insert(tp.partition.get(), leo.get());
        }
        let mut next: HashMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        let mut found = 0usize;
        let mut idle_polls = 0;
        while next.iter().any(|(p, o)| *o < end[p]) {
            let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
            if records.is_empty() {
                idle_polls += 1;
                assert!(idle_polls < 60, "consumer stalled at {next:?}, end {end:?}");
                continue;
            }
            for r in records {
                let p = r.partition.get();
                assert_eq!(r.offset.get(), next[&p], "offsets dense in partition {p}");
                next.insert(p, r.offset.get() + 1);
                if let Some(want) = acked.get(&(p, r.offset.get())) {
                    assert_eq!(r.value.as_deref(), Some(want.as_bytes()), "p{p}@{}", r.offset);
                    found += 1;
                }
            }
        }
        assert_eq!(found, acked.len(), "acknowledged records missing after the crash");

        // The restarted broker takes writes again, after the recovered tail.
        let producer = Producer::new(ProducerConfig::new(addr.clone())).await.unwrap();
        let meta = producer
            .send(ProducerRecord::new("crash").partition(PartitionId::new(0)).value("after"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(meta.offset.unwrap().get(), end[&0]);
    });
}
