//! Log compaction (Kafka's `LogCleaner`): one cleaning pass over a log's cleanable part, the
//! crash-safe swap of cleaned segments, and recovery of a pass a crash cut short.
//!
//! A pass maps key → newest offset over the dirty part (from the first dirty offset in
//! `cleaner-offset-checkpoint` up to the end of the last segment wholly below `upper`, never
//! the active segment; [`OffsetMap`] bounds the memory), then rewrites every cleanable
//! segment below the mapped range, keeping a record when no newer record of its key was
//! mapped, and dropping tombstones (null values) older than `delete_retention_ms`.
//!
//! Invariants:
//! - offsets are kept: a batch whose records all stay is copied byte for byte; one that loses
//!   records becomes one batch per run of consecutive kept records, each with its original
//!   offsets, leader epoch, producer id/epoch, shifted base sequence, compression and timestamp
//!   type. Batches stay dense inside (recordsCount = lastOffsetDelta + 1); gaps lie between
//!   batches, and only below the checkpoint, which recovery uses to tell a cleaner's gap from a
//!   torn write.
//! - the latest record of every key survives every crash: the cleaned segment is written in
//!   `.cleaned/` and fsynced; renamed into place as `<base>.{index,timeindex,log}.swap` (the
//!   commit point, then the directory is fsynced); the old segments of the group are deleted;
//!   the `.swap` files are renamed over the first old segment's names (indexes first, the
//!   `.log` last). Open deletes `.cleaned/` (the old segments are intact) and finishes any
//!   `.swap` (deleting old segments its batches overlap), as Kafka's `Log.replaceSegments`
//!   recovery does.
//! - the swap happens under the writer lock after checking the group's segments (and the one
//!   after them) are still the log's, so retention or truncation in between aborts it.

use std::io::{self, IoSlice};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_format::{
    BATCH_HEADER_LEN, BatchBuilder, Batches, Offset, Record, RecordBatch, TimestampType,
    set_base_offset, set_max_timestamp, set_partition_leader_epoch,
};

use crate::error::IoContext;
use crate::offset_map::OffsetMap;
use crate::recovery::sync_dir;
use crate::segment::{
    BatchHeader, INDEX_SUFFIX, LOG_SUFFIX, LogSegment, ScanStart, TIME_INDEX_SUFFIX, file_name,
    parse_file_name,
};
use crate::storage::{OpenMode, Storage, read_small, write_atomically};
use crate::{Log, LogError};

/// The first dirty offset: below it the log has been cleaned (and may have offset gaps).
pub(crate) const CHECKPOINT: &str = "cleaner-offset-checkpoint";
const CHECKPOINT_TMP: &str = "cleaner-offset-checkpoint.tmp";
const CHECKPOINT_PREFIX: &str = "strom-cleaner-checkpoint v1 ";
/// Where a pass writes its cleaned segments before they are swapped in.
pub(crate) const CLEANED_DIR: &str = ".cleaned";
const SWAP: &str = "swap";
/// Bytes per read while mapping and copying.
const READ_CHUNK: usize = 1 << 20;
/// Bytes buffered before a write of the cleaned segment.
const WRITE_CHUNK: usize = 1 << 20;

/// Limits of a cleaning pass (Kafka's broker-wide `log.cleaner.*` settings).
///
/// ```
/// let limits = strom_log::CleanerLimits::default();
/// assert_eq!(limits.dedupe_buffer_bytes, 128 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CleanerLimits {
    /// Memory for the key → offset map (`log.cleaner.dedupe.buffer.size`). A pass maps as
    /// much of the dirty part as fits and cleans that; the next pass goes on.
    pub dedupe_buffer_bytes: usize,
    /// Read plus write bandwidth of a pass (`log.cleaner.io.max.bytes.per.second`); `None`:
    /// unthrottled.
    pub io_max_bytes_per_second: Option<u64>,
    /// Test hook: stop the pass right after this step, as a crash would.
    #[doc(hidden)]
    pub stop_after: Option<CleanStep>,
}

impl Default for CleanerLimits {
    fn default() -> Self {
        CleanerLimits {
            dedupe_buffer_bytes: 128 << 20,
            io_max_bytes_per_second: None,
            stop_after: None,
        }
    }
}

impl CleanerLimits {
    /// Limits with this map budget and I/O rate.
    ///
    /// ```
    /// let limits = strom_log::CleanerLimits::new(1 << 20, Some(10 << 20));
    /// assert_eq!(limits.io_max_bytes_per_second, Some(10 << 20));
    /// ```
    pub fn new(dedupe_buffer_bytes: usize, io_max_bytes_per_second: Option<u64>) -> Self {
        CleanerLimits { dedupe_buffer_bytes, io_max_bytes_per_second, stop_after: None }
    }
}

/// The steps of a swap, for crash tests ([`CleanerLimits::stop_after`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanStep {
    /// The cleaned segment is written and fsynced in `.cleaned/`.
    Cleaned,
    /// It was renamed to `.swap` (the commit point).
    Swapped,
    /// The old segments after the first were deleted; the `.swap` files are not renamed yet.
    OldDeleted,
}

/// What a cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanStats {
    /// Segments rewritten (0: nothing was cleanable, or the dirty ratio was too low).
    pub segments_cleaned: usize,
    /// Cleaned segments swapped in (groups of old segments become one).
    pub segments_written: usize,
    /// Records read while cleaning.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Tombstones dropped because they were older than `delete_retention_ms`.
    pub tombstones_removed: u64,
    /// Bytes of the segments before and after cleaning.
    pub bytes_before: u64,
    /// Bytes of the cleaned segments.
    pub bytes_after: u64,
    /// The first dirty offset after the pass.
    pub first_dirty: Offset,
    /// Set when [`CleanerLimits::stop_after`] stopped the pass.
    #[doc(hidden)]
    pub stopped_at: Option<CleanStep>,
}

/// Reads the checkpoint; `None` when missing or unreadable (nothing cleaned: no gaps).
pub(crate) fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Option<Offset> {
    let text = read_small(storage, &dir.join(CHECKPOINT), 256)?;
    let value = text.strip_prefix(CHECKPOINT_PREFIX)?.strip_suffix('\n')?;
    value.parse::<i64>().ok().filter(|v| *v >= 0).map(Offset::new)
}

/// Writes the checkpoint durably (temporary file, fsync, rename, directory fsync).
pub(crate) fn write_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
    value: Offset,
) -> Result<(), LogError> {
    let content = format!("{CHECKPOINT_PREFIX}{value}\n");
    write_atomically(storage, dir, CHECKPOINT_TMP, CHECKPOINT, content.as_bytes(), true)
}

fn remove_if_exists(storage: &dyn Storage, path: &Path) -> Result<bool, LogError> {
    crate::storage::remove_if_exists(storage, path).ctx(|| format!("remove {}", path.display()))
}

fn rename_if_exists(storage: &dyn Storage, from: &Path, to: &Path) -> Result<(), LogError> {
    match storage.rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("rename {}", from.display()), e)),
    }
}

fn swap_name(base: Offset, suffix: &str) -> String {
    format!("{}.{SWAP}", file_name(base, suffix))
}

/// Recovery of a pass cut short (called by open before segments are listed): `.cleaned/` is
/// discarded (the swap never began), every `<base>.log.swap` is completed.
pub(crate) fn recover_swaps(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    let cleaned = dir.join(CLEANED_DIR);
    if storage.exists(&cleaned) {
        tracing::info!(dir = %dir.display(), "discarding an unfinished cleaner pass");
        storage.remove_dir_all(&cleaned).ctx(|| format!("remove {}", cleaned.display()))?;
    }
    let mut swaps = Vec::new();
    let mut stray = Vec::new();
    let mut logs = Vec::new();
    for entry in storage.list_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let name = entry.name.as_str();
        if let Some(stem) = name.strip_suffix(&format!(".{SWAP}")) {
            match parse_file_name(stem) {
                Some((base, LOG_SUFFIX)) => swaps.push(base),
                Some(_) => stray.push(dir.join(name)),
                None => {}
            }
        } else if let Some((base, LOG_SUFFIX)) = parse_file_name(name) {
            logs.push(base);
        }
    }
    if swaps.is_empty() && stray.is_empty() {
        return Ok(());
    }
    for base in &swaps {
        let swap = dir.join(swap_name(*base, LOG_SUFFIX));
        let next = next_offset_of(storage, &swap, *base)?;
        // Old segments the cleaned batches overlap go first; a crash repeats this.
        for old in logs.iter().filter(|o| **o > *base && **o < next) {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                remove_if_exists(storage, &dir.join(file_name(*old, suffix)))?;
            }
        }
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            rename_if_exists(
                storage,
                &dir.join(swap_name(*base, suffix)),
                &dir.join(file_name(*base, suffix)),
            )?;
        }
        tracing::info!(dir = %dir.display(), %base, "completed the swap of a cleaned segment");
    }
    for path in stray {
        // An index `.swap` without its `.log.swap`: the swap was completed but for it.
        let stem = path.file_stem().map(|s| path.with_file_name(s));
        match stem {
            Some(final_path) if !swaps.is_empty() || storage.exists(&final_path) => {
                rename_if_exists(storage, &path, &final_path)?;
            }
            _ => {
                remove_if_exists(storage, &path)?;
            }
        }
    }
    sync_dir(storage, dir)
}

/// The offset after the last whole batch of a segment file (its base when empty), reading
/// headers only.
fn next_offset_of(storage: &dyn Storage, path: &Path, base: Offset) -> Result<Offset, LogError> {
    let file = storage.open(path, OpenMode::Read).ctx(|| format!("open {}", path.display()))?;
    let len = file.size().ctx(|| format!("stat {}", path.display()))?;
    let mut pos = 0u64;
    let mut next = base;
    let mut header = [0u8; BATCH_HEADER_LEN];
    while pos + BATCH_HEADER_LEN as u64 <= len {
        file.read_exact_at(&mut header, pos).ctx(|| format!("read {}", path.display()))?;
        let Ok(h) = BatchHeader::parse(&header) else { break };
        if h.size > len - pos {
            break;
        }
        next = h.next_offset();
        pos += h.size;
    }
    Ok(next)
}

/// Sleeps as needed to keep a pass under its I/O rate.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle { rate: rate.filter(|r| *r > 0), started: Instant::now(), bytes: 0 }
    }

    fn account(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
        let Some(rate) = self.rate else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

impl Log {
    /// Runs one cleaning pass (see the module docs of `cleaner.rs` in ARCHITECTURE.md) over the
    /// segments wholly below `upper` (the high watermark, or the last stable offset) and never
    /// the active one. Does nothing unless the log is compacted ([`LogConfig::compact`]) and
    /// its dirty part is at least `min_cleanable_dirty_ratio_permille` of the cleanable part.
    /// Reads and appends go on meanwhile; only the final swap takes the writer lock.
    ///
    /// Durability: when it returns, the cleaned segments replaced the old ones on disk; a
    /// crash during a pass reopens either the old segments or the cleaned ones.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Batches, Offset};
    /// use strom_log::{CleanerLimits, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { compact: true, segment_bytes: 1, ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// for value in [b"a", b"b", b"c"] {
    ///     let mut batch = BatchBuilder::new(Compression::None);
    ///     batch.append(0, Some(b"k".as_slice()), Some(value.as_slice()), &[]);
    ///     log.append(batch.build().unwrap()).unwrap(); // one segment per batch
    /// }
    /// let stats = log.clean(log.log_end_offset(), &CleanerLimits::default()).unwrap();
    /// assert_eq!(stats.records_kept, 1); // offset 1; offset 2 is in the active segment
    /// let read = log.read(Offset::ZERO, 1 << 20).unwrap();
    /// let first = Batches::new(read.records).next().unwrap().unwrap();
    /// assert_eq!(first.base_offset(), Offset::new(1));
    /// ```
    ///
    /// [`LogConfig::compact`]: crate::LogConfig::compact
    pub fn clean(&self, upper: Offset, limits: &CleanerLimits) -> Result<CleanStats, LogError> {
        if let Some(reason) = self.swap_broken.lock().as_ref() {
            return Err(LogError::Poisoned(reason.clone()));
        }
        let config = self.config();
        let mut stats = CleanStats {
            first_dirty: Offset::new(self.cleaned_to.load(Ordering::Acquire)),
            ..CleanStats::default()
        };
        if !config.compact {
            return Ok(stats);
        }
        let segments = self.snapshot();
        // Segment i is cleanable when it ends (the next one begins) at or below `upper`; the
        // active segment never is.
        let cleanable = segments
            .windows(2)
            .take_while(|w| w.get(1).is_some_and(|next| next.base() <= upper))
            .count();
        let Some(end) = segments.get(cleanable).map(|s| s.base()) else { return Ok(stats) };
        let start = self.log_start_offset();
        let first_dirty = stats.first_dirty.max(start);
        if cleanable == 0 || first_dirty >= end {
            return Ok(stats);
        }
        let ends = |i: usize| segments.get(i + 1).map_or(end, |s| s.base());
        let mut total = 0u64;
        let mut dirty = 0u64;
        for (i, segment) in segments.iter().take(cleanable).enumerate() {
            total += segment.size();
            if ends(i) > first_dirty {
                dirty += segment.size();
            }
        }
        let ratio = u64::from(config.min_cleanable_dirty_ratio_permille);
        if dirty.saturating_mul(1000) < ratio.saturating_mul(total) {
            return Ok(stats);
        }

        let mut throttle = Throttle::new(limits.io_max_bytes_per_second);
        let mut map = OffsetMap::new(limits.dedupe_buffer_bytes);
        let mapped_to = self.build_map(first_dirty, end, &mut map, &mut throttle)?;
        if mapped_to <= first_dirty {
            tracing::warn!(dir = %self.dir.display(), %first_dirty,
                "cleaner: the dedupe buffer cannot hold the keys of one batch; not cleaning");
            return Ok(stats);
        }
        // Segments below the mapped range's end are cleaned (records after it stay: their keys'
        // map entries are all below them).
        let count = segments.iter().take(cleanable).take_while(|s| s.base() < mapped_to).count();
        let groups = group(segments.get(..count).unwrap_or_default(), config.segment_bytes, &ends);

        // Durable before any gap exists on disk: recovery must know the gaps are the cleaner's.
        if Offset::new(self.cleaned_to.load(Ordering::Acquire)) < mapped_to {
            let _writer = self.writer.lock();
            write_checkpoint(self.storage(), &self.dir, mapped_to)?;
            self.set_cleaned_to(mapped_to);
        }
        stats.first_dirty = mapped_to;
        let horizon = self.clock.now_ms().saturating_sub(
            i64::try_from(config.delete_retention_ms.as_millis()).unwrap_or(i64::MAX),
        );
        for (from, to) in groups {
            let Some(group) = segments.get(from..to) else { continue };
            let group_end = ends(to - 1);
            let before: u64 = group.iter().map(|s| s.size()).sum();
            let written =
                self.write_cleaned(group, group_end, &map, horizon, &mut throttle, &mut stats)?;
            let after_segment = segments.get(to).cloned();
            let swapped =
                self.swap_in(group, after_segment.as_ref(), written, limits, &mut stats)?;
            if stats.stopped_at.is_some() {
                return Ok(stats);
            }
            if let Some(size) = swapped {
                stats.segments_cleaned += group.len();
                stats.segments_written += 1;
                stats.bytes_before += before;
                stats.bytes_after += size;
            }
        }
        tracing::info!(dir = %self.dir.display(), keys = map.len(), segments = stats.segments_cleaned,
            records_read = stats.records_read, records_kept = stats.records_kept,
            tombstones_removed = stats.tombstones_removed, bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after, first_dirty = %stats.first_dirty, "cleaned log");
        Ok(stats)
    }

    /// Maps the keys of `[from, end)` into `map`; returns where mapping stopped (`end`, or
    /// the base of the batch whose keys no longer fit).
    fn build_map(
        &self,
        from: Offset,
        end: Offset,
        map: &mut OffsetMap,
        throttle: &mut Throttle,
    ) -> Result<Offset, LogError> {
        let full = self.walk_batches(from, end, throttle, |batch, at, _| {
            if !batch.attributes().is_control() {
                for record in batch.records()? {
                    let record = record?;
                    if let Some(key) = &record.key
                        && record.offset >= at
                        && !map.insert(key, record.offset)
                    {
                        return Ok(ControlFlow::Break(batch.base_offset().max(from)));
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(full.unwrap_or(end))
    }

    /// Calls `each` with every batch holding offsets in `[from, end)` (the first may start
    /// below `from`), the offset the walk had reached before it, and `throttle` (for the
    /// caller's own I/O), reading [`READ_CHUNK`] at a time and charging each read to
    /// `throttle`. Stops at the first `Break`, returning its value; `None` when the walk
    /// reached `end` (or the readable end of the log).
    fn walk_batches<T>(
        &self,
        from: Offset,
        end: Offset,
        throttle: &mut Throttle,
        mut each: impl FnMut(&RecordBatch, Offset, &mut Throttle) -> Result<ControlFlow<T>, LogError>,
    ) -> Result<Option<T>, LogError> {
        let mut at = from;
        while at < end {
            let read = self.read_below(at, READ_CHUNK, end)?;
            if read.records.is_empty() {
                break;
            }
            throttle.account(read.records.len());
            for batch in Batches::new(read.records) {
                let batch = batch?;
                if batch.last_offset() < at {
                    continue;
                }
                if let ControlFlow::Break(value) = each(&batch, at, throttle)? {
                    return Ok(Some(value));
                }
                at = batch.next_offset();
            }
        }
        Ok(None)
    }

    /// Writes the cleaned copy of `group` into `.cleaned/`, indexes built, everything fsynced.
    fn write_cleaned(
        &self,
        group: &[Arc<LogSegment>],
        group_end: Offset,
        map: &OffsetMap,
        horizon: i64,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
    ) -> Result<Cleaned, LogError> {
        let Some(base) = group.first().map(|s| s.base()) else {
            return Err(LogError::InvalidConfig("cleaner: empty group".into()));
        };
        let tmp = self.dir.join(CLEANED_DIR);
        self.storage().create_dir_all(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let out = LogSegment::create(self.storage(), &tmp, base)?;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut size = 0u64;
        let start = base.max(self.log_start_offset());
        self.walk_batches::<()>(start, group_end, throttle, |batch, _, throttle| {
            for kept in clean_batch(batch, map, horizon, stats)? {
                buf.extend_from_slice(&kept);
            }
            if buf.len() >= WRITE_CHUNK {
                size += flush_buf(&out, &mut buf, throttle)?;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        size += flush_buf(&out, &mut buf, throttle)?;
        let interval = self.config().index_interval_bytes;
        let scan =
            out.scan(ScanStart::segment_start(base), size, false, interval, Offset::new(i64::MAX))?;
        if let Some(why) = scan.invalid {
            return Err(LogError::Corrupt {
                path: out.path().to_path_buf(),
                position: scan.end,
                reason: format!("cleaner wrote an unreadable segment: {why}"),
            });
        }
        out.replace_indexes(scan.offset_entries, scan.time_entries)?;
        out.flush()?;
        sync_dir(self.storage(), &tmp)?;
        Ok(Cleaned { base, size, next: scan.next_offset, max_ts: scan.max_ts })
    }

    /// Swaps a cleaned segment in for `group` under the writer lock; `None` (and the cleaned
    /// files deleted) when retention or truncation changed the group meanwhile.
    fn swap_in(
        &self,
        group: &[Arc<LogSegment>],
        after: Option<&Arc<LogSegment>>,
        cleaned: Cleaned,
        limits: &CleanerLimits,
        stats: &mut CleanStats,
    ) -> Result<Option<u64>, LogError> {
        let _writer = self.writer.lock();
        let current = self.snapshot();
        let Some(at) =
            current.iter().position(|s| group.first().is_some_and(|g| Arc::ptr_eq(s, g)))
        else {
            return self.abandon(cleaned.base);
        };
        let unchanged = group
            .iter()
            .enumerate()
            .all(|(i, g)| current.get(at + i).is_some_and(|s| Arc::ptr_eq(s, g)))
            && after
                .is_none_or(|a| current.get(at + group.len()).is_some_and(|s| Arc::ptr_eq(s, a)))
            && self.cleaned_to.load(Ordering::Acquire) >= after.map_or(0, |a| a.base().get());
        if !unchanged {
            return self.abandon(cleaned.base);
        }
        if limits.stop_after == Some(CleanStep::Cleaned) {
            stats.stopped_at = Some(CleanStep::Cleaned);
            return Ok(None);
        }
        let result = self.swap_files(group, &current, at, cleaned, limits, stats);
        if let Err(e) = &result {
            // From the first rename on, the disk holds `.swap` files a reopen completes; a
            // later pass, truncation or retention must not change the segments under them.
            let reason = format!("a cleaner swap failed part-way ({e}); reopen the log");
            tracing::error!(dir = %self.dir.display(), %reason, "log refuses writes");
            *self.swap_broken.lock() = Some(reason);
        }
        result
    }

    /// The file operations of a swap, from the commit point on (see `swap_in`).
    fn swap_files(
        &self,
        group: &[Arc<LogSegment>],
        current: &[Arc<LogSegment>],
        at: usize,
        cleaned: Cleaned,
        limits: &CleanerLimits,
        stats: &mut CleanStats,
    ) -> Result<Option<u64>, LogError> {
        let tmp = self.dir.join(CLEANED_DIR);
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            let from = tmp.join(file_name(cleaned.base, suffix));
            let to = self.dir.join(swap_name(cleaned.base, suffix));
            self.storage().rename(&from, &to).ctx(|| format!("rename {}", from.display()))?;
        }
        sync_dir(self.storage(), &self.dir)?;
        if limits.stop_after == Some(CleanStep::Swapped) {
            stats.stopped_at = Some(CleanStep::Swapped);
            return Ok(None);
        }
        for old in group.iter().skip(1) {
            old.delete_files(self.storage())?;
        }
        if limits.stop_after == Some(CleanStep::OldDeleted) {
            stats.stopped_at = Some(CleanStep::OldDeleted);
            return Ok(None);
        }
        // The `.log` last: while its `.swap` exists, recovery redoes the whole swap.
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            let from = self.dir.join(swap_name(cleaned.base, suffix));
            let to = self.dir.join(file_name(cleaned.base, suffix));
            self.storage().rename(&from, &to).ctx(|| format!("rename {}", from.display()))?;
        }
        sync_dir(self.storage(), &self.dir)?;
        let (segment, problem) = LogSegment::open(self.storage(), &self.dir, cleaned.base)?;
        if let Some(why) = problem {
            // Only costs lookups a scan: the data is what was just written.
            tracing::warn!(dir = %self.dir.display(), %why, "cleaned segment's indexes");
        }
        segment.set_recovered_state(cleaned.size, cleaned.next, cleaned.max_ts, None);
        segment.set_gaps_to(self.first_dirty_offset());
        let mut list = Vec::with_capacity(current.len());
        list.extend(current.iter().take(at).cloned());
        list.push(Arc::new(segment));
        list.extend(current.iter().skip(at + group.len()).cloned());
        *self.segments.write() = Arc::new(list);
        Ok(Some(cleaned.size))
    }

    fn abandon(&self, base: Offset) -> Result<Option<u64>, LogError> {
        tracing::info!(dir = %self.dir.display(), %base,
            "cleaner: segments changed during the pass; discarding its output");
        let tmp = self.dir.join(CLEANED_DIR);
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            remove_if_exists(self.storage(), &tmp.join(file_name(base, suffix)))?;
        }
        Ok(None)
    }

    /// The first offset not yet cleaned (`cleaner-offset-checkpoint`): below it the log may
    /// have offset gaps.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.first_dirty_offset().get(), 0);
    /// ```
    pub fn first_dirty_offset(&self) -> Offset {
        Offset::new(self.cleaned_to.load(Ordering::Acquire))
    }

    /// Lowers the checkpoint file to `offset` durably before a truncation below it (what is
    /// appended after the cut must be dense again); `true` when it did. The caller applies
    /// the new value in memory ([`Log::set_cleaned_to`]) once the cut is made: the walk to the
    /// batch the cut starts at must still accept a cleaner's gap that spans `offset`. Writer
    /// lock held.
    pub(crate) fn lower_cleaned_to(&self, offset: Offset) -> Result<bool, LogError> {
        if self.cleaned_to.load(Ordering::Acquire) > offset.get() {
            write_checkpoint(self.storage(), &self.dir, offset)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Raises the checkpoint durably to cover a gap a replicated append brings (a compacted
    /// leader's batches), before it is written. Writer lock held.
    pub(crate) fn raise_cleaned_to(&self, offset: Offset) -> Result<(), LogError> {
        if self.cleaned_to.load(Ordering::Acquire) < offset.get() {
            write_checkpoint(self.storage(), &self.dir, offset)?;
            self.set_cleaned_to(offset);
        }
        Ok(())
    }

    /// The new first dirty offset, in the log and in every segment's read checks. Raised
    /// only after the checkpoint is durable, lowered only before gaps above it could exist.
    pub(crate) fn set_cleaned_to(&self, offset: Offset) {
        self.cleaned_to.store(offset.get(), Ordering::Release);
        for segment in self.snapshot().iter() {
            segment.set_gaps_to(offset);
        }
    }
}

/// A cleaned segment waiting in `.cleaned/`.
#[derive(Debug)]
struct Cleaned {
    base: Offset,
    size: u64,
    next: Offset,
    max_ts: i64,
}

fn flush_buf(
    out: &LogSegment,
    buf: &mut Vec<u8>,
    throttle: &mut Throttle,
) -> Result<u64, LogError> {
    if buf.is_empty() {
        return Ok(0);
    }
    out.write_vectored(&mut [IoSlice::new(buf)])?;
    throttle.account(buf.len());
    let n = buf.len() as u64;
    buf.clear();
    Ok(n)
}

/// Groups consecutive segments whose sizes add up to at most `segment_bytes` and whose
/// offsets stay within what 32-bit relative offsets address; `(from, to)` index ranges.
fn group(
    segments: &[Arc<LogSegment>],
    segment_bytes: u64,
    ends: &dyn Fn(usize) -> Offset,
) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut from = 0;
    let mut bytes = 0u64;
    for (i, segment) in segments.iter().enumerate() {
        let base = segments.get(from).map_or(segment.base(), |s| s.base());
        let span = ends(i).get() - base.get();
        if i > from && (bytes + segment.size() > segment_bytes || span > i64::from(i32::MAX)) {
            groups.push((from, i));
            from = i;
            bytes = 0;
        }
        bytes += segment.size();
    }
    if from < segments.len() {
        groups.push((from, segments.len()));
    }
    groups
}

/// The cleaned form of one batch: itself when every record stays, nothing when none does,
/// else one batch per run of consecutive kept records (offsets and producer data kept).
fn clean_batch(
    batch: &RecordBatch,
    map: &OffsetMap,
    horizon: i64,
    stats: &mut CleanStats,
) -> Result<Vec<Bytes>, LogError> {
    let attributes = batch.attributes();
    if attributes.is_control() || attributes.is_transactional() {
        // Transaction markers and transactional data are kept whole (no transactions yet).
        stats.records_read += batch.records_count().max(0) as u64;
        stats.records_kept += batch.records_count().max(0) as u64;
        return Ok(vec![batch.as_bytes().clone()]);
    }
    let mut runs: Vec<Vec<Record>> = Vec::new();
    let mut previous: Option<Offset> = None;
    let mut total = 0usize;
    for record in batch.records()? {
        let record = record?;
        total += 1;
        let latest = match &record.key {
            Some(key) => map.get(key).is_none_or(|newest| record.offset >= newest),
            None => true,
        };
        let expired_tombstone = record.value.is_none() && batch.max_timestamp() < horizon;
        if expired_tombstone && latest {
            stats.tombstones_removed += 1;
        }
        if !latest || expired_tombstone {
            continue;
        }
        let continues = previous.is_some_and(|p| p.next() == record.offset);
        previous = Some(record.offset);
        match runs.last_mut() {
            Some(run) if continues => run.push(record),
            _ => runs.push(vec![record]),
        }
    }
    let kept: usize = runs.iter().map(Vec::len).sum();
    stats.records_read += total as u64;
    stats.records_kept += kept as u64;
    if kept == total {
        return Ok(vec![batch.as_bytes().clone()]);
    }
    runs.iter().map(|run| rebuild(batch, run)).collect()
}

/// One batch of `run` (consecutive records of `batch`), with `batch`'s header fields.
fn rebuild(batch: &RecordBatch, run: &[Record]) -> Result<Bytes, LogError> {
    let Some(first) = run.first() else {
        return Err(LogError::InvalidConfig("cleaner: empty run".into()));
    };
    let delta = first.offset.get() - batch.base_offset().get();
    let mut builder = BatchBuilder::new(batch.compression());
    if batch.producer_id() >= 0 {
        let sequence = if batch.base_sequence() >= 0 {
            // Sequences wrap at i32::MAX to 0, as Kafka's do.
            ((i64::from(batch.base_sequence()) + delta) % (i64::from(i32::MAX) + 1)) as i32
        } else {
            batch.base_sequence()
        };
        builder = builder.with_producer(batch.producer_id(), batch.producer_epoch(), sequence);
    }
    for record in run {
        builder.append(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
    }
    let mut buf = builder.build()?.to_vec();
    set_base_offset(&mut buf, first.offset);
    set_partition_leader_epoch(&mut buf, batch.partition_leader_epoch());
    if batch.attributes().timestamp_type() == TimestampType::LogAppendTime {
        set_max_timestamp(&mut buf, TimestampType::LogAppendTime, batch.max_timestamp());
    }
    Ok(Bytes::from(buf))
}
