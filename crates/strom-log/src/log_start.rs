//! The log-start-offset checkpoint (Kafka's `log-start-offset-checkpoint`, one file per log
//! here): the first offset of the log, written durably *before* a full truncation
//! ([`crate::Log::restart_at`], a follower whose leader's log start passed its end) starts
//! rewriting the directory, *before* records are deleted below an offset
//! ([`crate::Log::delete_records_before`], which may move the start inside a segment), and
//! after retention moves the start.
//!
//! The file says which of the two it was written for ([`StartKind`]), because recovery must
//! treat a first segment that begins below the checkpoint differently: after an interrupted
//! full truncation its records are the old log's and go; after a record deletion they are the
//! log's own, and only those below the start are hidden.
//!
//! Why: the segment files alone name the log start, and a crash between creating the new
//! empty segment and deleting the old ones (or before either) used to reopen the *old* log,
//! with offsets back below the new start (a new log at 0 in the worst case), under consumers
//! and followers that had already moved past them. With the checkpoint, recovery completes
//! the interrupted operation instead (`apply` below); and a directory that lost every segment
//! reopens empty at the checkpointed start rather than at 0.

use std::path::Path;

use strom_format::Offset;

use crate::LogError;
use crate::recovery::sync_dir;
use crate::segment::LogSegment;
use crate::storage::{Storage, read_small, write_atomically};

/// The checkpoint's file name in the log directory.
pub(crate) const LOG_START_OFFSET: &str = "log-start-offset";
pub(crate) const LOG_START_OFFSET_TMP: &str = "log-start-offset.tmp";
const PREFIX: &str = "strom-log-start-offset v1 ";
/// Marks a checkpoint written by a record deletion (a start that may lie inside a segment).
/// A file without a mark is read as before marks existed: a truncation's or retention's start.
const WITHIN_SUFFIX: &str = " within";
/// Marks a checkpoint written as a full truncation begins: every segment is old.
const RESTART_SUFFIX: &str = " restart";

/// What wrote the checkpoint, which decides how recovery treats a segment starting below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartKind {
    /// A full truncation or retention: a segment that still begins below the start is the
    /// remains of a truncation cut short, and the log restarts empty at the start.
    Truncation,
    /// A record deletion: the segment holding the start is kept and the records below the
    /// start are hidden (the start lies inside it).
    Within,
    /// A full truncation under way ([`crate::Log::restart_at`]): every segment on disk is
    /// the old log's, whatever its base, and the log restarts empty at the start. Replaced by
    /// a [`StartKind::Truncation`] checkpoint once the new segment exists, before it takes an
    /// append. (Unmarked, a crash could reopen the old first segment's records when the start
    /// equals its base, below a start that a record deletion had moved inside it.)
    Restart,
}

/// Reads the checkpoint and the kind of operation that wrote it; `None` when it is missing or
/// unreadable (the segments decide).
pub(crate) fn read_with_kind(storage: &dyn Storage, dir: &Path) -> Option<(Offset, StartKind)> {
    let text = read_small(storage, &dir.join(LOG_START_OFFSET), 256)?;
    let value = text.strip_prefix(PREFIX)?.strip_suffix('\n')?;
    let (value, kind) = if let Some(v) = value.strip_suffix(WITHIN_SUFFIX) {
        (v, StartKind::Within)
    } else if let Some(v) = value.strip_suffix(RESTART_SUFFIX) {
        (v, StartKind::Restart)
    } else {
        (value, StartKind::Truncation)
    };
    let value = value.parse::<i64>().ok().filter(|v| *v >= 0).map(Offset::new)?;
    Some((value, kind))
}

/// Writes the checkpoint durably (temporary file, fsync, rename, directory fsync): when it
/// returns, a crash reopens with this value.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, value: Offset) -> Result<(), LogError> {
    write_kind(storage, dir, value, StartKind::Truncation)
}

/// [`write`] for the given kind of operation.
pub(crate) fn write_kind(
    storage: &dyn Storage,
    dir: &Path,
    value: Offset,
    kind: StartKind,
) -> Result<(), LogError> {
    let suffix = match kind {
        StartKind::Truncation => "",
        StartKind::Within => WITHIN_SUFFIX,
        StartKind::Restart => RESTART_SUFFIX,
    };
    let content = format!("{PREFIX}{value}{suffix}\n");
    write_atomically(storage, dir, LOG_START_OFFSET_TMP, LOG_START_OFFSET, content.as_bytes(), true)
}

/// Brings freshly opened segments (oldest first, before their recovery) in line with the
/// checkpointed `start`:
/// - segments wholly below it (the next segment starts at or below it) are the remains of a
///   retention pass or a full truncation that a crash interrupted: deleted, oldest first;
/// - if nothing is left, or (for a [`StartKind::Truncation`]) what is left still starts below
///   it, a full truncation to `start` was interrupted before its new segment existed: every
///   segment goes and the log restarts, empty, at `start`. After a [`StartKind::Within`] the
///   first segment may begin below `start`: it holds the start, and is kept (the log end may
///   still turn out to be below `start` after recovery: see [`restart_if_behind`]). After a
///   [`StartKind::Restart`] every segment goes, and the checkpoint is then rewritten plain.
///
/// Returns how many of the leading segments were deleted, and whether the log was restarted
/// (then `segments` holds the one new empty segment).
pub(crate) fn apply(
    storage: &dyn Storage,
    dir: &Path,
    start: Offset,
    kind: StartKind,
    segments: &mut Vec<LogSegment>,
) -> Result<(usize, bool), LogError> {
    let below = segments.iter().skip(1).take_while(|s| s.base() <= start).count();
    for segment in segments.drain(..below) {
        tracing::warn!(segment = %segment.path().display(), %start,
            "deleting a segment below the checkpointed log start (an interrupted retention or truncation)");
        segment.delete_files(storage)?;
    }
    let restart = match kind {
        StartKind::Truncation => segments.first().is_none_or(|s| s.base() < start),
        StartKind::Within => segments.is_empty(),
        StartKind::Restart => true,
    };
    if restart {
        while let Some(segment) = segments.pop() {
            tracing::warn!(segment = %segment.path().display(), %start,
                "completing an interrupted full truncation: deleting the old segment");
            segment.delete_files(storage)?;
        }
        segments.push(LogSegment::create(storage, dir, start)?);
    }
    if below > 0 || restart {
        sync_dir(storage, dir)?;
    }
    if kind == StartKind::Restart {
        // The truncation is complete (a crash before this line does it again): the new
        // segment may now take appends, which a `Restart` mark would delete.
        write(storage, dir, start)?;
    }
    Ok((below, restart))
}

/// After recovery of a log whose start a record deletion moved inside a segment: if the log
/// now ends below that start (a power cut lost unflushed records the deletion had passed),
/// no record of it may be served, so the log restarts, empty, at `start`; old segments go
/// newest first, so a crash part-way leaves segments that end below `start` again, and the
/// next open does the same. Returns whether it restarted.
pub(crate) fn restart_if_behind(
    storage: &dyn Storage,
    dir: &Path,
    start: Offset,
    segments: &mut Vec<LogSegment>,
) -> Result<bool, LogError> {
    if segments.last().is_some_and(|s| s.next_offset() >= start) {
        return Ok(false);
    }
    while let Some(segment) = segments.pop() {
        tracing::warn!(segment = %segment.path().display(), %start,
            "the log ends below its checkpointed start (records lost with a power cut): \
             deleting the segment");
        segment.delete_files(storage)?;
    }
    segments.push(LogSegment::create(storage, dir, start)?);
    sync_dir(storage, dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use strom_format::{BatchBuilder, Compression};

    use std::fs;

    use super::*;
    use crate::storage::OsStorage;
    use crate::{Log, LogConfig};

    fn write(dir: &Path, value: Offset) -> Result<(), LogError> {
        super::write(&OsStorage, dir, value)
    }

    fn read(dir: &Path) -> Option<Offset> {
        super::read_with_kind(&OsStorage, dir).map(|(value, _)| value)
    }

    fn batch(n: usize) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..n {
            b.append(i as i64, None, Some(b"v".as_slice()), &[]);
        }
        b.build().expect("batch")
    }

    /// A closed log of 4 segments of 10 records each: 0, 10, 20, 30 (end 40).
    fn four_segments(dir: &Path) -> LogConfig {
        let config = LogConfig { segment_bytes: 1, ..LogConfig::default() };
        let log = Log::open(dir, config.clone()).expect("open");
        for _ in 0..4 {
            log.append(batch(10)).expect("append");
        }
        log.close().expect("close");
        config
    }

    fn bounds(log: &Log) -> (i64, i64, usize) {
        (log.log_start_offset().get(), log.log_end_offset().get(), log.segment_count())
    }

    #[test]
    fn a_full_truncation_cut_short_before_any_file_changed_completes_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = four_segments(dir.path());
        // The crash point: the checkpoint is written, nothing else is.
        write(dir.path(), Offset::new(500)).expect("checkpoint");
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(bounds(&log), (500, 500, 1), "restarted at the new start, not at 0");
        assert_eq!(log.append(batch(1)).expect("append").first_offset.get(), 500);
    }

    #[test]
    fn a_full_truncation_cut_short_after_its_new_segment_completes_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = four_segments(dir.path());
        write(dir.path(), Offset::new(500)).expect("checkpoint");
        LogSegment::create(&OsStorage, dir.path(), Offset::new(500)).expect("the new segment");
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(bounds(&log), (500, 500, 1));
    }

    #[test]
    fn a_truncation_onto_an_existing_segment_keeps_offsets_at_or_above_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = four_segments(dir.path());
        // `restart_at(20)` reuses segment 20's name; cut short before the old ones went.
        write(dir.path(), Offset::new(20)).expect("checkpoint");
        let log = Log::open(dir.path(), config).expect("reopen");
        let (start, end, _) = bounds(&log);
        assert_eq!(start, 20, "nothing below the checkpointed start comes back");
        assert!(end >= 20);
    }

    #[test]
    fn an_interrupted_retention_pass_finishes_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = four_segments(dir.path());
        write(dir.path(), Offset::new(20)).expect("checkpoint");
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(bounds(&log), (20, 40, 2));
        assert_eq!(log.read(Offset::new(20), 1 << 20).expect("read").log_start_offset.get(), 20);
    }

    #[test]
    fn retention_and_restart_write_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            LogConfig { segment_bytes: 1, retention_bytes: Some(1), ..LogConfig::default() };
        let log = Log::open(dir.path(), config.clone()).expect("open");
        for _ in 0..3 {
            log.append(batch(2)).expect("append");
        }
        assert_eq!(read(dir.path()), None, "nothing moved the start yet");
        assert_eq!(log.enforce_retention().expect("retention"), 2);
        assert_eq!(read(dir.path()), Some(Offset::new(4)));
        log.restart_at(Offset::new(90)).expect("restart");
        assert_eq!(read(dir.path()), Some(Offset::new(90)));
        log.close().expect("close");
    }

    #[test]
    fn a_directory_that_lost_every_segment_reopens_at_the_checkpoint_not_at_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = four_segments(dir.path());
        write(dir.path(), Offset::new(30)).expect("checkpoint");
        for entry in fs::read_dir(dir.path()).expect("list") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "log") {
                fs::remove_file(path).expect("remove");
            }
        }
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(bounds(&log), (30, 30, 1));
    }

    #[test]
    fn a_start_below_the_first_segment_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = four_segments(dir.path());
        // A follower's truncation below its start lowers the checkpoint first; cut short, the
        // old log is still whole and dense.
        write(dir.path(), Offset::ZERO).expect("checkpoint");
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(bounds(&log), (0, 40, 4));
        assert_eq!(read(dir.path()), Some(Offset::ZERO));
        assert_eq!(read(Path::new("/nonexistent")), None);
    }
}
