//! The consumer against a scripted in-process broker (the generated `Broker` and `Admin`
//! services on port 0): resets, seeks by timestamp, partial and oversized batches, corrupt
//! data, retriable errors, pipelining. The fake lets each test shape exactly what a fetch
//! returns, which a real broker would not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strom_consumer::{
    Consumer, ConsumerConfig, ConsumerConfigBuilder, ConsumerError, ConsumerRecord, ErrorCode,
    OffsetReset, SeekTo, TopicPartition,
};
use strom_format::{BatchBuilder, Compression, Offset, PartitionId, RecordBatch, set_base_offset};
use strom_proto::v1::admin_server::AdminServer;
use strom_proto::v1::broker_server::{Broker, BrokerServer};
use strom_proto::v1::*;
use strom_testkit::fake_broker::{
    MetadataAdmin, listen, partition_metadata, serve, single_node_metadata,
};
use tonic::{Request, Response, Status};

const TOPIC: &str = "t";
const BASE_TS: i64 = 1_700_000_000_000;
/// Generous bound on how long a test waits for something that should happen quickly.
const PATIENCE: Duration = Duration::from_secs(20);

/// One partition of the fake's only topic.
#[derive(Default)]
struct FakePartition {
    /// (base offset, batch bytes), in offset order.
    batches: Vec<(i64, Bytes)>,
    log_start: i64,
    end: i64,
}

impl FakePartition {
    fn append(&mut self, records: &[(i64, &str)], compression: Compression) {
        let mut b = BatchBuilder::new(compression);
        for (ts, value) in records {
            b.append(*ts, None, Some(value.as_bytes()), &[]);
        }
        let mut buf = b.build().unwrap().to_vec();
        set_base_offset(&mut buf, Offset::new(self.end));
        self.batches.push((self.end, Bytes::from(buf)));
        self.end += records.len() as i64;
    }

    /// Appends `n` records with values "p<partition>-<offset>", one batch of `per_batch`
    /// records at a time; timestamps are BASE_TS + offset.
    fn fill(&mut self, partition: i32, n: i64, per_batch: i64) {
        let mut left = n;
        while left > 0 {
            let k = left.min(per_batch);
            let values: Vec<(i64, String)> = (self.end..self.end + k)
                .map(|o| (BASE_TS + o, format!("p{partition}-{o}")))
                .collect();
            let refs: Vec<(i64, &str)> = values.iter().map(|(t, v)| (*t, v.as_str())).collect();
            self.append(&refs, Compression::None);
            left -= k;
        }
    }
}

/// What the test can change between fetches.
#[derive(Default)]
struct Script {
    partitions: BTreeMap<i32, FakePartition>,
    /// Error codes answered, one per fetch of the partition, before serving data.
    fetch_errors: HashMap<i32, Vec<ErrorCode>>,
    /// Honour partition_max_bytes strictly, cutting batches (Kafka's pre-KIP-74 behaviour).
    cut_at_limit: bool,
    /// Leader reported by Metadata (-1: none).
    leader: i32,
}

#[derive(Default)]
struct Stats {
    fetches: AtomicUsize,
    fetches_in_flight: AtomicUsize,
    max_fetches_in_flight: AtomicUsize,
    metadata_calls: AtomicUsize,
    list_offsets_calls: AtomicUsize,
    /// Partitions per fetch request, in order.
    partitions_per_fetch: Mutex<Vec<usize>>,
}

#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<Script>>,
    stats: Arc<Stats>,
    port: u16,
}

impl Fake {
    async fn start(partitions: i32) -> Fake {
        let (listener, addr) = listen().await;
        let port = addr.port();
        let mut script = Script { leader: 1, ..Script::default() };
        for p in 0..partitions {
            script.partitions.insert(p, FakePartition::default());
        }
        let fake = Fake { script: Arc::new(Mutex::new(script)), stats: Arc::default(), port };
        let metadata = {
            let fake = fake.clone();
            MetadataAdmin::new(move |_| fake.metadata())
        };
        let router = tonic::transport::Server::builder()
            .add_service(BrokerServer::new(fake.clone()))
            .add_service(AdminServer::new(metadata));
        serve(listener, router);
        fake
    }

    /// The Metadata answer: the one topic, its partitions led by the scripted leader.
    fn metadata(&self) -> MetadataResponse {
        self.stats.metadata_calls.fetch_add(1, Ordering::SeqCst);
        let script = self.script.lock().unwrap();
        let partitions =
            script.partitions.keys().map(|&p| partition_metadata(p, script.leader)).collect();
        let topic = TopicMetadata { name: TOPIC.into(), partitions, ..Default::default() };
        single_node_metadata(self.port, vec![topic])
    }

    fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap())
    }

    fn config(&self, reset: OffsetReset) -> ConsumerConfig {
        self.builder(reset).build().unwrap()
    }

    /// The settings of [`Fake::config`], to adjust before building.
    fn builder(&self, reset: OffsetReset) -> ConsumerConfigBuilder {
        ConsumerConfig::builder(format!("127.0.0.1:{}", self.port))
            .auto_offset_reset(reset)
            .fetch_max_wait(Duration::from_millis(50))
            .retry_backoff(Duration::from_millis(5))
    }

    fn serve_partition(
        &self,
        req: &FetchPartition,
        max_bytes: &mut usize,
    ) -> FetchPartitionResponse {
        let mut script = self.script.lock().unwrap();
        let error = |code: ErrorCode| FetchPartitionResponse {
            partition: req.partition,
            error_code: code.code(),
            error_message: format!("{code:?}"),
            ..Default::default()
        };
        if let Some(errors) = script.fetch_errors.get_mut(&req.partition)
            && !errors.is_empty()
        {
            return error(errors.remove(0));
        }
        let cut = script.cut_at_limit;
        let Some(p) = script.partitions.get(&req.partition) else {
            return error(ErrorCode::UnknownTopicOrPartition);
        };
        if req.fetch_offset < p.log_start || req.fetch_offset > p.end {
            return error(ErrorCode::OffsetOutOfRange);
        }
        let limit = (req.partition_max_bytes as usize).min(*max_bytes);
        let mut out = Vec::new();
        for (base, batch) in &p.batches {
            let next = base + RecordBatch::new(batch.clone()).unwrap().records_count() as i64;
            if next <= req.fetch_offset {
                continue;
            }
            if out.len() + batch.len() > limit {
                if cut {
                    let room = limit - out.len();
                    out.extend_from_slice(&batch[..room.min(batch.len())]);
                } else if out.is_empty() {
                    out.extend_from_slice(batch); // at least one batch
                }
                break;
            }
            out.extend_from_slice(batch);
        }
        *max_bytes = max_bytes.saturating_sub(out.len());
        FetchPartitionResponse {
            partition: req.partition,
            error_code: 0,
            high_watermark: p.end,
            log_start_offset: p.log_start,
            records: Bytes::from(out),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Broker for Fake {
    async fn produce(
        &self,
        _: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let stats = &self.stats;
        stats.fetches.fetch_add(1, Ordering::SeqCst);
        let now = stats.fetches_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_fetches_in_flight.fetch_max(now, Ordering::SeqCst);
        let req = request.into_inner();
        let count = req.topics.iter().map(|t| t.partitions.len()).sum();
        stats.partitions_per_fetch.lock().unwrap().push(count);
        let mut response = FetchResponse::default();
        // Long-poll in short steps until some partition has data (or an error), as a broker
        // does with min_bytes = 1.
        let wait_until =
            tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.into());
        loop {
            let mut max_bytes = req.max_bytes as usize;
            response.topics.clear();
            let mut any = false;
            for t in &req.topics {
                let mut parts = Vec::new();
                for p in &t.partitions {
                    let r = if t.name == TOPIC {
                        self.serve_partition(p, &mut max_bytes)
                    } else {
                        FetchPartitionResponse {
                            partition: p.partition,
                            error_code: ErrorCode::UnknownTopicOrPartition.code(),
                            ..Default::default()
                        }
                    };
                    any |= r.error_code != 0 || !r.records.is_empty();
                    parts.push(r);
                }
                response
                    .topics
                    .push(FetchTopicResponse { name: t.name.clone(), partitions: parts });
            }
            if any || tokio::time::Instant::now() >= wait_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stats.fetches_in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(Response::new(response))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        self.stats.list_offsets_calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        let script = self.script.lock().unwrap();
        let mut response = ListOffsetsResponse::default();
        for t in req.topics {
            let mut parts = Vec::new();
            for p in t.partitions {
                let Some(log) = script.partitions.get(&p.partition) else { continue };
                let offset = match p.timestamp {
                    -2 => log.log_start,
                    -1 => log.end,
                    ts => first_offset_at(log, ts),
                };
                parts.push(ListOffsetsPartitionResponse {
                    partition: p.partition,
                    offset,
                    ..Default::default()
                });
            }
            response.topics.push(ListOffsetsTopicResponse { name: t.name, partitions: parts });
        }
        Ok(Response::new(response))
    }
}

fn first_offset_at(log: &FakePartition, ts: i64) -> i64 {
    for (_, batch) in &log.batches {
        let batch = RecordBatch::new(batch.clone()).unwrap();
        for r in batch.records().unwrap() {
            let r = r.unwrap();
            if r.offset.get() >= log.log_start && r.timestamp >= ts {
                return r.offset.get();
            }
        }
    }
    -1
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, PartitionId::new(p))
}

/// Polls until `want` records arrived (failing on any error or after PATIENCE).
async fn poll_n(consumer: &mut Consumer, want: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while out.len() < want {
        assert!(tokio::time::Instant::now() < give_up, "only {} of {want} records", out.len());
        out.extend(consumer.poll(Duration::from_millis(100)).await.unwrap());
    }
    assert_eq!(out.len(), want, "more records than expected");
    out
}

/// Polls (expecting no records) until the position of `tp` is resolved.
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

/// Polls until an error comes back.
async fn poll_err(consumer: &mut Consumer) -> (Vec<ConsumerRecord>, ConsumerError) {
    let mut before = Vec::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(tokio::time::Instant::now() < give_up, "no error came");
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => before.extend(records),
            Err(e) => return (before, e),
        }
    }
}

/// Asserts that each partition's records are exactly `from..to` with the fake's values.
fn assert_dense(records: &[ConsumerRecord], partition: i32, from: i64, to: i64) {
    let got: Vec<(i64, String)> = records
        .iter()
        .filter(|r| r.partition.get() == partition)
        .map(|r| (r.offset.get(), String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()))
        .collect();
    let want: Vec<(i64, String)> = (from..to).map(|o| (o, format!("p{partition}-{o}"))).collect();
    assert_eq!(got, want, "partition {partition}");
}

#[tokio::test]
async fn reads_every_partition_in_order_with_one_fetch_in_flight_per_broker() {
    let fake = Fake::start(3).await;
    fake.with(|s| {
        for (p, log) in s.partitions.iter_mut() {
            log.fill(*p, 200, 7);
        }
    });
    let config = fake.builder(OffsetReset::Earliest).max_poll_records(13).build().unwrap();
    let mut consumer = Consumer::new(config).await.unwrap();
    consumer.assign(vec![tp(2), tp(0), tp(1), tp(0)]);
    assert_eq!(consumer.assignment(), &[tp(0), tp(1), tp(2)]);
    let records = poll_n(&mut consumer, 600).await;
    for p in 0..3 {
        assert_dense(&records, p, 0, 200);
        assert_eq!(consumer.position(&tp(p)), Some(Offset::new(200)));
    }
    assert!(records.iter().all(|r| r.timestamp == BASE_TS + r.offset.get() && &*r.topic == TOPIC));
    assert_eq!(fake.stats.max_fetches_in_flight.load(Ordering::SeqCst), 1);
    let sizes = fake.stats.partitions_per_fetch.lock().unwrap().clone();
    assert_eq!(sizes.first(), Some(&3), "the first fetch covers every partition: {sizes:?}");

    // Records produced later arrive too.
    fake.with(|s| s.partitions.get_mut(&1).unwrap().fill(1, 5, 5));
    let more = poll_n(&mut consumer, 5).await;
    assert_dense(&more, 1, 200, 205);
}

#[tokio::test]
async fn latest_reset_starts_at_the_end() {
    let fake = Fake::start(1).await;
    fake.with(|s| s.partitions.get_mut(&0).unwrap().fill(0, 10, 10));
    let mut consumer = Consumer::new(fake.config(OffsetReset::Latest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    assert_eq!(consumer.position(&tp(0)), None);
    assert_eq!(settle(&mut consumer, &tp(0)).await, Offset::new(10));
    fake.with(|s| s.partitions.get_mut(&0).unwrap().fill(0, 3, 3));
    assert_dense(&poll_n(&mut consumer, 3).await, 0, 10, 13);
}

#[tokio::test]
async fn no_reset_policy_without_a_position_is_an_error() {
    let fake = Fake::start(1).await;
    let mut consumer = Consumer::new(fake.config(OffsetReset::None)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    match consumer.poll(Duration::from_millis(50)).await {
        Err(ConsumerError::NoOffset(p)) => assert_eq!(p, tp(0)),
        other => panic!("expected NoOffset, got {other:?}"),
    }
    consumer.seek(&tp(0), SeekTo::Beginning).unwrap();
    assert_eq!(settle(&mut consumer, &tp(0)).await, Offset::ZERO);
}

#[tokio::test]
async fn offset_out_of_range_resets_to_the_policy() {
    let fake = Fake::start(1).await;
    // Retention removed offsets below 5.
    fake.with(|s| {
        let log = s.partitions.get_mut(&0).unwrap();
        log.fill(0, 10, 5);
        log.log_start = 5;
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(2))).unwrap();
    assert_dense(&poll_n(&mut consumer, 5).await, 0, 5, 10);

    // Beyond the end resets too.
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(50))).unwrap();
    assert_dense(&poll_n(&mut consumer, 5).await, 0, 5, 10);
}

#[tokio::test]
async fn offset_out_of_range_without_policy_is_an_error_that_keeps_the_position() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        let log = s.partitions.get_mut(&0).unwrap();
        log.fill(0, 10, 5);
        log.log_start = 5;
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::None)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(2))).unwrap();
    for _ in 0..2 {
        let (before, err) = poll_err(&mut consumer).await;
        assert!(before.is_empty());
        match err {
            ConsumerError::OffsetOutOfRange { partition, offset } => {
                assert_eq!((partition, offset), (tp(0), Offset::new(2)));
            }
            other => panic!("expected OffsetOutOfRange, got {other:?}"),
        }
        assert_eq!(consumer.position(&tp(0)), Some(Offset::new(2)));
    }
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(7))).unwrap();
    assert_dense(&poll_n(&mut consumer, 3).await, 0, 7, 10);
}

#[tokio::test]
async fn seek_by_timestamp_finds_the_first_record_at_or_after_it() {
    let fake = Fake::start(1).await;
    fake.with(|s| s.partitions.get_mut(&0).unwrap().fill(0, 30, 4));
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    consumer.seek(&tp(0), SeekTo::Timestamp(BASE_TS + 13)).unwrap();
    assert_eq!(consumer.position(&tp(0)), None, "resolved by the next poll");
    assert_dense(&poll_n(&mut consumer, 17).await, 0, 13, 30);

    // After the last record: the end.
    consumer.seek(&tp(0), SeekTo::Timestamp(BASE_TS + 1_000)).unwrap();
    assert_eq!(consumer.position(&tp(0)), None);
    assert_eq!(settle(&mut consumer, &tp(0)).await, Offset::new(30));

    assert!(matches!(
        consumer.seek(&tp(0), SeekTo::Timestamp(-5)),
        Err(ConsumerError::InvalidArgument(_))
    ));
    assert!(matches!(
        consumer.seek(&tp(3), SeekTo::Beginning),
        Err(ConsumerError::NotAssigned(p)) if p == tp(3)
    ));
}

#[tokio::test]
async fn batches_cut_by_the_partition_limit_are_neither_skipped_nor_repeated() {
    let fake = Fake::start(2).await;
    fake.with(|s| {
        s.cut_at_limit = true;
        for (p, log) in s.partitions.iter_mut() {
            log.fill(*p, 300, 9);
        }
    });
    // Small enough that most responses end in a partial batch.
    let config =
        fake.builder(OffsetReset::Earliest).max_partition_fetch_bytes(500).build().unwrap();
    let mut consumer = Consumer::new(config).await.unwrap();
    consumer.assign(vec![tp(0), tp(1)]);
    let records = poll_n(&mut consumer, 600).await;
    assert_dense(&records, 0, 0, 300);
    assert_dense(&records, 1, 0, 300);
}

#[tokio::test]
async fn a_batch_larger_than_the_partition_limit_raises_the_limit() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        s.cut_at_limit = true;
        let log = s.partitions.get_mut(&0).unwrap();
        log.fill(0, 2, 2);
        log.fill(0, 100, 100); // one big batch
        log.fill(0, 2, 2);
    });
    let config =
        fake.builder(OffsetReset::Earliest).max_partition_fetch_bytes(200).build().unwrap();
    let mut consumer = Consumer::new(config).await.unwrap();
    consumer.assign(vec![tp(0)]);
    assert_dense(&poll_n(&mut consumer, 104).await, 0, 0, 104);
}

#[tokio::test]
async fn a_corrupt_batch_is_an_error_until_the_application_seeks_past_it() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        let log = s.partitions.get_mut(&0).unwrap();
        log.fill(0, 5, 5);
        log.fill(0, 5, 5);
        log.fill(0, 5, 5);
        let (_, bad) = &mut log.batches[1];
        let mut bytes = bad.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        *bad = Bytes::from(bytes);
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    let (before, err) = poll_err(&mut consumer).await;
    assert_dense(&before, 0, 0, 5);
    match err {
        ConsumerError::Corrupt { partition, offset, .. } => {
            assert_eq!((partition, offset), (tp(0), Offset::new(5)));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(consumer.position(&tp(0)), Some(Offset::new(5)));
    // Never skipped silently: the next poll meets it again.
    let (again, err) = poll_err(&mut consumer).await;
    assert!(again.is_empty());
    assert!(matches!(err, ConsumerError::Corrupt { .. }));
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(10))).unwrap();
    assert_dense(&poll_n(&mut consumer, 5).await, 0, 10, 15);
}

#[tokio::test]
async fn retriable_errors_are_retried_after_a_metadata_refresh() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        s.partitions.get_mut(&0).unwrap().fill(0, 20, 5);
        s.fetch_errors.insert(
            0,
            vec![
                ErrorCode::NotLeaderOrFollower,
                ErrorCode::LeaderNotAvailable,
                ErrorCode::RequestTimedOut,
            ],
        );
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    let metadata_before = fake.stats.metadata_calls.load(Ordering::SeqCst);
    consumer.assign(vec![tp(0)]);
    assert_dense(&poll_n(&mut consumer, 20).await, 0, 0, 20);
    assert!(fake.stats.metadata_calls.load(Ordering::SeqCst) > metadata_before);
}

#[tokio::test]
async fn a_partition_without_leader_waits_for_one() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        s.partitions.get_mut(&0).unwrap().fill(0, 4, 4);
        s.leader = -1;
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    consumer.seek(&tp(0), SeekTo::Offset(Offset::ZERO)).unwrap();
    assert!(consumer.poll(Duration::from_millis(100)).await.unwrap().is_empty());
    fake.with(|s| s.leader = 1);
    assert_dense(&poll_n(&mut consumer, 4).await, 0, 0, 4);
}

#[tokio::test]
async fn non_retriable_broker_errors_reach_the_application() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        s.partitions.get_mut(&0).unwrap().fill(0, 4, 4);
        s.fetch_errors.insert(0, vec![ErrorCode::InvalidFetchSize]);
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    let (_, err) = poll_err(&mut consumer).await;
    assert!(
        matches!(err, ConsumerError::Broker { code: ErrorCode::InvalidFetchSize, .. }),
        "{err:?}"
    );
    assert_dense(&poll_n(&mut consumer, 4).await, 0, 0, 4);
}

#[tokio::test]
async fn seek_discards_buffered_records_and_rereads() {
    let fake = Fake::start(1).await;
    fake.with(|s| s.partitions.get_mut(&0).unwrap().fill(0, 50, 50));
    let config = fake.builder(OffsetReset::Earliest).max_poll_records(10).build().unwrap();
    let mut consumer = Consumer::new(config).await.unwrap();
    consumer.assign(vec![tp(0)]);
    assert_dense(&poll_n(&mut consumer, 10).await, 0, 0, 10);
    assert_eq!(consumer.position(&tp(0)), Some(Offset::new(10)));
    consumer.seek(&tp(0), SeekTo::Offset(Offset::new(3))).unwrap();
    assert_dense(&poll_n(&mut consumer, 47).await, 0, 3, 50);
    consumer.seek(&tp(0), SeekTo::Beginning).unwrap();
    assert_dense(&poll_n(&mut consumer, 50).await, 0, 0, 50);
}

#[tokio::test]
async fn the_next_fetch_is_sent_before_the_application_polls_again() {
    let fake = Fake::start(1).await;
    fake.with(|s| s.partitions.get_mut(&0).unwrap().fill(0, 10, 10));
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    poll_n(&mut consumer, 10).await;
    let fetched = fake.stats.fetches.load(Ordering::SeqCst);
    // The application is busy: no poll. The prefetch still reaches the broker.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while fake.stats.fetches.load(Ordering::SeqCst) == fetched {
        assert!(tokio::time::Instant::now() < give_up, "no prefetch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Records that arrive meanwhile are in the prefetched response or the next one.
    fake.with(|s| s.partitions.get_mut(&0).unwrap().fill(0, 3, 3));
    assert_dense(&poll_n(&mut consumer, 3).await, 0, 10, 13);
}

#[tokio::test]
async fn reassigning_keeps_positions_of_partitions_that_stay() {
    let fake = Fake::start(2).await;
    fake.with(|s| {
        for (p, log) in s.partitions.iter_mut() {
            log.fill(*p, 20, 20);
        }
    });
    let config = fake.builder(OffsetReset::Earliest).max_poll_records(5).build().unwrap();
    let mut consumer = Consumer::new(config).await.unwrap();
    consumer.assign(vec![tp(0)]);
    assert_dense(&poll_n(&mut consumer, 5).await, 0, 0, 5);
    consumer.assign(vec![tp(0), tp(1)]);
    let records = poll_n(&mut consumer, 35).await;
    assert_dense(&records, 0, 5, 20);
    assert_dense(&records, 1, 0, 20);
    consumer.assign(vec![tp(1)]);
    assert_eq!(consumer.position(&tp(0)), None);
    assert!(consumer.poll(Duration::from_millis(50)).await.unwrap().is_empty());
}

#[tokio::test]
async fn compressed_batches_are_decoded() {
    let fake = Fake::start(1).await;
    fake.with(|s| {
        let log = s.partitions.get_mut(&0).unwrap();
        for codec in Compression::ALL {
            let values: Vec<String> = (log.end..log.end + 10).map(|o| format!("p0-{o}")).collect();
            let records: Vec<(i64, &str)> = values.iter().map(|v| (BASE_TS, v.as_str())).collect();
            log.append(&records, codec);
        }
    });
    let mut consumer = Consumer::new(fake.config(OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![tp(0)]);
    let n = 10 * Compression::ALL.len() as i64;
    assert_dense(&poll_n(&mut consumer, n as usize).await, 0, 0, n);
}

#[tokio::test]
async fn invalid_configuration_is_rejected_before_connecting() {
    let built = ConsumerConfig::builder("127.0.0.1:1").max_poll_records(0).build();
    assert!(matches!(built, Err(ConsumerError::InvalidConfig(_))));
    // A config changed after it was built is checked again by the consumer.
    let mut config = ConsumerConfig::new("127.0.0.1:1");
    config.max_poll_records = 0;
    assert!(matches!(Consumer::new(config).await, Err(ConsumerError::InvalidConfig(_))));
}
