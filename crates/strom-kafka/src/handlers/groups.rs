//! Consumer groups: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and DeleteGroups, onto
//! the broker's [`GroupCoordinator`] — the same one the gRPC `Group` service uses, so a group
//! may mix Kafka clients and Strom's SDK. A node coordinates the groups whose
//! `__consumer_offsets` partition it leads; the others are NOT_COORDINATOR here.

use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use strom_coordinator::{self as coord, GroupCoordinator, GroupState, OffsetCommitEntry};
use strom_format::{LeaderEpoch, Offset, PartitionId};

use super::codes::{COORDINATOR_NOT_AVAILABLE, GROUP_ID_NOT_FOUND, UNKNOWN_SERVER_ERROR};
use super::{ALL_GROUP_OPERATIONS, Context, OPERATIONS_NOT_REQUESTED, code, str_bytes, topic_name};

/// Kafka's FindCoordinator key type of transactional ids.
const KEY_TYPE_TRANSACTION: i8 = 1;

fn coordinator(ctx: &Context) -> Option<GroupCoordinator> {
    ctx.broker().group_coordinator()
}

/// The coordinator of `group` when this node is it. `None` otherwise: the client is answered
/// COORDINATOR_NOT_AVAILABLE and looks the coordinator up again (FindCoordinator names the
/// node leading the group's `__consumer_offsets` partition).
fn coordinator_of(ctx: &Context, group: &str) -> Option<GroupCoordinator> {
    ctx.broker().coordinator_for(group).ok()
}

/// KIP-345: a request's `group.instance.id` (null, or empty from some clients: dynamic).
fn instance(group_instance_id: Option<&str>) -> Option<String> {
    group_instance_id.filter(|i| !i.is_empty()).map(str::to_owned)
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) fn find_coordinator(
    ctx: &Context,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let answer = |key: &str| -> Coordinator {
        let base = Coordinator::default().with_key(str_bytes(key));
        if req.key_type == KEY_TYPE_TRANSACTION {
            return base
                .with_error_code(COORDINATOR_NOT_AVAILABLE)
                .with_error_message(Some(str_bytes("transactions are not supported")))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
        }
        // The node leading the group's offsets partition, at its Kafka listener.
        let found = ctx.broker().find_coordinator(key).and_then(|grpc| {
            ctx.broker().kafka_endpoint(grpc.node_id).ok_or_else(|| {
                strom_broker::ApiError::new(
                    strom_proto::v1::ErrorCode::CoordinatorNotAvailable,
                    format!("node {} has no Kafka listener", grpc.node_id),
                )
            })
        });
        match found {
            Ok(b) => base
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port),
            Err(e) => base
                .with_error_code(COORDINATOR_NOT_AVAILABLE)
                .with_error_message(Some(str_bytes(&e.message)))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    if version >= 4 {
        let coordinators = req.coordinator_keys.iter().map(|k| answer(k)).collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = answer(&req.key);
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}

pub(super) async fn join_group(
    ctx: &Context,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
) -> JoinGroupResponse {
    let protocol_type = req.protocol_type.to_string();
    let Some(c) = coordinator_of(ctx, &req.group_id) else {
        return JoinGroupResponse::default()
            .with_error_code(COORDINATOR_NOT_AVAILABLE)
            .with_generation_id(-1)
            .with_member_id(req.member_id);
    };
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_ms = if req.rebalance_timeout_ms < 0 {
        req.session_timeout_ms
    } else {
        req.rebalance_timeout_ms
    };
    let r = c
        .join_group(coord::JoinGroupRequest {
            group_id: req.group_id.to_string(),
            session_timeout: millis(req.session_timeout_ms),
            rebalance_timeout: millis(rebalance_ms),
            member_id: req.member_id.to_string(),
            protocol_type: protocol_type.clone(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| coord::JoinGroupProtocol {
                    name: p.name.to_string(),
                    metadata: p.metadata,
                })
                .collect(),
            client_id,
            client_host: format!("/{}", ctx.peer.ip()),
            // KIP-394: from v4 on, clients know to rejoin with the id MEMBER_ID_REQUIRED gives.
            require_known_member_id: version >= 4,
            group_instance_id: instance(req.group_instance_id.as_deref()),
            supports_skip_assignment: version >= 9,
        })
        .await;
    let ok = r.error_code.is_ok();
    JoinGroupResponse::default()
        .with_error_code(r.error_code.code())
        .with_generation_id(r.generation_id)
        .with_protocol_type(ok.then(|| str_bytes(&protocol_type)))
        .with_protocol_name(ok.then(|| str_bytes(&r.protocol_name)))
        .with_leader(str_bytes(&r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(str_bytes(&r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

pub(super) async fn sync_group(ctx: &Context, req: SyncGroupRequest) -> SyncGroupResponse {
    let Some(c) = coordinator_of(ctx, &req.group_id) else {
        return SyncGroupResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
    };
    let r = c
        .sync_group(coord::SyncGroupRequest {
            group_id: req.group_id.to_string(),
            generation_id: req.generation_id,
            member_id: req.member_id.to_string(),
            assignments: req
                .assignments
                .into_iter()
                .map(|a| coord::SyncGroupAssignment {
                    member_id: a.member_id.to_string(),
                    assignment: a.assignment,
                })
                .collect(),
            group_instance_id: instance(req.group_instance_id.as_deref()),
        })
        .await;
    SyncGroupResponse::default()
        .with_error_code(r.error_code.code())
        .with_protocol_type(req.protocol_type)
        .with_protocol_name(req.protocol_name)
        .with_assignment(r.assignment)
}

pub(super) fn heartbeat(ctx: &Context, req: HeartbeatRequest) -> HeartbeatResponse {
    let Some(c) = coordinator_of(ctx, &req.group_id) else {
        return HeartbeatResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
    };
    let r = c.heartbeat(&coord::HeartbeatRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: instance(req.group_instance_id.as_deref()),
    });
    HeartbeatResponse::default().with_error_code(r.error_code.code())
}

pub(super) fn leave_group(
    ctx: &Context,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let Some(c) = coordinator_of(ctx, &req.group_id) else {
        return LeaveGroupResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
    };
    let group_id = req.group_id.to_string();
    let leave = |member_id: &str, group_instance_id: Option<String>| {
        c.leave_group(&coord::LeaveGroupRequest {
            group_id: group_id.clone(),
            member_id: member_id.to_string(),
            group_instance_id,
        })
    };
    if version < 3 {
        let r = leave(&req.member_id, None);
        return LeaveGroupResponse::default().with_error_code(r.error_code.code());
    }
    // v3+ (KIP-345): a batch of members, each answered on its own.
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let r = leave(&m.member_id, instance(m.group_instance_id.as_deref()));
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(r.error_code.code())
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub(super) async fn offset_commit(ctx: &Context, req: OffsetCommitRequest) -> OffsetCommitResponse {
    // Every partition gets an answer in request order: `Some(code)` for those refused here,
    // `None` for those the coordinator answers, in the order it was given them.
    let coordinator = coordinator_of(ctx, &req.group_id);
    let mut answers: Vec<(TopicName, i32, Option<i16>)> = Vec::new();
    let mut entries = Vec::new();
    for topic in req.topics {
        let described = ctx.broker().describe_topic(&topic.name);
        for p in topic.partitions {
            let refused = match (&coordinator, &described) {
                (None, _) => Some(COORDINATOR_NOT_AVAILABLE),
                (_, Err(e)) => Some(code(e)),
                (_, Ok(d)) if !d.partitions.iter().any(|x| x.partition == p.partition_index) => {
                    Some(super::codes::UNKNOWN_TOPIC_OR_PARTITION)
                }
                _ => None,
            };
            if refused.is_none() {
                entries.push(OffsetCommitEntry {
                    topic: topic.name.to_string(),
                    partition: PartitionId::new(p.partition_index),
                    offset: Offset::new(p.committed_offset),
                    leader_epoch: LeaderEpoch::new(p.committed_leader_epoch),
                    metadata: p.committed_metadata.as_deref().unwrap_or_default().to_string(),
                });
            }
            answers.push((topic.name.clone(), p.partition_index, refused));
        }
    }
    let mut committed = match coordinator {
        Some(c) if !entries.is_empty() => c
            .commit_offsets(coord::OffsetCommitRequest {
                group_id: req.group_id.to_string(),
                generation_id: req.generation_id_or_member_epoch,
                member_id: req.member_id.to_string(),
                group_instance_id: instance(req.group_instance_id.as_deref()),
                offsets: entries,
            })
            .await
            .into_iter(),
        _ => Vec::new().into_iter(),
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (name, partition, refused) in answers {
        let error_code = match refused {
            Some(code) => code,
            None => committed.next().map_or(UNKNOWN_SERVER_ERROR, |r| r.error_code.code()),
        };
        let answer = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(error_code);
        match topics.last_mut() {
            Some(t) if t.name == name => t.partitions.push(answer),
            _ => topics.push(
                OffsetCommitResponseTopic::default().with_name(name).with_partitions(vec![answer]),
            ),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's committed offsets, grouped by topic in the order the coordinator lists them.
fn fetch_group(
    c: &GroupCoordinator,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (i16, Vec<(String, Vec<coord::OffsetFetchPartition>)>) {
    let topics: Option<Vec<coord::OffsetFetchTopic>> = topics.map(|ts| {
        ts.into_iter()
            .map(|(name, ps)| coord::OffsetFetchTopic {
                name,
                partitions: ps.into_iter().map(PartitionId::new).collect(),
            })
            .collect()
    });
    let r = c.fetch_offsets(group_id, topics.as_deref());
    let mut out: Vec<(String, Vec<coord::OffsetFetchPartition>)> = Vec::new();
    for p in r.partitions {
        match out.last_mut() {
            Some((t, ps)) if *t == p.topic => ps.push(p),
            _ => out.push((p.topic.clone(), vec![p])),
        }
    }
    (r.error_code.code(), out)
}

pub(super) fn offset_fetch(
    ctx: &Context,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let Some(c) = coordinator(ctx) else {
        if version >= 8 {
            let groups = req
                .groups
                .into_iter()
                .map(|g| {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(COORDINATOR_NOT_AVAILABLE)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        return OffsetFetchResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
    };
    if version >= 8 {
        // v8+ (KIP-709): several groups in one request.
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect()
                });
                let (error_code, found) = fetch_group(&c, &g.group_id, topics);
                let topics = found
                    .into_iter()
                    .map(|(name, ps)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&name))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p.partition.get())
                                            .with_committed_offset(
                                                p.committed_offset.map_or(-1, Offset::get),
                                            )
                                            .with_committed_leader_epoch(p.leader_epoch.get())
                                            .with_metadata(Some(str_bytes(&p.metadata)))
                                            .with_error_code(p.error_code.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(error_code)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req
        .topics
        .map(|ts| ts.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect());
    let (error_code, found) = fetch_group(&c, &req.group_id, topics);
    let topics = found
        .into_iter()
        .map(|(name, ps)| {
            OffsetFetchResponseTopic::default().with_name(topic_name(&name)).with_partitions(
                ps.into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p.partition.get())
                            .with_committed_offset(p.committed_offset.map_or(-1, Offset::get))
                            .with_committed_leader_epoch(p.leader_epoch.get())
                            .with_metadata(Some(str_bytes(&p.metadata)))
                            .with_error_code(p.error_code.code())
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetFetchResponse::default().with_error_code(error_code).with_topics(topics)
}

pub(super) fn list_groups(ctx: &Context, req: ListGroupsRequest) -> ListGroupsResponse {
    let Some(c) = coordinator(ctx) else {
        return ListGroupsResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
    };
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = c
        .list_groups()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.as_str().to_lowercase()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type))
                .with_group_state(str_bytes(g.state.as_str()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) fn describe_groups(ctx: &Context, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let c = coordinator(ctx);
    let ops = if req.include_authorized_operations {
        ALL_GROUP_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let groups = req
        .groups
        .into_iter()
        .map(|group_id| {
            let base = DescribedGroup::default().with_authorized_operations(ops);
            let Some(c) = &c else {
                return base
                    .with_group_id(group_id)
                    .with_error_code(COORDINATOR_NOT_AVAILABLE)
                    .with_group_state(str_bytes(GroupState::Dead.as_str()));
            };
            let d = c.describe_group(&group_id);
            // Before v6 Kafka reports an unknown group as NONE in state Dead.
            let error_code =
                if d.error_code.code() == GROUP_ID_NOT_FOUND { 0 } else { d.error_code.code() };
            base.with_group_id(group_id)
                .with_error_code(error_code)
                .with_group_state(str_bytes(d.state.as_str()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(
                                    m.group_instance_id.as_deref().map(str_bytes),
                                )
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// Each group is deleted on its own: NON_EMPTY_GROUP while it has members (as in Kafka),
/// GROUP_ID_NOT_FOUND when unknown, NOT_COORDINATOR on a node that does not coordinate it;
/// otherwise its committed offsets are gone.
pub(super) async fn delete_groups(ctx: &Context, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let error_code = match ctx.broker().coordinator_for(&group_id) {
            Err(e) => code(&e),
            Ok(c) => c.delete_group(&group_id).await.error_code.code(),
        };
        results.push(
            DeletableGroupResult::default().with_group_id(group_id).with_error_code(error_code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete (`kafka-consumer-groups --delete-offsets`): the group's committed offsets of
/// the named partitions go, except where a member subscribes to the topic
/// (GROUP_SUBSCRIBED_TO_TOPIC on that partition).
pub(super) async fn offset_delete(ctx: &Context, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let c = match ctx.broker().coordinator_for(&req.group_id) {
        Ok(c) => c,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(code(&e)),
    };
    let partitions: Vec<(String, PartitionId)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| (t.name.to_string(), PartitionId::new(p.partition_index)))
        })
        .collect();
    let r = c.delete_offsets(&req.group_id, partitions).await;
    if !r.error_code.is_ok() {
        return OffsetDeleteResponse::default().with_error_code(r.error_code.code());
    }
    // Answered in the request's order, one entry per topic as it was named.
    let mut answers = r.partitions.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error_code = answers.next().map_or(UNKNOWN_SERVER_ERROR, |a| a.2.code());
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error_code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
