//! The leader-epoch cache of a log (Kafka's `LeaderEpochFileCache`, KIP-101/KIP-279): which
//! leader epoch began at which offset, in memory and in the `leader-epoch-checkpoint` file of
//! the partition directory, so a follower can ask a leader where its epoch ended and truncate
//! to it. [`Log`](crate::Log) owns one and calls it under its writer lock; the file is only
//! written when the entries change (a leader change, a truncation, retention), never per
//! append.
//!
//! Invariant: epochs strictly increase and start offsets never decrease, entry to entry, and
//! every entry starts at or after the log start offset and (once the log is reopened) below
//! the log end offset. Crash order: an entry is made durable before the batches it describes
//! are written, and dropped after the records it describes are cut, so the file can only hold
//! entries at or above the log end after a crash, which [`LeaderEpochCache::open`] drops.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use strom_format::{LeaderEpoch, Offset};

use crate::segment::LogSegment;
use crate::storage::{OpenMode, Storage, remove_if_exists, write_atomically};
use crate::{Log, LogError};

/// The checkpoint file, in Kafka's text format: `0` (version), the entry count, then one
/// `epoch start_offset` line per entry.
pub(crate) const CHECKPOINT: &str = "leader-epoch-checkpoint";
const CHECKPOINT_TMP: &str = "leader-epoch-checkpoint.tmp";
const VERSION: &str = "0";
/// Largest checkpoint file read: far more entries than any real partition has epochs.
const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

/// One entry of the leader-epoch cache: `epoch` began at `start_offset`.
///
/// ```
/// use strom_format::{BatchBuilder, Compression, LeaderEpoch, Offset};
/// use strom_log::{EpochEntry, Log, LogConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(0, None, Some(b"v".as_slice()), &[]);
/// log.append_with_leader_epoch(b.build().unwrap(), LeaderEpoch::new(2)).unwrap();
/// let first = EpochEntry { epoch: LeaderEpoch::new(2), start_offset: Offset::ZERO };
/// assert_eq!(log.epoch_entries(), vec![first]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// The first offset written in that epoch.
    pub start_offset: Offset,
}

/// The entries, oldest first, with the module's invariant. Pure: no I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochEntries(Vec<EpochEntry>);

impl EpochEntries {
    pub(crate) fn as_slice(&self) -> &[EpochEntry] {
        &self.0
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.0.last().copied()
    }

    /// Records that `epoch` begins at `start` if it is newer than the latest (Kafka's
    /// `assign`); returns whether it was added. Negative epochs mean "none" (batches written
    /// before epochs existed) and are ignored. An epoch below the latest is refused.
    pub(crate) fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> Result<bool, LogError> {
        if epoch.get() < 0 {
            return Ok(false);
        }
        if let Some(latest) = self.latest() {
            if epoch < latest.epoch {
                return Err(LogError::EpochRegression { epoch, latest: latest.epoch });
            }
            if epoch == latest.epoch {
                return Ok(false);
            }
            // The log assigns offsets upwards from its end, and no entry is ever above the
            // end when a write starts: a smaller start would be a bug in the log itself.
            assert!(
                start >= latest.start_offset,
                "epoch {epoch} would start at {start}, below epoch {} at {}",
                latest.epoch,
                latest.start_offset
            );
        }
        self.0.push(EpochEntry { epoch, start_offset: start });
        Ok(true)
    }

    /// Drops the entries that start at or after `end` (Kafka's `truncateFromEnd`): the log
    /// was cut there. Returns whether anything changed.
    pub(crate) fn truncate_from_end(&mut self, end: Offset) -> bool {
        let keep = self.0.partition_point(|e| e.start_offset < end);
        let changed = keep < self.0.len();
        self.0.truncate(keep);
        changed
    }

    /// The log now starts at `start` (Kafka's `truncateFromStart`): entries wholly before it
    /// go and the last one at or before it is moved to begin at `start`. Returns whether
    /// anything changed.
    pub(crate) fn truncate_from_start(&mut self, start: Offset) -> bool {
        let at_or_before = self.0.partition_point(|e| e.start_offset <= start);
        let Some(last) = at_or_before.checked_sub(1) else {
            return false;
        };
        let changed = last > 0 || self.0.first().is_some_and(|e| e.start_offset != start);
        self.0.drain(..last);
        if let Some(first) = self.0.first_mut() {
            first.start_offset = start;
        }
        changed
    }

    /// The answer to OffsetForLeaderEpoch (see [`Log::end_offset_for_epoch`]).
    ///
    /// [`Log::end_offset_for_epoch`]: crate::Log::end_offset_for_epoch
    pub(crate) fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let after = self.0.partition_point(|e| e.epoch <= epoch);
        let found = self.0.get(after.checked_sub(1)?)?;
        let end = self.0.get(after).map_or(log_end, |next| next.start_offset);
        // A reader racing with an append may see the new entry before the log end moves.
        Some((found.epoch, end.max(found.start_offset)))
    }

    fn holds_invariant(&self) -> bool {
        self.0.iter().all(|e| e.epoch.get() >= 0 && e.start_offset.get() >= 0)
            && self.0.windows(2).all(|w| match w {
                [a, b] => a.epoch < b.epoch && a.start_offset <= b.start_offset,
                _ => true,
            })
    }

    /// Kafka's checkpoint text.
    pub(crate) fn encode(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.0.len());
        for e in &self.0 {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    /// Parses checkpoint text; `Err(why)` for anything but a well-formed file whose entries
    /// hold the invariant.
    pub(crate) fn decode(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        match lines.next() {
            Some(VERSION) => {}
            other => return Err(format!("version line {other:?}, expected {VERSION:?}")),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| "missing or invalid entry count".to_string())?;
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate() {
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("entry {i}: {line:?} is not `epoch offset`"));
            };
            let epoch: i32 = epoch.parse().map_err(|_| format!("entry {i}: bad epoch"))?;
            let offset: i64 = offset.parse().map_err(|_| format!("entry {i}: bad offset"))?;
            entries.push(EpochEntry {
                epoch: LeaderEpoch::new(epoch),
                start_offset: Offset::new(offset),
            });
        }
        if entries.len() != count {
            return Err(format!("{} entries where the header says {count}", entries.len()));
        }
        let entries = EpochEntries(entries);
        if !entries.holds_invariant() {
            return Err("entries are not increasing in epoch and offset".into());
        }
        Ok(entries)
    }
}

/// The cache of one log: published entries for lock-free-ish readers, and the file.
#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// What readers see; replaced whole (copy-on-write) by the writer.
    entries: RwLock<Arc<EpochEntries>>,
    /// The file lags `entries` (its last write failed): the next change rewrites it, and an
    /// append waits for that to succeed.
    stale: AtomicBool,
}

/// What reading the checkpoint file found.
enum Stored {
    Missing,
    Corrupt(String),
    Entries(EpochEntries),
}

impl LeaderEpochCache {
    /// Loads the checkpoint of a recovered log spanning `start..end` in `segments`, or rebuilds
    /// it from the batch headers when it is missing (a log from before epochs were kept),
    /// unreadable, or behind the last batch's epoch. Entries at or above `end` (left by a
    /// crash) go, the first is moved to `start`, and the file is rewritten if that changed
    /// it. Fails only when the file cannot be written.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        segments: &[Arc<LogSegment>],
        start: Offset,
        end: Offset,
    ) -> Result<Self, LogError> {
        remove_stale_tmp(storage.as_ref(), dir);
        let stored = read_checkpoint(storage.as_ref(), dir);
        let (mut entries, on_disk) = match stored {
            Stored::Entries(e) => (e.clone(), Some(e)),
            Stored::Missing => {
                // A new (empty) log has nothing to rebuild: not worth a line per partition
                // when a topic or `__consumer_offsets` is created.
                if start == end {
                    tracing::debug!(dir = %dir.display(), "no leader-epoch checkpoint; empty log");
                } else {
                    tracing::info!(dir = %dir.display(), "no leader-epoch checkpoint; rebuilding it");
                }
                (rebuild(segments), None)
            }
            Stored::Corrupt(why) => {
                tracing::warn!(dir = %dir.display(), %why,
                    "corrupt leader-epoch checkpoint; rebuilding it from the batches");
                (rebuild(segments), None)
            }
        };
        // A checkpoint that misses the epoch of the last batch (written by another program,
        // or restored from elsewhere) would answer wrongly: trust the batches instead.
        if let Some(last) = last_batch_epoch(segments)
            && entries.latest().is_none_or(|l| l.epoch < last)
        {
            tracing::warn!(dir = %dir.display(), last_batch_epoch = %last,
                    "leader-epoch checkpoint is behind the log; rebuilding it");
            entries = rebuild(segments);
        }
        // Start first: on an empty log (start == end) nothing is left, as in the batches.
        entries.truncate_from_start(start);
        entries.truncate_from_end(end);
        if on_disk.as_ref() != Some(&entries) {
            write_checkpoint(storage.as_ref(), dir, &entries)?;
        }
        Ok(LeaderEpochCache {
            storage,
            dir: dir.to_path_buf(),
            entries: RwLock::new(Arc::new(entries)),
            stale: AtomicBool::new(false),
        })
    }

    /// The published entries.
    pub(crate) fn snapshot(&self) -> Arc<EpochEntries> {
        self.entries.read().clone()
    }

    /// Before batches are written: records each `(epoch, base offset)` whose epoch is newer
    /// than the latest and makes the file durable, then publishes. On an error nothing is
    /// published and the append must not be written. Caller holds the log's writer lock.
    pub(crate) fn record_append(
        &self,
        starts: impl Iterator<Item = (LeaderEpoch, Offset)> + Clone,
    ) -> Result<(), LogError> {
        let current = self.snapshot();
        let stale = self.stale.load(Ordering::Acquire);
        // The common case, every append of a leader in its epoch: no copy, no write.
        let latest = current.latest().map(|e| e.epoch);
        if !stale && starts.clone().all(|(epoch, _)| epoch.get() < 0 || Some(epoch) == latest) {
            return Ok(());
        }
        let mut next = EpochEntries::clone(&current);
        let mut changed = false;
        for (epoch, start) in starts {
            changed |= next.assign(epoch, start)?;
        }
        if changed || stale {
            // Nothing is published on failure, so the file is as stale as it was.
            self.write(&next)?;
            self.stale.store(false, Ordering::Release);
        }
        if changed {
            tracing::info!(dir = %self.dir.display(), latest = ?next.latest(), "new leader epoch");
            *self.entries.write() = Arc::new(next);
        }
        Ok(())
    }

    /// After the log was cut at `end`. Caller holds the log's writer lock.
    pub(crate) fn truncate_from_end(&self, end: Offset) -> Result<(), LogError> {
        self.change(|e| e.truncate_from_end(end))
    }

    /// After the log start moved to `start`. Caller holds the log's writer lock.
    pub(crate) fn truncate_from_start(&self, start: Offset) -> Result<(), LogError> {
        self.change(|e| e.truncate_from_start(start))
    }

    /// After every record was deleted. Caller holds the log's writer lock.
    pub(crate) fn clear(&self) -> Result<(), LogError> {
        self.change(|e| {
            let changed = !e.0.is_empty();
            e.0.clear();
            changed
        })
    }

    /// Applies a change the log has already made on disk: published at once (answers must
    /// follow the log), then written; a failed write leaves the file stale until a later
    /// change or append rewrites it.
    fn change(&self, f: impl FnOnce(&mut EpochEntries) -> bool) -> Result<(), LogError> {
        let mut next = EpochEntries::clone(&self.snapshot());
        let changed = f(&mut next);
        if !changed && !self.stale.load(Ordering::Acquire) {
            return Ok(());
        }
        *self.entries.write() = Arc::new(next.clone());
        let result = self.write(&next);
        self.stale.store(result.is_err(), Ordering::Release);
        result
    }

    fn write(&self, entries: &EpochEntries) -> Result<(), LogError> {
        debug_assert!(entries.holds_invariant(), "{entries:?}");
        write_checkpoint(self.storage.as_ref(), &self.dir, entries)
    }
}

impl Log {
    /// The newest leader epoch in the log, if any batch carries one.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, LeaderEpoch};
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.latest_epoch(), None);
    /// let mut b = BatchBuilder::new(Compression::None);
    /// b.append(0, None, Some(b"v".as_slice()), &[]);
    /// log.append_with_leader_epoch(b.build().unwrap(), LeaderEpoch::new(3)).unwrap();
    /// assert_eq!(log.latest_epoch(), Some(LeaderEpoch::new(3)));
    /// ```
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.snapshot().latest().map(|e| e.epoch)
    }

    /// Every entry of the leader-epoch cache, oldest first: where each epoch began.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, LeaderEpoch, Offset};
    /// use strom_log::{EpochEntry, Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append_with_leader_epoch(batch(3), LeaderEpoch::new(0)).unwrap(); // 0..=2
    /// log.append_with_leader_epoch(batch(2), LeaderEpoch::new(4)).unwrap(); // 3..=4
    /// let entry = |e, o| EpochEntry { epoch: LeaderEpoch::new(e), start_offset: Offset::new(o) };
    /// assert_eq!(log.epoch_entries(), vec![entry(0, 0), entry(4, 3)]);
    /// ```
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs.snapshot().as_slice().to_vec()
    }

    /// The OffsetForLeaderEpoch answer for `epoch`: `Some((e, end))` where `e` is the largest
    /// epoch at or below `epoch` known here and `end` the start offset of the first epoch
    /// after `e`, or the log end offset when `e` is the latest. `None` when `epoch` is below
    /// the first known epoch or no batch carries an epoch (Kafka's `UNDEFINED_EPOCH` /
    /// `UNDEFINED_EPOCH_OFFSET`). A follower truncates to `end` before it fetches.
    ///
    /// Unlike Kafka's leader, which answers `UNDEFINED` for an epoch above its latest and
    /// `(epoch, first start)` for one below its first, this answers `(latest, log end)` and
    /// `None`. Racing with a truncation, the answer is from before or after it.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, LeaderEpoch, Offset};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append_with_leader_epoch(batch(3), LeaderEpoch::new(1)).unwrap(); // 0..=2
    /// log.append_with_leader_epoch(batch(2), LeaderEpoch::new(4)).unwrap(); // 3..=4
    /// let answer = |e| log.end_offset_for_epoch(LeaderEpoch::new(e)).map(|(e, o)| (e.get(), o.get()));
    /// assert_eq!(answer(0), None);
    /// assert_eq!(answer(2), Some((1, 3)));
    /// assert_eq!(answer(4), Some((4, 5)));
    /// ```
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        // The end first: an entry is published before its batches, so every batch below this
        // end is described by the snapshot taken after it.
        let end = self.log_end_offset();
        self.epochs.snapshot().end_offset_for(epoch, end)
    }
}

/// Entries from the batch headers: each epoch (>= 0) newer than the one before starts at its
/// first batch. A segment that cannot be read is skipped with a warning: open never fails on
/// this, and reads of such a segment fail on their own.
fn rebuild(segments: &[Arc<LogSegment>]) -> EpochEntries {
    let mut entries = EpochEntries::default();
    for segment in segments {
        let mut visit = |base: Offset, epoch: LeaderEpoch| {
            // An older epoch in a batch is a leader's bug or a batch appended without an
            // epoch by a client that filled the field in: not an epoch start.
            if let Err(e) = entries.assign(epoch, base) {
                tracing::debug!(%base, error = %e, "ignoring an older epoch while rebuilding");
            }
        };
        if let Err(e) = segment.for_each_batch_epoch(&mut visit) {
            tracing::warn!(segment = %segment.path().display(), error = %e,
                "could not read every batch header while rebuilding the leader-epoch cache");
        }
    }
    entries
}

/// The epoch (>= 0) of the last batch of the log, if it has one and it can be read.
fn last_batch_epoch(segments: &[Arc<LogSegment>]) -> Option<LeaderEpoch> {
    let segment = segments.iter().rev().find(|s| !s.is_empty())?;
    match segment.last_batch_epoch() {
        Ok(epoch) => epoch.filter(|e| e.get() >= 0),
        Err(e) => {
            tracing::warn!(segment = %segment.path().display(), error = %e,
                "could not read the last batch header");
            None
        }
    }
}

fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Stored {
    let path = dir.join(CHECKPOINT);
    let file = match storage.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Stored::Missing,
        Err(e) => return Stored::Corrupt(format!("open {}: {e}", path.display())),
    };
    let text = match file.read_prefix(MAX_CHECKPOINT_BYTES).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return Stored::Corrupt(format!("read {}: {e}", path.display())),
        Err(e) => return Stored::Corrupt(format!("read {}: {e}", path.display())),
    };
    match EpochEntries::decode(&text) {
        Ok(entries) => Stored::Entries(entries),
        Err(why) => Stored::Corrupt(why),
    }
}

/// Writes the checkpoint through a temporary file, fsynced, renamed over the old one, and
/// the directory fsynced: a crash leaves the old or the new file whole.
fn write_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
    entries: &EpochEntries,
) -> Result<(), LogError> {
    write_atomically(storage, dir, CHECKPOINT_TMP, CHECKPOINT, entries.encode().as_bytes(), true)
}

fn remove_stale_tmp(storage: &dyn Storage, dir: &Path) {
    let tmp = dir.join(CHECKPOINT_TMP);
    if let Err(e) = remove_if_exists(storage, &tmp) {
        tracing::debug!(file = %tmp.display(), error = %e, "could not remove");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn e(epoch: i32, start: i64) -> EpochEntry {
        EpochEntry { epoch: LeaderEpoch::new(epoch), start_offset: Offset::new(start) }
    }

    fn entries(list: &[(i32, i64)]) -> EpochEntries {
        EpochEntries(list.iter().map(|&(ep, s)| e(ep, s)).collect())
    }

    fn answer(c: &EpochEntries, epoch: i32, end: i64) -> Option<(i32, i64)> {
        c.end_offset_for(LeaderEpoch::new(epoch), Offset::new(end)).map(|(e, o)| (e.get(), o.get()))
    }

    #[test]
    fn assign_adds_only_newer_epochs_and_refuses_older_ones() {
        let mut c = EpochEntries::default();
        assert!(!c.assign(LeaderEpoch::UNKNOWN, Offset::ZERO).unwrap(), "-1 is no epoch");
        assert!(c.assign(LeaderEpoch::new(1), Offset::new(0)).unwrap());
        assert!(!c.assign(LeaderEpoch::new(1), Offset::new(5)).unwrap(), "same epoch");
        assert!(c.assign(LeaderEpoch::new(4), Offset::new(5)).unwrap());
        let err = c.assign(LeaderEpoch::new(3), Offset::new(9)).unwrap_err();
        assert!(matches!(err, LogError::EpochRegression { epoch, latest }
            if epoch.get() == 3 && latest.get() == 4));
        assert_eq!(c, entries(&[(1, 0), (4, 5)]));
    }

    #[test]
    #[should_panic(expected = "below epoch")]
    fn assign_asserts_that_starts_never_go_backwards() {
        let mut c = entries(&[(1, 10)]);
        let _ = c.assign(LeaderEpoch::new(2), Offset::new(9));
    }

    #[test]
    fn end_offset_is_the_next_epochs_start_or_the_log_end() {
        let c = entries(&[(0, 0), (3, 20), (5, 40)]);
        assert_eq!(answer(&c, -1, 50), None, "below the first epoch");
        assert_eq!(answer(&c, 0, 50), Some((0, 20)));
        assert_eq!(answer(&c, 2, 50), Some((0, 20)), "an unknown epoch maps to the one below");
        assert_eq!(answer(&c, 3, 50), Some((3, 40)));
        assert_eq!(answer(&c, 5, 50), Some((5, 50)));
        assert_eq!(answer(&c, 9, 50), Some((5, 50)));
        assert_eq!(answer(&EpochEntries::default(), 3, 50), None);
        assert_eq!(answer(&entries(&[(2, 5)]), 1, 50), None);
    }

    #[test]
    fn truncate_from_end_drops_entries_at_or_after_the_cut() {
        let mut c = entries(&[(0, 0), (3, 20), (5, 40)]);
        assert!(!c.truncate_from_end(Offset::new(41)));
        assert!(c.truncate_from_end(Offset::new(40)));
        assert_eq!(c, entries(&[(0, 0), (3, 20)]));
        assert!(c.truncate_from_end(Offset::ZERO));
        assert_eq!(c, EpochEntries::default());
    }

    #[test]
    fn truncate_from_start_moves_the_last_entry_before_the_start() {
        let mut c = entries(&[(0, 0), (3, 20), (5, 40)]);
        assert!(!c.truncate_from_start(Offset::ZERO));
        assert!(c.truncate_from_start(Offset::new(25)));
        assert_eq!(c, entries(&[(3, 25), (5, 40)]));
        assert!(c.truncate_from_start(Offset::new(40)));
        assert_eq!(c, entries(&[(5, 40)]));
        assert!(!c.truncate_from_start(Offset::new(40)));
        assert!(c.truncate_from_start(Offset::new(100)), "past the end: the latest stays");
        assert_eq!(c, entries(&[(5, 100)]));
    }

    #[test]
    fn checkpoint_text_round_trips_in_kafkas_format() {
        let c = entries(&[(0, 0), (3, 20)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n3 20\n");
        assert_eq!(EpochEntries::decode(&c.encode()).unwrap(), c);
        assert_eq!(EpochEntries::decode("0\n0\n").unwrap(), EpochEntries::default());
    }

    #[test]
    fn decode_rejects_malformed_or_inconsistent_files() {
        for bad in [
            "",
            "1\n0\n",
            "0\n",
            "0\nx\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0\n",
            "0\n1\n0 0 0\n",
            "0\n1\nx 0\n",
            "0\n2\n3 0\n3 5\n",
            "0\n2\n3 9\n4 5\n",
            "0\n1\n-1 0\n",
            "0\n1\n0 -5\n",
            "\u{0}\u{ff}garbage",
        ] {
            assert!(EpochEntries::decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// One step against the model.
    #[derive(Debug, Clone)]
    enum Op {
        Append { epoch: i32, records: i64 },
        TruncateEnd(i64),
        TruncateStart(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..8i32, 1..5i64).prop_map(|(epoch, records)| Op::Append { epoch, records }),
            1 => (0..40i64).prop_map(Op::TruncateEnd),
            1 => (0..40i64).prop_map(Op::TruncateStart),
        ]
    }

    proptest! {
        /// The model is the log itself: the epoch of every record from the log start. The
        /// cache must list exactly where the epoch changes, and answer OffsetForLeaderEpoch
        /// as a brute-force walk of the records does.
        #[test]
        fn cache_matches_a_record_level_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut cache = EpochEntries::default();
            let mut start = 0i64;
            let mut records: Vec<i32> = Vec::new(); // epoch of offset start + i
            for op in ops {
                let end = start + records.len() as i64;
                match op {
                    Op::Append { epoch, records: n } => {
                        let latest = records.last().copied();
                        let result = cache.assign(LeaderEpoch::new(epoch), Offset::new(end));
                        if latest.is_some_and(|l| epoch < l) {
                            prop_assert!(result.is_err());
                        } else {
                            prop_assert!(result.is_ok());
                            records.extend(std::iter::repeat_n(epoch, n as usize));
                        }
                    }
                    Op::TruncateEnd(to) => {
                        let to = to.clamp(start, end);
                        records.truncate((to - start) as usize);
                        cache.truncate_from_end(Offset::new(to));
                    }
                    Op::TruncateStart(to) => {
                        // Retention never passes the end of a non-empty log here.
                        let to = to.clamp(start, (end - 1).max(start));
                        records.drain(..(to - start) as usize);
                        start = to;
                        cache.truncate_from_start(Offset::new(to));
                    }
                }
                // The model's entries: where the epoch changes.
                let mut expected = EpochEntries::default();
                for (i, &ep) in records.iter().enumerate() {
                    if expected.latest().is_none_or(|l| l.epoch.get() != ep) {
                        expected.0.push(e(ep, start + i as i64));
                    }
                }
                let end = start + records.len() as i64;
                prop_assert_eq!(&cache, &expected);
                prop_assert!(cache.holds_invariant());
                for q in -1..9 {
                    let below: Vec<i32> = records.iter().copied().filter(|&ep| ep <= q).collect();
                    let want = below.iter().max().map(|&ep| {
                        let stop = records.iter().position(|&r| r > ep)
                            .map_or(end, |i| start + i as i64);
                        (ep, stop)
                    });
                    prop_assert_eq!(answer(&cache, q, end), want, "epoch {}", q);
                }
            }
        }
    }
}
