//! Deleting records of a partition (Kafka's DeleteRecords) and the low watermark.
//!
//! The leader moves its own log start ([`Partition::delete_records`], never past the high
//! watermark); followers take the leader's log start from every fetch answer
//! ([`Partition::follow_log_start`], Kafka's follower `maybeIncrementLogStartOffset`) and report
//! theirs in every fetch request ([`Partition::record_follower_start`]). The low watermark is
//! the smallest log start of the leader and the in-sync followers; DeleteRecords answers once
//! it reached the offset ([`Partition::wait_low_watermark`], Kafka's `DelayedDeleteRecords`),
//! or REQUEST_TIMED_OUT at the request's deadline (the leader's own move stands either way).

use std::collections::HashMap;

use strom_format::{LeaderEpoch, Offset};
use strom_proto::v1::ErrorCode;
use strom_replication::NodeId;
use tokio::sync::watch;

use super::Partition;
use crate::error::ApiError;

/// The followers' log start offsets as their latest fetches reported them, and the signal
/// that wakes DeleteRecords waiting for the low watermark.
#[derive(Debug)]
pub(crate) struct FollowerStarts {
    /// Leaf lock. At most one entry per replica of the partition.
    starts: parking_lot::Mutex<HashMap<NodeId, Offset>>,
    /// Bumped when a start moves, the leader's own start moves, or the ISR or role changes.
    changed: watch::Sender<u64>,
}

impl FollowerStarts {
    pub(crate) fn new() -> Self {
        FollowerStarts {
            starts: parking_lot::Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }

    /// Wakes the waiters (something the low watermark depends on changed).
    pub(crate) fn wake(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Forgets every follower (a new leadership starts from what its followers report).
    pub(crate) fn clear(&self) {
        self.starts.lock().clear();
        self.wake();
    }

    fn record(&self, follower: NodeId, start: Offset) {
        let moved = self.starts.lock().insert(follower, start) != Some(start);
        if moved {
            self.wake();
        }
    }

    fn get(&self, follower: NodeId) -> Option<Offset> {
        self.starts.lock().get(&follower).copied()
    }
}

impl Partition {
    /// As leader: deletes the records below `offset` (-1: the high watermark) by moving the
    /// log start there (durably: see [`strom_log::Log::delete_records_before`]) and wakes
    /// parked follower fetches so the followers learn the new start at once. Returns the
    /// offset the low watermark must reach and the leader epoch the wait must still lead in.
    ///
    /// NOT_LEADER_OR_FOLLOWER on a follower; OFFSET_OUT_OF_RANGE for an offset above the high
    /// watermark or below -1. An offset at or below the log start changes nothing. Blocking.
    pub(crate) fn delete_records(&self, offset: i64) -> Result<(Offset, LeaderEpoch), ApiError> {
        self.check_live()?;
        let epoch = self.check_leader()?;
        let hw = self.high_watermark();
        let target = match offset {
            -1 => hw,
            o if o >= 0 && o <= hw.get() => Offset::new(o),
            o => {
                return Err(ApiError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "{}: cannot delete records below {o}: the offset must lie in [0, {hw}] \
                         (the high watermark), or be -1 for the high watermark",
                        self.name
                    ),
                ));
            }
        };
        let start = self.log.delete_records_before(target).map_err(|e| {
            // The log's end can lie below the high watermark only after a failed write
            // cut it back; the high watermark follows it down.
            self.clamp_high_watermark();
            self.log_error("delete records", &e)
        })?;
        if start == target {
            tracing::info!(partition = %self.name, log_start = %start, "records deleted");
        }
        self.follower_starts.wake();
        // Parked follower fetches answer on a log-end signal: they carry the new start.
        self.log_end.send_modify(|_| {});
        Ok((target.max(start), epoch))
    }

    /// The low watermark: the smallest log start of this replica and, while it leads, of the
    /// in-sync followers (a follower not heard from in this leadership counts as 0).
    pub(crate) fn low_watermark(&self) -> Offset {
        let start = self.log.log_start_offset();
        let isr = match self.leader.lock().as_ref() {
            Some(state) => state.isr().to_vec(),
            None => return start,
        };
        let me = self.role.read().leader;
        isr.into_iter()
            .filter(|n| *n != me)
            .map(|n| self.follower_starts.get(n).unwrap_or(Offset::ZERO))
            .fold(start, Offset::min)
    }

    /// Waits until the low watermark reaches `target` while this replica leads in `epoch`, or
    /// until `deadline` (REQUEST_TIMED_OUT: the leader's start has moved, some in-sync
    /// follower's not yet). Returns the low watermark.
    pub(crate) async fn wait_low_watermark(
        &self,
        target: Offset,
        epoch: LeaderEpoch,
        deadline: tokio::time::Instant,
    ) -> Result<Offset, ApiError> {
        let mut changed = self.follower_starts.changed.subscribe();
        loop {
            changed.borrow_and_update();
            self.check_live()?;
            let role = *self.role.read();
            if !role.leading || role.epoch != epoch {
                return Err(ApiError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!("{}: leadership moved while deleting records", self.name),
                ));
            }
            let low = self.low_watermark();
            if low >= target {
                return Ok(low);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ApiError::new(ErrorCode::NotLeaderOrFollower, "partition closed"));
                }
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "{}: the leader deleted the records below {target}, but the in-sync \
                             replicas' log starts did not reach it in time (low watermark {low})",
                            self.name
                        ),
                    ));
                }
            }
        }
    }

    /// As leader: a follower's fetch reported its log start offset.
    pub(crate) fn record_follower_start(&self, follower: NodeId, start: Offset) {
        self.follower_starts.record(follower, start);
    }

    /// As follower: moves the log start up to the leader's (bounded by the local log end; the
    /// rest follows once the records are fetched). The caller holds the replica lock.
    /// Blocking (a checkpoint fsync when it moves).
    pub(crate) fn follow_log_start(&self, leader_start: Offset) -> Result<(), ApiError> {
        let to = leader_start.min(self.log.log_end_offset());
        if to <= self.log.log_start_offset() {
            return Ok(());
        }
        self.log
            .delete_records_before(to)
            .map_err(|e| self.log_error("follow the leader's log start", &e))?;
        tracing::debug!(partition = %self.name, log_start = %to, "took the leader's log start");
        Ok(())
    }
}
