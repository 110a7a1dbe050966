//! Producer settings, named and defaulted after Kafka's producer configs, built with
//! [`ProducerConfig::builder`], which validates what it builds.

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
/// Built with [`ProducerConfig::builder`] (validated) or [`ProducerConfig::new`] (defaults);
/// fields stay readable. `#[non_exhaustive]`: new settings can come without breaking callers.
///
/// ```
/// use std::time::Duration;
/// use strom_producer::{Acks, ProducerConfig};
///
/// let config = ProducerConfig::builder("127.0.0.1:9095")
///     .acks(Acks::One)
///     .linger(Duration::from_millis(20))
///     .build()?;
/// assert_eq!(config.acks, Acks::One);
/// # Ok::<(), strom_producer::ProducerError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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

    /// A builder starting from the defaults, bootstrapping from `bootstrap`
    /// (`host:port[,host:port...]`); [`ProducerConfigBuilder::build`] validates.
    ///
    /// ```
    /// use strom_producer::{Compression, ProducerConfig};
    /// let config = ProducerConfig::builder("127.0.0.1:9095")
    ///     .compression(Compression::Lz4)
    ///     .client_id("orders-service")
    ///     .build()?;
    /// assert_eq!(config.client.client_id, "orders-service");
    /// # Ok::<(), strom_producer::ProducerError>(())
    /// ```
    pub fn builder(bootstrap: impl Into<String>) -> ProducerConfigBuilder {
        ProducerConfigBuilder { config: ProducerConfig::new(bootstrap) }
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
        if let Err(e) = self.client.validate() {
            return bad(&e.to_string());
        }
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

/// Builds a [`ProducerConfig`] from the defaults; [`build`](ProducerConfigBuilder::build)
/// validates it (ranges, and that the chosen codec is compiled in).
///
/// ```
/// use std::time::Duration;
/// use strom_producer::{Acks, ProducerConfig};
/// let config = ProducerConfig::builder("127.0.0.1:9095")
///     .acks(Acks::All)
///     .delivery_timeout(Duration::from_secs(30))
///     .build()?;
/// assert!(ProducerConfig::builder("127.0.0.1:9095").batch_size(0_usize).build().is_err());
/// # Ok::<(), strom_producer::ProducerError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ProducerConfigBuilder {
    config: ProducerConfig,
}

/// One setter per field: `$field(value)` sets [`ProducerConfig::$field`], with a doctest each.
macro_rules! producer_setters {
    ($( $field:ident: $ty:ty = $example:expr; )*) => {
        $(
            #[doc = concat!("Sets [`ProducerConfig::", stringify!($field), "`].")]
            ///
            /// ```
            #[doc = concat!(
                "let config = strom_producer::ProducerConfig::builder(\"127.0.0.1:9095\")\n",
                "    .", stringify!($field), "(", stringify!($example), ")\n",
                "    .build()?;\n",
                "# Ok::<(), strom_producer::ProducerError>(())"
            )]
            /// ```
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

impl ProducerConfigBuilder {
    producer_setters! {
        acks: Acks = strom_producer::Acks::One;
        linger: Duration = std::time::Duration::from_millis(20);
        batch_size: usize = 64_usize * 1024;
        compression: Compression = strom_producer::Compression::Gzip;
        retries: u32 = 10_u32;
        retry_backoff: Duration = std::time::Duration::from_millis(50);
        retry_backoff_max: Duration = std::time::Duration::from_secs(2);
        delivery_timeout: Duration = std::time::Duration::from_secs(30);
        request_timeout: Duration = std::time::Duration::from_secs(10);
        buffer_memory: usize = 64_usize * 1024 * 1024;
        max_block: Duration = std::time::Duration::from_secs(5);
        max_request_size: usize = 4_usize * 1024 * 1024;
        enable_idempotence: bool = false;
    }

    /// Replaces the connection settings ([`ProducerConfig::client`]), bootstrap list included.
    ///
    /// ```
    /// use strom_producer::{ClientConfig, ProducerConfig};
    /// let client = ClientConfig::builder("10.0.0.1:9095").client_id("orders").build()?;
    /// let config = ProducerConfig::builder("127.0.0.1:9095").client(client).build()?;
    /// assert_eq!(config.client.bootstrap, "10.0.0.1:9095");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.config.client = client;
        self
    }

    /// Sets the client id reported to brokers ([`ClientConfig::client_id`]).
    ///
    /// ```
    /// let config = strom_producer::ProducerConfig::builder("127.0.0.1:9095")
    ///     .client_id("orders-service")
    ///     .build()?;
    /// # Ok::<(), strom_producer::ProducerError>(())
    /// ```
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.config.client.client_id = client_id.into();
        self
    }

    /// Validates and returns the configuration.
    ///
    /// ```
    /// let err = strom_producer::ProducerConfig::builder("127.0.0.1:9095")
    ///     .buffer_memory(0_usize)
    ///     .build();
    /// assert!(err.is_err());
    /// ```
    pub fn build(self) -> Result<ProducerConfig, ProducerError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
