//! ElectLeaders (Kafka API 43, `kafka-leader-election.sh`, gRPC `Admin.ElectLeaders`): moving
//! partition leadership through the active controller.
//!
//! - **Preferred**: leadership goes to the first replica of the assignment when it is alive and
//!   in the ISR (it then holds every committed record), in a new leader epoch; the ISR stays.
//!   ELECTION_NOT_NEEDED when it already leads, PREFERRED_LEADER_NOT_AVAILABLE otherwise.
//! - **Unclean**: only for a partition without a live leader (ELECTION_NOT_NEEDED otherwise):
//!   a live ISR member if there is one, else any live replica, which becomes the whole ISR,
//!   exactly as the controller's own unclean election (`unclean.leader.election.enable`) does;
//!   the replicas then truncate to the new leader's epochs, losing what only others held.
//!   ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica is alive.
//!
//! The decision is a pure function of the metadata image ([`election_change`]); the controller
//! task commits one PartitionChange per partition, and the answer waits until this node has
//! applied them (so a client's next metadata request through it sees the new leaders).

use strom_proto::v1::ErrorCode;
use strom_quorum::{MetadataState, NO_LEADER, NodeId, PartitionChange};

use crate::broker::Broker;
use crate::controller::Command;
use crate::error::ApiError;

/// Kafka's election types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Leadership to the preferred (first) replica, if it is in sync.
    Preferred,
    /// A leader for a partition that has none, even from outside the ISR.
    Unclean,
}

impl ElectionType {
    /// From Kafka's number (0 preferred, 1 unclean); `None` for any other.
    pub fn from_kafka(value: i8) -> Option<ElectionType> {
        match value {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }

    /// Kafka's number for it.
    pub fn kafka_value(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }
}

/// The outcome of an election for one partition: the new leader, or why there was none.
#[derive(Debug, Clone)]
pub struct ElectionOutcome {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The leader after the election.
    pub result: Result<NodeId, ApiError>,
}

/// The partition change an election of `election` makes on `state`, or the Kafka error that
/// says why none is made.
pub(crate) fn election_change(
    state: &MetadataState,
    election: ElectionType,
    topic: &str,
    partition: i32,
) -> Result<PartitionChange, ApiError> {
    let p = state
        .partition(topic, partition)
        .ok_or_else(|| ApiError::unknown_topic_or_partition(topic, partition))?;
    let name = format!("{topic}-{partition}");
    let live = |n: &NodeId| state.is_live(*n);
    let (leader, isr) = match election {
        ElectionType::Preferred => {
            let Some(&preferred) = p.replicas.first() else {
                return Err(ApiError::new(
                    ErrorCode::PreferredLeaderNotAvailable,
                    format!("{name} has no replicas"),
                ));
            };
            if p.leader == preferred {
                return Err(ApiError::new(
                    ErrorCode::ElectionNotNeeded,
                    format!("{name}: the preferred replica {preferred} already leads"),
                ));
            }
            if !live(&preferred) || !p.isr.contains(&preferred) {
                return Err(ApiError::new(
                    ErrorCode::PreferredLeaderNotAvailable,
                    format!(
                        "{name}: the preferred replica {preferred} is not {} (ISR {:?})",
                        if live(&preferred) { "in sync" } else { "alive" },
                        p.isr
                    ),
                ));
            }
            (preferred, p.isr.clone())
        }
        ElectionType::Unclean => {
            if p.leader != NO_LEADER && live(&p.leader) {
                return Err(ApiError::new(
                    ErrorCode::ElectionNotNeeded,
                    format!("{name} has a live leader ({})", p.leader),
                ));
            }
            let clean = p.replicas.iter().find(|n| live(n) && p.isr.contains(n));
            match (clean, p.replicas.iter().find(|n| live(n))) {
                (Some(&n), _) => (n, p.isr.iter().copied().filter(live).collect()),
                (None, Some(&n)) => {
                    tracing::warn!(topic, partition, leader = n, isr = ?p.isr,
                        "unclean leader election asked for: records only the ISR held may be lost");
                    (n, vec![n])
                }
                (None, None) => {
                    return Err(ApiError::new(
                        ErrorCode::EligibleLeadersNotAvailable,
                        format!("{name}: no replica of {:?} is alive", p.replicas),
                    ));
                }
            }
        }
    };
    Ok(PartitionChange {
        topic: topic.to_string(),
        partition,
        leader,
        isr,
        leader_epoch: p.leader_epoch + 1,
        partition_epoch: p.partition_epoch + 1,
    })
}

impl Broker {
    /// Runs an election of `election` for `partitions` (`None`: every partition of the
    /// cluster, whose answer leaves out those that needed none) through the active controller,
    /// and waits until this node applied the new leaders. Per-partition errors as Kafka's
    /// (see the module docs); the whole call fails with NOT_CONTROLLER when no controller can
    /// be reached.
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<ElectionOutcome>, ApiError> {
        self.elect_leaders_with(election, partitions, true).await
    }

    /// [`Broker::elect_leaders`]; `forward: false` for a request a peer forwarded here.
    pub(crate) async fn elect_leaders_with(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
        forward: bool,
    ) -> Result<Vec<ElectionOutcome>, ApiError> {
        let all = partitions.is_none();
        let list = partitions.unwrap_or_else(|| {
            let image = self.image();
            image.state.partitions().map(|(t, p)| (t.to_string(), p.partition)).collect()
        });
        let local = {
            let partitions = list.clone();
            self.controller_call(|reply| Command::ElectLeaders { election, partitions, reply })
                .await
        };
        let results = match local {
            Err(e) if forward && e.code == ErrorCode::NotController => {
                self.peers().elect_leaders(&self.controller(), election, &list).await?
            }
            other => other?,
        };
        let outcomes: Vec<ElectionOutcome> = list
            .into_iter()
            .zip(results)
            .map(|((topic, partition), result)| ElectionOutcome { topic, partition, result })
            .filter(|o| {
                !(all && o.result.as_ref().is_err_and(|e| e.code == ErrorCode::ElectionNotNeeded))
            })
            .collect();
        let elected: Vec<(String, i32, NodeId)> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|l| (o.topic.clone(), o.partition, *l)))
            .collect();
        if !elected.is_empty() {
            self.wait_applied(move |image| {
                elected.iter().all(|(t, p, leader)| {
                    image.state.partition(t, *p).is_none_or(|r| r.leader == *leader)
                })
            })
            .await;
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use strom_quorum::{BrokerRegistration, MetadataRecord, TopicRecord};

    use super::*;

    /// Brokers 1..=3 registered and live; topic `t` with one partition on `replicas`.
    fn state(
        replicas: &[NodeId],
        leader: NodeId,
        isr: &[NodeId],
        fenced: &[NodeId],
    ) -> MetadataState {
        let mut s = MetadataState::default();
        for id in 1..=3 {
            let reg = BrokerRegistration {
                node_id: id,
                address: format!("127.0.0.1:{}", 9000 + id),
                kafka_address: None,
                incarnation: 1,
            };
            s.apply(&MetadataRecord::RegisterBroker(reg)).expect("register");
            if fenced.contains(&id) {
                s.apply(&MetadataRecord::FenceBroker { node_id: id }).expect("fence");
            }
        }
        let partition = strom_quorum::PartitionRecord {
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 7,
        };
        let topic = TopicRecord {
            name: "t".into(),
            topic_id: "00".into(),
            configs: Default::default(),
            partitions: vec![partition],
        };
        s.apply(&MetadataRecord::CreateTopic(topic)).expect("topic");
        s
    }

    fn code(r: Result<PartitionChange, ApiError>) -> ErrorCode {
        r.expect_err("an error").code
    }

    #[test]
    fn preferred_election_moves_leadership_to_the_in_sync_first_replica() {
        let s = state(&[1, 2, 3], 2, &[1, 2, 3], &[]);
        let change = election_change(&s, ElectionType::Preferred, "t", 0).expect("a change");
        assert_eq!((change.leader, change.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!((change.leader_epoch, change.partition_epoch), (4, 8));
        let mut after = s.clone();
        after.apply(&MetadataRecord::PartitionChange(change)).expect("applies");
        assert_eq!(
            code(election_change(&after, ElectionType::Preferred, "t", 0)),
            ErrorCode::ElectionNotNeeded
        );
    }

    #[test]
    fn preferred_election_needs_the_first_replica_alive_and_in_sync() {
        let out_of_sync = state(&[1, 2, 3], 2, &[2, 3], &[]);
        assert_eq!(
            code(election_change(&out_of_sync, ElectionType::Preferred, "t", 0)),
            ErrorCode::PreferredLeaderNotAvailable
        );
        let fenced = state(&[1, 2, 3], 2, &[1, 2, 3], &[1]);
        assert_eq!(
            code(election_change(&fenced, ElectionType::Preferred, "t", 0)),
            ErrorCode::PreferredLeaderNotAvailable
        );
        assert_eq!(
            code(election_change(&fenced, ElectionType::Preferred, "t", 5)),
            ErrorCode::UnknownTopicOrPartition
        );
    }

    #[test]
    fn unclean_election_only_for_a_partition_without_a_live_leader() {
        let led = state(&[1, 2, 3], 2, &[1, 2, 3], &[]);
        assert_eq!(
            code(election_change(&led, ElectionType::Unclean, "t", 0)),
            ErrorCode::ElectionNotNeeded
        );
        // The last ISR member (3) is fenced: a live replica outside the ISR takes over.
        let orphaned = state(&[3, 1, 2], NO_LEADER, &[3], &[3]);
        let change = election_change(&orphaned, ElectionType::Unclean, "t", 0).expect("change");
        assert_eq!((change.leader, change.isr), (1, vec![1]));
        let dead = state(&[1, 2, 3], NO_LEADER, &[1], &[1, 2, 3]);
        assert_eq!(
            code(election_change(&dead, ElectionType::Unclean, "t", 0)),
            ErrorCode::EligibleLeadersNotAvailable
        );
    }
}
