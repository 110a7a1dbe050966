//! The leader's side of one partition's replication: what each follower has, the high
//! watermark that follows from it, and when the ISR should shrink or grow (Kafka's
//! `Partition` / `ReplicaManager` ISR logic, without the I/O).
//!
//! A follower's fetch offset is its log end offset: everything below it is in its log, so the
//! leader counts it as having those records. The high watermark is the minimum log end offset
//! over the leader and the ISR members; a member that has not fetched since this leadership
//! began holds it where it is. A member that has not caught up with the leader's log end for
//! `replica_lag_time_max_ms` is proposed for removal; a replica outside the ISR that reaches
//! the high watermark (and this epoch's first offset) is proposed for addition. Proposals go to
//! the controller, which commits or refuses them; only a committed change alters the ISR that
//! `min.insync.replicas` counts.

use std::collections::BTreeMap;

use strom_format::{LeaderEpoch, Offset};

use crate::NodeId;

/// Settings of a leader's ISR management.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderConfig {
    /// A follower that has not caught up for this long leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`, 30 s there since 2.5; 10 s here as the issue asks).
    pub replica_lag_time_max_ms: u64,
    /// acks=all needs at least this many replicas in the committed ISR.
    pub min_insync_replicas: usize,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig { replica_lag_time_max_ms: 10_000, min_insync_replicas: 1 }
    }
}

/// The partition as the committed metadata describes it.
///
/// ```
/// use strom_format::LeaderEpoch;
/// use strom_replication::Assignment;
/// let a = Assignment {
///     leader_epoch: LeaderEpoch::new(4), partition_epoch: 9,
///     replicas: vec![1, 2, 3], isr: vec![1, 2],
/// };
/// assert!(a.isr.iter().all(|n| a.replicas.contains(n)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Bumped by every leader or ISR change; an ISR change names the one it was based on.
    pub partition_epoch: i32,
    /// All replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The committed in-sync replicas.
    pub isr: Vec<NodeId>,
}

/// An ISR change for the controller (Kafka's AlterPartition): valid only while the partition is
/// still at `leader_epoch` and `partition_epoch`.
///
/// ```
/// use strom_format::LeaderEpoch;
/// use strom_replication::IsrChange;
/// let change = IsrChange { leader_epoch: LeaderEpoch::new(1), partition_epoch: 3, isr: vec![1, 3] };
/// assert_eq!(change.isr.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// The leader epoch the change was computed in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch it was computed on.
    pub partition_epoch: i32,
    /// The ISR asked for.
    pub isr: Vec<NodeId>,
}

/// acks=all refused: fewer in-sync replicas than `min.insync.replicas`.
///
/// ```
/// use strom_replication::NotEnoughReplicas;
/// let e = NotEnoughReplicas { isr: 1, required: 2 };
/// assert!(e.to_string().contains("min.insync.replicas"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEnoughReplicas {
    /// Members of the committed ISR.
    pub isr: usize,
    /// `min.insync.replicas`.
    pub required: usize,
}

impl std::fmt::Display for NotEnoughReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in-sync replica(s), fewer than min.insync.replicas={}",
            self.isr, self.required
        )
    }
}

impl std::error::Error for NotEnoughReplicas {}

/// What a follower fetch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchUpdate {
    /// The new high watermark, when it moved.
    pub high_watermark: Option<Offset>,
    /// An ISR expansion to propose.
    pub isr_change: Option<IsrChange>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's log end offset as of its last fetch; `None` before its first fetch in
    /// this leadership.
    log_end: Option<Offset>,
    /// Last time its log end reached the leader's (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: u64,
    /// The leader's log end offset and the time at the follower's previous fetch: reaching
    /// that offset now means it was caught up then.
    prev_fetch_leader_end: Offset,
    prev_fetch_ms: u64,
}

/// The leader's replication state of one partition.
///
/// ```
/// use strom_format::{LeaderEpoch, Offset};
/// use strom_replication::{Assignment, LeaderConfig, LeaderState};
/// let a = Assignment { leader_epoch: LeaderEpoch::new(1), partition_epoch: 1,
///     replicas: vec![1, 2, 3], isr: vec![1, 2, 3] };
/// let mut leader = LeaderState::new(1, &a, Offset::new(0), Offset::new(0), 0, LeaderConfig::default());
/// leader.on_append(Offset::new(10));
/// assert_eq!(leader.high_watermark(), Offset::new(0)); // followers have nothing yet
/// leader.on_follower_fetch(2, Offset::new(10), 5);
/// let update = leader.on_follower_fetch(3, Offset::new(10), 6);
/// assert_eq!(update.high_watermark, Some(Offset::new(10)));
/// ```
#[derive(Debug, Clone)]
pub struct LeaderState {
    me: NodeId,
    config: LeaderConfig,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    replicas: Vec<NodeId>,
    isr: Vec<NodeId>,
    pending: Option<IsrChange>,
    followers: BTreeMap<NodeId, Progress>,
    log_end: Offset,
    high_watermark: Offset,
    /// The leader's log end when it took over: a follower must have everything below it (all
    /// earlier epochs) before it may join the ISR.
    epoch_start_offset: Offset,
}

impl LeaderState {
    /// Takes leadership of a partition whose log ends at `log_end`, with the high watermark
    /// it had as a follower (or after a restart) as the starting point.
    pub fn new(
        me: NodeId,
        assignment: &Assignment,
        log_end: Offset,
        high_watermark: Offset,
        now_ms: u64,
        config: LeaderConfig,
    ) -> Self {
        let mut state = LeaderState {
            me,
            config,
            leader_epoch: assignment.leader_epoch,
            partition_epoch: assignment.partition_epoch,
            replicas: assignment.replicas.clone(),
            isr: assignment.isr.clone(),
            pending: None,
            followers: BTreeMap::new(),
            log_end,
            high_watermark: high_watermark.min(log_end),
            epoch_start_offset: log_end,
        };
        for &n in &assignment.replicas {
            if n != me {
                state.followers.insert(n, Progress::fresh(now_ms, log_end));
            }
        }
        state.recompute();
        state
    }

    /// The leader epoch.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The ISR change waiting for the controller, if any.
    pub fn pending(&self) -> Option<&IsrChange> {
        self.pending.as_ref()
    }

    /// The settings in force.
    pub fn config(&self) -> LeaderConfig {
        self.config
    }

    /// Changes the settings (a topic's `min.insync.replicas` was altered).
    pub fn set_config(&mut self, config: LeaderConfig) {
        self.config = config;
    }

    /// A follower's log end offset as last reported, if it fetched in this leadership.
    pub fn follower_log_end(&self, follower: NodeId) -> Option<Offset> {
        self.followers.get(&follower).and_then(|p| p.log_end)
    }

    /// A newer committed image of the partition in the same leader epoch (an ISR change
    /// committed, or the replica set changed). Returns the new high watermark if it moved.
    pub fn update_assignment(&mut self, assignment: &Assignment, now_ms: u64) -> Option<Offset> {
        assert_eq!(
            assignment.leader_epoch, self.leader_epoch,
            "a leader epoch change makes a new LeaderState"
        );
        if assignment.partition_epoch < self.partition_epoch {
            return None;
        }
        if self.pending.as_ref().is_some_and(|p| p.partition_epoch < assignment.partition_epoch) {
            // Committed, or overtaken by another change: either way no longer pending.
            self.pending = None;
        }
        self.partition_epoch = assignment.partition_epoch;
        self.isr = assignment.isr.clone();
        self.replicas = assignment.replicas.clone();
        let me = self.me;
        let log_end = self.log_end;
        self.followers.retain(|n, _| assignment.replicas.contains(n));
        for &n in &assignment.replicas {
            if n != me {
                self.followers.entry(n).or_insert_with(|| Progress::fresh(now_ms, log_end));
            }
        }
        self.recompute()
    }

    /// The controller definitely refused the pending change (an ineligible replica): the next
    /// tick or fetch may propose again on the image as it then is.
    ///
    /// Not for a lost answer or a stale-epoch refusal: an earlier copy of the request may have
    /// committed, and clearing an expansion here would let the high watermark pass a member
    /// the committed ISR holds. Resend the same change instead and leave it pending until
    /// [`LeaderState::update_assignment`] (the next image) or a new leadership resolves it, as
    /// Kafka's `Partition.handleAlterPartitionError` does for INVALID_UPDATE_VERSION.
    pub fn isr_change_failed(&mut self) {
        self.pending = None;
    }

    /// The leader's own log grew (or was cut back after a failed write) to `log_end`.
    /// Returns the new high watermark if it moved.
    pub fn on_append(&mut self, log_end: Offset) -> Option<Offset> {
        self.log_end = log_end;
        if self.high_watermark > log_end {
            // A failed write cut the log below what was exposed (records acknowledged before
            // a failed fsync): follow it down rather than point past the end.
            self.high_watermark = log_end;
            return Some(log_end);
        }
        self.recompute()
    }

    /// A fetch from `follower` at `fetch_offset` (its log end offset), answered at `now_ms`.
    pub fn on_follower_fetch(
        &mut self,
        follower: NodeId,
        fetch_offset: Offset,
        now_ms: u64,
    ) -> FetchUpdate {
        let log_end = self.log_end;
        let Some(progress) = self.followers.get_mut(&follower) else {
            return FetchUpdate::default();
        };
        // A follower never has more than the leader; a larger offset is a follower that has not
        // truncated yet and has nothing the leader can count.
        let reached = fetch_offset.min(log_end);
        if fetch_offset >= log_end {
            progress.last_caught_up_ms = now_ms;
        } else if fetch_offset >= progress.prev_fetch_leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.prev_fetch_ms);
        }
        progress.prev_fetch_leader_end = log_end;
        progress.prev_fetch_ms = now_ms;
        progress.log_end = Some(reached);
        let high_watermark = self.recompute();
        let isr_change = self.maybe_expand(follower, reached);
        FetchUpdate { high_watermark, isr_change }
    }

    /// Periodic check: followers in the ISR that have not caught up for
    /// `replica_lag_time_max_ms` are proposed for removal.
    pub fn tick(&mut self, now_ms: u64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let laggards: Vec<NodeId> = self
            .isr
            .iter()
            .copied()
            .filter(|n| *n != self.me)
            .filter(|n| {
                self.followers
                    .get(n)
                    .is_some_and(|p| now_ms.saturating_sub(p.last_caught_up_ms) > lag)
            })
            .collect();
        if laggards.is_empty() {
            return None;
        }
        let isr: Vec<NodeId> = self.isr.iter().copied().filter(|n| !laggards.contains(n)).collect();
        self.propose(isr)
    }

    /// acks=all may be attempted: the committed ISR is at least `min.insync.replicas`.
    pub fn check_min_isr(&self) -> Result<(), NotEnoughReplicas> {
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(NotEnoughReplicas {
                isr: self.isr.len(),
                required: self.config.min_insync_replicas,
            });
        }
        Ok(())
    }

    fn maybe_expand(&mut self, follower: NodeId, reached: Offset) -> Option<IsrChange> {
        if self.pending.is_some()
            || self.isr.contains(&follower)
            || reached < self.high_watermark
            || reached < self.epoch_start_offset
        {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(follower);
        // Keep the replica order, so the list reads the same everywhere.
        isr.sort_by_key(|n| self.replicas.iter().position(|r| r == n));
        self.propose(isr)
    }

    fn propose(&mut self, isr: Vec<NodeId>) -> Option<IsrChange> {
        debug_assert!(isr.contains(&self.me), "the leader stays in its ISR");
        let change = IsrChange {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        };
        self.pending = Some(change.clone());
        Some(change)
    }

    /// The ISR the high watermark waits for: the committed one plus members a pending change
    /// adds (Kafka's maximal ISR), so neither a commit nor a refusal of the change can expose
    /// a record some member lacks.
    fn maximal_isr(&self) -> impl Iterator<Item = NodeId> + '_ {
        let added = self.pending.iter().flat_map(|p| p.isr.iter().copied());
        self.isr.iter().copied().chain(added.filter(|n| !self.isr.contains(n)))
    }

    fn recompute(&mut self) -> Option<Offset> {
        let mut candidate = self.log_end;
        for n in self.maximal_isr() {
            if n == self.me {
                continue;
            }
            match self.followers.get(&n).and_then(|p| p.log_end) {
                Some(end) => candidate = candidate.min(end),
                // Not heard from in this leadership: hold the high watermark.
                None => return None,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

impl Progress {
    fn fresh(now_ms: u64, leader_end: Offset) -> Self {
        // A full lag period of grace from the start of the leadership (Kafka does the same).
        Progress {
            log_end: None,
            last_caught_up_ms: now_ms,
            prev_fetch_leader_end: leader_end,
            prev_fetch_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: i64) -> Offset {
        Offset::new(n)
    }

    fn assignment(isr: &[NodeId]) -> Assignment {
        Assignment {
            leader_epoch: LeaderEpoch::new(1),
            partition_epoch: 5,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        }
    }

    fn config(min_isr: usize) -> LeaderConfig {
        LeaderConfig { replica_lag_time_max_ms: 1000, min_insync_replicas: min_isr }
    }

    #[test]
    fn a_sole_replica_commits_on_append() {
        let a = Assignment {
            leader_epoch: LeaderEpoch::new(0),
            partition_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
        };
        let mut leader = LeaderState::new(1, &a, o(7), o(0), 0, config(1));
        assert_eq!(leader.high_watermark(), o(7));
        assert_eq!(leader.on_append(o(9)), Some(o(9)));
    }

    #[test]
    fn high_watermark_is_the_minimum_of_the_isr() {
        let mut leader = LeaderState::new(1, &assignment(&[1, 2, 3]), o(0), o(0), 0, config(2));
        leader.on_append(o(10));
        assert_eq!(leader.on_follower_fetch(2, o(10), 1).high_watermark, None);
        assert_eq!(leader.on_follower_fetch(3, o(4), 1).high_watermark, Some(o(4)));
        assert_eq!(leader.on_follower_fetch(3, o(10), 2).high_watermark, Some(o(10)));
        // A follower behind the high watermark (a stale fetch) never moves it back.
        assert_eq!(leader.on_follower_fetch(3, o(2), 3).high_watermark, None);
        assert_eq!(leader.high_watermark(), o(10));
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_of_the_isr_and_then_commits_alone() {
        let mut leader = LeaderState::new(1, &assignment(&[1, 2, 3]), o(0), o(0), 0, config(2));
        leader.on_append(o(10));
        leader.on_follower_fetch(2, o(10), 100);
        assert_eq!(leader.tick(900), None);
        // Follower 3 never fetched: after the lag time it goes.
        let change = leader.tick(1001).expect("shrink");
        assert_eq!(
            change,
            IsrChange { leader_epoch: LeaderEpoch::new(1), partition_epoch: 5, isr: vec![1, 2] }
        );
        // While pending, nothing else is proposed and the old ISR still holds the watermark.
        assert_eq!(leader.tick(5000), None);
        assert_eq!(leader.high_watermark(), o(0));
        // Committed: the high watermark follows the smaller ISR.
        let committed = Assignment { partition_epoch: 6, isr: vec![1, 2], ..assignment(&[]) };
        assert_eq!(leader.update_assignment(&committed, 5001), Some(o(10)));
        assert!(leader.pending().is_none());
        assert!(leader.check_min_isr().is_ok());
    }

    #[test]
    fn min_insync_counts_only_the_committed_isr() {
        let mut leader = LeaderState::new(1, &assignment(&[1, 2]), o(0), o(0), 0, config(2));
        assert!(leader.check_min_isr().is_ok());
        let shrunk = Assignment { partition_epoch: 6, isr: vec![1], ..assignment(&[]) };
        leader.update_assignment(&shrunk, 10);
        assert_eq!(leader.check_min_isr(), Err(NotEnoughReplicas { isr: 1, required: 2 }));
    }

    #[test]
    fn a_caught_up_follower_is_proposed_back_and_holds_the_watermark_meanwhile() {
        let mut leader = LeaderState::new(1, &assignment(&[1, 2]), o(0), o(0), 0, config(1));
        leader.on_append(o(10));
        leader.on_follower_fetch(2, o(10), 1);
        assert_eq!(leader.high_watermark(), o(10));
        // Follower 3 is behind the high watermark: not yet.
        assert_eq!(leader.on_follower_fetch(3, o(5), 2).isr_change, None);
        let update = leader.on_follower_fetch(3, o(10), 3);
        assert_eq!(update.isr_change.expect("expand").isr, vec![1, 2, 3]);
        // The pending member counts for the high watermark at once.
        leader.on_append(o(12));
        leader.on_follower_fetch(2, o(12), 4);
        assert_eq!(leader.high_watermark(), o(10));
        assert_eq!(leader.on_follower_fetch(3, o(12), 5).high_watermark, Some(o(12)));
        // Refused (say the leader epoch moved on): proposals may start again.
        leader.isr_change_failed();
        assert!(leader.pending().is_none());
    }

    #[test]
    fn a_follower_must_reach_the_epoch_start_to_join() {
        // The new leader's log ended at 20 when it took over with a high watermark of 15.
        let mut leader = LeaderState::new(1, &assignment(&[1]), o(20), o(15), 0, config(1));
        assert_eq!(leader.high_watermark(), o(20));
        assert_eq!(leader.on_follower_fetch(2, o(18), 1).isr_change, None);
        assert!(leader.on_follower_fetch(2, o(20), 2).isr_change.is_some());
    }

    #[test]
    fn a_failed_write_lowers_the_watermark_with_the_log() {
        let a = Assignment { replicas: vec![1], isr: vec![1], ..assignment(&[]) };
        let mut leader = LeaderState::new(1, &a, o(10), o(10), 0, config(1));
        assert_eq!(leader.on_append(o(8)), Some(o(8)));
        assert_eq!(leader.high_watermark(), o(8));
    }

    #[test]
    fn a_follower_that_keeps_up_under_load_stays_in_the_isr() {
        let mut leader = LeaderState::new(1, &assignment(&[1, 2]), o(0), o(0), 0, config(1));
        // The leader appends every 100 ms; the follower always fetches what the leader had at
        // its previous fetch, never the very end.
        let mut end = 0;
        for t in 1..100u64 {
            let prev = end;
            end += 10;
            leader.on_append(o(end));
            leader.on_follower_fetch(2, o(prev), t * 100);
            assert_eq!(leader.tick(t * 100), None, "at {t}");
        }
    }
}
