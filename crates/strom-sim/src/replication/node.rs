//! One simulated broker's replica of the partition: the shell around the real
//! [`LeaderState`] / [`diverging_epoch`] / [`truncation_point`] that the broker's
//! `partition.rs` and `fetcher.rs` are, reduced to a model log and messages.
//!
//! The log is a vector of records `(epoch, payload)` whose index is the offset, so offsets are
//! dense by construction; its epoch cache is derived from it (the largest epoch at or below the
//! one asked and where it ends). `flushed` is the durable prefix: a power loss keeps it and any
//! prefix of the rest. Acks wait for flushes (see the module doc of `replication`): a leader
//! tells its [`LeaderState`] only its flushed end, and a follower flushes what it appended
//! before it fetches again, so the fetch offset it reports is durable.

use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;
use strom_format::{LeaderEpoch, Offset};
use strom_quorum::{AlterPartitionError, MetadataState, NO_LEADER, NodeId, PartitionRecord};
use strom_replication::{
    Assignment, EpochEndOffset, IsrChange, LeaderConfig, LeaderState, diverging_epoch,
    truncation_point,
};

/// The one topic of the simulation (one partition, RF 3).
pub const TOPIC: &str = "t";
/// `min.insync.replicas` of the topic.
pub const MIN_INSYNC: usize = 2;
/// Follower lag before the leader proposes it out of the ISR.
pub const REPLICA_LAG_MS: u64 = 2_000;
/// The controller's endpoint on the simulated network.
pub const CONTROLLER: Endpoint = 0;
/// The producer's endpoint.
pub const PRODUCER: Endpoint = 100;
/// Records per fetch response at most.
const MAX_FETCH_RECORDS: usize = 50;
/// A fetch without an answer for this long is sent again.
const FETCH_TIMEOUT_MS: u64 = 500;
/// An ISR change without an answer for this long is sent again (Kafka retries AlterPartition
/// until it hears back; giving up would drop a maybe-committed member from the maximal ISR).
const ALTER_RETRY_MS: u64 = 500;

/// An address on the simulated network: a node id, [`CONTROLLER`] or [`PRODUCER`].
pub type Endpoint = i32;

/// One record of the model log; its offset is its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The leader epoch it was appended in.
    pub epoch: i32,
    /// Which produce request it came from (unique per request, the same on retries).
    pub payload: u64,
}

/// What travels on the simulated network.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Node → controller: the broker's session; a new incarnation registers again.
    Heartbeat { incarnation: u64 },
    /// Controller → node: the committed image at `version`.
    Image { version: usize, image: Arc<MetadataState> },
    /// Leader → controller (AlterPartition).
    AlterPartition { change: IsrChange },
    /// Controller → leader: the change it answers and the partition as committed, or why not.
    AlterPartitionResponse { asked: IsrChange, result: Result<Assignment, AlterPartitionError> },
    /// Follower → leader.
    Fetch {
        seq: u64,
        leader_epoch: i32,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
    },
    /// Leader → follower.
    FetchResponse { seq: u64, result: FetchResult },
    /// Producer → leader (acks=all).
    Produce { req: u64, payload: u64 },
    /// Leader → producer: the offset, or why not.
    ProduceResponse { req: u64, result: Result<Offset, ProduceError> },
}

/// A leader's answer to a follower fetch.
#[derive(Debug, Clone)]
pub enum FetchResult {
    /// The follower's current leader epoch is not the leader's (FENCED / UNKNOWN_LEADER_EPOCH).
    Fenced,
    /// The follower's log diverges (KIP-320).
    Diverging(EpochEndOffset),
    /// Records from `start`, and the leader's high watermark.
    Records { start: Offset, records: Vec<Record>, high_watermark: Offset },
}

/// Why a produce failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceError {
    /// NOT_LEADER_OR_FOLLOWER.
    NotLeader,
    /// NOT_ENOUGH_REPLICAS (before the append).
    NotEnoughReplicas,
    /// The leader stepped down with the request pending: the record may or may not survive.
    UnknownOutcome,
}

/// The model log.
#[derive(Debug, Clone, Default)]
pub struct Log {
    records: Vec<Record>,
    flushed: usize,
    /// Prefix the checker has compared with the committed records (reset by truncation).
    pub(crate) verified: usize,
}

impl Log {
    /// The log end offset.
    pub fn end(&self) -> Offset {
        Offset::new(self.records.len() as i64)
    }

    /// The records, offset = index.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The durable prefix's length.
    pub fn flushed(&self) -> usize {
        self.flushed
    }

    /// The epoch of the last record.
    pub fn last_epoch(&self) -> Option<LeaderEpoch> {
        self.records.last().map(|r| LeaderEpoch::new(r.epoch))
    }

    /// The largest epoch at or below `epoch` and where it ends (Kafka's
    /// `LeaderEpochFileCache::endOffsetFor`), from the records themselves.
    pub fn end_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        // Epochs never decrease along the log, so the last record at or below `epoch` is the
        // last one of the epoch found, and the next offset is where that epoch ends.
        let i = self.records.iter().rposition(|r| r.epoch <= epoch.get())?;
        Some((LeaderEpoch::new(self.records[i].epoch), Offset::new(i as i64 + 1)))
    }

    fn append(&mut self, record: Record) -> Result<(), String> {
        let broke = self.records.last().is_some_and(|last| last.epoch > record.epoch);
        self.records.push(record);
        if broke {
            return Err(format!("epoch {} appended after a later epoch", record.epoch));
        }
        Ok(())
    }

    fn truncate(&mut self, to: usize) {
        self.records.truncate(to);
        self.flushed = self.flushed.min(to);
        self.verified = self.verified.min(to);
    }

    fn flush(&mut self) {
        self.flushed = self.records.len();
    }
}

/// A record acknowledged to the producer by a leader (for the "one acknowledger per epoch"
/// invariant) and anything else the checker needs to hear about as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// `node`, leading `epoch`, acknowledged `payload` at `offset`.
    Acked { node: NodeId, epoch: i32, offset: Offset, payload: u64 },
    /// `node` took leadership of `epoch`.
    Leads { node: NodeId, epoch: i32 },
    /// A broken invariant the node itself noticed.
    Violation(String),
    /// A trace line.
    Trace(String),
}

/// What a handler has to hand: the time, the RNG, and where outputs go.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Virtual time.
    pub now: u64,
    /// The simulation's one RNG.
    pub rng: &'a mut StdRng,
    /// Messages to send: (from, to, message).
    pub out: Vec<(Endpoint, Endpoint, Msg)>,
    /// Events for the checker and the trace.
    pub events: Vec<Event>,
}

impl Ctx<'_> {
    fn send(&mut self, from: Endpoint, to: Endpoint, msg: Msg) {
        self.out.push((from, to, msg));
    }
    fn trace(&mut self, line: String) {
        self.events.push(Event::Trace(line));
    }
}

#[derive(Debug)]
struct Leading {
    epoch: i32,
    state: LeaderState,
    /// Appended, not yet acknowledged: (offset, request, payload).
    acks: Vec<(Offset, u64, u64)>,
    /// When the pending ISR change was sent.
    alter_sent_ms: Option<u64>,
}

#[derive(Debug)]
enum Role {
    Idle,
    Leader(Box<Leading>),
    Follower { leader: NodeId, epoch: i32 },
}

/// A broker's replica of the partition.
#[derive(Debug)]
pub struct Node {
    /// The node id.
    pub id: NodeId,
    /// Grows at every restart; a new one must register again.
    pub incarnation: u64,
    /// Not crashed.
    pub up: bool,
    /// Frozen (SIGSTOP) until this time: processes nothing meanwhile.
    pub frozen_until: u64,
    /// Asked for a controlled shutdown: sends no more heartbeats (a heartbeat would unfence
    /// it again) and stops soon.
    pub shutting_down: bool,
    /// The partition's log.
    pub log: Log,
    /// The high watermark this replica knows (leader: its own).
    pub hw: Offset,
    hw_checkpoint: Offset,
    image_version: usize,
    image: Arc<MetadataState>,
    /// Registered with the controller in this incarnation (seen unfenced in an image).
    registered: bool,
    role: Role,
    fetch_seq: u64,
    fetch_sent_ms: Option<u64>,
    fetch_backoff_until: u64,
    next_heartbeat: u64,
    next_flush: u64,
    next_tick: u64,
}

impl Node {
    /// A node that starts with the initial image, registered.
    pub fn new(id: NodeId, version: usize, image: Arc<MetadataState>) -> Node {
        let mut node = Node {
            id,
            incarnation: 1,
            up: true,
            frozen_until: 0,
            shutting_down: false,
            log: Log::default(),
            hw: Offset::ZERO,
            hw_checkpoint: Offset::ZERO,
            image_version: 0,
            image: image.clone(),
            registered: true,
            role: Role::Idle,
            fetch_seq: 0,
            fetch_sent_ms: None,
            fetch_backoff_until: 0,
            next_heartbeat: 0,
            next_flush: 0,
            next_tick: 0,
        };
        node.image_version = version;
        node
    }

    /// Running and not frozen at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.up && self.frozen_until <= now
    }

    /// The leader epoch this node leads, if it acts as leader.
    pub fn leading_epoch(&self) -> Option<i32> {
        match &self.role {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        }
    }

    /// The committed ISR as this node's leadership knows it, if it acts as leader.
    pub fn leader_isr(&self) -> Option<&[NodeId]> {
        match &self.role {
            Role::Leader(l) => Some(l.state.isr()),
            _ => None,
        }
    }

    /// A one-line description for the trace.
    pub fn describe(&self) -> String {
        let role = match &self.role {
            Role::Idle => "idle".to_string(),
            Role::Leader(l) => format!("leader e{} isr {:?}", l.epoch, l.state.isr()),
            Role::Follower { leader, epoch } => format!("follower of {leader} e{epoch}"),
        };
        format!(
            "n{} {}{} end {} flushed {} hw {} img v{} {role}",
            self.id,
            if self.up { "up" } else { "down" },
            if self.registered { "" } else { " unregistered" },
            self.log.end(),
            self.log.flushed,
            self.hw,
            self.image_version,
        )
    }

    /// A clean stop at the end of a controlled shutdown: everything flushed, then down.
    pub fn stop(&mut self, ctx: &mut Ctx<'_>) {
        self.flush(ctx);
        self.step_down(ctx);
        self.up = false;
        self.role = Role::Idle;
    }

    /// Crash: a process crash keeps the whole log (the page cache survives); a power loss
    /// keeps the flushed prefix and `keep` more records of the rest. Pending acks are lost
    /// with the process (the producer times out).
    pub fn crash(&mut self, power_loss: bool, rng: &mut StdRng) -> usize {
        self.up = false;
        self.role = Role::Idle;
        let mut lost = 0;
        if power_loss {
            let unflushed = self.log.records.len() - self.log.flushed;
            let keep = rng.random_range(0..=unflushed);
            lost = unflushed - keep;
            let to = self.log.flushed + keep;
            self.log.truncate(to);
        }
        lost
    }

    /// Restart from what survived: the log, the checkpointed high watermark, the last image
    /// (the metadata log is durable), a new incarnation that must register before this node
    /// leads or follows (Kafka refuses the registration while the old session lives, so the
    /// controller fences the old incarnation and moves leadership first).
    pub fn restart(&mut self, now: u64) {
        self.up = true;
        self.frozen_until = 0;
        self.shutting_down = false;
        self.incarnation += 1;
        self.registered = false;
        self.role = Role::Idle;
        self.hw = self.hw_checkpoint.min(self.log.end());
        self.fetch_sent_ms = None;
        self.next_heartbeat = now;
        self.next_flush = now;
        self.next_tick = now;
    }

    /// Timers: heartbeat, flush, leader tick, follower fetch.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        if now >= self.next_heartbeat && !self.shutting_down {
            self.next_heartbeat = now + ctx.rng.random_range(80..120);
            let msg = Msg::Heartbeat { incarnation: self.incarnation };
            ctx.send(self.id, CONTROLLER, msg);
        }
        if now >= self.next_flush {
            // Leaders flush on a slow schedule (acks wait for it); followers soon after appending.
            let leading = matches!(self.role, Role::Leader(_));
            self.next_flush = now
                + if leading { ctx.rng.random_range(20..250) } else { ctx.rng.random_range(5..40) };
            self.flush(ctx);
        }
        let id = self.id;
        if let Role::Leader(l) = &mut self.role {
            if l.alter_sent_ms.is_some_and(|t| now.saturating_sub(t) > ALTER_RETRY_MS)
                && let Some(change) = l.state.pending().cloned()
            {
                l.alter_sent_ms = Some(now);
                ctx.send(id, CONTROLLER, Msg::AlterPartition { change });
            }
            if now >= self.next_tick {
                self.next_tick = now + 100;
                if let Some(change) = l.state.tick(now) {
                    ctx.trace(format!("n{id} proposes isr {:?}", change.isr));
                    l.alter_sent_ms = Some(now);
                    ctx.send(id, CONTROLLER, Msg::AlterPartition { change });
                }
            }
        }
        if let Role::Follower { leader, epoch } = self.role {
            let in_flight =
                self.fetch_sent_ms.is_some_and(|t| now.saturating_sub(t) <= FETCH_TIMEOUT_MS);
            // A follower reports only a durable fetch offset: it flushes before fetching again.
            let durable = self.log.flushed == self.log.records.len();
            if !in_flight && durable && now >= self.fetch_backoff_until {
                self.fetch_seq += 1;
                self.fetch_sent_ms = Some(now);
                let msg = Msg::Fetch {
                    seq: self.fetch_seq,
                    leader_epoch: epoch,
                    fetch_offset: self.log.end(),
                    last_fetched_epoch: self.log.last_epoch(),
                };
                ctx.send(self.id, leader, msg);
            }
        }
    }

    fn flush(&mut self, ctx: &mut Ctx<'_>) {
        self.log.flush();
        self.hw_checkpoint = self.hw.min(self.log.end());
        let end = self.log.end();
        if let Role::Leader(l) = &mut self.role
            && let Some(hw) = l.state.on_append(end)
        {
            self.set_leader_hw(hw, ctx);
        }
    }

    /// A message.
    pub fn on_message(&mut self, from: Endpoint, msg: Msg, ctx: &mut Ctx<'_>) {
        match msg {
            Msg::Image { version, image } => self.on_image(version, image, ctx),
            Msg::AlterPartitionResponse { asked, result } => {
                self.on_alter_response(asked, result, ctx)
            }
            Msg::Fetch { seq, leader_epoch, fetch_offset, last_fetched_epoch } => {
                let result =
                    self.on_fetch(from, leader_epoch, fetch_offset, last_fetched_epoch, ctx);
                ctx.send(self.id, from, Msg::FetchResponse { seq, result });
            }
            Msg::FetchResponse { seq, result } => self.on_fetch_response(from, seq, result, ctx),
            Msg::Produce { req, payload } => {
                if let Some(result) = self.on_produce(req, payload) {
                    ctx.send(self.id, from, Msg::ProduceResponse { req, result });
                }
            }
            Msg::Heartbeat { .. } | Msg::AlterPartition { .. } | Msg::ProduceResponse { .. } => {}
        }
    }

    fn on_image(&mut self, version: usize, image: Arc<MetadataState>, ctx: &mut Ctx<'_>) {
        if version <= self.image_version {
            return; // an older or repeated delivery: images apply in order
        }
        self.image_version = version;
        self.image = image;
        if !self.registered {
            let me = self.image.broker(self.id);
            if me.is_some_and(|b| b.registration.incarnation == self.incarnation && !b.fenced) {
                self.registered = true;
                ctx.trace(format!("n{} registered (incarnation {})", self.id, self.incarnation));
            } else {
                return;
            }
        }
        self.apply_image(ctx);
    }

    fn apply_image(&mut self, ctx: &mut Ctx<'_>) {
        let Some(p) = self.image.partition(TOPIC, 0).cloned() else { return };
        let now = ctx.now;
        if p.leader == self.id {
            if let Role::Leader(l) = &mut self.role
                && l.epoch == p.leader_epoch
            {
                if let Some(hw) = l.state.update_assignment(&assignment(&p), now) {
                    self.set_leader_hw(hw, ctx);
                }
                return;
            }
            self.step_down(ctx);
            // The whole log is durable before leading: acks only ever count flushed records.
            self.flush(ctx);
            let config = LeaderConfig {
                replica_lag_time_max_ms: REPLICA_LAG_MS,
                min_insync_replicas: MIN_INSYNC,
            };
            let state =
                LeaderState::new(self.id, &assignment(&p), self.log.end(), self.hw, now, config);
            ctx.trace(format!(
                "n{} leads epoch {} (end {}, hw {} -> {}, isr {:?})",
                self.id,
                p.leader_epoch,
                self.log.end(),
                self.hw,
                state.high_watermark(),
                p.isr
            ));
            ctx.events.push(Event::Leads { node: self.id, epoch: p.leader_epoch });
            self.role = Role::Leader(Box::new(Leading {
                epoch: p.leader_epoch,
                state,
                acks: Vec::new(),
                alter_sent_ms: None,
            }));
            let hw = self.leader_hw();
            self.set_leader_hw(hw, ctx);
        } else {
            self.step_down(ctx);
            let next = if p.leader == NO_LEADER {
                Role::Idle
            } else {
                Role::Follower { leader: p.leader, epoch: p.leader_epoch }
            };
            let changed = match (&self.role, &next) {
                (Role::Follower { epoch: a, .. }, Role::Follower { epoch: b, .. }) => a != b,
                _ => true,
            };
            if changed {
                self.fetch_sent_ms = None;
                self.role = next;
            }
        }
    }

    fn leader_hw(&self) -> Offset {
        match &self.role {
            Role::Leader(l) => l.state.high_watermark(),
            _ => self.hw,
        }
    }

    /// Leadership ends: requests waiting for acks get "unknown outcome".
    fn step_down(&mut self, ctx: &mut Ctx<'_>) {
        if let Role::Leader(l) = std::mem::replace(&mut self.role, Role::Idle) {
            ctx.trace(format!(
                "n{} stops leading epoch {} ({} pending acks fail)",
                self.id,
                l.epoch,
                l.acks.len()
            ));
            for (_, req, _) in l.acks {
                let msg = Msg::ProduceResponse { req, result: Err(ProduceError::UnknownOutcome) };
                ctx.send(self.id, PRODUCER, msg);
            }
        }
    }

    fn set_leader_hw(&mut self, hw: Offset, ctx: &mut Ctx<'_>) {
        self.hw = hw;
        let id = self.id;
        let Role::Leader(l) = &mut self.role else { return };
        let epoch = l.epoch;
        let (done, pending): (Vec<_>, Vec<_>) = l.acks.drain(..).partition(|(o, _, _)| *o < hw);
        l.acks = pending;
        for (offset, req, payload) in done {
            ctx.events.push(Event::Acked { node: id, epoch, offset, payload });
            ctx.send(id, PRODUCER, Msg::ProduceResponse { req, result: Ok(offset) });
        }
    }

    fn on_alter_response(
        &mut self,
        asked: IsrChange,
        result: Result<Assignment, AlterPartitionError>,
        ctx: &mut Ctx<'_>,
    ) {
        let now = ctx.now;
        let Role::Leader(l) = &mut self.role else { return };
        if asked.leader_epoch.get() != l.epoch || l.state.pending() != Some(&asked) {
            return; // an answer to an earlier request, or a repeated one
        }
        l.alter_sent_ms = None;
        match result {
            Ok(a) if a.partition_epoch > asked.partition_epoch => {
                if let Some(hw) = l.state.update_assignment(&a, now) {
                    self.set_leader_hw(hw, ctx);
                }
            }
            // Accepted without a change: nothing is pending any more.
            Ok(_) => l.state.isr_change_failed(),
            // A definite refusal of this very ISR: the committed one stands.
            Err(AlterPartitionError::IneligibleReplica { .. }) => l.state.isr_change_failed(),
            // Stale partition or leader epoch: the change may have been committed by an
            // earlier copy of this request, or another one came first. Only the next image
            // tells, so the change stays pending (its members keep holding the high
            // watermark) until `update_assignment` or a new leadership resolves it, as
            // Kafka's `Partition.handleAlterPartitionError` does for INVALID_UPDATE_VERSION.
            Err(_) => {}
        }
    }

    fn on_fetch(
        &mut self,
        follower: Endpoint,
        leader_epoch: i32,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
        ctx: &mut Ctx<'_>,
    ) -> FetchResult {
        let id = self.id;
        let Role::Leader(l) = &mut self.role else { return FetchResult::Fenced };
        if l.epoch != leader_epoch {
            return FetchResult::Fenced;
        }
        let leader_end_for_epoch = last_fetched_epoch.and_then(|e| self.log.end_for_epoch(e));
        if let Some(d) =
            diverging_epoch(last_fetched_epoch, fetch_offset, leader_end_for_epoch, Offset::ZERO)
        {
            return FetchResult::Diverging(d);
        }
        let update = l.state.on_follower_fetch(follower, fetch_offset, ctx.now);
        if let Some(change) = update.isr_change {
            ctx.trace(format!("n{id} proposes isr {:?}", change.isr));
            l.alter_sent_ms = Some(ctx.now);
            ctx.send(id, CONTROLLER, Msg::AlterPartition { change });
        }
        let start = usize::try_from(fetch_offset.get()).unwrap_or(usize::MAX);
        let records: Vec<Record> =
            self.log.records.iter().skip(start).take(MAX_FETCH_RECORDS).copied().collect();
        if let Some(hw) = update.high_watermark {
            self.set_leader_hw(hw, ctx);
        }
        FetchResult::Records { start: fetch_offset, records, high_watermark: self.hw }
    }

    fn on_fetch_response(
        &mut self,
        from: Endpoint,
        seq: u64,
        result: FetchResult,
        ctx: &mut Ctx<'_>,
    ) {
        let Role::Follower { leader, .. } = self.role else { return };
        if from != leader || seq != self.fetch_seq || self.fetch_sent_ms.is_none() {
            return; // late, repeated or from a leader given up on
        }
        self.fetch_sent_ms = None;
        match result {
            FetchResult::Fenced => self.fetch_backoff_until = ctx.now + 50,
            FetchResult::Diverging(d) => {
                let end = self.log.end();
                let local = self.log.end_for_epoch(d.epoch);
                let cut = truncation_point(d, local, Offset::ZERO, end);
                if cut < self.hw {
                    ctx.events.push(Event::Violation(format!(
                        "n{} truncates to {cut}, below its high watermark {}",
                        self.id, self.hw
                    )));
                }
                ctx.trace(format!(
                    "n{} diverges from n{leader} at epoch {} end {}: truncates {end} -> {cut}",
                    self.id, d.epoch, d.end_offset
                ));
                self.log.truncate(usize::try_from(cut.get()).unwrap_or(0));
                self.hw = self.hw.min(self.log.end());
            }
            FetchResult::Records { start, records, high_watermark } => {
                if start != self.log.end() {
                    return;
                }
                for r in records {
                    if let Err(e) = self.log.append(r) {
                        ctx.events.push(Event::Violation(format!("n{}: {e}", self.id)));
                    }
                }
                self.hw = self.hw.max(high_watermark.min(self.log.end()));
            }
        }
    }

    fn on_produce(&mut self, req: u64, payload: u64) -> Option<Result<Offset, ProduceError>> {
        let Role::Leader(l) = &mut self.role else { return Some(Err(ProduceError::NotLeader)) };
        if l.state.check_min_isr().is_err() {
            return Some(Err(ProduceError::NotEnoughReplicas));
        }
        let offset = self.log.end();
        // The leader's own appends never break epoch order: it leads the newest epoch it has.
        let record = Record { epoch: l.epoch, payload };
        if self.log.append(record).is_err() {
            return Some(Err(ProduceError::NotLeader));
        }
        l.acks.push((offset, req, payload));
        None
    }
}

/// The partition as the replication logic sees it.
pub fn assignment(p: &PartitionRecord) -> Assignment {
    Assignment {
        leader_epoch: LeaderEpoch::new(p.leader_epoch),
        partition_epoch: p.partition_epoch,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
    }
}
