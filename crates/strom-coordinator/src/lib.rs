//! Consumer groups for Strom: Kafka's classic group protocol on the coordinator side, the
//! committed-offsets store in `__consumer_offsets`, and the client-side pieces (assignors and
//! the ConsumerProtocol codec) that consumers share with it.
//!
//! With the default `server` feature the crate holds the [`GroupCoordinator`] and the
//! [`OffsetStore`]; without it only [`assignor`] and [`consumer_protocol`] are built, which is
//! what the consumer SDK depends on (`default-features = false`).
//!
//! The coordinator treats member metadata and assignments as opaque bytes, as Kafka's does, so
//! Kafka clients and Strom's consumer share one group; consumers encode them with
//! [`consumer_protocol`] and compute assignments with an [`assignor::Assignor`] on the leader.
//! Group membership is kept in memory only: after a coordinator restart members get
//! UNKNOWN_MEMBER_ID and rejoin, as after a Kafka coordinator failover. Committed offsets are
//! durable.

pub mod assignor;
pub mod consumer_protocol;
mod wire;

#[cfg(feature = "server")]
mod api;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod coordinator;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
mod group;
#[cfg(feature = "server")]
mod log_impl;
#[cfg(feature = "server")]
mod member;
#[cfg(feature = "server")]
pub mod offset_schema;
#[cfg(feature = "server")]
mod offset_store;

#[cfg(feature = "server")]
pub use api::{
    GroupDescription, GroupListing, GroupResult, HeartbeatRequest, JoinGroupMember,
    JoinGroupProtocol, JoinGroupRequest, JoinGroupResult, LeaveGroupRequest, MemberDescription,
    OffsetCommitEntry, OffsetCommitPartitionResult, OffsetCommitRequest, OffsetDeleteResult,
    OffsetFetchPartition, OffsetFetchResult, OffsetFetchTopic, SyncGroupAssignment,
    SyncGroupRequest, SyncGroupResult,
};
#[cfg(feature = "server")]
pub use config::CoordinatorConfig;
#[cfg(feature = "server")]
pub use coordinator::GroupCoordinator;
#[cfg(feature = "server")]
pub use error::{CoordinatorError, ErrorCode, OffsetsLogError};
#[cfg(feature = "server")]
pub use group::GroupState;
#[cfg(feature = "server")]
pub use offset_schema::{CommittedOffset, partition_for_group};
#[cfg(feature = "server")]
pub use offset_store::{
    CONSUMER_OFFSETS_TOPIC, DEFAULT_OFFSETS_PARTITIONS, MemoryOffsetsLog, OffsetStore, OffsetWrite,
    OffsetsLog,
};
