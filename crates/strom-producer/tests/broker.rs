//! The producer against a real in-process broker on port 0: keyed records land where Kafka's
//! partitioner puts them, offsets are dense, and a fetch returns the values in send order.

use std::collections::HashMap;

use bytes::Bytes;
use strom_client::OffsetSpec;
use strom_client::proto::v1::{FetchPartition, FetchRequest, FetchTopic};
use strom_format::{Batches, Compression, Offset, PartitionId};
use strom_producer::{Producer, ProducerConfig, ProducerRecord, partition_for_key};
use strom_testkit::broker::TestBroker;

/// Every value of `partition` from offset 0, via the gRPC Fetch API.
async fn fetch_all(producer: &Producer, topic: &str, partition: i32) -> Vec<Option<Bytes>> {
    let client = producer.client();
    let mut out = Vec::new();
    loop {
        let req = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: topic.to_owned(),
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: out.len() as i64,
                    partition_max_bytes: 1 << 20,
                    current_leader_epoch: None,
                }],
            }],
        };
        let mut broker =
            client.broker_for(topic, PartitionId::new(partition)).await.expect("leader");
        let resp = broker.fetch(client.request(req)).await.expect("fetch").into_inner();
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "{}", p.error_message);
        let before = out.len();
        for batch in Batches::new(p.records.clone()) {
            for r in batch.expect("batch").records().expect("records") {
                let r = r.expect("record");
                if r.offset.get() >= out.len() as i64 {
                    assert_eq!(r.offset.get(), out.len() as i64, "dense offsets");
                    out.push(r.value);
                }
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_real_broker_and_read_back() {
    let broker = TestBroker::start().await;
    let cfg = ProducerConfig::builder(broker.local_addr().to_string())
        .compression(Compression::Lz4)
        .batch_size(4096)
        .build()
        .unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    producer.client().create_topic("orders", 3, 1, HashMap::new()).await.unwrap();

    let mut pending = Vec::new();
    for i in 0..3000 {
        let key = format!("customer-{}", i % 41);
        let value = format!("order-{i}");
        let f = producer.send(ProducerRecord::new("orders").key(key.clone()).value(value.clone()));
        pending.push((key, value, f.await.unwrap()));
    }
    let mut expected: HashMap<i32, Vec<Option<Bytes>>> = HashMap::new();
    for (key, value, f) in pending {
        let meta = f.await.unwrap();
        assert_eq!(meta.partition, partition_for_key(key.as_bytes(), 3));
        let log = expected.entry(meta.partition.get()).or_default();
        assert_eq!(meta.offset, Some(Offset::new(log.len() as i64)));
        log.push(Some(Bytes::from(value)));
    }
    for p in 0..3 {
        let want = expected.remove(&p).unwrap_or_default();
        let latest = producer
            .client()
            .list_offset("orders", PartitionId::new(p), OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(latest, Some(Offset::new(want.len() as i64)));
        assert_eq!(fetch_all(&producer, "orders", p).await, want, "partition {p}");
    }
    producer.close().await;
    broker.server.shutdown().await.unwrap();
}
