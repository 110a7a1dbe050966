//! Broker settings (a TOML file, overridable by flags) and per-topic overrides with Kafka's
//! names, both validated before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strom_format::{BATCH_HEADER_LEN, TimestampType};
use strom_log::{FlushPolicy, LogConfig};

use crate::error::{ApiError, BrokerError};

/// Largest segment a topic may ask for: segment positions stay within an `i32`, as in Kafka.
const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Largest batch any topic may accept; gRPC requests are capped separately.
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;
/// Largest gRPC message the broker can be told to accept.
const MAX_REQUEST_BYTES: usize = 1 << 30;
/// A config file larger than this is certainly not a broker config.
const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Settings of one broker process.
///
/// Every field has a default, so an empty TOML file is a valid config. Names follow Kafka's
/// broker settings with `_` for `.` (TOML reads dots as nesting). Durations are milliseconds;
/// `-1` means "unlimited" / "never" where Kafka uses it that way.
///
/// ```
/// use strom_broker::BrokerConfig;
/// let config = BrokerConfig::from_toml_str("node_id = 3\nlog_retention_ms = -1\n").unwrap();
/// assert_eq!(config.node_id, 3);
/// assert_eq!(config.listen.to_string(), "127.0.0.1:9095");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id; also the controller id while one process is both.
    pub node_id: i32,
    /// Address the gRPC listener binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` clients are told to dial; defaults to the bound address.
    pub advertised_address: Option<String>,
    /// Directory holding the metadata file and one directory per partition.
    pub data_dir: PathBuf,
    /// Partitions of a topic created without a count (`-1`) or auto-created.
    pub num_partitions: i32,
    /// Size at which a segment is rolled.
    pub log_segment_bytes: u64,
    /// Age at which a segment is rolled; `-1`: never by age.
    pub log_segment_ms: i64,
    /// Age after which closed segments are deleted; `-1`: keep forever.
    pub log_retention_ms: i64,
    /// Partition size above which the oldest segments are deleted; `-1`: unlimited.
    pub log_retention_bytes: i64,
    /// Bytes between entries of the sparse offset index.
    pub log_index_interval_bytes: u32,
    /// Fsync after this many messages; `-1`: not by count.
    pub log_flush_interval_messages: i64,
    /// Fsync data older than this; `-1`: not by age. Ignored when the message count is set.
    pub log_flush_interval_ms: i64,
    /// How often the background task checks whether a timed flush is due.
    pub log_flush_scheduler_interval_ms: u64,
    /// How often retention runs over every partition.
    pub log_retention_check_interval_ms: u64,
    /// Largest record batch a topic accepts unless it overrides `max.message.bytes`.
    pub message_max_bytes: usize,
    /// Who sets record timestamps unless a topic overrides `message.timestamp.type`:
    /// `CreateTime` (the producer) or `LogAppendTime` (the broker, on append).
    pub log_message_timestamp_type: String,
    /// Refuse batches with a `CreateTime` older than this (`message.timestamp.before.max.ms`);
    /// Kafka's default, `i64::MAX`, accepts any.
    pub log_message_timestamp_before_max_ms: i64,
    /// Refuse batches with a `CreateTime` further ahead than this
    /// (`message.timestamp.after.max.ms`; one hour, KIP-937's default).
    pub log_message_timestamp_after_max_ms: i64,
    /// Largest gRPC request the broker decodes.
    pub max_request_bytes: usize,
    /// Bytes of produced batches that may wait for or be in an append at once, broker-wide
    /// (Kafka's `queued.max.request.bytes`); more produce requests wait their turn.
    pub queued_max_request_bytes: usize,
    /// Cap on a fetch's `max_wait_ms`, so no request parks forever.
    pub fetch_max_wait_ms: u64,
    /// Cap on a fetch response's size (and its default when the request says 0).
    pub fetch_max_bytes: usize,
    /// Create unknown topics (with `num_partitions`) when a Metadata request names them.
    pub auto_create_topics: bool,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_timeout_ms: u64,
    /// Partitions of `__consumer_offsets` when the broker creates it (Kafka's
    /// `offsets.topic.num.partitions`). Fixed once created: a group's partition is a hash of
    /// its id modulo this count, so an existing topic keeps its count whatever this says.
    pub offsets_topic_num_partitions: i32,
    /// Replicas of each `__consumer_offsets` partition (Kafka's
    /// `offsets.topic.replication.factor`), capped at the live brokers when it is created.
    pub offsets_topic_replication_factor: i32,
    /// Replicas of a topic created without a replication factor (`default.replication.factor`).
    pub default_replication_factor: i32,
    /// Smallest session timeout a group member may ask for (`group.min.session.timeout.ms`).
    pub group_min_session_timeout_ms: u64,
    /// Largest session timeout a group member may ask for (`group.max.session.timeout.ms`).
    pub group_max_session_timeout_ms: u64,
    /// How long the first rebalance of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`; Kafka's 3 s suits fleets of consumers starting
    /// together; 0 answers a lone joiner at once).
    pub group_initial_rebalance_delay_ms: u64,
    /// Most members one group may have (`group.max.size`).
    pub group_max_size: usize,
    /// Longest metadata string of a committed offset (`offset.metadata.max.bytes`).
    pub offset_metadata_max_bytes: usize,
    /// How long the committed offsets of a group without members are kept
    /// (`offsets.retention.minutes`, 7 days), counted from the later of the commit and the
    /// moment the group became empty; expiry writes tombstones to `__consumer_offsets`.
    pub offsets_retention_minutes: u64,
    /// How often expired offsets are looked for (`offsets.retention.check.interval.ms`).
    pub offsets_retention_check_interval_ms: u64,
    /// The metadata quorum: node id -> `host:port` of each voter. Empty: this node alone.
    #[serde(default, deserialize_with = "deserialize_voters", serialize_with = "serialize_voters")]
    pub voters: BTreeMap<i32, String>,
    /// A broker not heard from for this long is fenced (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the controller (`broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// acks=all needs this many in-sync replicas unless the topic overrides it
    /// (`min.insync.replicas`).
    pub min_insync_replicas: i32,
    /// A follower that has not caught up with its leader for this long leaves the ISR
    /// (`replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// How long a leader holds a follower's fetch when it has nothing new
    /// (`replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max_ms: u64,
    /// Soft limit on the records of one follower fetch (`replica.fetch.response.max.bytes`).
    pub replica_fetch_max_bytes: usize,
    /// Close a client connection that sends nothing for this long (Kafka's
    /// `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Client connections open at once; more are closed on accept (Kafka's
    /// `max.connections`).
    pub max_connections: usize,
    /// Address the Kafka protocol listener binds, or `none` to disable it; port 0 picks a free
    /// port. See [`BrokerConfig::kafka_listen_addr`].
    pub kafka_listen: String,
    /// `host:port` Kafka clients are told to dial; defaults to the Kafka listener's address.
    pub kafka_advertised_address: Option<String>,
    /// Incremental fetch sessions (KIP-227) the Kafka listener keeps at once (Kafka's
    /// `max.incremental.fetch.session.cache.slots`); 0 disables them.
    pub max_incremental_fetch_session_cache_slots: usize,
    /// Address the HTTP listener (metrics, health, console) binds, or `none` to disable it;
    /// port 0 picks a free port. See [`BrokerConfig::http_listen_addr`].
    pub http_listen: String,
    /// Forget an idempotent producer's sequence state this long after its last batch on a
    /// partition (Kafka's `producer.id.expiration.ms`, 1 day).
    pub producer_id_expiration_ms: u64,
    /// Run the log cleaner for compacted topics (Kafka's `log.cleaner.enable`).
    pub log_cleaner_enable: bool,
    /// Pause between two cleaner passes over the compacted partitions
    /// (`log.cleaner.backoff.ms`, 15 s).
    pub log_cleaner_backoff_ms: u64,
    /// Memory for the cleaner's key → offset map (`log.cleaner.dedupe.buffer.size`, 128 MiB).
    pub log_cleaner_dedupe_buffer_size: u64,
    /// Read plus write bandwidth of the cleaner (`log.cleaner.io.max.bytes.per.second`);
    /// 0 means unthrottled (Kafka's default, `Double.MaxValue`).
    pub log_cleaner_io_max_bytes_per_second: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            advertised_address: None,
            data_dir: PathBuf::from("./strom-data"),
            num_partitions: 1,
            log_segment_bytes: 1 << 30,
            log_segment_ms: 7 * 24 * 3600 * 1000,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_index_interval_bytes: 4096,
            // Kafka's default: leave fsync to the OS; a process crash loses nothing, a machine
            // crash may lose what the page cache held.
            log_flush_interval_messages: -1,
            log_flush_interval_ms: -1,
            log_flush_scheduler_interval_ms: 1000,
            log_retention_check_interval_ms: 5 * 60 * 1000,
            message_max_bytes: 1_048_588,
            log_message_timestamp_type: "CreateTime".to_string(),
            log_message_timestamp_before_max_ms: i64::MAX,
            log_message_timestamp_after_max_ms: 3_600_000,
            max_request_bytes: 100 << 20,
            queued_max_request_bytes: 512 << 20,
            fetch_max_wait_ms: 30_000,
            fetch_max_bytes: 50 << 20,
            auto_create_topics: false,
            shutdown_timeout_ms: 10_000,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 30 * 60 * 1000,
            group_initial_rebalance_delay_ms: 0,
            group_max_size: 1000,
            offset_metadata_max_bytes: 4096,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 10 * 60 * 1000,
            default_replication_factor: 1,
            voters: BTreeMap::new(),
            broker_session_timeout_ms: 1_500,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 10_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 10 << 20,
            broker_heartbeat_interval_ms: 250,
            connections_max_idle_ms: 10 * 60 * 1000,
            max_connections: 10_000,
            kafka_listen: crate::kafka_support::DEFAULT_KAFKA_LISTEN.to_string(),
            kafka_advertised_address: None,
            max_incremental_fetch_session_cache_slots: 1000,
            http_listen: crate::http_support::DEFAULT_HTTP_LISTEN.to_string(),
            producer_id_expiration_ms: 24 * 3600 * 1000,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 128 << 20,
            log_cleaner_io_max_bytes_per_second: 0,
        }
    }
}

impl BrokerConfig {
    /// Parses and validates a TOML config.
    pub fn from_toml_str(text: &str) -> Result<Self, BrokerError> {
        let config: BrokerConfig =
            toml::from_str(text).map_err(|e| BrokerError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BrokerError> {
        let path = path.as_ref();
        let io =
            |source| BrokerError::Io { context: format!("reading {}", path.display()), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_CONFIG_FILE_BYTES {
            return Err(BrokerError::Config(format!(
                "{} is {size} bytes; a config file is at most {MAX_CONFIG_FILE_BYTES}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_toml_str(&text)
            .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))
    }

    /// Checks every setting; the broker refuses to start on the first bad one.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |msg: String| Err(BrokerError::Config(msg));
        if self.node_id < 0 {
            return bad(format!("node_id must be >= 0, got {}", self.node_id));
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty".into());
        }
        if !(1..=MAX_PARTITIONS).contains(&self.num_partitions) {
            return bad(format!(
                "num_partitions must be in 1..={MAX_PARTITIONS}, got {}",
                self.num_partitions
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.offsets_topic_num_partitions) {
            return bad(format!(
                "offsets_topic_num_partitions must be in 1..={MAX_PARTITIONS}, got {}",
                self.offsets_topic_num_partitions
            ));
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms < 2 * self.broker_heartbeat_interval_ms
        {
            return bad(format!(
                "broker_session_timeout_ms ({}) must be at least twice broker_heartbeat_interval_ms ({}), which must be > 0",
                self.broker_session_timeout_ms, self.broker_heartbeat_interval_ms
            ));
        }
        if self.min_insync_replicas < 1 {
            return bad(format!(
                "min_insync_replicas must be >= 1, got {}",
                self.min_insync_replicas
            ));
        }
        if self.replica_fetch_wait_max_ms == 0
            || self.replica_lag_time_max_ms <= self.replica_fetch_wait_max_ms
        {
            return bad(format!(
                "replica_lag_time_max_ms ({}) must exceed replica_fetch_wait_max_ms ({}), which must be > 0",
                self.replica_lag_time_max_ms, self.replica_fetch_wait_max_ms
            ));
        }
        if self.replica_fetch_max_bytes < 1024 {
            return bad("replica_fetch_max_bytes must be at least 1024".into());
        }
        if self.group_min_session_timeout_ms == 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
            || self.group_max_size == 0
        {
            return bad(format!(
                "group_min_session_timeout_ms ({}) must be in 1..=group_max_session_timeout_ms ({}) and group_max_size > 0",
                self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
            ));
        }
        if self.offsets_retention_minutes == 0 || self.offsets_retention_check_interval_ms == 0 {
            return bad(
                "offsets_retention_minutes and offsets_retention_check_interval_ms must be positive"
                    .into(),
            );
        }
        if self.offsets_topic_replication_factor < 1 || self.default_replication_factor < 1 {
            return bad("replication factors must be >= 1".into());
        }
        for (id, addr) in &self.voters {
            if *id < 0 {
                return bad(format!("voter id must be >= 0, got {id}"));
            }
            parse_host_port(addr).map_err(|e| BrokerError::Config(format!("voter {id}: {e}")))?;
        }
        if let Some(addr) = &self.advertised_address {
            parse_host_port(addr).map_err(BrokerError::Config)?;
        }
        self.validate_kafka()?;
        self.http_listen_addr()?;
        if self.max_request_bytes < 1024 || self.max_request_bytes > MAX_REQUEST_BYTES {
            return bad(format!(
                "max_request_bytes must be in 1024..={MAX_REQUEST_BYTES}, got {}",
                self.max_request_bytes
            ));
        }
        if self.fetch_max_bytes == 0 {
            return bad("fetch_max_bytes must be > 0".into());
        }
        if self.log_flush_scheduler_interval_ms == 0 || self.log_retention_check_interval_ms == 0 {
            return bad("background task intervals must be > 0 ms".into());
        }
        if self.log_index_interval_bytes == 0 {
            return bad("log_index_interval_bytes must be > 0".into());
        }
        self.validate_connection_limits()?;
        // The broker-wide log settings obey the same rules as per-topic overrides.
        TopicConfig::resolve(self, &BTreeMap::new())
            .map_err(|e| BrokerError::Config(e.message.clone()))?;
        Ok(())
    }

    fn validate_connection_limits(&self) -> Result<(), BrokerError> {
        if self.connections_max_idle_ms == 0 {
            return Err(BrokerError::Config("connections_max_idle_ms must be > 0".into()));
        }
        if self.max_connections == 0 {
            return Err(BrokerError::Config("max_connections must be > 0".into()));
        }
        Ok(())
    }

    /// The fetch wait cap as a duration.
    pub fn fetch_max_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_max_wait_ms)
    }

    /// The host and port clients are told to dial, given the address the listener bound.
    pub fn advertised(&self, bound: SocketAddr) -> (String, i32) {
        if let Some(Ok((host, port))) = self.advertised_address.as_deref().map(parse_host_port) {
            return (host, port);
        }
        // A wildcard bind is not dialable; loopback is the one address sure to reach us.
        let ip = if bound.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        };
        (ip.to_string(), i32::from(bound.port()))
    }
}

/// Most partitions a single topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;

pub(crate) fn parse_host_port(addr: &str) -> Result<(String, i32), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("advertised address {addr:?} is not host:port"))?;
    let port: u16 =
        port.parse().map_err(|_| format!("advertised address {addr:?} has a bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("advertised address {addr:?} needs a host and a non-zero port"));
    }
    Ok((host.to_string(), i32::from(port)))
}

/// The topic-level settings accepted in CreateTopics, with Kafka's names.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// A topic's effective settings: broker defaults with the topic's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
    retention_ms: i64,
    retention_bytes: i64,
    segment_bytes: u64,
    segment_ms: i64,
    flush_messages: i64,
    flush_ms: i64,
    max_message_bytes: usize,
    index_interval_bytes: u32,
    min_insync_replicas: usize,
    timestamp_type: TimestampType,
    timestamp_before_max_ms: i64,
    timestamp_after_max_ms: i64,
    producer_id_expiration_ms: u64,
    /// `cleanup.policy` includes `compact`.
    compact: bool,
    /// `cleanup.policy` includes `delete` (retention by time and size).
    delete: bool,
    delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio` in thousandths.
    min_cleanable_dirty_ratio_permille: u16,
}

impl TopicConfig {
    /// Applies `overrides` to the broker's defaults; any unknown key or bad value is
    /// `INVALID_CONFIG`.
    pub fn resolve(
        broker: &BrokerConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ApiError> {
        let mut config = TopicConfig {
            overrides: overrides.clone(),
            retention_ms: broker.log_retention_ms,
            retention_bytes: broker.log_retention_bytes,
            segment_bytes: broker.log_segment_bytes,
            segment_ms: broker.log_segment_ms,
            flush_messages: broker.log_flush_interval_messages,
            flush_ms: broker.log_flush_interval_ms,
            max_message_bytes: broker.message_max_bytes,
            index_interval_bytes: broker.log_index_interval_bytes,
            min_insync_replicas: usize::try_from(broker.min_insync_replicas).unwrap_or(1),
            timestamp_type: parse_timestamp_type(&broker.log_message_timestamp_type)?,
            timestamp_before_max_ms: broker.log_message_timestamp_before_max_ms,
            timestamp_after_max_ms: broker.log_message_timestamp_after_max_ms,
            producer_id_expiration_ms: broker.producer_id_expiration_ms,
            compact: false,
            delete: true,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio_permille: 500,
        };
        for (key, value) in overrides {
            let int = || -> Result<i64, ApiError> {
                value.trim().parse::<i64>().map_err(|_| {
                    ApiError::invalid_config(format!("{key}={value:?} is not an integer"))
                })
            };
            match key.as_str() {
                "retention.ms" => config.retention_ms = int()?,
                "retention.bytes" => config.retention_bytes = int()?,
                "segment.bytes" => {
                    config.segment_bytes = u64::try_from(int()?).unwrap_or(0);
                }
                "segment.ms" => config.segment_ms = int()?,
                "flush.messages" => config.flush_messages = int()?,
                "flush.ms" => config.flush_ms = int()?,
                "max.message.bytes" => {
                    config.max_message_bytes = usize::try_from(int()?).unwrap_or(0);
                }
                "min.insync.replicas" => {
                    config.min_insync_replicas = usize::try_from(int()?).unwrap_or(0);
                }
                "message.timestamp.type" => config.timestamp_type = parse_timestamp_type(value)?,
                "message.timestamp.before.max.ms" => config.timestamp_before_max_ms = int()?,
                "message.timestamp.after.max.ms" => config.timestamp_after_max_ms = int()?,
                "cleanup.policy" => (config.compact, config.delete) = parse_cleanup_policy(value)?,
                "delete.retention.ms" => config.delete_retention_ms = int()?,
                "min.cleanable.dirty.ratio" => {
                    let ratio: f64 = value.trim().parse().map_err(|_| {
                        ApiError::invalid_config(format!("{key}={value:?} is not a number"))
                    })?;
                    if !(0.0..=1.0).contains(&ratio) {
                        return Err(ApiError::invalid_config(format!(
                            "min.cleanable.dirty.ratio must be in [0, 1], got {value}"
                        )));
                    }
                    config.min_cleanable_dirty_ratio_permille = (ratio * 1000.0).round() as u16;
                }
                other => {
                    return Err(ApiError::invalid_config(format!(
                        "unknown topic config {other:?}; supported: {}",
                        TOPIC_CONFIG_KEYS.join(", ")
                    )));
                }
            }
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ApiError> {
        let bad = |msg: String| Err(ApiError::invalid_config(msg));
        if self.retention_ms < -1 {
            return bad(format!("retention.ms must be -1 or >= 0, got {}", self.retention_ms));
        }
        if self.retention_bytes < -1 {
            return bad(format!(
                "retention.bytes must be -1 or >= 0, got {}",
                self.retention_bytes
            ));
        }
        if !(1..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!("segment.bytes must be in 1..={MAX_SEGMENT_BYTES}"));
        }
        if self.segment_ms < -1 || self.segment_ms == 0 {
            return bad(format!("segment.ms must be -1 or >= 1, got {}", self.segment_ms));
        }
        if self.flush_messages < -1 || self.flush_messages == 0 {
            return bad(format!("flush.messages must be -1 or >= 1, got {}", self.flush_messages));
        }
        if self.flush_ms < -1 {
            return bad(format!("flush.ms must be -1 or >= 0, got {}", self.flush_ms));
        }
        if self.delete_retention_ms < 0 {
            return bad(format!(
                "delete.retention.ms must be >= 0, got {}",
                self.delete_retention_ms
            ));
        }
        if self.min_insync_replicas < 1 {
            return bad("min.insync.replicas must be >= 1".into());
        }
        for (key, ms) in [
            ("message.timestamp.before.max.ms", self.timestamp_before_max_ms),
            ("message.timestamp.after.max.ms", self.timestamp_after_max_ms),
        ] {
            if ms < 0 {
                return bad(format!("{key} must be >= 0, got {ms}"));
            }
        }
        if !(BATCH_HEADER_LEN..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return bad(format!(
                "max.message.bytes must be in {BATCH_HEADER_LEN}..={MAX_MESSAGE_BYTES}"
            ));
        }
        Ok(())
    }

    /// The overrides the topic was created with (persisted as given).
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// In-sync replicas acks=all needs (`min.insync.replicas`).
    pub fn min_insync_replicas(&self) -> usize {
        self.min_insync_replicas
    }

    /// Largest batch the topic accepts.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Every supported setting with its effective value, as DescribeTopics reports it.
    pub fn effective(&self) -> BTreeMap<String, String> {
        [
            ("cleanup.policy", self.cleanup_policy().to_string()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            (
                "min.cleanable.dirty.ratio",
                format!("{}", f64::from(self.min_cleanable_dirty_ratio_permille) / 1000.0),
            ),
            ("flush.messages", self.flush_messages.to_string()),
            ("flush.ms", self.flush_ms.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("message.timestamp.after.max.ms", self.timestamp_after_max_ms.to_string()),
            ("message.timestamp.before.max.ms", self.timestamp_before_max_ms.to_string()),
            ("message.timestamp.type", timestamp_type_name(self.timestamp_type).to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The strom-log configuration of each partition of the topic.
    pub fn log_config(&self) -> LogConfig {
        let ms = |v: i64| u64::try_from(v).ok().map(Duration::from_millis);
        // One policy per log: a message count, when given, wins over a time bound.
        let flush = match (self.flush_messages, self.flush_ms) {
            (1, _) | (-1, 0) => FlushPolicy::EveryAppend,
            (n, _) if n > 1 => FlushPolicy::EveryMessages(n.unsigned_abs()),
            (_, t) if t > 0 => FlushPolicy::Interval(Duration::from_millis(t.unsigned_abs())),
            _ => FlushPolicy::Manual,
        };
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: ms(self.segment_ms),
            // Without `delete` in the policy, only the cleaner removes records.
            retention_bytes: u64::try_from(self.retention_bytes).ok().filter(|_| self.delete),
            retention_ms: ms(self.retention_ms).filter(|_| self.delete),
            index_interval_bytes: self.index_interval_bytes,
            max_batch_bytes: self.max_message_bytes,
            flush,
            timestamp_type: self.timestamp_type,
            timestamp_before_max: ms(self.timestamp_before_max_ms)
                .filter(|_| self.timestamp_before_max_ms != i64::MAX),
            timestamp_after_max: ms(self.timestamp_after_max_ms)
                .filter(|_| self.timestamp_after_max_ms != i64::MAX),
            producer_id_expiration_ms: Duration::from_millis(self.producer_id_expiration_ms),
            compact: self.compact,
            delete_retention_ms: Duration::from_millis(
                u64::try_from(self.delete_retention_ms).unwrap_or(0),
            ),
            min_cleanable_dirty_ratio_permille: self.min_cleanable_dirty_ratio_permille,
        }
    }

    /// Whether the log cleaner compacts the topic (`cleanup.policy` includes `compact`).
    pub fn is_compacted(&self) -> bool {
        self.compact
    }

    /// `cleanup.policy` as Kafka writes it.
    fn cleanup_policy(&self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

/// Kafka's `cleanup.policy`: `delete`, `compact`, or both (comma-separated, any order);
/// `(compact, delete)`.
fn parse_cleanup_policy(value: &str) -> Result<(bool, bool), ApiError> {
    let (mut compact, mut delete) = (false, false);
    for part in value.split(',').map(str::trim) {
        match part {
            "compact" => compact = true,
            "delete" => delete = true,
            _ => {
                return Err(ApiError::invalid_config(format!(
                    "cleanup.policy={value:?}: each entry must be \"compact\" or \"delete\""
                )));
            }
        }
    }
    Ok((compact, delete))
}

/// Kafka's `message.timestamp.type` values, case as Kafka writes them.
fn parse_timestamp_type(value: &str) -> Result<TimestampType, ApiError> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        other => Err(ApiError::invalid_config(format!(
            "message.timestamp.type={other:?} is not CreateTime or LogAppendTime"
        ))),
    }
}

fn timestamp_type_name(t: TimestampType) -> &'static str {
    match t {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

impl BrokerConfig {
    /// The group coordinator's settings: Kafka's `group.*` settings from this config, the
    /// coordinator's own limits otherwise.
    pub fn coordinator_config(&self) -> strom_coordinator::CoordinatorConfig {
        strom_coordinator::CoordinatorConfig {
            min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
            initial_rebalance_delay: Duration::from_millis(self.group_initial_rebalance_delay_ms),
            max_group_size: self.group_max_size,
            offset_metadata_max_bytes: self.offset_metadata_max_bytes,
            offsets_retention: Duration::from_secs(
                self.offsets_retention_minutes.saturating_mul(60),
            ),
            offsets_retention_check_interval: Duration::from_millis(
                self.offsets_retention_check_interval_ms,
            ),
            ..strom_coordinator::CoordinatorConfig::default()
        }
    }
}

/// Parses `--voters 1@host:port,2@host:port` into node id -> address. Duplicate ids and
/// malformed entries are errors.
pub fn parse_voters(text: &str) -> Result<BTreeMap<i32, String>, BrokerError> {
    let mut voters = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| BrokerError::Config(format!("voter {entry:?} is not ID@HOST:PORT")))?;
        let id: i32 = id.parse().map_err(|_| {
            BrokerError::Config(format!("voter {entry:?}: {id:?} is not a node id"))
        })?;
        parse_host_port(addr).map_err(|e| BrokerError::Config(format!("voter {entry:?}: {e}")))?;
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(BrokerError::Config(format!("voter id {id} is listed twice")));
        }
    }
    Ok(voters)
}

/// TOML takes voters as `voters = ["1@host:port", ...]` or as one comma-separated string.
fn deserialize_voters<'de, D>(deserializer: D) -> Result<BTreeMap<i32, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Voters {
        List(Vec<String>),
        One(String),
    }
    let text = match Voters::deserialize(deserializer)? {
        Voters::List(list) => list.join(","),
        Voters::One(s) => s,
    };
    parse_voters(&text).map_err(serde::de::Error::custom)
}

fn serialize_voters<S>(voters: &BTreeMap<i32, String>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
{
    let list: Vec<String> = voters.iter().map(|(id, addr)| format!("{id}@{addr}")).collect();
    list.serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_proto::v1::ErrorCode;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_toml_is_the_default() {
        assert_eq!(BrokerConfig::from_toml_str("").unwrap(), BrokerConfig::default());
    }

    #[test]
    fn toml_fields_parse_and_unknown_keys_are_rejected() {
        let c = BrokerConfig::from_toml_str(
            "listen = \"0.0.0.0:0\"\ndata_dir = \"/tmp/x\"\nlog_segment_bytes = 4096\n\
             log_flush_interval_messages = 1\nauto_create_topics = true\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.log_segment_bytes, 4096);
        assert!(c.auto_create_topics);
        assert!(matches!(
            BrokerConfig::from_toml_str("no_such_setting = 1"),
            Err(BrokerError::Config(_))
        ));
        assert!(matches!(
            BrokerConfig::from_toml_str("num_partitions = 0"),
            Err(BrokerError::Config(_))
        ));
        assert!(matches!(
            BrokerConfig::from_toml_str("log_retention_ms = -5"),
            Err(BrokerError::Config(_))
        ));
    }

    #[test]
    fn config_file_loads_and_reports_its_path_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, "node_id = 7\nlog_retention_bytes = 1024\n").unwrap();
        let c = BrokerConfig::load(&path).unwrap();
        assert_eq!((c.node_id, c.log_retention_bytes), (7, 1024));
        std::fs::write(&path, "node_id = \"seven\"\n").unwrap();
        let err = BrokerConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("broker.toml"), "{err}");
        assert!(BrokerConfig::load(dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn advertised_address_defaults_to_bound_and_replaces_wildcards() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.advertised("0.0.0.0:123".parse().unwrap()), ("127.0.0.1".into(), 123));
        assert_eq!(c.advertised("10.1.2.3:9".parse().unwrap()), ("10.1.2.3".into(), 9));
        c.advertised_address = Some("broker.example:9095".into());
        assert_eq!(c.advertised("0.0.0.0:1".parse().unwrap()), ("broker.example".into(), 9095));
        c.advertised_address = Some("nope".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn topic_overrides_apply_and_bad_values_are_invalid_config() {
        let broker = BrokerConfig::default();
        let t = TopicConfig::resolve(
            &broker,
            &overrides(&[("retention.ms", "1000"), ("segment.bytes", "512"), ("flush.ms", "0")]),
        )
        .unwrap();
        let log = t.log_config();
        assert_eq!(log.retention_ms, Some(Duration::from_millis(1000)));
        assert_eq!(log.segment_bytes, 512);
        assert!(matches!(log.flush, FlushPolicy::EveryAppend));
        assert_eq!(t.effective()["retention.ms"], "1000");

        for bad in [
            ("retention.ms", "abc"),
            ("retention.ms", "-2"),
            ("segment.bytes", "0"),
            ("segment.bytes", "99999999999"),
            ("segment.ms", "0"),
            ("flush.messages", "0"),
            ("max.message.bytes", "-1"),
            ("max.message.bytes", "60"),
            ("cleanup.policy", "compaction"),
            ("cleanup.policy", ""),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("delete.retention.ms", "-1"),
            ("no.such.key", "1"),
        ] {
            let err = TopicConfig::resolve(&broker, &overrides(&[bad])).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{bad:?}");
        }
    }

    #[test]
    fn group_settings_reach_the_coordinator_and_are_checked() {
        let config = BrokerConfig::from_toml_str(
            "group_initial_rebalance_delay_ms = 3000\ngroup_min_session_timeout_ms = 1000\n",
        )
        .unwrap();
        let c = config.coordinator_config();
        assert_eq!(c.initial_rebalance_delay, Duration::from_secs(3));
        assert_eq!(c.min_session_timeout, Duration::from_secs(1));
        assert_eq!(c.max_session_timeout, Duration::from_secs(1800));
        let inverted = BrokerConfig {
            group_min_session_timeout_ms: 60_000,
            group_max_session_timeout_ms: 6_000,
            ..BrokerConfig::default()
        };
        assert!(inverted.validate().is_err());
    }

    #[test]
    fn flush_policy_mapping() {
        let broker = BrokerConfig::default();
        let policy = |pairs: &[(&str, &str)]| {
            TopicConfig::resolve(&broker, &overrides(pairs)).unwrap().log_config().flush
        };
        assert!(matches!(policy(&[]), FlushPolicy::Manual));
        assert!(matches!(policy(&[("flush.messages", "1")]), FlushPolicy::EveryAppend));
        assert!(matches!(policy(&[("flush.messages", "10")]), FlushPolicy::EveryMessages(10)));
        assert!(matches!(policy(&[("flush.ms", "250")]), FlushPolicy::Interval(_)));
        assert!(matches!(
            policy(&[("flush.ms", "250"), ("flush.messages", "5")]),
            FlushPolicy::EveryMessages(5)
        ));
    }

    #[test]
    fn voters_parse_from_flag_and_toml() {
        let voters = parse_voters("1@127.0.0.1:9101, 2@localhost:9102").unwrap();
        assert_eq!(voters.get(&2).map(String::as_str), Some("localhost:9102"));
        for bad in ["1@nope", "x@h:1", "1@h:1,1@h:2", "h:1"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
        let config = BrokerConfig::from_toml_str("voters = [\"1@h:1\", \"2@h:2\"]").unwrap();
        assert_eq!(config.voters.len(), 2);
        let text = toml::to_string(&config).unwrap();
        assert_eq!(BrokerConfig::from_toml_str(&text).unwrap(), config);
    }
}
