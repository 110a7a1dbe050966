//! The error type of the producer SDK.

use std::sync::Arc;
use std::time::Duration;

use strom_client::{ClientError, ErrorCode};
use strom_format::{FormatError, PartitionId};

/// Why a record could not be sent or was not acknowledged.
///
/// Cloneable: one failed batch fails every record in it with the same error.
///
/// ```no_run
/// # async fn demo(producer: strom_producer::Producer) {
/// use strom_producer::{ProducerError, ProducerRecord};
/// match producer.send(ProducerRecord::new("orders").value("v")).await {
///     Ok(pending) => match pending.await {
///         Ok(meta) => println!("stored at {:?}", meta.offset),
///         Err(e @ ProducerError::DeliveryTimeout { .. }) => eprintln!("gave up: {e}"),
///         Err(e) => eprintln!("failed: {e}"),
///     },
///     Err(ProducerError::UnknownTopic(t)) => eprintln!("create {t} first"),
///     Err(e) => eprintln!("not sent: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// A setting cannot work.
    #[error("invalid producer configuration: {0}")]
    InvalidConfig(String),
    /// Connecting to the cluster or fetching metadata failed.
    #[error(transparent)]
    Client(Arc<ClientError>),
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The record names a partition the topic does not have.
    #[error("topic {topic:?} has no partition {partition} (it has {num_partitions})")]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: PartitionId,
        /// How many partitions the topic has.
        num_partitions: usize,
    },
    /// The record alone exceeds a size limit.
    #[error("record of about {size} bytes exceeds {setting} ({limit} bytes)")]
    RecordTooLarge {
        /// Estimated encoded size of the record, batch header included.
        size: usize,
        /// The limit.
        limit: usize,
        /// Which setting sets the limit.
        setting: &'static str,
    },
    /// The broker rejected the batch with a non-retriable error, or retries ran out.
    #[error("{topic}-{partition}: broker error {code}: {message}")]
    Broker {
        /// The topic.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The broker's code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The record was not acknowledged within `delivery_timeout`.
    #[error(
        "{topic}-{partition}: not delivered within {timeout:?}; last error: {}",
        last_error_text(.last_error)
    )]
    DeliveryTimeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The configured delivery timeout.
        timeout: Duration,
        /// The error of the last attempt; `None` if the record was never sent. It is also
        /// the error's [`source`](std::error::Error::source) (an `Arc<ProducerError>`), so
        /// an error chain prints it and the transport error behind it.
        #[source]
        last_error: Option<Arc<ProducerError>>,
    },
    /// `send` waited `max_block` for buffer memory or metadata.
    #[error("timed out after {0:?} waiting for buffer memory or metadata")]
    MaxBlockTimeout(Duration),
    /// The batch could not be encoded.
    #[error("record format error: {0}")]
    Format(#[from] FormatError),
    /// The producer was closed (or dropped) before the record was sent.
    #[error("producer closed")]
    Closed,
}

fn last_error_text(last: &Option<Arc<ProducerError>>) -> String {
    last.as_ref().map_or_else(|| "never sent".to_owned(), ToString::to_string)
}

impl From<ClientError> for ProducerError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::UnknownTopic(t) => ProducerError::UnknownTopic(t),
            ClientError::Closed => ProducerError::Closed,
            ClientError::Format(f) => ProducerError::Format(f),
            other => ProducerError::Client(Arc::new(other)),
        }
    }
}

impl ProducerError {
    /// Whether the failure was a deadline running out: the delivery timeout, `max_block`, a
    /// request deadline, or the broker's `REQUEST_TIMED_OUT`. Decided by type, never by the
    /// message.
    ///
    /// ```
    /// use std::time::Duration;
    /// use strom_producer::ProducerError;
    /// assert!(ProducerError::MaxBlockTimeout(Duration::from_secs(1)).is_timeout());
    /// assert!(!ProducerError::Closed.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        match self {
            ProducerError::DeliveryTimeout { .. } | ProducerError::MaxBlockTimeout(_) => true,
            ProducerError::Client(e) => e.is_timeout(),
            ProducerError::Broker { code, .. } => *code == ErrorCode::RequestTimedOut,
            _ => false,
        }
    }

    /// The broker's error code, if the failure carries one.
    ///
    /// ```
    /// use strom_producer::{ErrorCode, ProducerError};
    /// assert_eq!(ProducerError::UnknownTopic("t".into()).code(), Some(ErrorCode::UnknownTopicOrPartition));
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ProducerError::Broker { code, .. } => Some(*code),
            ProducerError::UnknownTopic(_) => Some(ErrorCode::UnknownTopicOrPartition),
            ProducerError::Client(e) => e.code(),
            _ => None,
        }
    }
}
