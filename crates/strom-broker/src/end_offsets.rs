//! High watermarks of partitions anywhere in the cluster, for consumer lag: a group's
//! coordinator holds its committed offsets, but the partitions it reads are led by any node.
//! Partitions led here are read locally; the rest are asked of their leaders (one ListOffsets
//! per leader, all leaders at once, bounded in time), so a dead or slow node costs one
//! `patience` and leaves its partitions out rather than stalling the caller.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;

use crate::broker::Broker;

/// Most partitions one call resolves; more are left out (lag is best effort past this).
const MAX_END_OFFSET_PARTITIONS: usize = 100_000;

impl Broker {
    /// The high watermark of each of `partitions` as its leader knows it. Partitions led here
    /// come from this node; others from their leader over gRPC within `patience`. A partition
    /// whose leader is unknown, fenced or silent falls back to this node's own replica (a
    /// follower's high watermark trails the leader's by at most one fetch round) or is left
    /// out when this node holds none.
    ///
    /// ```no_run
    /// # async fn lag(broker: &strom_broker::Broker) {
    /// use std::time::Duration;
    /// let ends = broker
    ///     .leader_high_watermarks(&[("orders".to_string(), 0)], Duration::from_secs(1))
    ///     .await;
    /// println!("orders-0 ends at {:?}", ends.get(&("orders".to_string(), 0)));
    /// # }
    /// ```
    pub async fn leader_high_watermarks(
        &self,
        partitions: &[(String, i32)],
        patience: Duration,
    ) -> HashMap<(String, i32), i64> {
        let image = self.image();
        let me = self.config().node_id;
        let mut ends = HashMap::new();
        let mut by_leader: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, partition) in partitions.iter().take(MAX_END_OFFSET_PARTITIONS) {
            let local = self.registry().partition(topic, *partition).ok();
            if let Some(p) = local.as_ref().filter(|p| p.is_leader()) {
                ends.insert((topic.clone(), *partition), p.high_watermark().get());
                continue;
            }
            let leader = image
                .state
                .partition(topic, *partition)
                .map(|p| p.leader)
                .filter(|&leader| leader != me)
                .and_then(|leader| image.state.broker(leader).filter(|b| !b.fenced));
            match leader {
                Some(b) => by_leader
                    .entry(b.registration.address.clone())
                    .or_default()
                    .push((topic.clone(), *partition)),
                None => {
                    if let Some(p) = local {
                        ends.insert((topic.clone(), *partition), p.high_watermark().get());
                    }
                }
            }
        }
        let asked = join_all(by_leader.into_iter().map(|(address, wanted)| async move {
            let answer = self.peers().high_watermarks(&address, &wanted, patience);
            let answer = tokio::time::timeout(patience, answer).await;
            (address, wanted, answer)
        }))
        .await;
        for (address, wanted, answer) in asked {
            match answer {
                Ok(Ok(listed)) => ends.extend(listed),
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {patience:?}"),
                    };
                    tracing::debug!(peer = %address, error = %why,
                        "high watermarks for lag not available from the leader");
                    for (topic, partition) in wanted {
                        if let Ok(p) = self.registry().partition(&topic, partition) {
                            ends.insert((topic, partition), p.high_watermark().get());
                        }
                    }
                }
            }
        }
        ends
    }
}
