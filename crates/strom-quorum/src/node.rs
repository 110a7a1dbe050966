//! The quorum node: one Raft instance with its log store, state machine and network, behind a
//! cheap-to-clone handle, [`Quorum`].
//!
//! Bootstrap: a voter whose log is empty initializes the cluster with the configured voters
//! (every voter may do so with the same set; openraft makes that idempotent). A node that is
//! not a voter starts as a learner and waits for the leader to add it ([`Quorum::add_learner`]).
//! The node id and the voters set are persisted in the quorum directory on first start
//! (`identity`); a later start with a different id or set is refused, because silently
//! changing either could elect two leaders.
//!
//! Elections: openraft 0.9 draws its election timeout once per process, so two nodes that drew
//! close values split the vote again and again. Here openraft's own election timer is off
//! (`enable_elect = false`) and its timeout range is pinned to one value (used only for the
//! leader lease, so openraft's RNG draws nothing that matters); `election_timer` starts
//! elections instead, with a timeout drawn afresh from `election_timeout_ms` for every wait
//! (seeded by `rng_seed` when given). Its clock is reset by every append-entries or snapshot
//! chunk accepted from a current leader and by every vote granted, as in the Raft paper.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::disk::{Disk, FsDisk};
use crate::error::QuorumError;
use crate::log_store::LogStore;
use crate::metadata::{MetadataError, MetadataRecord, NodeId};
use crate::network::{NetworkFactory, RpcKind, Transport, decode, encode};
use crate::state_machine::{ApplyObserver, MetadataImage, StateMachine};
use crate::types::{Raft, TypeConfig, node_id, raft_id};

const IDENTITY_FILE: &str = "identity";

/// Configuration of one quorum node.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// The quorum directory (`<data_dir>/quorum`), used when no [`Disk`] is given.
    pub dir: PathBuf,
    /// The voters and their addresses; the same on every node.
    pub voters: BTreeMap<NodeId, String>,
    /// This node's own address (peers reach a learner / broker-only node there).
    pub address: String,
    /// Range an election timeout is drawn from, fresh for every election, in ms.
    pub election_timeout_ms: (u64, u64),
    /// How often the leader sends heartbeats, in ms.
    pub heartbeat_interval_ms: u64,
    /// A snapshot is taken after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log rather than from a snapshot.
    pub logs_kept_after_snapshot: u64,
    /// Timeout of one peer RPC, in ms.
    pub rpc_timeout_ms: u64,
    /// Seed of the election-timeout RNG (the simulation sets it); `None` = from the OS.
    pub rng_seed: Option<u64>,
    /// Sees every applied entry (the simulation's invariant checks).
    pub apply_observer: Option<ApplyObserver>,
}

impl QuorumConfig {
    /// A configuration with the default timings: elections after 300-600 ms without a
    /// leader, heartbeats every 100 ms, so a new leader is usually in place well under a
    /// second after the old one dies.
    pub fn new(
        node_id: NodeId,
        dir: impl Into<PathBuf>,
        voters: BTreeMap<NodeId, String>,
        address: impl Into<String>,
    ) -> QuorumConfig {
        QuorumConfig {
            node_id,
            dir: dir.into(),
            voters,
            address: address.into(),
            election_timeout_ms: (300, 600),
            heartbeat_interval_ms: 100,
            snapshot_after_entries: 1_000,
            logs_kept_after_snapshot: 500,
            rpc_timeout_ms: 1_000,
            rng_seed: None,
            apply_observer: None,
        }
    }

    fn validate(&self) -> Result<(), QuorumError> {
        raft_id(self.node_id)?;
        if self.voters.is_empty() {
            return Err(QuorumError::Config("the voters set is empty".into()));
        }
        for id in self.voters.keys() {
            raft_id(*id)?;
        }
        let (lo, hi) = self.election_timeout_ms;
        if lo == 0 || lo > hi {
            return Err(QuorumError::Config(format!(
                "election timeout range {lo}..{hi} is invalid"
            )));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= lo {
            return Err(QuorumError::Config(format!(
                "heartbeat interval {} ms must be positive and below the election timeout {lo} ms",
                self.heartbeat_interval_ms
            )));
        }
        if self.snapshot_after_entries == 0 || self.rpc_timeout_ms == 0 {
            return Err(QuorumError::Config(
                "snapshot_after_entries and rpc_timeout_ms must be > 0".into(),
            ));
        }
        Ok(())
    }

    fn raft_config(&self) -> Result<openraft::Config, QuorumError> {
        // Pinned: openraft draws from this range once per process; our timer does the
        // per-election draw. The value is only the leader lease: a follower that heard from a
        // leader within it refuses to vote, so a node that merely lost contact cannot depose a
        // healthy leader. Two heartbeats is enough for that, and shorter than every election
        // timeout, so a candidate whose timer fired is not refused a second time.
        let lease = (2 * self.heartbeat_interval_ms).min(self.election_timeout_ms.0);
        let config = openraft::Config {
            cluster_name: "strom".into(),
            election_timeout_min: lease,
            election_timeout_max: lease + 1,
            heartbeat_interval: self.heartbeat_interval_ms,
            install_snapshot_timeout: self.rpc_timeout_ms,
            enable_elect: false,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Default::default()
        };
        config.validate().map_err(|e| QuorumError::Config(e.to_string()))
    }
}

/// Leadership as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's id and address, if one is known.
    pub leader: Option<(NodeId, String)>,
    /// The current term.
    pub term: u64,
    /// Whether this node is the leader.
    pub is_self: bool,
}

/// A committed and locally applied proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    /// The log index the record was committed at.
    pub log_index: u64,
    /// The log term it was committed in.
    pub term: u64,
    /// What applying it returned.
    pub result: Result<(), MetadataError>,
}

/// What the identity file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
    voters: BTreeMap<NodeId, String>,
}

struct Inner {
    node_id: NodeId,
    raft: Raft,
    voters: BTreeMap<NodeId, String>,
    image: watch::Receiver<Arc<MetadataImage>>,
    leader: watch::Receiver<LeaderInfo>,
    last_contact: Arc<Mutex<Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .finish()
    }
}

/// A handle on the quorum node; clones share it.
#[derive(Debug, Clone)]
pub struct Quorum {
    inner: Arc<Inner>,
}

fn raft_err(e: impl std::fmt::Display) -> QuorumError {
    QuorumError::Raft(e.to_string())
}

impl Quorum {
    /// Starts the node: opens (or creates) its store on `disk` (default: [`FsDisk`] on
    /// `config.dir`), checks the identity, starts Raft, initializes the cluster if this is a
    /// voter with an empty log, and starts the election timer.
    pub async fn start(
        config: QuorumConfig,
        disk: Option<Arc<dyn Disk>>,
        transport: Arc<dyn Transport>,
    ) -> Result<Quorum, QuorumError> {
        config.validate()?;
        let disk: Arc<dyn Disk> = match disk {
            Some(d) => d,
            None => Arc::new(FsDisk::open(&config.dir)?),
        };
        check_identity(&*disk, &config).await?;
        let state_machine =
            StateMachine::open(Arc::clone(&disk), config.apply_observer.clone()).await?;
        let log_store = LogStore::open(Arc::clone(&disk))
            .await?
            .with_snapshot_gate(state_machine.snapshot_gate());
        let image = state_machine.image();
        let raft_config = Arc::new(config.raft_config()?);
        let id = raft_id(config.node_id)?;
        let network = NetworkFactory::new(
            transport,
            Duration::from_millis(config.rpc_timeout_ms),
            Duration::from_millis(config.heartbeat_interval_ms),
        );
        let raft = Raft::new(id, raft_config, network, log_store, state_machine)
            .await
            .map_err(raft_err)?;

        let is_voter = config.voters.contains_key(&config.node_id);
        if is_voter && !raft.is_initialized().await.map_err(raft_err)? {
            let mut members = BTreeMap::new();
            for (id, addr) in &config.voters {
                members.insert(raft_id(*id)?, BasicNode { addr: addr.clone() });
            }
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node = config.node_id, "quorum initialized"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(raft_err(e)),
            }
        }

        if is_voter && config.voters.len() == 1 {
            // A single-node quorum (the default broker) has nobody to wait for: lead at once
            // rather than after an election timeout.
            raft.trigger().elect().await.map_err(raft_err)?;
        }

        let (leader_tx, leader_rx) = watch::channel(LeaderInfo::default());
        let last_contact = Arc::new(Mutex::new(Instant::now()));
        let leader_task =
            tokio::spawn(leader_watch(raft.metrics(), leader_tx, config.voters.clone(), id));
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        let timer = tokio::spawn(election_timer(
            raft.clone(),
            id,
            Arc::clone(&last_contact),
            config.election_timeout_ms,
            StdRng::seed_from_u64(seed),
        ));
        Ok(Quorum {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft,
                voters: config.voters,
                image,
                leader: leader_rx,
                last_contact,
                tasks: Mutex::new(vec![leader_task, timer]),
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Appends a record through Raft; returns once committed and applied locally, with
    /// apply's result. On a non-leader: [`QuorumError::NotLeader`] with the leader, if known.
    pub async fn propose(
        &self,
        record: MetadataRecord,
    ) -> Result<Result<(), MetadataError>, QuorumError> {
        Ok(self.propose_at(record).await?.result)
    }

    /// Like [`Quorum::propose`], also returning where the record was committed.
    pub async fn propose_at(&self, record: MetadataRecord) -> Result<Proposed, QuorumError> {
        self.check_running()?;
        match self.inner.raft.client_write(record).await {
            Ok(resp) => Ok(Proposed {
                log_index: resp.log_id.index,
                term: resp.log_id.leader_id.term,
                result: resp.data.result,
            }),
            Err(e) => Err(self.write_error(e)),
        }
    }

    fn write_error(&self, e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> QuorumError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let leader = f.leader_id.and_then(node_id).and_then(|id| {
                    let addr = f
                        .leader_node
                        .map(|n| n.addr)
                        .or_else(|| self.inner.voters.get(&id).cloned());
                    addr.map(|a| (id, a))
                });
                QuorumError::NotLeader { leader }
            }
            RaftError::Fatal(openraft::error::Fatal::Stopped) => QuorumError::Shutdown,
            other => raft_err(other),
        }
    }

    fn check_running(&self) -> Result<(), QuorumError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(QuorumError::Shutdown);
        }
        Ok(())
    }

    /// Handles an incoming RPC from a peer (the broker's gRPC service calls this); returns
    /// the encoded reply.
    pub async fn handle_rpc(&self, kind: RpcKind, payload: Bytes) -> Result<Bytes, QuorumError> {
        self.check_running()?;
        let bad = |e: serde_json::Error| QuorumError::BadRequest(e.to_string());
        let raft = &self.inner.raft;
        let reply = match kind {
            RpcKind::AppendEntries => {
                let req: AppendEntriesRequest<TypeConfig> = decode(&payload).map_err(bad)?;
                let r = raft.append_entries(req).await;
                if matches!(&r, Ok(resp) if !matches!(resp, AppendEntriesResponse::HigherVote(_))) {
                    self.touch();
                }
                encode(&r)
            }
            RpcKind::Vote => {
                let req: VoteRequest<u64> = decode(&payload).map_err(bad)?;
                let r = raft.vote(req).await;
                if matches!(&r, Ok(resp) if resp.vote_granted) {
                    self.touch();
                }
                encode(&r)
            }
            RpcKind::InstallSnapshot => {
                let req: InstallSnapshotRequest<TypeConfig> = decode(&payload).map_err(bad)?;
                let r = raft.install_snapshot(req).await;
                if r.is_ok() {
                    self.touch();
                }
                encode(&r)
            }
        };
        reply.map_err(|e| QuorumError::Raft(format!("encoding reply: {e}")))
    }

    /// Resets the election clock: a live leader (or a candidate we voted for) exists.
    fn touch(&self) {
        *self.inner.last_contact.lock() = Instant::now();
    }

    /// The applied metadata, updated after every apply.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image.clone()
    }

    /// Leadership as seen by this node.
    pub fn leader(&self) -> watch::Receiver<LeaderInfo> {
        self.inner.leader.clone()
    }

    /// openraft's metrics of this node (state, term, log and applied positions).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<u64, BasicNode>> {
        self.inner.raft.metrics()
    }

    /// Whether this node is a voter in the current membership.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let me = u64::try_from(self.inner.node_id).ok();
        m.membership_config.voter_ids().any(|v| Some(v) == me)
    }

    /// Leader only: adds a broker-only node as a learner (non-voter) so it receives the log;
    /// returns once the membership change is committed.
    pub async fn add_learner(&self, node_id: NodeId, address: String) -> Result<(), QuorumError> {
        self.check_running()?;
        let id = raft_id(node_id)?;
        match self.inner.raft.add_learner(id, BasicNode { addr: address }, true).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Stops the election timer and Raft. Idempotent.
    pub async fn shutdown(&self) -> Result<(), QuorumError> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for t in self.inner.tasks.lock().drain(..) {
            t.abort();
        }
        self.inner.raft.shutdown().await.map_err(raft_err)
    }
}

async fn check_identity(disk: &dyn Disk, config: &QuorumConfig) -> Result<(), QuorumError> {
    let want = Identity { node_id: config.node_id, voters: config.voters.clone() };
    match disk.read(IDENTITY_FILE).await? {
        None => {
            let data =
                serde_json::to_vec(&want).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
            disk.replace(IDENTITY_FILE, Bytes::from(data)).await?;
            Ok(())
        }
        Some(raw) => {
            let have: Identity = serde_json::from_slice(&raw)
                .map_err(|e| QuorumError::Corrupt(format!("identity file: {e}")))?;
            if have.node_id != want.node_id {
                return Err(QuorumError::Config(format!(
                    "this quorum directory belongs to node {}, not node {}: use that node id or another data directory",
                    have.node_id, want.node_id
                )));
            }
            if have.voters != want.voters {
                return Err(QuorumError::Config(format!(
                    "this quorum directory was created with voters {:?}, now {:?}: changing voters is not supported; use the original list",
                    have.voters, want.voters
                )));
            }
            Ok(())
        }
    }
}

/// Publishes [`LeaderInfo`] whenever openraft's metrics change it.
async fn leader_watch(
    mut metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    tx: watch::Sender<LeaderInfo>,
    voters: BTreeMap<NodeId, String>,
    me: u64,
) {
    loop {
        let info = {
            let m = metrics.borrow_and_update();
            let leader = m.current_leader.and_then(|id| {
                let nid = node_id(id)?;
                let addr = m
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .or_else(|| voters.get(&nid).cloned())?;
                Some((nid, addr))
            });
            LeaderInfo {
                leader,
                term: m.current_term,
                is_self: m.state == ServerState::Leader && m.current_leader == Some(me),
            }
        };
        tx.send_if_modified(|cur| {
            let changed = *cur != info;
            *cur = info;
            changed
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Starts an election when no leader has been heard from for a timeout drawn afresh for
/// every wait, so nodes that collided once are unlikely to collide again.
async fn election_timer(
    raft: Raft,
    me: u64,
    last_contact: Arc<Mutex<Instant>>,
    (lo, hi): (u64, u64),
    mut rng: StdRng,
) {
    let metrics = raft.metrics();
    loop {
        let timeout = Duration::from_millis(rng.random_range(lo..=hi));
        loop {
            let deadline = *last_contact.lock() + timeout;
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep_until(deadline).await;
        }
        let (running, leader, voter) = {
            let m = metrics.borrow();
            (
                m.running_state.is_ok(),
                m.state == ServerState::Leader,
                m.membership_config.voter_ids().any(|v| v == me),
            )
        };
        if !running {
            return;
        }
        if !leader && voter {
            tracing::info!(
                node = me,
                timeout_ms = timeout.as_millis() as u64,
                "no leader heard from: starting an election"
            );
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
        *last_contact.lock() = Instant::now();
    }
}
