//! Requests and results of the coordinator's operations. They mirror the gRPC `Group` service
//! (proto/strom/v1/group.proto) field for field, plus the few fields only Kafka's wire protocol
//! carries, so the broker's gRPC service and Kafka listener both map onto them directly.

use std::time::Duration;

use bytes::Bytes;
use strom_format::{LeaderEpoch, Offset, PartitionId};

use crate::error::ErrorCode;
use crate::group::GroupState;

/// A JoinGroup request.
#[derive(Debug, Clone, Default)]
pub struct JoinGroupRequest {
    /// The group to join.
    pub group_id: String,
    /// How long the member may go without a heartbeat before it is removed.
    pub session_timeout: Duration,
    /// How long the coordinator waits for the member to rejoin during a rebalance.
    pub rebalance_timeout: Duration,
    /// Empty on the first join; the coordinator assigns one.
    pub member_id: String,
    /// `"consumer"` for consumers; members of one group must agree on it.
    pub protocol_type: String,
    /// The protocols (assignors) the member supports, most preferred first.
    pub protocols: Vec<JoinGroupProtocol>,
    /// The client's id; prefixes the generated member id.
    pub client_id: String,
    /// The client's address, shown by DescribeGroups.
    pub client_host: String,
    /// KIP-394: answer a first join with MEMBER_ID_REQUIRED and the new member id, so a client
    /// that loses the response cannot leave an orphan member behind.
    pub require_known_member_id: bool,
    /// KIP-345: the member's static identity (`group.instance.id`). A static member that
    /// rejoins within its session timeout takes its old place (and assignment) back without a
    /// rebalance; the member id it had before is fenced.
    pub group_instance_id: Option<String>,
    /// KIP-814 (JoinGroup v9+): the client understands [`JoinGroupResult::skip_assignment`].
    /// Older clients are told a rejoining static leader is not the leader instead, so that it
    /// does not compute an assignment the Stable group would ignore.
    pub supports_skip_assignment: bool,
}

/// One protocol a member offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupProtocol {
    /// The protocol's name (an assignor: `"range"`, `"cooperative-sticky"`, ...).
    pub name: String,
    /// Opaque to the coordinator; a ConsumerProtocol subscription for consumers.
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupResult {
    /// [`ErrorCode::None`] on success.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The protocol the group chose.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id (also set with [`ErrorCode::MemberIdRequired`]).
    pub member_id: String,
    /// Every member and its metadata for the chosen protocol: for the leader only.
    pub members: Vec<JoinGroupMember>,
    /// KIP-814: the leader must not run the assignor (a static leader rejoined a Stable group,
    /// which keeps its assignment); it gets the members only to watch their subscriptions.
    pub skip_assignment: bool,
}

/// A member as the leader sees it in its JoinGroup result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupMember {
    /// The member's id.
    pub member_id: String,
    /// Its static identity (KIP-345), if it has one.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A SyncGroup request.
#[derive(Debug, Clone, Default)]
pub struct SyncGroupRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member got from JoinGroup.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// The leader's assignment for every member; empty from followers.
    pub assignments: Vec<SyncGroupAssignment>,
    /// KIP-345: the member's static identity; a stale member id of that instance is fenced.
    pub group_instance_id: Option<String>,
}

/// One member's assignment, as the leader sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupAssignment {
    /// The member.
    pub member_id: String,
    /// Opaque to the coordinator; a ConsumerProtocol assignment for consumers.
    pub assignment: Bytes,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupResult {
    /// [`ErrorCode::None`] on success.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
    /// This member's assignment (empty if the leader gave it none).
    pub assignment: Bytes,
}

/// A Heartbeat request.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    /// The group.
    pub group_id: String,
    /// The member's generation.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// KIP-345: the member's static identity; a stale member id of that instance is fenced.
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup request.
#[derive(Debug, Clone, Default)]
pub struct LeaveGroupRequest {
    /// The group.
    pub group_id: String,
    /// The member leaving; may be empty when `group_instance_id` names it (LeaveGroup v3+).
    pub member_id: String,
    /// KIP-345: the static member leaving. An explicit leave of a static member rebalances the
    /// group (admin removal); static consumers do not send one when they shut down.
    pub group_instance_id: Option<String>,
}

/// The answer to Heartbeat and LeaveGroup: an error code and its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupResult {
    /// [`ErrorCode::None`] on success.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
}

/// An OffsetCommit request.
#[derive(Debug, Clone, Default)]
pub struct OffsetCommitRequest {
    /// The group.
    pub group_id: String,
    /// The member's generation; `-1` with an empty `member_id` commits outside group management
    /// (manual assignment), allowed only while the group has no members.
    pub generation_id: i32,
    /// The committing member, or empty.
    pub member_id: String,
    /// KIP-345: the member's static identity; a stale member id of that instance is fenced.
    pub group_instance_id: Option<String>,
    /// What to commit.
    pub offsets: Vec<OffsetCommitEntry>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitEntry {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: PartitionId,
    /// The next offset to consume, as in Kafka.
    pub offset: Offset,
    /// The leader epoch of the last consumed record, or [`LeaderEpoch::UNKNOWN`].
    pub leader_epoch: LeaderEpoch,
    /// Free-form client metadata, at most `offset_metadata_max_bytes` long.
    pub metadata: String,
}

/// The outcome of one partition of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartitionResult {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: PartitionId,
    /// [`ErrorCode::None`] when the offset is durably committed.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
}

/// The topics and partitions an OffsetFetch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchTopic {
    /// Topic.
    pub name: String,
    /// Partitions of it.
    pub partitions: Vec<PartitionId>,
}

/// The answer to an OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchResult {
    /// [`ErrorCode::None`] on success.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
    /// One entry per requested partition, or per committed partition when none were named.
    pub partitions: Vec<OffsetFetchPartition>,
}

/// The answer to an OffsetDelete: a group-level error, or one code per requested partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetDeleteResult {
    /// GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, KAFKA_STORAGE_ERROR...: then no partition's offset
    /// was deleted. [`ErrorCode::None`] otherwise.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
    /// Per requested partition: NONE (deleted, or there was no offset) or
    /// GROUP_SUBSCRIBED_TO_TOPIC (kept: a member reads that topic).
    pub partitions: Vec<(String, PartitionId, ErrorCode)>,
}

/// The committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: PartitionId,
    /// The committed offset; `None` when the group never committed one (`-1` on the wire).
    pub committed_offset: Option<Offset>,
    /// The leader epoch committed with it.
    pub leader_epoch: LeaderEpoch,
    /// The metadata committed with it.
    pub metadata: String,
    /// Per-partition error.
    pub error_code: ErrorCode,
}

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group's id.
    pub group_id: String,
    /// Its protocol type (`"consumer"`), empty for groups that only commit offsets.
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}

/// One group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's id.
    pub group_id: String,
    /// [`ErrorCode::GroupIdNotFound`] (with state Dead) for a group the coordinator does not
    /// know; Kafka's DescribeGroups before v6 reports that as NONE + Dead.
    pub error_code: ErrorCode,
    /// Why it failed, for people.
    pub error_message: String,
    /// The group's state.
    pub state: GroupState,
    /// Its protocol type.
    pub protocol_type: String,
    /// The protocol chosen for the current generation.
    pub protocol: String,
    /// The current generation.
    pub generation_id: i32,
    /// The members; their metadata and assignment only while the group is Stable (as Kafka).
    pub members: Vec<MemberDescription>,
}

/// One member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member's id.
    pub member_id: String,
    /// Its static identity (KIP-345), if it has one.
    pub group_instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

impl JoinGroupResult {
    pub(crate) fn error(code: ErrorCode, message: impl Into<String>, member_id: &str) -> Self {
        JoinGroupResult {
            error_code: code,
            error_message: message.into(),
            generation_id: -1,
            member_id: member_id.to_owned(),
            ..Default::default()
        }
    }
}

impl SyncGroupResult {
    pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        SyncGroupResult {
            error_code: code,
            error_message: message.into(),
            assignment: Bytes::new(),
        }
    }
}

impl GroupResult {
    pub(crate) fn ok() -> Self {
        GroupResult::default()
    }

    pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        GroupResult { error_code: code, error_message: message.into() }
    }
}
