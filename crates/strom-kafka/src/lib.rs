//! Strom's Kafka wire-protocol listener: existing Kafka clients (kcat, librdkafka, the Java,
//! Python and Go clients) talk to a Strom broker unchanged.
//!
//! Requests are decoded and responses encoded with the `kafka-protocol` crate's codecs; each
//! request maps onto the same [`strom_broker::Broker`] core and
//! [`strom_coordinator::GroupCoordinator`] the gRPC services use, so both front ends share
//! topics, records, groups and committed offsets. Record data stays `Bytes` from the socket to
//! the log and back: a Produce request's records field is a slice of the request frame, a Fetch
//! answer carries the log's bytes.
//!
//! - [`KafkaListener`]: binds the port and serves connections.
//! - [`KafkaConfig`]: where to listen, what address to advertise, the frame size limit.
//! - [`SUPPORTED_APIS`]: the APIs and version ranges ApiVersions advertises.
//!
//! Each connection's requests are answered in the order they arrived, one at a time (as Kafka
//! does), while the client may pipeline more; a frame above the limit
//! (`socket.request.max.bytes`, 100 MiB by default) or one that does not decode closes the
//! connection with a log line, and never panics the broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strom_broker::{Broker, BrokerConfig};
//! use strom_kafka::{KafkaConfig, KafkaListener};
//! let broker = Broker::open(BrokerConfig::default()).await?;
//! let config = KafkaConfig::new("127.0.0.1:0".parse()?);
//! let listener = KafkaListener::start(broker.clone(), config).await?;
//! println!("Kafka clients connect to {}", listener.local_addr());
//! listener.shutdown().await;
//! broker.shutdown().await?;
//! # Ok(()) }
//! ```

mod codec;
mod error;
pub mod fetch_session;
mod handlers;
mod listener;
mod versions;

use std::net::SocketAddr;

pub use codec::{HeaderPrefix, header_prefix};
pub use error::KafkaError;
pub use listener::KafkaListener;
pub use versions::{SUPPORTED_APIS, is_supported, supported};

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 << 20;

/// Settings of the Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `host:port` Kafka clients are told to dial; defaults to the bound address (loopback for
    /// a wildcard bind).
    pub advertised_address: Option<String>,
    /// Largest request frame accepted; a larger one closes the connection.
    pub max_request_bytes: usize,
    /// Incremental fetch sessions (KIP-227) kept at once, Kafka's
    /// `max.incremental.fetch.session.cache.slots`; 0 disables sessions.
    pub fetch_session_cache_slots: usize,
    /// How long a fetch session keeps its slot against newcomers when unused, and how old it
    /// must be before a larger newcomer may take it (Kafka's
    /// `min.incremental.fetch.session.eviction.ms`, 2 minutes).
    pub fetch_session_eviction_ms: u64,
}

impl KafkaConfig {
    /// Listens on `listen`, advertises the bound address, Kafka's default frame limit.
    pub fn new(listen: SocketAddr) -> Self {
        KafkaConfig {
            listen,
            advertised_address: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            fetch_session_cache_slots: fetch_session::DEFAULT_SESSION_SLOTS,
            fetch_session_eviction_ms: fetch_session::SESSION_EVICTION_MS,
        }
    }

    /// The `(host, port)` clients are told to dial, given the address actually bound.
    pub fn advertised(&self, bound: SocketAddr) -> Result<(String, i32), KafkaError> {
        if let Some(addr) = &self.advertised_address {
            let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
                KafkaError::Config(format!("advertised address {addr:?} is not host:port"))
            })?;
            let port: u16 = port.parse().map_err(|_| {
                KafkaError::Config(format!("advertised address {addr:?} has a bad port"))
            })?;
            if host.is_empty() {
                return Err(KafkaError::Config(format!("advertised address {addr:?} has no host")));
            }
            return Ok((
                host.trim_start_matches('[').trim_end_matches(']').to_string(),
                i32::from(port),
            ));
        }
        // A wildcard bind is not dialable; loopback is the one address sure to reach us.
        let ip = if bound.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        };
        Ok((ip.to_string(), i32::from(bound.port())))
    }
}
