//! [`Log`]: a directory of segments behind one append/read/truncate API, with its concurrency
//! protocol (one writer at a time, lock-free readers), flush policy and retention.

use std::collections::{BTreeSet, VecDeque};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use strom_format::{Batches, LeaderEpoch, Offset, RecordBatch};

use crate::error::IoContext;
use crate::leader_epoch_cache::LeaderEpochCache;
use crate::log_start::{self, StartKind};
use crate::offset_index::OffsetEntry;
use crate::producer_snapshot;
use crate::producer_state::{ProducerBatch, ProducerStateManager, Verdict};
use crate::recovery::{self, sync_dir};
use crate::segment::{
    INDEX_SUFFIX, LOG_SUFFIX, LogSegment, SegError, TIME_INDEX_SUFFIX, file_name,
};
use crate::storage::{OsStorage, Storage, remove_if_exists};
use crate::time_index::TimeEntry;
use crate::validate::{Origin, validate};
use crate::{Clock, FlushPolicy, LogConfig, LogError, SystemClock, retention};

/// Index entries per segment before the log rolls, bounding the memory an index takes
/// (Kafka's default `segment.index.bytes` of 10 MiB holds as many offset entries).
const MAX_INDEX_ENTRIES: usize = 10 * 1024 * 1024 / 8;

/// Roll-backs remembered for appends that were written before one and check after their
/// flush whether they survived it; an append older than all of them reports failure.
const ROLLBACK_HISTORY: usize = 64;

/// How often a read retries after racing with a truncation before giving up.
const MAX_READ_ATTEMPTS: usize = 8;

/// Largest offset distance from a segment's base the 32-bit relative offsets can hold (Kafka
/// rolls at `Int.MaxValue` too).
const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// How often appends look for expired producer ids (Kafka's
/// `producer.id.expiration.check.interval.ms`), unless the expiration itself is shorter.
const PRODUCER_EXPIRATION_CHECK_MS: i64 = 10 * 60 * 1000;

/// Bytes per read while replaying batches into the producer state.
const REPLAY_READ_BYTES: usize = 4 << 20;

/// What an append stored.
///
/// ```
/// # use strom_format::{BatchBuilder, Compression};
/// use strom_log::{Log, LogConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(1_000, None, Some(b"a".as_slice()), &[]);
/// b.append(2_000, None, Some(b"b".as_slice()), &[]);
/// let info = log.append(b.build().unwrap()).unwrap();
/// assert_eq!((info.first_offset.get(), info.last_offset.get()), (0, 1));
/// assert_eq!((info.max_timestamp, info.batches), (2_000, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first appended record.
    pub first_offset: Offset,
    /// Offset of the last appended record.
    pub last_offset: Offset,
    /// Largest `maxTimestamp` of the appended batches.
    pub max_timestamp: i64,
    /// Number of batches appended.
    pub batches: usize,
    /// Bytes appended.
    pub bytes: usize,
    /// The append was a retry of an idempotent producer's batch already in the log: nothing
    /// was written, and the offsets, timestamp and `batches` (1) describe the original.
    pub duplicate: bool,
}

/// Batches read from a log, and the log's bounds when they were read.
///
/// ```
/// use strom_log::{Log, LogConfig};
/// use strom_format::Offset;
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let result = log.read(Offset::ZERO, 1 << 20).unwrap();
/// assert!(result.records.is_empty());
/// assert_eq!(result.log_end_offset, Offset::ZERO);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole record batches back to back, as stored (walk them with
    /// [`strom_format::Batches`]). Every one passed its CRC check.
    pub records: Bytes,
    /// The log start offset when the read began.
    pub log_start_offset: Offset,
    /// The log end offset when the read began.
    pub log_end_offset: Offset,
}

/// An append-only, segmented, durable log of Kafka record batches in one directory.
///
/// All methods take `&self`: appends, truncations and retention serialize on an internal
/// writer lock, while reads never take it (they snapshot the segment list and read with
/// positional I/O), so a slow reader never delays a writer and vice versa. Share it with an
/// `Arc`. A directory is open in at most one `Log` of a process at a time
/// ([`LogError::AlreadyOpen`]); keeping other processes away is up to the deployment.
///
/// ```
/// # use strom_format::{BatchBuilder, Compression, Batches, Offset};
/// use strom_log::{Log, LogConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(1_700_000_000_000, Some(b"k".as_slice()), Some(b"hello".as_slice()), &[]);
/// log.append(b.build().unwrap()).unwrap();
///
/// let read = log.read(Offset::ZERO, 1 << 20).unwrap();
/// let batch = Batches::new(read.records).next().unwrap().unwrap();
/// let record = batch.records().unwrap().next().unwrap().unwrap();
/// assert_eq!(record.value.as_deref(), Some(b"hello".as_slice()));
/// log.close().unwrap();
/// ```
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    /// Every file-system call goes through it ([`OsStorage`] unless opened with another).
    storage: Arc<dyn Storage>,
    /// Swapped whole by [`Log::set_config`]; each operation reads one snapshot of it.
    config: RwLock<Arc<LogConfig>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Oldest first, never empty; the last is the active segment. Copy-on-write: readers clone
    /// the outer `Arc` under a read lock held for nanoseconds.
    pub(crate) segments: RwLock<Arc<Vec<Arc<LogSegment>>>>,
    /// Serializes every mutation. Lock order: `flush_lock`, then `writer`, then `checkpoint`.
    pub(crate) writer: Mutex<Writer>,
    /// Serializes flushers (held across fsync; appenders and readers never wait on it).
    flush_lock: Mutex<()>,
    /// The last recovery point written.
    checkpoint: Mutex<Offset>,
    /// The log start offset: the first segment's base, or inside the first segment after
    /// [`Log::delete_records_before`]. Only grows, except with a full truncation.
    pub(crate) start: AtomicI64,
    /// A full truncation wrote a `Restart` log-start checkpoint and has not yet replaced it
    /// with a plain one (which must happen before the new segment takes an append).
    restart_checkpoint_pending: std::sync::atomic::AtomicBool,
    end: AtomicI64,
    flushed: AtomicI64,
    last_flush_ms: AtomicI64,
    /// Set by a failed write or flush until the log is cut back to its last good end: while
    /// set, writes are refused. Leaf lock.
    damage: Mutex<Option<Damage>>,
    /// Set when a cleaner swap failed after its commit point (`cleaner.rs`): the `.swap` files
    /// on disk are what a reopen completes, so the log takes no write, truncation or other
    /// pass until it is reopened (which completes the swap). Leaf lock.
    pub(crate) swap_broken: Mutex<Option<String>>,
    /// Roll-backs done so far, so an append can tell whether its records survived a roll-back
    /// that ran between its write and its flush. Leaf lock.
    rollbacks: Mutex<Rollbacks>,
    /// Which leader epoch began where; changed only under `writer`.
    pub(crate) epochs: LeaderEpochCache,
    /// Idempotent producers' epochs and latest batches; changed only under `writer`. Leaf lock.
    producers: Mutex<ProducerStateManager>,
    /// When an append next looks for expired producers (the log's clock, ms).
    next_expiry_check_ms: AtomicI64,
    /// The cleaner's first dirty offset (`cleaner-offset-checkpoint`): below it batches may
    /// have offset gaps; it only moves down with a truncation, durably first.
    pub(crate) cleaned_to: AtomicI64,
    /// Last, so it is released after the files are closed.
    _dir_lock: DirLock,
}

/// A failed write or flush: what failed, and where the log must be cut back to before it takes
/// another write.
#[derive(Debug)]
struct Damage {
    reason: String,
    roll_back_to: Offset,
}

/// The latest roll-backs, numbered.
#[derive(Debug, Default)]
struct Rollbacks {
    /// Number of roll-backs done so far.
    count: u64,
    /// `(number, offset cut back to)` of the latest `ROLLBACK_HISTORY`.
    recent: VecDeque<(u64, Offset)>,
}

impl Rollbacks {
    /// Whether offsets up to `last` may have been cut by a roll-back after the `seen`-th.
    fn cut(&self, seen: u64, last: Offset) -> bool {
        if self.count == seen {
            return false;
        }
        let remembered = self.recent.front().is_some_and(|(n, _)| *n <= seen + 1);
        !remembered || self.recent.iter().any(|(n, to)| *n > seen && *to <= last)
    }
}

/// Directories opened by a live [`Log`] of this process: two logs writing one directory would
/// corrupt it. (Other processes are not excluded; that is the deployment's job.)
static OPEN_DIRS: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());

/// Membership in [`OPEN_DIRS`], released on drop.
#[derive(Debug)]
struct DirLock {
    path: PathBuf,
}

impl DirLock {
    fn acquire(storage: &dyn Storage, dir: &Path) -> Result<Self, LogError> {
        let path = storage.canonicalize(dir).ctx(|| format!("resolve {}", dir.display()))?;
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !open.insert(path.clone()) {
            return Err(LogError::AlreadyOpen(path));
        }
        Ok(DirLock { path })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.remove(&self.path);
    }
}

/// State only the writer touches.
#[derive(Debug)]
pub(crate) struct Writer {
    /// Bytes appended to the active segment since its last index entry.
    bytes_since_index: u64,
    /// The base of a roll that failed after creating some of its files: the roll-back
    /// deletes them, or the log would append on in the active segment past a stray segment
    /// file that a reopen takes for the next segment.
    failed_roll: Option<Offset>,
}

/// A batch ready to write: its bytes and the base offset it gets.
#[derive(Debug)]
struct Prepared {
    batch: RecordBatch,
    base: Offset,
}

impl Prepared {
    fn next_offset(&self) -> Offset {
        self.base.add(i64::from(self.batch.last_offset_delta()) + 1)
    }
}

impl Log {
    /// Opens the log in `dir`, creating the directory if needed, and recovers it (see the
    /// crate docs): after a crash every segment written since the last flush is validated and
    /// cut at the first torn or corrupt batch. Uses the system clock.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path().join("orders-0"), LogConfig::default()).unwrap();
    /// assert_eq!(log.segment_count(), 1);
    /// ```
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// [`Log::open`] with an injected clock, which decides segment age (`segment_ms`), time
    /// retention and flush intervals.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use strom_log::{Log, LogConfig, ManualClock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    /// let log = Log::open_with_clock(dir.path(), LogConfig::default(), clock.clone()).unwrap();
    /// assert_eq!(log.log_end_offset().get(), 0);
    /// ```
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Log, LogError> {
        Self::open_with_storage(dir, config, clock, Arc::new(OsStorage))
    }

    /// [`Log::open_with_clock`] on another file system than the operating system's: every
    /// file-system call of the log goes through `storage` (a simulated one in crash tests,
    /// see [`Storage`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use strom_log::{Log, LogConfig, OsStorage, SystemClock};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open_with_storage(
    ///     dir.path(),
    ///     LogConfig::default(),
    ///     Arc::new(SystemClock),
    ///     Arc::new(OsStorage),
    /// )
    /// .unwrap();
    /// assert_eq!(log.log_end_offset().get(), 0);
    /// ```
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        storage: Arc<dyn Storage>,
    ) -> Result<Log, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        storage.create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let dir_lock = DirLock::acquire(storage.as_ref(), &dir)?;
        let recovered = recovery::recover(storage.as_ref(), &dir, &config, clock.as_ref())?;
        for segment in &recovered.segments {
            segment.set_gaps_to(recovered.cleaned_to);
        }
        let (Some(first), Some(last)) = (recovered.segments.first(), recovered.segments.last())
        else {
            return Err(LogError::Corrupt {
                path: dir,
                position: 0,
                reason: "recovery left no segment".into(),
            });
        };
        // The start lies inside the first segment after a record deletion.
        let (start, end) = (recovered.start.max(first.base()), last.next_offset());
        // Recovery fsynced what it kept, so everything below the end is durable.
        recovery::write_recovery_point(storage.as_ref(), &dir, end, true)?;
        let epochs =
            LeaderEpochCache::open(storage.clone(), &dir, &recovered.segments, start, end)?;
        let now = clock.now_ms();
        tracing::debug!(dir = %dir.display(), %start, %end, segments = recovered.segments.len(),
            "log opened");
        let log = Log {
            dir,
            storage,
            config: RwLock::new(Arc::new(config)),
            clock,
            segments: RwLock::new(Arc::new(recovered.segments)),
            writer: Mutex::new(Writer {
                bytes_since_index: recovered.bytes_since_index,
                failed_roll: None,
            }),
            flush_lock: Mutex::new(()),
            checkpoint: Mutex::new(end),
            start: AtomicI64::new(start.get()),
            restart_checkpoint_pending: std::sync::atomic::AtomicBool::new(false),
            end: AtomicI64::new(end.get()),
            flushed: AtomicI64::new(end.get()),
            last_flush_ms: AtomicI64::new(now),
            damage: Mutex::new(None),
            swap_broken: Mutex::new(None),
            rollbacks: Mutex::new(Rollbacks::default()),
            epochs,
            producers: Mutex::new(ProducerStateManager::default()),
            next_expiry_check_ms: AtomicI64::new(now),
            cleaned_to: AtomicI64::new(recovered.cleaned_to.get()),
            _dir_lock: dir_lock,
        };
        log.reload_producers()?;
        Ok(log)
    }

    /// The directory holding the log's files.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.dir(), dir.path());
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force: the one the log was opened with, or the last one given to
    /// [`Log::set_config`].
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(*log.config(), LogConfig::default());
    /// ```
    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().clone()
    }

    /// Replaces the configuration of an open log, as Kafka applies an altered topic config
    /// without a restart. Appends, rolls, flushes and retention passes that start afterwards
    /// use it; one already running finishes with the old one. An invalid configuration is
    /// refused and the old one stays.
    ///
    /// ```
    /// use std::time::Duration;
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let shorter = LogConfig { retention_ms: Some(Duration::from_secs(60)), ..LogConfig::default() };
    /// log.set_config(shorter.clone()).unwrap();
    /// assert_eq!(*log.config(), shorter);
    /// assert!(log.set_config(LogConfig { segment_bytes: 0, ..shorter }).is_err());
    /// ```
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        *self.config.write() = Arc::new(config);
        Ok(())
    }

    // ------------------------------------------------------------------------------ appends

    /// Appends one or more batches (back to back in `batches`) as the leader: validates every
    /// batch before writing any (shape, size against `max_batch_bytes`, CRC, every record,
    /// `recordsCount == lastOffsetDelta + 1`), then assigns offsets from the log end offset by
    /// rewriting each batch's base offset, which lies outside the CRC. Record bytes are written
    /// from `batches` as they are, with one vectored write per segment.
    ///
    /// Durability: when it returns the batches are in the page cache and visible to readers;
    /// they are on stable storage only under [`FlushPolicy::EveryAppend`], or once
    /// [`Log::flushed_offset`] passes them.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let mut two = batch(3).to_vec();
    /// two.extend_from_slice(&batch(2));
    /// let info = log.append(two.into()).unwrap();
    /// assert_eq!((info.first_offset.get(), info.last_offset.get(), info.batches), (0, 4, 2));
    /// assert_eq!(log.log_end_offset().get(), 5);
    /// ```
    pub fn append(&self, batches: Bytes) -> Result<AppendInfo, LogError> {
        self.append_from(batches, Origin::Leader(None))
    }

    /// [`Log::append`], also stamping `epoch` into every batch's `partitionLeaderEpoch` (which
    /// lies outside the CRC too). An epoch newer than [`Log::latest_epoch`] starts a new
    /// entry of the epoch cache at the first assigned offset, made durable before the batches
    /// are written; an older one is refused with [`LogError::EpochRegression`].
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Batches, LeaderEpoch, Offset};
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let mut b = BatchBuilder::new(Compression::None);
    /// b.append(0, None, Some(b"v".as_slice()), &[]);
    /// log.append_with_leader_epoch(b.build().unwrap(), LeaderEpoch::new(7)).unwrap();
    /// let read = log.read(Offset::ZERO, 4096).unwrap();
    /// let batch = Batches::new(read.records).next().unwrap().unwrap();
    /// assert_eq!(batch.partition_leader_epoch(), LeaderEpoch::new(7));
    /// batch.validate_crc().unwrap();
    /// ```
    pub fn append_with_leader_epoch(
        &self,
        batches: Bytes,
        epoch: LeaderEpoch,
    ) -> Result<AppendInfo, LogError> {
        self.append_from(batches, Origin::Leader(Some(epoch)))
    }

    /// Appends batches copied from the leader, keeping their offsets and epochs: the first
    /// base offset must equal the log end offset and the batches must be contiguous, else
    /// [`LogError::NonMonotonicOffset`]. Checks shape, size and CRC of every batch before
    /// writing any. Durability as for [`Log::append`]. A batch whose epoch (>= 0) is newer
    /// than the latest starts an epoch-cache entry at its base offset, made durable before the
    /// batches are written; an older one refuses the append ([`LogError::EpochRegression`]).
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Offset};
    /// use strom_log::{Log, LogConfig, LogError};
    /// let dir = tempfile::tempdir().unwrap();
    /// let leader = Log::open(dir.path().join("leader"), LogConfig::default()).unwrap();
    /// let follower = Log::open(dir.path().join("follower"), LogConfig::default()).unwrap();
    /// let mut b = BatchBuilder::new(Compression::None);
    /// b.append(0, None, Some(b"v".as_slice()), &[]);
    /// leader.append(b.build().unwrap()).unwrap();
    ///
    /// let fetched = leader.read(Offset::ZERO, 1 << 20).unwrap().records;
    /// follower.append_replicated(fetched.clone()).unwrap();
    /// assert_eq!(follower.log_end_offset().get(), 1);
    /// // The same batches again do not continue the log.
    /// assert!(matches!(follower.append_replicated(fetched),
    ///     Err(LogError::NonMonotonicOffset { .. })));
    /// ```
    pub fn append_replicated(&self, batches: Bytes) -> Result<AppendInfo, LogError> {
        self.append_from(batches, Origin::Replica)
    }

    /// A failed write or flush never leaves its records behind: the log is cut back to where
    /// it was before the write (or to its last flushed offset) before the error is returned,
    /// so a failure always means "not stored". The next append first retries that cut if it
    /// failed too, so the log takes writes again as soon as the disk does (no reopen).
    fn append_from(&self, batches: Bytes, origin: Origin) -> Result<AppendInfo, LogError> {
        self.repair_if_damaged()?;
        let parsed = validate(batches, origin, &self.config(), self.clock.now_ms())?;
        self.append_parsed(parsed, origin)
    }

    /// Several independent leader appends at once, as a partition's writer collects them:
    /// each is validated, sequence-checked and written as [`Log::append_with_leader_epoch`]
    /// would, in the order given, but all under one acquisition of the writer lock and with
    /// one flush decision for the lot. Each gets its own answer: one refused append (bad CRC,
    /// out-of-order sequence) does not affect the others. Durability as for [`Log::append`]:
    /// an `Ok` is on stable storage exactly when a single append would have been.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, LeaderEpoch};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let answers = log.append_group_with_leader_epoch(
    ///     vec![batch(2), bytes::Bytes::from_static(b"junk"), batch(3)],
    ///     LeaderEpoch::new(0),
    /// );
    /// assert_eq!(answers[0].as_ref().unwrap().first_offset.get(), 0);
    /// assert!(answers[1].is_err());
    /// assert_eq!(answers[2].as_ref().unwrap().first_offset.get(), 2);
    /// assert_eq!(log.log_end_offset().get(), 5);
    /// ```
    pub fn append_group_with_leader_epoch(
        &self,
        appends: Vec<Bytes>,
        epoch: LeaderEpoch,
    ) -> Vec<Result<AppendInfo, LogError>> {
        let origin = Origin::Leader(Some(epoch));
        if appends.len() <= 1 || self.repair_if_damaged().is_err() {
            // Nothing to share, or a damaged log: each append takes the single path, which
            // reports the damage in its own answer.
            return appends.into_iter().map(|b| self.append_from(b, origin)).collect();
        }
        // Validation (CRC, record walk) needs no lock: done before taking it.
        let config = self.config();
        let now = self.clock.now_ms();
        let parsed: Vec<_> =
            appends.into_iter().map(|b| validate(b, origin, &config, now)).collect();
        let mut answers = Vec::with_capacity(parsed.len());
        let mut failed_write = false;
        let rollbacks_seen = {
            let mut writer = self.writer.lock();
            for batches in parsed {
                // A failed write poisons the log: the later appends of the group fail too.
                let answer = batches.and_then(|b| self.write_locked(&mut writer, b, origin));
                failed_write |= answer.is_err();
                answers.push(answer);
            }
            // Rollbacks are counted under the writer lock: the count is the one every write
            // of the group saw.
            self.rollbacks.lock().count
        };
        if failed_write {
            // A failed cut keeps the log refusing writes until a later one works.
            let _ = self.repair_if_damaged();
        }
        let mut flush_error = self.flush_per_policy().err();
        for answer in &mut answers {
            let Ok(info) = answer else { continue };
            if info.duplicate {
                continue;
            }
            let offset = info.first_offset;
            if let Some(e) = flush_error.take() {
                *answer = Err(e);
                // The other appends of the group share that flush's fate: the log is cut
                // back to its last flushed offset (see `flush_inner`).
                flush_error = Some(LogError::RolledBack {
                    offset,
                    reason: "a flush failed after the write".into(),
                });
                continue;
            }
            // A flush that failed after this write (ours or a concurrent one) may have cut
            // the log below these records; they are then gone, and must not be reported.
            if self.rollbacks.lock().cut(rollbacks_seen, info.last_offset) {
                *answer = Err(LogError::RolledBack {
                    offset,
                    reason: "a flush failed after the write".into(),
                });
            }
        }
        answers
    }

    /// What an append does under the writer lock: offsets (and, from a compacted leader, the
    /// gaps they may skip), the producers' sequence checks, the epoch entry, the write and the
    /// producer state, in that order. A retry of a recent batch answers with its original
    /// offsets and writes nothing. A failed write marks the log damaged; the caller repairs it
    /// once the lock is released.
    fn write_locked(
        &self,
        writer: &mut Writer,
        parsed: Vec<RecordBatch>,
        origin: Origin,
    ) -> Result<AppendInfo, LogError> {
        self.check_poison()?;
        let before = self.log_end_offset();
        let prepared = self.assign_offsets(parsed, origin)?;
        self.allow_replicated_gaps(&prepared, before)?;
        if let Some(original) = self.check_producers(&prepared, origin)? {
            return Ok(original);
        }
        self.epochs.record_append(epoch_starts(&prepared, origin))?;
        let now = self.clock.now_ms();
        let info = self
            .write_batches(writer, &prepared, origin, now)
            .map_err(|e| self.damaged_by(e, before))?;
        self.record_producers(&prepared, now);
        Ok(info)
    }

    /// The locked part of an append: offsets, sequence checks, write, flush decision.
    fn append_parsed(
        &self,
        parsed: Vec<RecordBatch>,
        origin: Origin,
    ) -> Result<AppendInfo, LogError> {
        let (info, rollbacks_seen) = {
            let mut writer = self.writer.lock();
            match self.write_locked(&mut writer, parsed, origin) {
                Ok(info) => (info, self.rollbacks.lock().count),
                Err(e) => {
                    drop(writer);
                    // A failed cut keeps the log refusing writes until a later one works.
                    let _ = self.repair_if_damaged();
                    return Err(e);
                }
            }
        };
        self.flush_per_policy()?;
        // A flush that failed after this write (ours or a concurrent one) may have cut the log
        // below our records; they are then gone, and we must not report them stored.
        if self.rollbacks.lock().cut(rollbacks_seen, info.last_offset) {
            return Err(LogError::RolledBack {
                offset: info.first_offset,
                reason: "a flush failed after the write".into(),
            });
        }
        Ok(info)
    }

    /// The leader's sequence checks of idempotent batches, under the writer lock so no other
    /// append of the same producer runs between check and write. `Some` = the append is one
    /// batch, a retry of a stored one: answered with its original offsets, nothing written. A
    /// duplicate within several batches is refused (out of order). No lock and no allocation
    /// for batches without a producer id.
    fn check_producers(
        &self,
        prepared: &[Prepared],
        origin: Origin,
    ) -> Result<Option<AppendInfo>, LogError> {
        if let Origin::Replica = origin {
            return Ok(None);
        }
        let mut guard = None;
        // The state as this append's earlier batches leave it, when there are several.
        let mut staged: Option<ProducerStateManager> = None;
        for p in prepared {
            let Some(batch) = ProducerBatch::of(&p.batch, p.base) else { continue };
            let state = guard.get_or_insert_with(|| self.producers.lock());
            let verdict = staged.as_ref().unwrap_or(&**state).check(&batch)?;
            match verdict {
                Verdict::Duplicate(m) if prepared.len() > 1 => {
                    // One answer (one base offset) cannot describe a retry stored at its old
                    // offsets and new batches appended at the end: refuse rather than drop the
                    // new ones. Kafka clients send one batch per partition; the SDK sends a
                    // retried batch alone.
                    return Err(LogError::OutOfOrderSequence {
                        producer_id: batch.producer_id,
                        expected: -1,
                        got: m.first_seq,
                    });
                }
                Verdict::Duplicate(m) => {
                    tracing::debug!(dir = %self.dir.display(), producer_id = batch.producer_id,
                        first_seq = m.first_seq, first_offset = %m.first_offset,
                        "duplicate batch of an idempotent producer: not written again");
                    return Ok(Some(AppendInfo {
                        first_offset: m.first_offset,
                        last_offset: m.last_offset,
                        max_timestamp: m.max_timestamp,
                        batches: 1,
                        bytes: 0,
                        duplicate: true,
                    }));
                }
                Verdict::Append if prepared.len() > 1 => {
                    staged.get_or_insert_with(|| (**state).clone()).apply(&batch);
                }
                Verdict::Append => {}
            }
        }
        Ok(None)
    }

    /// Records written idempotent batches in the producer state (every origin: followers
    /// and recovery rebuild what the leader has) and forgets expired producers now and then.
    fn record_producers(&self, prepared: &[Prepared], now: i64) {
        let mut guard = None;
        for p in prepared {
            if let Some(batch) = ProducerBatch::of(&p.batch, p.base) {
                guard.get_or_insert_with(|| self.producers.lock()).apply(&batch);
            }
        }
        drop(guard);
        if now >= self.next_expiry_check_ms.load(Ordering::Relaxed) {
            let expiration = self.expiration_ms();
            let next = now.saturating_add(expiration.min(PRODUCER_EXPIRATION_CHECK_MS));
            self.next_expiry_check_ms.store(next, Ordering::Relaxed);
            let removed = self.producers.lock().remove_expired(now, expiration);
            if removed > 0 {
                tracing::debug!(dir = %self.dir.display(), removed, "expired producer ids");
            }
        }
    }

    fn expiration_ms(&self) -> i64 {
        i64::try_from(self.config().producer_id_expiration_ms.as_millis()).unwrap_or(i64::MAX)
    }

    /// Rebuilds the producer state for the current log end: deletes snapshots above it,
    /// loads the latest readable one (deleting damaged ones) and replays the batches after
    /// it. Without a snapshot it replays the last two segments only, as Kafka does for a log
    /// written before snapshots existed: older producers are forgotten, not misread.
    fn reload_producers(&self) -> Result<(), LogError> {
        let end = self.log_end_offset();
        producer_snapshot::remove_above(self.storage(), &self.dir, end)?;
        let mut loaded = None;
        for offset in producer_snapshot::list(self.storage(), &self.dir)?.into_iter().rev() {
            match producer_snapshot::read(self.storage(), &self.dir, offset) {
                Ok(state) => {
                    loaded = Some((offset, state));
                    break;
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "deleting an unreadable producer-state snapshot");
                    producer_snapshot::remove(self.storage(), &self.dir, offset)?;
                }
            }
        }
        let start = self.log_start_offset();
        let (from, mut state) = match loaded {
            Some((offset, state)) => (offset.max(start), state),
            None => {
                let segments = self.snapshot();
                let from = segments.len().checked_sub(2).and_then(|i| segments.get(i));
                (from.map_or(start, |s| s.base()).max(start), ProducerStateManager::default())
            }
        };
        self.replay_producers(&mut state, from, end);
        state.remove_expired(self.clock.now_ms(), self.expiration_ms());
        *self.producers.lock() = state;
        Ok(())
    }

    /// Applies the batches in `[from, end)` to `state`. A read failure (corruption found
    /// later than recovery looked) stops the replay with a warning: the state then misses
    /// the producers of the unreadable range, which are accepted at any sequence.
    fn replay_producers(&self, state: &mut ProducerStateManager, from: Offset, end: Offset) {
        let mut at = from;
        while at < end {
            let records = match self.read_below(at, REPLAY_READ_BYTES, end) {
                Ok(read) if !read.records.is_empty() => read.records,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), offset = %at, error = %e,
                        "producer state replay stopped at an unreadable batch");
                    return;
                }
            };
            for batch in Batches::new(records) {
                let Ok(batch) = batch else { return };
                if batch.base_offset() >= at
                    && let Some(b) = ProducerBatch::of(&batch, batch.base_offset())
                {
                    state.apply(&b);
                }
                at = at.max(batch.next_offset());
            }
        }
    }

    /// Writes the snapshot at `offset` of the current state plus `pending` (batches of the
    /// running append already written below `offset`). A failure only costs a longer replay
    /// at the next open, so it is logged, not returned.
    fn snapshot_producers(&self, offset: Offset, pending: &[Prepared]) {
        let mut state = self.producers.lock().clone();
        for p in pending {
            if let Some(batch) = ProducerBatch::of(&p.batch, p.base) {
                state.apply(&batch);
            }
        }
        if let Err(e) = producer_snapshot::write(self.storage(), &self.dir, offset, &state) {
            tracing::warn!(dir = %self.dir.display(), %offset, error = %e,
                "could not write the producer-state snapshot");
        }
    }

    /// A copy of the producer state: for each idempotent producer id seen in this log (and not
    /// expired), its epoch and latest batches.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert!(log.producer_state().is_empty());
    /// ```
    pub fn producer_state(&self) -> ProducerStateManager {
        self.producers.lock().clone()
    }

    /// Makes the cleaner checkpoint cover the offset gaps of replicated batches (a compacted
    /// leader's) before they are written, so recovery reads them as the cleaner's gaps and not
    /// as a torn write. A no-op for dense appends.
    fn allow_replicated_gaps(&self, prepared: &[Prepared], end: Offset) -> Result<(), LogError> {
        let mut next = end;
        let mut gap_to = None;
        for p in prepared {
            if p.base > next {
                gap_to = Some(p.base);
            }
            next = p.next_offset();
        }
        match gap_to {
            Some(to) => self.raise_cleaned_to(to),
            None => Ok(()),
        }
    }

    /// Offsets for each batch: assigned (leader) or checked against the log end (follower).
    fn assign_offsets(
        &self,
        parsed: Vec<RecordBatch>,
        origin: Origin,
    ) -> Result<Vec<Prepared>, LogError> {
        let end = self.log_end_offset();
        let compact = self.config().compact;
        let mut next = end;
        let mut prepared = Vec::with_capacity(parsed.len());
        for batch in parsed {
            let base = match origin {
                Origin::Replica => {
                    // A gap is a compacted leader's (`cleaner.rs`), legal on compacted logs
                    // only; going back never is.
                    let gap = batch.base_offset() > next && compact;
                    if batch.base_offset() != next && !gap {
                        return Err(LogError::NonMonotonicOffset {
                            expected: next,
                            got: batch.base_offset(),
                        });
                    }
                    batch.base_offset()
                }
                Origin::Leader(_) => next,
            };
            let records = i64::from(batch.last_offset_delta()) + 1;
            if base.get().checked_add(records).is_none() {
                return Err(LogError::OffsetOverflow { end, records });
            }
            let p = Prepared { batch, base };
            next = p.next_offset();
            prepared.push(p);
        }
        Ok(prepared)
    }

    /// Writes prepared batches, rolling segments as needed, and publishes them run by run.
    /// An error here leaves unpublished bytes (and maybe published batches) of this append
    /// behind; the caller cuts the log back before it answers.
    fn write_batches(
        &self,
        writer: &mut Writer,
        prepared: &[Prepared],
        origin: Origin,
        now: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut active = self.active_segment();
        if !active.is_empty() && self.too_old(&active, now) {
            active = self.roll(writer, self.log_end_offset(), &[])?;
        }
        let config = self.config();
        let interval = u64::from(config.index_interval_bytes);
        let mut i = 0;
        while i < prepared.len() {
            debug_assert!(
                !active.is_empty() || active.base() == self.log_end_offset(),
                "an empty active segment starts at the log end offset"
            );
            let seg_size = active.size();
            let mut run_bytes = 0u64;
            let mut bytes_since = writer.bytes_since_index;
            let mut max_ts = active.max_timestamp();
            let mut entries: Vec<(OffsetEntry, TimeEntry)> = Vec::new();
            let run_start = i;
            while let Some(p) = prepared.get(i) {
                let size = p.batch.size() as u64;
                let pos = seg_size + run_bytes;
                let rel = p.base.get() - active.base().get();
                let last_rel = rel + i64::from(p.batch.last_offset_delta());
                let fits = pos == 0
                    || (pos + size <= config.segment_bytes
                        && last_rel <= MAX_RELATIVE_OFFSET
                        && active.offset_index_len() + entries.len() < MAX_INDEX_ENTRIES);
                if !fits {
                    break;
                }
                if pos > 0 && bytes_since >= interval {
                    // `fits` bounds both by i32::MAX, so these conversions cannot fail.
                    if let (Ok(rel), Ok(pos)) = (u32::try_from(rel), u32::try_from(pos)) {
                        let time = TimeEntry { ts: max_ts, rel: rel.saturating_sub(1) };
                        entries.push((OffsetEntry { rel, pos }, time));
                        bytes_since = 0;
                    }
                }
                bytes_since += size;
                max_ts = max_ts.max(p.batch.max_timestamp());
                run_bytes += size;
                i += 1;
            }
            if i == run_start {
                let base = prepared.get(i).map_or(self.log_end_offset(), |p| p.base);
                active = self.roll(writer, base, prepared.get(..i).unwrap_or_default())?;
                continue;
            }
            let run = prepared.get(run_start..i).unwrap_or_default();
            write_run(&active, run, origin)?;
            let next = run.last().map_or(active.next_offset(), Prepared::next_offset);
            active.publish(seg_size + run_bytes, next, max_ts, now, &entries)?;
            writer.bytes_since_index = bytes_since;
            let previous = self.end.swap(next.get(), Ordering::AcqRel);
            assert!(previous < next.get(), "the log end offset only grows on append");
        }
        let (first, last) = match (prepared.first(), prepared.last()) {
            (Some(f), Some(l)) => (f.base, l.next_offset().add(-1)),
            _ => return Err(LogError::EmptyAppend),
        };
        Ok(AppendInfo {
            first_offset: first,
            last_offset: last,
            max_timestamp: prepared.iter().map(|p| p.batch.max_timestamp()).max().unwrap_or(-1),
            batches: prepared.len(),
            bytes: prepared.iter().map(|p| p.batch.size()).sum(),
            duplicate: false,
        })
    }

    fn too_old(&self, segment: &LogSegment, now: i64) -> bool {
        let (Some(limit), Some(basis)) = (self.config().segment_ms, segment.roll_basis_ms()) else {
            return false;
        };
        let limit = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
        now.saturating_sub(basis) > limit
    }

    /// Closes the active segment (fsyncing it: every non-active segment is always fully
    /// flushed) and starts a new one at `base`, the log end offset, with a producer-state
    /// snapshot at `base` (`pending`: batches of the running append written below it).
    fn roll(
        &self,
        writer: &mut Writer,
        base: Offset,
        pending: &[Prepared],
    ) -> Result<Arc<LogSegment>, LogError> {
        let old = self.active_segment();
        debug_assert!(!old.is_empty(), "never roll an empty segment");
        debug_assert_eq!(old.next_offset(), base, "a new segment starts at the log end offset");
        if self.flushed_offset() < old.next_offset() {
            old.flush()?;
            self.flushed.fetch_max(old.next_offset().get(), Ordering::AcqRel);
        }
        let created = LogSegment::create(self.storage(), &self.dir, base)
            .and_then(|s| sync_dir(self.storage(), &self.dir).map(|()| s));
        let segment = match created {
            Ok(segment) => Arc::new(segment),
            Err(e) => {
                writer.failed_roll = Some(base);
                return Err(e);
            }
        };
        segment.set_gaps_to(self.first_dirty_offset());
        {
            let mut segments = self.segments.write();
            let mut list = Vec::with_capacity(segments.len() + 1);
            list.extend(segments.iter().cloned());
            list.push(segment.clone());
            *segments = Arc::new(list);
        }
        writer.bytes_since_index = 0;
        tracing::debug!(dir = %self.dir.display(), %base, "rolled a new segment");
        self.snapshot_producers(base, pending);
        if let Err(e) = self.write_checkpoint(self.flushed_offset(), false) {
            // Only makes the next crash recovery scan more; the data is safe.
            tracing::warn!(error = %e, "could not write the recovery point");
        }
        Ok(segment)
    }

    // ------------------------------------------------------------------------------ reads

    /// Whole batches starting with the one that holds `from`, up to `max_bytes` in total (and
    /// at most 64 MiB) but at least one batch however large (Kafka's fetch semantics), all
    /// from one segment. Every
    /// returned batch passed its CRC check. `from == log_end_offset` gives an empty result;
    /// `from` outside `[log_start_offset, log_end_offset]` is
    /// [`LogError::OffsetOutOfRange`]. Never blocks on writers.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Batches, Offset};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append(batch(10)).unwrap(); // offsets 0..=9
    /// log.append(batch(10)).unwrap(); // offsets 10..=19
    /// // Offset 15 is inside the second batch, which comes back whole.
    /// let read = log.read(Offset::new(15), 1).unwrap();
    /// let batches: Vec<_> = Batches::new(read.records).map(|b| b.unwrap()).collect();
    /// assert_eq!(batches.len(), 1);
    /// assert_eq!(batches[0].base_offset(), Offset::new(10));
    /// assert!(log.read(Offset::new(20), 1).unwrap().records.is_empty());
    /// assert!(log.read(Offset::new(21), 1).is_err());
    /// ```
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.read_bounded(from, max_bytes, None)
    }

    /// [`Log::read`] returning only batches whose last offset is below `upper` (a high
    /// watermark), so a consumer never sees a record above it.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Batches, Offset};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append(batch(5)).unwrap(); // 0..=4
    /// log.append(batch(5)).unwrap(); // 5..=9
    /// let read = log.read_below(Offset::ZERO, 1 << 20, Offset::new(7)).unwrap();
    /// assert_eq!(Batches::new(read.records).count(), 1);
    /// ```
    pub fn read_below(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
    ) -> Result<ReadResult, LogError> {
        self.read_bounded(from, max_bytes, Some(upper))
    }

    fn read_bounded(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Option<Offset>,
    ) -> Result<ReadResult, LogError> {
        for _ in 0..MAX_READ_ATTEMPTS {
            // The end first: a segment is in the list before any offset in it is published.
            let end = self.log_end_offset();
            let start = self.log_start_offset();
            if from < start || from > end {
                return Err(LogError::OffsetOutOfRange { requested: from, start, end });
            }
            let limit = upper.map_or(end, |u| u.min(end));
            let result =
                |records| ReadResult { records, log_start_offset: start, log_end_offset: end };
            if from >= limit {
                return Ok(result(Bytes::new()));
            }
            let segments = self.snapshot();
            let mut at = from;
            // `at` moves on to the next segment when the cleaner emptied the rest of this one.
            let outcome = loop {
                let n = segments.partition_point(|s| s.base() <= at);
                let Some(segment) = n.checked_sub(1).and_then(|i| segments.get(i)) else {
                    break Err(SegError::Retry); // retention removed it meanwhile
                };
                match segment.read(at, max_bytes, limit) {
                    Ok(records) if records.is_empty() && at < limit => {
                        match segments.get(n).map(|s| s.base()) {
                            Some(next) if next > at && next < limit => at = next,
                            _ => break Ok(records),
                        }
                    }
                    other => break other,
                }
            };
            match outcome {
                Ok(records) => return Ok(result(records)),
                Err(SegError::Retry) => continue,
                Err(SegError::Log(e)) => return Err(e),
            }
        }
        Err(LogError::ConcurrentModification)
    }

    /// The first record whose timestamp is at or after `ts_ms`, and that timestamp; `None`
    /// when every record is older. Records below the log start offset are not considered,
    /// even in the batch that holds the start (Kafka's `findOffsetByTimestamp` with the log
    /// start as the starting offset). Exact: it decodes the records of the batch it lands in.
    /// (Kafka's special values -1/-2 for latest/earliest are the caller's to map onto
    /// [`Log::log_end_offset`]/[`Log::log_start_offset`].)
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Offset};
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let mut b = BatchBuilder::new(Compression::None);
    /// for ts in [100, 300, 200] {
    ///     b.append(ts, None, Some(b"v".as_slice()), &[]);
    /// }
    /// log.append(b.build().unwrap()).unwrap();
    /// assert_eq!(log.offset_for_timestamp(150).unwrap(), Some((Offset::new(1), 300)));
    /// assert_eq!(log.offset_for_timestamp(301).unwrap(), None);
    /// ```
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(Offset, i64)>, LogError> {
        'attempt: for _ in 0..MAX_READ_ATTEMPTS {
            let segments = self.snapshot();
            let from = self.log_start_offset();
            for segment in segments.iter() {
                if segment.max_timestamp() < ts_ms {
                    continue;
                }
                match segment.find_timestamp(ts_ms, from) {
                    Ok(Some(found)) => return Ok(Some(found)),
                    Ok(None) => {}
                    Err(SegError::Retry) => continue 'attempt,
                    Err(SegError::Log(e)) => return Err(e),
                }
            }
            return Ok(None);
        }
        Err(LogError::ConcurrentModification)
    }

    // ------------------------------------------------------------------------------ truncation

    /// Drops every record at or above `offset`; a batch holding `offset` is dropped whole, so
    /// the log end offset becomes that batch's base offset (on a compacted log whose cleaner
    /// removed the records just before it, the offset after the last record kept, as a reopen
    /// would find it). Later segments are deleted. An
    /// `offset` below the log start offset empties the log and restarts it at `offset`; one at
    /// or above the log end offset changes nothing.
    ///
    /// Durability: when it returns the truncation is on stable storage (the segment and the
    /// directory are fsynced), so a crash cannot bring truncated records back.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Offset};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append(batch(4)).unwrap(); // 0..=3
    /// log.append(batch(4)).unwrap(); // 4..=7
    /// log.truncate_to(Offset::new(6)).unwrap();
    /// assert_eq!(log.log_end_offset().get(), 4);
    /// assert_eq!(log.append(batch(1)).unwrap().first_offset.get(), 4);
    /// ```
    pub fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        self.cut_durably(offset, false)
    }

    /// Both truncations; `restart` deletes every record.
    fn cut_durably(&self, offset: Offset, restart: bool) -> Result<(), LogError> {
        if offset.get() < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start: self.log_start_offset(),
                end: self.log_end_offset(),
            });
        }
        self.repair_if_damaged()?;
        let _flush = self.flush_lock.lock();
        let mut writer = self.writer.lock();
        self.check_poison()?;
        if !restart && offset >= self.log_end_offset() {
            return Ok(());
        }
        // A recovery point above data that is about to be rewritten would let recovery trust
        // unflushed bytes: lower it durably first. This also puts every segment in recovery's
        // range, so it deletes whatever does not continue the segments before it.
        let point = offset.min(self.flushed_offset());
        self.write_checkpoint(point, true).map_err(|e| self.damaged_by(e, offset))?;
        // Gaps stay legal only below the cut: what is appended after it must be dense. On
        // disk first; in memory once the cut is made (see `lower_cleaned_to`).
        let lowered = self.lower_cleaned_to(offset).map_err(|e| self.damaged_by(e, offset))?;
        self.flushed.fetch_min(point.get(), Ordering::AcqRel);
        let result = if restart {
            self.truncate_fully(&mut writer, offset)
        } else {
            self.truncate_locked(&mut writer, offset)
        };
        if lowered {
            self.set_cleaned_to(offset);
        }
        result.map_err(|e| self.damaged_by(e, offset))
    }

    fn truncate_locked(&self, writer: &mut Writer, offset: Offset) -> Result<(), LogError> {
        let segments = self.snapshot();
        let keep = segments.partition_point(|s| s.base() <= offset);
        let Some(holder) = keep.checked_sub(1).and_then(|i| segments.get(i)).cloned() else {
            return self.truncate_fully(writer, offset);
        };
        if offset <= self.log_start_offset() {
            return self.truncate_fully(writer, offset);
        }
        // `holder` exists, so 1 <= keep <= len: the list never ends up empty.
        let (kept, removed) =
            segments.split_at_checked(keep).expect("invariant: truncation keeps 1..=len segments");
        {
            let mut list = self.segments.write();
            *list = Arc::new(kept.to_vec());
        }
        // Readers that load the end from here on do not look past `offset`.
        self.end.fetch_min(offset.get(), Ordering::AcqRel);
        for segment in removed.iter().rev() {
            segment.delete_files(self.storage())?;
        }
        let new_end = match holder.truncate_at(offset)? {
            Some((new_end, bytes_since)) => {
                writer.bytes_since_index = bytes_since;
                new_end
            }
            None => holder.next_offset(),
        };
        let start = self.log_start_offset();
        if new_end < start {
            // The cut batch began below a start moved inside it (`delete_records_before`):
            // nothing at or above the start is left, and the end never goes below the start.
            return self.truncate_fully(writer, start);
        }
        holder.flush()?;
        sync_dir(self.storage(), &self.dir)?;
        debug_assert!(new_end <= offset);
        self.end.store(new_end.get(), Ordering::Release);
        self.flushed.fetch_min(new_end.get(), Ordering::AcqRel);
        tracing::info!(dir = %self.dir.display(), %offset, end = %new_end,
            deleted_segments = removed.len(), "truncated log");
        // After the cut: a crash before this leaves entries at or above the end, which open
        // drops; never batches without their entry.
        self.epochs.truncate_from_end(new_end)?;
        // Likewise snapshots above the cut: open deletes them.
        self.reload_producers()
    }

    /// Deletes every record and restarts the log, empty, at `offset` (log start = end =
    /// `offset`), which may lie above the current end: a follower whose leader's log start
    /// has passed its end. Clears the epoch cache.
    ///
    /// Durability: as for [`Log::truncate_to`]; a crash part-way reopens either a dense part
    /// of the old log or the empty log at `offset`, with an epoch cache matching its batches.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, LeaderEpoch, Offset};
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let mut b = BatchBuilder::new(Compression::None);
    /// b.append(0, None, Some(b"v".as_slice()), &[]);
    /// log.append_with_leader_epoch(b.build().unwrap(), LeaderEpoch::new(1)).unwrap();
    /// log.restart_at(Offset::new(500)).unwrap();
    /// assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (500, 500));
    /// assert_eq!(log.latest_epoch(), None);
    /// ```
    pub fn restart_at(&self, offset: Offset) -> Result<(), LogError> {
        self.cut_durably(offset, true)
    }

    /// Deletes every segment and restarts the log, empty, at `offset`; the caller lowered the
    /// recovery point to `offset` or below. Crash order: with no segment named `offset`, the
    /// new one is created first, then old ones go newest first; with one, the others go
    /// newest first and it is emptied (and fsynced) last. A crash part-way leaves old segments
    /// that do not continue one another or the new one, and recovery keeps a dense run of
    /// them (deleting the rest) or the new empty one: never no segment at all.
    fn truncate_fully(&self, writer: &mut Writer, offset: Offset) -> Result<(), LogError> {
        let result = self.recreate_at(writer, offset);
        self.producers.lock().clear();
        // Start and end are `offset` even if a file operation failed part-way: no record is
        // left for an entry to describe (were old ones left, reopen would rebuild the file).
        // Every snapshot goes: one below `offset` describes the old history.
        result.and(self.epochs.clear()).and(producer_snapshot::remove_above(
            self.storage(),
            &self.dir,
            Offset::new(-1),
        ))
    }

    fn recreate_at(&self, writer: &mut Writer, offset: Offset) -> Result<(), LogError> {
        // First of all: from here a crash reopens empty at `offset` (recovery completes the
        // truncation), never at an old segment's base below it, nor at an old segment's records
        // below a start that `delete_records_before` had moved inside a segment.
        log_start::write_kind(self.storage(), &self.dir, offset, StartKind::Restart)?;
        self.restart_checkpoint_pending.store(true, Ordering::Release);
        let old = self.snapshot();
        self.end.store(offset.get(), Ordering::Release);
        self.start.store(offset.get(), Ordering::Release);
        let reused = old.iter().any(|s| s.base() == offset);
        if !reused {
            let segment = Arc::new(LogSegment::create(self.storage(), &self.dir, offset)?);
            sync_dir(self.storage(), &self.dir)?;
            *self.segments.write() = Arc::new(vec![segment]);
        }
        for segment in old.iter().rev() {
            if segment.base() == offset {
                // Its file is about to be reused: readers of the old segment must retry.
                segment.retire();
            } else {
                segment.delete_files(self.storage())?;
            }
        }
        if reused {
            // Truncates the same-named old segment in place; the fsync keeps its old bytes
            // from coming back after power loss.
            let segment = Arc::new(LogSegment::create(self.storage(), &self.dir, offset)?);
            segment.flush()?;
            *self.segments.write() = Arc::new(vec![segment]);
        }
        sync_dir(self.storage(), &self.dir)?;
        writer.bytes_since_index = 0;
        self.flushed.store(offset.get(), Ordering::Release);
        // Before the new segment takes an append: a `Restart` checkpoint would empty it again.
        // (If this fails the log is damaged, and the repair writes it before any append.)
        self.settle_restart_checkpoint()?;
        tracing::info!(dir = %self.dir.display(), %offset, "truncated the whole log");
        Ok(())
    }

    /// Rewrites a `Restart` log-start checkpoint of a finished full truncation as a plain
    /// one, if one is pending.
    fn settle_restart_checkpoint(&self) -> Result<(), LogError> {
        if self.restart_checkpoint_pending.load(Ordering::Acquire) {
            log_start::write(self.storage(), &self.dir, self.log_start_offset())?;
            self.restart_checkpoint_pending.store(false, Ordering::Release);
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ flushing

    /// fsyncs every appended record and the indexes, then records the recovery point. When it
    /// returns, every record appended before the call survives power loss, and
    /// [`Log::flushed_offset`] is at least the log end offset seen at the call.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression};
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let mut b = BatchBuilder::new(Compression::None);
    /// b.append(0, None, Some(b"v".as_slice()), &[]);
    /// log.append(b.build().unwrap()).unwrap();
    /// assert_eq!(log.flushed_offset().get(), 0);
    /// log.flush().unwrap();
    /// assert_eq!(log.flushed_offset().get(), 1);
    /// ```
    pub fn flush(&self) -> Result<(), LogError> {
        self.flush_inner(true)
    }

    /// Flushes if the [`FlushPolicy`] says one is due now (for `Interval`, when the interval
    /// has passed since the last flush; for the others, when unflushed records exist that the
    /// policy would have flushed). Call it from a timer for `Interval` policies.
    ///
    /// ```
    /// use std::time::Duration;
    /// use strom_log::{FlushPolicy, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { flush: FlushPolicy::Interval(Duration::from_secs(1)), ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// log.flush_if_due().unwrap();
    /// ```
    pub fn flush_if_due(&self) -> Result<(), LogError> {
        if self.flush_due() { self.flush_inner(false) } else { Ok(()) }
    }

    fn flush_due(&self) -> bool {
        let unflushed = self.log_end_offset().get() - self.flushed_offset().get();
        match self.config().flush {
            FlushPolicy::EveryAppend => unflushed > 0,
            FlushPolicy::EveryMessages(n) => unflushed > 0 && unflushed as u64 >= n,
            FlushPolicy::Interval(every) => {
                let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
                let last = self.last_flush_ms.load(Ordering::Acquire);
                unflushed > 0 && self.clock.now_ms().saturating_sub(last) >= every
            }
            FlushPolicy::Manual => false,
        }
    }

    fn flush_per_policy(&self) -> Result<(), LogError> {
        if self.flush_due() { self.flush_inner(false) } else { Ok(()) }
    }

    /// A failed fsync cuts the log back to its last flushed offset before returning: after
    /// one, the kernel may have dropped the unflushed pages, so what lies above is no longer
    /// known to be what was written (and for an append waiting on this flush, not stored).
    fn flush_inner(&self, checkpoint: bool) -> Result<(), LogError> {
        let result = self.flush_locked(checkpoint);
        if result.is_err()
            && let Err(e) = self.repair_if_damaged()
        {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                    "could not cut the log back after a failed flush; retrying on the next write");
        }
        result
    }

    fn flush_locked(&self, checkpoint: bool) -> Result<(), LogError> {
        let _flush = self.flush_lock.lock();
        self.check_poison()?;
        // The end before the active segment: a roll fsyncs the old active segment before the
        // new one is listed, so everything below `target` is in `active` or already durable.
        let target = self.log_end_offset();
        let active = self.active_segment();
        if self.flushed_offset() < target {
            active.flush().map_err(|e| self.damaged_by(e, self.flushed_offset()))?;
            self.flushed.fetch_max(target.get(), Ordering::AcqRel);
        }
        self.last_flush_ms.store(self.clock.now_ms(), Ordering::Release);
        if checkpoint {
            // The data is durable either way; a stale recovery point only makes the next
            // recovery scan more (and a full disk may refuse the new file).
            if let Err(e) = self.write_checkpoint(self.flushed_offset(), false) {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "could not write the recovery point");
            }
        }
        Ok(())
    }

    /// Writes the recovery point: only upwards unless `lower` (truncation), which also fsyncs
    /// the directory so the lowered value is what a crash finds.
    fn write_checkpoint(&self, value: Offset, lower: bool) -> Result<(), LogError> {
        let mut last = self.checkpoint.lock();
        if !lower && value <= *last {
            return Ok(());
        }
        recovery::write_recovery_point(self.storage(), &self.dir, value, lower)?;
        *last = value;
        Ok(())
    }

    // ------------------------------------------------------------------------------ retention

    /// Deletes whole old segments past `retention_bytes` or `retention_ms` (never the active
    /// one), advancing the log start offset; returns how many were deleted. The broker calls
    /// it periodically. Readers still holding a deleted segment finish their read from it.
    ///
    /// Durability: the directory is fsynced, so deleted segments stay deleted after a crash.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { segment_bytes: 1, retention_bytes: Some(1), ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config).unwrap();
    /// for _ in 0..3 {
    ///     log.append(batch(2)).unwrap(); // every batch gets its own segment
    /// }
    /// assert_eq!(log.enforce_retention().unwrap(), 2);
    /// assert_eq!(log.log_start_offset().get(), 4);
    /// ```
    pub fn enforce_retention(&self) -> Result<usize, LogError> {
        let _writer = self.writer.lock();
        self.check_poison()?;
        let segments = self.snapshot();
        let count = retention::deletable_prefix(&segments, &self.config(), self.clock.now_ms());
        let (Some(new_first), Some(deleted)) = (segments.get(count), segments.get(..count)) else {
            return Ok(0);
        };
        if count == 0 {
            return Ok(0);
        }
        {
            let mut list = self.segments.write();
            // `new_first` exists, so count < len: retention never removes the active segment.
            let kept =
                segments.get(count..).expect("invariant: retention keeps the active segment");
            *list = Arc::new(kept.to_vec());
        }
        // A start that a record deletion moved inside `new_first` (the segments before it
        // wholly below it) stays.
        let new_start = new_first.base().max(self.log_start_offset());
        let previous = self.start.swap(new_start.get(), Ordering::AcqRel);
        debug_assert!(previous <= new_start.get(), "the log start offset only grows");
        let kind =
            if new_start > new_first.base() { StartKind::Within } else { StartKind::Truncation };
        for segment in deleted {
            tracing::info!(segment = %segment.path().display(), "deleting segment by retention");
            segment.delete_files(self.storage())?;
        }
        sync_dir(self.storage(), &self.dir)?;
        if let Err(e) = log_start::write_kind(self.storage(), &self.dir, new_start, kind) {
            // The segments already say where the log starts; the checkpoint only covers a
            // directory that later loses every segment. The next pass writes it again.
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not write the log-start-offset checkpoint after retention");
        }
        if let Err(e) = producer_snapshot::remove_below(self.storage(), &self.dir, new_first.base())
        {
            // Stale snapshots only cost disk; the next retention pass tries again.
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not delete producer-state snapshots after retention");
        }
        if let Err(e) = self.epochs.truncate_from_start(new_start) {
            // Answers already follow the new start; a stale file is fixed up by open.
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not write the leader-epoch checkpoint after retention");
        }
        Ok(count)
    }

    // ------------------------------------------------------------------------------ state

    /// The first offset in the log.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.log_start_offset().get(), 0);
    /// ```
    pub fn log_start_offset(&self) -> Offset {
        Offset::new(self.start.load(Ordering::Acquire))
    }

    /// The offset the next appended record gets.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.log_end_offset().get(), 0);
    /// ```
    pub fn log_end_offset(&self) -> Offset {
        Offset::new(self.end.load(Ordering::Acquire))
    }

    /// Every record below this offset is on stable storage.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.flushed_offset(), log.log_end_offset());
    /// ```
    pub fn flushed_offset(&self) -> Offset {
        Offset::new(self.flushed.load(Ordering::Acquire))
    }

    /// Bytes of batches in all segments (indexes not counted).
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.size_bytes(), 0);
    /// ```
    pub fn size_bytes(&self) -> u64 {
        self.snapshot().iter().map(|s| s.size()).sum()
    }

    /// Number of segments, the active one included.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.segment_count(), 1);
    /// ```
    pub fn segment_count(&self) -> usize {
        self.snapshot().len()
    }

    // ------------------------------------------------------------------------------ lifecycle

    /// Flushes everything and writes the clean-shutdown marker, so the next open skips crash
    /// recovery (it still validates the active segment's tail). Dropping a `Log` without
    /// closing it is safe: the next open treats it as a crash.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.close().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.log_end_offset().get(), 0);
    /// ```
    pub fn close(self) -> Result<(), LogError> {
        self.flush_inner(true)?;
        // The next open replays nothing: the snapshot covers the whole log (without it, the
        // open replays from the last roll's: slower, not wrong).
        self.snapshot_producers(self.log_end_offset(), &[]);
        recovery::write_clean_marker(self.storage(), &self.dir)?;
        tracing::debug!(dir = %self.dir.display(), end = %self.log_end_offset(), "log closed");
        Ok(())
    }

    /// Removes the log's directory and everything in it.
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("topic-0");
    /// let log = Log::open(&path, LogConfig::default()).unwrap();
    /// log.delete().unwrap();
    /// assert!(!path.exists());
    /// ```
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let storage = self.storage.clone();
        drop(self);
        storage.remove_dir_all(&dir).ctx(|| format!("delete {}", dir.display()))?;
        if let Some(parent) = dir.parent() {
            // Best effort: the deletion is complete either way once the OS persists it.
            if let Err(e) = sync_dir(storage.as_ref(), parent) {
                tracing::debug!(error = %e, "could not fsync the parent directory");
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ helpers

    /// The file system the log's files live on.
    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<LogSegment>>> {
        self.segments.read().clone()
    }

    fn active_segment(&self) -> Arc<LogSegment> {
        let segments = self.snapshot();
        // Never empty: open creates a segment and every mutation keeps one.
        match segments.last() {
            Some(s) => s.clone(),
            None => unreachable!("a log always has an active segment"),
        }
    }

    pub(crate) fn check_poison(&self) -> Result<(), LogError> {
        if let Some(reason) = self.swap_broken.lock().as_ref() {
            return Err(LogError::Poisoned(reason.clone()));
        }
        match self.damage.lock().as_ref() {
            Some(d) => Err(LogError::Poisoned(d.reason.clone())),
            None => Ok(()),
        }
    }

    /// Why the log refuses writes right now (a failed write or flush it could not yet undo).
    ///
    /// ```
    /// use strom_log::{Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// assert_eq!(log.storage_error(), None);
    /// ```
    pub fn storage_error(&self) -> Option<String> {
        let broken = self.swap_broken.lock().clone();
        broken.or_else(|| self.damage.lock().as_ref().map(|d| d.reason.clone()))
    }

    /// Records a failed write or flush: no write is taken until the log is cut back to
    /// `roll_back_to` (the lowest of all failures not yet undone).
    fn damaged_by(&self, e: LogError, roll_back_to: Offset) -> LogError {
        tracing::warn!(dir = %self.dir.display(), error = %e, %roll_back_to,
            "write failed; cutting the log back to its last good end");
        let mut damage = self.damage.lock();
        match damage.as_mut() {
            Some(d) => d.roll_back_to = d.roll_back_to.min(roll_back_to),
            None => *damage = Some(Damage { reason: e.to_string(), roll_back_to }),
        }
        e
    }

    /// Undoes a recorded failure: cuts the log back to its last good end and drops the bytes a
    /// failed write left past it; then the log takes writes again. A no-op on a healthy log.
    fn repair_if_damaged(&self) -> Result<(), LogError> {
        if let Some(reason) = self.swap_broken.lock().as_ref() {
            return Err(LogError::Poisoned(reason.clone()));
        }
        if self.damage.lock().is_none() {
            return Ok(());
        }
        let _flush = self.flush_lock.lock();
        let mut writer = self.writer.lock();
        let Some(to) = self.damage.lock().as_ref().map(|d| d.roll_back_to) else {
            return Ok(());
        };
        match self.settle_restart_checkpoint().and_then(|()| self.roll_back(&mut writer, to)) {
            Ok(()) => {
                *self.damage.lock() = None;
                let mut rollbacks = self.rollbacks.lock();
                rollbacks.count += 1;
                let n = rollbacks.count;
                rollbacks.recent.push_back((n, to));
                if rollbacks.recent.len() > ROLLBACK_HISTORY {
                    rollbacks.recent.pop_front();
                }
                tracing::info!(dir = %self.dir.display(), end = %self.log_end_offset(),
                    "log cut back to its last good end after a failed write; taking writes again");
                Ok(())
            }
            Err(e) => {
                let reason = format!("{e} (while undoing an earlier failed write)");
                if let Some(d) = self.damage.lock().as_mut() {
                    d.reason.clone_from(&reason);
                }
                Err(LogError::Poisoned(reason))
            }
        }
    }

    /// Cuts the log to `to` and every file of the active segment to what is published.
    fn roll_back(&self, writer: &mut Writer, to: Offset) -> Result<(), LogError> {
        // A recovery point above data that goes would let recovery trust rewritten bytes.
        let point = to.min(self.flushed_offset());
        if *self.checkpoint.lock() > point {
            self.write_checkpoint(point, true)?;
        }
        self.flushed.fetch_min(point.get(), Ordering::AcqRel);
        // The active segment may reach past the log end: a write whose index entry failed
        // after its batch was published in the segment (a full disk) never moved the end.
        let reach = self.log_end_offset().max(self.active_segment().next_offset());
        if to < reach {
            self.truncate_locked(writer, to)?;
        }
        let active = self.active_segment();
        active.discard_unpublished()?;
        if let Some(base) = writer.failed_roll
            && self.snapshot().iter().all(|s| s.base() != base)
        {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let path = self.dir.join(file_name(base, suffix));
                remove_if_exists(self.storage(), &path)
                    .ctx(|| format!("delete {}", path.display()))?;
            }
        }
        writer.failed_roll = None;
        // The cut must be on disk before the log takes writes again, also when it was made by
        // an earlier attempt whose fsync failed (the cut is then already in memory, so no
        // truncation runs above): after a power cut the cut bytes would come back in a
        // segment the log calls flushed, under the batches appended at their offsets since.
        active.flush()?;
        sync_dir(self.storage(), &self.dir)?;
        // An append that failed after recording its new epoch leaves it at the end.
        self.epochs.truncate_from_end(self.log_end_offset())
    }
}

/// The `(epoch, first offset)` each prepared batch claims for the epoch cache.
fn epoch_starts(
    prepared: &[Prepared],
    origin: Origin,
) -> impl Iterator<Item = (LeaderEpoch, Offset)> + Clone + '_ {
    prepared.iter().enumerate().filter_map(move |(i, p)| match origin {
        Origin::Leader(None) => None,
        Origin::Leader(Some(epoch)) => (i == 0).then_some((epoch, p.base)),
        Origin::Replica => Some((p.batch.partition_leader_epoch(), p.base)),
    })
}

/// Writes a run of batches at the end of `segment` with one vectored write (restarted after
/// short writes): a rewritten 16-byte prefix (base offset, length, epoch) per batch from the
/// stack, and the rest straight from the caller's buffers.
fn write_run(segment: &LogSegment, run: &[Prepared], origin: Origin) -> Result<(), LogError> {
    const PREFIX: usize = 16;
    let headers: Vec<[u8; PREFIX]> = run
        .iter()
        .map(|p| {
            let mut h = [0u8; PREFIX];
            h.copy_from_slice(p.batch.as_bytes().get(..PREFIX).unwrap_or(&[0; PREFIX]));
            if let Origin::Leader(epoch) = origin {
                h[..8].copy_from_slice(&p.base.get().to_be_bytes());
                if let Some(epoch) = epoch {
                    h[12..16].copy_from_slice(&epoch.get().to_be_bytes());
                }
            }
            h
        })
        .collect();
    let mut slices = Vec::with_capacity(run.len() * 2);
    for (header, p) in headers.iter().zip(run) {
        slices.push(IoSlice::new(header));
        slices.push(IoSlice::new(p.batch.as_bytes().get(PREFIX..).unwrap_or_default()));
    }
    segment.write_vectored(&mut slices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollbacks(cuts: &[i64]) -> Rollbacks {
        let mut r = Rollbacks::default();
        for &to in cuts {
            r.count += 1;
            r.recent.push_back((r.count, Offset::new(to)));
            if r.recent.len() > ROLLBACK_HISTORY {
                r.recent.pop_front();
            }
        }
        r
    }

    #[test]
    fn an_append_survives_only_cuts_above_its_records() {
        let r = rollbacks(&[]);
        assert!(!r.cut(0, Offset::new(10)), "no roll-back at all");
        let r = rollbacks(&[50]);
        assert!(!r.cut(1, Offset::new(60)), "the cut came before the append was written");
        assert!(!r.cut(0, Offset::new(49)), "records below the cut survive");
        assert!(r.cut(0, Offset::new(50)), "the last record was cut");
        let r = rollbacks(&[80, 20]);
        assert!(r.cut(0, Offset::new(30)), "any later cut at or below the records counts");
        assert!(!r.cut(1, Offset::new(19)));
    }

    #[test]
    fn an_append_older_than_the_history_reports_failure() {
        let cuts: Vec<i64> = (0..ROLLBACK_HISTORY as i64 + 5).map(|i| 1_000 + i).collect();
        let r = rollbacks(&cuts);
        // Its roll-backs are forgotten: it cannot tell, so it does not claim success.
        assert!(r.cut(0, Offset::new(1)));
        assert!(!r.cut(r.count - 1, Offset::new(1)));
    }
}
