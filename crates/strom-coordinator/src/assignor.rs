//! Client-side partition assignors: the group leader runs one over every member's
//! subscription and sends the result back through SyncGroup.
//!
//! Three strategies with Kafka's names and behaviour, so a Strom consumer and a Java consumer in
//! one group pick the same protocol and compute the same kind of assignment:
//! [`RangeAssignor`] (`"range"`), [`RoundRobinAssignor`] (`"roundrobin"`) and
//! [`CooperativeStickyAssignor`] (`"cooperative-sticky"`). All are deterministic: the same input
//! gives the same output, whatever order the members arrive in.

use std::collections::{BTreeMap, BTreeSet};

use crate::consumer_protocol::{Subscription, flatten};

/// One member's input to an assignor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberSubscription {
    /// The member's id, as the coordinator assigned it.
    pub member_id: String,
    /// Topics the member subscribes to.
    pub topics: Vec<String>,
    /// Partitions the member owns now (from Subscription v1+); only the sticky assignor reads it.
    pub owned_partitions: Vec<(String, i32)>,
    /// Generation the owned partitions were assigned in (`-1` when unknown).
    pub generation_id: i32,
}

impl MemberSubscription {
    /// Builds the assignor input from a decoded ConsumerProtocol subscription.
    pub fn from_subscription(member_id: impl Into<String>, sub: &Subscription) -> Self {
        MemberSubscription {
            member_id: member_id.into(),
            topics: sub.topics.clone(),
            owned_partitions: flatten(&sub.owned_partitions),
            generation_id: sub.generation_id,
        }
    }

    fn subscribes(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }
}

/// A partition assignment strategy.
pub trait Assignor: Send + Sync {
    /// The protocol name members advertise in JoinGroup.
    fn name(&self) -> &'static str;

    /// Assigns the partitions of the subscribed topics to members.
    ///
    /// `partitions_per_topic` holds the partition count of every topic known to exist; topics a
    /// member subscribes to but that are missing here are ignored. Every member gets an entry in
    /// the result, possibly empty; each list is sorted by `(topic, partition)`.
    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, i32)>>;
}

/// Looks an assignor up by its protocol name.
pub fn by_name(name: &str) -> Option<Box<dyn Assignor>> {
    match name {
        "range" => Some(Box::new(RangeAssignor)),
        "roundrobin" => Some(Box::new(RoundRobinAssignor)),
        "cooperative-sticky" => Some(Box::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

/// Kafka's `RangeAssignor`: for each topic, the subscribed members in id order get contiguous
/// ranges of partitions; the first `partitions % members` members get one extra.
///
/// ```
/// use std::collections::BTreeMap;
/// use strom_coordinator::assignor::{Assignor, MemberSubscription, RangeAssignor};
/// let members: Vec<_> = ["a", "b"].iter().map(|m| MemberSubscription {
///     member_id: m.to_string(), topics: vec!["t".into()], ..Default::default()
/// }).collect();
/// let out = RangeAssignor.assign(&members, &BTreeMap::from([("t".to_string(), 3)]));
/// assert_eq!(out["a"], vec![("t".to_string(), 0), ("t".to_string(), 1)]);
/// assert_eq!(out["b"], vec![("t".to_string(), 2)]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, i32)>> {
        let mut out = empty_assignment(members);
        for (topic, &count) in partitions_per_topic {
            let subscribers: BTreeSet<&str> = members
                .iter()
                .filter(|m| m.subscribes(topic))
                .map(|m| m.member_id.as_str())
                .collect();
            if subscribers.is_empty() || count <= 0 {
                continue;
            }
            let n = subscribers.len() as i64;
            let per_member = i64::from(count) / n;
            let extra = i64::from(count) % n;
            for (i, member) in subscribers.into_iter().enumerate() {
                let i = i as i64;
                let start = per_member * i + i.min(extra);
                let len = per_member + i64::from(i < extra);
                let list = out.entry(member.to_owned()).or_default();
                for p in start..start + len {
                    // Bounded by `count`, which is an i32.
                    list.push((topic.clone(), p as i32));
                }
            }
        }
        finish(out)
    }
}

/// Kafka's `RoundRobinAssignor`: all topic-partitions sorted, dealt one by one to the members
/// in id order, skipping members not subscribed to the partition's topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, i32)>> {
        let mut out = empty_assignment(members);
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        sorted.dedup_by(|a, b| a.member_id == b.member_id);
        if sorted.is_empty() {
            return out;
        }
        let mut next = 0usize;
        for (topic, &count) in partitions_per_topic {
            if !sorted.iter().any(|m| m.subscribes(topic)) {
                continue;
            }
            for p in 0..count.max(0) {
                // Someone subscribes, so this finds a member within one lap.
                for _ in 0..sorted.len() {
                    let candidate = sorted[next % sorted.len()];
                    next = (next + 1) % sorted.len();
                    if candidate.subscribes(topic) {
                        out.entry(candidate.member_id.clone())
                            .or_default()
                            .push((topic.clone(), p));
                        break;
                    }
                }
            }
        }
        finish(out)
    }
}

/// Kafka's `CooperativeStickyAssignor` (KIP-429): balanced, keeps the partitions members
/// already own where balance allows, and never moves a partition directly between members.
///
/// A partition that must change owner is left out of *both* members' assignments in this
/// rebalance: the old owner sees it missing and revokes it, and because its assignment lost
/// partitions it **must rejoin the group** right after revoking (Kafka's consumer does this
/// automatically). In that follow-up rebalance nobody owns the partition any more and it goes
/// to its new owner. So consumers using this assignor must (1) send their owned partitions in
/// Subscription v1+ and (2) rejoin whenever an assignment takes partitions away.
///
/// Ownership claims are validated: a claim on a partition that no longer exists, or of a topic
/// the member no longer subscribes to, is dropped; when two members claim one partition the one
/// with the higher generation keeps it, and on a tie neither keeps it. A partition anyone still
/// claims is never handed to a different member in the same rebalance.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<(String, i32)>> {
        let target = sticky_target(members, partitions_per_topic);
        // Every member claiming each partition, valid or not: the cooperative rule is about
        // what members physically hold, not about whose claim won.
        let mut claimants: BTreeMap<(&str, i32), BTreeSet<&str>> = BTreeMap::new();
        for m in members {
            for (topic, p) in &m.owned_partitions {
                claimants.entry((topic.as_str(), *p)).or_default().insert(m.member_id.as_str());
            }
        }
        let mut out = empty_assignment(members);
        for (member, partitions) in target {
            let kept = partitions
                .into_iter()
                .filter(|(topic, p)| {
                    claimants
                        .get(&(topic.as_str(), *p))
                        .is_none_or(|owners| owners.iter().all(|o| *o == member))
                })
                .collect();
            out.insert(member, kept);
        }
        finish(out)
    }
}

/// The balanced, sticky assignment the cooperative assignor converges to, before the
/// cooperative rule withholds partitions that are changing owner.
fn sticky_target(
    members: &[MemberSubscription],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeSet<(String, i32)>> {
    // Dedup members by id (the first subscription wins) so the result is well defined.
    let mut by_id: BTreeMap<&str, &MemberSubscription> = BTreeMap::new();
    for m in members {
        by_id.entry(m.member_id.as_str()).or_insert(m);
    }
    let exists = |topic: &str, p: i32| {
        partitions_per_topic.get(topic).is_some_and(|&count| p >= 0 && p < count)
    };

    // Resolve ownership claims: highest generation wins, ties mean nobody keeps it.
    let mut best: BTreeMap<(String, i32), (i32, Option<&str>)> = BTreeMap::new();
    for m in by_id.values() {
        let claims: BTreeSet<&(String, i32)> = m.owned_partitions.iter().collect();
        for tp in claims {
            if !exists(&tp.0, tp.1) || !m.subscribes(&tp.0) {
                continue;
            }
            match best.get_mut(tp) {
                None => {
                    best.insert(tp.clone(), (m.generation_id, Some(m.member_id.as_str())));
                }
                Some(entry) if m.generation_id > entry.0 => {
                    *entry = (m.generation_id, Some(m.member_id.as_str()));
                }
                Some(entry) if m.generation_id == entry.0 => entry.1 = None,
                Some(_) => {}
            }
        }
    }

    let mut assignment: BTreeMap<String, BTreeSet<(String, i32)>> =
        by_id.keys().map(|m| ((*m).to_owned(), BTreeSet::new())).collect();
    let mut owned_by: BTreeMap<(String, i32), String> = BTreeMap::new();
    for (tp, (_, owner)) in best {
        if let Some(owner) = owner {
            owned_by.insert(tp.clone(), owner.to_owned());
            if let Some(set) = assignment.get_mut(owner) {
                set.insert(tp);
            }
        }
    }

    let subscribers: BTreeMap<&str, Vec<&str>> = partitions_per_topic
        .keys()
        .map(|t| {
            let subs = by_id.values().filter(|m| m.subscribes(t)).map(|m| m.member_id.as_str());
            (t.as_str(), subs.collect())
        })
        .collect();

    // With identical subscriptions, first trim every member to the quota: members above it
    // give up their highest partitions, which then go to the members below it. This is the
    // common case and keeps as many owned partitions in place as balance allows.
    let total: usize = subscribers
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(t, _)| partitions_per_topic.get(*t).copied().unwrap_or(0).max(0) as usize)
        .sum();
    let uniform = by_id.values().all(|m| {
        subscribers.iter().all(|(t, subs)| subs.contains(&m.member_id.as_str()) == m.subscribes(t))
    });
    if uniform && !by_id.is_empty() {
        let n = by_id.len();
        let min_quota = total / n;
        let mut with_extra = total % n;
        // Members holding the most keep the extra slots, so fewer partitions move.
        let mut order: Vec<(String, usize)> =
            assignment.iter().map(|(m, s)| (m.clone(), s.len())).collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (member, len) in order {
            let quota = if with_extra > 0 && len > min_quota {
                with_extra -= 1;
                min_quota + 1
            } else {
                min_quota
            };
            if let Some(set) = assignment.get_mut(&member) {
                while set.len() > quota {
                    set.pop_last();
                }
            }
        }
    }

    // Hand out everything unassigned, each partition to the eligible member holding fewest.
    let assigned: BTreeSet<(String, i32)> = assignment.values().flatten().cloned().collect();
    for (topic, &count) in partitions_per_topic {
        let Some(subs) = subscribers.get(topic.as_str()) else { continue };
        for p in 0..count.max(0) {
            let tp = (topic.clone(), p);
            if assigned.contains(&tp) {
                continue;
            }
            let target = subs
                .iter()
                .min_by_key(|m| (assignment.get(**m).map_or(0, BTreeSet::len), **m))
                .map(|m| (*m).to_owned());
            if let Some(target) = target {
                assignment.entry(target).or_default().insert(tp);
            }
        }
    }

    // Even out what remains uneven (differing subscriptions): move a partition from a member
    // to an eligible one holding at least two fewer, preferring partitions the giver did not
    // own before. Every move lowers the sum of squared sizes, so this terminates.
    while let Some((from, to, tp)) = find_move(&assignment, &subscribers, &owned_by) {
        if let Some(set) = assignment.get_mut(&from) {
            set.remove(&tp);
        }
        assignment.entry(to).or_default().insert(tp);
    }
    assignment
}

fn find_move(
    assignment: &BTreeMap<String, BTreeSet<(String, i32)>>,
    subscribers: &BTreeMap<&str, Vec<&str>>,
    owned_by: &BTreeMap<(String, i32), String>,
) -> Option<(String, String, (String, i32))> {
    let size = |m: &str| assignment.get(m).map_or(0, BTreeSet::len);
    let mut givers: Vec<(&String, usize)> = assignment.iter().map(|(m, s)| (m, s.len())).collect();
    givers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (giver, giver_size) in givers {
        let Some(set) = assignment.get(giver) else { continue };
        // For each topic the giver holds, the least loaded other subscriber.
        let mut best_taker: BTreeMap<&str, Option<(usize, &str)>> = BTreeMap::new();
        for (topic, _) in set {
            best_taker.entry(topic.as_str()).or_insert_with(|| {
                subscribers.get(topic.as_str()).and_then(|subs| {
                    subs.iter().filter(|m| **m != giver.as_str()).map(|m| (size(m), *m)).min()
                })
            });
        }
        let fresh_first = set
            .iter()
            .filter(|tp| owned_by.get(*tp) != Some(giver))
            .chain(set.iter().rev().filter(|tp| owned_by.get(*tp) == Some(giver)));
        for tp in fresh_first {
            if let Some(Some((taker_size, taker))) = best_taker.get(tp.0.as_str())
                && taker_size + 2 <= giver_size
            {
                return Some((giver.clone(), (*taker).to_owned(), tp.clone()));
            }
        }
    }
    None
}

fn empty_assignment(members: &[MemberSubscription]) -> BTreeMap<String, Vec<(String, i32)>> {
    members.iter().map(|m| (m.member_id.clone(), Vec::new())).collect()
}

fn finish(mut out: BTreeMap<String, Vec<(String, i32)>>) -> BTreeMap<String, Vec<(String, i32)>> {
    for list in out.values_mut() {
        list.sort();
        list.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn eager() -> Vec<Box<dyn Assignor>> {
        vec![Box::new(RangeAssignor), Box::new(RoundRobinAssignor)]
    }

    fn all() -> Vec<Box<dyn Assignor>> {
        vec![
            Box::new(RangeAssignor),
            Box::new(RoundRobinAssignor),
            Box::new(CooperativeStickyAssignor),
        ]
    }

    #[test]
    fn six_partitions_two_members_get_three_each() {
        let members = [member("m1", &["t"]), member("m2", &["t"])];
        for a in all() {
            let out = a.assign(&members, &topics(&[("t", 6)]));
            assert_eq!(out["m1"].len(), 3, "{}", a.name());
            assert_eq!(out["m2"].len(), 3, "{}", a.name());
        }
    }

    #[test]
    fn two_partitions_three_members_leaves_one_idle() {
        let members = [member("a", &["t"]), member("b", &["t"]), member("c", &["t"])];
        for a in all() {
            let out = a.assign(&members, &topics(&[("t", 2)]));
            let sizes: Vec<usize> = out.values().map(Vec::len).collect();
            assert_eq!(sizes.iter().filter(|&&s| s == 0).count(), 1, "{}", a.name());
            assert_eq!(sizes.iter().sum::<usize>(), 2, "{}", a.name());
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_extra_to_first_members() {
        let members = [member("b", &["t"]), member("a", &["t"]), member("c", &["t"])];
        let out = RangeAssignor.assign(&members, &topics(&[("t", 7)]));
        let parts = |m: &str| out[m].iter().map(|(_, p)| *p).collect::<Vec<_>>();
        assert_eq!(parts("a"), vec![0, 1, 2]);
        assert_eq!(parts("b"), vec![3, 4]);
        assert_eq!(parts("c"), vec![5, 6]);
    }

    #[test]
    fn roundrobin_deals_over_sorted_members_and_skips_non_subscribers() {
        let members = [member("a", &["x", "y"]), member("b", &["y"])];
        let out = RoundRobinAssignor.assign(&members, &topics(&[("x", 2), ("y", 2)]));
        let x = |p| ("x".to_string(), p);
        let y = |p| ("y".to_string(), p);
        // x-0 -> a, x-1 -> (b skipped) a, y-0 -> b, y-1 -> a.
        assert_eq!(out["a"], vec![x(0), x(1), y(1)]);
        assert_eq!(out["b"], vec![y(0)]);
    }

    #[test]
    fn cooperative_withholds_partitions_changing_owner_until_the_next_round() {
        let mut a = member("a", &["t"]);
        a.owned_partitions = (0..4).map(|p| ("t".to_string(), p)).collect();
        a.generation_id = 1;
        let b = member("b", &["t"]);
        let tps = topics(&[("t", 4)]);
        let round1 = CooperativeStickyAssignor.assign(&[a.clone(), b.clone()], &tps);
        // a keeps two, b gets nothing yet: the two a loses are revoked first.
        assert_eq!(round1["a"].len(), 2);
        assert!(round1["b"].is_empty());
        // a rejoins after revoking, now owning only what it kept.
        a.owned_partitions = round1["a"].clone();
        a.generation_id = 2;
        let round2 = CooperativeStickyAssignor.assign(&[a.clone(), b], &tps);
        assert_eq!(round2["a"], round1["a"]);
        assert_eq!(round2["b"].len(), 2);
    }

    #[test]
    fn cooperative_drops_conflicting_claims_of_one_generation() {
        let mut a = member("a", &["t"]);
        let mut b = member("b", &["t"]);
        a.owned_partitions = vec![("t".into(), 0)];
        b.owned_partitions = vec![("t".into(), 0)];
        a.generation_id = 3;
        b.generation_id = 3;
        let out = CooperativeStickyAssignor.assign(&[a.clone(), b.clone()], &topics(&[("t", 2)]));
        // Both claim t-0 in one generation: nobody may be handed it now.
        assert!(out.values().flatten().all(|tp| tp.1 != 0));
        // With a newer generation, that claim wins and is kept.
        a.generation_id = 4;
        let out = CooperativeStickyAssignor.assign(&[a, b], &topics(&[("t", 2)]));
        assert!(!out["b"].contains(&("t".to_string(), 0)));
    }

    #[test]
    fn by_name_finds_the_three_strategies() {
        for name in ["range", "roundrobin", "cooperative-sticky"] {
            assert_eq!(by_name(name).map(|a| a.name()), Some(name));
        }
        assert!(by_name("sticky-ish").is_none());
    }

    fn arb_group() -> impl Strategy<Value = (Vec<MemberSubscription>, BTreeMap<String, i32>)> {
        let topics = proptest::collection::btree_map("[a-d]", 0i32..12, 1..4);
        (topics, 1usize..7).prop_flat_map(|(topics, n)| {
            let names: Vec<String> = topics.keys().cloned().collect();
            let subs = proptest::collection::vec(
                proptest::sample::subsequence(names.clone(), 0..=names.len()),
                n,
            );
            (Just(topics), subs).prop_map(|(topics, subs)| {
                let members = subs
                    .into_iter()
                    .enumerate()
                    .map(|(i, topics)| MemberSubscription {
                        member_id: format!("member-{i}"),
                        topics,
                        ..Default::default()
                    })
                    .collect();
                (members, topics)
            })
        })
    }

    fn arb_uniform_group() -> impl Strategy<Value = (Vec<MemberSubscription>, BTreeMap<String, i32>)>
    {
        (proptest::collection::btree_map("[a-d]", 0i32..20, 1..4), 1usize..9).prop_map(
            |(topics, n)| {
                let names: Vec<String> = topics.keys().cloned().collect();
                let members = (0..n)
                    .map(|i| MemberSubscription {
                        member_id: format!("m{i:02}"),
                        topics: names.clone(),
                        ..Default::default()
                    })
                    .collect();
                (members, topics)
            },
        )
    }

    fn check_exactly_once(
        out: &BTreeMap<String, Vec<(String, i32)>>,
        members: &[MemberSubscription],
        topics: &BTreeMap<String, i32>,
    ) -> Result<(), TestCaseError> {
        let mut seen = BTreeSet::new();
        for list in out.values() {
            for tp in list {
                prop_assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        for (t, &n) in topics {
            if members.iter().any(|m| m.subscribes(t)) {
                for p in 0..n {
                    prop_assert!(seen.contains(&(t.clone(), p)), "{t}-{p} unassigned");
                }
            }
        }
        Ok(())
    }

    fn spread(out: &BTreeMap<String, Vec<(String, i32)>>) -> usize {
        let sizes: Vec<usize> = out.values().map(Vec::len).collect();
        sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0)
    }

    /// Simulates members that revoke what they lost and rejoin, as KIP-429 requires.
    fn next_round(
        members: &[MemberSubscription],
        out: &BTreeMap<String, Vec<(String, i32)>>,
        generation: i32,
    ) -> Vec<MemberSubscription> {
        members
            .iter()
            .map(|m| MemberSubscription {
                owned_partitions: out.get(&m.member_id).cloned().unwrap_or_default(),
                generation_id: generation,
                ..m.clone()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn eager_assignors_assign_every_partition_exactly_once((members, topics) in arb_group()) {
            for a in eager() {
                let out = a.assign(&members, &topics);
                check_exactly_once(&out, &members, &topics)?;
            }
        }

        #[test]
        fn no_assignor_assigns_an_unsubscribed_topic((members, topics) in arb_group()) {
            for a in all() {
                let out = a.assign(&members, &topics);
                for m in &members {
                    for (t, _) in &out[&m.member_id] {
                        prop_assert!(m.subscribes(t), "{} got {t} from {}", m.member_id, a.name());
                    }
                }
            }
        }

        #[test]
        fn assignors_are_deterministic_under_member_order((mut members, topics) in arb_group()) {
            for a in all() {
                let first = a.assign(&members, &topics);
                members.reverse();
                prop_assert_eq!(&a.assign(&members, &topics), &first);
            }
        }

        #[test]
        fn roundrobin_and_sticky_balance_identical_subscriptions(
            (members, topics) in arb_uniform_group(),
        ) {
            prop_assert!(spread(&RoundRobinAssignor.assign(&members, &topics)) <= 1);
            prop_assert!(spread(&CooperativeStickyAssignor.assign(&members, &topics)) <= 1);
        }

        #[test]
        fn range_balances_each_topic((members, topics) in arb_uniform_group()) {
            let out = RangeAssignor.assign(&members, &topics);
            for t in topics.keys() {
                let counts: Vec<usize> =
                    out.values().map(|l| l.iter().filter(|(x, _)| x == t).count()).collect();
                let max = counts.iter().max().copied().unwrap_or(0);
                let min = counts.iter().min().copied().unwrap_or(0);
                prop_assert!(max - min <= 1);
            }
        }

        #[test]
        fn cooperative_converges_sticky_and_safe(
            (members, topics) in arb_uniform_group(),
            joiners in 0usize..4,
            leavers in 0usize..3,
        ) {
            let sticky = CooperativeStickyAssignor;
            let first = sticky.assign(&members, &topics);
            check_exactly_once(&first, &members, &topics)?;
            // Membership changes: some leave, some join; survivors report what they own.
            let mut group = next_round(&members, &first, 1);
            group.truncate(group.len().saturating_sub(leavers).max(1));
            for j in 0..joiners {
                group.push(MemberSubscription {
                    member_id: format!("new{j}"),
                    topics: topics.keys().cloned().collect(),
                    ..Default::default()
                });
            }
            let round1 = sticky.assign(&group, &topics);
            let total: usize = topics.values().map(|&n| n as usize).sum();
            let min_quota = total / group.len();
            for m in &group {
                let got: BTreeSet<_> = round1[&m.member_id].iter().collect();
                // Never handed a partition another member still owns.
                for tp in &got {
                    let foreign = group
                        .iter()
                        .any(|o| o.member_id != m.member_id && o.owned_partitions.contains(tp));
                    prop_assert!(!foreign, "{tp:?} moved directly to {}", m.member_id);
                }
                // Stickiness: keeps as many owned partitions as the quota allows.
                let kept = m.owned_partitions.iter().filter(|tp| got.contains(tp)).count();
                prop_assert!(kept >= m.owned_partitions.len().min(min_quota));
            }
            // After the revoking members rejoin, the group converges: complete and balanced.
            let group2 = next_round(&group, &round1, 2);
            let round2 = sticky.assign(&group2, &topics);
            check_exactly_once(&round2, &group2, &topics)?;
            prop_assert!(spread(&round2) <= 1);
            // And it is stable: one more round changes nothing.
            let group3 = next_round(&group2, &round2, 3);
            prop_assert_eq!(sticky.assign(&group3, &topics), round2);
        }

        #[test]
        fn cooperative_keeps_a_balanced_assignment_unchanged((members, topics) in arb_uniform_group()) {
            let sticky = CooperativeStickyAssignor;
            let first = sticky.assign(&members, &topics);
            let again = sticky.assign(&next_round(&members, &first, 1), &topics);
            prop_assert_eq!(again, first);
        }
    }
}
