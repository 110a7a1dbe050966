//! The error type of the consumer SDK.

use strom_client::{ClientError, ErrorCode};
use strom_format::{FormatError, Offset};

use crate::TopicPartition;

/// Why a consumer operation failed.
///
/// Errors about one partition name it; the consumer's position stays where it was, so the
/// next [`Consumer::poll`](crate::Consumer::poll) meets the same error until the application
/// seeks elsewhere: bad data is never skipped silently.
///
/// ```
/// use strom_consumer::{ConsumerError, TopicPartition};
/// use strom_format::PartitionId;
/// let err = ConsumerError::NotAssigned(TopicPartition::new("orders", PartitionId::new(3)));
/// assert_eq!(err.to_string(), "partition orders-3 is not assigned to this consumer");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A setting of [`ConsumerConfig`](crate::ConsumerConfig) cannot work.
    #[error("invalid consumer configuration: {0}")]
    InvalidConfig(String),
    /// The client failed (connecting, an RPC, metadata) in a way retrying will not fix.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An argument is out of range (a negative offset or timestamp).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation names a partition that is not in the assignment.
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(TopicPartition),
    /// The partition has no position and `auto_offset_reset` is `None`.
    #[error("partition {0} has no position and auto_offset_reset is None")]
    NoOffset(TopicPartition),
    /// The broker no longer (or not yet) has the position, and `auto_offset_reset` is `None`.
    #[error("offset {offset} is out of range for partition {partition}")]
    OffsetOutOfRange {
        /// The partition.
        partition: TopicPartition,
        /// The position the consumer asked for.
        offset: Offset,
    },
    /// A fetched batch failed its CRC or does not decode.
    #[error("corrupt record batch in {partition} at offset {offset}: {source}")]
    Corrupt {
        /// The partition.
        partition: TopicPartition,
        /// The consumer's position when it met the batch.
        offset: Offset,
        /// What is wrong with the bytes.
        #[source]
        source: FormatError,
    },
    /// The next batch is larger than the consumer may fetch.
    #[error("batch of {size} bytes in {partition} at offset {offset} exceeds the fetch limit")]
    RecordTooLarge {
        /// The partition.
        partition: TopicPartition,
        /// The position of the batch.
        offset: Offset,
        /// Its size.
        size: usize,
    },
    /// The partition kept failing with a storage error (KAFKA_STORAGE_ERROR: corrupt data on
    /// the broker, a failed disk) for longer than
    /// [`ConsumerConfig::storage_error_timeout`](crate::ConsumerConfig::storage_error_timeout).
    /// The position stays at `offset`; polling again retries.
    #[error(
        "storage error in {partition} at offset {offset}, unresolved for {elapsed:?}: {message}"
    )]
    Storage {
        /// The partition.
        partition: TopicPartition,
        /// The position the consumer could not read past.
        offset: Offset,
        /// How long the error persisted.
        elapsed: std::time::Duration,
        /// The broker's last message.
        message: String,
    },
    /// The broker answered a fetch of the partition with an error that retrying will not fix.
    #[error("broker error {code} for {partition}: {message}")]
    Broker {
        /// The partition.
        partition: TopicPartition,
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// A broker answered in a way the protocol does not allow.
    #[error("invalid response from broker: {0}")]
    InvalidResponse(String),
    /// The operation needs a consumer group and
    /// [`ConsumerConfig::group_id`](crate::ConsumerConfig::group_id) is not set.
    #[error("no group_id is configured")]
    NoGroupId,
    /// The group coordinator refused to let this consumer take part in its group (an invalid
    /// session timeout, no assignment strategy in common with the other members, a full
    /// group...), or answered a group request with an error retrying will not fix.
    #[error("group coordinator refused ({code}): {message}")]
    Group {
        /// The coordinator's error code.
        code: ErrorCode,
        /// The coordinator's message.
        message: String,
    },
    /// An offset commit was rejected because the group rebalanced or this member is no longer
    /// part of its generation (Kafka's `CommitFailedException`). Nothing was committed; the
    /// partitions may already belong to another member, which resumes from the last commit.
    #[error("offset commit failed ({code}): {message}")]
    CommitFailed {
        /// ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or REBALANCE_IN_PROGRESS, or another
        /// per-partition error of the commit.
        code: ErrorCode,
        /// The coordinator's message.
        message: String,
    },
}

impl ConsumerError {
    /// Whether the failure was a deadline running out (a request deadline, or a broker's
    /// `REQUEST_TIMED_OUT`). Decided by type, never by the message.
    ///
    /// ```
    /// use strom_consumer::{ClientError, ConsumerError};
    /// assert!(ConsumerError::Client(ClientError::Timeout).is_timeout());
    /// assert!(!ConsumerError::NoGroupId.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        match self {
            ConsumerError::Client(e) => e.is_timeout(),
            ConsumerError::Broker { code, .. }
            | ConsumerError::Group { code, .. }
            | ConsumerError::CommitFailed { code, .. } => *code == ErrorCode::RequestTimedOut,
            _ => false,
        }
    }

    /// The broker's or coordinator's error code, if the failure carries one.
    ///
    /// ```
    /// use strom_consumer::{ConsumerError, ErrorCode};
    /// let e = ConsumerError::Group { code: ErrorCode::InvalidSessionTimeout, message: String::new() };
    /// assert_eq!(e.code(), Some(ErrorCode::InvalidSessionTimeout));
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ConsumerError::Client(e) => e.code(),
            ConsumerError::Broker { code, .. }
            | ConsumerError::Group { code, .. }
            | ConsumerError::CommitFailed { code, .. } => Some(*code),
            _ => None,
        }
    }
}
