//! The controller's decision on Kafka's CreatePartitions: the records that grow a topic to a new
//! partition count, either placed like a new topic's partitions or from a manual assignment.
//!
//! Pure, like the rest of the controller: a function of the image. The invariant it keeps is the
//! one `MetadataState::apply` checks again: the count only grows, new partitions are numbered
//! from the current count upwards, every replica set has the topic's replication factor on
//! distinct registered brokers, and each new leader is a live member of its ISR.

use crate::controller::{PlacementError, place_partitions};
use crate::metadata::{MetadataRecord, MetadataState, NodeId, PartitionRecord};

/// Why a topic cannot grow as asked. The variants follow Kafka's error codes for
/// CreatePartitions, so the broker maps each onto one code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NewPartitionsError {
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// INVALID_PARTITIONS: the count does not grow, or exceeds the limit.
    #[error("{0}")]
    InvalidCount(String),
    /// INVALID_REPLICA_ASSIGNMENT: the manual assignment does not fit the topic or the cluster.
    #[error("{0}")]
    InvalidAssignment(String),
    /// INVALID_REPLICATION_FACTOR: not enough live brokers to place the topic's replication
    /// factor.
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

/// The record that grows `topic` to `count` partitions, or why it cannot.
///
/// `assignment`, when given, holds one replica list per new partition (Kafka's
/// `assignments`): each must have the topic's replication factor, name registered brokers
/// once each, and hold at least one live broker, which becomes the leader (the first live one;
/// the ISR is the live replicas, as KRaft does). Without it the new partitions are placed like
/// a new topic's, with the replication factor of partition 0.
pub fn new_partitions(
    state: &MetadataState,
    topic: &str,
    count: i32,
    assignment: Option<&[Vec<NodeId>]>,
    max_partitions: i32,
) -> Result<MetadataRecord, NewPartitionsError> {
    let t = state.topic(topic).ok_or_else(|| NewPartitionsError::UnknownTopic(topic.into()))?;
    let current = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
    if count == current {
        return Err(NewPartitionsError::InvalidCount(format!(
            "topic {topic:?} already has {current} partition(s)"
        )));
    }
    if count < current {
        return Err(NewPartitionsError::InvalidCount(format!(
            "topic {topic:?} has {current} partition(s), more than the {count} asked for; \
             partitions cannot be removed"
        )));
    }
    if count > max_partitions {
        return Err(NewPartitionsError::InvalidCount(format!(
            "a topic may have at most {max_partitions} partitions, {count} were asked for"
        )));
    }
    let added = count - current;
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
    let partitions = match assignment {
        None => place_partitions(state, current, added, i32::try_from(rf).unwrap_or(i32::MAX))?,
        Some(lists) => manual(state, current, added, rf, lists)?,
    };
    Ok(MetadataRecord::CreatePartitions { name: topic.into(), partitions })
}

fn manual(
    state: &MetadataState,
    first: i32,
    added: i32,
    rf: usize,
    lists: &[Vec<NodeId>],
) -> Result<Vec<PartitionRecord>, NewPartitionsError> {
    let invalid = |m: String| NewPartitionsError::InvalidAssignment(m);
    if usize::try_from(added).ok() != Some(lists.len()) {
        return Err(invalid(format!(
            "increasing the number of partitions by {added} but {} assignment(s) provided",
            lists.len()
        )));
    }
    let mut partitions = Vec::with_capacity(lists.len());
    for (partition, replicas) in (first..).zip(lists) {
        if replicas.len() != rf {
            return Err(invalid(format!(
                "partition {partition} has {} replica(s); the topic's replication factor is {rf}",
                replicas.len()
            )));
        }
        for (i, n) in replicas.iter().enumerate() {
            if replicas[..i].contains(n) {
                return Err(invalid(format!(
                    "partition {partition} names broker {n} more than once"
                )));
            }
            if state.broker(*n).is_none() {
                return Err(invalid(format!(
                    "partition {partition} names broker {n}, which is not registered"
                )));
            }
        }
        let isr: Vec<NodeId> = replicas.iter().copied().filter(|n| state.is_live(*n)).collect();
        let Some(&leader) = isr.first() else {
            return Err(invalid(format!(
                "every broker assigned to partition {partition} ({replicas:?}) is fenced"
            )));
        };
        partitions.push(PartitionRecord {
            partition,
            replicas: replicas.clone(),
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        });
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::{BrokerRegistration, TopicRecord};

    fn cluster(ids: &[NodeId], fenced: &[NodeId]) -> MetadataState {
        let mut state = MetadataState::default();
        for id in ids {
            let registration = BrokerRegistration {
                node_id: *id,
                address: format!("127.0.0.1:{}", 9000 + id),
                kafka_address: None,
                incarnation: 1,
            };
            state.apply(&MetadataRecord::RegisterBroker(registration)).expect("register");
        }
        for id in fenced {
            state.apply(&MetadataRecord::FenceBroker { node_id: *id }).expect("fence");
        }
        state
    }

    fn with_topic(mut state: MetadataState, count: i32, rf: i32) -> MetadataState {
        let partitions = place_partitions(&state, 0, count, rf).expect("placed");
        let record = MetadataRecord::CreateTopic(TopicRecord {
            name: "t".into(),
            topic_id: "id".into(),
            configs: BTreeMap::new(),
            partitions,
        });
        state.apply(&record).expect("create");
        state
    }

    #[test]
    fn placed_partitions_follow_the_topic_and_keep_its_replication_factor() {
        let mut state = with_topic(cluster(&[1, 2, 3], &[]), 2, 2);
        let record = new_partitions(&state, "t", 5, None, 100).expect("grows");
        state.apply(&record).expect("applies");
        let t = state.topic("t").expect("topic");
        assert_eq!(t.partitions.len(), 5);
        for (i, p) in t.partitions.iter().enumerate() {
            assert_eq!(p.partition, i as i32);
            assert_eq!(p.replicas.len(), 2);
            assert!(p.isr.contains(&p.leader));
        }
    }

    #[test]
    fn the_count_must_grow_and_stay_below_the_limit() {
        let state = with_topic(cluster(&[1], &[]), 3, 1);
        for count in [1, 3] {
            assert!(matches!(
                new_partitions(&state, "t", count, None, 100),
                Err(NewPartitionsError::InvalidCount(_))
            ));
        }
        assert!(matches!(
            new_partitions(&state, "t", 101, None, 100),
            Err(NewPartitionsError::InvalidCount(_))
        ));
        assert_eq!(
            new_partitions(&state, "nope", 4, None, 100),
            Err(NewPartitionsError::UnknownTopic("nope".into()))
        );
    }

    #[test]
    fn placement_needs_as_many_live_brokers_as_the_replication_factor() {
        let state = with_topic(cluster(&[1, 2, 3], &[]), 1, 3);
        let mut state = state;
        state.apply(&MetadataRecord::FenceBroker { node_id: 3 }).expect("fence");
        assert!(matches!(
            new_partitions(&state, "t", 2, None, 100),
            Err(NewPartitionsError::Placement(PlacementError::NotEnoughBrokers { .. }))
        ));
    }

    #[test]
    fn a_manual_assignment_is_checked_and_led_by_its_first_live_replica() {
        let state = with_topic(cluster(&[1, 2, 3], &[2]), 1, 2);
        let bad: [&[Vec<NodeId>]; 5] = [
            &[vec![1, 3], vec![3, 1]], // two lists for one new partition
            &[vec![1]],                // wrong replication factor
            &[vec![1, 1]],             // a broker twice
            &[vec![1, 9]],             // an unregistered broker
            &[],                       // none for one new partition
        ];
        for lists in bad {
            assert!(
                matches!(
                    new_partitions(&state, "t", 2, Some(lists), 100),
                    Err(NewPartitionsError::InvalidAssignment(_))
                ),
                "{lists:?}"
            );
        }
        let mut fenced_only = state.clone();
        fenced_only.apply(&MetadataRecord::FenceBroker { node_id: 3 }).expect("fence");
        assert!(matches!(
            new_partitions(&fenced_only, "t", 2, Some(&[vec![2, 3]]), 100),
            Err(NewPartitionsError::InvalidAssignment(_))
        ));
        let record = new_partitions(&state, "t", 2, Some(&[vec![2, 3]]), 100).expect("valid");
        let MetadataRecord::CreatePartitions { partitions, .. } = &record else {
            panic!("{record:?}")
        };
        assert_eq!(partitions[0].partition, 1);
        assert_eq!(partitions[0].replicas, vec![2, 3]);
        assert_eq!((partitions[0].leader, partitions[0].isr.clone()), (3, vec![3]));
        let mut applied = state.clone();
        applied.apply(&record).expect("the record fits the image");
    }
}
