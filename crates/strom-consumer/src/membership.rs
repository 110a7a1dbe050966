//! The background side of group membership (Kafka's classic protocol): one task per
//! generation that joins the group — JoinGroup, the leader's assignment, SyncGroup — and then
//! heartbeats until the generation ends.
//!
//! The task never touches the consumer: it reports the assignment it got and why its
//! generation ended through [`Shared`], and rings [`Shared::wake`] so a waiting
//! [`Consumer::poll`](crate::Consumer::poll) acts at once. Everything the application sees
//! (callbacks, positions, commits) happens in `poll`, on the application's task. Heartbeats
//! keep the session alive between polls, but only for `max_poll_interval`: a consumer that
//! stops polling for longer leaves the group so its partitions move on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strom_client::ClientError;
use strom_client::ErrorCode;
use strom_coordinator::assignor::{self, MemberSubscription};
use strom_coordinator::consumer_protocol::{
    Assignment, Subscription, TopicPartitions, group_by_topic,
};
use strom_format::PartitionId;
use strom_proto::v1::{
    HeartbeatRequest, JoinGroupMember, JoinGroupProtocol, JoinGroupRequest, SyncGroupAssignment,
    SyncGroupRequest,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::coordinator::GroupRpc;
use crate::{AssignmentStrategy, ConsumerError, TopicPartition};

/// ConsumerProtocol subscription version sent: v2 carries the owned partitions (cooperative
/// rebalancing) and the generation they were assigned in, which lets the sticky assignor
/// settle conflicting ownership claims after a member was fenced.
const SUBSCRIPTION_VERSION: i16 = 2;
/// Assignment version sent; every version shares one layout, 0 is what every client reads.
const ASSIGNMENT_VERSION: i16 = 0;
/// Most distinct topics a leader looks up for one assignment.
const MAX_ASSIGNED_TOPICS: usize = 10_000;

/// The group settings the membership task works with, from the consumer's configuration.
#[derive(Debug, Clone)]
pub(crate) struct GroupSettings {
    pub(crate) client_id: String,
    pub(crate) session_timeout: Duration,
    /// `max_poll_interval`: the rebalance timeout and the longest gap between polls.
    pub(crate) rebalance_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) strategies: Vec<AssignmentStrategy>,
    /// KIP-345 `group.instance.id`; `None` for a dynamic member.
    pub(crate) group_instance_id: Option<String>,
}

impl GroupSettings {
    /// The instance id as the proto carries it (empty: dynamic).
    pub(crate) fn instance_id(&self) -> String {
        self.group_instance_id.clone().unwrap_or_default()
    }

    /// A static member (KIP-345) never sends LeaveGroup on its own: only its session expiry
    /// moves its partitions, so a restart within the session timeout rebalances nothing.
    pub(crate) fn is_static(&self) -> bool {
        self.group_instance_id.is_some()
    }

    /// Cooperative rebalancing only when every strategy offered supports it (Kafka's rule):
    /// then the consumer keeps its partitions while it rejoins.
    pub(crate) fn cooperative(&self) -> bool {
        self.strategies.iter().all(|s| *s == AssignmentStrategy::CooperativeSticky)
    }
}

/// What the consumer asks the group for.
#[derive(Debug, Clone)]
pub(crate) struct JoinPlan {
    pub(crate) topics: Vec<String>,
    pub(crate) owned: Vec<TopicPartition>,
    pub(crate) owned_generation: i32,
    pub(crate) member_id: String,
}

/// A completed join: this member's place in a new generation.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) protocol: String,
    /// Partition counts of every topic any member subscribes to (0: does not exist) as the
    /// assignment saw them; only the leader has them, and checks them for changes.
    pub(crate) partition_counts: Option<BTreeMap<String, i32>>,
    /// Sorted, without duplicates.
    pub(crate) assignment: Vec<TopicPartition>,
}

/// Why a membership task ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The group is rebalancing (REBALANCE_IN_PROGRESS): rejoin, orderly.
    Rejoin,
    /// UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION: this member's partitions are gone.
    Fenced(ErrorCode),
    /// No heartbeat got through for a whole session: assume the coordinator dropped us.
    SessionLost,
    /// `poll` was not called within `max_poll_interval`; the task left the group.
    PollTimeout,
    /// Joining failed in a way retrying will not fix.
    Failed(ConsumerError),
}

/// What the membership task and the consumer's poll share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<SharedState>,
    /// Rung whenever there is something new for `poll`.
    pub(crate) wake: Notify,
}

#[derive(Debug)]
struct SharedState {
    last_poll: Instant,
    member_id: String,
    joined: Option<Joined>,
    ended: Option<Ended>,
}

impl Shared {
    pub(crate) fn new(member_id: String) -> Self {
        Shared {
            state: Mutex::new(SharedState {
                last_poll: Instant::now(),
                member_id,
                joined: None,
                ended: None,
            }),
            wake: Notify::new(),
        }
    }

    /// Records that the application polled.
    pub(crate) fn touch(&self) {
        self.state.lock().last_poll = Instant::now();
    }

    fn since_last_poll(&self) -> Duration {
        self.state.lock().last_poll.elapsed()
    }

    /// The member id as the coordinator last named it.
    pub(crate) fn member_id(&self) -> String {
        self.state.lock().member_id.clone()
    }

    pub(crate) fn set_member_id(&self, member_id: &str) {
        member_id.clone_into(&mut self.state.lock().member_id);
    }

    /// Takes what the task reported since the last call.
    pub(crate) fn take(&self) -> (Option<Joined>, Option<Ended>) {
        let mut state = self.state.lock();
        (state.joined.take(), state.ended.take())
    }

    fn publish_joined(&self, joined: Joined) {
        self.state.lock().joined = Some(joined);
        self.wake.notify_one();
    }

    fn end(&self, ended: Ended) {
        self.state.lock().ended = Some(ended);
        self.wake.notify_one();
    }
}

/// The membership task: joins, then heartbeats until the generation ends.
pub(crate) async fn run(
    rpc: GroupRpc,
    settings: Arc<GroupSettings>,
    plan: JoinPlan,
    shared: Arc<Shared>,
) {
    let ended = match join(&rpc, &settings, plan, &shared).await {
        Ok((generation, member_id)) => {
            heartbeat(&rpc, &settings, generation, &member_id, &shared).await
        }
        Err(e) => Ended::Failed(e),
    };
    debug!(group = %rpc.group_id(), ?ended, "membership task ended");
    shared.end(ended);
}

/// JoinGroup and SyncGroup until this member has an assignment; returns its generation and
/// member id. Retriable failures are retried (with a backoff) for as long as it takes.
async fn join(
    rpc: &GroupRpc,
    settings: &GroupSettings,
    plan: JoinPlan,
    shared: &Shared,
) -> Result<(i32, String), ConsumerError> {
    let owned: Vec<(String, i32)> =
        plan.owned.iter().map(|tp| (tp.topic.clone(), tp.partition.get())).collect();
    let subscription = Subscription {
        topics: plan.topics.clone(),
        user_data: None,
        owned_partitions: group_by_topic(&owned),
        generation_id: plan.owned_generation,
        rack_id: None,
    }
    .encode(SUBSCRIPTION_VERSION)
    .map_err(|e| ConsumerError::InvalidArgument(format!("subscription: {e}")))?;
    let protocols: Vec<JoinGroupProtocol> = settings
        .strategies
        .iter()
        .map(|s| JoinGroupProtocol { name: s.name().to_owned(), metadata: subscription.clone() })
        .collect();
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let mut member_id = plan.member_id;
    let mut failures = 0u32;
    let mut retry_at_once = true;
    loop {
        if failures > 0 {
            tokio::time::sleep(rpc.backoff(failures)).await;
        }
        failures = failures.saturating_add(1);
        let request = JoinGroupRequest {
            group_id: rpc.group_id().to_owned(),
            session_timeout_ms: millis(settings.session_timeout),
            rebalance_timeout_ms: millis(settings.rebalance_timeout),
            member_id: member_id.clone(),
            protocol_type: "consumer".to_owned(),
            protocols: protocols.clone(),
            client_id: settings.client_id.clone(),
            supports_member_id_required: true,
            group_instance_id: settings.instance_id(),
        };
        let joined = match rpc.join(request, settings.rebalance_timeout).await {
            Ok(r) => r,
            Err(e) => {
                retriable_or_fail(rpc, e, "JoinGroup")?;
                continue;
            }
        };
        match code(joined.error_code) {
            ErrorCode::None => {}
            // KIP-394: the coordinator names our id first; rejoin with it straight away.
            ErrorCode::MemberIdRequired if retry_at_once => {
                retry_at_once = false;
                failures = 0;
                member_id = joined.member_id;
                shared.set_member_id(&member_id);
                continue;
            }
            ErrorCode::UnknownMemberId => {
                info!(group = %rpc.group_id(), member = %member_id,
                    "the coordinator does not know this member; joining afresh");
                member_id.clear();
                shared.set_member_id("");
                continue;
            }
            ErrorCode::MemberIdRequired
            | ErrorCode::RebalanceInProgress
            | ErrorCode::IllegalGeneration => continue,
            code => return Err(group_error(code, joined.error_message)),
        }
        member_id.clone_from(&joined.member_id);
        shared.set_member_id(&member_id);
        let generation = joined.generation_id;
        let leader = joined.leader == member_id;
        info!(group = %rpc.group_id(), member = %member_id, generation, leader,
            protocol = %joined.protocol_name, "joined the group");
        let (assignments, partition_counts) = if leader {
            let (assignments, counts) =
                leader_assign(rpc, &joined.protocol_name, &joined.members).await?;
            (assignments, Some(counts))
        } else {
            (Vec::new(), None)
        };
        let request = SyncGroupRequest {
            group_id: rpc.group_id().to_owned(),
            generation_id: generation,
            member_id: member_id.clone(),
            assignments,
            group_instance_id: settings.instance_id(),
        };
        let synced = match rpc.sync(request, settings.rebalance_timeout).await {
            Ok(r) => r,
            Err(e) => {
                retriable_or_fail(rpc, e, "SyncGroup")?;
                continue;
            }
        };
        match code(synced.error_code) {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => continue,
            ErrorCode::UnknownMemberId => {
                member_id.clear();
                shared.set_member_id("");
                continue;
            }
            code => return Err(group_error(code, synced.error_message)),
        }
        let assignment = Assignment::decode(&synced.assignment).map_err(|e| {
            ConsumerError::InvalidResponse(format!("the group leader's assignment: {e}"))
        })?;
        let assignment = to_partitions(&assignment.partitions);
        info!(group = %rpc.group_id(), generation, partitions = assignment.len(),
            "received the assignment");
        shared.publish_joined(Joined {
            generation,
            member_id: member_id.clone(),
            protocol: joined.protocol_name,
            partition_counts,
            assignment,
        });
        return Ok((generation, member_id));
    }
}

/// Heartbeats every `heartbeat_interval` until the generation ends; returns why it did.
async fn heartbeat(
    rpc: &GroupRpc,
    settings: &GroupSettings,
    generation: i32,
    member_id: &str,
    shared: &Shared,
) -> Ended {
    let interval = settings.heartbeat_interval;
    let limit = rpc.request_timeout().min(settings.session_timeout);
    let mut last_ok = Instant::now();
    let mut failures = 0u32;
    let mut next = Instant::now() + interval;
    loop {
        tokio::time::sleep_until(next).await;
        if shared.since_last_poll() > settings.rebalance_timeout {
            warn!(group = %rpc.group_id(), member = %member_id,
                max_poll_interval = ?settings.rebalance_timeout,
                "poll was not called within max_poll_interval; leaving the group");
            if !settings.is_static()
                && let Err(e) = rpc.leave(member_id).await
            {
                debug!(group = %rpc.group_id(), error = %e, "leaving the group failed");
            }
            return Ended::PollTimeout;
        }
        let request = HeartbeatRequest {
            group_id: rpc.group_id().to_owned(),
            generation_id: generation,
            member_id: member_id.to_owned(),
            group_instance_id: settings.instance_id(),
        };
        let now = Instant::now();
        match rpc.heartbeat(request, limit).await {
            Ok(response) => match code(response.error_code) {
                ErrorCode::None => {
                    last_ok = Instant::now();
                    failures = 0;
                    next = now + interval;
                }
                ErrorCode::RebalanceInProgress => return Ended::Rejoin,
                code @ (ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId) => {
                    return Ended::Fenced(code);
                }
                // KIP-345: a newer consumer with our group.instance.id took our place.
                ErrorCode::FencedInstanceId => {
                    return Ended::Failed(group_error(
                        ErrorCode::FencedInstanceId,
                        response.error_message,
                    ));
                }
                code => {
                    warn!(group = %rpc.group_id(), ?code, message = %response.error_message,
                        "unexpected heartbeat error");
                    failures = failures.saturating_add(1);
                    next = now + rpc.backoff(failures).min(interval);
                }
            },
            Err(e) => {
                debug!(group = %rpc.group_id(), error = %e, "heartbeat failed");
                failures = failures.saturating_add(1);
                next = Instant::now() + rpc.backoff(failures).min(interval);
            }
        }
        if last_ok.elapsed() >= settings.session_timeout {
            warn!(group = %rpc.group_id(), member = %member_id,
                "no heartbeat got through for a whole session; assuming the partitions lost");
            return Ended::SessionLost;
        }
    }
}

/// The leader's part: runs the group's chosen assignor over every member's subscription and
/// the partition counts of their topics. Returns the encoded assignments and the counts.
async fn leader_assign(
    rpc: &GroupRpc,
    protocol: &str,
    members: &[JoinGroupMember],
) -> Result<(Vec<SyncGroupAssignment>, BTreeMap<String, i32>), ConsumerError> {
    let Some(assignor) = assignor::by_name(protocol) else {
        return Err(group_error(
            ErrorCode::InconsistentGroupProtocol,
            format!("the group chose assignor {protocol:?}, which this consumer does not have"),
        ));
    };
    let subscriptions: Vec<MemberSubscription> = members
        .iter()
        .map(|m| match Subscription::decode(&m.metadata) {
            Ok(sub) => MemberSubscription::from_subscription(m.member_id.clone(), &sub),
            Err(e) => {
                warn!(member = %m.member_id, error = %e,
                    "undecodable subscription; the member gets nothing");
                MemberSubscription { member_id: m.member_id.clone(), ..Default::default() }
            }
        })
        .collect();
    let topics: BTreeSet<&str> =
        subscriptions.iter().flat_map(|s| s.topics.iter().map(String::as_str)).collect();
    if topics.len() > MAX_ASSIGNED_TOPICS {
        warn!(
            topics = topics.len(),
            limit = MAX_ASSIGNED_TOPICS,
            "the group subscribes to too many topics; assigning only the first"
        );
    }
    let mut counts = BTreeMap::new();
    for topic in topics.into_iter().take(MAX_ASSIGNED_TOPICS) {
        counts.insert(topic.to_owned(), partition_count(rpc, topic).await);
    }
    let existing: BTreeMap<String, i32> =
        counts.iter().filter(|(_, n)| **n > 0).map(|(t, n)| (t.clone(), *n)).collect();
    let plan = assignor.assign(&subscriptions, &existing);
    let mut assignments = Vec::with_capacity(plan.len());
    for (member_id, partitions) in plan {
        let encoded = Assignment { partitions: group_by_topic(&partitions), user_data: None }
            .encode(ASSIGNMENT_VERSION)
            .map_err(|e| ConsumerError::InvalidArgument(format!("assignment: {e}")))?;
        assignments.push(SyncGroupAssignment { member_id, assignment: encoded });
    }
    debug!(group = %rpc.group_id(), %protocol, members = members.len(), "computed the assignment");
    Ok((assignments, counts))
}

/// A topic's partition count from fresh metadata; 0 when it does not exist or cannot be read
/// now (the leader's metadata check notices when that changes).
pub(crate) async fn partition_count(rpc: &GroupRpc, topic: &str) -> i32 {
    match rpc.client().refresh_metadata(topic).await {
        Ok(info) => i32::try_from(info.num_partitions()).unwrap_or(i32::MAX),
        Err(ClientError::UnknownTopic(_)) => 0,
        Err(e) => {
            warn!(%topic, error = %e, "no metadata for a subscribed topic; not assigning it now");
            0
        }
    }
}

fn to_partitions(topics: &[TopicPartitions]) -> Vec<TopicPartition> {
    let set: BTreeSet<TopicPartition> = topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| TopicPartition::new(t.topic.clone(), PartitionId::new(*p)))
        })
        .collect();
    set.into_iter().collect()
}

fn code(code: i32) -> ErrorCode {
    ErrorCode::from_i32(code)
}

fn group_error(code: ErrorCode, message: impl Into<String>) -> ConsumerError {
    ConsumerError::Group { code, message: message.into() }
}

/// `Ok` for a failure worth retrying (logged), the error to report otherwise.
fn retriable_or_fail(rpc: &GroupRpc, e: ClientError, what: &str) -> Result<(), ConsumerError> {
    if e.is_retriable() {
        debug!(group = %rpc.group_id(), error = %e, "{what} failed; retrying");
        Ok(())
    } else {
        Err(ConsumerError::Client(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooperative_only_with_sticky_alone() {
        let settings = |strategies| GroupSettings {
            client_id: "c".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            strategies,
            group_instance_id: None,
        };
        assert!(settings(vec![AssignmentStrategy::CooperativeSticky]).cooperative());
        assert!(
            !settings(vec![AssignmentStrategy::Range, AssignmentStrategy::CooperativeSticky])
                .cooperative()
        );
    }

    #[test]
    fn assignments_become_sorted_unique_partitions() {
        let topics = vec![
            TopicPartitions { topic: "b".into(), partitions: vec![1, 0, 1] },
            TopicPartitions { topic: "a".into(), partitions: vec![2] },
        ];
        let tps = to_partitions(&topics);
        let names: Vec<String> = tps.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a-2", "b-0", "b-1"]);
    }
}
