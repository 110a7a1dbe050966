//! The one error type of strom-log: every failure of a log operation maps to a variant.

use std::io;
use std::path::PathBuf;

use strom_format::{FormatError, LeaderEpoch, Offset};

/// Why a log operation failed.
///
/// ```
/// use strom_log::{Log, LogConfig, LogError};
/// use strom_format::Offset;
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// match log.read(Offset::new(5), 1024) {
///     Err(LogError::OffsetOutOfRange { requested, start, end }) => {
///         assert_eq!((requested.get(), start.get(), end.get()), (5, 0, 0));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An appended batch is malformed (shape, CRC, record count).
    #[error("invalid record batch: {0}")]
    Format(#[from] FormatError),
    /// An appended batch is larger than [`LogConfig::max_batch_bytes`](crate::LogConfig).
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Size of the batch.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A record's `CreateTime` lies further in the past or future than the log allows
    /// ([`LogConfig::timestamp_before_max`](crate::LogConfig) and `timestamp_after_max`).
    #[error(
        "record timestamp {timestamp} is out of the accepted range {min}..={max} around the broker's clock"
    )]
    InvalidTimestamp {
        /// The offending timestamp (ms since the epoch).
        timestamp: i64,
        /// The oldest timestamp accepted at the time of the append.
        min: i64,
        /// The newest timestamp accepted at the time of the append.
        max: i64,
    },
    /// An append carried no batch at all.
    #[error("append of an empty buffer: at least one record batch is required")]
    EmptyAppend,
    /// The requested offset is not in the log.
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The log start offset at the time of the request.
        start: Offset,
        /// The log end offset at the time of the request.
        end: Offset,
    },
    /// A replicated batch does not continue the log densely.
    #[error("non-monotonic offset: expected {expected}, got {got}")]
    NonMonotonicOffset {
        /// The offset the batch had to start at.
        expected: Offset,
        /// The offset it started at.
        got: Offset,
    },
    /// Assigning offsets would overflow a signed 64-bit offset.
    #[error("offset overflow: the log end offset {end} cannot grow by {records} records")]
    OffsetOverflow {
        /// The log end offset.
        end: Offset,
        /// Records in the rejected append.
        records: i64,
    },
    /// Bytes on disk are not what the log wrote: the log refuses to serve them.
    #[error("corrupt log data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment or index file.
        path: PathBuf,
        /// Byte position in that file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another [`Log`](crate::Log) in this process has the directory open.
    #[error("log directory {} is already open", .0.display())]
    AlreadyOpen(PathBuf),
    /// The configuration cannot work (see the message).
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// A read kept racing with truncations of the segment it read and gave up; retry it.
    #[error("read raced with concurrent truncation of the log; retry")]
    ConcurrentModification,
    /// An earlier write or flush failed and the log could not yet be cut back to its last
    /// good end; it refuses writes until that works (each write retries it). Reads still work.
    #[error("log refuses writes after an I/O failure ({0}); retry once the disk is usable")]
    Poisoned(String),
    /// The append was written, but a flush failed before it was acknowledged and the log was
    /// cut back below it: the records are not stored.
    #[error("records from offset {offset} were not stored: {reason}")]
    RolledBack {
        /// First offset of the append.
        offset: Offset,
        /// What failed.
        reason: String,
    },
    /// An append carried a leader epoch below the newest one in the log: a leader that lost
    /// its leadership, or a leader bug. Nothing was written.
    #[error("leader epoch {epoch} is below the log's latest epoch {latest}")]
    EpochRegression {
        /// The epoch of the refused append (or of its first offending batch).
        epoch: LeaderEpoch,
        /// The newest epoch in the log.
        latest: LeaderEpoch,
    },
    /// An idempotent producer's batch does not continue its sequence (a gap, or a retry of a
    /// batch too old to be remembered): Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER. Nothing was
    /// written.
    #[error("producer {producer_id}: sequence {got} out of order, expected {expected}")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The sequence number the next batch must start with (-1: a retried batch came
        /// with new ones in one append).
        expected: i32,
        /// The batch's first sequence number.
        got: i32,
    },
    /// An idempotent producer's batch carries an epoch older than the producer's current one
    /// (a fenced producer): Kafka's INVALID_PRODUCER_EPOCH. Nothing was written.
    #[error("producer {producer_id}: epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer id.
        producer_id: i64,
        /// The producer's current epoch.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// A record without a key was appended to a compacted log
    /// ([`LogConfig::compact`](crate::LogConfig)): the cleaner could never remove it. Kafka
    /// answers INVALID_RECORD. Nothing was written.
    #[error("compacted log: record at offset delta {offset_delta} has no key")]
    MissingKey {
        /// The record's offset delta within its batch.
        offset_delta: i64,
    },
}

impl From<crate::producer_state::SequenceError> for LogError {
    fn from(e: crate::producer_state::SequenceError) -> Self {
        use crate::producer_state::SequenceError;
        match e {
            SequenceError::OutOfOrder { producer_id, expected, got } => {
                LogError::OutOfOrderSequence { producer_id, expected, got }
            }
            SequenceError::InvalidEpoch { producer_id, current, got } => {
                LogError::InvalidProducerEpoch { producer_id, current, got }
            }
        }
    }
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LogError::Io { context: context.into(), source }
    }
}

/// Adds context to `io::Result`s, in the style of `anyhow::Context`, without allocating on the
/// success path.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T, LogError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T, LogError> {
        self.map_err(|e| LogError::io(what(), e))
    }
}
