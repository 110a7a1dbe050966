//! Producer-state snapshot files (Kafka's `<offset>.snapshot`): the producer state of every
//! batch below `offset`, written at segment rolls (so one per segment base, as in Kafka) and on
//! close, so opening a log replays only the batches after the latest snapshot, and a
//! truncation reloads from the snapshot of the segment it cuts into. Retention deletes the
//! snapshots below the log start with their segments. Invariant: a snapshot never describes batches the
//! log does not hold; snapshots above the log end (a crash cut the log after one was written,
//! or a truncation) are deleted before any is loaded.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use strom_format::Offset;

use crate::LogError;
use crate::error::IoContext;
use crate::producer_state::ProducerStateManager;
use crate::recovery::sync_dir;

const SUFFIX: &str = "snapshot";
const TMP: &str = "producer.snapshot.tmp";

fn path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}.{SUFFIX}", offset.get()))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let name = entry.file_name();
        let Some((stem, suffix)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        if suffix == SUFFIX
            && stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(offset) = stem.parse::<i64>()
        {
            offsets.push(Offset::new(offset));
        }
    }
    offsets.sort();
    Ok(offsets)
}

/// Writes `state` as the snapshot at `offset` (temporary file, fsync, rename, directory
/// fsync: a crash leaves no snapshot or a whole one).
pub(crate) fn write(
    dir: &Path,
    offset: Offset,
    state: &ProducerStateManager,
) -> Result<(), LogError> {
    let tmp = dir.join(TMP);
    let mut file = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
    file.write_all(&state.encode())
        .and_then(|()| file.sync_data())
        .ctx(|| format!("write {}", tmp.display()))?;
    let target = path(dir, offset);
    fs::rename(&tmp, &target).ctx(|| format!("rename {}", tmp.display()))?;
    sync_dir(dir)
}

/// Deletes the snapshots below `start` (retention deleted their segments), keeping the latest
/// of them when none is at or above `start`, so a reload still finds a base.
pub(crate) fn remove_below(dir: &Path, start: Offset) -> Result<(), LogError> {
    let all = list(dir)?;
    let below = all.partition_point(|o| *o < start);
    let keep_one = below == all.len();
    let doomed = all.get(..below.saturating_sub(usize::from(keep_one))).unwrap_or_default();
    for offset in doomed {
        remove(dir, *offset)?;
    }
    Ok(())
}

/// Reads the snapshot at `offset`; a damaged one is an error naming the file.
pub(crate) fn read(dir: &Path, offset: Offset) -> Result<ProducerStateManager, LogError> {
    let p = path(dir, offset);
    let bytes = fs::read(&p).ctx(|| format!("read {}", p.display()))?;
    ProducerStateManager::decode(&bytes).map_err(|reason| LogError::Corrupt {
        path: p,
        position: 0,
        reason,
    })
}

/// Deletes the snapshot at `offset` (absent is fine).
pub(crate) fn remove(dir: &Path, offset: Offset) -> Result<(), LogError> {
    let p = path(dir, offset);
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("remove {}", p.display()), e)),
    }
}

/// Deletes every snapshot above `end`: they describe batches the log no longer holds.
pub(crate) fn remove_above(dir: &Path, end: Offset) -> Result<(), LogError> {
    let stale: Vec<Offset> = list(dir)?.into_iter().filter(|o| *o > end).collect();
    for offset in &stale {
        remove(dir, *offset)?;
    }
    // Durably gone: a snapshot coming back after a crash could describe other batches than
    // the ones later written at its offsets.
    if stale.is_empty() { Ok(()) } else { sync_dir(dir) }
}
