//! One segment of a log: a `.log` file of record batches back to back, named by the offset of
//! its first record, with a sparse offset index and a time index beside it (Kafka's
//! `LogSegment`).
//!
//! Publication protocol: the writer appends bytes to the file first and only then stores the
//! new committed `size` (release), so a reader that loads `size` (acquire) and reads below it
//! never sees a partially written batch. Truncation, the one operation that shrinks a segment,
//! bumps `generation` before and after; a reader that saw the generation change retries, so it
//! never mixes bytes from before and after a truncation.

use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use strom_format::{
    BATCH_HEADER_LEN, LeaderEpoch, Offset, RecordBatch, TimestampType, peek_batch_size,
};

use crate::LogError;
use crate::error::IoContext;
use crate::offset_index::{OffsetEntry, OffsetIndex};
use crate::storage::{OpenMode, Storage, StorageFile, remove_if_exists};
use crate::time_index::{TimeEntry, TimeIndex};

/// Suffix of segment data files.
pub(crate) const LOG_SUFFIX: &str = "log";
/// Suffix of offset index files.
pub(crate) const INDEX_SUFFIX: &str = "index";
/// Suffix of time index files.
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Stand-in for "no timestamp yet" (an empty segment).
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

/// Bytes read at a time when scanning a segment.
const SCAN_CHUNK: u64 = 1 << 20;

/// The most one read returns (unless its first batch alone is larger), whatever `max_bytes`
/// asks: a bound on the buffer a single call allocates.
const MAX_READ_BYTES: u64 = 64 << 20;

/// `{base:020}.{suffix}`, Kafka's file naming.
pub(crate) fn file_name(base: Offset, suffix: &str) -> String {
    format!("{:020}.{suffix}", base.get())
}

/// The base offset and suffix of a segment file name, or `None` for any other name.
pub(crate) fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if ![LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX].contains(&suffix) {
        return None;
    }
    let base: i64 = stem.parse().ok()?;
    Some((Offset::new(base), suffix))
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    i64::from_be_bytes(b)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    i32::from_be_bytes(b)
}

/// The fields of a batch header the log needs, read without the rest of the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchHeader {
    pub(crate) base: Offset,
    pub(crate) size: u64,
    pub(crate) last_offset_delta: i32,
    pub(crate) max_timestamp: i64,
    pub(crate) epoch: LeaderEpoch,
}

impl BatchHeader {
    /// Parses and sanity-checks the header at the start of `buf`.
    pub(crate) fn parse(buf: &[u8]) -> Result<Self, String> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(format!(
                "{} bytes where a batch header needs {BATCH_HEADER_LEN}",
                buf.len()
            ));
        }
        let size = match peek_batch_size(buf) {
            Ok(Some(size)) => size as u64,
            Ok(None) => return Err("truncated batch header".into()),
            Err(e) => return Err(e.to_string()),
        };
        let magic = buf.get(16).map_or(0, |&m| m as i8);
        if magic != strom_format::MAGIC_V2 {
            return Err(format!("magic {magic}, expected {}", strom_format::MAGIC_V2));
        }
        let last_offset_delta = be_i32(buf, 23);
        let records_count = be_i32(buf, 57);
        if last_offset_delta < 0 || last_offset_delta.checked_add(1) != Some(records_count) {
            return Err(format!(
                "recordsCount {records_count} does not match lastOffsetDelta {last_offset_delta}"
            ));
        }
        let base = be_i64(buf, 0);
        if base < 0 || base.checked_add(i64::from(last_offset_delta) + 1).is_none() {
            return Err(format!("impossible base offset {base}"));
        }
        Ok(BatchHeader {
            base: Offset::new(base),
            size,
            last_offset_delta,
            max_timestamp: be_i64(buf, 35),
            epoch: LeaderEpoch::new(be_i32(buf, 12)),
        })
    }

    pub(crate) fn last_offset(&self) -> Offset {
        self.base.add(i64::from(self.last_offset_delta))
    }

    pub(crate) fn next_offset(&self) -> Offset {
        self.last_offset().next()
    }
}

/// Where a scan starts and what it knows about the bytes before that point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanStart {
    /// File position of a batch boundary.
    pub(crate) pos: u64,
    /// Base offset the batch at `pos` must have.
    pub(crate) expected: Offset,
    /// Largest timestamp of the batches before `pos`.
    pub(crate) max_ts: i64,
    /// Whether the batch at `pos` already has an index entry.
    pub(crate) first_indexed: bool,
}

impl ScanStart {
    /// A scan of the whole segment.
    pub(crate) fn segment_start(base: Offset) -> Self {
        ScanStart { pos: 0, expected: base, max_ts: NO_TIMESTAMP, first_indexed: false }
    }
}

/// What a scan found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Position after the last valid batch.
    pub(crate) end: u64,
    /// Offset after the last valid batch.
    pub(crate) next_offset: Offset,
    /// Largest timestamp of the batches before `end`.
    pub(crate) max_ts: i64,
    /// Bytes of batches since the last index entry (or the scan start).
    pub(crate) bytes_since_index: u64,
    /// Index entries for the scanned range.
    pub(crate) offset_entries: Vec<OffsetEntry>,
    /// Time index entries, one per offset index entry.
    pub(crate) time_entries: Vec<TimeEntry>,
    /// Why the scan stopped before its limit, if it did.
    pub(crate) invalid: Option<String>,
}

/// A segment read that may have to be retried because the segment was truncated under it.
#[derive(Debug)]
pub(crate) enum SegError {
    /// The segment changed during the read: take a new snapshot and try again.
    Retry,
    /// A real failure.
    Log(LogError),
}

impl From<LogError> for SegError {
    fn from(e: LogError) -> Self {
        SegError::Log(e)
    }
}

/// One segment. Shared (`Arc`) between the writer and any number of readers.
#[derive(Debug)]
pub(crate) struct LogSegment {
    base: Offset,
    path: PathBuf,
    log: Box<dyn StorageFile>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Committed bytes: every byte below is part of a whole, fully written batch.
    size: AtomicU64,
    /// Offset after the last committed batch.
    next_offset: AtomicI64,
    /// Largest committed record timestamp, `NO_TIMESTAMP` when empty.
    max_timestamp: AtomicI64,
    /// When the segment received its first batch (for `segment_ms`), `NO_TIMESTAMP` if empty.
    roll_basis_ms: AtomicI64,
    /// Bumped before and after every truncation (odd while one runs).
    generation: AtomicU64,
    /// The log's first dirty offset (`cleaner.rs`): a batch may follow a gap only if it starts
    /// at or below it; above it a gap is damage (a base offset lies outside the CRC).
    gaps_to: AtomicI64,
    /// Bytes `[0, verified)` hold only batches whose CRC passed in this process, on the write
    /// path or on an earlier read: reads do not check them again (see "CRC on the read path"
    /// in ARCHITECTURE.md). In memory only, so a restarted process checks everything once.
    verified: AtomicU64,
}

impl LogSegment {
    /// Creates an empty segment (truncating stray files of the same name).
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
    ) -> Result<Self, LogError> {
        let path = dir.join(file_name(base, LOG_SUFFIX));
        let log =
            storage.open(&path, OpenMode::Truncate).ctx(|| format!("open {}", path.display()))?;
        let offset_index = OffsetIndex::create(storage, &dir.join(file_name(base, INDEX_SUFFIX)))?;
        let time_index = TimeIndex::create(storage, &dir.join(file_name(base, TIME_INDEX_SUFFIX)))?;
        Ok(LogSegment {
            base,
            path,
            log,
            offset_index,
            time_index,
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base.get()),
            max_timestamp: AtomicI64::new(NO_TIMESTAMP),
            roll_basis_ms: AtomicI64::new(NO_TIMESTAMP),
            generation: AtomicU64::new(0),
            gaps_to: AtomicI64::new(0),
            verified: AtomicU64::new(0),
        })
    }

    /// Opens an existing segment. Its committed size is the file's size and its next offset
    /// is unknown (`base`) until recovery sets it. The second field says why the indexes must
    /// be rebuilt, if they must.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        base: Offset,
    ) -> Result<(Self, Option<String>), LogError> {
        let path = dir.join(file_name(base, LOG_SUFFIX));
        let log =
            storage.open(&path, OpenMode::Append).ctx(|| format!("open {}", path.display()))?;
        let len = log.size().ctx(|| format!("stat {}", path.display()))?;
        let index_path = dir.join(file_name(base, INDEX_SUFFIX));
        let time_path = dir.join(file_name(base, TIME_INDEX_SUFFIX));
        let missing = [&index_path, &time_path].into_iter().find(|p| !storage.exists(p)).cloned();
        let (offset_index, bad_offsets) = OffsetIndex::load(storage, &index_path)?;
        let (time_index, bad_times) = TimeIndex::load(storage, &time_path)?;
        let problem = missing
            .map(|p| format!("{} is missing", p.display()))
            .or(bad_offsets.map(|why| format!("{}: {why}", index_path.display())))
            .or(bad_times.map(|why| format!("{}: {why}", time_path.display())));
        let segment = LogSegment {
            base,
            path,
            log,
            offset_index,
            time_index,
            size: AtomicU64::new(len),
            next_offset: AtomicI64::new(base.get()),
            max_timestamp: AtomicI64::new(NO_TIMESTAMP),
            roll_basis_ms: AtomicI64::new(NO_TIMESTAMP),
            generation: AtomicU64::new(0),
            gaps_to: AtomicI64::new(0),
            verified: AtomicU64::new(0),
        };
        Ok((segment, problem))
    }

    pub(crate) fn base(&self) -> Offset {
        self.base
    }

    /// Sets the offset up to which batches may follow a gap (the log's first dirty offset).
    pub(crate) fn set_gaps_to(&self, offset: Offset) {
        self.gaps_to.store(offset.get(), Ordering::Release);
    }

    /// Whether a batch starting at `base` may follow `expected` (the offset after the batch
    /// before it): contiguous, or after a cleaner's gap.
    fn follows(&self, base: Offset, expected: Offset) -> bool {
        base == expected || (base > expected && base.get() <= self.gaps_to.load(Ordering::Acquire))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Committed bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Offset after the last committed batch.
    pub(crate) fn next_offset(&self) -> Offset {
        Offset::new(self.next_offset.load(Ordering::Acquire))
    }

    /// Largest committed timestamp (`NO_TIMESTAMP` when empty).
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn roll_basis_ms(&self) -> Option<i64> {
        Some(self.roll_basis_ms.load(Ordering::Acquire)).filter(|&t| t != NO_TIMESTAMP)
    }

    pub(crate) fn offset_index_len(&self) -> usize {
        self.offset_index.file().len()
    }

    /// The offset relative to the base, saturated into the index's `u32`.
    fn rel(&self, offset: Offset) -> u32 {
        u32::try_from((offset.get() - self.base.get()).max(0)).unwrap_or(u32::MAX)
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt { path: self.path.clone(), position, reason: reason.into() }
    }

    // ---------------------------------------------------------------- recovery-time state

    /// Sets what recovery established about the committed content.
    pub(crate) fn set_recovered_state(
        &self,
        size: u64,
        next_offset: Offset,
        max_ts: i64,
        roll_basis: Option<i64>,
    ) {
        self.size.store(size, Ordering::Release);
        self.next_offset.store(next_offset.get(), Ordering::Release);
        self.max_timestamp.store(max_ts, Ordering::Release);
        self.roll_basis_ms.store(roll_basis.unwrap_or(NO_TIMESTAMP), Ordering::Release);
    }

    /// Replaces both indexes with entries from a scan.
    pub(crate) fn replace_indexes(
        &self,
        offsets: Vec<OffsetEntry>,
        times: Vec<TimeEntry>,
    ) -> Result<(), LogError> {
        self.offset_index.file().replace(offsets)?;
        self.time_index.file().replace(times)
    }

    /// Appends entries found by a tail scan to both indexes.
    pub(crate) fn extend_indexes(
        &self,
        offsets: &[OffsetEntry],
        times: &[TimeEntry],
    ) -> Result<(), LogError> {
        for (o, t) in offsets.iter().zip(times) {
            self.offset_index.file().append(*o)?;
            self.time_index.file().append(*t)?;
        }
        Ok(())
    }

    /// Cheap checks of the loaded indexes against the data file, without a full scan: entries
    /// pair up, point inside the file, and the last one names a real batch with that offset.
    /// `next_base` is the following segment's base offset, if there is one.
    pub(crate) fn check_indexes(&self, next_base: Option<Offset>) -> Result<(), String> {
        let offsets = self.offset_index.file().entries();
        let times = self.time_index.file().entries();
        if offsets.len() != times.len() {
            return Err(format!(
                "{} offset entries but {} time entries",
                offsets.len(),
                times.len()
            ));
        }
        for (o, t) in offsets.iter().zip(&times) {
            if t.rel.checked_add(1) != Some(o.rel) {
                return Err(format!("time entry {t:?} does not pair with offset entry {o:?}"));
            }
        }
        let size = self.size();
        let Some(last) = offsets.last() else { return Ok(()) };
        if u64::from(last.pos) + BATCH_HEADER_LEN as u64 > size {
            return Err(format!("entry {last:?} points past the end of a {size}-byte segment"));
        }
        if let Some(next) = next_base
            && i64::from(last.rel) >= next.get() - self.base.get()
        {
            return Err(format!("entry {last:?} is beyond the next segment's base {next}"));
        }
        let header = self.read_header(u64::from(last.pos), size).map_err(|e| e.to_string())?;
        let expected = self.base.add(i64::from(last.rel));
        if header.base != expected {
            return Err(format!(
                "entry {last:?} points at a batch with base offset {}, not {expected}",
                header.base
            ));
        }
        Ok(())
    }

    /// Where a scan of the tail (the bytes after the last index entry) starts.
    pub(crate) fn tail_start(&self) -> ScanStart {
        let n = self.offset_index.file().len();
        match (n.checked_sub(1).and_then(|i| self.offset_index.file().get(i)), n.checked_sub(1)) {
            (Some(o), Some(i)) => ScanStart {
                pos: u64::from(o.pos),
                expected: self.base.add(i64::from(o.rel)),
                max_ts: self.time_index.file().get(i).map_or(NO_TIMESTAMP, |t| t.ts),
                first_indexed: true,
            },
            _ => ScanStart::segment_start(self.base),
        }
    }

    /// When the data file was created (its birth time), in milliseconds since the epoch, where
    /// the file system records it.
    pub(crate) fn created_ms(&self) -> Option<i64> {
        self.log.created_ms()
    }

    /// Walks the batches from `start` up to file position `limit`, checking each header (and,
    /// with `verify`, the whole batch and its CRC), contiguity of offsets, and computing the
    /// index entries the writer would have produced. Stops at the first invalid batch, saying
    /// why in [`Scan::invalid`]. Fails only on I/O errors. Offsets must be contiguous except
    /// for gaps ending at or below `gaps_to` (the cleaner's first dirty offset: cleaned
    /// batches have gaps, see `cleaner.rs`), so stale bytes with a plausible CRC past a crash
    /// are still caught above it.
    pub(crate) fn scan(
        &self,
        start: ScanStart,
        limit: u64,
        verify: bool,
        interval: u32,
        gaps_to: Offset,
    ) -> Result<Scan, LogError> {
        let mut scan = Scan {
            end: start.pos,
            next_offset: start.expected,
            max_ts: start.max_ts,
            bytes_since_index: 0,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            invalid: None,
        };
        let mut chunk = Bytes::new();
        let mut chunk_pos = start.pos;
        let mut pos = start.pos;
        let mut first = true;
        while pos < limit {
            let left = limit - pos;
            if left < BATCH_HEADER_LEN as u64 {
                scan.invalid = Some(format!("{left} trailing bytes at {pos}, less than a header"));
                break;
            }
            let in_chunk = |pos: u64, len: u64, chunk: &Bytes, chunk_pos: u64| {
                pos >= chunk_pos && pos + len <= chunk_pos + chunk.len() as u64
            };
            if !in_chunk(pos, BATCH_HEADER_LEN as u64, &chunk, chunk_pos) {
                chunk = self.read_bytes(pos, left.min(SCAN_CHUNK))?;
                chunk_pos = pos;
            }
            let off = (pos - chunk_pos) as usize;
            let header = match BatchHeader::parse(chunk.get(off..).unwrap_or_default()) {
                Ok(h) => h,
                Err(why) => {
                    scan.invalid = Some(format!("bad batch header at {pos}: {why}"));
                    break;
                }
            };
            if header.size > left {
                scan.invalid = Some(format!(
                    "batch at {pos} of {} bytes runs past the end ({left} bytes left): torn write",
                    header.size
                ));
                break;
            }
            let gap_ok = header.base > scan.next_offset && header.base <= gaps_to;
            if header.base != scan.next_offset && !gap_ok {
                scan.invalid = Some(format!(
                    "batch at {pos} has base offset {} where {} was expected",
                    header.base, scan.next_offset
                ));
                break;
            }
            let (Ok(rel), Ok(pos32)) =
                (u32::try_from(header.base.get() - self.base.get()), u32::try_from(pos))
            else {
                scan.invalid = Some(format!("batch at {pos} is beyond what the index can address"));
                break;
            };
            if verify {
                if !in_chunk(pos, header.size, &chunk, chunk_pos) {
                    chunk = self.read_bytes(pos, header.size.max(left.min(SCAN_CHUNK)))?;
                    chunk_pos = pos;
                }
                let off = (pos - chunk_pos) as usize;
                let bytes = chunk.slice(off..off + header.size as usize);
                if let Err(e) = RecordBatch::new(bytes).and_then(|b| b.validate_crc()) {
                    scan.invalid = Some(format!("invalid batch at {pos}: {e}"));
                    break;
                }
            }
            if pos > 0
                && !(first && start.first_indexed)
                && scan.bytes_since_index >= u64::from(interval)
            {
                scan.offset_entries.push(OffsetEntry { rel, pos: pos32 });
                scan.time_entries.push(TimeEntry { ts: scan.max_ts, rel: rel.saturating_sub(1) });
                scan.bytes_since_index = 0;
            }
            scan.bytes_since_index += header.size;
            scan.max_ts = scan.max_ts.max(header.max_timestamp);
            scan.next_offset = header.next_offset();
            pos += header.size;
            scan.end = pos;
            first = false;
        }
        Ok(scan)
    }

    /// Cuts the data file at `end` (recovery of a torn or corrupt tail). Not for live segments.
    pub(crate) fn truncate_file(&self, end: u64) -> Result<(), LogError> {
        self.log.set_len(end).ctx(|| format!("truncate {}", self.path.display()))?;
        self.verified.fetch_min(end, Ordering::AcqRel);
        self.size.store(end, Ordering::Release);
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    /// `len` bytes at `pos`, read with positional reads into a fresh buffer that is not
    /// zero-filled first (the read overwrites it; zeroing cost a memset of every byte served).
    fn read_bytes(&self, pos: u64, len: u64) -> Result<Bytes, LogError> {
        let len = usize::try_from(len).map_err(|_| self.corrupt(pos, "read too large"))?;
        let mut buf = Vec::with_capacity(len);
        self.log
            .read_into_spare(&mut buf, len, pos)
            .ctx(|| format!("read {len} bytes at {pos} of {}", self.path.display()))?;
        Ok(Bytes::from(buf))
    }

    /// The header of the batch at `pos`, which must end before `limit`.
    fn read_header(&self, pos: u64, limit: u64) -> Result<BatchHeader, LogError> {
        if limit.saturating_sub(pos) < BATCH_HEADER_LEN as u64 {
            return Err(self.corrupt(pos, "batch header runs past the end of the segment"));
        }
        let mut buf = [0u8; BATCH_HEADER_LEN];
        self.log
            .read_exact_at(&mut buf, pos)
            .ctx(|| format!("read batch header at {pos} of {}", self.path.display()))?;
        let header = BatchHeader::parse(&buf).map_err(|why| self.corrupt(pos, why))?;
        if header.size > limit - pos {
            return Err(self.corrupt(pos, "batch runs past the committed end of the segment"));
        }
        Ok(header)
    }

    /// Position and header of the batch holding `offset`, scanning headers forward from the
    /// nearest index entry at or below `start_rel`; `None` when no committed batch holds it.
    fn find_batch(
        &self,
        offset: Offset,
        start_rel: u32,
        size: u64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let entry = self.offset_index.lookup(start_rel);
        let indexed = entry.pos != 0 && u64::from(entry.pos) < size;
        if indexed {
            match self.walk_to(offset, u64::from(entry.pos), size, Some(entry)) {
                Ok(found) => return Ok(found),
                Err(e) => {
                    // A damaged index must not make data unreadable: scan from the start.
                    tracing::warn!(segment = %self.path.display(), error = %e,
                        "offset index entry does not match the data; scanning the segment");
                }
            }
        }
        self.walk_to(offset, 0, size, None)
    }

    fn walk_to(
        &self,
        offset: Offset,
        mut pos: u64,
        size: u64,
        entry: Option<OffsetEntry>,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut expected = entry.map_or(self.base, |e| self.base.add(i64::from(e.rel)));
        while pos < size {
            let header = self.read_header(pos, size)?;
            if !self.follows(header.base, expected) {
                return Err(self.corrupt(
                    pos,
                    format!("batch base offset {} where {expected} was expected", header.base),
                ));
            }
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
            expected = header.next_offset();
            pos += header.size;
        }
        Ok(None)
    }

    /// Calls `visit(base offset, partitionLeaderEpoch)` for every committed batch, front to
    /// back, reading headers only (rebuilding the leader-epoch cache). Writer or open only.
    pub(crate) fn for_each_batch_epoch(
        &self,
        visit: &mut dyn FnMut(Offset, LeaderEpoch),
    ) -> Result<(), LogError> {
        let size = self.size();
        let mut pos = 0;
        let mut expected = self.base;
        while pos < size {
            let header = self.read_header(pos, size)?;
            if !self.follows(header.base, expected) {
                return Err(self.corrupt(pos, "batch base offsets are not contiguous"));
            }
            visit(header.base, header.epoch);
            expected = header.next_offset();
            pos += header.size;
        }
        Ok(())
    }

    /// The `partitionLeaderEpoch` of the last committed batch, `None` when the segment is
    /// empty. One index lookup and a short header walk.
    pub(crate) fn last_batch_epoch(&self) -> Result<Option<LeaderEpoch>, LogError> {
        let size = self.size();
        if size == 0 {
            return Ok(None);
        }
        let last = self.next_offset().add(-1);
        Ok(self.find_batch(last, self.rel(last), size)?.map(|(_, header)| header.epoch))
    }

    /// Runs `f` as a reader: retries are signalled when a truncation overlapped it.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, LogError>) -> Result<T, SegError> {
        let before = self.generation.load(Ordering::Acquire);
        if before % 2 == 1 {
            return Err(SegError::Retry);
        }
        let result = f();
        if self.generation.load(Ordering::Acquire) != before {
            return Err(SegError::Retry);
        }
        result.map_err(SegError::Log)
    }

    /// Whole batches starting with the one holding `from`: at least one (if `from` is
    /// committed here and below `upper`), then as many more as fit in `max_bytes`, stopping
    /// before the first batch whose last offset reaches `upper`. Every returned batch has a
    /// valid CRC; a corrupt first batch is an error, a corrupt later one ends the result.
    /// Batches may have gaps between them (cleaned segments); `from` in a gap reads from the
    /// next batch, and `from` past the last batch but below `gaps_to` (the cleaner's first
    /// dirty offset) is empty rather than a hole.
    pub(crate) fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
    ) -> Result<Bytes, SegError> {
        self.guarded(|| {
            // The next offset before the size: the writer stores them in the other order, so
            // every offset below `next` is in a batch below `size`.
            let next = self.next_offset();
            let size = self.size();
            let Some((pos, first)) = self.find_batch(from, self.rel(from), size)? else {
                // Below `next` but after the last batch is a hole, unless the cleaner removed
                // the segment's last records (the log then reads on from the next segment).
                if from < next && from.get() >= self.gaps_to.load(Ordering::Acquire) {
                    return Err(self.corrupt(size, format!("offset {from} is missing")));
                }
                return Ok(Bytes::new());
            };
            if first.last_offset() >= upper {
                return Ok(Bytes::new());
            }
            let avail = size - pos;
            let want = first.size.max(avail.min(max_bytes as u64).min(MAX_READ_BYTES));
            let bytes = self.read_bytes(pos, want)?;
            // Batches wholly inside the verified region skip the CRC (checked once per
            // region per process); the shape and offset checks below still run on every one.
            let verified = self.verified.load(Ordering::Acquire);
            let mut end = 0usize;
            let mut expected = first.base;
            while end < bytes.len() {
                let rest = bytes.get(end..).unwrap_or_default();
                let batch = match peek_batch_size(rest) {
                    Ok(Some(n)) if n <= rest.len() => RecordBatch::new(bytes.slice(end..end + n))
                        .and_then(|b| {
                            if pos + (end + n) as u64 > verified {
                                b.validate_crc()?;
                            }
                            Ok(b)
                        })
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            if self.follows(b.base_offset(), expected) {
                                Ok(b)
                            } else {
                                Err(format!(
                                    "base offset {} where {expected} was expected",
                                    b.base_offset()
                                ))
                            }
                        }),
                    Ok(_) => break,
                    Err(e) => Err(e.to_string()),
                };
                match batch {
                    Ok(b) if b.last_offset() >= upper => break,
                    Ok(b) => {
                        expected = b.next_offset();
                        end += b.size();
                    }
                    // Serve the valid batches before a corrupt one; the next read fails on it.
                    Err(_) if end > 0 => break,
                    Err(why) => return Err(self.corrupt(pos, why)),
                }
            }
            // A read that started inside the verified region extends it over what it checked.
            // Should a truncation overlap this read, the mark may end up above the new size:
            // what is written there later passed its CRC on the write path, so it still only
            // covers checked batches.
            if pos <= verified {
                self.verified.fetch_max(pos + end as u64, Ordering::AcqRel);
            }
            Ok(bytes.slice(..end))
        })
    }

    /// The first record at or after `ts` in this segment, with its timestamp, among those at
    /// or above offset `from` (the log start: a start moved inside a batch hides its records
    /// below it).
    pub(crate) fn find_timestamp(
        &self,
        ts: i64,
        from: Offset,
    ) -> Result<Option<(Offset, i64)>, SegError> {
        self.guarded(|| {
            let size = self.size();
            if self.max_timestamp() < ts {
                return Ok(None);
            }
            // Every record up to the entry's offset is older than `ts`.
            let start_rel = self.time_index.last_before(ts).map_or(0, |e| e.rel.saturating_add(1));
            let start = self.base.add(i64::from(start_rel));
            let Some((mut pos, first)) = self.find_batch(start, start_rel, size)? else {
                return Ok(None);
            };
            let mut expected = first.base;
            while pos < size {
                // Whole batches, CRC-checked, offsets contiguous (the base offset is outside
                // the CRC): a damaged header must not skip records or invent offsets.
                let header = self.read_header(pos, size)?;
                let batch = RecordBatch::new(self.read_bytes(pos, header.size)?)
                    .and_then(|b| b.validate_crc().map(|()| b))
                    .map_err(|e| self.corrupt(pos, e.to_string()))?;
                if !self.follows(batch.base_offset(), expected) {
                    let why = format!(
                        "base offset {} where {expected} was expected",
                        batch.base_offset()
                    );
                    return Err(self.corrupt(pos, why));
                }
                expected = batch.next_offset();
                if batch.max_timestamp() >= ts {
                    let log_append_time =
                        batch.attributes().timestamp_type() == TimestampType::LogAppendTime;
                    let records = batch.records().map_err(|e| self.corrupt(pos, e.to_string()))?;
                    for record in records {
                        let record = record.map_err(|e| self.corrupt(pos, e.to_string()))?;
                        // With LogAppendTime the broker's time, in maxTimestamp, is every
                        // record's timestamp.
                        let record_ts =
                            if log_append_time { batch.max_timestamp() } else { record.timestamp };
                        if record_ts >= ts && record.offset >= from {
                            return Ok(Some((record.offset, record_ts)));
                        }
                    }
                }
                pos += header.size;
            }
            Ok(None)
        })
    }

    // ---------------------------------------------------------------- writes (writer only)

    /// Writes `slices` at the end of the file with vectored writes, handling short writes.
    /// Nothing is published; the caller does that with [`LogSegment::publish`].
    pub(crate) fn write_vectored(&self, slices: &mut [IoSlice<'_>]) -> Result<(), LogError> {
        self.log.append_all(slices).ctx(|| format!("append to {}", self.path.display()))
    }

    /// Makes appended bytes visible to readers: size and next offset first, then index entries
    /// (an index entry must never point at bytes readers cannot see yet).
    pub(crate) fn publish(
        &self,
        new_size: u64,
        next_offset: Offset,
        max_ts: i64,
        now_ms: i64,
        entries: &[(OffsetEntry, TimeEntry)],
    ) -> Result<(), LogError> {
        debug_assert!(new_size > self.size(), "publish must grow the segment");
        debug_assert!(next_offset > self.next_offset(), "offsets must strictly increase");
        if self.roll_basis_ms.load(Ordering::Relaxed) == NO_TIMESTAMP {
            self.roll_basis_ms.store(now_ms, Ordering::Release);
        }
        // Every append's batches passed their CRC check before they were written: they extend
        // the verified region when it reaches up to them.
        let old_size = self.size();
        let _ =
            self.verified.compare_exchange(old_size, new_size, Ordering::AcqRel, Ordering::Acquire);
        self.size.store(new_size, Ordering::Release);
        self.next_offset.store(next_offset.get(), Ordering::Release);
        self.max_timestamp.fetch_max(max_ts, Ordering::AcqRel);
        for (o, t) in entries {
            self.offset_index.file().append(*o)?;
            self.time_index.file().append(*t)?;
        }
        Ok(())
    }

    /// Drops every batch from the one holding `offset` on. Returns the new next offset (the
    /// offset after the last batch kept: the base of the dropped batch, unless the cleaner left
    /// a gap before it) and the bytes since the last remaining index entry, or `None` when no
    /// committed batch holds `offset` (nothing to drop).
    pub(crate) fn truncate_at(&self, offset: Offset) -> Result<Option<(Offset, u64)>, LogError> {
        let size = self.size();
        let Some((pos, header)) = self.find_batch(offset, self.rel(offset), size)? else {
            return Ok(None);
        };
        let keep = self.offset_index.count_below(self.rel(header.base));
        let start = match keep.checked_sub(1) {
            Some(i) => {
                let o = self.offset_index.file().get(i);
                let t = self.time_index.file().get(i);
                match (o, t) {
                    (Some(o), Some(t)) => ScanStart {
                        pos: u64::from(o.pos),
                        expected: self.base.add(i64::from(o.rel)),
                        max_ts: t.ts,
                        first_indexed: true,
                    },
                    _ => ScanStart::segment_start(self.base),
                }
            }
            None => ScanStart::segment_start(self.base),
        };
        // The largest timestamp that remains: the index covers what is before its last entry,
        // a header walk the rest.
        let tail = self.scan(start, pos, false, u32::MAX, Offset::new(i64::MAX))?;
        if let Some(why) = tail.invalid {
            return Err(self.corrupt(tail.end, why));
        }

        self.generation.fetch_add(1, Ordering::AcqRel);
        self.verified.fetch_min(pos, Ordering::AcqRel);
        self.size.store(pos, Ordering::Release);
        // The offset after the last batch kept, which is what the file says on a reopen: below
        // the cut batch's base when the cleaner removed the records just before it.
        self.next_offset.store(tail.next_offset.get(), Ordering::Release);
        self.max_timestamp.store(tail.max_ts, Ordering::Release);
        if pos == 0 {
            self.roll_basis_ms.store(NO_TIMESTAMP, Ordering::Release);
        }
        // All three, whatever fails: each index cuts its entries in memory before its file,
        // and a retried cut (`discard_unpublished`) brings the files back to memory, which
        // must then agree between the two indexes.
        let offsets = self.offset_index.file().truncate(keep);
        let times = self.time_index.file().truncate(keep);
        let data = self.log.set_len(pos).ctx(|| format!("truncate {}", self.path.display()));
        let result = offsets.and(times).and(data);
        self.generation.fetch_add(1, Ordering::AcqRel);
        result?;
        Ok(Some((tail.next_offset, pos - start.pos)))
    }

    /// Cuts the data file and both indexes back to what is published, dropping whatever a
    /// failed write left past it. The data file is opened for appending, so bytes left there
    /// would otherwise end up between published batches. Writer only.
    pub(crate) fn discard_unpublished(&self) -> Result<(), LogError> {
        self.log.set_len(self.size()).ctx(|| format!("truncate {}", self.path.display()))?;
        self.offset_index.file().discard_unlisted()?;
        self.time_index.file().discard_unlisted()
    }

    /// Marks the segment as mid-truncation forever: every read of it from now on retries
    /// (with a new snapshot of the segment list). For a segment whose file is being reused.
    pub(crate) fn retire(&self) {
        self.generation.fetch_or(1, Ordering::AcqRel);
    }

    /// fsyncs the data file and both indexes.
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        self.log.sync_data().ctx(|| format!("fsync {}", self.path.display()))?;
        self.offset_index.file().sync()?;
        self.time_index.file().sync()
    }

    /// Removes the segment's files (a missing file is not an error). Open handles stay
    /// readable until dropped, so concurrent readers of this segment still get valid data.
    pub(crate) fn delete_files(&self, storage: &dyn Storage) -> Result<(), LogError> {
        let paths =
            [self.path.as_path(), self.offset_index.file().path(), self.time_index.file().path()];
        for path in paths {
            remove_if_exists(storage, path).ctx(|| format!("delete {}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_strangers_are_ignored() {
        let name = file_name(Offset::new(52_133), LOG_SUFFIX);
        assert_eq!(name, "00000000000000052133.log");
        assert_eq!(parse_file_name(&name), Some((Offset::new(52_133), LOG_SUFFIX)));
        assert_eq!(
            parse_file_name("00000000000000000007.timeindex"),
            Some((Offset::new(7), TIME_INDEX_SUFFIX))
        );
        for stranger in [
            "0000000000000000007.log",
            "000000000000000000007.log",
            "0000000000000000000x.log",
            "00000000000000000007.log.swp",
            "00000000000000000007.txt",
            "99999999999999999999.log",
            "recovery-point",
            ".clean-shutdown",
            "",
        ] {
            assert_eq!(parse_file_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn header_parsing_rejects_impossible_headers_without_panicking() {
        assert!(BatchHeader::parse(&[]).is_err());
        assert!(BatchHeader::parse(&[0u8; 60]).is_err());
        assert!(BatchHeader::parse(&[0u8; 61]).is_err(), "batchLength 0");
        let mut h = [0u8; 61];
        h[8..12].copy_from_slice(&49i32.to_be_bytes());
        h[16] = 2;
        h[57..61].copy_from_slice(&1i32.to_be_bytes());
        let parsed = BatchHeader::parse(&h).unwrap();
        assert_eq!((parsed.size, parsed.last_offset_delta), (61, 0));
        h[0] = 0x80; // negative base offset
        assert!(BatchHeader::parse(&h).is_err());
        h[0] = 0;
        h[16] = 1;
        assert!(BatchHeader::parse(&h).is_err(), "magic 1");
        h[16] = 2;
        h[57..61].copy_from_slice(&5i32.to_be_bytes());
        assert!(BatchHeader::parse(&h).is_err(), "recordsCount != lastOffsetDelta + 1");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            let mut buf = [0u8; 61];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = BatchHeader::parse(&buf);
        }
    }
}
