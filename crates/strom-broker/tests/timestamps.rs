//! Record timestamps through the gRPC API: the CreateTime bounds (KIP-937), LogAppendTime
//! topics, and topic configs altered on a running broker taking effect without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{HANG_GUARD, Harness, batch_at, config, now_ms};
use strom_format::{Batches, TimestampType};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;

const HOUR: i64 = 3_600_000;

/// (offset, timestamp, timestamp type) of every record in `buf`.
fn stamps(buf: &Bytes) -> Vec<(i64, i64, TimestampType)> {
    let mut out = Vec::new();
    for batch in Batches::new(buf.clone()) {
        let batch = batch.unwrap();
        let kind = batch.attributes().timestamp_type();
        for r in batch.records().unwrap() {
            let r = r.unwrap();
            out.push((r.offset.get(), r.timestamp, kind));
        }
    }
    out
}

async fn alter(h: &mut Harness, topic: &str, set: &[(&str, &str)]) {
    let r = h
        .admin
        .alter_configs(pb::AlterConfigsRequest {
            topic: topic.into(),
            set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            delete: vec![],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_time_outside_the_bounds_is_invalid_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("bounded", 1, &[("message.timestamp.before.max.ms", "60000")]).await;
    h.create("default", 1, &[]).await;

    for (topic, ts) in [("bounded", now_ms() - 10 * 60_000), ("bounded", now_ms() + 2 * HOUR)] {
        let r = h.produce(topic, 0, batch_at(ts, &["late or early"])).await;
        assert_eq!(
            r.error_code(),
            ErrorCode::InvalidTimestamp,
            "{topic} {ts}: {}",
            r.error_message
        );
    }
    // KIP-937's default bounds the future only.
    let r = h.produce("default", 0, batch_at(now_ms() + 2 * HOUR, &["future"])).await;
    assert_eq!(r.error_code(), ErrorCode::InvalidTimestamp, "{}", r.error_message);
    assert_eq!(h.produce_ok("default", 0, batch_at(1_000, &["ancient"])).await, 0);

    // Nothing refused was stored; in-range records go in at offset 0.
    assert_eq!(h.produce_ok("bounded", 0, batch_at(now_ms(), &["now"])).await, 0);
    let d = h.describe("bounded").await;
    assert_eq!(d.configs["message.timestamp.type"], "CreateTime");
    assert_eq!(d.configs["message.timestamp.after.max.ms"], "3600000");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_stamp_every_record_with_the_broker_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    h.create("stamped", 1, &[("message.timestamp.type", "LogAppendTime")]).await;
    let before = now_ms();
    // Producer timestamps do not matter, not even far-future ones; the answer tells the time.
    let r = h.produce("stamped", 0, batch_at(42, &["a", "b"])).await;
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    assert!(r.log_append_time_ms >= before, "{r:?}");
    h.produce_ok("stamped", 0, batch_at(now_ms() + 100 * HOUR, &["c"])).await;
    let after = now_ms();
    let got = stamps(&h.fetch("stamped", 0, 0).await.records);
    assert_eq!(got.len(), 3);
    for (offset, ts, kind) in got {
        assert_eq!(kind, TimestampType::LogAppendTime, "offset {offset}");
        assert!((before..=after).contains(&ts), "offset {offset}: {ts} not in {before}..={after}");
    }
    // Time lookups use the broker's time.
    assert_eq!(h.list_offset("stamped", 0, before).await.offset, 0);

    let bad = h.create_result("bad", 1, &[("message.timestamp.type", "WallClock")]).await;
    assert_eq!(bad.error_code(), ErrorCode::InvalidConfig);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_topic_configs_apply_to_the_running_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.log_retention_check_interval_ms = 50;
    let mut h = Harness::start(cfg).await;
    h.create("live", 1, &[("segment.bytes", "100"), ("retention.ms", "-1")]).await;
    let ancient = now_ms() - HOUR;
    for i in 0..5 {
        h.produce_ok("live", 0, batch_at(ancient, &[&format!("v{i}")])).await;
    }
    assert_eq!(h.list_offset("live", 0, -2).await.offset, 0);

    // Retention shortened on the running broker deletes the old segments, no restart.
    alter(&mut h, "live", &[("retention.ms", "60000")]).await;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while h.list_offset("live", 0, -2).await.offset == 0 {
        assert!(tokio::time::Instant::now() < deadline, "altered retention never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // So does a timestamp policy: a future record refused before is stamped after.
    let future = batch_at(now_ms() + 10 * HOUR, &["future"]);
    let r = h.produce("live", 0, future.clone()).await;
    assert_eq!(r.error_code(), ErrorCode::InvalidTimestamp);
    alter(&mut h, "live", &[("message.timestamp.type", "LogAppendTime")]).await;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let offset = loop {
        let r = h.produce("live", 0, future.clone()).await;
        if r.error_code() == ErrorCode::None {
            break r.base_offset;
        }
        assert_eq!(r.error_code(), ErrorCode::InvalidTimestamp, "{}", r.error_message);
        assert!(tokio::time::Instant::now() < deadline, "altered timestamp type never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let got = stamps(&h.fetch("live", 0, offset).await.records);
    assert_eq!(got.first().map(|g| g.2), Some(TimestampType::LogAppendTime));
    h.stop().await;
}
