//! Consumer configuration: how much to fetch, how long to long-poll, where to start, and how
//! the consumer takes part in a consumer group; built with [`ConsumerConfig::builder`], which
//! validates what it builds.

use std::fmt;
use std::str::FromStr;
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

/// A partition assignment strategy the consumer offers its group, by Kafka's protocol names.
///
/// The group picks one strategy every member supports; the elected leader runs it. With
/// [`AssignmentStrategy::CooperativeSticky`] alone the consumer rebalances cooperatively
/// (KIP-429: it keeps consuming the partitions it keeps); if any other strategy is configured
/// it rebalances eagerly (every member gives up everything before rejoining), as Kafka's
/// consumer does.
///
/// ```
/// use strom_consumer::AssignmentStrategy;
/// let s: AssignmentStrategy = "cooperative-sticky".parse().unwrap();
/// assert_eq!(s, AssignmentStrategy::CooperativeSticky);
/// assert_eq!(AssignmentStrategy::Range.name(), "range");
/// assert!("sticky".parse::<AssignmentStrategy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssignmentStrategy {
    /// `"range"`: contiguous ranges of each topic's partitions per member.
    Range,
    /// `"roundrobin"`: all partitions dealt out one by one.
    RoundRobin,
    /// `"cooperative-sticky"`: balanced, keeps owned partitions, incremental rebalances.
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// The protocol name the consumer advertises in JoinGroup.
    ///
    /// ```
    /// use strom_consumer::AssignmentStrategy;
    /// assert_eq!(AssignmentStrategy::RoundRobin.name(), "roundrobin");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }
}

impl fmt::Display for AssignmentStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AssignmentStrategy {
    type Err = ConsumerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "range" => Ok(AssignmentStrategy::Range),
            "roundrobin" => Ok(AssignmentStrategy::RoundRobin),
            "cooperative-sticky" => Ok(AssignmentStrategy::CooperativeSticky),
            other => Err(ConsumerError::InvalidConfig(format!(
                "unknown assignment strategy {other:?} (range, roundrobin, cooperative-sticky)"
            ))),
        }
    }
}

/// Settings of a [`Consumer`](crate::Consumer), with Kafka's defaults.
///
/// Built with [`ConsumerConfig::builder`] (validated) or [`ConsumerConfig::new`] (defaults);
/// fields stay readable. `#[non_exhaustive]`: new settings can come without breaking callers.
///
/// ```
/// use std::time::Duration;
/// use strom_consumer::{ConsumerConfig, OffsetReset};
///
/// let config = ConsumerConfig::builder("127.0.0.1:9095")
///     .auto_offset_reset(OffsetReset::Earliest)
///     .fetch_max_wait(Duration::from_millis(100))
///     .build()?;
/// assert_eq!(config.max_poll_records, 500);
///
/// // A member of the consumer group "billing", committing by hand.
/// let config = ConsumerConfig::builder("127.0.0.1:9095")
///     .group_id("billing")
///     .enable_auto_commit(false)
///     .build()?;
/// assert_eq!(config.session_timeout, Duration::from_secs(10));
/// # Ok::<(), strom_consumer::ConsumerError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// How long a partition may keep answering KAFKA_STORAGE_ERROR (corrupt data, a failed
    /// disk) before `poll` gives up on it with [`ConsumerError::Storage`] naming the partition
    /// and offset, instead of retrying silently forever. Polling again retries for another
    /// period. Default 10 s.
    pub storage_error_timeout: Duration,
    /// The consumer group this consumer belongs to. Required by
    /// [`Consumer::subscribe`](crate::Consumer::subscribe) and the commit calls; with a
    /// manual assignment it also makes new partitions start at the group's committed offsets.
    /// Default none.
    pub group_id: Option<String>,
    /// KIP-345 static membership (`group.instance.id`): a stable name for this consumer
    /// within its group, unique per running instance (a pod name, a host name). A static
    /// member does not leave the group when it closes; if it restarts and rejoins within
    /// `session_timeout` it gets its partitions back without a rebalance of the group. Only
    /// session expiry moves its partitions. A second consumer started with the same id fences
    /// the first ([`ConsumerError::Group`](crate::ConsumerError::Group) with
    /// FENCED_INSTANCE_ID). Default none (dynamic membership).
    pub group_instance_id: Option<String>,
    /// How long the group coordinator waits for a heartbeat before it drops this member and
    /// hands its partitions to others. Default 10 s (Kafka's is 45 s): a crashed consumer's
    /// partitions move on sooner, and heartbeats run in the background so a slow poll loop
    /// does not need the slack. The coordinator bounds it (6 s to 30 min by default).
    pub session_timeout: Duration,
    /// Time between heartbeats; well under `session_timeout` (Kafka's rule: at most a third).
    /// Default 3 s.
    pub heartbeat_interval: Duration,
    /// Longest time between two calls of [`Consumer::poll`](crate::Consumer::poll) before the
    /// consumer leaves the group on its own (its partitions are then lost and it rejoins on
    /// the next poll). Also the rebalance timeout: how long the coordinator waits for every
    /// member to rejoin during a rebalance. Default 60 s (Kafka's `max.poll.interval.ms` is
    /// 5 min, which keeps a whole group waiting that long for one stuck member).
    pub max_poll_interval: Duration,
    /// Commit the positions of the assigned partitions every `auto_commit_interval` from
    /// within `poll`, before partitions are revoked, and on `close`. Default true.
    pub enable_auto_commit: bool,
    /// Time between automatic commits. Default 5 s.
    pub auto_commit_interval: Duration,
    /// The assignment strategies offered to the group, most preferred first. Default
    /// `[Range, CooperativeSticky]`, as Kafka 3.x: eager rebalancing with the range assignor,
    /// and a path to cooperative rebalancing by dropping `Range` from every member.
    pub assignment_strategies: Vec<AssignmentStrategy>,
    /// How often the group leader re-reads the partition counts of the subscribed topics and
    /// starts a rebalance when one changed (a topic created or grown). Default 30 s.
    pub metadata_max_age: Duration,
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

    /// A builder starting from the defaults, bootstrapping from `bootstrap`
    /// (`host:port[,host:port...]`); [`ConsumerConfigBuilder::build`] validates.
    ///
    /// ```
    /// let config = strom_consumer::ConsumerConfig::builder("127.0.0.1:9095")
    ///     .group_id("billing")
    ///     .build()?;
    /// assert_eq!(config.group_id.as_deref(), Some("billing"));
    /// # Ok::<(), strom_consumer::ConsumerError>(())
    /// ```
    pub fn builder(bootstrap: impl Into<String>) -> ConsumerConfigBuilder {
        ConsumerConfigBuilder { config: ConsumerConfig::new(bootstrap) }
    }

    /// Rejects settings that cannot work, before anything touches the network.
    ///
    /// ```
    /// let mut config = strom_consumer::ConsumerConfig::new("127.0.0.1:9095");
    /// config.max_poll_records = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConsumerError> {
        let invalid = |what: &str| Err(ConsumerError::InvalidConfig(what.to_string()));
        if let Err(e) = self.client.validate() {
            return invalid(&e.to_string());
        }
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
        if self.storage_error_timeout.is_zero() {
            return invalid("storage_error_timeout must be positive");
        }
        if let Some(group) = &self.group_id
            && (group.is_empty() || group.len() > MAX_GROUP_ID_LEN)
        {
            return invalid("group_id must be 1 to 1024 bytes long");
        }
        if let Some(instance) = &self.group_instance_id
            && (instance.is_empty() || instance.len() > MAX_GROUP_ID_LEN)
        {
            return invalid("group_instance_id must be 1 to 1024 bytes long");
        }
        for (name, value) in [
            ("session_timeout", self.session_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("max_poll_interval", self.max_poll_interval),
            ("auto_commit_interval", self.auto_commit_interval),
            ("metadata_max_age", self.metadata_max_age),
        ] {
            if value.is_zero() || value > MAX_GROUP_TIMEOUT {
                return invalid(&format!("{name} must be positive and at most 1 hour"));
            }
        }
        if self.heartbeat_interval >= self.session_timeout {
            return invalid("heartbeat_interval must be shorter than session_timeout");
        }
        if self.assignment_strategies.is_empty() {
            return invalid("assignment_strategies must name at least one strategy");
        }
        Ok(())
    }
}

/// Longer long-polls only hide a dead broker behind a silent consumer.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(300);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// Group timeouts beyond an hour are mistakes (and would overflow the protocol's u32 ms).
const MAX_GROUP_TIMEOUT: Duration = Duration::from_secs(3600);
/// The coordinator's default limit on group id length.
const MAX_GROUP_ID_LEN: usize = 1024;

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
            storage_error_timeout: Duration::from_secs(10),
            group_id: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(60),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            assignment_strategies: vec![
                AssignmentStrategy::Range,
                AssignmentStrategy::CooperativeSticky,
            ],
            metadata_max_age: Duration::from_secs(30),
        }
    }
}

/// Builds a [`ConsumerConfig`] from the defaults; [`build`](ConsumerConfigBuilder::build)
/// validates it.
///
/// ```
/// use std::time::Duration;
/// use strom_consumer::{AssignmentStrategy, ConsumerConfig};
/// let config = ConsumerConfig::builder("127.0.0.1:9095")
///     .group_id("billing")
///     .assignment_strategies(vec![AssignmentStrategy::CooperativeSticky])
///     .session_timeout(Duration::from_secs(30))
///     .build()?;
/// assert!(ConsumerConfig::builder("127.0.0.1:9095").max_poll_records(0_usize).build().is_err());
/// # Ok::<(), strom_consumer::ConsumerError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConsumerConfigBuilder {
    config: ConsumerConfig,
}

/// One setter per field: `$field(value)` sets [`ConsumerConfig::$field`], with a doctest each.
macro_rules! consumer_setters {
    ($( $field:ident: $ty:ty = $example:expr; )*) => {
        $(
            #[doc = concat!("Sets [`ConsumerConfig::", stringify!($field), "`].")]
            ///
            /// ```
            #[doc = concat!(
                "let config = strom_consumer::ConsumerConfig::builder(\"127.0.0.1:9095\")\n",
                "    .", stringify!($field), "(", stringify!($example), ")\n",
                "    .build()?;\n",
                "# Ok::<(), strom_consumer::ConsumerError>(())"
            )]
            /// ```
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = value;
                self
            }
        )*
    };
}

impl ConsumerConfigBuilder {
    consumer_setters! {
        fetch_min_bytes: u32 = 1024_u32;
        fetch_max_wait: Duration = std::time::Duration::from_millis(100);
        fetch_max_bytes: u32 = 8_u32 * 1024 * 1024;
        max_partition_fetch_bytes: u32 = 256_u32 * 1024;
        auto_offset_reset: OffsetReset = strom_consumer::OffsetReset::Earliest;
        max_poll_records: usize = 100_usize;
        retry_backoff: Duration = std::time::Duration::from_millis(50);
        storage_error_timeout: Duration = std::time::Duration::from_secs(30);
        session_timeout: Duration = std::time::Duration::from_secs(30);
        heartbeat_interval: Duration = std::time::Duration::from_secs(1);
        max_poll_interval: Duration = std::time::Duration::from_secs(120);
        enable_auto_commit: bool = false;
        auto_commit_interval: Duration = std::time::Duration::from_secs(1);
        assignment_strategies: Vec<AssignmentStrategy> =
            vec![strom_consumer::AssignmentStrategy::RoundRobin];
        metadata_max_age: Duration = std::time::Duration::from_secs(10);
    }

    /// Joins the consumer group `group_id` ([`ConsumerConfig::group_id`]).
    ///
    /// ```
    /// let config = strom_consumer::ConsumerConfig::builder("127.0.0.1:9095")
    ///     .group_id("billing")
    ///     .build()?;
    /// # Ok::<(), strom_consumer::ConsumerError>(())
    /// ```
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.config.group_id = Some(group_id.into());
        self
    }

    /// Sets or clears the consumer group ([`ConsumerConfig::group_id`]).
    ///
    /// ```
    /// let group: Option<String> = None;
    /// let config = strom_consumer::ConsumerConfig::builder("127.0.0.1:9095")
    ///     .group(group)
    ///     .build()?;
    /// assert!(config.group_id.is_none());
    /// # Ok::<(), strom_consumer::ConsumerError>(())
    /// ```
    pub fn group(mut self, group_id: Option<String>) -> Self {
        self.config.group_id = group_id;
        self
    }

    /// Sets or clears the KIP-345 static member name
    /// ([`ConsumerConfig::group_instance_id`]).
    ///
    /// ```
    /// let config = strom_consumer::ConsumerConfig::builder("127.0.0.1:9095")
    ///     .group_id("billing")
    ///     .group_instance_id(Some("pod-0".to_string()))
    ///     .build()?;
    /// # Ok::<(), strom_consumer::ConsumerError>(())
    /// ```
    pub fn group_instance_id(mut self, instance: Option<String>) -> Self {
        self.config.group_instance_id = instance;
        self
    }

    /// Replaces the connection settings ([`ConsumerConfig::client`]), bootstrap list included.
    ///
    /// ```
    /// use strom_consumer::{ClientConfig, ConsumerConfig};
    /// let client = ClientConfig::builder("10.0.0.1:9095").client_id("billing").build()?;
    /// let config = ConsumerConfig::builder("127.0.0.1:9095").client(client).build()?;
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
    /// let config = strom_consumer::ConsumerConfig::builder("127.0.0.1:9095")
    ///     .client_id("billing-reader")
    ///     .build()?;
    /// # Ok::<(), strom_consumer::ConsumerError>(())
    /// ```
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.config.client.client_id = client_id.into();
        self
    }

    /// Validates and returns the configuration.
    ///
    /// ```
    /// let err = strom_consumer::ConsumerConfig::builder("127.0.0.1:9095")
    ///     .group_id("")
    ///     .build();
    /// assert!(err.is_err());
    /// ```
    pub fn build(self) -> Result<ConsumerConfig, ConsumerError> {
        self.config.validate()?;
        Ok(self.config)
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

    #[test]
    fn group_settings_are_checked() {
        let ok = ConsumerConfig { group_id: Some("g".into()), ..ConsumerConfig::default() };
        assert!(ok.validate().is_ok());
        let bad = [
            ConsumerConfig { group_id: Some(String::new()), ..ConsumerConfig::default() },
            ConsumerConfig { session_timeout: Duration::ZERO, ..ConsumerConfig::default() },
            ConsumerConfig {
                heartbeat_interval: Duration::from_secs(10),
                ..ConsumerConfig::default()
            },
            ConsumerConfig { assignment_strategies: vec![], ..ConsumerConfig::default() },
            ConsumerConfig {
                max_poll_interval: Duration::from_secs(7200),
                ..ConsumerConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(ConsumerError::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn strategies_parse_by_kafka_name() {
        for s in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            assert_eq!(s.name().parse::<AssignmentStrategy>().unwrap(), s);
            assert!(strom_coordinator::assignor::by_name(s.name()).is_some());
        }
    }
}
