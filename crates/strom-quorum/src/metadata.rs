//! The cluster metadata as a pure state machine: the records the controller writes to the Raft
//! metadata log, and [`MetadataState`], the image every node builds by applying them in log order.
//!
//! No I/O, no clock, no randomness: `apply` is a function of the state and the record, so every
//! node that applies the same committed prefix holds the same image (the invariant the
//! simulation checks). A record that does not fit the state (a topic that exists already, a stale
//! partition epoch) leaves the state untouched and returns a [`MetadataError`]: the controller
//! validates before it proposes, so such a record only appears after a race with another
//! controller, and then the first committed record wins on every node alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node id, as Kafka's `broker.id` / `node.id`.
pub type NodeId = i32;

/// "No leader" in a partition's leader field, as in Kafka's metadata.
pub const NO_LEADER: NodeId = -1;

/// One entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A broker announces itself (at every start, with a new incarnation). It is unfenced: it
    /// has just proved it is alive.
    RegisterBroker(BrokerRegistration),
    /// The controller stopped hearing from the broker: it leads nothing until unfenced.
    FenceBroker {
        /// The broker.
        node_id: NodeId,
    },
    /// The broker is heartbeating again.
    UnfenceBroker {
        /// The broker.
        node_id: NodeId,
    },
    /// A new topic with its partitions' initial assignment.
    CreateTopic(TopicRecord),
    /// Removes a topic; brokers delete its logs.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Appends partitions to a topic (Kafka's CreatePartitions: the count only grows).
    CreatePartitions {
        /// Topic name.
        name: String,
        /// The new partitions, numbered from the current count upwards.
        partitions: Vec<PartitionRecord>,
    },
    /// A new leader and/or ISR for one partition.
    PartitionChange(PartitionChange),
    /// Sets (`Some`) or removes (`None`) one topic config override.
    ConfigChange {
        /// Topic name.
        topic: String,
        /// Kafka's config name, e.g. `retention.ms`.
        key: String,
        /// New value; `None` falls back to the broker default.
        value: Option<String>,
    },
}

/// A broker's registration: where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// The node id.
    pub node_id: NodeId,
    /// `host:port` of its gRPC listener (clients and peers).
    pub address: String,
    /// `host:port` of its Kafka listener, if it runs one.
    #[serde(default)]
    pub kafka_address: Option<String>,
    /// Chosen at random when the process starts: tells a restart from a repeated request.
    pub incarnation: u64,
}

/// A topic as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Stable id (hex), so a re-created topic of the same name is a different topic.
    pub topic_id: String,
    /// Per-topic overrides, with Kafka's names.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Partitions `0..n`, in order.
    pub partitions: Vec<PartitionRecord>,
}

/// One partition's replica set and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Partition number.
    pub partition: i32,
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Leader node id or [`NO_LEADER`].
    pub leader: NodeId,
    /// Grows with every leader change.
    pub leader_epoch: i32,
    /// Grows with every change of this partition (leader or ISR).
    pub partition_epoch: i32,
}

/// A change of one partition. Carries the complete new values: `apply` checks that it follows
/// the current state (`partition_epoch` is exactly the next one) instead of computing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// New leader or [`NO_LEADER`].
    pub leader: NodeId,
    /// New ISR.
    pub isr: Vec<NodeId>,
    /// New leader epoch: greater than the current one if the leader changes, equal otherwise.
    pub leader_epoch: i32,
    /// Must be the current partition epoch + 1.
    pub partition_epoch: i32,
}

/// Why a record left the state unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// CreateTopic of a name in use.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A record names a topic there is none of.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A record names a partition the topic does not have.
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
    },
    /// A record names a broker that never registered.
    #[error("unknown broker {0}")]
    UnknownBroker(NodeId),
    /// A partition change that does not follow the current epochs (a lost race).
    #[error("stale change of {topic}-{partition}: {reason}")]
    StaleChange {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// What did not follow.
        reason: String,
    },
    /// A record that no controller should write (empty replica set, leader outside it, ...).
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// A broker as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerState {
    /// Its latest registration.
    pub registration: BrokerRegistration,
    /// Fenced brokers lead no partition and are not offered to clients.
    pub fenced: bool,
}

/// A topic as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Stable id (hex).
    pub topic_id: String,
    /// Per-topic overrides.
    pub configs: BTreeMap<String, String>,
    /// Partitions `0..n`.
    pub partitions: Vec<PartitionRecord>,
}

/// The metadata image: the result of applying the committed log in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    brokers: BTreeMap<NodeId, BrokerState>,
    topics: BTreeMap<String, TopicState>,
}

impl MetadataState {
    /// Applies one committed record. Deterministic; on `Err` the state is unchanged.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::RegisterBroker(registration) => {
                if registration.node_id < 0 {
                    return Err(MetadataError::Invalid(format!(
                        "negative node id {}",
                        registration.node_id
                    )));
                }
                self.brokers.insert(
                    registration.node_id,
                    BrokerState { registration: registration.clone(), fenced: false },
                );
                Ok(())
            }
            MetadataRecord::FenceBroker { node_id } => self.set_fenced(*node_id, true),
            MetadataRecord::UnfenceBroker { node_id } => self.set_fenced(*node_id, false),
            MetadataRecord::CreateTopic(topic) => {
                if self.topics.contains_key(&topic.name) {
                    return Err(MetadataError::TopicExists(topic.name.clone()));
                }
                check_new_partitions(&topic.name, 0, &topic.partitions)?;
                self.topics.insert(
                    topic.name.clone(),
                    TopicState {
                        topic_id: topic.topic_id.clone(),
                        configs: topic.configs.clone(),
                        partitions: topic.partitions.clone(),
                    },
                );
                Ok(())
            }
            MetadataRecord::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Ok(()),
                None => Err(MetadataError::UnknownTopic(name.clone())),
            },
            MetadataRecord::CreatePartitions { name, partitions } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                check_new_partitions(name, topic.partitions.len(), partitions)?;
                topic.partitions.extend(partitions.iter().cloned());
                Ok(())
            }
            MetadataRecord::PartitionChange(change) => self.change_partition(change),
            MetadataRecord::ConfigChange { topic, key, value } => {
                let state = self
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| MetadataError::UnknownTopic(topic.clone()))?;
                match value {
                    Some(v) => state.configs.insert(key.clone(), v.clone()),
                    None => state.configs.remove(key),
                };
                Ok(())
            }
        }
    }

    fn set_fenced(&mut self, node_id: NodeId, fenced: bool) -> Result<(), MetadataError> {
        let broker = self.brokers.get_mut(&node_id).ok_or(MetadataError::UnknownBroker(node_id))?;
        broker.fenced = fenced;
        Ok(())
    }

    fn change_partition(&mut self, change: &PartitionChange) -> Result<(), MetadataError> {
        let stale = |reason: String| MetadataError::StaleChange {
            topic: change.topic.clone(),
            partition: change.partition,
            reason,
        };
        let topic = self
            .topics
            .get_mut(&change.topic)
            .ok_or_else(|| MetadataError::UnknownTopic(change.topic.clone()))?;
        let current = usize::try_from(change.partition)
            .ok()
            .and_then(|i| topic.partitions.get_mut(i))
            .ok_or_else(|| MetadataError::UnknownPartition {
                topic: change.topic.clone(),
                partition: change.partition,
            })?;
        if change.partition_epoch != current.partition_epoch + 1 {
            return Err(stale(format!(
                "partition epoch {} does not follow {}",
                change.partition_epoch, current.partition_epoch
            )));
        }
        let leader_changed = change.leader != current.leader;
        if change.leader_epoch < current.leader_epoch
            || (leader_changed && change.leader_epoch == current.leader_epoch)
        {
            return Err(stale(format!(
                "leader epoch {} after {} (leader {} -> {})",
                change.leader_epoch, current.leader_epoch, current.leader, change.leader
            )));
        }
        check_replica_sets(&change.topic, change.partition, &current.replicas, &change.isr)?;
        if change.leader != NO_LEADER && !change.isr.contains(&change.leader) {
            // An unclean election puts the new leader into the ISR with it; a leader outside
            // the ISR could acknowledge writes that no other replica is obliged to have.
            return Err(MetadataError::Invalid(format!(
                "{}-{}: leader {} is not in the ISR {:?}",
                change.topic, change.partition, change.leader, change.isr
            )));
        }
        current.leader = change.leader;
        current.isr = change.isr.clone();
        current.leader_epoch = change.leader_epoch;
        current.partition_epoch = change.partition_epoch;
        Ok(())
    }

    /// Every registered broker, by id.
    pub fn brokers(&self) -> &BTreeMap<NodeId, BrokerState> {
        &self.brokers
    }

    /// One broker.
    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerState> {
        self.brokers.get(&node_id)
    }

    /// Whether `node_id` is registered and not fenced.
    pub fn is_live(&self, node_id: NodeId) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// Ids of the registered, unfenced brokers, ascending.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers.iter().filter(|(_, b)| !b.fenced).map(|(id, _)| *id).collect()
    }

    /// Every topic, by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicState> {
        &self.topics
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<&TopicState> {
        self.topics.get(name)
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionRecord> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// Every partition as `(topic, partition)`, in name order.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, &PartitionRecord)> {
        self.topics
            .iter()
            .flat_map(|(name, t)| t.partitions.iter().map(move |p| (name.as_str(), p)))
    }
}

fn check_new_partitions(
    topic: &str,
    first: usize,
    partitions: &[PartitionRecord],
) -> Result<(), MetadataError> {
    if partitions.is_empty() {
        return Err(MetadataError::Invalid(format!("{topic}: no partitions")));
    }
    for (i, p) in partitions.iter().enumerate() {
        if usize::try_from(p.partition).ok() != Some(first + i) {
            return Err(MetadataError::Invalid(format!(
                "{topic}: partition {} where {} was expected",
                p.partition,
                first + i
            )));
        }
        if p.leader_epoch < 0 || p.partition_epoch < 0 {
            return Err(MetadataError::Invalid(format!("{topic}-{}: negative epoch", p.partition)));
        }
        check_replica_sets(topic, p.partition, &p.replicas, &p.isr)?;
        if p.leader != NO_LEADER && !p.isr.contains(&p.leader) {
            return Err(MetadataError::Invalid(format!(
                "{topic}-{}: leader {} is not in the ISR",
                p.partition, p.leader
            )));
        }
    }
    Ok(())
}

/// Replicas are non-empty and distinct; the ISR is a subset of them.
fn check_replica_sets(
    topic: &str,
    partition: i32,
    replicas: &[NodeId],
    isr: &[NodeId],
) -> Result<(), MetadataError> {
    let invalid = |what: &str| {
        Err(MetadataError::Invalid(format!(
            "{topic}-{partition}: {what} (replicas {replicas:?}, isr {isr:?})"
        )))
    };
    if replicas.is_empty() {
        return invalid("no replicas");
    }
    let mut seen = replicas.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != replicas.len() {
        return invalid("a replica listed twice");
    }
    let mut isr_seen = isr.to_vec();
    isr_seen.sort_unstable();
    isr_seen.dedup();
    if isr_seen.len() != isr.len() || isr.iter().any(|n| !replicas.contains(n)) {
        return invalid("ISR not a set of replicas");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: NodeId) -> MetadataRecord {
        MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id,
            address: format!("127.0.0.1:{}", 9000 + node_id),
            kafka_address: None,
            incarnation: 7,
        })
    }

    fn partition(partition: i32, replicas: &[NodeId]) -> PartitionRecord {
        PartitionRecord {
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn topic(name: &str, partitions: Vec<PartitionRecord>) -> MetadataRecord {
        MetadataRecord::CreateTopic(TopicRecord {
            name: name.into(),
            topic_id: format!("id-{name}"),
            configs: BTreeMap::new(),
            partitions,
        })
    }

    fn change(
        leader: NodeId,
        isr: &[NodeId],
        leader_epoch: i32,
        partition_epoch: i32,
    ) -> MetadataRecord {
        MetadataRecord::PartitionChange(PartitionChange {
            topic: "orders".into(),
            partition: 0,
            leader,
            isr: isr.to_vec(),
            leader_epoch,
            partition_epoch,
        })
    }

    /// Applies every record, returning the per-record results.
    fn replay(records: &[MetadataRecord]) -> (MetadataState, Vec<Result<(), MetadataError>>) {
        let mut state = MetadataState::default();
        let results = records.iter().map(|r| state.apply(r)).collect();
        (state, results)
    }

    #[test]
    fn a_record_list_builds_the_expected_image() {
        let (state, results) = replay(&[
            broker(1),
            broker(2),
            topic("orders", vec![partition(0, &[1, 2]), partition(1, &[2, 1])]),
            MetadataRecord::FenceBroker { node_id: 2 },
            change(1, &[1], 0, 1),
            MetadataRecord::CreatePartitions {
                name: "orders".into(),
                partitions: vec![partition(2, &[1, 2])],
            },
            MetadataRecord::ConfigChange {
                topic: "orders".into(),
                key: "retention.ms".into(),
                value: Some("1000".into()),
            },
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(state.live_brokers(), vec![1]);
        let orders = state.topic("orders").expect("topic");
        assert_eq!(orders.partitions.len(), 3);
        assert_eq!(orders.partitions[0].isr, vec![1]);
        assert_eq!(orders.partitions[0].partition_epoch, 1);
        assert_eq!(orders.configs.get("retention.ms").map(String::as_str), Some("1000"));
    }

    #[test]
    fn rejected_records_leave_the_state_unchanged() {
        let base = [broker(1), broker(2), topic("orders", vec![partition(0, &[1, 2])])];
        let (state, _) = replay(&base);
        let bad = [
            topic("orders", vec![partition(0, &[1])]),
            MetadataRecord::DeleteTopic { name: "nope".into() },
            MetadataRecord::FenceBroker { node_id: 9 },
            // Partition epoch skips one.
            change(2, &[1, 2], 1, 2),
            // Leader changes without a new leader epoch.
            change(2, &[1, 2], 0, 1),
            // Leader epoch goes backwards.
            change(1, &[1, 2], -1, 1),
            // Leader outside the ISR, ISR outside the replicas.
            change(2, &[1], 1, 1),
            change(1, &[1, 3], 0, 1),
            topic("dup", vec![partition(0, &[1, 1])]),
            topic("gap", vec![partition(1, &[1])]),
            MetadataRecord::CreatePartitions {
                name: "orders".into(),
                partitions: vec![partition(5, &[1])],
            },
        ];
        for record in &bad {
            let mut after = state.clone();
            assert!(after.apply(record).is_err(), "{record:?} was accepted");
            assert_eq!(after, state, "{record:?} changed the state");
        }
    }

    #[test]
    fn epochs_follow_each_change() {
        let (state, results) = replay(&[
            broker(1),
            broker(2),
            topic("orders", vec![partition(0, &[1, 2])]),
            change(1, &[1], 0, 1),
            change(NO_LEADER, &[1], 1, 2),
            change(1, &[1], 2, 3),
            change(1, &[1, 2], 2, 4),
            // A replay of an older change loses.
            change(2, &[1, 2], 3, 4),
        ]);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        let p = state.partition("orders", 0).expect("partition");
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 2, 4));
        assert_eq!(p.isr, vec![1, 2]);
    }

    #[test]
    fn same_records_same_image_and_snapshot_round_trip() {
        let records = vec![
            broker(3),
            topic("a", vec![partition(0, &[3])]),
            broker(3),
            MetadataRecord::DeleteTopic { name: "a".into() },
            topic("a", vec![partition(0, &[3]), partition(1, &[3])]),
        ];
        let (one, _) = replay(&records);
        let (two, _) = replay(&records);
        assert_eq!(one, two);
        let snapshot = serde_json::to_vec(&one).expect("encode");
        let restored: MetadataState = serde_json::from_slice(&snapshot).expect("decode");
        assert_eq!(restored, one);
        let encoded = serde_json::to_string(&records[1]).expect("encode record");
        let decoded: MetadataRecord = serde_json::from_str(&encoded).expect("decode record");
        assert_eq!(decoded, records[1]);
    }
}
