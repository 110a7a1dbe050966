//! Requests and answers of the [`Broker`](crate::Broker) core, independent of any wire
//! protocol: the gRPC services and the Kafka listener translate to and from these.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::error::ApiError;

/// A topic to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name (Kafka's rules).
    pub name: String,
    /// Partitions; `-1` means the broker's `num_partitions`.
    pub num_partitions: i32,
    /// Replicas per partition; `0` or `-1` mean the default (1 on a single node).
    pub replication_factor: i32,
    /// Per-topic overrides with Kafka's names (`retention.ms`, `segment.bytes`, ...).
    pub configs: BTreeMap<String, String>,
}

/// One line of ListTopics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub num_partitions: i32,
    /// Whether it is an internal topic (`__...`).
    pub internal: bool,
}

/// A topic with its partitions and effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Whether it is an internal topic (`__...`).
    pub internal: bool,
    /// Every partition, in order.
    pub partitions: Vec<PartitionDescription>,
    /// Every supported setting with its effective value.
    pub configs: BTreeMap<String, String>,
}

/// A partition's placement and offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: i32,
    /// Node id of the leader.
    pub leader: i32,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// Node ids holding a replica.
    pub replicas: Vec<i32>,
    /// Node ids in sync with the leader.
    pub isr: Vec<i32>,
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// Offset below which records are committed.
    pub high_watermark: i64,
    /// Corrupt data met on a read, or a failed write not yet undone; `None` when healthy.
    pub storage_error: Option<String>,
}

/// A broker's address as clients should dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// Node id.
    pub node_id: i32,
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: i32,
}

/// A node as `cluster describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDescription {
    /// Node id.
    pub node_id: i32,
    /// `host:port` of its gRPC listener.
    pub address: String,
    /// Fenced: missed its session; leads nothing.
    pub fenced: bool,
    /// Member of the metadata quorum.
    pub voter: bool,
    /// Partitions it leads.
    pub leader_partitions: usize,
    /// Partitions it leads whose ISR is smaller than their replica set.
    pub under_replicated_partitions: usize,
    /// Partitions with a replica on it and no leader anywhere.
    pub offline_partitions: usize,
}

/// A change of one topic's config overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigAlteration {
    /// Topic name.
    pub topic: String,
    /// Overrides to set (Kafka's names).
    pub set: std::collections::BTreeMap<String, String>,
    /// Overrides to remove.
    pub delete: Vec<String>,
}

/// A request to grow a topic (Kafka's CreatePartitions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewPartitions {
    /// Topic name.
    pub topic: String,
    /// The new total partition count; must exceed the current one.
    pub count: i32,
    /// One replica list per added partition, or `None` to place them like a new topic's.
    pub assignment: Option<Vec<Vec<i32>>>,
}

/// The answer to a metadata request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Stable id of the cluster.
    pub cluster_id: String,
    /// Node id of the active controller.
    pub controller_id: i32,
    /// Every live broker.
    pub brokers: Vec<BrokerEndpoint>,
    /// The topics asked for (all when none were named), each described or failed.
    pub topics: Vec<(String, Result<TopicDescription, ApiError>)>,
}

/// What a successful append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOutcome {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// First offset of the log after the append.
    pub log_start_offset: i64,
    /// `-1`: Strom keeps the producer's timestamps (CreateTime).
    pub log_append_time_ms: i64,
}

/// A fetch over several partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchParams {
    /// Longest the broker waits for `min_bytes` (capped by `fetch_max_wait_ms`).
    pub max_wait: Duration,
    /// Answer as soon as this many bytes are available; `0` answers at once.
    pub min_bytes: usize,
    /// Limit on the whole answer; `0` means the broker's `fetch_max_bytes`. The first batch of
    /// the first partition with data is returned even when larger.
    pub max_bytes: usize,
    /// Partitions to read, in the order the answer lists them.
    pub partitions: Vec<FetchPartitionParams>,
}

/// One partition of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionParams {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// First offset wanted.
    pub fetch_offset: i64,
    /// Limit for this partition; `0` means only the whole answer's limit applies.
    pub max_bytes: usize,
    /// The leader epoch the client believes current; `None`: not checked.
    pub current_leader_epoch: Option<i32>,
}

/// One partition's part of a fetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Whole RecordBatch v2 slices of the log (possibly starting before the fetch offset),
    /// or why there are none.
    pub records: Result<Bytes, ApiError>,
    /// The partition's high watermark, `-1` when the partition is unknown.
    pub high_watermark: i64,
    /// The partition's log start offset, `-1` when the partition is unknown.
    pub log_start_offset: i64,
}

/// A ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset, `-1` when no record is at or after the timestamp.
    pub offset: i64,
    /// Timestamp of the record found, `-1` for earliest/latest or none.
    pub timestamp: i64,
}
