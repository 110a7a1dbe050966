//! Consumer configuration: how much to fetch, how long to long-poll, where to start.

use std::time::Duration;

use strom_client::ClientConfig;

use crate::ConsumerError;

/// Where a partition without a position (or with one the broker no longer has) starts reading.
///
/// ```
/// use strom_consumer::OffsetReset;
/// assert_eq!(OffsetReset::default(), OffsetReset::Latest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The first offset still in the log.
    Earliest,
    /// The high watermark: only records produced from now on.
    #[default]
    Latest,
    /// No automatic reset: [`Consumer::poll`](crate::Consumer::poll) fails with
    /// [`ConsumerError::NoOffset`] or [`ConsumerError::OffsetOutOfRange`] instead.
    None,
}

/// Settings of a [`Consumer`](crate::Consumer), with Kafka's defaults.
///
/// ```
/// use std::time::Duration;
/// use strom_consumer::{ConsumerConfig, OffsetReset};
///
/// let config = ConsumerConfig {
///     auto_offset_reset: OffsetReset::Earliest,
///     fetch_max_wait: Duration::from_millis(100),
///     ..ConsumerConfig::new("127.0.0.1:9095")
/// };
/// assert_eq!(config.max_poll_records, 500);
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bootstrap address, timeouts and limits of the underlying client.
    pub client: ClientConfig,
    /// The broker answers a fetch once this many bytes are available (or `fetch_max_wait`
    /// passed). Default 1.
    pub fetch_min_bytes: u32,
    /// Longest time the broker holds a fetch waiting for `fetch_min_bytes`. Default 500 ms.
    pub fetch_max_wait: Duration,
    /// Limit of one fetch response, and of the records buffered ahead of the application.
    /// At least one batch is returned even if larger. Default 50 MiB.
    pub fetch_max_bytes: u32,
    /// Limit per partition within one fetch response. Default 1 MiB.
    pub max_partition_fetch_bytes: u32,
    /// Where partitions without a valid position start.
    pub auto_offset_reset: OffsetReset,
    /// Most records one [`Consumer::poll`](crate::Consumer::poll) returns. Default 500.
    pub max_poll_records: usize,
    /// First wait after a retriable failure; doubles per consecutive failure up to a second.
    /// Default 100 ms.
    pub retry_backoff: Duration,
}

impl ConsumerConfig {
    /// Defaults, bootstrapping from `bootstrap` (`host:port[,host:port...]`).
    ///
    /// ```
    /// use strom_consumer::ConsumerConfig;
    /// let config = ConsumerConfig::new("10.0.0.1:9095,10.0.0.2:9095");
    /// assert_eq!(config.client.bootstrap, "10.0.0.1:9095,10.0.0.2:9095");
    /// ```
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ConsumerConfig { client: ClientConfig::new(bootstrap), ..ConsumerConfig::default() }
    }

    /// Rejects settings that cannot work, before anything touches the network.
    pub(crate) fn validate(&self) -> Result<(), ConsumerError> {
        let invalid = |what: &str| Err(ConsumerError::InvalidConfig(what.to_string()));
        if self.fetch_max_bytes == 0 {
            return invalid("fetch_max_bytes must be positive");
        }
        if self.max_partition_fetch_bytes == 0 {
            return invalid("max_partition_fetch_bytes must be positive");
        }
        if self.max_poll_records == 0 {
            return invalid("max_poll_records must be positive");
        }
        if self.fetch_max_wait > MAX_FETCH_WAIT {
            return invalid("fetch_max_wait must be at most 5 minutes");
        }
        if self.retry_backoff > MAX_RETRY_BACKOFF {
            return invalid("retry_backoff must be at most 1 minute");
        }
        Ok(())
    }
}

/// Longer long-polls only hide a dead broker behind a silent consumer.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(300);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            client: ClientConfig::default(),
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            max_poll_records: 500,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_limits_do_not() {
        assert!(ConsumerConfig::default().validate().is_ok());
        let bad = ConsumerConfig { max_poll_records: 0, ..ConsumerConfig::default() };
        assert!(matches!(bad.validate(), Err(ConsumerError::InvalidConfig(_))));
        let bad = ConsumerConfig { fetch_max_bytes: 0, ..ConsumerConfig::default() };
        assert!(matches!(bad.validate(), Err(ConsumerError::InvalidConfig(_))));
        let bad = ConsumerConfig { max_partition_fetch_bytes: 0, ..ConsumerConfig::default() };
        assert!(matches!(bad.validate(), Err(ConsumerError::InvalidConfig(_))));
    }
}
