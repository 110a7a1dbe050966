//! [`ClientConfig`]: how to reach a cluster and how long to wait for it, built with
//! [`ClientConfig::builder`], which validates what it builds.

use std::time::Duration;

use crate::ClientError;

/// Default bootstrap address: a single local broker's gRPC listener.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9095";

/// How to reach a cluster and how long to wait for it.
///
/// Built with [`ClientConfig::builder`] (validated) or [`ClientConfig::new`] (defaults);
/// fields stay readable. `#[non_exhaustive]`: new settings can come without breaking callers.
///
/// ```
/// use std::time::Duration;
/// use strom_client::ClientConfig;
///
/// let config = ClientConfig::builder("10.0.0.1:9095,10.0.0.2:9095")
///     .request_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.client_id, "strom");
/// # Ok::<(), strom_client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Comma-separated `host:port` list; each is tried in turn until one answers.
    pub bootstrap: String,
    /// Name reported to brokers (group membership, logs).
    pub client_id: String,
    /// Deadline of each RPC; long-poll RPCs add their own wait on top.
    pub request_timeout: Duration,
    /// Deadline of establishing one TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Largest gRPC message encoded or decoded, in bytes.
    pub max_message_bytes: usize,
    /// Cached topic metadata older than this is fetched again on next use, so new partitions
    /// and moved leaders are seen without an error first (Kafka's `metadata.max.age.ms`).
    pub metadata_max_age: Duration,
}

impl ClientConfig {
    /// A configuration with defaults for everything but the bootstrap list.
    ///
    /// ```
    /// let config = strom_client::ClientConfig::new("127.0.0.1:9095");
    /// assert_eq!(config.bootstrap, "127.0.0.1:9095");
    /// ```
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientConfig { bootstrap: bootstrap.into(), ..ClientConfig::default() }
    }

    /// A builder starting from the defaults, bootstrapping from `bootstrap`
    /// (`host:port[,host:port...]`).
    ///
    /// ```
    /// let config = strom_client::ClientConfig::builder("127.0.0.1:9095")
    ///     .client_id("billing")
    ///     .build()?;
    /// assert_eq!(config.client_id, "billing");
    /// # Ok::<(), strom_client::ClientError>(())
    /// ```
    pub fn builder(bootstrap: impl Into<String>) -> ClientConfigBuilder {
        ClientConfigBuilder { config: ClientConfig::new(bootstrap) }
    }

    /// Checks the settings for values that cannot work (an empty bootstrap list, zero
    /// timeouts or message size).
    ///
    /// ```
    /// let config = strom_client::ClientConfig::new(" , ");
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::InvalidArgument(m.to_owned()));
        if self.bootstrap.split(',').all(|a| a.trim().is_empty()) {
            return bad("the bootstrap list names no address");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("request_timeout and connect_timeout must be positive");
        }
        if self.max_message_bytes == 0 {
            return bad("max_message_bytes must be positive");
        }
        if self.metadata_max_age.is_zero() {
            return bad("metadata_max_age must be positive");
        }
        Ok(())
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: DEFAULT_BOOTSTRAP.to_owned(),
            client_id: "strom".to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_message_bytes: 100 * 1024 * 1024,
            metadata_max_age: Duration::from_secs(5 * 60),
        }
    }
}

/// Builds a [`ClientConfig`]; [`build`](ClientConfigBuilder::build) validates it.
///
/// ```
/// use std::time::Duration;
/// let config = strom_client::ClientConfig::builder("127.0.0.1:9095")
///     .connect_timeout(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(config.connect_timeout, Duration::from_secs(2));
/// # Ok::<(), strom_client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

/// One setter per field: `$field($ty)` sets [`ClientConfig::$field`], with a doctest each.
macro_rules! client_setters {
    ($( $field:ident: $ty:ty = $example:expr; )*) => {
        $(
            #[doc = concat!("Sets [`ClientConfig::", stringify!($field), "`].")]
            ///
            /// ```
            #[doc = concat!(
                "let config = strom_client::ClientConfig::builder(\"127.0.0.1:9095\")\n",
                "    .", stringify!($field), "(", stringify!($example), ")\n",
                "    .build()?;\n",
                "# Ok::<(), strom_client::ClientError>(())"
            )]
            /// ```
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

impl ClientConfigBuilder {
    client_setters! {
        request_timeout: Duration = std::time::Duration::from_secs(5);
        connect_timeout: Duration = std::time::Duration::from_secs(2);
        max_message_bytes: usize = 16_usize * 1024 * 1024;
        metadata_max_age: Duration = std::time::Duration::from_secs(60);
    }

    /// Sets [`ClientConfig::client_id`].
    ///
    /// ```
    /// let config = strom_client::ClientConfig::builder("127.0.0.1:9095")
    ///     .client_id("billing")
    ///     .build()?;
    /// # Ok::<(), strom_client::ClientError>(())
    /// ```
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.config.client_id = client_id.into();
        self
    }

    /// Validates and returns the configuration.
    ///
    /// ```
    /// let err = strom_client::ClientConfig::builder("").build();
    /// assert!(err.is_err());
    /// ```
    pub fn build(self) -> Result<ClientConfig, ClientError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
