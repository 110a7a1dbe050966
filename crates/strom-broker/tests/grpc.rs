//! The broker through its gRPC API: an in-process server on port 0, the generated clients,
//! hand-built batches. Topic administration, produce/fetch round trips, long polls, every
//! error path the brief names, restart and retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{
    HANG_GUARD, Harness, batch, batch_at, by_name, config, fetch_request, now_ms, records,
};
use strom_broker::{BrokerError, BrokerServer};
use strom_format::{Batches, CRC_START, LeaderEpoch};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_describe_delete_topics() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;

    h.create("orders", 3, &[("retention.ms", "60000")]).await;
    let again = h.create_result("__consumer_offsets", 2, &[]).await;
    assert_eq!(again.error_code(), ErrorCode::TopicAlreadyExists, "the broker created it");
    h.create("defaulted", -1, &[]).await;

    let public = by_name(&h.list(false).await);
    assert_eq!(public.len(), 2, "{public:?}");
    assert_eq!(public["orders"], 3);
    assert_eq!(public["defaulted"], 1, "-1 partitions means the broker default");
    let all = h.list(true).await;
    let internal = all.iter().find(|t| t.name == "__consumer_offsets").expect("internal listed");
    assert!(internal.internal);
    assert_eq!(internal.num_partitions, 3, "offsets_topic_num_partitions");
    assert_eq!(all.len(), 3);

    let d = h.describe("orders").await;
    assert_eq!(d.error_code(), ErrorCode::None);
    assert!(!d.internal);
    assert_eq!(d.partitions.len(), 3);
    for (i, p) in d.partitions.iter().enumerate() {
        assert_eq!(p.partition, i as i32);
        assert_eq!((p.leader, p.replicas.as_slice(), p.isr.as_slice()), (1, &[1][..], &[1][..]));
        assert_eq!((p.log_start_offset, p.high_watermark), (0, 0));
    }
    assert_eq!(d.configs["retention.ms"], "60000");
    assert_eq!(d.configs["max.message.bytes"], "1048588");
    for p in 0..3 {
        assert!(dir.path().join(format!("orders-{p}")).is_dir());
    }
    assert!(dir.path().join("quorum").is_dir(), "metadata lives in the quorum directory");

    let meta = h
        .admin
        .metadata(pb::MetadataRequest { topics: vec!["orders".into(), "missing".into()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.controller_id, 1);
    assert_eq!(meta.brokers.len(), 1);
    assert_eq!(meta.brokers[0].port, i32::from(h.server.local_addr().port()));
    assert_eq!(meta.brokers[0].host, "127.0.0.1");
    assert!(!meta.cluster_id.is_empty());
    assert_eq!(meta.topics[0].partitions.len(), 3);
    assert!(meta.topics[0].partitions.iter().all(|p| p.leader_id == 1));
    assert_eq!(meta.topics[1].error_code(), ErrorCode::UnknownTopicOrPartition);
    let everything = h.admin.metadata(pb::MetadataRequest::default()).await.unwrap().into_inner();
    assert_eq!(everything.topics.len(), 3);

    h.produce_ok("orders", 1, batch(&["a"])).await;
    let deleted = h.delete("orders").await;
    assert_eq!(deleted.error_code(), ErrorCode::None, "{}", deleted.error_message);
    for p in 0..3 {
        assert!(!dir.path().join(format!("orders-{p}")).exists(), "partition dir {p} removed");
    }
    assert!(!by_name(&h.list(true).await).contains_key("orders"));
    assert_eq!(h.describe("orders").await.error_code(), ErrorCode::UnknownTopicOrPartition);
    assert_eq!(h.fetch("orders", 1, 0).await.error_code(), ErrorCode::UnknownTopicOrPartition);

    // The name is free again, and the new topic starts empty.
    h.create("orders", 1, &[]).await;
    assert_eq!(h.fetch("orders", 0, 0).await.high_watermark, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_admin_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 2, &[]).await;

    let code = |r: pb::TopicResult| r.error_code();
    assert_eq!(code(h.create_result("t", 2, &[]).await), ErrorCode::TopicAlreadyExists);
    for bad in ["", ".", "..", "bad/name", "white space", &"x".repeat(250)] {
        assert_eq!(code(h.create_result(bad, 1, &[]).await), ErrorCode::InvalidTopicException);
    }
    for n in [0, -2, 10_001] {
        assert_eq!(code(h.create_result("p", n, &[]).await), ErrorCode::InvalidPartitions, "{n}");
    }
    for bad in [
        ("retention.ms", "soon"),
        ("segment.bytes", "0"),
        ("cleanup.policy", "compacted"),
        ("unknown.setting", "1"),
    ] {
        let r = h.create_result("c", 1, &[bad]).await;
        assert_eq!(r.error_code(), ErrorCode::InvalidConfig, "{bad:?}");
        assert!(!r.error_message.is_empty());
    }
    let rf = pb::CreateTopicsRequest {
        topics: vec![pb::NewTopic {
            name: "rf".into(),
            num_partitions: 1,
            replication_factor: 3,
            configs: Default::default(),
        }],
        validate_only: false,
    };
    let r = h.admin.create_topics(rf).await.unwrap().into_inner().topics.remove(0);
    assert_eq!(r.error_code(), ErrorCode::InvalidReplicationFactor);

    let validate = pb::CreateTopicsRequest {
        topics: vec![pb::NewTopic { name: "v".into(), num_partitions: 4, ..Default::default() }],
        validate_only: true,
    };
    let r = h.admin.create_topics(validate).await.unwrap().into_inner().topics.remove(0);
    assert_eq!(r.error_code(), ErrorCode::None);
    assert_eq!(code(h.delete("nope").await), ErrorCode::UnknownTopicOrPartition);

    let names = by_name(&h.list(false).await);
    assert_eq!(names.keys().collect::<Vec<_>>(), ["t"], "failed creates left nothing behind");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_fetch_returns_the_same_batches_with_dense_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 2, &[]).await;

    let sent = [batch(&["a", "b", "c"]), batch(&["d"]), batch(&["e", "f"])];
    let mut expected_base = 0;
    for (acks, b) in [0, 1, -1].into_iter().zip(&sent) {
        let r = h.produce_acks("t", 1, b.clone(), acks).await;
        assert_eq!(r.error_code(), ErrorCode::None, "acks={acks}: {}", r.error_message);
        assert_eq!(r.base_offset, expected_base);
        assert_eq!((r.log_start_offset, r.log_append_time_ms), (0, -1));
        expected_base +=
            Batches::new(b.clone()).map(|b| b.unwrap().records_count()).sum::<i32>() as i64;
    }

    let f = h.fetch("t", 1, 0).await;
    assert_eq!(f.error_code(), ErrorCode::None);
    assert_eq!((f.high_watermark, f.log_start_offset), (6, 0));
    let got: Vec<_> = records(&f.records);
    let want: Vec<_> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    assert_eq!(got, want);
    // Byte for byte what was sent, but for the offset and leader epoch the leader stamped.
    let stored: Vec<_> = Batches::new(f.records.clone()).map(|b| b.unwrap().into_bytes()).collect();
    assert_eq!(stored.len(), sent.len());
    for (s, w) in stored.iter().zip(&sent) {
        assert_eq!(s[CRC_START..], w[CRC_START..]);
    }
    for b in Batches::new(f.records.clone()) {
        assert_eq!(
            b.unwrap().partition_leader_epoch(),
            LeaderEpoch::new(0),
            "leader stamps its epoch"
        );
    }

    // From the middle of a batch: the whole batch holding the offset comes back.
    let f = h.fetch("t", 1, 4).await;
    assert_eq!(records(&f.records).first().map(|r| r.0), Some(4));
    let f = h.fetch("t", 1, 1).await;
    assert_eq!(records(&f.records).first().map(|r| r.0), Some(0));

    // The other partition is untouched.
    let f = h.fetch("t", 0, 0).await;
    assert_eq!((f.error_code(), f.high_watermark, f.records.len()), (ErrorCode::None, 0, 0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_offsets_at_and_beyond_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    h.produce_ok("t", 0, batch(&["a", "b"])).await;

    let at_end = h.fetch("t", 0, 2).await;
    assert_eq!(at_end.error_code(), ErrorCode::None);
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.high_watermark, 2);

    for offset in [3, 1_000_000, -1] {
        let f = h.fetch("t", 0, offset).await;
        assert_eq!(f.error_code(), ErrorCode::OffsetOutOfRange, "offset {offset}");
        assert!(f.records.is_empty());
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_partitions_are_reported_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 2, &[]).await;

    for (topic, p) in [("nope", 0), ("t", 2), ("t", -1)] {
        let r = h.produce(topic, p, batch(&["x"])).await;
        assert_eq!(r.error_code(), ErrorCode::UnknownTopicOrPartition, "{topic}-{p}");
        assert!(r.error_message.contains(topic));
        assert_eq!(h.fetch(topic, p, 0).await.error_code(), ErrorCode::UnknownTopicOrPartition);
        let l = h.list_offset(topic, p, -1).await;
        assert_eq!(l.error_code(), ErrorCode::UnknownTopicOrPartition);
    }

    // A bad partition fails alone; the rest of the request goes through.
    let answers = h.fetch_with(fetch_request(&[("t", 0, 0), ("nope", 0, 0)], 0, 0, 0)).await;
    assert_eq!(answers[0].error_code(), ErrorCode::None);
    assert_eq!(answers[1].error_code(), ErrorCode::UnknownTopicOrPartition);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 2, &[]).await;

    // Parked on both partitions with a wait far longer than the hang guard: only an append can
    // answer it in time.
    let mut client = h.broker.clone();
    let parked = tokio::spawn(async move {
        let request = fetch_request(&[("t", 0, 0), ("t", 1, 0)], 600_000, 1, 0);
        client.fetch(request).await.unwrap().into_inner()
    });
    common::parked(&h, 1).await;
    assert!(!parked.is_finished(), "answered before any data existed");
    h.produce_ok("t", 1, batch(&["wake up"])).await;

    let answer = tokio::time::timeout(HANG_GUARD, parked).await.expect("woken").unwrap();
    let parts: Vec<_> = answer.topics.into_iter().flat_map(|t| t.partitions).collect();
    assert_eq!(parts.len(), 2);
    assert!(parts[0].records.is_empty());
    assert_eq!(records(&parts[1].records), [(0, "wake up".to_string())]);
    assert_eq!(parts[1].high_watermark, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_completes_once_the_partitions_together_hold_min_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 3, &[]).await;
    let small = batch(&["s"]);
    let big = batch(&["x".repeat(2000).as_str()]);
    // More than the small batch, less than both: neither append alone completes the fetch.
    let min_bytes = (small.len() + 1000) as u32;

    let mut client = h.broker.clone();
    let parked = tokio::spawn(async move {
        let request =
            fetch_request(&[("t", 0, 0), ("t", 1, 0), ("t", 2, 0)], 600_000, min_bytes, 0);
        client.fetch(request).await.unwrap().into_inner()
    });
    common::parked(&h, 1).await;
    h.produce_ok("t", 0, small).await;
    // Still parked (the wake found too little and did not answer)...
    assert_eq!(h.server.broker().parked_fetches(), 1);
    // ...until a second partition brings the total over min_bytes: answered long before the
    // 10-minute wait, with both partitions' records read in one go.
    h.produce_ok("t", 2, big).await;
    let answer = tokio::time::timeout(HANG_GUARD, parked).await.expect("woken").unwrap();
    let parts: Vec<_> = answer.topics.into_iter().flat_map(|t| t.partitions).collect();
    assert_eq!(records(&parts[0].records), [(0, "s".to_string())]);
    assert!(parts[1].records.is_empty());
    assert_eq!(records(&parts[2].records).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_after_max_wait_without_enough_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;

    // Nothing at all: an empty answer once the wait is over, not an error.
    let empty = h.fetch_with(fetch_request(&[("t", 0, 0)], 300, 1, 0)).await.remove(0);
    assert_eq!(empty.error_code(), ErrorCode::None);
    assert!(empty.records.is_empty());

    // Less than min_bytes: what there is, after the wait.
    h.produce_ok("t", 0, batch(&["small"])).await;
    let some = h.fetch_with(fetch_request(&[("t", 0, 0)], 300, 1 << 20, 0)).await.remove(0);
    assert_eq!(records(&some.records), [(0, "small".to_string())]);

    // A wait above the cap is cut to the cap.
    let capped_dir = tempfile::tempdir().unwrap();
    let mut capped = config(capped_dir.path());
    capped.fetch_max_wait_ms = 100;
    let mut c = Harness::start(capped).await;
    c.create("t", 1, &[]).await;
    let r = c.fetch_with(fetch_request(&[("t", 0, 0)], u32::MAX, 1, 0)).await.remove(0);
    assert!(r.records.is_empty());
    c.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_respects_byte_limits_but_always_returns_a_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 2, &[]).await;
    let big = "x".repeat(1000);
    for p in 0..2 {
        for _ in 0..3 {
            h.produce_ok("t", p, batch(&[&big])).await;
        }
    }
    let one_batch = batch(&[&big]).len();

    // A response limit smaller than one batch: exactly the first batch, nothing else.
    let answers = h.fetch_with(fetch_request(&[("t", 0, 0), ("t", 1, 0)], 0, 0, 10)).await;
    assert_eq!(records(&answers[0].records).len(), 1);
    assert!(answers[1].records.is_empty());
    assert_eq!(answers[1].high_watermark, 3);

    // Room for two batches: two, and none for the next partition.
    let limit = (2 * one_batch + 10) as u32;
    let answers = h.fetch_with(fetch_request(&[("t", 0, 0), ("t", 1, 0)], 0, 0, limit)).await;
    let total: usize = answers.iter().map(|a| a.records.len()).sum();
    assert!(total <= limit as usize);
    assert_eq!(records(&answers[0].records).len(), 2);

    // A partition limit smaller than a batch still yields that partition's first batch when
    // it comes first.
    let mut request = fetch_request(&[("t", 0, 0)], 0, 0, 0);
    request.topics[0].partitions[0].partition_max_bytes = 1;
    let answer = h.fetch_with(request).await.remove(0);
    assert_eq!(records(&answer.records).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batch_is_message_too_large_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("small", 1, &[("max.message.bytes", "1000")]).await;
    h.create("default", 1, &[]).await;

    let too_big = batch(&[&"x".repeat(2000)]);
    let r = h.produce("small", 0, too_big).await;
    assert_eq!(r.error_code(), ErrorCode::MessageTooLarge, "{}", r.error_message);
    let huge = batch(&[&"y".repeat(1_100_000)]);
    let r = h.produce("default", 0, huge).await;
    assert_eq!(r.error_code(), ErrorCode::MessageTooLarge, "{}", r.error_message);

    // Nothing was appended, and small batches still go in at offset 0.
    assert_eq!(h.list_offset("small", 0, -1).await.offset, 0);
    assert_eq!(h.produce_ok("small", 0, batch(&["ok"])).await, 0);
    assert_eq!(h.produce_ok("default", 0, batch(&["ok"])).await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_crc_is_rejected_and_the_log_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    h.produce_ok("t", 0, batch(&["before"])).await;

    let good = batch(&["a", "b"]);
    let mut bad = BytesMut::from(&good[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let r = h.produce("t", 0, bad.freeze()).await;
    assert_eq!(r.error_code(), ErrorCode::CorruptMessage, "{}", r.error_message);

    // A good batch followed by a corrupt one: all or nothing.
    let mut mixed = BytesMut::from(&good[..]);
    let mut corrupt = BytesMut::from(&good[..]);
    corrupt[CRC_START + 5] ^= 0x01;
    mixed.extend_from_slice(&corrupt);
    let r = h.produce("t", 0, mixed.freeze()).await;
    assert_eq!(r.error_code(), ErrorCode::CorruptMessage, "{}", r.error_message);

    assert_eq!(h.list_offset("t", 0, -1).await.offset, 1);
    assert_eq!(records(&h.fetch("t", 0, 0).await.records), [(0, "before".to_string())]);
    assert_eq!(h.produce_ok("t", 0, good).await, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_records_get_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;

    let good = batch(&["a"]);
    let mut huge_length = BytesMut::from(&good[..]);
    huge_length[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut negative_length = BytesMut::from(&good[..]);
    negative_length[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    let mut bad_magic = BytesMut::from(&good[..]);
    bad_magic[16] = 1;
    let garbage: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(b"hello, broker"),
        Bytes::from(vec![0xff; 4096]),
        Bytes::from(vec![0; 100]),
        good.slice(..good.len() - 3),
        good.slice(..20),
        huge_length.freeze(),
        negative_length.freeze(),
        bad_magic.freeze(),
        {
            let mut trailing = BytesMut::from(&good[..]);
            trailing.extend_from_slice(b"junk");
            trailing.freeze()
        },
    ];
    for (i, g) in garbage.into_iter().enumerate() {
        let r = h.produce("t", 0, g).await;
        assert_ne!(r.error_code(), ErrorCode::None, "garbage #{i} accepted");
        assert!(
            matches!(r.error_code(), ErrorCode::CorruptMessage | ErrorCode::MessageTooLarge),
            "garbage #{i}: {:?} {}",
            r.error_code(),
            r.error_message
        );
    }
    assert_eq!(h.list_offset("t", 0, -1).await.offset, 0);
    assert_eq!(h.produce_ok("t", 0, good).await, 0);

    // Invalid acks: every partition refused, nothing appended.
    let r = h.produce_acks("t", 0, batch(&["x"]), 2).await;
    assert_eq!(r.error_code(), ErrorCode::InvalidRequiredAcks);
    assert_eq!(h.list_offset("t", 0, -1).await.offset, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;

    let empty = h.list_offset("t", 0, -2).await;
    assert_eq!((empty.error_code(), empty.offset), (ErrorCode::None, 0));
    assert_eq!(h.list_offset("t", 0, -1).await.offset, 0);
    assert_eq!(h.list_offset("t", 0, 0).await.offset, -1);

    h.produce_ok("t", 0, batch_at(1_000, &["a", "b"])).await; // offsets 0, 1
    h.produce_ok("t", 0, batch_at(2_000, &["c"])).await; // offset 2
    h.produce_ok("t", 0, batch_at(3_000, &["d", "e"])).await; // offsets 3, 4

    assert_eq!(h.list_offset("t", 0, -2).await.offset, 0);
    assert_eq!(h.list_offset("t", 0, -1).await.offset, 5);
    let by_ts = |r: pb::ListOffsetsPartitionResponse| (r.error_code(), r.offset, r.timestamp);
    assert_eq!(by_ts(h.list_offset("t", 0, 0).await), (ErrorCode::None, 0, 1_000));
    assert_eq!(by_ts(h.list_offset("t", 0, 1_500).await), (ErrorCode::None, 2, 2_000));
    assert_eq!(by_ts(h.list_offset("t", 0, 2_000).await), (ErrorCode::None, 2, 2_000));
    assert_eq!(by_ts(h.list_offset("t", 0, 3_000).await), (ErrorCode::None, 3, 3_000));
    assert_eq!(by_ts(h.list_offset("t", 0, 3_001).await), (ErrorCode::None, -1, -1));
    assert_eq!(h.list_offset("t", 0, -7).await.error_code(), ErrorCode::InvalidRequest);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_topics_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("kept", 2, &[("retention.ms", "-1")]).await;
    h.create("gone", 1, &[]).await;
    for i in 0..10 {
        h.produce_ok("kept", i % 2, batch(&[&format!("v{i}")])).await;
    }
    assert_eq!(h.delete("gone").await.error_code(), ErrorCode::None);
    h.stop().await;
    for p in 0..2 {
        let marker = dir.path().join(format!("kept-{p}")).join(".clean-shutdown");
        assert!(marker.exists(), "log {p} closed cleanly");
    }

    // A broker on the same data directory cannot start while another runs.
    let first = BrokerServer::start(config(dir.path())).await.unwrap();
    let second = BrokerServer::start(config(dir.path())).await;
    assert!(matches!(second, Err(BrokerError::DataDirLocked(_))), "{second:?}");
    first.shutdown().await.unwrap();

    let mut h = Harness::start(config(dir.path())).await;
    assert_eq!(by_name(&h.list(false).await), [("kept".to_string(), 2)].into_iter().collect());
    assert_eq!(h.describe("kept").await.configs["retention.ms"], "-1");
    for p in 0..2 {
        let f = h.fetch("kept", p, 0).await;
        assert_eq!(f.high_watermark, 5);
        let values: Vec<_> = records(&f.records).into_iter().map(|r| r.1).collect();
        let want: Vec<_> = (0..10).filter(|i| i % 2 == p).map(|i| format!("v{i}")).collect();
        assert_eq!(values, want);
    }
    assert_eq!(h.produce_ok("kept", 0, batch(&["after"])).await, 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.log_retention_check_interval_ms = 50;
    let mut h = Harness::start(cfg).await;
    // Tiny segments: every batch rolls a new one.
    h.create("by-time", 1, &[("segment.bytes", "100"), ("retention.ms", "60000")]).await;
    h.create("by-size", 1, &[("segment.bytes", "100"), ("retention.bytes", "1")]).await;
    h.create("forever", 1, &[("segment.bytes", "100"), ("retention.ms", "-1")]).await;

    let ancient = now_ms() - 3_600_000;
    for i in 0..5 {
        let v = format!("v{i}");
        h.produce_ok("by-time", 0, batch_at(ancient, &[&v])).await;
        h.produce_ok("by-size", 0, batch(&[&v])).await;
        h.produce_ok("forever", 0, batch_at(ancient, &[&v])).await;
    }

    // The background task must get there on its own.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    for topic in ["by-time", "by-size"] {
        loop {
            let earliest = h.list_offset(topic, 0, -2).await.offset;
            if earliest > 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{topic}: retention never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Old offsets are gone; the newest records are still readable.
        let f = h.fetch(topic, 0, 0).await;
        assert_eq!(f.error_code(), ErrorCode::OffsetOutOfRange);
        assert!(f.log_start_offset > 0, "out of range answers carry the log start offset");
        let start = h.list_offset(topic, 0, -2).await.offset;
        let tail = h.fetch(topic, 0, start).await;
        assert_eq!(tail.error_code(), ErrorCode::None);
        assert_eq!(
            records(&tail.records).last().map(|r| r.0),
            Some(4),
            "{topic} from {start}: {tail:?}"
        );
        assert_eq!(h.list_offset(topic, 0, -1).await.offset, 5);
    }
    assert_eq!(h.list_offset("forever", 0, -2).await.offset, 0);
    // One fetch reads on across the segment boundaries.
    let all = h.fetch("forever", 0, 0).await;
    let offsets: Vec<_> = records(&all.records).into_iter().map(|r| r.0).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_parked_fetches_and_closes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    h.produce_ok("t", 0, batch(&["x"])).await;

    let mut client = h.broker.clone();
    let parked =
        tokio::spawn(
            async move { client.fetch(fetch_request(&[("t", 0, 1)], 600_000, 1, 0)).await },
        );
    common::parked(&h, 1).await;
    // Shutdown must not wait out the fetch's ten-minute wait.
    h.stop().await;
    let answer = tokio::time::timeout(HANG_GUARD, parked).await.expect("fetch answered").unwrap();
    if let Ok(answer) = answer {
        let p = &answer.get_ref().topics[0].partitions[0];
        assert!(p.records.is_empty());
    }

    let mut h = Harness::start(config(dir.path())).await;
    assert_eq!(records(&h.fetch("t", 0, 0).await.records), [(0, "x".to_string())]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_auto_creates_topics_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auto_create_topics = true;
    cfg.num_partitions = 3;
    let mut h = Harness::start(cfg).await;
    let meta = h
        .admin
        .metadata(pb::MetadataRequest { topics: vec!["auto".into(), "bad/name".into()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.topics[0].error_code(), ErrorCode::None);
    assert_eq!(meta.topics[0].partitions.len(), 3);
    assert_eq!(meta.topics[1].error_code(), ErrorCode::InvalidTopicException);
    assert_eq!(h.produce_ok("auto", 2, batch(&["x"])).await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_get_dense_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    const PRODUCERS: usize = 8;
    const BATCHES: usize = 40;

    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            let mut client = h.broker.clone();
            tokio::spawn(async move {
                let mut bases = Vec::new();
                for i in 0..BATCHES {
                    let request = pb::ProduceRequest {
                        acks: 1,
                        timeout_ms: 1000,
                        topics: vec![pb::TopicProduceData {
                            name: "t".into(),
                            partitions: vec![pb::PartitionProduceData {
                                partition: 0,
                                records: batch(&[&format!("{w}-{i}-a"), &format!("{w}-{i}-b")]),
                            }],
                        }],
                    };
                    let response = client.produce(request).await.unwrap().into_inner();
                    let p = &response.topics[0].partitions[0];
                    assert_eq!(p.error_code(), ErrorCode::None, "{}", p.error_message);
                    bases.push(p.base_offset);
                }
                bases
            })
        })
        .collect();
    let mut bases = Vec::new();
    for t in tasks {
        let mine = tokio::time::timeout(HANG_GUARD, t).await.unwrap().unwrap();
        // One producer's appends land in the order it sent them.
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        bases.extend(mine);
    }
    bases.sort_unstable();
    let want: Vec<i64> = (0..(PRODUCERS * BATCHES) as i64).map(|i| i * 2).collect();
    assert_eq!(bases, want, "every batch got its own two offsets");

    let mut offset = 0;
    let mut seen = std::collections::HashSet::new();
    while offset < (PRODUCERS * BATCHES * 2) as i64 {
        let f = h.fetch("t", 0, offset).await;
        for (o, v) in records(&f.records) {
            if o >= offset {
                assert_eq!(o, offset, "dense offsets");
                assert!(seen.insert(v), "a record appears twice");
                offset += 1;
            }
        }
    }
    assert_eq!(seen.len(), PRODUCERS * BATCHES * 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_answers_fetches_parked_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("doomed", 1, &[]).await;

    let mut client = h.broker.clone();
    let parked = tokio::spawn(async move {
        client.fetch(fetch_request(&[("doomed", 0, 0)], 600_000, 1, 0)).await.unwrap().into_inner()
    });
    common::parked(&h, 1).await;
    assert_eq!(h.delete("doomed").await.error_code(), ErrorCode::None);
    let answer = tokio::time::timeout(HANG_GUARD, parked).await.expect("answered").unwrap();
    let p = &answer.topics[0].partitions[0];
    assert!(
        matches!(p.error_code(), ErrorCode::UnknownTopicOrPartition | ErrorCode::None),
        "{:?}",
        p.error_code()
    );
    assert!(p.records.is_empty());
    assert!(!dir.path().join("doomed-0").exists());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_quorum_data_dir_is_migrated_into_the_metadata_log() {
    use strom_broker::{ClusterMetadata, FileMetadataStore, MetadataStore, PartitionRecord};
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("old", 2, &[("retention.ms", "60000")]).await;
    h.produce_ok("old", 1, batch(&["kept"])).await;
    h.stop().await;

    // What a release before the quorum left: the partition logs and strom-metadata.toml.
    std::fs::remove_dir_all(dir.path().join("quorum")).unwrap();
    std::fs::remove_file(dir.path().join("cluster-id")).unwrap();
    let mut legacy = ClusterMetadata::new();
    legacy.cluster_id = "strom-legacy".into();
    legacy.topics.push(strom_broker::TopicRecord {
        name: "old".into(),
        configs: [("retention.ms".to_string(), "60000".to_string())].into_iter().collect(),
        partitions: (0..2)
            .map(|p| PartitionRecord {
                partition: p,
                leader: 1,
                leader_epoch: 0,
                replicas: vec![1],
                isr: vec![1],
            })
            .collect(),
    });
    FileMetadataStore::new(dir.path()).persist(&legacy).unwrap();

    let mut h = Harness::start(config(dir.path())).await;
    let d = h.describe("old").await;
    assert_eq!(d.error_code(), ErrorCode::None, "{}", d.error_message);
    assert_eq!(d.partitions.len(), 2);
    assert_eq!(d.configs["retention.ms"], "60000");
    let f = h.fetch("old", 1, 0).await;
    assert_eq!(records(&f.records), vec![(0, "kept".to_string())]);
    let meta = h.admin.metadata(pb::MetadataRequest { topics: vec![] }).await.unwrap();
    assert_eq!(meta.into_inner().cluster_id, "strom-legacy", "the cluster id is kept");
    assert!(!dir.path().join("strom-metadata.toml").exists());
    assert!(dir.path().join("strom-metadata.toml.migrated").exists());
    h.stop().await;
    // Migrated once: a restart does not replay the old file.
    let mut h = Harness::start(config(dir.path())).await;
    assert_eq!(h.describe("old").await.partitions.len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_are_altered_as_a_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("settings", 1, &[("retention.ms", "60000")]).await;
    let alter = |set: &[(&str, &str)], delete: &[&str]| pb::AlterConfigsRequest {
        topic: "settings".into(),
        set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        delete: delete.iter().map(|k| k.to_string()).collect(),
        validate_only: false,
    };

    let ok = h
        .admin
        .alter_configs(alter(&[("min.insync.replicas", "1"), ("segment.ms", "3600000")], &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.error_code(), ErrorCode::None, "{}", ok.error_message);
    let d = h.describe("settings").await;
    assert_eq!(d.configs["segment.ms"], "3600000");
    assert_eq!(d.configs["min.insync.replicas"], "1");

    // One bad value refuses the whole change: the good one is not applied either.
    let bad = h
        .admin
        .alter_configs(alter(&[("retention.ms", "1"), ("segment.bytes", "0")], &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bad.error_code(), ErrorCode::InvalidConfig);
    assert_eq!(h.describe("settings").await.configs["retention.ms"], "60000");

    // Removing an override falls back to the broker default.
    let removed = h.admin.alter_configs(alter(&[], &["retention.ms"])).await.unwrap().into_inner();
    assert_eq!(removed.error_code(), ErrorCode::None, "{}", removed.error_message);
    assert_eq!(h.describe("settings").await.configs["retention.ms"], "604800000");

    let unknown = h
        .admin
        .alter_configs(pb::AlterConfigsRequest { topic: "nope".into(), ..alter(&[], &[]) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.error_code(), ErrorCode::UnknownTopicOrPartition);
}

/// Sends raw bytes as a gRPC message and reads the answer's raw bytes: what a broken or
/// hostile client can put on the wire, beyond what the generated client would encode.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw_call(addr: std::net::SocketAddr, path: &'static str, body: Bytes) -> tonic::Status {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
    let mut grpc = tonic::client::Grpc::new(channel.unwrap());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_produce_requests_arrive_whole_and_limits_and_bad_messages_keep_their_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_request_bytes = 2 << 20;
    let mut h = Harness::start(c).await;
    h.create("t", 3, &[]).await;

    // One request of ~1.5 MiB over three partitions, many batches each: the route decodes
    // it from whatever frames it came in, and every byte lands where prost would put it.
    let value = "v".repeat(1000);
    let per_partition: Vec<Bytes> = (0..3)
        .map(|p| {
            let mut all = BytesMut::new();
            for i in 0..50 {
                all.extend_from_slice(&batch(&[&format!("{p}-{i}"), &value, &value, &value]));
            }
            all.freeze()
        })
        .collect();
    let request = pb::ProduceRequest {
        acks: -1,
        timeout_ms: 5000,
        topics: vec![pb::TopicProduceData {
            name: "t".into(),
            partitions: (0..3)
                .map(|p| pb::PartitionProduceData {
                    partition: p,
                    records: per_partition[p as usize].clone(),
                })
                .collect(),
        }],
    };
    let response = h.broker.produce(request).await.unwrap().into_inner();
    for r in &response.topics[0].partitions {
        assert_eq!((r.error_code(), r.base_offset), (ErrorCode::None, 0), "{}", r.error_message);
    }
    for p in 0..3 {
        let f = h.fetch("t", p, 0).await;
        assert_eq!(f.high_watermark, 200);
        let stored: Vec<_> =
            Batches::new(f.records.clone()).map(|b| b.unwrap().into_bytes()).collect();
        let sent: Vec<_> = Batches::new(per_partition[p as usize].clone())
            .map(|b| b.unwrap().into_bytes())
            .collect();
        assert_eq!(stored.len(), sent.len());
        for (s, w) in stored.iter().zip(&sent) {
            assert_eq!(s[CRC_START..], w[CRC_START..]);
        }
    }

    // Over max_request_bytes: OUT_OF_RANGE as from the generated server, nothing appended.
    let over = BytesMut::zeroed(2 << 20).freeze();
    let status = h.broker.produce(pb::ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topics: vec![pb::TopicProduceData {
            name: "t".into(),
            partitions: vec![pb::PartitionProduceData { partition: 0, records: over }],
        }],
    });
    let status = status.await.expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{}", status.message());

    // Bytes that are no ProduceRequest: INTERNAL with prost's reason, the broker unharmed.
    let addr = h.server.local_addr();
    for garbage in [&[0x1a, 0x64, 1, 2][..], &[0xff; 11][..], &[0x08][..]] {
        let status = raw_call(addr, "/strom.v1.Broker/Produce", Bytes::copy_from_slice(garbage));
        let status = status.await;
        assert_eq!(status.code(), tonic::Code::Internal, "{garbage:?}: {}", status.message());
    }
    let status = raw_call(addr, "/strom.v1.Broker/Fetch", Bytes::from_static(&[0xff; 3])).await;
    assert_eq!(status.code(), tonic::Code::Internal, "{}", status.message());
    assert_eq!(h.list_offset("t", 0, -1).await.offset, 200);
    assert_eq!(h.produce_ok("t", 0, batch(&["after"])).await, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_fetch_serves_the_logs_records_and_refuses_another_cluster() {
    use strom_proto::v1::replication_client::ReplicationClient;

    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("t", 1, &[]).await;
    let value = "r".repeat(10_000);
    for i in 0..20 {
        h.produce_ok("t", 0, batch(&[&format!("{i}"), &value])).await;
    }
    let consumer = h.fetch("t", 0, 0).await;
    let url = format!("http://{}", h.server.local_addr());
    let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut client = ReplicationClient::new(channel).max_decoding_message_size(64 << 20);
    let cluster_id = h.server.broker().cluster_id().to_string();
    let request = |cluster_id: String| pb::ReplicaFetchRequest {
        cluster_id,
        replica_id: 2,
        max_wait_ms: 0,
        max_bytes: 64 << 20,
        partitions: vec![pb::ReplicaFetchPartition {
            topic: "t".into(),
            partition: 0,
            fetch_offset: 0,
            last_fetched_epoch: -1,
            current_leader_epoch: 0,
            partition_max_bytes: 64 << 20,
            log_start_offset: 0,
        }],
    };
    let answer = client.replica_fetch(request(cluster_id)).await.unwrap().into_inner();
    assert_eq!(answer.error_code(), ErrorCode::None, "{}", answer.error_message);
    let p = &answer.partitions[0];
    assert_eq!(p.error_code(), ErrorCode::None, "{}", p.error_message);
    assert_eq!((p.log_end_offset, p.records.len()), (40, consumer.records.len()));
    assert_eq!(p.records, consumer.records, "the same batches as a consumer's fetch");
    assert_eq!(records(&p.records).len(), 40);

    let answer = client.replica_fetch(request("another".into())).await.unwrap().into_inner();
    assert_eq!(answer.error_code(), ErrorCode::InconsistentClusterId);
    assert!(answer.partitions.is_empty());
    h.stop().await;
}
