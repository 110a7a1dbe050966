//! Tunables of a log: segment size and age, retention, index density, batch limit, flushing.

use std::time::Duration;

use strom_format::{BATCH_HEADER_LEN, TimestampType};

use crate::LogError;

/// How a [`Log`](crate::Log) is cut into segments, how long it keeps data and when it fsyncs.
///
/// Mirrors Kafka's topic configs (`segment.bytes`, `segment.ms`, `retention.bytes`,
/// `retention.ms`, `index.interval.bytes`, `message.max.bytes`, `flush.messages`/`flush.ms`).
///
/// ```
/// use std::time::Duration;
/// use strom_log::{FlushPolicy, LogConfig};
///
/// let config = LogConfig {
///     segment_bytes: 64 * 1024 * 1024,
///     retention_ms: Some(Duration::from_secs(24 * 3600)),
///     flush: FlushPolicy::EveryMessages(1000),
///     ..LogConfig::default()
/// };
/// assert_eq!(config.index_interval_bytes, 4096);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when the active one would grow beyond this many bytes. A batch
    /// larger than this still goes into a fresh segment of its own. At most `i32::MAX`.
    pub segment_bytes: u64,
    /// Roll a non-empty active segment whose first append is older than this (by the log's
    /// clock; after a reopen, counted from the segment file's creation time). Checked on
    /// append: an idle log does not roll.
    pub segment_ms: Option<Duration>,
    /// Delete the oldest segments while the log would still hold at least this many bytes
    /// without them (Kafka's `retention.bytes`). `None` keeps everything.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record timestamp is older than this. `None` keeps
    /// everything.
    pub retention_ms: Option<Duration>,
    /// Bytes of batches between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
    /// The largest batch accepted, on both the leader and the follower path. At most
    /// `i32::MAX`.
    pub max_batch_bytes: usize,
    /// When appended data is fsynced.
    pub flush: FlushPolicy,
    /// Who sets record timestamps (Kafka's `message.timestamp.type`): the producer
    /// (`CreateTime`, checked against the two bounds below) or the log, which stamps every
    /// batch with its clock on append (`LogAppendTime`).
    pub timestamp_type: TimestampType,
    /// Refuse a batch with a `CreateTime` further than this in the past
    /// (`message.timestamp.before.max.ms`). `None`: no bound, Kafka's default.
    pub timestamp_before_max: Option<Duration>,
    /// Refuse a batch with a `CreateTime` further than this in the future
    /// (`message.timestamp.after.max.ms`; one hour by default since KIP-937), so that one
    /// record stamped years ahead cannot keep its segment from time retention forever.
    pub timestamp_after_max: Option<Duration>,
    /// Forget an idempotent producer whose latest batch is this old (Kafka's
    /// `producer.id.expiration.ms`, default 1 day): its next batch is accepted at any sequence.
    pub producer_id_expiration_ms: Duration,
    /// Whether the log is compacted (`cleanup.policy` includes `compact`): the cleaner keeps
    /// the latest record per key ([`Log::clean`](crate::Log::clean)), and the leader refuses
    /// records without a key ([`LogError::MissingKey`]), as Kafka does.
    pub compact: bool,
    /// How long the cleaner keeps a tombstone (a record with a null value) after its batch's
    /// newest timestamp (Kafka's `delete.retention.ms`, default 1 day), so consumers that read
    /// slowly still see the delete.
    pub delete_retention_ms: Duration,
    /// The cleaner skips a log whose dirty part (not yet cleaned) is less than this share of
    /// its cleanable part, in thousandths (Kafka's `min.cleanable.dirty.ratio` of 0.5 is 500).
    /// Kept an integer so the config stays `Eq`.
    pub min_cleanable_dirty_ratio_permille: u16,
}

impl Default for LogConfig {
    /// Kafka's defaults: 1 GiB segments rolled at the latest after 7 days, 7 days of retention,
    /// an index entry every 4 KiB, batches up to 1 048 588 bytes, fsync left to the caller,
    /// producer timestamps accepted up to one hour ahead and any time back, and
    /// producer ids forgotten after a day of silence; not compacted (tombstones kept a day
    /// and a dirty ratio of 0.5 once it is).
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::Manual,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max: None,
            timestamp_after_max: Some(Duration::from_secs(3600)),
            producer_id_expiration_ms: Duration::from_secs(24 * 3600),
            compact: false,
            delete_retention_ms: Duration::from_secs(24 * 3600),
            min_cleanable_dirty_ratio_permille: 500,
        }
    }
}

impl LogConfig {
    /// Checks that the values can work together; [`Log::open`](crate::Log::open) calls it.
    ///
    /// ```
    /// use strom_log::LogConfig;
    /// assert!(LogConfig::default().validate().is_ok());
    /// assert!(LogConfig { segment_bytes: 0, ..LogConfig::default() }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), LogError> {
        // File positions in the offset index are 32-bit, as in Kafka.
        let max = i32::MAX as u64;
        if self.segment_bytes == 0 || self.segment_bytes > max {
            return Err(LogError::InvalidConfig(format!(
                "segment_bytes must be in 1..={max}, got {}",
                self.segment_bytes
            )));
        }
        if self.max_batch_bytes < BATCH_HEADER_LEN || self.max_batch_bytes as u64 > max {
            return Err(LogError::InvalidConfig(format!(
                "max_batch_bytes must be in {BATCH_HEADER_LEN}..={max}, got {}",
                self.max_batch_bytes
            )));
        }
        if self.min_cleanable_dirty_ratio_permille > 1000 {
            return Err(LogError::InvalidConfig(format!(
                "min_cleanable_dirty_ratio_permille must be at most 1000, got {}",
                self.min_cleanable_dirty_ratio_permille
            )));
        }
        if let FlushPolicy::EveryMessages(0) = self.flush {
            return Err(LogError::InvalidConfig("FlushPolicy::EveryMessages(0)".into()));
        }
        Ok(())
    }
}

/// When appended records are forced to stable storage.
///
/// Whatever the policy, [`Log::flush`](crate::Log::flush), a segment roll and
/// [`Log::close`](crate::Log::close) fsync everything appended so far.
///
/// ```
/// use std::time::Duration;
/// use strom_log::FlushPolicy;
/// let every_second = FlushPolicy::Interval(Duration::from_secs(1));
/// assert_ne!(every_second, FlushPolicy::Manual);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync before every append returns: an acknowledged append survives power loss.
    EveryAppend,
    /// fsync once at least this many records are unflushed (checked after each append).
    EveryMessages(u64),
    /// fsync when this much time has passed since the last flush, checked after each append
    /// and by [`Log::flush_if_due`](crate::Log::flush_if_due).
    Interval(Duration),
    /// Only [`Log::flush`](crate::Log::flush), segment rolls and close fsync; the page cache
    /// holds the rest (Kafka's default: durability comes from replication).
    Manual,
}
