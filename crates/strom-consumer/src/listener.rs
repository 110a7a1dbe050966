//! Callbacks that tell the application when its consumer group moves partitions to or from
//! this consumer, so it can flush state, commit, or set up per-partition work.

use std::fmt;

use strom_format::Offset;

use crate::TopicPartition;

/// What [`RebalanceListener::on_partitions_revoked_with`] can do while the revoked partitions
/// are still this consumer's: read their positions and commit offsets for them.
///
/// Commits asked for here are sent, for the generation the partitions were assigned in, as
/// soon as the callback returns and before the consumer rejoins the group, so under eager
/// rebalancing they land before the rebalance completes and the partitions' next owner starts
/// exactly there. A failed commit is logged (the partitions are going regardless).
///
/// ```
/// use strom_consumer::{RevokeContext, TopicPartition};
/// use strom_format::{Offset, PartitionId};
///
/// let tp = TopicPartition::new("orders", PartitionId::new(0));
/// let mut ctx = RevokeContext::new(vec![(tp.clone(), Offset::new(42))]);
/// assert_eq!(ctx.position(&tp), Some(Offset::new(42)));
/// ctx.commit(&[(tp.clone(), Offset::new(40))]);
/// assert_eq!(ctx.commits(), &[(tp, Offset::new(40))]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RevokeContext {
    positions: Vec<(TopicPartition, Offset)>,
    commits: Vec<(TopicPartition, Offset)>,
}

impl RevokeContext {
    /// A context for partitions at these positions (the consumer makes one per revocation;
    /// public so listeners can be tested without a broker).
    pub fn new(positions: Vec<(TopicPartition, Offset)>) -> Self {
        RevokeContext { positions, commits: Vec::new() }
    }

    /// The consumer's position (next offset `poll` would return) in a revoked partition, if it
    /// has one.
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.positions.iter().find(|(p, _)| p == tp).map(|(_, o)| *o)
    }

    /// Commits these offsets (the next offset to read, as in Kafka) before the rebalance goes
    /// on; a later call for the same partition wins.
    pub fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) {
        for (tp, offset) in offsets {
            self.commits.retain(|(p, _)| p != tp);
            self.commits.push((tp.clone(), *offset));
        }
    }

    /// Commits the consumer's positions of every revoked partition (what auto-commit does).
    pub fn commit_positions(&mut self) {
        let positions = self.positions.clone();
        self.commit(&positions);
    }

    /// The commits asked for so far.
    pub fn commits(&self) -> &[(TopicPartition, Offset)] {
        &self.commits
    }

    pub(crate) fn into_commits(self) -> Vec<(TopicPartition, Offset)> {
        self.commits
    }
}

/// Told when group rebalances take partitions from or give partitions to this consumer.
///
/// Every callback runs inside [`Consumer::poll`](crate::Consumer::poll) (or
/// [`Consumer::close`](crate::Consumer::close)), on the application's task, never
/// concurrently with anything else the consumer does. With auto-commit on, the positions of
/// revoked partitions are committed just before `on_partitions_revoked` runs.
///
/// ```
/// use strom_consumer::{RebalanceListener, TopicPartition};
///
/// #[derive(Default)]
/// struct Tracker {
///     owned: Vec<TopicPartition>,
/// }
///
/// impl RebalanceListener for Tracker {
///     fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
///         self.owned.retain(|tp| !partitions.contains(tp));
///     }
///     fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
///         self.owned.extend_from_slice(partitions);
///     }
/// }
///
/// let mut tracker = Tracker::default();
/// let tp = TopicPartition::new("orders", strom_format::PartitionId::new(0));
/// tracker.on_partitions_assigned(&[tp.clone()]);
/// tracker.on_partitions_lost(&[tp]); // defaults to on_partitions_revoked
/// assert!(tracker.owned.is_empty());
/// ```
pub trait RebalanceListener: Send {
    /// Partitions this consumer gives up in an orderly rebalance: all of them at the start of
    /// an eager rebalance, only those moving elsewhere in a cooperative one, all of them on
    /// close. Called only with a non-empty list.
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]);

    /// [`RebalanceListener::on_partitions_revoked`] with a handle that can commit: what the
    /// consumer actually calls. A manual-commit application overrides this one to commit the
    /// offsets it has processed ([`RevokeContext::commit`]) before the partitions move, so
    /// their next owner neither repeats nor skips a record. Defaults to
    /// `on_partitions_revoked`.
    fn on_partitions_revoked_with(
        &mut self,
        partitions: &[TopicPartition],
        context: &mut RevokeContext,
    ) {
        let _ = context;
        self.on_partitions_revoked(partitions);
    }

    /// Partitions newly assigned by a completed rebalance (possibly none: it is called after
    /// every rebalance the consumer completes). Their positions come from the group's committed
    /// offsets, or `auto_offset_reset` where the group has none.
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]);

    /// Partitions that already belong to someone else: the consumer was dropped from the group
    /// (session expired, fenced, poll not called within `max_poll_interval`), so nothing can be
    /// committed for them any more. Defaults to [`RebalanceListener::on_partitions_revoked`].
    /// Called only with a non-empty list.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

type Callback = Box<dyn FnMut(&[TopicPartition]) + Send>;
type RevokeCallback = Box<dyn FnMut(&[TopicPartition], &mut RevokeContext) + Send>;

/// A [`RebalanceListener`] made of closures; callbacks left unset do nothing (an unset
/// `on_lost` calls `on_revoked`'s closure).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use strom_consumer::{RebalanceCallbacks, RebalanceListener, TopicPartition};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = Arc::clone(&seen);
/// let mut listener = RebalanceCallbacks::new()
///     .on_assigned(move |tps| log.lock().unwrap().extend_from_slice(tps))
///     .on_revoked(|tps| println!("revoked {tps:?}"));
/// let tp = TopicPartition::new("orders", strom_format::PartitionId::new(1));
/// listener.on_partitions_assigned(&[tp.clone()]);
/// assert_eq!(*seen.lock().unwrap(), vec![tp]);
/// ```
#[derive(Default)]
pub struct RebalanceCallbacks {
    revoked: Option<Callback>,
    revoked_with: Option<RevokeCallback>,
    assigned: Option<Callback>,
    lost: Option<Callback>,
}

impl RebalanceCallbacks {
    /// Callbacks that do nothing until set.
    ///
    /// ```
    /// let listener = strom_consumer::RebalanceCallbacks::new();
    /// ```
    pub fn new() -> Self {
        RebalanceCallbacks::default()
    }

    /// Runs `f` for [`RebalanceListener::on_partitions_revoked`].
    ///
    /// ```
    /// let listener = strom_consumer::RebalanceCallbacks::new().on_revoked(|tps| {
    ///     println!("giving up {} partition(s)", tps.len());
    /// });
    /// ```
    pub fn on_revoked(mut self, f: impl FnMut(&[TopicPartition]) + Send + 'static) -> Self {
        self.revoked = Some(Box::new(f));
        self
    }

    /// Runs `f` for [`RebalanceListener::on_partitions_revoked_with`]: revoked partitions and a
    /// [`RevokeContext`] to commit through. Takes precedence over `on_revoked` for revocations
    /// (not for lost partitions).
    ///
    /// ```
    /// let listener = strom_consumer::RebalanceCallbacks::new().on_revoked_with(|_tps, ctx| {
    ///     ctx.commit_positions();
    /// });
    /// ```
    pub fn on_revoked_with(
        mut self,
        f: impl FnMut(&[TopicPartition], &mut RevokeContext) + Send + 'static,
    ) -> Self {
        self.revoked_with = Some(Box::new(f));
        self
    }

    /// Runs `f` for [`RebalanceListener::on_partitions_assigned`].
    ///
    /// ```
    /// let listener = strom_consumer::RebalanceCallbacks::new().on_assigned(|tps| {
    ///     println!("now reading {tps:?}");
    /// });
    /// ```
    pub fn on_assigned(mut self, f: impl FnMut(&[TopicPartition]) + Send + 'static) -> Self {
        self.assigned = Some(Box::new(f));
        self
    }

    /// Runs `f` for [`RebalanceListener::on_partitions_lost`].
    ///
    /// ```
    /// let listener = strom_consumer::RebalanceCallbacks::new().on_lost(|tps| {
    ///     eprintln!("lost {tps:?} without a commit");
    /// });
    /// ```
    pub fn on_lost(mut self, f: impl FnMut(&[TopicPartition]) + Send + 'static) -> Self {
        self.lost = Some(Box::new(f));
        self
    }
}

impl fmt::Debug for RebalanceCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebalanceCallbacks")
            .field("revoked", &self.revoked.is_some())
            .field("revoked_with", &self.revoked_with.is_some())
            .field("assigned", &self.assigned.is_some())
            .field("lost", &self.lost.is_some())
            .finish()
    }
}

impl RebalanceListener for RebalanceCallbacks {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        if let Some(f) = self.revoked.as_mut() {
            f(partitions);
        }
    }

    fn on_partitions_revoked_with(
        &mut self,
        partitions: &[TopicPartition],
        context: &mut RevokeContext,
    ) {
        match self.revoked_with.as_mut() {
            Some(f) => f(partitions, context),
            None => self.on_partitions_revoked(partitions),
        }
    }

    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        if let Some(f) = self.assigned.as_mut() {
            f(partitions);
        }
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        match self.lost.as_mut() {
            Some(f) => f(partitions),
            None => self.on_partitions_revoked(partitions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use strom_format::PartitionId;

    #[test]
    fn lost_falls_back_to_revoked() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&calls);
        let mut listener =
            RebalanceCallbacks::new().on_revoked(move |tps| log.lock().unwrap().push(tps.len()));
        let tp = TopicPartition::new("t", PartitionId::new(0));
        listener.on_partitions_lost(&[tp.clone(), tp]);
        listener.on_partitions_assigned(&[]);
        assert_eq!(*calls.lock().unwrap(), vec![2]);
    }
}
