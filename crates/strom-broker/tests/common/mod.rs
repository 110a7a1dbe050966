//! Helpers of the broker's gRPC tests: an in-process broker on port 0 in a temporary data
//! directory, the generated clients, and hand-built record batches.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use strom_broker::{BrokerConfig, BrokerServer};
use strom_format::{BatchBuilder, Batches, Compression};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_proto::v1::admin_client::AdminClient;
use strom_proto::v1::broker_client::BrokerClient;
use tonic::transport::Channel;

/// Guard against hangs: no single step of a test may take longer (not a performance bound).
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub fn config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        // Few offsets partitions: every test broker creates and replays them.
        offsets_topic_num_partitions: 3,
        ..BrokerConfig::default()
    }
}

pub struct Harness {
    pub server: BrokerServer,
    pub broker: BrokerClient<Channel>,
    pub admin: AdminClient<Channel>,
}

impl Harness {
    pub async fn start(config: BrokerConfig) -> Harness {
        let server = BrokerServer::start(config).await.expect("broker starts");
        let url = format!("http://{}", server.local_addr());
        let channel = Channel::from_shared(url).unwrap().connect().await.expect("connect");
        Harness {
            server,
            broker: BrokerClient::new(channel.clone()).max_decoding_message_size(256 << 20),
            admin: AdminClient::new(channel).max_decoding_message_size(256 << 20),
        }
    }

    pub async fn stop(self) {
        drop(self.broker);
        drop(self.admin);
        tokio::time::timeout(HANG_GUARD, self.server.shutdown())
            .await
            .expect("shutdown finishes")
            .expect("clean shutdown");
    }

    pub async fn create(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let result = self.create_result(name, partitions, configs).await;
        assert_eq!(result.error_code(), ErrorCode::None, "create {name}: {}", result.error_message);
    }

    pub async fn create_result(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> pb::TopicResult {
        let topic = pb::NewTopic {
            name: name.to_string(),
            num_partitions: partitions,
            replication_factor: 0,
            configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let request = pb::CreateTopicsRequest { topics: vec![topic], validate_only: false };
        let mut response = self.admin.create_topics(request).await.unwrap().into_inner();
        assert_eq!(response.topics.len(), 1);
        response.topics.remove(0)
    }

    pub async fn produce_acks(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i32,
    ) -> pb::PartitionProduceResponse {
        let request = pb::ProduceRequest {
            acks,
            timeout_ms: 5000,
            topics: vec![pb::TopicProduceData {
                name: topic.to_string(),
                partitions: vec![pb::PartitionProduceData { partition, records }],
            }],
        };
        let mut response = self.broker.produce(request).await.unwrap().into_inner();
        response.topics.remove(0).partitions.remove(0)
    }

    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> pb::PartitionProduceResponse {
        self.produce_acks(topic, partition, records, -1).await
    }

    /// Produces and insists on success; returns the base offset.
    pub async fn produce_ok(&mut self, topic: &str, partition: i32, records: Bytes) -> i64 {
        let r = self.produce(topic, partition, records).await;
        assert_eq!(r.error_code(), ErrorCode::None, "produce: {}", r.error_message);
        r.base_offset
    }

    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> pb::FetchPartitionResponse {
        self.fetch_with(fetch_request(&[(topic, partition, offset)], 0, 0, 0)).await.remove(0)
    }

    pub async fn fetch_with(
        &mut self,
        request: pb::FetchRequest,
    ) -> Vec<pb::FetchPartitionResponse> {
        let response = tokio::time::timeout(HANG_GUARD, self.broker.fetch(request))
            .await
            .expect("fetch answers")
            .unwrap()
            .into_inner();
        response.topics.into_iter().flat_map(|t| t.partitions).collect()
    }

    pub async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> pb::ListOffsetsPartitionResponse {
        let request = pb::ListOffsetsRequest {
            topics: vec![pb::ListOffsetsTopic {
                name: topic.to_string(),
                partitions: vec![pb::ListOffsetsPartition { partition, timestamp }],
            }],
        };
        let mut response = self.broker.list_offsets(request).await.unwrap().into_inner();
        response.topics.remove(0).partitions.remove(0)
    }

    pub async fn list(&mut self, include_internal: bool) -> Vec<pb::TopicListing> {
        let request = pb::ListTopicsRequest { include_internal };
        self.admin.list_topics(request).await.unwrap().into_inner().topics
    }

    pub async fn describe(&mut self, name: &str) -> pb::TopicDescription {
        let request = pb::DescribeTopicsRequest { names: vec![name.to_string()] };
        self.admin.describe_topics(request).await.unwrap().into_inner().topics.remove(0)
    }

    pub async fn delete(&mut self, name: &str) -> pb::TopicResult {
        let request = pb::DeleteTopicsRequest { names: vec![name.to_string()] };
        self.admin.delete_topics(request).await.unwrap().into_inner().topics.remove(0)
    }
}

/// A fetch request over `(topic, partition, offset)` triples, in that order.
pub fn fetch_request(
    partitions: &[(&str, i32, i64)],
    max_wait_ms: u32,
    min_bytes: u32,
    max_bytes: u32,
) -> pb::FetchRequest {
    let mut topics: Vec<pb::FetchTopic> = Vec::new();
    for &(topic, partition, fetch_offset) in partitions {
        let p = pb::FetchPartition {
            partition,
            fetch_offset,
            partition_max_bytes: 0,
            current_leader_epoch: None,
        };
        match topics.last_mut() {
            Some(t) if t.name == topic => t.partitions.push(p),
            _ => topics.push(pb::FetchTopic { name: topic.to_string(), partitions: vec![p] }),
        }
    }
    pb::FetchRequest { max_wait_ms, min_bytes, max_bytes, topics }
}

/// One uncompressed batch holding `values`, every record stamped `timestamp_ms`.
pub fn batch_at(timestamp_ms: i64, values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for v in values {
        b.append(timestamp_ms, Some(b"k".as_slice()), Some(v.as_bytes()), &[]);
    }
    b.build().unwrap()
}

/// One batch with the current time as timestamp.
pub fn batch(values: &[&str]) -> Bytes {
    batch_at(now_ms(), values)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Every record of a fetch answer as `(offset, value)`, checking each batch's CRC.
pub fn records(buf: &Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for batch in Batches::new(buf.clone()) {
        let batch = batch.unwrap();
        batch.validate_crc().unwrap();
        for r in batch.records().unwrap() {
            let r = r.unwrap();
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            out.push((r.offset.get(), value));
        }
    }
    out
}

/// Topic name to partition count of a listing.
pub fn by_name(listing: &[pb::TopicListing]) -> HashMap<String, i32> {
    listing.iter().map(|t| (t.name.clone(), t.num_partitions)).collect()
}

/// Waits until `n` fetches are parked on the broker: a long poll is in place.
pub async fn parked(h: &Harness, n: usize) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while h.server.broker().parked_fetches() != n {
        assert!(tokio::time::Instant::now() < deadline, "the fetch never parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
