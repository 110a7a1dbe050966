//! Producer settings, named and defaulted after Kafka's producer configs.

use std::str::FromStr;
use std::time::Duration;

use strom_client::ClientConfig;
use strom_format::{BATCH_HEADER_LEN, Compression};

use crate::ProducerError;

/// How many replicas must have a batch before the broker acknowledges it (Kafka's `acks`).
///
/// ```
/// use strom_producer::Acks;
/// assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
/// assert_eq!(Acks::All.as_i32(), -1);
/// assert_eq!(Acks::default(), Acks::All);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Fire and forget: no offsets come back and nothing is retried on a broker error.
    Zero,
    /// The leader has appended the batch to its log.
    One,
    /// Every in-sync replica has the batch (Kafka's default since 3.0).
    #[default]
    All,
}

impl Acks {
    /// The value of `ProduceRequest.acks`.
    ///
    /// ```
    /// assert_eq!(strom_producer::Acks::One.as_i32(), 1);
    /// ```
    pub const fn as_i32(self) -> i32 {
        match self {
            Acks::Zero => 0,
            Acks::One => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = ProducerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "0" => Ok(Acks::Zero),
            "1" => Ok(Acks::One),
            "all" | "ALL" | "-1" => Ok(Acks::All),
            other => Err(ProducerError::InvalidConfig(format!(
                "acks must be 0, 1 or all, got {other:?}"
            ))),
        }
    }
}

/// Everything a [`Producer`](crate::Producer) can be tuned with.
///
/// ```
/// use std::time::Duration;
/// use strom_producer::{Acks, ProducerConfig};
///
/// let mut config = ProducerConfig::new("127.0.0.1:9095");
/// config.acks = Acks::One;
/// config.linger = Duration::from_millis(20);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Bootstrap addresses and connection settings.
    pub client: ClientConfig,
    /// Acknowledgement level (default [`Acks::All`]).
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent (default 5 ms).
    pub linger: Duration,
    /// A batch closes when the next record would take its uncompressed size past this
    /// (default 16 KiB). A single larger record still gets a batch of its own.
    pub batch_size: usize,
    /// Codec of every batch (default none).
    pub compression: Compression,
    /// Resends of a batch after retriable errors (default `i32::MAX`, bounded in practice by
    /// `delivery_timeout`).
    pub retries: u32,
    /// Wait before the first resend; doubles per attempt up to `retry_backoff_max` (100 ms).
    pub retry_backoff: Duration,
    /// Cap of the exponential backoff (default 1 s).
    pub retry_backoff_max: Duration,
    /// Upper bound from `send` to the record's success or failure, retries included (120 s).
    pub delivery_timeout: Duration,
    /// Deadline of one Produce request, and the broker's wait for replicas (30 s).
    pub request_timeout: Duration,
    /// Bytes of records buffered and not yet acknowledged; `send` waits when it is full
    /// (default 32 MiB).
    pub buffer_memory: usize,
    /// Longest `send` waits for buffer memory or metadata before failing (default 60 s).
    pub max_block: Duration,
    /// Largest Produce request, and so the largest record (default 1 MiB).
    pub max_request_size: usize,
    /// Kafka's `enable.idempotence` (default on): the producer takes a producer id and numbers
    /// its batches, so a retry after a lost answer is never stored twice. Applies with
    /// [`Acks::All`] only (as Kafka, which turns it off by default for acks 0 and 1).
    pub enable_idempotence: bool,
}

impl ProducerConfig {
    /// Defaults for everything but the bootstrap addresses.
    ///
    /// ```
    /// let config = strom_producer::ProducerConfig::new("127.0.0.1:9095");
    /// assert_eq!(config.batch_size, 16 * 1024);
    /// ```
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ProducerConfig { client: ClientConfig::new(bootstrap), ..ProducerConfig::default() }
    }

    /// Checks the settings for values that cannot work.
    ///
    /// ```
    /// let mut config = strom_producer::ProducerConfig::default();
    /// config.batch_size = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ProducerError> {
        let bad = |m: &str| Err(ProducerError::InvalidConfig(m.to_owned()));
        if self.batch_size == 0 {
            return bad("batch_size must be positive");
        }
        if self.max_request_size <= BATCH_HEADER_LEN {
            return bad("max_request_size must exceed the 61-byte batch header");
        }
        if self.buffer_memory == 0 {
            return bad("buffer_memory must be positive");
        }
        if self.request_timeout.is_zero() || self.delivery_timeout.is_zero() {
            return bad("request_timeout and delivery_timeout must be positive");
        }
        if u32::try_from(self.request_timeout.as_millis()).is_err() {
            return bad("request_timeout must fit in u32 milliseconds");
        }
        if !self.compression.is_built() {
            let codec = self.compression.name();
            return bad(&format!(
                "compression {codec} is not built into this strom-producer (its `{codec}` cargo \
                 feature is off)"
            ));
        }
        Ok(())
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            client: ClientConfig::default(),
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            compression: Compression::None,
            retries: i32::MAX as u32,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_request_size: 1024 * 1024,
            enable_idempotence: true,
        }
    }
}
