//! Bringing a log directory back to a consistent state on open: the clean-shutdown marker, the
//! recovery-point checkpoint, validation of every segment written since the last flush (or of
//! the active segment's tail after a clean shutdown), truncation at the first torn or corrupt
//! batch, and index rebuilds.

use std::path::Path;
use std::sync::Arc;

use strom_format::Offset;

use crate::cleaner;
use crate::error::IoContext;
use crate::segment::{LOG_SUFFIX, LogSegment, ScanStart, parse_file_name};
use crate::storage::{OpenMode, Storage, read_small, remove_if_exists, write_atomically};
use crate::{Clock, LogConfig, LogError};

/// Written by a clean close, removed on open.
pub(crate) const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
/// The offset below which everything was fsynced when it was written.
pub(crate) const RECOVERY_POINT: &str = "recovery-point";
const RECOVERY_POINT_TMP: &str = "recovery-point.tmp";
const RECOVERY_POINT_PREFIX: &str = "strom-recovery-point v1 ";

/// The result of recovery: the segments, oldest first (never empty), and the writer's state
/// for the active segment.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Arc<LogSegment>>,
    pub(crate) bytes_since_index: u64,
    /// The cleaner's first dirty offset: batches up to it may have offset gaps.
    pub(crate) cleaned_to: Offset,
    /// The log start offset: the first segment's base, or above it, inside that segment,
    /// when a record deletion moved it there (`log_start::StartKind::Within`).
    pub(crate) start: Offset,
}

/// fsyncs a directory, making file creations, deletions and renames in it durable.
pub(crate) fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    storage.sync_dir(dir).ctx(|| format!("fsync directory {}", dir.display()))
}

/// Reads the recovery point; `None` when it is missing or unreadable (recover everything).
pub(crate) fn read_recovery_point(storage: &dyn Storage, dir: &Path) -> Option<Offset> {
    let text = read_small(storage, &dir.join(RECOVERY_POINT), 256)?;
    let value = text.strip_prefix(RECOVERY_POINT_PREFIX)?.strip_suffix('\n')?;
    value.parse::<i64>().ok().filter(|v| *v >= 0).map(Offset::new)
}

/// Writes the recovery point through a temporary file and a rename, so the file always holds
/// either the old or the new value. With `durable` the rename is fsynced too.
pub(crate) fn write_recovery_point(
    storage: &dyn Storage,
    dir: &Path,
    value: Offset,
    durable: bool,
) -> Result<(), LogError> {
    let content = format!("{RECOVERY_POINT_PREFIX}{value}\n");
    write_atomically(storage, dir, RECOVERY_POINT_TMP, RECOVERY_POINT, content.as_bytes(), durable)
}

/// Writes the clean-shutdown marker durably.
pub(crate) fn write_clean_marker(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    let path = dir.join(CLEAN_SHUTDOWN);
    storage
        .open(&path, OpenMode::Truncate)
        .and_then(|f| f.sync_data())
        .ctx(|| format!("create {}", path.display()))?;
    sync_dir(storage, dir)
}

/// Loads and repairs every segment of `dir`.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
    clock: &dyn Clock,
) -> Result<Recovered, LogError> {
    let marker = dir.join(CLEAN_SHUTDOWN);
    let clean = storage.exists(&marker);
    if clean {
        // Removed before anything changes, so a crash during this open recovers fully.
        storage.remove_file(&marker).ctx(|| format!("remove {}", marker.display()))?;
    }
    let recovery_point = if clean { None } else { read_recovery_point(storage, dir) };
    // A cleaner pass cut short: discard its unfinished output, finish a committed swap.
    cleaner::recover_swaps(storage, dir)?;
    let cleaned_to = cleaner::read_checkpoint(storage, dir).unwrap_or(Offset::ZERO);

    let bases = list_segments(storage, dir)?;
    let mut segments = Vec::with_capacity(bases.len());
    let mut problems = Vec::with_capacity(bases.len());
    for base in bases {
        let (segment, problem) = LogSegment::open(storage, dir, base)?;
        segments.push(segment);
        problems.push(problem);
    }
    // A start a record deletion moved inside the first segment.
    let mut within = None;
    if let Some((start, kind)) = crate::log_start::read_with_kind(storage, dir) {
        let (deleted, restarted) =
            crate::log_start::apply(storage, dir, start, kind, &mut segments)?;
        problems.drain(..deleted);
        if restarted {
            return Ok(Recovered {
                segments: vec![Arc::new(segments.remove(0))],
                bytes_since_index: 0,
                // The truncation lowered the cleaner's checkpoint before it began.
                cleaned_to: cleaned_to.min(start),
                start,
            });
        }
        if kind == crate::log_start::StartKind::Within {
            within = Some(start);
        }
    }
    if segments.is_empty() {
        // Every segment is gone (a new log, or files lost): start where flushed records
        // ended, if the directory says, so offsets never go back under readers.
        let base = read_recovery_point(storage, dir).unwrap_or(Offset::ZERO);
        let segment = LogSegment::create(storage, dir, base)?;
        sync_dir(storage, dir)?;
        return Ok(Recovered {
            segments: vec![Arc::new(segment)],
            bytes_since_index: 0,
            cleaned_to: Offset::ZERO,
            start: base,
        });
    }
    // Segments from the one holding the recovery point on may hold unflushed, torn writes.
    let mut recover_from = if clean {
        segments.len()
    } else {
        let point = recovery_point.unwrap_or(Offset::ZERO);
        segments.iter().rposition(|s| s.base() <= point).unwrap_or(0)
    };
    if !clean {
        tracing::info!(dir = %dir.display(), ?recovery_point,
            from_segment = recover_from, "log was not closed cleanly; recovering");
    }

    let interval = config.index_interval_bytes;
    let mut bytes_since_index = 0;
    let mut i = 0;
    let mut previous_next: Option<Offset> = None;
    while i < segments.len() {
        // An empty segment that is not the last, inside the range the previous one reaches:
        // the files of a roll that failed part-way (the log went on appending to the
        // previous segment and rolled later, at a higher base). Not data: deleted.
        let stray = segments.get(i).filter(|s| {
            s.is_empty() && i + 1 < segments.len() && previous_next.is_some_and(|n| n > s.base())
        });
        if let Some(stray) = stray {
            tracing::warn!(segment = %stray.path().display(),
                "deleting an empty segment left inside the previous one by a failed roll");
            stray.delete_files(storage)?;
            segments.remove(i);
            if i < problems.len() {
                problems.remove(i);
            }
            if i < recover_from {
                recover_from -= 1;
            }
            continue;
        }
        let next_base = segments.get(i + 1).map(LogSegment::base);
        let is_last = next_base.is_none();
        let in_recovery = i >= recover_from;
        let mut drop_later = false;
        let segment = &segments[i];
        let size = segment.size();
        // A gap up to the cleaner's first dirty offset is the cleaner's doing.
        let continues =
            |n: Offset| n == segment.base() || (n < segment.base() && segment.base() <= cleaned_to);
        if in_recovery && previous_next.is_some_and(|n| !continues(n)) {
            tracing::warn!(segment = %segment.path().display(), expected = ?previous_next,
                "segment does not continue the previous one; deleting it and every later one");
            drop_from(storage, &mut segments, i)?;
            break;
        }
        let problem = problems
            .get_mut(i)
            .and_then(Option::take)
            .or_else(|| if in_recovery { None } else { segment.check_indexes(next_base).err() });
        if in_recovery || problem.is_some() {
            if let Some(why) = &problem {
                tracing::warn!(segment = %segment.path().display(), %why, "rebuilding indexes");
            }
            let scan = segment.scan(
                ScanStart::segment_start(segment.base()),
                size,
                true,
                interval,
                cleaned_to,
            )?;
            segment.replace_indexes(scan.offset_entries, scan.time_entries)?;
            let mut next = scan.next_offset;
            let mut end = scan.end;
            if let Some(why) = scan.invalid {
                if in_recovery || is_last {
                    tracing::warn!(segment = %segment.path().display(), position = scan.end,
                        truncated_bytes = size - scan.end, %why,
                        "truncating the segment at its first invalid batch");
                    segment.truncate_file(scan.end)?;
                    drop_later = true;
                } else {
                    // Never delete data that was flushed before the last clean point; reads of
                    // the damaged range fail with LogError::Corrupt instead.
                    tracing::error!(segment = %segment.path().display(), position = scan.end, %why,
                        "corrupt batch in a flushed segment; reads of it will fail");
                    end = size;
                    next = next_base.unwrap_or(next);
                }
            } else if let Some(n) = next_base.filter(|n| {
                // A gap up to the cleaner's first dirty offset is the cleaner's doing.
                let cleaner_gap = *n > next && *n <= cleaned_to;
                // Runs past an empty next segment, which the loop deletes as a stray.
                let over_stray = next > *n
                    && segments.get(i + 1).is_some_and(|s| s.is_empty())
                    && i + 2 < segments.len();
                !in_recovery && *n != next && !cleaner_gap && !over_stray
            }) {
                // A hole before the next segment (a file cut at a batch boundary): reads of the
                // missing offsets fail with LogError::Corrupt.
                tracing::error!(segment = %segment.path().display(), ends_at = %next,
                    next_segment = %n, "flushed segment does not reach the next one");
                next = n;
            }
            let roll_basis = (end > 0).then(|| reopened_roll_basis(segment, clock));
            segment.set_recovered_state(end, next, scan.max_ts, roll_basis);
            bytes_since_index = scan.bytes_since_index;
            segment.flush()?;
        } else {
            // Trusted: walk only the tail after the last index entry, for the largest timestamp
            // and (in the active segment, whose tail a crash could have torn) the batches.
            let tail = segment.scan(segment.tail_start(), size, is_last, interval, cleaned_to)?;
            let mut end = size;
            let mut next = tail.next_offset;
            if let Some(why) = &tail.invalid {
                if is_last {
                    tracing::warn!(segment = %segment.path().display(), position = tail.end,
                        truncated_bytes = size - tail.end, %why,
                        "truncating the active segment at its first invalid batch");
                    segment.truncate_file(tail.end)?;
                    end = tail.end;
                } else {
                    tracing::error!(segment = %segment.path().display(), position = tail.end, %why,
                        "corrupt batch in a flushed segment; reads of it will fail");
                }
            }
            if let Some(n) = next_base {
                let gap_ok = next < n && n <= cleaned_to;
                // Runs past an empty next segment, which the loop deletes as a stray (above).
                let over_stray = next > n
                    && segments.get(i + 1).is_some_and(|s| s.is_empty())
                    && i + 2 < segments.len();
                if tail.invalid.is_none() && next != n && !gap_ok && !over_stray {
                    tracing::error!(segment = %segment.path().display(), ends_at = %next,
                        next_segment = %n, "segments are not contiguous");
                }
                if !gap_ok && !over_stray {
                    next = n;
                }
            }
            segment.extend_indexes(&tail.offset_entries, &tail.time_entries)?;
            let roll_basis =
                if is_last && end > 0 { Some(reopened_roll_basis(segment, clock)) } else { None };
            segment.set_recovered_state(end, next, tail.max_ts, roll_basis);
            bytes_since_index = tail.bytes_since_index;
            if is_last {
                segment.flush()?;
            }
        }
        previous_next = Some(segment.next_offset());
        if drop_later {
            drop_from(storage, &mut segments, i + 1)?;
        }
        i += 1;
    }
    sync_dir(storage, dir)?;
    let first_base = segments.first().map_or(Offset::ZERO, LogSegment::base);
    let mut start = first_base;
    if let Some(within) = within.filter(|w| *w > first_base) {
        start = within;
        if crate::log_start::restart_if_behind(storage, dir, within, &mut segments)? {
            bytes_since_index = 0;
        }
    }
    Ok(Recovered {
        segments: segments.into_iter().map(Arc::new).collect(),
        bytes_since_index,
        cleaned_to,
        start,
    })
}

/// The roll basis (start of `segment_ms`) of a reopened non-empty segment: when its file was
/// created, or "now" where the file system does not say (a restart then restarts its age).
/// Record timestamps are not used: they are the producers' clocks, not the log's.
fn reopened_roll_basis(segment: &LogSegment, clock: &dyn Clock) -> i64 {
    let now = clock.now_ms();
    segment.created_ms().map_or(now, |created| created.min(now))
}

/// Deletes segments `from..` (newest first, so a crash leaves a dense prefix).
fn drop_from(
    storage: &dyn Storage,
    segments: &mut Vec<LogSegment>,
    from: usize,
) -> Result<(), LogError> {
    while segments.len() > from {
        if let Some(segment) = segments.pop() {
            tracing::warn!(segment = %segment.path().display(), "deleting segment during recovery");
            segment.delete_files(storage)?;
        }
    }
    Ok(())
}

/// Base offsets of the `.log` files in `dir`, sorted. Index files without a `.log` and stale
/// temporary files are removed; every other name is ignored.
fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    let entries = storage.list_dir(dir).ctx(|| format!("list {}", dir.display()))?;
    for entry in entries {
        let name = entry.name.as_str();
        if name == RECOVERY_POINT_TMP || name == crate::log_start::LOG_START_OFFSET_TMP {
            remove(storage, &dir.join(name))?;
            continue;
        }
        match parse_file_name(name) {
            Some((base, LOG_SUFFIX)) if entry.is_file => logs.push(base),
            Some((base, _)) if entry.is_file => indexes.push((base, dir.join(name))),
            _ => {}
        }
    }
    logs.sort();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            tracing::warn!(file = %path.display(), "removing an index without a segment");
            remove(storage, &path)?;
        }
    }
    Ok(logs)
}

fn remove(storage: &dyn Storage, path: &Path) -> Result<(), LogError> {
    remove_if_exists(storage, path).map(drop).ctx(|| format!("remove {}", path.display()))
}
