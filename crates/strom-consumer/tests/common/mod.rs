//! Shared harness of the consumer-group tests: a real in-process broker (port 0, temporary
//! directory) holds the data; a second gRPC server in front of it serves the `Group` service
//! over a real `strom_coordinator::GroupCoordinator` (offsets in memory) and forwards `Admin`
//! and `Broker` calls to the broker. Consumers bootstrap from that second server, so they find
//! their coordinator there and fetch from the broker itself, as metadata names it.
//!
//! Also a poll loop that runs a consumer in its own task and records what it sees.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strom_client::Client;
use strom_consumer::{
    AssignmentStrategy, Consumer, ConsumerConfig, ConsumerConfigBuilder, ConsumerError,
    OffsetReset, RebalanceCallbacks, TopicPartition,
};
use strom_coordinator::{
    CoordinatorConfig, GroupCoordinator, MemoryOffsetsLog, OffsetStore, OffsetsLog,
};
use strom_format::{BatchBuilder, Compression, LeaderEpoch, Offset, PartitionId};
use strom_proto::v1::admin_server::AdminServer;
use strom_proto::v1::broker_server::BrokerServer as BrokerGrpcServer;
use strom_proto::v1::group_server::{Group, GroupServer};
use strom_proto::v1::*;
use strom_testkit::broker::TestBroker;
use strom_testkit::fake_broker::{Forward, listen, serve};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Generous bound on how long a test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// Node id the fake names as coordinator: not the broker's, so the client keeps both.
const COORDINATOR_NODE: i32 = 1000;

/// The Group service over a real coordinator, with knobs for failure injection.
#[derive(Clone)]
pub struct GroupService {
    pub coordinator: GroupCoordinator,
    port: u16,
    /// Answer this many coordinator requests (not FindCoordinator) with NOT_COORDINATOR.
    pub not_coordinator: Arc<AtomicUsize>,
    pub find_coordinator_calls: Arc<AtomicUsize>,
    pub join_calls: Arc<AtomicUsize>,
}

impl GroupService {
    fn moved(&self) -> bool {
        self.not_coordinator
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn code(c: strom_coordinator::ErrorCode) -> i32 {
    i32::from(c.code())
}

const NOT_COORDINATOR: i32 = ErrorCode::NotCoordinator as i32;

/// The proto's empty `group_instance_id` is a dynamic member.
fn instance(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}

#[tonic::async_trait]
impl Group for GroupService {
    async fn find_coordinator(
        &self,
        _: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        self.find_coordinator_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(FindCoordinatorResponse {
            error_code: 0,
            error_message: String::new(),
            coordinator: Some(BrokerInfo {
                node_id: COORDINATOR_NODE,
                host: "127.0.0.1".into(),
                port: i32::from(self.port),
            }),
        }))
    }

    async fn join_group(
        &self,
        request: Request<JoinGroupRequest>,
    ) -> Result<Response<JoinGroupResponse>, Status> {
        self.join_calls.fetch_add(1, Ordering::SeqCst);
        if self.moved() {
            return Ok(Response::new(JoinGroupResponse {
                error_code: NOT_COORDINATOR,
                ..Default::default()
            }));
        }
        let r = request.into_inner();
        let result = self
            .coordinator
            .join_group(strom_coordinator::JoinGroupRequest {
                group_id: r.group_id,
                session_timeout: Duration::from_millis(u64::from(r.session_timeout_ms)),
                rebalance_timeout: Duration::from_millis(u64::from(r.rebalance_timeout_ms)),
                member_id: r.member_id,
                protocol_type: r.protocol_type,
                protocols: r
                    .protocols
                    .into_iter()
                    .map(|p| strom_coordinator::JoinGroupProtocol {
                        name: p.name,
                        metadata: p.metadata,
                    })
                    .collect(),
                client_id: r.client_id,
                client_host: "127.0.0.1".into(),
                // As Kafka's broker does for JoinGroup v4+: exercises MEMBER_ID_REQUIRED.
                require_known_member_id: true,
                group_instance_id: instance(r.group_instance_id),
                supports_skip_assignment: false,
            })
            .await;
        Ok(Response::new(JoinGroupResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
            generation_id: result.generation_id,
            protocol_name: result.protocol_name,
            leader: result.leader,
            member_id: result.member_id,
            members: result
                .members
                .into_iter()
                .map(|m| JoinGroupMember { member_id: m.member_id, metadata: m.metadata })
                .collect(),
        }))
    }

    async fn sync_group(
        &self,
        request: Request<SyncGroupRequest>,
    ) -> Result<Response<SyncGroupResponse>, Status> {
        let r = request.into_inner();
        let result = self
            .coordinator
            .sync_group(strom_coordinator::SyncGroupRequest {
                group_id: r.group_id,
                generation_id: r.generation_id,
                member_id: r.member_id,
                assignments: r
                    .assignments
                    .into_iter()
                    .map(|a| strom_coordinator::SyncGroupAssignment {
                        member_id: a.member_id,
                        assignment: a.assignment,
                    })
                    .collect(),
                group_instance_id: instance(r.group_instance_id),
            })
            .await;
        Ok(Response::new(SyncGroupResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
            assignment: result.assignment,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        if self.moved() {
            return Ok(Response::new(HeartbeatResponse {
                error_code: NOT_COORDINATOR,
                error_message: String::new(),
            }));
        }
        let r = request.into_inner();
        let result = self.coordinator.heartbeat(&strom_coordinator::HeartbeatRequest {
            group_id: r.group_id,
            generation_id: r.generation_id,
            member_id: r.member_id,
            group_instance_id: instance(r.group_instance_id),
        });
        Ok(Response::new(HeartbeatResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
        }))
    }

    async fn leave_group(
        &self,
        request: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        let r = request.into_inner();
        let result = self.coordinator.leave_group(&strom_coordinator::LeaveGroupRequest {
            group_id: r.group_id,
            member_id: r.member_id,
            group_instance_id: instance(r.group_instance_id),
        });
        Ok(Response::new(LeaveGroupResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
        }))
    }

    async fn offset_commit(
        &self,
        request: Request<OffsetCommitRequest>,
    ) -> Result<Response<OffsetCommitResponse>, Status> {
        let r = request.into_inner();
        if self.moved() {
            let topics = r
                .topics
                .into_iter()
                .map(|t| OffsetCommitTopicResponse {
                    name: t.name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| OffsetCommitPartitionResponse {
                            partition: p.partition,
                            error_code: NOT_COORDINATOR,
                            error_message: String::new(),
                        })
                        .collect(),
                })
                .collect();
            return Ok(Response::new(OffsetCommitResponse { topics }));
        }
        let offsets = r
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions.into_iter().map(move |p| strom_coordinator::OffsetCommitEntry {
                    topic: name.clone(),
                    partition: PartitionId::new(p.partition),
                    offset: Offset::new(p.committed_offset),
                    leader_epoch: LeaderEpoch::UNKNOWN,
                    metadata: p.metadata,
                })
            })
            .collect();
        let results = self
            .coordinator
            .commit_offsets(strom_coordinator::OffsetCommitRequest {
                group_id: r.group_id,
                generation_id: r.generation_id,
                member_id: r.member_id,
                group_instance_id: instance(r.group_instance_id),
                offsets,
            })
            .await;
        let mut by_topic: BTreeMap<String, Vec<OffsetCommitPartitionResponse>> = BTreeMap::new();
        for p in results {
            by_topic.entry(p.topic).or_default().push(OffsetCommitPartitionResponse {
                partition: p.partition.get(),
                error_code: code(p.error_code),
                error_message: p.error_message,
            });
        }
        Ok(Response::new(OffsetCommitResponse {
            topics: by_topic
                .into_iter()
                .map(|(name, partitions)| OffsetCommitTopicResponse { name, partitions })
                .collect(),
        }))
    }

    async fn offset_fetch(
        &self,
        request: Request<OffsetFetchRequest>,
    ) -> Result<Response<OffsetFetchResponse>, Status> {
        let r = request.into_inner();
        let topics: Vec<strom_coordinator::OffsetFetchTopic> = r
            .topics
            .into_iter()
            .map(|t| strom_coordinator::OffsetFetchTopic {
                name: t.name,
                partitions: t.partitions.into_iter().map(PartitionId::new).collect(),
            })
            .collect();
        let result = self
            .coordinator
            .fetch_offsets(&r.group_id, if topics.is_empty() { None } else { Some(&topics) });
        let mut by_topic: BTreeMap<String, Vec<OffsetFetchPartitionResponse>> = BTreeMap::new();
        for p in result.partitions {
            by_topic.entry(p.topic).or_default().push(OffsetFetchPartitionResponse {
                partition: p.partition.get(),
                committed_offset: p.committed_offset.map_or(-1, Offset::get),
                metadata: p.metadata,
                error_code: code(p.error_code),
            });
        }
        Ok(Response::new(OffsetFetchResponse {
            error_code: code(result.error_code),
            error_message: result.error_message,
            topics: by_topic
                .into_iter()
                .map(|(name, partitions)| OffsetFetchTopicResponse { name, partitions })
                .collect(),
        }))
    }

    async fn list_groups(
        &self,
        _: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let groups = self
            .coordinator
            .list_groups()
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: g.state.as_str().to_owned(),
            })
            .collect();
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn describe_groups(
        &self,
        request: Request<DescribeGroupsRequest>,
    ) -> Result<Response<DescribeGroupsResponse>, Status> {
        let groups = request
            .into_inner()
            .group_ids
            .iter()
            .map(|id| {
                let d = self.coordinator.describe_group(id);
                GroupDescription {
                    group_id: d.group_id,
                    error_code: code(d.error_code),
                    error_message: d.error_message,
                    state: d.state.as_str().to_owned(),
                    protocol_type: d.protocol_type,
                    protocol: d.protocol,
                    generation_id: d.generation_id,
                    members: d
                        .members
                        .into_iter()
                        .map(|m| GroupMemberDescription {
                            member_id: m.member_id,
                            client_id: m.client_id,
                            metadata: m.metadata,
                            assignment: m.assignment,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(DescribeGroupsResponse { groups }))
    }
}

/// A broker, the group front end, and a client of the broker for producing.
pub struct Cluster {
    /// The real broker behind the front end (its data dir lives as long as it).
    pub broker: TestBroker,
    pub client: Client,
    pub group: GroupService,
    /// Address consumers bootstrap from (the front end).
    pub bootstrap: String,
}

impl Cluster {
    /// Starts with the coordinator's default settings, except a short minimum session timeout.
    pub async fn start() -> Cluster {
        Cluster::start_with(CoordinatorConfig {
            min_session_timeout: Duration::from_secs(1),
            ..CoordinatorConfig::default()
        })
        .await
    }

    pub async fn start_with(coordinator_config: CoordinatorConfig) -> Cluster {
        // RUST_LOG=strom_consumer=debug shows the group protocol as the tests run it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let broker = TestBroker::start().await;
        let forward = Forward::connect(broker.local_addr()).await;

        let (listener, addr) = listen().await;
        let port = addr.port();
        let logs: Vec<Arc<dyn OffsetsLog>> = vec![Arc::new(MemoryOffsetsLog::default())];
        let store = Arc::new(OffsetStore::load(logs).unwrap());
        let group = GroupService {
            coordinator: GroupCoordinator::new(coordinator_config, store),
            port,
            not_coordinator: Arc::default(),
            find_coordinator_calls: Arc::default(),
            join_calls: Arc::default(),
        };
        let router = tonic::transport::Server::builder()
            .add_service(GroupServer::new(group.clone()))
            .add_service(AdminServer::new(forward.clone()))
            .add_service(BrokerGrpcServer::new(forward));
        serve(listener, router);

        let client = broker.client().await;
        Cluster { broker, client, group, bootstrap: format!("127.0.0.1:{port}") }
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.client.create_topic(topic, partitions, 1, HashMap::new()).await.unwrap();
    }

    /// A group consumer's settings, tuned for quick rebalances.
    pub fn config(&self, group: &str) -> ConsumerConfig {
        self.builder(group).build().unwrap()
    }

    /// The settings of [`Cluster::config`], to adjust before building.
    pub fn builder(&self, group: &str) -> ConsumerConfigBuilder {
        ConsumerConfig::builder(self.bootstrap.clone())
            .group_id(group)
            .auto_offset_reset(OffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(50))
            .retry_backoff(Duration::from_millis(20))
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(100))
            .max_poll_interval(Duration::from_secs(20))
    }

    pub async fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(config).await.unwrap()
    }

    /// Appends records "<topic>/<partition>/<n>" for n in `from..to` to a partition.
    pub async fn produce(&self, topic: &str, partition: i32, from: i64, to: i64) {
        let mut b = BatchBuilder::new(Compression::None);
        for n in from..to {
            let value = format!("{topic}/{partition}/{n}");
            b.append(1_700_000_000_000 + n, None, Some(value.as_bytes()), &[]);
        }
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            topics: vec![TopicProduceData {
                name: topic.into(),
                partitions: vec![PartitionProduceData { partition, records: b.build().unwrap() }],
            }],
        };
        let mut broker = self.client.broker_for(topic, PartitionId::new(partition)).await.unwrap();
        let response = broker.produce(request).await.unwrap().into_inner();
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "{}", p.error_message);
    }
}

pub fn tp(topic: &str, p: i32) -> TopicPartition {
    TopicPartition::new(topic, PartitionId::new(p))
}

pub fn cooperative() -> Vec<AssignmentStrategy> {
    vec![AssignmentStrategy::CooperativeSticky]
}

/// A rebalance callback, as the listener reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
}

/// What a running consumer has seen so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// (partition, offset, value) of every record, in the order polled.
    pub records: Vec<(TopicPartition, i64, String)>,
    pub assignment: Vec<TopicPartition>,
    pub generation: i32,
    pub events: Vec<Event>,
    pub errors: Vec<String>,
}

/// A consumer polling in its own task until stopped.
pub struct Running {
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// While set, the loop does not call poll (simulates slow processing).
    pub paused: Arc<AtomicBool>,
    task: JoinHandle<Consumer>,
}

impl Running {
    /// Subscribes `consumer` to `topics` with a recording listener and polls it in a task.
    pub fn subscribe(mut consumer: Consumer, topics: &[&str]) -> Running {
        let seen = Arc::new(Mutex::new(Seen { generation: -1, ..Seen::default() }));
        let (a, r, l) = (Arc::clone(&seen), Arc::clone(&seen), Arc::clone(&seen));
        let listener = RebalanceCallbacks::new()
            .on_assigned(move |tps| a.lock().unwrap().events.push(Event::Assigned(tps.to_vec())))
            .on_revoked(move |tps| r.lock().unwrap().events.push(Event::Revoked(tps.to_vec())))
            .on_lost(move |tps| l.lock().unwrap().events.push(Event::Lost(tps.to_vec())));
        consumer
            .subscribe(topics.iter().map(|t| (*t).to_owned()).collect(), Some(Box::new(listener)))
            .unwrap();
        Running::spawn(consumer, seen)
    }

    /// Polls an already set up consumer (manual assignment, or subscribed) in a task.
    pub fn spawn(mut consumer: Consumer, seen: Arc<Mutex<Seen>>) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let (stop2, paused2, seen2) = (Arc::clone(&stop), Arc::clone(&paused), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                if paused2.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let polled = consumer.poll(Duration::from_millis(50)).await;
                let mut seen = seen2.lock().unwrap();
                match polled {
                    Ok(records) => {
                        for r in records {
                            let value =
                                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
                            seen.records.push((
                                TopicPartition::new(&*r.topic, r.partition),
                                r.offset.get(),
                                value,
                            ));
                        }
                    }
                    Err(e) => seen.errors.push(e.to_string()),
                }
                seen.assignment = consumer.assignment().to_vec();
                seen.generation = consumer.group_metadata().map_or(-1, |m| m.generation_id);
            }
            consumer
        });
        Running { seen, stop, paused, task }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Stops polling and hands the consumer back.
    pub async fn stop(self) -> Consumer {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Waits until `done` holds for the members' views, or fails the test.
pub async fn wait_for(members: &[&Running], what: &str, done: impl Fn(&[Seen]) -> bool) {
    let give_up = Instant::now() + PATIENCE;
    loop {
        let seen: Vec<Seen> = members.iter().map(|m| m.seen()).collect();
        if done(&seen) {
            return;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The members agree on one generation and their assignments are disjoint and cover `all`.
pub fn balanced(seen: &[Seen], all: &[TopicPartition]) -> bool {
    let generation = seen.first().map_or(-1, |s| s.generation);
    if generation < 0 || seen.iter().any(|s| s.generation != generation) {
        return false;
    }
    let mut union = BTreeSet::new();
    for s in seen {
        for tp in &s.assignment {
            if !union.insert(tp.clone()) {
                return false;
            }
        }
    }
    union == all.iter().cloned().collect::<BTreeSet<_>>()
}

/// Polls `consumer` until it has returned `want` records (failing the test on errors).
pub async fn poll_records(
    consumer: &mut Consumer,
    want: usize,
) -> Vec<(TopicPartition, i64, String)> {
    let mut out = Vec::new();
    let give_up = Instant::now() + PATIENCE;
    while out.len() < want {
        assert!(Instant::now() < give_up, "only {} of {want} records: {out:?}", out.len());
        let records: Result<_, ConsumerError> = consumer.poll(Duration::from_millis(100)).await;
        for r in records.unwrap() {
            let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            out.push((TopicPartition::new(&*r.topic, r.partition), r.offset.get(), value));
        }
    }
    out
}
