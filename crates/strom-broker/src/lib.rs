//! The Strom broker: topics, partitions and their replicated logs served over gRPC
//! (`strom.v1.Broker`, `strom.v1.Admin`, `strom.v1.Group`, and node-to-node `strom.v1.Quorum`
//! and `strom.v1.Replication`), one node of a cluster whose metadata lives in a Raft quorum.
//!
//! - [`Broker`]: the core, no network: create/delete/describe topics and alter their configs,
//!   produce (acks 0/1/all), long-poll fetch, list offsets, background flush and retention,
//!   controlled shutdown.
//! - [`BrokerServer`] / [`serve`]: the tonic server around it.
//! - [`BrokerConfig`]: settings (TOML), per-topic overrides with Kafka's names.
//!
//! # Decisions
//!
//! - **Metadata** is a Raft log (`strom-quorum`) behind [`QuorumLog`]; the active controller
//!   (`controller.rs`) proposes records, every node applies the committed image
//!   (`replicas.rs`): it opens the logs of its replicas and gives each its role.
//! - **Replication** is Kafka's ISR model with leader epochs: followers fetch from leaders
//!   (`fetcher.rs`), the leader's high watermark and ISR changes come from
//!   `strom-replication` (`partition.rs`, `partition/replica.rs`, `replication.rs`), acks=all
//!   waits for the ISR. Consumers read from leaders, below the high watermark.
//! - **Consumer groups**: the coordinator of a group is the leader of its `__consumer_offsets`
//!   partition; commits are appended with acks=all and fsynced.
//! - **Partitions** are directories `<data_dir>/<topic>-<partition>` as in Kafka, each a
//!   `strom_log::Log`. The data directory is locked (`flock` on `.lock`).
//! - **Fetch** long-polls on per-partition `watch` channels carrying the high watermark.
//! - **Shutdown** moves leadership away (controlled shutdown), stops accepting, answers parked
//!   fetches, drains requests (up to `shutdown_timeout_ms`), then closes every log.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strom_broker::BrokerError> {
//! let mut config = strom_broker::BrokerConfig::default();
//! config.listen = "127.0.0.1:0".parse().expect("address");
//! config.data_dir = "/tmp/strom-demo".into();
//! let server = strom_broker::BrokerServer::start(config).await?;
//! println!("strom-broker listening on {}", server.local_addr());
//! server.shutdown().await
//! # }
//! ```

mod broker;
mod config;
mod connection;
mod controller;
mod delete_records;
mod elect_leaders;
mod end_offsets;
mod error;
mod fetch;
mod fetcher;
mod http_support;
mod kafka_support;
mod leader_connection;
mod limits;
mod log_cleaner;
mod log_dirs;
mod metadata;
mod metrics;
mod partition;
mod peers;
mod producer_ids;
mod quorum;
mod raft;
mod recovery;
mod replicas;
mod replication;
mod server;
mod service;
mod topic;
mod types;

pub use broker::{Broker, MAX_TOPICS_PER_REQUEST};
pub use config::{BrokerConfig, MAX_PARTITIONS, TOPIC_CONFIG_KEYS, TopicConfig, parse_voters};
pub use delete_records::{DEFAULT_DELETE_RECORDS_TIMEOUT, MAX_DELETE_RECORDS_WAIT};
pub use elect_leaders::{ElectionOutcome, ElectionType};
pub use error::{ApiError, BrokerError};
pub use fetch::MAX_FETCH_PARTITIONS;
pub use http_support::DEFAULT_HTTP_LISTEN;
pub use kafka_support::DEFAULT_KAFKA_LISTEN;
pub use limits::{MAX_REQUEST_PARTITIONS, check_partition_entries};
pub use log_cleaner::CleanerPass;
pub use log_dirs::{LogDirDescription, LogDirPartition};
pub use metadata::{
    ClusterMetadata, FileMetadataStore, METADATA_FILE, MetadataStore, PartitionRecord, TopicRecord,
};
pub use metrics::{
    BrokerMetrics, CleanerTotals, ConnectionGuard, HistogramSnapshot, LATENCY_BUCKETS, Listener,
    PartitionStats, QuorumStatus, RequestKind,
};
pub use partition::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
pub use quorum::{ControllerView, Image, QuorumLog};

pub use server::{BrokerServer, serve};
pub use topic::{MAX_TOPIC_NAME_LEN, is_internal_topic, validate_topic_name};
pub use types::{
    BrokerEndpoint, ClusterView, ConfigAlteration, FetchParams, FetchPartitionParams,
    FetchedPartition, ListedOffset, NewPartitions, NewTopic, NodeDescription, PartitionDescription,
    ProduceOutcome, TopicDescription, TopicListing,
};
