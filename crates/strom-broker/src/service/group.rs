//! The `strom.v1.Group` service: consumer groups and committed offsets, translated onto the
//! broker's [`GroupCoordinator`]. Coordinator error codes carry Kafka's numbers, as the proto
//! enum does, so they map by value.

use std::sync::Arc;
use std::time::Duration;

use strom_coordinator::{
    self as coord, GroupCoordinator, OffsetCommitEntry, OffsetCommitPartitionResult,
};
use strom_format::{LeaderEpoch, Offset, PartitionId};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use tonic::{Request, Response, Status};

use crate::broker::Broker;

/// Most groups one DescribeGroups may name.
const MAX_GROUPS_PER_DESCRIBE: usize = 1000;
/// Most partitions one OffsetFetch may name.
const MAX_PARTITIONS_PER_FETCH: usize = 100_000;

/// Serves the group APIs of one [`Broker`], which is the coordinator of every group.
#[derive(Debug, Clone)]
pub(crate) struct GroupService {
    broker: Arc<Broker>,
}

impl GroupService {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        GroupService { broker }
    }

    /// The coordinator of `group_id` if this node is it; else NOT_COORDINATOR (another node
    /// is) or COORDINATOR_NOT_AVAILABLE (none is, yet), as a code.
    fn coordinator(&self, group_id: &str) -> Result<GroupCoordinator, (i32, String)> {
        self.broker.coordinator_for(group_id).map_err(|e| (e.code as i32, e.message))
    }

    /// This node's coordinator, whichever groups it serves (for listings).
    fn any_coordinator(&self) -> Result<GroupCoordinator, (i32, String)> {
        self.broker.group_coordinator().ok_or_else(|| {
            (
                ErrorCode::CoordinatorNotAvailable as i32,
                "no group coordinator on this broker".into(),
            )
        })
    }
}

/// The proto code with the coordinator code's number; UNKNOWN_SERVER_ERROR for a number the
/// proto lacks (which would be a coordinator change the proto missed).
fn code(c: coord::ErrorCode) -> i32 {
    let n = i32::from(c.code());
    match ErrorCode::try_from(n) {
        Ok(_) => n,
        Err(_) => {
            tracing::warn!(code = n, name = c.name(), "coordinator error code not in the proto");
            ErrorCode::UnknownServerError as i32
        }
    }
}

fn timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

#[tonic::async_trait]
impl pb::group_server::Group for GroupService {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        // The leader of the group's __consumer_offsets partition coordinates it.
        let group_id = request.into_inner().group_id;
        let response = match self.broker.find_coordinator(&group_id) {
            Ok(b) => pb::FindCoordinatorResponse {
                error_code: ErrorCode::None as i32,
                error_message: String::new(),
                coordinator: Some(pb::BrokerInfo {
                    node_id: b.node_id,
                    host: b.host,
                    port: b.port,
                }),
            },
            Err(e) => pb::FindCoordinatorResponse {
                error_code: e.code as i32,
                error_message: e.message,
                coordinator: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        let client_host = request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let req = request.into_inner();
        let coordinator = match self.coordinator(&req.group_id) {
            Ok(c) => c,
            Err((error_code, error_message)) => {
                return Ok(Response::new(pb::JoinGroupResponse {
                    error_code,
                    error_message,
                    generation_id: -1,
                    member_id: req.member_id,
                    ..Default::default()
                }));
            }
        };
        let result = coordinator
            .join_group(coord::JoinGroupRequest {
                group_id: req.group_id,
                session_timeout: timeout(req.session_timeout_ms),
                rebalance_timeout: timeout(req.rebalance_timeout_ms),
                member_id: req.member_id,
                protocol_type: req.protocol_type,
                protocols: req
                    .protocols
                    .into_iter()
                    .map(|p| coord::JoinGroupProtocol { name: p.name, metadata: p.metadata })
                    .collect(),
                client_id: req.client_id,
                client_host,
                // KIP-394 for clients that say they rejoin with the id they are given (ours
                // do); older ones get their id with the join that creates it.
                require_known_member_id: req.supports_member_id_required,
                group_instance_id: instance(req.group_instance_id),
                // The gRPC JoinGroup has no skip_assignment: a rejoining static leader is told
                // another id leads, as pre-v9 Kafka clients are, so it does not assign.
                supports_skip_assignment: false,
            })
            .await;
        Ok(Response::new(pb::JoinGroupResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
            generation_id: result.generation_id,
            protocol_name: result.protocol_name,
            leader: result.leader,
            member_id: result.member_id,
            members: result
                .members
                .into_iter()
                .map(|m| pb::JoinGroupMember { member_id: m.member_id, metadata: m.metadata })
                .collect(),
        }))
    }

    async fn sync_group(
        &self,
        request: Request<pb::SyncGroupRequest>,
    ) -> Result<Response<pb::SyncGroupResponse>, Status> {
        let req = request.into_inner();
        let coordinator = match self.coordinator(&req.group_id) {
            Ok(c) => c,
            Err((error_code, error_message)) => {
                return Ok(Response::new(pb::SyncGroupResponse {
                    error_code,
                    error_message,
                    ..Default::default()
                }));
            }
        };
        let result = coordinator
            .sync_group(coord::SyncGroupRequest {
                group_id: req.group_id,
                generation_id: req.generation_id,
                member_id: req.member_id,
                assignments: req
                    .assignments
                    .into_iter()
                    .map(|a| coord::SyncGroupAssignment {
                        member_id: a.member_id,
                        assignment: a.assignment,
                    })
                    .collect(),
                group_instance_id: instance(req.group_instance_id),
            })
            .await;
        Ok(Response::new(pb::SyncGroupResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
            assignment: result.assignment,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let (error_code, error_message) = match self.coordinator(&req.group_id) {
            Ok(c) => {
                let r = c.heartbeat(&coord::HeartbeatRequest {
                    group_id: req.group_id,
                    generation_id: req.generation_id,
                    member_id: req.member_id,
                    group_instance_id: instance(req.group_instance_id),
                });
                (code(r.error_code), r.error_message)
            }
            Err(e) => e,
        };
        Ok(Response::new(pb::HeartbeatResponse { error_code, error_message }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let req = request.into_inner();
        let (error_code, error_message) = match self.coordinator(&req.group_id) {
            Ok(c) => {
                let r = c.leave_group(&coord::LeaveGroupRequest {
                    group_id: req.group_id,
                    member_id: req.member_id,
                    group_instance_id: instance(req.group_instance_id),
                });
                (code(r.error_code), r.error_message)
            }
            Err(e) => e,
        };
        Ok(Response::new(pb::LeaveGroupResponse { error_code, error_message }))
    }

    async fn offset_commit(
        &self,
        request: Request<pb::OffsetCommitRequest>,
    ) -> Result<Response<pb::OffsetCommitResponse>, Status> {
        let req = request.into_inner();
        // Every partition gets an answer in request order: `Some` for those refused here,
        // `None` for those the coordinator answers, in the same order it was given them.
        let mut answers: Vec<(String, i32, Option<(i32, String)>)> = Vec::new();
        let mut entries = Vec::new();
        let coordinator = self.coordinator(&req.group_id);
        for topic in req.topics {
            for p in topic.partitions {
                let refused = match &coordinator {
                    Err(e) => Some(e.clone()),
                    Ok(_) => match self.broker.partition_exists(&topic.name, p.partition) {
                        Err(e) => Some((e.code as i32, e.message)),
                        Ok(_) => None,
                    },
                };
                if refused.is_none() {
                    entries.push(OffsetCommitEntry {
                        topic: topic.name.clone(),
                        partition: PartitionId::new(p.partition),
                        offset: Offset::new(p.committed_offset),
                        leader_epoch: LeaderEpoch::UNKNOWN,
                        metadata: p.metadata,
                    });
                }
                answers.push((topic.name.clone(), p.partition, refused));
            }
        }
        let mut committed: std::vec::IntoIter<OffsetCommitPartitionResult> = match coordinator {
            Ok(c) if !entries.is_empty() => c
                .commit_offsets(coord::OffsetCommitRequest {
                    group_id: req.group_id,
                    generation_id: req.generation_id,
                    member_id: req.member_id,
                    group_instance_id: instance(req.group_instance_id),
                    offsets: entries,
                })
                .await
                .into_iter(),
            _ => Vec::new().into_iter(),
        };
        let mut topics: Vec<pb::OffsetCommitTopicResponse> = Vec::new();
        for (name, partition, refused) in answers {
            let (error_code, error_message) = match refused {
                Some(e) => e,
                None => match committed.next() {
                    Some(r) => (code(r.error_code), r.error_message),
                    None => (
                        ErrorCode::UnknownServerError as i32,
                        "the coordinator did not answer for this partition".into(),
                    ),
                },
            };
            let answer = pb::OffsetCommitPartitionResponse { partition, error_code, error_message };
            match topics.last_mut() {
                Some(t) if t.name == name => t.partitions.push(answer),
                _ => topics.push(pb::OffsetCommitTopicResponse { name, partitions: vec![answer] }),
            }
        }
        Ok(Response::new(pb::OffsetCommitResponse { topics }))
    }

    async fn offset_fetch(
        &self,
        request: Request<pb::OffsetFetchRequest>,
    ) -> Result<Response<pb::OffsetFetchResponse>, Status> {
        let req = request.into_inner();
        let coordinator = match self.coordinator(&req.group_id) {
            Ok(c) => c,
            Err((error_code, error_message)) => {
                return Ok(Response::new(pb::OffsetFetchResponse {
                    error_code,
                    error_message,
                    topics: Vec::new(),
                }));
            }
        };
        let asked: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
        if asked > MAX_PARTITIONS_PER_FETCH {
            return Err(Status::invalid_argument(format!(
                "OffsetFetch names {asked} partitions; at most {MAX_PARTITIONS_PER_FETCH} allowed"
            )));
        }
        let topics: Option<Vec<coord::OffsetFetchTopic>> = (!req.topics.is_empty()).then(|| {
            req.topics
                .into_iter()
                .map(|t| coord::OffsetFetchTopic {
                    name: t.name,
                    partitions: t.partitions.into_iter().map(PartitionId::new).collect(),
                })
                .collect()
        });
        let result = coordinator.fetch_offsets(&req.group_id, topics.as_deref());
        let mut out: Vec<pb::OffsetFetchTopicResponse> = Vec::new();
        for p in result.partitions {
            let answer = pb::OffsetFetchPartitionResponse {
                partition: p.partition.get(),
                committed_offset: p.committed_offset.map_or(-1, Offset::get),
                metadata: p.metadata,
                error_code: code(p.error_code),
            };
            match out.last_mut() {
                Some(t) if t.name == p.topic => t.partitions.push(answer),
                _ => out
                    .push(pb::OffsetFetchTopicResponse { name: p.topic, partitions: vec![answer] }),
            }
        }
        Ok(Response::new(pb::OffsetFetchResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
            topics: out,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let groups = match self.any_coordinator() {
            Ok(c) => c
                .list_groups()
                .into_iter()
                .map(|g| pb::GroupListing {
                    group_id: g.group_id,
                    protocol_type: g.protocol_type,
                    state: g.state.as_str().to_string(),
                })
                .collect(),
            Err((_, message)) => return Err(Status::unavailable(message)),
        };
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_groups(
        &self,
        request: Request<pb::DescribeGroupsRequest>,
    ) -> Result<Response<pb::DescribeGroupsResponse>, Status> {
        let req = request.into_inner();
        if req.group_ids.len() > MAX_GROUPS_PER_DESCRIBE {
            return Err(Status::invalid_argument(format!(
                "DescribeGroups names {} groups; at most {MAX_GROUPS_PER_DESCRIBE} allowed",
                req.group_ids.len()
            )));
        }
        let groups = req
            .group_ids
            .into_iter()
            .map(|group_id| match &self.coordinator(&group_id) {
                Err((error_code, error_message)) => pb::GroupDescription {
                    group_id,
                    error_code: *error_code,
                    error_message: error_message.clone(),
                    state: "Dead".into(),
                    ..Default::default()
                },
                Ok(c) => {
                    let d = c.describe_group(&group_id);
                    pb::GroupDescription {
                        group_id: d.group_id,
                        error_code: code(d.error_code),
                        error_message: d.error_message,
                        state: d.state.as_str().to_string(),
                        protocol_type: d.protocol_type,
                        protocol: d.protocol,
                        generation_id: d.generation_id,
                        members: d
                            .members
                            .into_iter()
                            .map(|m| pb::GroupMemberDescription {
                                member_id: m.member_id,
                                client_id: m.client_id,
                                metadata: m.metadata,
                                assignment: m.assignment,
                            })
                            .collect(),
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupsResponse { groups }))
    }
}

/// KIP-345: the proto's empty `group_instance_id` means a dynamic member.
fn instance(group_instance_id: String) -> Option<String> {
    (!group_instance_id.is_empty()).then_some(group_instance_id)
}
