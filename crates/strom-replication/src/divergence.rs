//! Where a follower's log and its leader's part ways, found by leader epoch (KIP-101, and
//! KIP-320's diverging epoch in the fetch response) rather than by high watermark.
//!
//! A follower fetches with its log end offset and the epoch of its last batch. The leader looks
//! that epoch up in its own epoch cache: when the leader's log holds that epoch up to at least
//! the fetch offset, the logs agree below it and records flow. Otherwise the leader answers
//! with the largest epoch it has at or below the follower's and where that epoch ends in the
//! leader's log; the follower cuts its log to where both agree ([`truncation_point`]) and
//! fetches again. Each round removes at least one epoch of disagreement, so it converges.

use strom_format::{LeaderEpoch, Offset};

/// An epoch and the offset where it ends in some log (the start of the next epoch, or the log
/// end offset for the latest one): Kafka's `EpochEndOffset`.
///
/// ```
/// use strom_format::{LeaderEpoch, Offset};
/// use strom_replication::EpochEndOffset;
/// let e = EpochEndOffset { epoch: LeaderEpoch::new(3), end_offset: Offset::new(120) };
/// assert_eq!(e.epoch.get(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    /// The epoch; [`LeaderEpoch::UNKNOWN`] when the leader knows no epoch at or below the one
    /// asked about.
    pub epoch: LeaderEpoch,
    /// Where it ends.
    pub end_offset: Offset,
}

/// The leader's check of a follower fetch: `None` when the follower's log agrees with the
/// leader's below `fetch_offset`, else the diverging epoch to send back.
///
/// `last_fetched_epoch` is the epoch of the follower's last batch (`None` for a log that
/// carries no epochs: nothing to check). `leader_end_for_epoch` is the leader's answer for that
/// epoch (`Log::end_offset_for_epoch`), `leader_first_offset` the offset its epoch history
/// starts at (used when the leader knows no epoch that old).
///
/// ```
/// use strom_format::{LeaderEpoch, Offset};
/// use strom_replication::{EpochEndOffset, diverging_epoch};
/// let e = |n| LeaderEpoch::new(n);
/// // The follower wrote epoch 2 up to offset 50; the leader's epoch 2 ended at 40.
/// let diverged = diverging_epoch(Some(e(2)), Offset::new(50), Some((e(2), Offset::new(40))),
///     Offset::ZERO);
/// assert_eq!(diverged, Some(EpochEndOffset { epoch: e(2), end_offset: Offset::new(40) }));
/// // Same epoch, and it runs past the fetch offset in the leader: the logs agree.
/// assert_eq!(diverging_epoch(Some(e(2)), Offset::new(50),
///     Some((e(2), Offset::new(60))), Offset::ZERO), None);
/// ```
pub fn diverging_epoch(
    last_fetched_epoch: Option<LeaderEpoch>,
    fetch_offset: Offset,
    leader_end_for_epoch: Option<(LeaderEpoch, Offset)>,
    leader_first_offset: Offset,
) -> Option<EpochEndOffset> {
    let asked = last_fetched_epoch?;
    match leader_end_for_epoch {
        Some((epoch, end)) if epoch == asked && end >= fetch_offset => None,
        Some((epoch, end)) => Some(EpochEndOffset { epoch, end_offset: end }),
        None => {
            Some(EpochEndOffset { epoch: LeaderEpoch::UNKNOWN, end_offset: leader_first_offset })
        }
    }
}

/// Where a follower cuts its log after the leader reported `diverging`. `local_end_for_epoch`
/// is the follower's own answer for `diverging.epoch`; `local_first_epoch_offset` where the
/// follower's epoch history starts (its log start when every batch carries an epoch);
/// `local_end` its log end offset. The result never exceeds `local_end`.
///
/// Records the follower holds from this point on were written in an epoch the leader's log
/// does not have at those offsets, so none of them can be acknowledged ones the leader lacks:
/// an acknowledged record is in the leader's log (it was elected from the ISR).
///
/// ```
/// use strom_format::{LeaderEpoch, Offset};
/// use strom_replication::{EpochEndOffset, truncation_point};
/// let e = |n| LeaderEpoch::new(n);
/// let o = |n| Offset::new(n);
/// // Leader: epoch 2 ended at 40. Follower: it has epoch 2 too, ending at 50 (its own later
/// // writes as a deposed leader): cut at 40.
/// let leader = EpochEndOffset { epoch: e(2), end_offset: o(40) };
/// assert_eq!(truncation_point(leader, Some((e(2), o(50))), o(0), o(55)), o(40));
/// // Follower never had epoch 2; its epoch 1 ended at 30: cut at 30.
/// assert_eq!(truncation_point(leader, Some((e(1), o(30))), o(0), o(55)), o(30));
/// ```
pub fn truncation_point(
    diverging: EpochEndOffset,
    local_end_for_epoch: Option<(LeaderEpoch, Offset)>,
    local_first_epoch_offset: Offset,
    local_end: Offset,
) -> Offset {
    let agreed = if diverging.epoch == LeaderEpoch::UNKNOWN {
        diverging.end_offset
    } else {
        match local_end_for_epoch {
            Some((_, local)) => diverging.end_offset.min(local),
            // Every epoch the follower has is newer than the leader's: nothing after the
            // start of its epoch history can match.
            None => diverging.end_offset.min(local_first_epoch_offset),
        }
    };
    agreed.min(local_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: i32) -> LeaderEpoch {
        LeaderEpoch::new(n)
    }
    fn o(n: i64) -> Offset {
        Offset::new(n)
    }

    /// A log as its epoch history: (epoch, start offset) entries plus its end offset.
    struct Model {
        entries: Vec<(i32, i64)>,
        end: i64,
    }

    impl Model {
        fn end_for(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
            let i = self.entries.iter().rposition(|(ep, _)| *ep <= epoch.get())?;
            let end = self.entries.get(i + 1).map_or(self.end, |(_, start)| *start);
            Some((e(self.entries[i].0), o(end)))
        }
        fn first(&self) -> Offset {
            o(self.entries.first().map_or(self.end, |(_, s)| *s))
        }
        fn latest(&self) -> Option<LeaderEpoch> {
            self.entries.last().map(|(ep, _)| e(*ep))
        }
        /// The epoch of the record at `offset`.
        fn epoch_at(&self, offset: i64) -> i32 {
            self.entries.iter().rev().find(|(_, s)| *s <= offset).map_or(-1, |(ep, _)| *ep)
        }
        fn truncate(&mut self, to: i64) {
            self.end = self.end.min(to);
            self.entries.retain(|(_, s)| *s < self.end);
        }
    }

    /// Runs the fetch / truncate rounds until the leader accepts the follower's position.
    fn reconcile(leader: &Model, follower: &mut Model) -> usize {
        for round in 0..100 {
            let diverged = diverging_epoch(
                follower.latest(),
                o(follower.end),
                follower.latest().and_then(|ep| leader.end_for(ep)),
                leader.first(),
            );
            let Some(d) = diverged else { return round };
            let cut =
                truncation_point(d, follower.end_for(d.epoch), follower.first(), o(follower.end));
            follower.truncate(cut.get());
        }
        panic!("no convergence");
    }

    #[test]
    fn follower_truncates_to_divergence_point_of_a_deposed_leader() {
        // Follower led epoch 2 and wrote 40..55 nobody else got; the new leader (epoch 3)
        // wrote its own 40.. in epoch 3.
        let leader = Model { entries: vec![(0, 0), (2, 20), (3, 40)], end: 70 };
        let mut follower = Model { entries: vec![(0, 0), (2, 20)], end: 55 };
        reconcile(&leader, &mut follower);
        assert_eq!(follower.end, 40);
    }

    #[test]
    fn a_follower_behind_is_not_truncated() {
        let leader = Model { entries: vec![(0, 0), (1, 10)], end: 70 };
        let mut follower = Model { entries: vec![(0, 0), (1, 10)], end: 30 };
        assert_eq!(reconcile(&leader, &mut follower), 0);
        assert_eq!(follower.end, 30);
    }

    proptest::proptest! {
        /// Two logs sharing a prefix and then written by different leaders in different
        /// epochs (the follower's epochs never above the leader's latest) reconcile to
        /// exactly the longest prefix on which they agree, record by record.
        #[test]
        fn reconcile_finds_the_longest_common_prefix(
            common in proptest::collection::vec(1i64..20, 1..4),
            leader_tail in proptest::collection::vec(1i64..20, 0..3),
            follower_tail in proptest::collection::vec(1i64..20, 0..3),
            extra in 0i64..20,
        ) {
            // Shared history: epochs 0, 1, ... of the given lengths.
            let mut entries = Vec::new();
            let mut at = 0;
            for (i, len) in common.iter().enumerate() {
                entries.push((i as i32 * 2, at));
                at += len;
            }
            let shared_end = at;
            let next_epoch = common.len() as i32 * 2;
            // The last shared epoch continues a little in the follower only (unreplicated).
            let mut follower = Model { entries: entries.clone(), end: shared_end + extra };
            let mut f_at = follower.end;
            for (i, len) in follower_tail.iter().enumerate() {
                follower.entries.push((next_epoch + i as i32 * 2, f_at));
                f_at += len;
            }
            follower.end = f_at;
            // The leader continued the shared log in later, odd epochs above the follower's.
            let mut leader = Model { entries, end: shared_end };
            let top = next_epoch + follower_tail.len() as i32 * 2 + 1;
            let mut l_at = shared_end;
            for (i, len) in leader_tail.iter().enumerate() {
                leader.entries.push((top + i as i32 * 2, l_at));
                l_at += len;
            }
            leader.end = l_at;
            let expected = {
                let mut n = 0;
                while n < leader.end.min(follower.end) && leader.epoch_at(n) == follower.epoch_at(n) {
                    n += 1;
                }
                // The unreplicated extension of the last shared epoch matches by epoch but
                // only when the leader has those offsets in that epoch too.
                n
            };
            reconcile(&leader, &mut follower);
            proptest::prop_assert!(follower.end <= leader.end.max(shared_end));
            for n in 0..follower.end {
                proptest::prop_assert_eq!(follower.epoch_at(n), leader.epoch_at(n));
            }
            proptest::prop_assert_eq!(follower.end, expected);
        }
    }
}
