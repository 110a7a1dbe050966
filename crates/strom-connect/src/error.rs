//! The one error type of the connector library, with variants named for what the caller does
//! about them: retry later, re-read the stored offsets, route a record elsewhere, or give up.

use strom_consumer::ConsumerError;
use strom_producer::ProducerError;

/// Everything that can go wrong while moving records into a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The settings make no sense (unknown format, missing key columns, bad TOML, ...). Fix
    /// the configuration; retrying cannot help.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The destination is unreachable or restarting (connection refused or lost, server
    /// shutting down, serialization failure). Retry with backoff: nothing was committed.
    #[error("sink unavailable: {0}")]
    Unavailable(String),

    /// The offsets stored with the data are not the ones this instance expected: another
    /// instance wrote the partition since (a rebalance this one has not seen yet). Nothing
    /// was written; re-read the stored offsets and seek to them.
    #[error("stored offsets moved under this instance: {0}")]
    Fenced(String),

    /// One record of a batch cannot be stored (invalid JSON, a value that does not fit its
    /// column). `index` is its position in the batch handed to the sink; nothing of the batch
    /// was committed.
    #[error("record {index} of the batch cannot be stored: {reason}")]
    BadRecord {
        /// Position of the record in the batch.
        index: usize,
        /// What is wrong with it, as the dead-letter header and the log say it.
        reason: String,
    },

    /// The sink stopped on a bad record under `errors = fail`; everything before it is stored.
    #[error("stopped at {topic}/{partition}@{offset}: {reason}")]
    Stopped {
        /// Topic of the bad record.
        topic: String,
        /// Partition of the bad record.
        partition: i32,
        /// Offset of the bad record; nothing at or past it was committed.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },

    /// The destination refused something that is not about one record (missing table
    /// privileges, a table without the key columns, ...). Give up.
    #[error("sink error: {0}")]
    Sink(String),

    /// The consumer SDK failed in a way it does not retry itself.
    #[error("consumer: {0}")]
    Consumer(#[from] ConsumerError),

    /// The dead-letter producer failed.
    #[error("dead-letter producer: {0}")]
    Producer(#[from] ProducerError),
}

impl ConnectError {
    /// Whether waiting and trying the same thing again can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ConnectError::Unavailable(_))
    }
}
