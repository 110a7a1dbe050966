//! The broker's errors: [`BrokerError`] for starting and stopping, [`ApiError`] for one
//! request's topic or partition, carrying the Kafka error code the client sees.

use std::io;

use strom_format::FormatError;
use strom_log::LogError;
use strom_proto::v1::ErrorCode;

/// Why the broker could not start, run or stop.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A setting is missing, malformed or out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the broker was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A partition log failed to open, flush or close.
    #[error("partition {partition}: {source}")]
    Log {
        /// `topic-partition`.
        partition: String,
        /// What the log reported.
        #[source]
        source: LogError,
    },
    /// The persisted topic metadata is unreadable or inconsistent.
    #[error("metadata store: {0}")]
    Metadata(String),
    /// Another process holds the data directory.
    #[error("data directory {0} is locked by another broker")]
    DataDirLocked(String),
    /// The gRPC server failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A background thread or task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A per-topic or per-partition failure as a client sees it: a Kafka error code and a message.
///
/// ```
/// use strom_broker::ApiError;
/// use strom_proto::v1::ErrorCode;
/// let e = ApiError::unknown_topic_or_partition("orders", 3);
/// assert_eq!(e.code, ErrorCode::UnknownTopicOrPartition);
/// assert!(e.message.contains("orders"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct ApiError {
    /// Kafka's error number, as the proto enum.
    pub code: ErrorCode,
    /// What went wrong, for humans.
    pub message: String,
}

impl ApiError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }

    /// The topic or partition does not exist.
    pub fn unknown_topic_or_partition(topic: &str, partition: i32) -> Self {
        Self::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic or partition {topic}-{partition}"),
        )
    }

    /// The topic does not exist.
    pub fn unknown_topic(topic: &str) -> Self {
        Self::new(ErrorCode::UnknownTopicOrPartition, format!("unknown topic {topic:?}"))
    }

    /// A topic setting is unknown or out of range.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, message)
    }

    /// A storage failure the client can do nothing about but retry.
    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::KafkaStorageError, message)
    }

    /// Maps a log failure on `partition` (`topic-n`) to the code Kafka would send.
    pub fn from_log(partition: &str, error: &LogError) -> Self {
        let code = match error {
            LogError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            LogError::Format(FormatError::TooLarge { .. }) => ErrorCode::MessageTooLarge,
            LogError::Format(_) | LogError::EmptyAppend => ErrorCode::CorruptMessage,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            LogError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
            LogError::MissingKey { .. } => ErrorCode::InvalidRecord,
            LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            LogError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            // The log already holds a newer leader's records: this replica was deposed.
            LogError::EpochRegression { .. } => ErrorCode::NotLeaderOrFollower,
            // Retriable from the client's point of view, as Kafka treats storage errors.
            LogError::Io { .. }
            | LogError::Corrupt { .. }
            | LogError::Poisoned(_)
            | LogError::RolledBack { .. }
            | LogError::ConcurrentModification => ErrorCode::KafkaStorageError,
            _ => ErrorCode::UnknownServerError,
        };
        Self::new(code, format!("{partition}: {error}"))
    }
}
