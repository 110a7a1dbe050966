//! Behaviour of the log through its public API: appends, reads, timestamps, rolls, retention,
//! truncation, replication, reopening and flush policies.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strom_format::{Batches, FormatError, LeaderEpoch, Offset, RecordBatch};
use strom_log::{FlushPolicy, Log, LogConfig, LogError, ManualClock};

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 2_000, index_interval_bytes: 300, ..LogConfig::default() }
}

/// Appends `batches` pattern batches of 1..=5 records; returns the records per batch.
fn fill(log: &Log, batches: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = Vec::new();
    for _ in 0..batches {
        let count = rng.random_range(1..=5);
        let first = log.log_end_offset().get();
        let info = log.append(pattern_batch(first, count, 40, |o| 1_000 + o)).unwrap();
        assert_eq!(info.first_offset.get(), first);
        assert_eq!(info.last_offset.get(), first + count as i64 - 1);
        counts.push(count);
    }
    counts
}

#[test]
fn round_trip_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let counts = fill(&log, 300, 1);
    let total: usize = counts.iter().sum();
    assert_eq!(log.log_end_offset().get(), total as i64);
    assert!(log.segment_count() > 20, "small segments roll: {}", log.segment_count());
    for max_bytes in [1, 200, 1_000, 1 << 20] {
        let batches = read_all(&log, max_bytes).unwrap();
        assert_eq!(batches.len(), counts.len());
        for (batch, count) in batches.iter().zip(&counts) {
            assert_eq!(batch.records_count() as usize, *count);
        }
        assert_pattern(&batches);
    }
    let on_disk: u64 = read_all(&log, 1 << 20).unwrap().iter().map(|b| b.size() as u64).sum();
    assert_eq!(log.size_bytes(), on_disk);
}

#[test]
fn read_at_every_offset_lands_on_the_batch_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 120, 2);
    let end = log.log_end_offset().get();
    for o in 0..end {
        let read = log.read(Offset::new(o), 1).unwrap();
        assert_eq!(read.log_end_offset.get(), end);
        let batches: Vec<RecordBatch> = Batches::new(read.records).map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1, "max_bytes 1 still returns exactly one batch");
        let b = &batches[0];
        assert!(b.base_offset().get() <= o && o <= b.last_offset().get(), "offset {o}");
        b.validate_crc().unwrap();
    }
    assert!(log.read(Offset::new(end), 1 << 20).unwrap().records.is_empty());
    assert!(matches!(
        log.read(Offset::new(end + 1), 1),
        Err(LogError::OffsetOutOfRange { requested, start, end: e })
            if requested.get() == end + 1 && start.get() == 0 && e.get() == end
    ));
}

#[test]
fn max_bytes_is_respected_but_at_least_one_batch_returned() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 20, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    for _ in 0..50 {
        let first = log.log_end_offset().get();
        log.append(pattern_batch(first, 3, 100, |o| o)).unwrap();
    }
    let one = log.read(Offset::ZERO, 1 << 20).unwrap().records;
    let batch_size = Batches::new(one.clone()).next().unwrap().unwrap().size();
    assert_eq!(one.len(), batch_size * 50, "a large max_bytes returns everything");
    for max in [batch_size - 1, batch_size, batch_size * 3 + 5, batch_size * 10] {
        let read = log.read(Offset::ZERO, max).unwrap().records;
        let expected = (max / batch_size).max(1) * batch_size;
        assert_eq!(read.len(), expected, "max_bytes {max}");
    }
    // A batch larger than max_bytes still comes back whole.
    let big = log.read(Offset::new(4), 10).unwrap().records;
    assert_eq!(Batches::new(big).count(), 1);
}

#[test]
fn read_below_stops_before_the_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for _ in 0..4 {
        log.append(simple_batch(5)).unwrap(); // 0-4, 5-9, 10-14, 15-19
    }
    let count = |from, upper| {
        let read = log.read_below(Offset::new(from), 1 << 20, Offset::new(upper)).unwrap();
        Batches::new(read.records).map(|b| b.unwrap().last_offset().get()).collect::<Vec<_>>()
    };
    assert_eq!(count(0, 10), vec![4, 9]);
    assert_eq!(count(0, 9), vec![4], "a batch reaching the bound is held back");
    assert_eq!(count(0, 4), Vec::<i64>::new());
    assert_eq!(count(12, 20), vec![14, 19]);
    assert_eq!(count(12, 100), vec![14, 19], "the bound is capped at the log end");
    assert_eq!(count(15, 15), Vec::<i64>::new());
}

/// The first record with timestamp >= ts, by brute force over `(offset, ts)` pairs.
fn expected_for(records: &[(i64, i64)], ts: i64) -> Option<(Offset, i64)> {
    records.iter().find(|(_, t)| *t >= ts).map(|(o, t)| (Offset::new(*o), *t))
}

fn check_timestamps(timestamps: Vec<Vec<i64>>, config: LogConfig) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let mut records = Vec::new();
    for batch in &timestamps {
        let info = log.append(batch_with_timestamps(batch)).unwrap();
        for (i, ts) in batch.iter().enumerate() {
            records.push((info.first_offset.get() + i as i64, *ts));
        }
    }
    let min = records.iter().map(|r| r.1).min().unwrap();
    let max = records.iter().map(|r| r.1).max().unwrap();
    let check = |log: &Log| {
        for ts in (min - 2)..=(max + 2) {
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                expected_for(&records, ts),
                "ts {ts}"
            );
        }
    };
    check(&log);
    // The same answers from indexes loaded from disk, and from rebuilt ones.
    log.close().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    check(&log);
    drop(log);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "timeindex") {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let log = Log::open(dir.path(), config).unwrap();
    check(&log);
}

#[test]
fn offset_for_timestamp_with_increasing_timestamps() {
    let batches: Vec<Vec<i64>> =
        (0..200).map(|b| (0..3).map(|i| 10_000 + b * 30 + i * 10).collect()).collect();
    check_timestamps(batches, small_config());
}

#[test]
fn offset_for_timestamp_with_non_monotonic_timestamps() {
    let mut rng = StdRng::seed_from_u64(7);
    let batches: Vec<Vec<i64>> = (0..150)
        .map(|_| (0..rng.random_range(1..6)).map(|_| rng.random_range(0..400)).collect())
        .collect();
    check_timestamps(batches, small_config());
    let batches: Vec<Vec<i64>> = (0..100).map(|b| vec![1_000 - b, 5_000 + b, 2]).collect();
    check_timestamps(batches, LogConfig { index_interval_bytes: 0, ..small_config() });
}

#[test]
fn rolls_by_segment_age_with_an_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let config = LogConfig { segment_ms: Some(Duration::from_secs(60)), ..LogConfig::default() };
    let log = Log::open_with_clock(dir.path(), config.clone(), clock.clone()).unwrap();
    log.append(simple_batch(2)).unwrap();
    clock.advance(Duration::from_secs(59));
    log.append(simple_batch(2)).unwrap();
    assert_eq!(log.segment_count(), 1, "younger than segment_ms");
    clock.advance(Duration::from_secs(2));
    log.append(simple_batch(2)).unwrap();
    assert_eq!(log.segment_count(), 2, "older than segment_ms: rolled before the append");
    assert_eq!(log.flushed_offset().get(), 4, "a roll fsyncs the closed segment");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(log.segment_count(), 2, "an idle log does not roll without appends");
    log.append(simple_batch(1)).unwrap();
    assert_eq!(log.segment_count(), 3);
    // An empty active segment never rolls, however old.
    log.truncate_to(Offset::new(6)).unwrap();
    clock.advance(Duration::from_secs(3600));
    log.append(simple_batch(1)).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log, 1 << 20).unwrap().len(), 4);
}

#[test]
fn retention_by_size_deletes_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1,
        retention_bytes: Some(1_000),
        retention_ms: None,
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for _ in 0..20 {
        let first = log.log_end_offset().get();
        log.append(pattern_batch(first, 2, 100, |o| o)).unwrap(); // one batch per segment
    }
    let batch_size = log.size_bytes() / 20;
    assert_eq!(log.segment_count(), 20);
    let deleted = log.enforce_retention().unwrap();
    // Keeps the newest segments that hold at least 1000 bytes.
    let keep = 1_000u64.div_ceil(batch_size) as usize;
    assert_eq!(deleted, 20 - keep);
    assert!(log.size_bytes() >= 1_000);
    assert!(log.size_bytes() - batch_size < 1_000);
    assert_eq!(log.log_start_offset().get(), 2 * deleted as i64);
    assert!(matches!(log.read(Offset::ZERO, 100), Err(LogError::OffsetOutOfRange { .. })));
    assert_pattern(&read_all(&log, 1 << 20).unwrap());
    assert_eq!(log.enforce_retention().unwrap(), 0);
}

#[test]
fn retention_by_time_deletes_expired_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(100_000));
    let config = LogConfig {
        segment_bytes: 1,
        retention_ms: Some(Duration::from_millis(10_000)),
        segment_ms: None,
        ..LogConfig::default()
    };
    let log = Log::open_with_clock(dir.path(), config.clone(), clock.clone()).unwrap();
    // Segment i's newest record has timestamp 90_000 + 1_000 * i.
    for i in 0..10i64 {
        log.append(batch_with_timestamps(&[80_000, 90_000 + 1_000 * i])).unwrap();
    }
    assert_eq!(log.enforce_retention().unwrap(), 0, "nothing older than 10 s yet");
    clock.set(104_500); // segments 0..=4 (newest <= 94_000) are older than 10 s
    assert_eq!(log.enforce_retention().unwrap(), 5);
    assert_eq!(log.log_start_offset().get(), 10);
    // The expired state survives a reopen (max timestamps are recovered from disk).
    log.close().unwrap();
    let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
    clock.set(1_000_000);
    assert_eq!(log.enforce_retention().unwrap(), 4, "the active segment stays");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset().get(), 18);
    assert_eq!(log.log_end_offset().get(), 20);
    assert_eq!(log.append(simple_batch(1)).unwrap().first_offset.get(), 20);
}

#[test]
fn truncate_then_append_continues_densely() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 100, 3);
    let segments_before = log.segment_count();
    let batches = read_all(&log, 1 << 20).unwrap();
    // Truncate in the middle of a batch in an early segment.
    let target = &batches[20];
    let mid = target.base_offset().add(i64::from(target.last_offset_delta() / 2));
    log.truncate_to(mid).unwrap();
    assert_eq!(log.log_end_offset(), target.base_offset(), "the batch holding it goes whole");
    assert!(log.segment_count() < segments_before);
    assert_eq!(log.flushed_offset(), log.log_end_offset());
    assert_eq!(read_all(&log, 1 << 20).unwrap().len(), 20);
    fill(&log, 50, 4);
    let after = read_all(&log, 1 << 20).unwrap();
    assert_eq!(after.len(), 70);
    assert_pattern(&after);
    // Truncating at or above the end changes nothing.
    let end = log.log_end_offset();
    log.truncate_to(end).unwrap();
    log.truncate_to(end.add(10)).unwrap();
    assert_eq!(log.log_end_offset(), end);
    // Truncating exactly at a segment's base leaves that segment empty and active.
    let bases: Vec<Offset> = after.iter().map(|b| b.base_offset()).collect();
    log.truncate_to(bases[40]).unwrap();
    assert_eq!(log.log_end_offset(), bases[40]);
    assert_pattern(&read_all(&log, 1 << 20).unwrap());
    // Reopen (both cleanly and after a crash) keeps the truncated state.
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), bases[40]);
    fill(&log, 10, 5);
    assert_pattern(&read_all(&log, 1 << 20).unwrap());
    log.close().unwrap();
}

#[test]
fn truncate_below_the_start_restarts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 30, 6);
    log.truncate_to(Offset::ZERO).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (0, 0));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    fill(&log, 5, 7);
    assert_pattern(&read_all(&log, 1 << 20).unwrap());

    // After retention moved the start, truncating below it restarts the log at that offset.
    let config = LogConfig { segment_bytes: 1, retention_bytes: Some(1), ..small_config() };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for _ in 0..5 {
        log.append(simple_batch(2)).unwrap();
    }
    log.enforce_retention().unwrap();
    assert_eq!(log.log_start_offset().get(), 8);
    log.truncate_to(Offset::new(3)).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (3, 3));
    assert_eq!(log.append(simple_batch(1)).unwrap().first_offset.get(), 3);
    log.close().unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (3, 4));
}

#[test]
fn append_replicated_keeps_offsets_and_requires_contiguity() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Log::open(dir.path().join("leader"), small_config()).unwrap();
    let follower = Log::open(dir.path().join("follower"), small_config()).unwrap();
    for _ in 0..40 {
        leader.append_with_leader_epoch(simple_batch(3), LeaderEpoch::new(5)).unwrap();
    }
    // Replicate by fetching whatever the leader returns.
    let mut next = Offset::ZERO;
    while next < leader.log_end_offset() {
        let fetched = leader.read(next, 500).unwrap().records;
        let info = follower.append_replicated(fetched).unwrap();
        assert_eq!(info.first_offset, next);
        next = info.last_offset.next();
    }
    let a = read_all(&leader, 1 << 20).unwrap();
    let b = read_all(&follower, 1 << 20).unwrap();
    assert_eq!(a, b, "byte-identical replicas");
    assert!(b.iter().all(|x| x.partition_leader_epoch() == LeaderEpoch::new(5)));

    let batch_at = |base: i64| {
        let mut v = simple_batch(3).to_vec();
        strom_format::set_base_offset(&mut v, Offset::new(base));
        Bytes::from(v)
    };
    let end = follower.log_end_offset().get();
    let gap = follower.append_replicated(batch_at(end + 1));
    assert!(matches!(gap, Err(LogError::NonMonotonicOffset { expected, got })
        if expected.get() == end && got.get() == end + 1));
    assert!(follower.append_replicated(batch_at(i64::MAX - 1)).is_err(), "no overflow panic");
    assert!(follower.append_replicated(batch_at(-5)).is_err());
    let overlap = follower.append_replicated(batch_at(end - 1));
    assert!(matches!(overlap, Err(LogError::NonMonotonicOffset { .. })));
    // Two batches that do not follow each other: nothing is written.
    let mut two = batch_at(end).to_vec();
    two.extend_from_slice(&batch_at(end + 4));
    let broken = follower.append_replicated(two.into());
    assert!(matches!(broken, Err(LogError::NonMonotonicOffset { expected, got })
        if expected.get() == end + 3 && got.get() == end + 4));
    assert_eq!(follower.log_end_offset().get(), end);
    let mut two = batch_at(end).to_vec();
    two.extend_from_slice(&batch_at(end + 3));
    follower.append_replicated(two.into()).unwrap();
    assert_eq!(follower.log_end_offset().get(), end + 6);
}

#[test]
fn reopen_after_close_and_after_crash_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 200, 8);
    let before = read_all(&log, 1 << 20).unwrap();
    let (segments, end) = (log.segment_count(), log.log_end_offset());
    log.close().unwrap();
    assert!(dir.path().join(".clean-shutdown").exists());

    let log = Log::open(dir.path(), small_config()).unwrap();
    assert!(!dir.path().join(".clean-shutdown").exists(), "open removes the marker");
    assert_eq!((log.segment_count(), log.log_end_offset()), (segments, end));
    assert_eq!(log.flushed_offset(), end);
    assert_eq!(read_all(&log, 1 << 20).unwrap(), before);
    fill(&log, 20, 9);
    let before = read_all(&log, 1 << 20).unwrap();
    drop(log); // a crash, as far as the files are concerned

    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 1 << 20).unwrap(), before);
    assert_pattern(&before);
    // Appends continue at the end, even with a different index interval.
    drop(log);
    let config = LogConfig { index_interval_bytes: 50, ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    fill(&log, 20, 10);
    assert_pattern(&read_all(&log, 1 << 20).unwrap());
}

#[test]
fn oversized_batch_is_rejected_and_the_log_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_batch_bytes: 1_000, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    log.append(simple_batch(1)).unwrap();
    let big = pattern_batch(0, 20, 100, |o| o);
    let size = big.len();
    assert!(
        matches!(log.append(big.clone()), Err(LogError::BatchTooLarge { size: s, limit: 1_000 }) if s == size)
    );
    // Also when it comes after a valid batch in the same append.
    let mut both = simple_batch(1).to_vec();
    both.extend_from_slice(&big);
    assert!(matches!(log.append(both.into()), Err(LogError::BatchTooLarge { .. })));
    assert!(matches!(log.append_replicated(big), Err(LogError::BatchTooLarge { .. })));
    assert_eq!(log.log_end_offset().get(), 1);
    assert_eq!(read_all(&log, 1 << 20).unwrap().len(), 1);
}

#[test]
fn corrupt_or_malformed_batches_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let good = simple_batch(3);
    let mut flipped = good.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let crc = log.append(flipped.clone().into());
    assert!(matches!(crc, Err(LogError::Format(FormatError::CrcMismatch { .. }))), "{crc:?}");
    assert!(matches!(
        log.append_replicated(flipped.clone().into()),
        Err(LogError::Format(FormatError::CrcMismatch { .. }))
    ));
    // A valid batch followed by a corrupt one: all or nothing.
    let mut two = good.to_vec();
    two.extend_from_slice(&flipped);
    assert!(log.append(two.into()).is_err());
    // A truncated batch, an empty append, garbage.
    assert!(matches!(
        log.append(good.slice(..good.len() - 1)),
        Err(LogError::Format(FormatError::Truncated { .. }))
    ));
    let mut tail = good.to_vec();
    tail.extend_from_slice(&[0, 0, 0]);
    assert!(log.append(tail.into()).is_err(), "trailing bytes after the last batch");
    assert!(matches!(log.append(Bytes::new()), Err(LogError::EmptyAppend)));
    assert!(log.append(Bytes::from_static(&[0xff; 100])).is_err());
    assert_eq!(log.log_end_offset().get(), 0);
    assert_eq!(log.size_bytes(), 0);
    log.append(good).unwrap();
    assert_eq!(log.log_end_offset().get(), 3);
}

#[test]
fn leader_epoch_is_stamped_and_crc_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(simple_batch(2)).unwrap();
    log.append_with_leader_epoch(simple_batch(2), LeaderEpoch::new(3)).unwrap();
    let batches = read_all(&log, 1 << 20).unwrap();
    assert_eq!(batches[0].partition_leader_epoch(), LeaderEpoch::UNKNOWN);
    assert_eq!(batches[1].partition_leader_epoch(), LeaderEpoch::new(3));
    assert_eq!(batches[1].base_offset().get(), 2);
}

#[test]
fn flush_policies_decide_when_data_is_fsynced() {
    let open = |flush| {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let config = LogConfig { flush, ..LogConfig::default() };
        let log = Log::open_with_clock(dir.path(), config, clock.clone()).unwrap();
        (dir, clock, log)
    };
    let (_d, _c, log) = open(FlushPolicy::EveryAppend);
    log.append(simple_batch(3)).unwrap();
    assert_eq!(log.flushed_offset().get(), 3);

    let (_d, _c, log) = open(FlushPolicy::EveryMessages(10));
    for i in 1..=3 {
        log.append(simple_batch(3)).unwrap();
        assert_eq!(log.flushed_offset().get(), 0, "{} records unflushed", 3 * i);
    }
    log.append(simple_batch(3)).unwrap();
    assert_eq!(log.flushed_offset().get(), 12);

    let (_d, clock, log) = open(FlushPolicy::Interval(Duration::from_secs(1)));
    log.append(simple_batch(1)).unwrap();
    assert_eq!(log.flushed_offset().get(), 0);
    log.flush_if_due().unwrap();
    assert_eq!(log.flushed_offset().get(), 0);
    clock.advance(Duration::from_secs(1));
    log.flush_if_due().unwrap();
    assert_eq!(log.flushed_offset().get(), 1);
    clock.advance(Duration::from_secs(2));
    log.append(simple_batch(1)).unwrap();
    assert_eq!(log.flushed_offset().get(), 2, "checked on append too");

    let (_d, clock, log) = open(FlushPolicy::Manual);
    log.append(simple_batch(1)).unwrap();
    clock.advance(Duration::from_secs(3600));
    log.flush_if_due().unwrap();
    assert_eq!(log.flushed_offset().get(), 0);
    log.flush().unwrap();
    assert_eq!(log.flushed_offset().get(), 1);
}

#[test]
fn invalid_configurations_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        LogConfig { segment_bytes: 0, ..LogConfig::default() },
        LogConfig { segment_bytes: 1 << 40, ..LogConfig::default() },
        LogConfig { max_batch_bytes: 10, ..LogConfig::default() },
        LogConfig { flush: FlushPolicy::EveryMessages(0), ..LogConfig::default() },
    ] {
        assert!(matches!(Log::open(dir.path(), config), Err(LogError::InvalidConfig(_))));
    }
}

#[test]
fn stray_files_are_ignored_and_missing_indexes_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 100, 11);
    let before = read_all(&log, 1 << 20).unwrap();
    log.close().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("123.log"), b"not a segment name").unwrap();
    std::fs::create_dir(dir.path().join("00000000000000000999.log.d")).unwrap();
    std::fs::write(dir.path().join("00000000000099999999.index"), b"orphan").unwrap();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "index") && removed < 3 {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 1 << 20).unwrap(), before);
    assert!(dir.path().join("notes.txt").exists());
    assert!(!dir.path().join("00000000000099999999.index").exists(), "orphan index removed");
    for o in (0..log.log_end_offset().get()).step_by(7) {
        let read = log.read(Offset::new(o), 1).unwrap();
        let b = Batches::new(read.records).next().unwrap().unwrap();
        assert!(b.base_offset().get() <= o && o <= b.last_offset().get());
    }
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    let log = Log::open(&path, small_config()).unwrap();
    fill(&log, 50, 12);
    log.delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn readers_run_concurrently_with_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_config()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (log, done) = (log.clone(), done.clone());
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(r);
                let mut reads = 0;
                while !done.load(Ordering::Acquire) || reads < 100 {
                    let end = log.log_end_offset().get();
                    let from = if end == 0 { 0 } else { rng.random_range(0..=end) };
                    let read = log.read(Offset::new(from), rng.random_range(1..3_000)).unwrap();
                    let batches: Vec<_> = Batches::new(read.records).map(Result::unwrap).collect();
                    for b in &batches {
                        b.validate_crc().unwrap();
                    }
                    assert_pattern(&batches);
                    reads += 1;
                }
            })
        })
        .collect();
    fill(&log, 600, 13);
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn readers_racing_truncation_and_retention_get_valid_data_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_bytes: Some(20_000), ..small_config() };
    let log = Arc::new(Log::open(dir.path(), config).unwrap());
    fill(&log, 100, 14);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (log, done) = (log.clone(), done.clone());
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + r);
                while !done.load(Ordering::Acquire) {
                    let (start, end) = (log.log_start_offset().get(), log.log_end_offset().get());
                    let from = rng.random_range(start..=end.max(start));
                    match log.read(Offset::new(from), rng.random_range(1..5_000)) {
                        Ok(read) => {
                            let mut walk = Batches::new(read.records);
                            let batches: Vec<_> = walk.by_ref().map(Result::unwrap).collect();
                            assert_eq!(walk.remaining(), 0);
                            assert_pattern(&batches);
                        }
                        Err(
                            LogError::OffsetOutOfRange { .. } | LogError::ConcurrentModification,
                        ) => {}
                        Err(e) => panic!("unexpected read error {e}"),
                    }
                    if let Ok(Some((o, ts))) = log.offset_for_timestamp(1_000 + from) {
                        assert!(o.get() >= from && ts == 1_000 + o.get(), "{from} -> {o} {ts}");
                    }
                }
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(15);
    for round in 0..60 {
        let (start, end) = (log.log_start_offset().get(), log.log_end_offset().get());
        let target = rng.random_range(start..=end);
        log.truncate_to(Offset::new(target)).unwrap();
        fill(&log, 20, 1_000 + round);
        log.enforce_retention().unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    assert_pattern(&read_all(&log, 1 << 20).unwrap());
}

#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(Log::open(dir.path(), LogConfig::default()), Err(LogError::AlreadyOpen(_))));
    let alias = dir.path().join(".").join("..").join(dir.path().file_name().unwrap());
    assert!(matches!(Log::open(&alias, LogConfig::default()), Err(LogError::AlreadyOpen(_))));
    drop(log);
    Log::open(dir.path(), LogConfig::default()).unwrap().close().unwrap();
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
    assert_send_sync::<LogError>();
}
