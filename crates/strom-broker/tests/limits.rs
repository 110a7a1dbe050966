//! What one request may cost: partition entries capped and never named twice (Produce and
//! ListOffsets), a batch that expands past its bound refused, all answered quickly and cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, batch, config};
use strom_broker::MAX_REQUEST_PARTITIONS;
use strom_format::{BatchBuilder, Compression};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;

fn produce_request(entries: &[(&str, i32)]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        acks: -1,
        timeout_ms: 5_000,
        topics: entries
            .iter()
            .map(|(t, p)| pb::TopicProduceData {
                name: t.to_string(),
                partitions: vec![pb::PartitionProduceData {
                    partition: *p,
                    records: batch(&["x"]),
                }],
            })
            .collect(),
    }
}

fn codes(r: &pb::ProduceResponse) -> Vec<ErrorCode> {
    r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_named_twice_refuses_the_whole_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 2, &[]).await;

    let r = h.broker.produce(produce_request(&[("t", 0), ("t", 1), ("t", 0)])).await.unwrap();
    assert_eq!(codes(r.get_ref()), [ErrorCode::InvalidRequest; 3]);
    // Nothing was appended anywhere, not even to the partition named once.
    assert_eq!(h.list_offset("t", 0, -1).await.offset, 0);
    assert_eq!(h.list_offset("t", 1, -1).await.offset, 0);

    let list = |entries: &[(&str, i32)]| pb::ListOffsetsRequest {
        topics: entries
            .iter()
            .map(|(t, p)| pb::ListOffsetsTopic {
                name: t.to_string(),
                partitions: vec![pb::ListOffsetsPartition { partition: *p, timestamp: -1 }],
            })
            .collect(),
    };
    let r = h.broker.list_offsets(list(&[("t", 1), ("t", 1)])).await.unwrap().into_inner();
    let codes: Vec<_> =
        r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code())).collect();
    assert_eq!(codes, [ErrorCode::InvalidRequest; 2]);

    // A well-formed request still works.
    let r = h.broker.produce(produce_request(&[("t", 0), ("t", 1)])).await.unwrap();
    assert_eq!(codes_ok(r.get_ref()), 2);
    h.stop().await;
}

fn codes_ok(r: &pb::ProduceResponse) -> usize {
    codes(r).into_iter().filter(|c| *c == ErrorCode::None).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_entries_are_refused_without_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    let names: Vec<String> = (0..100_000).map(|i| format!("topic-{i}")).collect();
    let entries: Vec<(&str, i32)> = names.iter().map(|n| (n.as_str(), 0)).collect();
    let r = h.broker.produce(produce_request(&entries)).await.unwrap().into_inner();
    let codes = codes(&r);
    assert_eq!(codes.len(), 100_000);
    assert!(codes.iter().all(|c| *c == ErrorCode::InvalidRequest));
    assert!(r.topics[0].partitions[0].error_message.contains(&MAX_REQUEST_PARTITIONS.to_string()));
    // The broker is not stuck on it.
    assert_eq!(h.produce_ok("t", 0, batch(&["after"])).await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_expanding_past_its_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("small", 1, &[("max.message.bytes", "10000")]).await;
    // 10 MB of zeros: a few KB compressed, far beyond 64 x max.message.bytes expanded.
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.append(common::now_ms(), None, Some(vec![0u8; 10_000_000].as_slice()), &[]);
    let bomb = b.build().unwrap();
    assert!(bomb.len() < 10_000);
    let r = h.produce("small", 0, bomb).await;
    assert_eq!(r.error_code(), ErrorCode::MessageTooLarge, "{}", r.error_message);
    assert_eq!(h.list_offset("small", 0, -1).await.offset, 0);
    h.stop().await;
}
