//! The listener's error type: why it could not start or why one connection was closed.

use std::io;

/// Why the Kafka listener could not start, or why it closed a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// Binding or reading the listening socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What the listener was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A setting (listen or advertised address) is malformed.
    #[error("invalid Kafka listener configuration: {0}")]
    Config(String),
    /// A client sent something that is not a valid Kafka request: the connection is closed,
    /// as Kafka closes it.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A frame is larger than `socket.request.max.bytes`.
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Size the client announced.
        size: i64,
        /// The limit.
        limit: usize,
    },
    /// An API or version this listener does not serve (other than ApiVersions, which answers).
    #[error("unsupported API key {api_key} version {version}")]
    Unsupported {
        /// The request's API key.
        api_key: i16,
        /// The request's version.
        version: i16,
    },
    /// Encoding a response failed (a value does not fit the requested version).
    #[error("encoding a response: {0}")]
    Encode(String),
}
