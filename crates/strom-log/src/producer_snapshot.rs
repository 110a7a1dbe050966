//! Producer-state snapshot files (Kafka's `<offset>.snapshot`): the producer state of every
//! batch below `offset`, written at segment rolls (so one per segment base, as in Kafka) and on
//! close, so opening a log replays only the batches after the latest snapshot, and a
//! truncation reloads from the snapshot of the segment it cuts into. Retention deletes the
//! snapshots below the log start with their segments. Invariant: a snapshot never describes batches the
//! log does not hold; snapshots above the log end (a crash cut the log after one was written,
//! or a truncation) are deleted before any is loaded.

use std::path::{Path, PathBuf};

use strom_format::Offset;

use crate::LogError;
use crate::error::IoContext;
use crate::producer_state::ProducerStateManager;
use crate::recovery::sync_dir;
use crate::storage::{OpenMode, Storage, remove_if_exists};

const SUFFIX: &str = "snapshot";
const TMP: &str = "producer.snapshot.tmp";

fn path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}.{SUFFIX}", offset.get()))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut offsets = Vec::new();
    for entry in storage.list_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let Some((stem, suffix)) = entry.name.split_once('.') else {
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
    storage: &dyn Storage,
    dir: &Path,
    offset: Offset,
    state: &ProducerStateManager,
) -> Result<(), LogError> {
    let name = format!("{:020}.{SUFFIX}", offset.get());
    crate::storage::write_atomically(storage, dir, TMP, &name, &state.encode(), true)
}

/// Deletes the snapshots below `start` (retention deleted their segments), keeping the latest
/// of them when none is at or above `start`, so a reload still finds a base.
pub(crate) fn remove_below(
    storage: &dyn Storage,
    dir: &Path,
    start: Offset,
) -> Result<(), LogError> {
    let all = list(storage, dir)?;
    let below = all.partition_point(|o| *o < start);
    let keep_one = below == all.len();
    let doomed = all.get(..below.saturating_sub(usize::from(keep_one))).unwrap_or_default();
    for offset in doomed {
        remove(storage, dir, *offset)?;
    }
    Ok(())
}

/// Reads the snapshot at `offset`; a damaged one is an error naming the file.
pub(crate) fn read(
    storage: &dyn Storage,
    dir: &Path,
    offset: Offset,
) -> Result<ProducerStateManager, LogError> {
    let p = path(dir, offset);
    let bytes = storage
        .open(&p, OpenMode::Read)
        .and_then(|f| f.read_prefix(u64::MAX))
        .ctx(|| format!("read {}", p.display()))?;
    ProducerStateManager::decode(&bytes).map_err(|reason| LogError::Corrupt {
        path: p,
        position: 0,
        reason,
    })
}

/// Deletes the snapshot at `offset` (absent is fine).
pub(crate) fn remove(storage: &dyn Storage, dir: &Path, offset: Offset) -> Result<(), LogError> {
    let p = path(dir, offset);
    remove_if_exists(storage, &p).map(drop).ctx(|| format!("remove {}", p.display()))
}

/// Deletes every snapshot above `end`: they describe batches the log no longer holds.
pub(crate) fn remove_above(storage: &dyn Storage, dir: &Path, end: Offset) -> Result<(), LogError> {
    let stale: Vec<Offset> = list(storage, dir)?.into_iter().filter(|o| *o > end).collect();
    for offset in &stale {
        remove(storage, dir, *offset)?;
    }
    // Durably gone: a snapshot coming back after a crash could describe other batches than
    // the ones later written at its offsets.
    if stale.is_empty() { Ok(()) } else { sync_dir(storage, dir) }
}
