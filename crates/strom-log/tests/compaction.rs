//! The log cleaner (`cleanup.policy=compact`): latest value per key kept at its original
//! offset, tombstones kept for `delete_retention_ms` then dropped, reads and followers across
//! the gaps cleaning leaves, and crashes between the steps of a swap.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_format::{BatchBuilder, Batches, Compression, Offset};
use strom_log::{CleanStep, CleanerLimits, Log, LogConfig, LogError, ManualClock};

const NOW: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        compact: true,
        segment_bytes: 4096,
        index_interval_bytes: 256,
        min_cleanable_dirty_ratio_permille: 0,
        ..LogConfig::default()
    }
}

/// `(key, value)` pairs as one batch; `None` values are tombstones.
fn batch(records: &[(String, Option<String>)], ts: i64, compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(compression);
    for (k, v) in records {
        b.append(ts, Some(k.as_bytes()), v.as_deref().map(str::as_bytes), &[]);
    }
    b.build().unwrap()
}

/// Every record of the log: offset, key, value.
fn records(log: &Log) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    let text = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
    while at < log.log_end_offset() {
        let read = log.read(at, 1 << 20).unwrap();
        if read.records.is_empty() {
            break;
        }
        for batch in Batches::new(read.records) {
            let batch = batch.unwrap();
            batch.validate_crc().unwrap();
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                if r.offset >= at {
                    out.push((r.offset.get(), text(r.key).unwrap(), text(r.value)));
                }
            }
            at = batch.next_offset();
        }
    }
    let offsets: Vec<i64> = out.iter().map(|r| r.0).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets strictly increase");
    out
}

/// Key → (offset, value) of its latest record.
fn latest(records: &[(i64, String, Option<String>)]) -> BTreeMap<String, (i64, Option<String>)> {
    records.iter().map(|(o, k, v)| (k.clone(), (*o, v.clone()))).collect()
}

/// 20 keys, 30 rounds of updates, batches of 1..=7 records, every 5th key deleted at the end.
fn fill(log: &Log, ts: i64) {
    let mut n = 0u64;
    for round in 0..30 {
        let mut pending = Vec::new();
        for key in 0..20 {
            pending.push((format!("key-{key:02}"), Some(format!("value-{key}-{round}"))));
            if pending.len() as u64 > n % 7 {
                let compression =
                    if n.is_multiple_of(3) { Compression::Lz4 } else { Compression::None };
                log.append(batch(&pending, ts, compression)).unwrap();
                pending.clear();
                n += 1;
            }
        }
        if !pending.is_empty() {
            log.append(batch(&pending, ts, Compression::None)).unwrap();
        }
    }
    let tombstones: Vec<_> = (0..20).step_by(5).map(|k| (format!("key-{k:02}"), None)).collect();
    log.append(batch(&tombstones, ts, Compression::None)).unwrap();
    // A few more updates, so the tombstones are below the active segment.
    for i in 0..60 {
        log.append(batch(
            &[(format!("key-{:02}", 1 + i % 3), Some(format!("tail-{i}")))],
            ts,
            Compression::None,
        ))
        .unwrap();
    }
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Log {
    Log::open_with_clock(dir, config(), clock.clone()).unwrap()
}

#[test]
fn cleaning_keeps_the_latest_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let log = open(dir.path(), &clock);
    fill(&log, NOW);
    let before = records(&log);
    let end = log.log_end_offset();
    let segments_before = log.segment_count();

    let stats = log.clean(end, &CleanerLimits::default()).unwrap();
    assert!(stats.segments_cleaned > 0, "{stats:?}");
    assert!(stats.records_kept < stats.records_read, "{stats:?}");
    let after = records(&log);
    assert_eq!(latest(&after), latest(&before), "the latest record of every key survives");
    assert!(after.len() < before.len() / 5, "{} of {} records left", after.len(), before.len());
    assert_eq!(log.log_end_offset(), end, "cleaning never moves the log end");
    assert_eq!(log.log_start_offset(), Offset::ZERO);
    // Tombstones are still there: younger than delete_retention_ms.
    assert!(after.iter().any(|(_, k, v)| k == "key-00" && v.is_none()));

    // A read at an offset cleaning removed returns the next batch.
    let removed = (0..end.get()).find(|o| !after.iter().any(|r| r.0 == *o)).unwrap();
    let read = log.read(Offset::new(removed), 1).unwrap();
    let first = Batches::new(read.records).next().unwrap().unwrap();
    assert!(first.base_offset().get() > removed);

    // Appends continue at the end; a second pass with nothing dirty does nothing.
    log.append(batch(&[("key-01".into(), Some("new".into()))], NOW, Compression::None)).unwrap();
    assert_eq!(log.clean(end, &CleanerLimits::default()).unwrap().segments_cleaned, 0);
    // The next pass with dirty data merges the small cleaned segments (grouped by size).
    for i in 0..100 {
        let record = (format!("key-{:02}", i % 20), Some(format!("later-{i}")));
        log.append(batch(&[record], NOW, Compression::None)).unwrap();
    }
    let before_merge = log.segment_count();
    let stats = log.clean(log.log_end_offset(), &CleanerLimits::default()).unwrap();
    assert!(stats.segments_written < stats.segments_cleaned, "{stats:?}");
    assert!(log.segment_count() < before_merge.min(segments_before));

    // Reopen after a crash (no close) and after a clean close: the same records.
    let expected = records(&log);
    drop(log);
    let log = open(dir.path(), &clock);
    assert_eq!(records(&log), expected);
    log.close().unwrap();
    let log = open(dir.path(), &clock);
    assert_eq!(records(&log), expected);
}

#[test]
fn tombstones_are_dropped_only_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let log = open(dir.path(), &clock);
    fill(&log, NOW);
    let end = log.log_end_offset();
    log.clean(end, &CleanerLimits::default()).unwrap();
    let kept = records(&log);
    assert_eq!(kept.iter().filter(|r| r.2.is_none()).count(), 4, "4 tombstones kept");

    // A day later (the default delete_retention_ms), the next pass drops them; everything is
    // dirty again once new data arrives and rolls.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    for i in 0..200 {
        log.append(batch(
            &[(format!("new-{}", i % 10), Some("x".repeat(40)))],
            NOW + 24 * 3600 * 1000 + 1,
            Compression::None,
        ))
        .unwrap();
    }
    let stats = log.clean(log.log_end_offset(), &CleanerLimits::default()).unwrap();
    assert_eq!(stats.tombstones_removed, 4, "{stats:?}");
    let after = records(&log);
    assert!(after.iter().all(|r| r.2.is_some()), "no tombstone left");
    let deleted: Vec<_> = (0..20).step_by(5).map(|k| format!("key-{k:02}")).collect();
    assert!(after.iter().all(|r| !deleted.contains(&r.1)), "deleted keys are gone");
    assert_eq!(latest(&after).len(), 16 + 10);
}

#[test]
fn records_without_a_key_are_refused_on_a_compacted_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut b = BatchBuilder::new(Compression::None);
    b.append(NOW, Some(b"k".as_slice()), Some(b"v".as_slice()), &[]);
    b.append(NOW, None, Some(b"v".as_slice()), &[]);
    let err = log.append(b.build().unwrap()).unwrap_err();
    assert!(matches!(err, LogError::MissingKey { offset_delta: 1 }), "{err:?}");
    assert_eq!(log.log_end_offset(), Offset::ZERO);
}

#[test]
fn a_follower_copies_a_compacted_leader_with_its_gaps_and_recovers_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let leader = open(&dir.path().join("leader"), &clock);
    fill(&leader, NOW);
    leader.clean(leader.log_end_offset(), &CleanerLimits::default()).unwrap();
    let expected = records(&leader);

    // Its own segments differ (larger); it takes the leader's gaps as they are.
    let follower_config = LogConfig { segment_bytes: 64 * 1024, ..config() };
    let follower = Log::open(dir.path().join("follower"), follower_config.clone()).unwrap();
    while follower.log_end_offset() < leader.log_end_offset() {
        let read = leader.read(follower.log_end_offset(), 1000).unwrap();
        follower.append_replicated(read.records).unwrap();
    }
    assert_eq!(records(&follower), expected);
    drop(follower); // a crash: recovery must take the gaps for the cleaner's, not a torn write
    let follower = Log::open(dir.path().join("follower"), follower_config).unwrap();
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(records(&follower), expected);
}

#[test]
fn a_crash_between_the_steps_of_a_swap_reopens_the_same_latest_values() {
    for step in [CleanStep::Cleaned, CleanStep::Swapped, CleanStep::OldDeleted] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let log = open(dir.path(), &clock);
        fill(&log, NOW);
        let expected = latest(&records(&log));
        let end = log.log_end_offset();
        let mut limits = CleanerLimits::default();
        limits.stop_after = Some(step);
        let stats = log.clean(end, &limits).unwrap();
        assert_eq!(stats.stopped_at, Some(step));
        drop(log); // the crash

        let log = open(dir.path(), &clock);
        let reopened = records(&log);
        assert_eq!(latest(&reopened), expected, "after a crash at {step:?}");
        assert_eq!(log.log_end_offset(), end, "after a crash at {step:?}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".swap") || n == ".cleaned"), "{names:?}");
        // The log works on: a full pass, a reopen, the same values.
        log.clean(end, &CleanerLimits::default()).unwrap();
        assert_eq!(latest(&records(&log)), expected, "cleaning after a crash at {step:?}");
        drop(log);
        let log = open(dir.path(), &clock);
        assert_eq!(latest(&records(&log)), expected, "reopen after a crash at {step:?}");
    }
}

#[test]
fn a_small_dedupe_buffer_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let log = open(dir.path(), &clock);
    fill(&log, NOW);
    let expected = latest(&records(&log));
    let end = log.log_end_offset();
    // Room for about 5 keys: each pass maps a part of the dirty range.
    let limits = CleanerLimits::new(5 * 80, None);
    let mut passes = 0;
    loop {
        let before = log.first_dirty_offset();
        log.clean(end, &limits).unwrap();
        passes += 1;
        if log.first_dirty_offset() == before || passes > 100 {
            break;
        }
    }
    assert!(passes > 1, "{passes} passes");
    assert_eq!(latest(&records(&log)), expected);
}

#[test]
fn truncation_below_the_cleaned_part_keeps_later_appends_dense() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let log = open(dir.path(), &clock);
    fill(&log, NOW);
    log.clean(log.log_end_offset(), &CleanerLimits::default()).unwrap();
    let cut = Offset::new(log.first_dirty_offset().get() / 2);
    log.truncate_to(cut).unwrap();
    assert!(log.first_dirty_offset() <= cut);
    assert!(log.log_end_offset() <= cut);
    for i in 0..50 {
        log.append(batch(
            &[(format!("key-{:02}", i % 20), Some(format!("again-{i}")))],
            NOW,
            Compression::None,
        ))
        .unwrap();
    }
    let expected = records(&log);
    drop(log);
    let log = open(dir.path(), &clock);
    assert_eq!(records(&log), expected);
}
