//! The leader-epoch cache through the log's public API: leader and follower appends across
//! epochs, OffsetForLeaderEpoch answers, truncation, restart_at, retention, a missing or
//! corrupt checkpoint, and the on-disk states a crash in the middle of a truncation, a restart
//! or an append can leave (laid out by hand, no timing): each reopens as a dense log whose
//! epoch cache matches its batches.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use bytes::Bytes;
use common::*;
use strom_format::{LeaderEpoch, Offset, set_base_offset, set_partition_leader_epoch};
use strom_log::{EpochEntry, Log, LogConfig, LogError};

const CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Every batch in its own segment, so segment files are batch boundaries.
fn one_batch_per_segment() -> LogConfig {
    LogConfig { segment_bytes: 1, ..LogConfig::default() }
}

fn entry(epoch: i32, start: i64) -> EpochEntry {
    EpochEntry { epoch: LeaderEpoch::new(epoch), start_offset: Offset::new(start) }
}

fn answer(log: &Log, epoch: i32) -> Option<(i32, i64)> {
    log.end_offset_for_epoch(LeaderEpoch::new(epoch)).map(|(e, o)| (e.get(), o.get()))
}

/// Appends two-record batches as the leader in `epochs`, one batch each.
fn lead(log: &Log, epochs: &[i32]) {
    for &epoch in epochs {
        let first = log.log_end_offset().get();
        log.append_with_leader_epoch(pattern_batch(first, 2, 20, |o| o), LeaderEpoch::new(epoch))
            .unwrap();
    }
}

/// The entries the batches themselves imply: each newer epoch starts at its first batch.
fn entries_from_batches(log: &Log) -> Vec<EpochEntry> {
    let mut out: Vec<EpochEntry> = Vec::new();
    for batch in read_all(log, 1 << 20).unwrap() {
        let epoch = batch.partition_leader_epoch();
        if epoch.get() >= 0 && out.last().is_none_or(|l| l.epoch < epoch) {
            out.push(EpochEntry { epoch, start_offset: batch.base_offset() });
        }
    }
    out
}

/// Dense (read_all checks it) and the cache says what the batches say, also on disk.
fn assert_consistent(log: &Log) {
    assert_eq!(log.epoch_entries(), entries_from_batches(log), "cache vs batches");
    assert_eq!(checkpoint_entries(log.dir()), log.epoch_entries(), "file vs cache");
}

fn checkpoint_entries(dir: &Path) -> Vec<EpochEntry> {
    let text = fs::read_to_string(dir.join(CHECKPOINT)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].parse::<usize>().unwrap(), lines.len() - 2);
    lines[2..]
        .iter()
        .map(|l| {
            let (e, o) = l.split_once(' ').unwrap();
            entry(e.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

fn segment_file(dir: &Path, base: i64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn delete_segment(dir: &Path, base: i64) {
    for suffix in ["log", "index", "timeindex"] {
        let _ = fs::remove_file(dir.join(format!("{base:020}.{suffix}")));
    }
}

/// What a crash leaves that a clean close does not: no marker, and a lowered recovery point.
fn as_crashed(dir: &Path, recovery_point: i64) {
    let _ = fs::remove_file(dir.join(".clean-shutdown"));
    fs::write(dir.join("recovery-point"), format!("strom-recovery-point v1 {recovery_point}\n"))
        .unwrap();
}

/// Epochs 0,0,3,3,5 in two-record batches, one per segment: segments 0,2,4,6,8; end 10.
fn five_segment_log(dir: &Path) -> Vec<u8> {
    let log = Log::open(dir, one_batch_per_segment()).unwrap();
    lead(&log, &[0, 0, 3, 3, 5]);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4), entry(5, 8)]);
    log.close().unwrap();
    fs::read(dir.join(CHECKPOINT)).unwrap()
}

#[test]
fn leader_appends_across_epochs_answer_offset_for_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.latest_epoch(), answer(&log, 0)), (None, None));
    lead(&log, &[0, 0, 3, 3, 5]); // offsets 0-3 epoch 0, 4-7 epoch 3, 8-9 epoch 5
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4), entry(5, 8)]);
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch::new(5)));
    let answers: Vec<_> = (0..=6).map(|e| answer(&log, e)).collect();
    assert_eq!(
        answers,
        vec![
            Some((0, 4)),
            Some((0, 4)),
            Some((0, 4)),
            Some((3, 8)),
            Some((3, 8)),
            Some((5, 10)),
            Some((5, 10))
        ]
    );
    assert_eq!(answer(&log, -1), None);
    assert_eq!(fs::read_to_string(dir.path().join(CHECKPOINT)).unwrap(), "0\n3\n0 0\n3 4\n5 8\n");
    // Appends without an epoch leave the cache alone.
    log.append(simple_batch(1)).unwrap();
    assert_eq!(answer(&log, 5), Some((5, 11)));
    assert_consistent(&log);
}

#[test]
fn an_older_leader_epoch_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    lead(&log, &[2, 4]);
    let err = log.append_with_leader_epoch(simple_batch(1), LeaderEpoch::new(3)).unwrap_err();
    assert!(matches!(err, LogError::EpochRegression { epoch, latest }
        if epoch.get() == 3 && latest.get() == 4));
    assert_eq!(log.log_end_offset().get(), 4);
    assert_eq!(log.epoch_entries(), vec![entry(2, 0), entry(4, 2)]);
}

#[test]
fn concurrent_leaders_never_interleave_epochs_out_of_order() {
    // Four writers race with interleaved epochs: each append either lands in epoch order or
    // is refused, and the cache always describes the batches.
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let epoch = LeaderEpoch::new(i * 4 + t);
                    match log.append_with_leader_epoch(simple_batch(1), epoch) {
                        Ok(_) | Err(LogError::EpochRegression { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let epochs: Vec<_> =
        read_all(&log, 1 << 20).unwrap().iter().map(|b| b.partition_leader_epoch()).collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
    assert_consistent(&log);
}

#[test]
fn follower_replicated_appends_carry_the_leaders_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Log::open(dir.path().join("leader"), LogConfig::default()).unwrap();
    let follower = Log::open(dir.path().join("follower"), one_batch_per_segment()).unwrap();
    lead(&leader, &[0, 0, 3, 3, 5]);
    // All at once: one append holding several epochs.
    follower.append_replicated(leader.read(Offset::ZERO, 1 << 20).unwrap().records).unwrap();
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(answer(&follower, 4), Some((3, 8)));
    assert_consistent(&follower);

    // A batch from before epochs (-1) continues the log without an entry.
    let mut old = simple_batch(1).to_vec();
    set_base_offset(&mut old, Offset::new(10));
    follower.append_replicated(Bytes::from(old.clone())).unwrap();
    assert_eq!(follower.epoch_entries().len(), 3);

    // A lower epoch than the latest is a leader bug: refused, nothing written.
    set_base_offset(&mut old, Offset::new(11));
    set_partition_leader_epoch(&mut old, LeaderEpoch::new(4));
    let err = follower.append_replicated(Bytes::from(old.clone())).unwrap_err();
    assert!(matches!(err, LogError::EpochRegression { .. }), "{err:?}");
    assert_eq!(follower.log_end_offset().get(), 11);

    set_partition_leader_epoch(&mut old, LeaderEpoch::new(7));
    follower.append_replicated(Bytes::from(old)).unwrap();
    assert_eq!(follower.epoch_entries().last(), Some(&entry(7, 11)));
    drop(follower);
    let follower = Log::open(dir.path().join("follower"), one_batch_per_segment()).unwrap();
    assert_eq!(follower.epoch_entries(), vec![entry(0, 0), entry(3, 4), entry(5, 8), entry(7, 11)]);
    assert_consistent(&follower);
}

#[test]
fn truncation_drops_later_epochs_and_reopens_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    lead(&log, &[0, 0, 3, 3, 5]);
    log.truncate_to(Offset::new(9)).unwrap(); // inside epoch 5's only batch: it goes whole
    assert_eq!(log.log_end_offset().get(), 8);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4)]);
    assert_eq!(answer(&log, 5), Some((3, 8)));
    log.truncate_to(Offset::new(5)).unwrap(); // epoch 3's first batch (4..=5) goes too
    assert_eq!(log.epoch_entries(), vec![entry(0, 0)]);
    assert_eq!(answer(&log, 3), Some((0, 4)));
    assert_consistent(&log);
    drop(log); // a crash, not a close
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!(log.log_end_offset().get(), 4);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0)]);
    lead(&log, &[6]);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(6, 4)]);
    assert_consistent(&log);
}

#[test]
fn restart_at_above_the_end_empties_the_log_and_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    lead(&log, &[0, 3]);
    log.restart_at(Offset::new(100)).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (100, 100));
    assert_eq!((log.latest_epoch(), log.epoch_entries()), (None, vec![]));
    assert_eq!(log.segment_count(), 1);
    lead(&log, &[4]);
    assert_eq!(log.epoch_entries(), vec![entry(4, 100)]);
    // Below the end, onto an existing segment's name: emptied in place.
    log.restart_at(Offset::new(100)).unwrap();
    assert_eq!((log.log_end_offset().get(), log.epoch_entries()), (100, vec![]));
    lead(&log, &[4, 5]);
    drop(log);
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (100, 104));
    assert_eq!(log.epoch_entries(), vec![entry(4, 100), entry(5, 102)]);
    assert_consistent(&log);
}

#[test]
fn retention_moves_the_first_epoch_entry_to_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_bytes: Some(1), ..one_batch_per_segment() };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    lead(&log, &[0, 3, 3, 3]); // segments 0, 2, 4, 6
    assert_eq!(log.enforce_retention().unwrap(), 3);
    assert_eq!(log.log_start_offset().get(), 6);
    assert_eq!(log.epoch_entries(), vec![entry(3, 6)]);
    assert_eq!((answer(&log, 0), answer(&log, 3)), (None, Some((3, 8))));
    assert_consistent(&log);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.epoch_entries(), vec![entry(3, 6)]);
}

#[test]
fn a_stale_checkpoint_after_retention_is_fixed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    // Retention deleted segments 0 and 2 and crashed before the checkpoint followed.
    delete_segment(dir.path(), 0);
    delete_segment(dir.path(), 2);
    fs::write(dir.path().join(CHECKPOINT), old).unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!(log.epoch_entries(), vec![entry(3, 4), entry(5, 8)]);
    assert_consistent(&log);
}

#[test]
fn a_missing_or_corrupt_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    five_segment_log(dir.path());
    let expected = vec![entry(0, 0), entry(3, 4), entry(5, 8)];
    for damage in [None, Some("garbage\n"), Some("0\n2\n0 0\n3 4\n"), Some("0\n0\n"), Some("")] {
        match damage {
            None => fs::remove_file(dir.path().join(CHECKPOINT)).unwrap(), // a pre-epoch log
            Some(text) => fs::write(dir.path().join(CHECKPOINT), text).unwrap(),
        }
        let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
        assert_eq!(log.epoch_entries(), expected, "after {damage:?}");
        assert_consistent(&log);
        log.close().unwrap();
    }
}

// ------------------------------------------------------------------ crash states of truncation

#[test]
fn crash_after_deleting_later_segments_before_cutting_the_holder_reopens_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    // truncate_to(5): recovery point lowered, segments 8 and 6 deleted (newest first), the
    // holder (4, offsets 4..=5) not yet cut, the checkpoint not yet written.
    as_crashed(dir.path(), 5);
    delete_segment(dir.path(), 8);
    delete_segment(dir.path(), 6);
    fs::write(dir.path().join(CHECKPOINT), old).unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!(log.log_end_offset().get(), 6);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4)]);
    assert_consistent(&log);
}

#[test]
fn crash_after_the_cut_before_the_checkpoint_reopens_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    log.truncate_to(Offset::new(4)).unwrap();
    drop(log);
    // The cut is on disk; the checkpoint still lists epochs 3 and 5.
    fs::write(dir.path().join(CHECKPOINT), old).unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!(log.log_end_offset().get(), 4);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0)]);
    assert_consistent(&log);
}

#[test]
fn checkpoint_written_before_the_cut_reopens_consistent() {
    // Not an order the log uses, but a checkpoint behind the batches (here: already truncated
    // while the records are all there) must not survive open.
    let dir = tempfile::tempdir().unwrap();
    five_segment_log(dir.path());
    as_crashed(dir.path(), 4);
    fs::write(dir.path().join(CHECKPOINT), "0\n1\n0 0\n").unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!(log.log_end_offset().get(), 10);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4), entry(5, 8)]);
    assert_consistent(&log);
}

#[test]
fn crash_in_the_middle_of_a_cut_segment_reopens_consistent() {
    // The holder's data file torn inside its last batch (a cut that was not fsynced, or a
    // torn append of a new epoch whose entry was already durable).
    let dir = tempfile::tempdir().unwrap();
    five_segment_log(dir.path());
    as_crashed(dir.path(), 8);
    let last = segment_file(dir.path(), 8);
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 3).unwrap();
    fs::write(dir.path().join(CHECKPOINT), "0\n4\n0 0\n3 4\n5 8\n9 10\n").unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!(log.log_end_offset().get(), 8);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4)]);
    assert_consistent(&log);
    lead(&log, &[9]);
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4), entry(9, 8)]);
}

#[test]
fn crash_during_restart_at_before_old_segments_go_keeps_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    // restart_at(1000): the new segment exists, none of the old ones was deleted yet.
    as_crashed(dir.path(), 10);
    fs::write(segment_file(dir.path(), 1000), b"").unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (0, 10));
    assert_consistent(&log);
    drop(log);
    // ... some old ones deleted (newest first): a dense prefix stays.
    as_crashed(dir.path(), 10);
    fs::write(segment_file(dir.path(), 1000), b"").unwrap();
    delete_segment(dir.path(), 8);
    delete_segment(dir.path(), 6);
    fs::write(dir.path().join(CHECKPOINT), &old).unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (0, 6));
    assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(3, 4)]);
    assert_consistent(&log);
}

#[test]
fn crash_during_restart_at_after_old_segments_went_reopens_empty_at_the_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    as_crashed(dir.path(), 10);
    fs::write(segment_file(dir.path(), 1000), b"").unwrap();
    for base in [8, 6, 4, 2, 0] {
        delete_segment(dir.path(), base);
    }
    fs::write(dir.path().join(CHECKPOINT), old).unwrap(); // not yet cleared
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (1000, 1000));
    assert_eq!(log.epoch_entries(), vec![]);
    assert_consistent(&log);
}

#[test]
fn a_fully_truncated_log_with_no_segment_left_reopens_empty() {
    // What the old truncate_fully could leave (every segment deleted, none created yet).
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    as_crashed(dir.path(), 0);
    for base in [8, 6, 4, 2, 0] {
        delete_segment(dir.path(), base);
    }
    fs::write(dir.path().join(CHECKPOINT), old).unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (0, 0));
    assert_eq!(log.epoch_entries(), vec![]);
    assert_consistent(&log);
}

#[test]
fn crash_during_truncate_below_the_start_reopens_consistent() {
    // truncate_to(1) on a log starting at 4: the new segment 1 was created in front of the
    // old ones (recovery point lowered to 1), none deleted yet.
    let dir = tempfile::tempdir().unwrap();
    let old = five_segment_log(dir.path());
    delete_segment(dir.path(), 0);
    delete_segment(dir.path(), 2);
    as_crashed(dir.path(), 1);
    fs::write(segment_file(dir.path(), 1), b"").unwrap();
    fs::write(dir.path().join(CHECKPOINT), old).unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (1, 1));
    assert_eq!(log.epoch_entries(), vec![]);
    assert_consistent(&log);
}

#[test]
fn an_unwritable_checkpoint_refuses_new_epochs_and_is_rewritten_once_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    lead(&log, &[1, 1, 2]);
    // A directory where the temporary file goes: every checkpoint write fails.
    let blocker = dir.path().join(format!("{CHECKPOINT}.tmp"));
    fs::create_dir(&blocker).unwrap();
    let err = log.append_with_leader_epoch(simple_batch(1), LeaderEpoch::new(3)).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    assert_eq!(log.log_end_offset().get(), 6, "nothing written without a durable entry");
    lead(&log, &[2]); // the current epoch needs no write
    // A truncation cuts the log and the answers, and reports the stale file.
    assert!(log.truncate_to(Offset::new(4)).is_err());
    assert_eq!(log.log_end_offset().get(), 4);
    assert_eq!(log.epoch_entries(), vec![entry(1, 0)]);
    assert_eq!(checkpoint_entries(dir.path()), vec![entry(1, 0), entry(2, 4)], "stale");
    fs::remove_dir(&blocker).unwrap();
    lead(&log, &[1]); // no new epoch, but the stale file is rewritten first
    assert_eq!(checkpoint_entries(dir.path()), vec![entry(1, 0)]);
    lead(&log, &[3]);
    assert_consistent(&log);
}
