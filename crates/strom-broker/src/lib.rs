//! The Strom broker: topics, partitions and their logs served over gRPC (`strom.v1.Broker`,
//! `strom.v1.Admin` and `strom.v1.Group`). One process is controller and broker at once; replication and the Raft
//! metadata quorum come later and slot in behind [`MetadataStore`] and the partition's high
//! watermark.
//!
//! - [`Broker`]: the core, no network: create/delete/describe topics, produce, long-poll fetch,
//!   list offsets, background flush and retention, clean shutdown.
//! - [`BrokerServer`] / [`serve`]: the tonic server around it.
//! - Consumer groups: the broker is the coordinator of every group. At start it creates
//!   `__consumer_offsets` (`offsets_topic_num_partitions`, unlimited retention) if missing,
//!   replays it into a [`strom_coordinator::OffsetStore`] and serves the coordinator over
//!   `strom.v1.Group`. Commits are appended through the topic's partitions (high watermark,
//!   fetch wake-ups) and fsynced; clients may fetch the topic but not produce to or delete it.
//!   Deleting a topic deletes its committed offsets.
//! - [`BrokerConfig`]: settings (TOML), per-topic overrides with Kafka's names.
//!
//! # Decisions
//!
//! - **High watermark and acks.** One node is the whole ISR, so a partition's high watermark
//!   moves to its log end offset as soon as an append returns; acks 0, 1 and all are the same
//!   ("in the leader's log"), and an acknowledged record is on stable storage only when the
//!   topic's flush policy (`flush.messages` / `flush.ms`) says so. After a restart the high
//!   watermark starts at the recovered log end offset. Fetches never return records at or
//!   above it, so replication only has to change where it moves.
//! - **Metadata** lives in `<data_dir>/strom-metadata.toml` behind [`MetadataStore`], replaced
//!   atomically (temp file, fsync, rename, fsync dir). One controller thread applies topic
//!   changes one at a time: persist first, then open/delete logs and publish them to request
//!   handlers. A Raft quorum will replace the store and the thread, not the handlers.
//! - **Partitions** are directories `<data_dir>/<topic>-<partition>` as in Kafka, each a
//!   `strom_log::Log`. The data directory is locked (`flock` on `.lock`) against a second
//!   broker. Deleting a topic persists the deletion, wakes fetches parked on it, waits
//!   (bounded) for in-flight requests to let go, and deletes the logs.
//! - **Fetch** long-polls on per-partition `watch` channels carrying the high watermark: it
//!   answers at `min_bytes`, on any partition error, at `max_wait_ms` (capped by
//!   `fetch_max_wait_ms`), or when shutdown begins. The first batch of the first partition
//!   with data is returned even beyond `max_bytes`/`partition_max_bytes`; later partitions
//!   stay within the limits. A read continues across segment boundaries up to the limit.
//! - **Shutdown** stops accepting, answers parked fetches, drains requests (up to
//!   `shutdown_timeout_ms`), stops the controller, then closes every log (flush + the log's
//!   clean-shutdown marker).
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
mod error;
mod fetch;
mod fetcher;
mod kafka_support;
mod metadata;
mod partition;
mod peers;
mod quorum;
mod raft;
mod replicas;
mod replication;
mod server;
mod service;
mod topic;
mod types;

pub use broker::{Broker, MAX_TOPICS_PER_REQUEST};
pub use config::{BrokerConfig, MAX_PARTITIONS, TOPIC_CONFIG_KEYS, TopicConfig, parse_voters};
pub use error::{ApiError, BrokerError};
pub use fetch::MAX_FETCH_PARTITIONS;
pub use kafka_support::DEFAULT_KAFKA_LISTEN;
pub use metadata::{
    ClusterMetadata, FileMetadataStore, METADATA_FILE, MetadataStore, PartitionRecord, TopicRecord,
};
pub use partition::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
pub use quorum::{ControllerView, Image, QuorumLog};

pub use server::{BrokerServer, serve};
pub use topic::{MAX_TOPIC_NAME_LEN, is_internal_topic, validate_topic_name};
pub use types::{
    BrokerEndpoint, ClusterView, ConfigAlteration, FetchParams, FetchPartitionParams,
    FetchedPartition, ListedOffset, NewTopic, NodeDescription, PartitionDescription,
    ProduceOutcome, TopicDescription, TopicListing,
};
