//! Producer against a fake broker implemented in the test with the generated gRPC traits: lets
//! the test inject retriable and fatal errors and stall responses, and check ordering, offsets,
//! partitioning, backpressure and timeouts.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strom_client::proto::v1::admin_server::AdminServer;
use strom_client::proto::v1::broker_server::{Broker, BrokerServer};
use strom_client::proto::v1::*;
use strom_format::{Batches, Offset, PartitionId};
use strom_producer::{
    Acks, ErrorCode, Producer, ProducerConfig, ProducerConfigBuilder, ProducerError,
    ProducerRecord, partition_for_key,
};
use strom_testkit::fake_broker::{
    MetadataAdmin, listen, partition_metadata, serve, single_node_metadata,
};
use tonic::{Request, Response, Status};

/// The values appended to one partition, in offset order.
type Log = Vec<Option<Bytes>>;
/// `(producer id, base sequence, records stored before it)` of each stored batch.
type Stamps = Vec<(i64, i32, usize)>;

#[derive(Default)]
struct Fake {
    port: u16,
    topics: HashMap<String, i32>,
    /// Per partition: the values appended, in offset order.
    logs: Mutex<HashMap<(String, i32), Log>>,
    /// Error codes answered (without appending) to the next partition produce requests.
    inject: Mutex<VecDeque<ErrorCode>>,
    /// Answer every produce with NOT_LEADER_OR_FOLLOWER.
    always_fail: AtomicBool,
    /// Hold produce responses while set.
    stall: AtomicBool,
    produce_calls: AtomicUsize,
    metadata_calls: AtomicUsize,
    /// InitProducerId answers so far (the id handed out is 1000 + this count).
    init_calls: AtomicUsize,
    /// Per partition: `(producer id, base sequence, records stored before it)` of every
    /// stored batch.
    stamps: Mutex<HashMap<(String, i32), Stamps>>,
}

impl Fake {
    /// The Metadata answer: every asked topic (all when none asked), led by node 1.
    fn metadata(&self, request: MetadataRequest) -> MetadataResponse {
        self.metadata_calls.fetch_add(1, Ordering::SeqCst);
        let mut names = request.topics;
        if names.is_empty() {
            names = self.topics.keys().cloned().collect();
        }
        let topics = names
            .into_iter()
            .map(|name| match self.topics.get(&name) {
                Some(&n) => TopicMetadata {
                    name,
                    error_code: 0,
                    error_message: String::new(),
                    partitions: (0..n).map(|p| partition_metadata(p, 1)).collect(),
                },
                None => TopicMetadata {
                    name,
                    error_code: ErrorCode::UnknownTopicOrPartition.code(),
                    error_message: "no such topic".into(),
                    partitions: vec![],
                },
            })
            .collect();
        single_node_metadata(self.port, topics)
    }

    fn log(&self, topic: &str, partition: i32) -> Vec<Option<Bytes>> {
        self.logs.lock().get(&(topic.to_owned(), partition)).cloned().unwrap_or_default()
    }
}

#[tonic::async_trait]
impl Broker for Fake {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        self.produce_calls.fetch_add(1, Ordering::SeqCst);
        while self.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut topics = Vec::new();
        for t in request.into_inner().topics {
            let mut partitions = Vec::new();
            for p in t.partitions {
                let injected = self.inject.lock().pop_front();
                let code = if self.always_fail.load(Ordering::SeqCst) {
                    Some(ErrorCode::NotLeaderOrFollower)
                } else {
                    injected
                };
                let mut resp = PartitionProduceResponse {
                    partition: p.partition,
                    error_code: 0,
                    error_message: String::new(),
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: 0,
                };
                if let Some(code) = code {
                    resp.error_code = code.code();
                    resp.error_message = "injected".into();
                    partitions.push(resp);
                    continue;
                }
                let mut logs = self.logs.lock();
                let log = logs.entry((t.name.clone(), p.partition)).or_default();
                resp.base_offset = log.len() as i64;
                for batch in Batches::new(p.records) {
                    let batch = batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
                    batch.validate_crc().map_err(|e| Status::invalid_argument(e.to_string()))?;
                    self.stamps.lock().entry((t.name.clone(), p.partition)).or_default().push((
                        batch.producer_id(),
                        batch.base_sequence(),
                        log.len(),
                    ));
                    for r in batch.records().map_err(|e| Status::internal(e.to_string()))? {
                        log.push(r.map_err(|e| Status::internal(e.to_string()))?.value);
                    }
                }
                partitions.push(resp);
            }
            topics.push(TopicProduceResponse { name: t.name, partitions });
        }
        Ok(Response::new(ProduceResponse { topics }))
    }
    async fn fetch(&self, _: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let n = self.init_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(InitProducerIdResponse {
            producer_id: 1000 + n as i64,
            producer_epoch: 0,
            ..Default::default()
        }))
    }
    async fn list_offsets(
        &self,
        _: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Starts a fake broker on port 0 serving `topics` (name, partitions).
async fn start(topics: &[(&str, i32)]) -> (Arc<Fake>, SocketAddr) {
    let (listener, addr) = listen().await;
    let fake = Arc::new(Fake {
        port: addr.port(),
        topics: topics.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
        ..Fake::default()
    });
    let metadata = {
        let fake = Arc::clone(&fake);
        MetadataAdmin::new(move |request| fake.metadata(request))
    };
    let router = tonic::transport::Server::builder()
        .add_service(AdminServer::new(metadata))
        .add_service(BrokerServer::from_arc(Arc::clone(&fake)));
    serve(listener, router);
    (fake, addr)
}

fn config(addr: SocketAddr) -> ProducerConfigBuilder {
    ProducerConfig::builder(addr.to_string())
        .linger(Duration::from_millis(1))
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_in_kafka_partitions_with_dense_offsets() {
    let (fake, addr) = start(&[("t", 3)]).await;
    let cfg = config(addr).batch_size(1024).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..600 {
        let key = format!("key-{}", i % 17);
        let record = ProducerRecord::new("t").key(key.clone()).value(format!("v{i}"));
        pending.push((key, i, producer.send(record).await.unwrap()));
    }
    let mut next: HashMap<i32, i64> = HashMap::new();
    for (key, i, f) in pending {
        let meta = f.await.unwrap();
        assert_eq!(meta.partition, partition_for_key(key.as_bytes(), 3));
        assert_eq!(&*meta.topic, "t");
        // Per partition, offsets follow send order and are dense.
        let expect = next.entry(meta.partition.get()).or_insert(0);
        assert_eq!(meta.offset, Some(Offset::new(*expect)));
        *expect += 1;
        let log = fake.log("t", meta.partition.get());
        let stored = log.get(*expect as usize - 1).cloned().flatten();
        assert_eq!(stored, Some(Bytes::from(format!("v{i}"))));
    }
    assert_eq!(next.values().sum::<i64>(), 600);
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_errors_are_retried_in_order() {
    let (fake, addr) = start(&[("t", 1)]).await;
    fake.inject.lock().extend([
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::NotEnoughReplicas,
    ]);
    let cfg = config(addr).batch_size(512).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..500 {
        pending.push(producer.send(ProducerRecord::new("t").value(format!("{i}"))).await.unwrap());
    }
    for (i, f) in pending.into_iter().enumerate() {
        let meta = f.await.unwrap();
        assert_eq!(meta.offset, Some(Offset::new(i as i64)), "record {i}");
    }
    let log = fake.log("t", 0);
    let expected: Vec<Option<Bytes>> =
        (0..500).map(|i| Some(Bytes::from(format!("{i}")))).collect();
    assert_eq!(log, expected, "no loss, no duplicates, no reordering");
    assert!(fake.inject.lock().is_empty(), "every injected error was hit");
    assert!(fake.metadata_calls.load(Ordering::SeqCst) >= 2, "retries refresh metadata");
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_batches_are_numbered_per_partition_and_retries_keep_their_sequence() {
    let (fake, addr) = start(&[("t", 2)]).await;
    fake.inject.lock().extend([ErrorCode::NotLeaderOrFollower, ErrorCode::RequestTimedOut]);
    let cfg = config(addr).batch_size(256).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..200 {
        let record =
            ProducerRecord::new("t").partition(PartitionId::new(i % 2)).value(format!("{i:04}"));
        pending.push(producer.send(record).await.unwrap());
    }
    for f in pending {
        f.await.unwrap();
    }
    assert_eq!(fake.init_calls.load(Ordering::SeqCst), 1, "one producer id for the session");
    for p in 0..2 {
        let stamps = fake.stamps.lock().get(&("t".to_owned(), p)).cloned().unwrap_or_default();
        assert_eq!(fake.log("t", p).len(), 100);
        assert!(stamps.len() > 1, "several batches: {stamps:?}");
        // Every stored batch is producer 1000's, and its first sequence is the number of the
        // partition's records before it: consecutive from 0, no gap, retries unchanged.
        for (id, seq, before) in &stamps {
            assert_eq!((*id, *seq as usize), (1000, *before), "{stamps:?}");
        }
    }
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_answer_moves_the_producer_to_a_new_id_and_restamps_the_batch() {
    let (fake, addr) = start(&[("t", 1)]).await;
    fake.inject.lock().push_back(ErrorCode::OutOfOrderSequenceNumber);
    let producer = Producer::new(config(addr).build().unwrap()).await.unwrap();
    let meta = producer.send(ProducerRecord::new("t").value("a")).await.unwrap().await.unwrap();
    assert_eq!(meta.offset, Some(Offset::new(0)));
    let second = producer.send(ProducerRecord::new("t").value("b")).await.unwrap().await.unwrap();
    assert_eq!(second.offset, Some(Offset::new(1)));
    assert_eq!(fake.init_calls.load(Ordering::SeqCst), 2, "a new producer id after the refusal");
    let stamps = fake.stamps.lock().get(&("t".to_owned(), 0)).cloned().unwrap_or_default();
    assert_eq!(stamps, vec![(1001, 0, 0), (1001, 1, 1)], "re-stamped under the new id from 0");
    producer.close().await;
}

#[tokio::test]
async fn fatal_error_fails_the_batch_and_later_records_still_go_through() {
    let (fake, addr) = start(&[("t", 1)]).await;
    fake.inject.lock().push_back(ErrorCode::MessageTooLarge);
    let producer = Producer::new(config(addr).build().unwrap()).await.unwrap();
    let first = producer.send(ProducerRecord::new("t").value("a")).await.unwrap();
    match first.await {
        Err(ProducerError::Broker { code, partition, .. }) => {
            assert_eq!(code, ErrorCode::MessageTooLarge);
            assert_eq!(partition, PartitionId::new(0));
        }
        other => panic!("expected MESSAGE_TOO_LARGE, got {other:?}"),
    }
    let second = producer.send(ProducerRecord::new("t").value("b")).await.unwrap();
    assert_eq!(second.await.unwrap().offset, Some(Offset::new(0)));
    assert_eq!(fake.log("t", 0), vec![Some(Bytes::from("b"))]);
}

#[tokio::test]
async fn oversized_record_unknown_topic_and_bad_partition_fail_at_send() {
    let (fake, addr) = start(&[("t", 2)]).await;
    let cfg = config(addr).max_request_size(1024).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let big = ProducerRecord::new("t").value(vec![0u8; 2000]);
    assert!(matches!(producer.send(big).await, Err(ProducerError::RecordTooLarge { .. })));
    let unknown = ProducerRecord::new("nope").value("x");
    assert!(
        matches!(producer.send(unknown).await, Err(ProducerError::UnknownTopic(t)) if t == "nope")
    );
    let bad = ProducerRecord::new("t").partition(PartitionId::new(2)).value("x");
    assert!(matches!(
        producer.send(bad).await,
        Err(ProducerError::InvalidPartition { num_partitions: 2, .. })
    ));
    producer.flush().await;
    assert_eq!(fake.produce_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn acks_zero_reports_no_offset() {
    let (fake, addr) = start(&[("t", 1)]).await;
    let cfg = config(addr).acks(Acks::Zero).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let f = producer.send(ProducerRecord::new("t").value("x").timestamp(42)).await.unwrap();
    let meta = f.await.unwrap();
    assert_eq!(meta.offset, None);
    assert_eq!(meta.timestamp, 42);
    assert_eq!(fake.log("t", 0).len(), 1);
}

#[tokio::test]
async fn delivery_timeout_bounds_retries() {
    let (fake, addr) = start(&[("t", 1)]).await;
    fake.always_fail.store(true, Ordering::SeqCst);
    let cfg = config(addr).delivery_timeout(Duration::from_millis(300)).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let f = producer.send(ProducerRecord::new("t").value("x")).await.unwrap();
    match f.await {
        Err(e @ ProducerError::DeliveryTimeout { .. }) => {
            assert!(e.is_timeout());
            // The last attempt's error, by type, and as the error's source.
            assert!(std::error::Error::source(&e).is_some());
            let ProducerError::DeliveryTimeout { last_error: Some(last), .. } = &e else {
                panic!("no last error in {e}");
            };
            assert_eq!(last.code(), Some(ErrorCode::NotLeaderOrFollower), "{e}");
        }
        other => panic!("expected a delivery timeout, got {other:?}"),
    }
    assert!(fake.produce_calls.load(Ordering::SeqCst) >= 2, "it did retry");
}

#[tokio::test]
async fn retries_zero_fails_on_first_retriable_error() {
    let (fake, addr) = start(&[("t", 1)]).await;
    fake.inject.lock().push_back(ErrorCode::NotLeaderOrFollower);
    let cfg = config(addr).retries(0).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let f = producer.send(ProducerRecord::new("t").value("x")).await.unwrap();
    assert!(matches!(
        f.await,
        Err(ProducerError::Broker { code: ErrorCode::NotLeaderOrFollower, .. })
    ));
}

#[tokio::test]
async fn flush_sends_without_waiting_for_linger() {
    let (fake, addr) = start(&[("t", 2)]).await;
    let cfg = config(addr).linger(Duration::from_secs(3600)).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(producer.send(ProducerRecord::new("t").value(format!("{i}"))).await.unwrap());
    }
    producer.flush().await;
    for f in pending {
        // Already acknowledged: flush returned only after that.
        let meta = tokio::time::timeout(Duration::from_secs(30), f).await.unwrap().unwrap();
        assert!(meta.offset.is_some());
    }
    assert_eq!(fake.log("t", 0).len() + fake.log("t", 1).len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_blocks_send_until_acknowledged() {
    let (fake, addr) = start(&[("t", 1)]).await;
    fake.stall.store(true, Ordering::SeqCst);
    let cfg = config(addr)
        .buffer_memory(4096)
        .max_request_size(4096)
        .max_block(Duration::from_millis(200))
        .build()
        .unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    let mut blocked = None;
    for i in 0..100 {
        match producer.send(ProducerRecord::new("t").value(vec![i as u8; 500])).await {
            Ok(f) => pending.push(f),
            Err(e) => {
                blocked = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(blocked, Some(ProducerError::MaxBlockTimeout(_))),
        "send must block once 4 KiB are buffered: {blocked:?}"
    );
    assert!(pending.len() < 10);
    fake.stall.store(false, Ordering::SeqCst);
    let n = pending.len();
    for f in pending {
        f.await.unwrap();
    }
    assert_eq!(fake.log("t", 0).len(), n);
    // Memory came back: sending works again.
    let f = producer.send(ProducerRecord::new("t").value("again")).await.unwrap();
    f.await.unwrap();
}

#[tokio::test]
async fn null_keys_stick_and_spread() {
    let (fake, addr) = start(&[("t", 4)]).await;
    let cfg = config(addr).batch_size(256).build().unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..400 {
        pending
            .push(producer.send(ProducerRecord::new("t").value(format!("{i:08}"))).await.unwrap());
    }
    let mut per_partition = [0usize; 4];
    for f in pending {
        let meta = f.await.unwrap();
        per_partition[meta.partition.get() as usize] += 1;
    }
    assert_eq!(per_partition.iter().sum::<usize>(), 400);
    assert!(per_partition.iter().filter(|&&n| n > 0).count() >= 2, "{per_partition:?}");
    let stored: usize = (0..4).map(|p| fake.log("t", p).len()).sum();
    assert_eq!(stored, 400);
}

#[tokio::test]
async fn dropping_the_producer_still_delivers_and_close_rejects_sends() {
    let (fake, addr) = start(&[("t", 1)]).await;
    let producer = Producer::new(config(addr).build().unwrap()).await.unwrap();
    let f = producer.send(ProducerRecord::new("t").value("x")).await.unwrap();
    drop(producer);
    assert_eq!(f.await.unwrap().offset, Some(Offset::new(0)));
    assert_eq!(fake.log("t", 0).len(), 1);

    let producer = Producer::new(config(addr).build().unwrap()).await.unwrap();
    producer.close().await;
    let r = producer.send(ProducerRecord::new("t").value("y")).await;
    assert!(matches!(r, Err(ProducerError::Closed)));
}

#[tokio::test]
async fn compressed_batches_decode_on_the_broker() {
    let (fake, addr) = start(&[("t", 1)]).await;
    for codec in strom_format::Compression::ALL {
        let cfg = config(addr).compression(codec).build().unwrap();
        let producer = Producer::new(cfg).await.unwrap();
        let f = producer.send(ProducerRecord::new("t").value(format!("{codec}"))).await.unwrap();
        f.await.unwrap();
        producer.close().await;
    }
    let values: Vec<Option<Bytes>> = fake.log("t", 0);
    let expected: Vec<Option<Bytes>> =
        strom_format::Compression::ALL.iter().map(|c| Some(Bytes::from(c.to_string()))).collect();
    assert_eq!(values, expected);
}
