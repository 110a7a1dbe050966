//! Consumer groups with their lag, computed from this node's group coordinator (committed
//! offsets) and the partitions' high watermarks as their leaders report them: lag = high
//! watermark - committed offset, the records a group still has to read. The partitions a
//! group reads are led by any node of the cluster, so their ends are gathered by
//! [`LeaderEnds::refresh`] (local for partitions led here, a ListOffsets to each other leader)
//! before a scrape, an API answer or a history sample. Shared by `/metrics`, the JSON API and
//! the lag history.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use strom_broker::Broker;
use strom_coordinator::consumer_protocol::Assignment;

/// Most groups described in one scrape or API answer; the rest are left out (and counted).
pub(crate) const MAX_GROUPS: usize = 1000;
/// How long a refresh waits for other leaders' high watermarks: a dead node delays a scrape
/// by at most this, and its partitions show the last known end (or none).
const LEADER_PATIENCE: Duration = Duration::from_secs(2);

/// One partition a group committed an offset for.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionLag {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) committed_offset: i64,
    /// The partition's high watermark as its leader reported it, when known.
    pub(crate) end_offset: Option<i64>,
    /// `end_offset - committed_offset` (never negative), when the end is known.
    pub(crate) lag: Option<i64>,
}

/// One member of a group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Member {
    pub(crate) member_id: String,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// `topic-partition` names, decoded from the consumer protocol's assignment.
    pub(crate) assignment: Vec<String>,
}

/// A group as the console and the metrics show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupLag {
    pub(crate) group_id: String,
    pub(crate) state: String,
    pub(crate) protocol_type: String,
    pub(crate) members: Vec<Member>,
    pub(crate) partitions: Vec<PartitionLag>,
    /// Sum of the known partition lags.
    pub(crate) total_lag: i64,
}

/// The high watermarks of the partitions this node's groups committed offsets for, as their
/// leaders last reported them. Refreshed before every reader that shows lag; between
/// refreshes the last answer stands (the synchronous metrics encoder reads it).
#[derive(Debug, Default)]
pub(crate) struct LeaderEnds {
    ends: Mutex<HashMap<(String, i32), i64>>,
}

impl LeaderEnds {
    /// Asks the leaders of every partition a group coordinated here has committed for.
    /// Partitions whose leader does not answer keep their last known end.
    pub(crate) async fn refresh(&self, broker: &Broker) {
        let Some(coordinator) = broker.group_coordinator() else { return };
        let mut wanted: Vec<(String, i32)> = coordinator
            .list_groups()
            .into_iter()
            .take(MAX_GROUPS)
            .flat_map(|g| coordinator.fetch_offsets(&g.group_id, None).partitions)
            .filter(|p| p.committed_offset.is_some())
            .map(|p| (p.topic, p.partition.get()))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let fresh = broker.leader_high_watermarks(&wanted, LEADER_PATIENCE).await;
        let mut ends = self.ends.lock();
        ends.retain(|key, _| wanted.binary_search(key).is_ok());
        ends.extend(fresh);
    }

    /// The ends as last refreshed, with this node's own leaders (always current) on top.
    fn current(&self, broker: &Broker) -> HashMap<(String, i32), i64> {
        let mut ends = self.ends.lock().clone();
        for p in broker.partition_stats() {
            let key = (p.topic, p.partition);
            if p.leader || !ends.contains_key(&key) {
                ends.insert(key, p.high_watermark);
            }
        }
        ends
    }
}

/// Every group this node coordinates (at most [`MAX_GROUPS`]), with members and lag.
pub(crate) fn group_lags(broker: &Broker, leader_ends: &LeaderEnds) -> Vec<GroupLag> {
    let Some(coordinator) = broker.group_coordinator() else { return Vec::new() };
    let ends = leader_ends.current(broker);
    coordinator
        .list_groups()
        .into_iter()
        .take(MAX_GROUPS)
        .map(|listing| describe(&coordinator, &listing.group_id, &ends))
        .collect()
}

/// One group, if this node coordinates it.
pub(crate) fn group_lag(
    broker: &Broker,
    leader_ends: &LeaderEnds,
    group_id: &str,
) -> Option<GroupLag> {
    let coordinator = broker.group_coordinator()?;
    let ends = leader_ends.current(broker);
    let known = coordinator.list_groups().iter().any(|g| g.group_id == group_id);
    known.then(|| describe(&coordinator, group_id, &ends))
}

fn describe(
    coordinator: &strom_coordinator::GroupCoordinator,
    group_id: &str,
    ends: &HashMap<(String, i32), i64>,
) -> GroupLag {
    let description = coordinator.describe_group(group_id);
    let consumer = description.protocol_type == "consumer";
    let members = description
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            assignment: if consumer && !m.assignment.is_empty() {
                Assignment::decode(&m.assignment)
                    .map(|a| a.topic_partitions().iter().map(|(t, p)| format!("{t}-{p}")).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    let mut partitions: Vec<PartitionLag> = coordinator
        .fetch_offsets(group_id, None)
        .partitions
        .into_iter()
        .filter_map(|p| {
            let committed = p.committed_offset?.get();
            let end = ends.get(&(p.topic.clone(), p.partition.get())).copied();
            Some(PartitionLag {
                lag: end.map(|e| (e - committed).max(0)),
                topic: p.topic,
                partition: p.partition.get(),
                committed_offset: committed,
                end_offset: end,
            })
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    GroupLag {
        group_id: group_id.to_string(),
        state: description.state.as_str().to_string(),
        protocol_type: description.protocol_type,
        total_lag: partitions.iter().filter_map(|p| p.lag).sum(),
        members,
        partitions,
    }
}
