//! Idempotent producers through the log's public API: duplicates answered with the original
//! offsets and not written, out-of-order and fenced batches refused, followers rebuilding the
//! leader's state, and the state after reopen (clean, crash, crash between a snapshot and the
//! segment bytes it describes), truncation, restart and expiry always equal to a full scan of
//! the batches the log holds.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use strom_format::{BatchBuilder, Compression, Offset};
use strom_log::producer_state::{ProducerBatch, ProducerStateManager};
use strom_log::{Log, LogConfig, LogError, ManualClock};

const NOW: i64 = 1_700_000_000_000;

/// `count` records of producer `pid` / `epoch` from sequence `seq`, timestamped `NOW`.
fn idem_batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).with_producer(pid, epoch, seq);
    for i in 0..count {
        b.append(NOW, None, Some(format!("{pid}-{seq}-{i}").as_bytes()), &[]);
    }
    b.build().unwrap()
}

fn open(dir: &std::path::Path, config: LogConfig) -> Log {
    Log::open_with_clock(dir, config, Arc::new(ManualClock::new(NOW))).unwrap()
}

fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 600, ..LogConfig::default() }
}

/// The state a replay of every batch in the log gives: what every path must agree with.
fn full_scan(log: &Log) -> ProducerStateManager {
    let mut state = ProducerStateManager::default();
    for batch in read_all(log, 1 << 20).unwrap() {
        if let Some(b) = ProducerBatch::of(&batch, batch.base_offset()) {
            state.apply(&b);
        }
    }
    state
}

#[test]
fn retry_of_a_stored_batch_returns_its_original_offsets_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(simple_batch(2)).unwrap();
    let first = log.append(idem_batch(7, 0, 0, 3)).unwrap();
    log.append(idem_batch(7, 0, 3, 2)).unwrap();
    let end = log.log_end_offset();
    let retry = log.append(idem_batch(7, 0, 0, 3)).unwrap();
    assert!(retry.duplicate && !first.duplicate);
    assert_eq!((retry.first_offset, retry.last_offset), (first.first_offset, first.last_offset));
    assert_eq!(log.log_end_offset(), end, "a duplicate is not written");
    // Non-idempotent batches are never deduplicated.
    log.append(simple_batch(2)).unwrap();
    log.append(simple_batch(2)).unwrap();
    assert_eq!(log.log_end_offset().get(), end.get() + 4);
}

#[test]
fn gaps_and_fenced_epochs_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(idem_batch(7, 2, 0, 3)).unwrap();
    let end = log.log_end_offset();
    let gap = log.append(idem_batch(7, 2, 5, 1)).unwrap_err();
    assert!(matches!(gap, LogError::OutOfOrderSequence { expected: 3, got: 5, .. }), "{gap}");
    let fenced = log.append(idem_batch(7, 1, 3, 1)).unwrap_err();
    assert!(matches!(fenced, LogError::InvalidProducerEpoch { current: 2, got: 1, .. }));
    let new_epoch_mid_sequence = log.append(idem_batch(7, 3, 3, 1)).unwrap_err();
    assert!(matches!(new_epoch_mid_sequence, LogError::OutOfOrderSequence { .. }));
    assert_eq!(log.log_end_offset(), end);
    // The next sequence, and a new epoch from 0, are fine; an unknown producer at any sequence.
    log.append(idem_batch(7, 2, 3, 1)).unwrap();
    log.append(idem_batch(7, 3, 0, 1)).unwrap();
    log.append(idem_batch(8, 0, 40, 1)).unwrap();
    assert_eq!(log.log_end_offset().get(), end.get() + 3);
}

#[test]
fn one_append_of_several_batches_of_one_producer_is_checked_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append(idem_batch(7, 0, 0, 2)).unwrap();
    let mut two = idem_batch(7, 0, 2, 2).to_vec();
    two.extend_from_slice(&idem_batch(7, 0, 4, 2));
    log.append(two.into()).unwrap();
    let mut gap = idem_batch(7, 0, 6, 2).to_vec();
    gap.extend_from_slice(&idem_batch(7, 0, 9, 2));
    assert!(matches!(log.append(gap.into()), Err(LogError::OutOfOrderSequence { .. })));
    assert_eq!(log.log_end_offset().get(), 6, "all or nothing");
    // A stored batch retried together with a new one: one base offset cannot answer both, so
    // it is refused, never half-applied.
    let mut mixed = idem_batch(7, 0, 4, 2).to_vec();
    mixed.extend_from_slice(&idem_batch(7, 0, 6, 2));
    assert!(matches!(log.append(mixed.into()), Err(LogError::OutOfOrderSequence { .. })));
    assert_eq!(log.log_end_offset().get(), 6);
}

#[test]
fn follower_rebuilds_the_leaders_state_and_dedupes_after_failover() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), small_segments());
    let follower = open(&dir.path().join("follower"), small_segments());
    for seq in (0..40).step_by(4) {
        leader.append(idem_batch(7, 0, seq, 4)).unwrap();
        leader.append(simple_batch(1)).unwrap();
    }
    let mut at = Offset::ZERO;
    while at < leader.log_end_offset() {
        let read = leader.read(at, 1 << 20).unwrap();
        follower.append_replicated(read.records).unwrap();
        at = follower.log_end_offset();
    }
    assert_eq!(follower.producer_state(), leader.producer_state());
    // The follower, now leading, recognises a retry sent to the old leader.
    let retry = follower.append(idem_batch(7, 0, 36, 4)).unwrap();
    assert!(retry.duplicate);
}

#[test]
fn clean_reopen_and_crash_reopen_give_the_full_scan_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments());
    for seq in (0..60).step_by(3) {
        log.append(idem_batch(1, 0, seq, 3)).unwrap();
        log.append(idem_batch(2, 0, seq, 3)).unwrap();
    }
    assert!(log.segment_count() > 3);
    let expected = full_scan(&log);
    assert_eq!(log.producer_state(), expected);
    log.close().unwrap();
    let log = open(dir.path(), small_segments());
    assert_eq!(log.producer_state(), expected, "from the close snapshot");
    log.append(idem_batch(1, 0, 60, 3)).unwrap();
    let expected = full_scan(&log);
    drop(log); // a crash: no close snapshot, replay from the last roll's
    let log = open(dir.path(), small_segments());
    assert_eq!(log.producer_state(), expected, "from a roll snapshot and the tail");
    assert!(log.append(idem_batch(1, 0, 60, 3)).unwrap().duplicate);
}

#[test]
fn snapshot_above_the_recovered_end_is_discarded() {
    // A crash after the close snapshot was written but with the segment's tail lost (power
    // loss of unflushed bytes, simulated by cutting the file): the snapshot describes batches
    // the log no longer has.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    for seq in (0..10).step_by(2) {
        log.append(idem_batch(1, 0, seq, 2)).unwrap();
    }
    let keep = log.read(Offset::ZERO, 1 << 20).unwrap().records;
    log.close().unwrap();
    let segment = dir.path().join("00000000000000000000.log");
    let cut = keep.len() - 3; // inside the last batch
    fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut as u64).unwrap();
    fs::remove_file(dir.path().join(".clean-shutdown")).ok();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset().get(), 8);
    assert_eq!(log.producer_state(), full_scan(&log));
    // The lost batch (sequence 8) is not mistaken for a duplicate: it is written again.
    let again = log.append(idem_batch(1, 0, 8, 2)).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.first_offset.get(), 8);
}

#[test]
fn truncation_reloads_and_forgets_the_cut_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments());
    for seq in (0..60).step_by(3) {
        log.append(idem_batch(1, 0, seq, 3)).unwrap();
    }
    log.truncate_to(Offset::new(30)).unwrap();
    assert_eq!(log.producer_state(), full_scan(&log));
    // Sequence 30 was cut, so it is new again; 27 is still a duplicate.
    assert!(log.append(idem_batch(1, 0, 27, 3)).unwrap().duplicate);
    assert!(!log.append(idem_batch(1, 0, 30, 3)).unwrap().duplicate);
    log.restart_at(Offset::new(500)).unwrap();
    assert!(log.producer_state().is_empty());
    log.close().unwrap();
    let log = open(dir.path(), small_segments());
    assert!(log.producer_state().is_empty(), "no snapshot of the old history survives");
}

#[test]
fn producers_expire_after_producer_id_expiration_ms() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let config =
        LogConfig { producer_id_expiration_ms: Duration::from_secs(60), ..LogConfig::default() };
    let log = Log::open_with_clock(dir.path(), config.clone(), clock.clone()).unwrap();
    log.append(idem_batch(1, 0, 0, 1)).unwrap();
    clock.advance(Duration::from_secs(61));
    log.append(simple_batch(1)).unwrap();
    assert!(log.producer_state().entry(1).is_none(), "expired on the next append");
    // An expired producer is unknown: any sequence is accepted.
    log.append(idem_batch(1, 0, 9, 1)).unwrap();
    log.close().unwrap();
    clock.advance(Duration::from_secs(61));
    let log = Log::open_with_clock(dir.path(), config, clock).unwrap();
    assert!(log.producer_state().is_empty(), "expired at open");
}

/// One step of the recovery property.
#[derive(Debug, Clone)]
enum Op {
    Append { pid: i64, count: usize },
    Plain,
    Close,
    Crash,
    Truncate { back: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..3, 1usize..4).prop_map(|(pid, count)| Op::Append { pid, count }),
        1 => Just(Op::Plain),
        1 => Just(Op::Close),
        1 => Just(Op::Crash),
        1 => (1i64..12).prop_map(|back| Op::Truncate { back }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever mix of appends, clean closes, crashes and truncations: the state the log
    /// holds (from snapshots plus the tail) equals a replay of every batch it holds.
    #[test]
    fn state_from_snapshots_and_tail_equals_a_full_scan(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 400, ..LogConfig::default() };
        let mut log = Some(open(dir.path(), config.clone()));
        let mut next_seq = [0i32; 3];
        for op in ops {
            let l = log.take().unwrap();
            let l = match op {
                Op::Append { pid, count } => {
                    let idx = usize::try_from(pid).unwrap();
                    // After a truncation the producer may have lost its tail: continue from
                    // what the log knows (an unknown producer may start anywhere).
                    let known = l.producer_state().entry(pid).and_then(|e| e.batches.back().copied());
                    let seq = known.map_or(next_seq[idx], |b| b.last_seq + 1);
                    l.append(idem_batch(pid, 0, seq, count)).unwrap();
                    next_seq[idx] = seq + i32::try_from(count).unwrap();
                    l
                }
                Op::Plain => { l.append(simple_batch(1)).unwrap(); l }
                Op::Close => { l.close().unwrap(); open(dir.path(), config.clone()) }
                Op::Crash => { drop(l); open(dir.path(), config.clone()) }
                Op::Truncate { back } => {
                    let to = (l.log_end_offset().get() - back).max(0);
                    l.truncate_to(Offset::new(to)).unwrap();
                    l
                }
            };
            prop_assert_eq!(l.producer_state(), full_scan(&l));
            log = Some(l);
        }
    }
}
