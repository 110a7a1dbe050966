//! Compacted topics through the broker: `cleanup.policy=compact` accepted, keyless records
//! refused with INVALID_RECORD, and a topic of many updates of 1,000 keys cleaned down to about
//! one record per key (`STROM_COMPACTION_UPDATES`, 100,000 by default; 1,000,000 by hand).
//! The test runs cleaner passes itself (`Broker::clean_logs`) instead of waiting on a timer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use common::{Harness, config, now_ms};
use strom_format::{BatchBuilder, Batches, Compression};
use strom_proto::v1::ErrorCode;

const KEYS: usize = 1_000;

fn updates() -> usize {
    std::env::var("STROM_COMPACTION_UPDATES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// One batch: `(key, value)`, `None` values are tombstones.
fn batch(records: &[(String, Option<String>)]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    let ts = now_ms();
    for (k, v) in records {
        b.append(ts, Some(k.as_bytes()), v.as_deref().map(str::as_bytes), &[]);
    }
    b.build().unwrap()
}

/// Every record below the high watermark: (offset, key, value).
async fn read_all(h: &mut Harness, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let r = h.fetch(topic, 0, at).await;
        assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
        if r.records.is_empty() {
            assert_eq!(at, r.high_watermark, "a read below the high watermark returns data");
            return out;
        }
        for batch in Batches::new(r.records) {
            let batch = batch.unwrap();
            for record in batch.records().unwrap() {
                let record = record.unwrap();
                if record.offset.get() >= at {
                    let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
                    out.push((
                        record.offset.get(),
                        text(record.key.unwrap()),
                        record.value.map(text),
                    ));
                }
            }
            at = batch.next_offset().get();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_about_one_record_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = strom_broker::BrokerConfig { log_cleaner_enable: false, ..config(dir.path()) };
    let mut h = Harness::start(config).await;
    // segment.ms=1: nearly every produce starts a segment, so all but the last are cleanable.
    let settings =
        [("cleanup.policy", "compact"), ("segment.ms", "1"), ("segment.bytes", "1048576")];
    h.create("compacted", 1, &settings).await;
    let d = h.describe("compacted").await;
    assert_eq!(d.configs["cleanup.policy"], "compact");
    assert_eq!(h.describe("__consumer_offsets").await.configs["cleanup.policy"], "compact");

    let mut keyless = BatchBuilder::new(Compression::None);
    keyless.append(now_ms(), None, Some(b"no key".as_slice()), &[]);
    let r = h.produce("compacted", 0, keyless.build().unwrap()).await;
    assert_eq!(r.error_code(), ErrorCode::InvalidRecord, "{}", r.error_message);

    let n = updates();
    let started = Instant::now();
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    for round in 0..n / KEYS {
        let records: Vec<_> =
            (0..KEYS).map(|k| (format!("key-{k:04}"), Some(format!("{round}")))).collect();
        for (k, v) in &records {
            expected.insert(k.clone(), v.clone());
        }
        h.produce_ok("compacted", 0, batch(&records)).await;
    }
    // Ten deletes, then one more record so the last full round is below the active segment.
    let deletes: Vec<_> = (0..10).map(|k| (format!("key-{k:04}"), None)).collect();
    h.produce_ok("compacted", 0, batch(&deletes)).await;
    // segment.ms=1 rolls only once the segment holding the deletes is older than 1 ms: let the
    // clock pass that point, so "last" starts the active segment and the deletes are cleanable.
    let deleted_at = now_ms();
    while now_ms() <= deleted_at + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    h.produce_ok("compacted", 0, batch(&[("last".into(), Some("x".into()))])).await;
    for (k, v) in deletes.iter().chain([&("last".to_string(), Some("x".to_string()))]) {
        expected.insert(k.clone(), v.clone());
    }
    let produced = started.elapsed();

    let started = Instant::now();
    let pass = h.server.broker().clean_logs().await;
    let cleaning = started.elapsed();
    assert_eq!(pass.partitions, 1, "{pass:?}");
    assert_eq!(pass.failures, 0, "{pass:?}");
    assert!(pass.bytes_freed > 0, "{pass:?}");
    // The pass is what the broker's metrics report (it ran no other pass with work to do).
    let totals = h.server.broker().metrics().cleaner();
    assert_eq!(totals.segments_cleaned, pass.segments as u64, "{totals:?}");
    assert_eq!(totals.records_read, pass.records_read);
    assert_eq!(totals.records_removed, pass.records_read - pass.records_kept);
    assert_eq!(totals.bytes_freed, pass.bytes_freed);
    let after = read_all(&mut h, "compacted").await;
    let latest: BTreeMap<_, _> = after.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(latest, expected, "the latest value of every key survives");
    println!(
        "{n} updates of {KEYS} keys: {} records after cleaning (read {}, kept {}, {} segments); \
         produce {produced:?}, clean {cleaning:?}",
        after.len(),
        pass.records_read,
        pass.records_kept,
        pass.segments
    );
    // One record per key (the 10 tombstones are younger than delete.retention.ms) and "last".
    assert_eq!(after.len(), KEYS + 1);
    h.stop().await;
}

/// A `__consumer_offsets` created before offsets were compacted has no `cleanup.policy` of its
/// own; the controller gives it `compact` rather than let it grow forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offsets_topic_without_a_cleanup_policy_is_made_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(config(dir.path())).await;
    let offsets = "__consumer_offsets";
    assert_eq!(h.describe(offsets).await.configs["cleanup.policy"], "compact");
    // As an older broker created it: no override. The call returns once this node applied it.
    let legacy = strom_broker::ConfigAlteration {
        topic: offsets.into(),
        delete: vec!["cleanup.policy".into()],
        ..Default::default()
    };
    h.server.broker().alter_topic_config(legacy, false).await.unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if h.describe(offsets).await.configs.get("cleanup.policy").map(String::as_str)
            == Some("compact")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the controller never compacted {offsets}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // An operator's explicit choice stays.
    let explicit = strom_broker::ConfigAlteration {
        topic: offsets.into(),
        set: [("cleanup.policy".to_string(), "compact,delete".to_string())].into(),
        ..Default::default()
    };
    h.server.broker().alter_topic_config(explicit, false).await.unwrap();
    assert_eq!(h.describe(offsets).await.configs["cleanup.policy"], "compact,delete");
    h.stop().await;
}
