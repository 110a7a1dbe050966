//! The consumer against a real in-process broker (strom-broker on port 0, data in a temporary
//! directory): whole topics in order, seeks, resets, and long-polled delivery of new records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use strom_client::Client;
use strom_consumer::{
    Consumer, ConsumerConfig, ConsumerError, ConsumerRecord, OffsetReset, SeekTo, TopicPartition,
};
use strom_format::{BatchBuilder, Compression, Offset, PartitionId};
use strom_proto::v1::{PartitionProduceData, ProduceRequest, TopicProduceData};
use strom_testkit::broker::TestBroker;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
const BASE_TS: i64 = 1_700_000_000_000;
const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster {
    broker: TestBroker,
    client: Client,
}

impl Cluster {
    async fn start() -> Cluster {
        let broker = TestBroker::start().await;
        let client = broker.client().await;
        client.create_topic(TOPIC, PARTITIONS, 1, HashMap::new()).await.unwrap();
        Cluster { broker, client }
    }

    fn config(&self, reset: OffsetReset) -> ConsumerConfig {
        ConsumerConfig::builder(self.broker.addr())
            .auto_offset_reset(reset)
            .fetch_max_wait(Duration::from_millis(100))
            .retry_backoff(Duration::from_millis(10))
            .build()
            .unwrap()
    }

    /// Appends `n` records ("p<partition>-<offset>", timestamp BASE_TS + offset) to a
    /// partition that holds `from` records, in batches of `per_batch`.
    async fn produce(&self, partition: i32, from: i64, n: i64, per_batch: i64) {
        let mut offset = from;
        let codecs = [Compression::None, Compression::Lz4, Compression::Zstd];
        let mut round = 0;
        while offset < from + n {
            let k = per_batch.min(from + n - offset);
            let mut b = BatchBuilder::new(codecs[round % codecs.len()]);
            round += 1;
            for o in offset..offset + k {
                let key = format!("k{o}");
                let value = format!("p{partition}-{o}");
                b.append(BASE_TS + o, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
            }
            let request = ProduceRequest {
                acks: -1,
                timeout_ms: 10_000,
                topics: vec![TopicProduceData {
                    name: TOPIC.into(),
                    partitions: vec![PartitionProduceData {
                        partition,
                        records: b.build().unwrap(),
                    }],
                }],
            };
            let mut broker =
                self.client.broker_for(TOPIC, PartitionId::new(partition)).await.unwrap();
            let response = broker.produce(request).await.unwrap().into_inner();
            let p = &response.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "{}", p.error_message);
            assert_eq!(p.base_offset, offset);
            offset += k;
        }
    }
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, PartitionId::new(p))
}

fn all() -> Vec<TopicPartition> {
    (0..PARTITIONS).map(tp).collect()
}

async fn poll_n(consumer: &mut Consumer, want: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while out.len() < want {
        assert!(tokio::time::Instant::now() < give_up, "only {} of {want} records", out.len());
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(out.len(), want, "more records than expected");
    out
}

async fn settle(consumer: &mut Consumer, tp: &TopicPartition) -> Offset {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(consumer.poll(Duration::from_millis(20)).await.unwrap().is_empty());
        if let Some(offset) = consumer.position(tp) {
            return offset;
        }
        assert!(tokio::time::Instant::now() < give_up, "position of {tp} never resolved");
    }
}

fn assert_dense(records: &[ConsumerRecord], partition: i32, from: i64, to: i64) {
    let got: Vec<(i64, String, String)> = records
        .iter()
        .filter(|r| r.partition.get() == partition)
        .map(|r| {
            let s = |b: &Option<Bytes>| String::from_utf8(b.clone().unwrap().to_vec()).unwrap();
            (r.offset.get(), s(&r.key), s(&r.value))
        })
        .collect();
    let want: Vec<(i64, String, String)> =
        (from..to).map(|o| (o, format!("k{o}"), format!("p{partition}-{o}"))).collect();
    assert_eq!(got, want, "partition {partition}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_whole_topic_then_seeks_and_resets() {
    let cluster = Cluster::start().await;
    for p in 0..PARTITIONS {
        cluster.produce(p, 0, 1000, 64).await;
    }
    let mut consumer = Consumer::new(cluster.config(OffsetReset::Earliest)).await.unwrap();
    let partitions = consumer.partitions_for(TOPIC).await.unwrap();
    assert_eq!(partitions, all());
    consumer.assign(partitions);
    let records = poll_n(&mut consumer, 3000).await;
    for p in 0..PARTITIONS {
        assert_dense(&records, p, 0, 1000);
        assert_eq!(consumer.position(&tp(p)), Some(Offset::new(1000)));
    }
    assert!(records.iter().all(|r| r.timestamp == BASE_TS + r.offset.get()));

    // Mid-batch seek: batches start before the position; nothing below it comes back.
    consumer.seek(&tp(1), SeekTo::Offset(Offset::new(500))).unwrap();
    assert_dense(&poll_n(&mut consumer, 500).await, 1, 500, 1000);

    consumer.seek(&tp(2), SeekTo::Timestamp(BASE_TS + 990)).unwrap();
    assert_dense(&poll_n(&mut consumer, 10).await, 2, 990, 1000);

    consumer.seek(&tp(0), SeekTo::Beginning).unwrap();
    assert_dense(&poll_n(&mut consumer, 1000).await, 0, 0, 1000);

    // Past the end: OFFSET_OUT_OF_RANGE, reset to the earliest offset.
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(5000))).unwrap();
    assert_dense(&poll_n(&mut consumer, 1000).await, 0, 0, 1000);

    drop(consumer);
    cluster.broker.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_without_reset_policy_is_an_error() {
    let cluster = Cluster::start().await;
    cluster.produce(0, 0, 10, 10).await;
    let mut consumer = Consumer::new(cluster.config(OffsetReset::None)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    assert!(matches!(
        consumer.poll(Duration::from_millis(10)).await,
        Err(ConsumerError::NoOffset(p)) if p == tp(0)
    ));
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(50))).unwrap();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let err = loop {
        assert!(tokio::time::Instant::now() < give_up, "no error");
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => assert!(records.is_empty()),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, ConsumerError::OffsetOutOfRange { ref partition, offset }
            if *partition == tp(0) && offset == Offset::new(50)),
        "{err:?}"
    );
    drop(consumer);
    cluster.broker.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_new_records_from_latest() {
    let cluster = Cluster::start().await;
    for p in 0..PARTITIONS {
        cluster.produce(p, 0, 20, 20).await;
    }
    let mut consumer = Consumer::new(cluster.config(OffsetReset::Latest)).await.unwrap();
    consumer.assign(all());
    for p in 0..PARTITIONS {
        assert_eq!(settle(&mut consumer, &tp(p)).await, Offset::new(20));
    }
    let producer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.produce(1, 20, 5, 5).await;
    };
    let (records, ()) = tokio::join!(poll_n(&mut consumer, 5), producer);
    assert_dense(&records, 1, 20, 25);
    drop(consumer);
    cluster.broker.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_is_reported_by_partitions_for() {
    let cluster = Cluster::start().await;
    let consumer = Consumer::new(cluster.config(OffsetReset::Earliest)).await.unwrap();
    let err = consumer.partitions_for("nope").await.unwrap_err();
    assert!(
        matches!(err, ConsumerError::Client(strom_client::ClientError::UnknownTopic(_))),
        "{err:?}"
    );
    drop(consumer);
    cluster.broker.server.shutdown().await.unwrap();
}

/// Far below the 30 s `fetch_max_wait` of the two tests below: a record that comes only after
/// a long poll of drained partitions runs out trips it.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn long_poll_config(cluster: &Cluster, max_poll_records: usize) -> ConsumerConfig {
    ConsumerConfig::builder(cluster.broker.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .fetch_max_wait(Duration::from_secs(30))
        .max_poll_records(max_poll_records)
        .retry_backoff(Duration::from_millis(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_partitions_do_not_hold_back_one_with_data() {
    let cluster = Cluster::start().await;
    cluster.produce(0, 0, 10, 10).await;
    // One record per poll: partition 0 stays buffered for ten polls while 1 and 2 are drained,
    // the state in which a fetch of 1 and 2 alone would be parked for the whole 30 s.
    let mut consumer = Consumer::new(long_poll_config(&cluster, 1)).await.unwrap();
    consumer.assign(all());
    let mut records = poll_n(&mut consumer, 1).await;
    cluster.produce(0, 10, 1, 1).await;
    let rest = tokio::time::timeout(HANG_GUARD, poll_n(&mut consumer, 10))
        .await
        .expect("the record produced to partition 0 waited for a long poll of drained partitions");
    records.extend(rest);
    assert_dense(&records, 0, 0, 11);
    drop(consumer);
    cluster.broker.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_fetch_returns_when_any_partition_gets_data() {
    let cluster = Cluster::start().await;
    let mut consumer = Consumer::new(long_poll_config(&cluster, 500)).await.unwrap();
    consumer.assign(all());
    for p in 0..PARTITIONS {
        assert_eq!(settle(&mut consumer, &tp(p)).await, Offset::new(0));
    }
    // Wait (on the broker's own count, not a sleep) until the fetch of all three is parked.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while cluster.broker.server.broker().parked_fetches() == 0 {
        assert!(consumer.poll(Duration::from_millis(20)).await.unwrap().is_empty());
        assert!(tokio::time::Instant::now() < give_up, "the fetch never parked");
    }
    let producer = cluster.produce(2, 0, 3, 3);
    let (records, ()) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(poll_n(&mut consumer, 3), producer)
    })
    .await
    .expect("a parked fetch waited out fetch_max_wait although partition 2 got data");
    assert_dense(&records, 2, 0, 3);
    drop(consumer);
    cluster.broker.server.shutdown().await.unwrap();
}
