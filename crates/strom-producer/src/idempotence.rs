//! The idempotent producer's identity and numbering (Kafka's `TransactionManager` without
//! transactions): a producer id and epoch from InitProducerId, and per partition the sequence
//! number of the next record. A batch is stamped when it is first built and keeps its bytes,
//! and so its sequence, across retries, so the partition leader recognises a retry whose first
//! attempt was stored and answers it with the original offsets.
//!
//! Invariant: within one producer id, the batches sent to a partition carry consecutive,
//! gap-free sequences in send order (one request in flight per partition keeps that order).
//! A batch abandoned after stamping (out of retries or time) leaves a gap, so the producer
//! takes a new id (KIP-360's answer, by a new id rather than an epoch bump); so does a batch
//! the leader refuses as out of order, unknown producer or fenced epoch, which is then
//! re-stamped under the new id.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use strom_format::PartitionId;

/// The producer id state shared by the sender and its request tasks.
#[derive(Debug, Default)]
pub(crate) struct Idempotence {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// -1 until InitProducerId answered.
    producer_id: i64,
    epoch: i16,
    /// The next sequence per partition, for the current producer id.
    next: HashMap<(Arc<str>, PartitionId), i32>,
    /// The current id must be replaced before the next batch is stamped.
    stale: bool,
}

impl Default for State {
    fn default() -> Self {
        State { producer_id: -1, epoch: -1, next: HashMap::new(), stale: true }
    }
}

impl Idempotence {
    /// Whether a (new) producer id is needed before batches can be stamped.
    pub fn needs_id(&self) -> bool {
        self.state.lock().stale
    }

    /// Installs a fresh producer id: every partition's numbering restarts at 0.
    pub fn set_id(&self, producer_id: i64, epoch: i16) {
        let mut s = self.state.lock();
        tracing::debug!(producer_id, epoch, previous = s.producer_id, "idempotent producer id");
        *s = State { producer_id, epoch, next: HashMap::new(), stale: false };
    }

    /// The batch stamped with `producer_id` was abandoned or refused: if that is still the
    /// current id, a new one is taken before the next batch is stamped.
    pub fn invalidate(&self, producer_id: i64) {
        let mut s = self.state.lock();
        if s.producer_id == producer_id && producer_id >= 0 {
            s.stale = true;
        }
    }

    /// `(producer id, epoch, base sequence)` for the next batch of `records` records to the
    /// partition, advancing its numbering; `None` while there is no valid id.
    pub fn stamp(
        &self,
        topic: &Arc<str>,
        partition: PartitionId,
        records: u32,
    ) -> Option<(i64, i16, i32)> {
        let mut s = self.state.lock();
        if s.stale {
            return None;
        }
        let (id, epoch) = (s.producer_id, s.epoch);
        let next = s.next.entry((Arc::clone(topic), partition)).or_insert(0);
        let seq = *next;
        let count = i32::try_from(records).unwrap_or(i32::MAX);
        // Sequences wrap past i32::MAX to 0, as Kafka's do.
        *next = if seq > i32::MAX - count { count - (i32::MAX - seq) - 1 } else { seq + count };
        Some((id, epoch, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_count_records_per_partition_and_restart_with_a_new_id() {
        let idem = Idempotence::default();
        let t: Arc<str> = Arc::from("t");
        let (p0, p1) = (PartitionId::new(0), PartitionId::new(1));
        assert_eq!(idem.stamp(&t, p0, 3), None);
        idem.set_id(7, 0);
        assert_eq!(idem.stamp(&t, p0, 3), Some((7, 0, 0)));
        assert_eq!(idem.stamp(&t, p0, 2), Some((7, 0, 3)));
        assert_eq!(idem.stamp(&t, p1, 1), Some((7, 0, 0)));
        idem.invalidate(6); // an older id: ignored
        assert!(!idem.needs_id());
        idem.invalidate(7);
        assert!(idem.needs_id());
        assert_eq!(idem.stamp(&t, p0, 1), None);
        idem.set_id(8, 0);
        assert_eq!(idem.stamp(&t, p0, 1), Some((8, 0, 0)));
    }
}
