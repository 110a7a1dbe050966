//! The replication side of a partition: the leader answering a follower's fetch, and the
//! follower applying what its leader sent (records, the high watermark, or a diverging epoch
//! to truncate to). The decisions come from strom-replication; this file does the I/O.

use bytes::Bytes;
use strom_format::{LeaderEpoch, Offset};
use strom_proto::v1::ErrorCode;
use strom_replication::{EpochEndOffset, IsrChange, NodeId, diverging_epoch, truncation_point};

use super::{Partition, now_ms};
use crate::error::ApiError;

/// One partition of a follower's fetch, as the leader receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowerFetch {
    pub(crate) follower: NodeId,
    /// The follower's log end offset.
    pub(crate) fetch_offset: Offset,
    /// The epoch of its last batch, `None` when its log carries none.
    pub(crate) last_fetched_epoch: Option<LeaderEpoch>,
    /// The leader epoch it believes current.
    pub(crate) current_leader_epoch: LeaderEpoch,
    pub(crate) max_bytes: usize,
    /// The follower's log start offset (for the low watermark of DeleteRecords).
    pub(crate) log_start_offset: Offset,
}

/// The leader's answer for one partition.
#[derive(Debug, Clone, Default)]
pub(crate) struct FollowerAnswer {
    pub(crate) high_watermark: Offset,
    pub(crate) log_start_offset: Offset,
    pub(crate) log_end_offset: Offset,
    pub(crate) diverging: Option<EpochEndOffset>,
    /// The fetch offset lies outside the leader's log (OFFSET_OUT_OF_RANGE, with its bounds).
    pub(crate) out_of_range: bool,
    pub(crate) records: Bytes,
}

impl Partition {
    /// Answers a follower's fetch as leader: refuses a follower in another leader epoch,
    /// reports a diverging epoch when the follower's log parts from this one at or below its
    /// fetch offset, else counts the fetch offset as the follower's log end (which may move
    /// the high watermark or call for an ISR change, returned for the controller) and reads
    /// from it, up to the log end (followers copy uncommitted records). Blocking (reads).
    pub(crate) fn serve_follower(
        &self,
        fetch: FollowerFetch,
    ) -> (Result<FollowerAnswer, ApiError>, Option<IsrChange>) {
        match self.serve_follower_inner(fetch) {
            Ok((answer, change)) => (Ok(answer), change),
            Err(e) => (Err(e), None),
        }
    }

    fn serve_follower_inner(
        &self,
        fetch: FollowerFetch,
    ) -> Result<(FollowerAnswer, Option<IsrChange>), ApiError> {
        self.check_live()?;
        let epoch = self.check_leader()?;
        self.check_epoch(Some(fetch.current_leader_epoch.get()))?;
        self.record_follower_start(fetch.follower, fetch.log_start_offset);
        let start = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        let mut answer = FollowerAnswer {
            high_watermark: self.high_watermark(),
            log_start_offset: start,
            log_end_offset: end,
            ..FollowerAnswer::default()
        };
        let leader_end_for_epoch =
            fetch.last_fetched_epoch.and_then(|e| self.log.end_offset_for_epoch(e));
        let first_epoch_offset = self.log.epoch_entries().first().map_or(start, |e| e.start_offset);
        if let Some(d) = diverging_epoch(
            fetch.last_fetched_epoch,
            fetch.fetch_offset,
            leader_end_for_epoch,
            first_epoch_offset,
        ) {
            tracing::debug!(partition = %self.name, follower = fetch.follower,
                fetch_offset = %fetch.fetch_offset, diverging_epoch = d.epoch.get(),
                end_offset = %d.end_offset, "follower log diverges");
            answer.diverging = Some(d);
            return Ok((answer, None));
        }
        if fetch.fetch_offset < start || fetch.fetch_offset > end {
            tracing::info!(partition = %self.name, follower = fetch.follower,
                fetch_offset = %fetch.fetch_offset, %start, %end, leader_epoch = epoch.get(),
                "follower offset out of range");
            answer.out_of_range = true;
            return Ok((answer, None));
        }
        let update = match self.leader.lock().as_mut() {
            Some(state) => state.on_follower_fetch(fetch.follower, fetch.fetch_offset, now_ms()),
            None => return Err(not_leader(self)),
        };
        if let Some(hw) = update.high_watermark {
            self.publish_high_watermark(hw);
        }
        answer.high_watermark = self.high_watermark();
        if fetch.fetch_offset < end {
            answer.records = self
                .log
                .read(fetch.fetch_offset, fetch.max_bytes.max(1))
                .map_err(|e| self.read_error(fetch.fetch_offset, &e))?
                .records;
        }
        Ok((answer, update.isr_change))
    }

    /// Periodic leader work: an ISR shrink to propose when a follower fell behind.
    pub(crate) fn leader_tick(&self) -> Option<IsrChange> {
        self.leader.lock().as_mut().and_then(|s| s.tick(now_ms()))
    }

    /// The ISR change waiting for the controller, if any.
    pub(crate) fn pending_isr_change(&self) -> Option<IsrChange> {
        self.leader.lock().as_ref().and_then(|s| s.pending().cloned())
    }

    /// The controller definitely refused this partition's pending ISR change.
    pub(crate) fn isr_change_failed(&self) {
        if let Some(state) = self.leader.lock().as_mut() {
            state.isr_change_failed();
        }
    }

    /// Where a follower fetch should start: the log end, the epoch of the last batch, and the
    /// leader epoch this replica follows in.
    pub(crate) fn follower_position(&self) -> (Offset, Option<LeaderEpoch>, LeaderEpoch) {
        let (_, epoch) = self.leader_and_epoch();
        (self.log.log_end_offset(), self.log.latest_epoch(), epoch)
    }

    /// The log start offset a follower reports in its fetches.
    pub(crate) fn follower_log_start(&self) -> Offset {
        self.log.log_start_offset()
    }

    /// Whether this replica still follows in `epoch` (responses for another epoch are stale).
    fn follows_in(&self, epoch: LeaderEpoch) -> bool {
        let role = *self.role.read();
        !role.leading && role.epoch == epoch && !self.is_deleted()
    }

    /// Appends what the leader of `epoch` sent, takes its high watermark (capped at the
    /// local log end) and its log start (likewise: records the leader deleted go here too).
    /// Does nothing when the replica no longer follows in `epoch`. Blocking.
    pub(crate) fn apply_from_leader(
        &self,
        epoch: LeaderEpoch,
        records: Bytes,
        leader_high_watermark: Offset,
        leader_log_start: Offset,
    ) -> Result<(), ApiError> {
        let _replica = self.replica_lock.lock();
        if !self.follows_in(epoch) {
            return Ok(());
        }
        if !records.is_empty() {
            if let Err(e) = self.log.append_replicated(records) {
                self.clamp_high_watermark();
                return Err(self.log_error("replicated append", &e));
            }
            self.publish_log_end();
        }
        self.leader_high_watermark
            .store(leader_high_watermark.get(), std::sync::atomic::Ordering::Release);
        let hw = leader_high_watermark.min(self.log.log_end_offset());
        self.publish_high_watermark(hw);
        self.follow_log_start(leader_log_start)
    }

    /// Cuts the log where it parts from the leader's, as the leader's diverging epoch says.
    /// Returns the new log end. Blocking.
    pub(crate) fn truncate_diverging(
        &self,
        epoch: LeaderEpoch,
        diverging: EpochEndOffset,
    ) -> Result<Offset, ApiError> {
        let _replica = self.replica_lock.lock();
        let end = self.log.log_end_offset();
        if !self.follows_in(epoch) {
            return Ok(end);
        }
        let local = if diverging.epoch == LeaderEpoch::UNKNOWN {
            None
        } else {
            self.log.end_offset_for_epoch(diverging.epoch)
        };
        let first = self
            .log
            .epoch_entries()
            .first()
            .map_or(self.log.log_start_offset(), |e| e.start_offset);
        let cut = truncation_point(diverging, local, first, end);
        self.truncate_follower(cut, "diverging epoch")?;
        Ok(self.log.log_end_offset())
    }

    /// The leader answered OFFSET_OUT_OF_RANGE: this log ends before the leader's starts
    /// (start over at the leader's log start) or after the leader's end (a log without epochs
    /// to compare: cut to the leader's end). Blocking.
    pub(crate) fn reset_out_of_range(
        &self,
        epoch: LeaderEpoch,
        leader_start: Offset,
        leader_end: Offset,
    ) -> Result<(), ApiError> {
        let _replica = self.replica_lock.lock();
        if !self.follows_in(epoch) {
            return Ok(());
        }
        let end = self.log.log_end_offset();
        if end < leader_start {
            tracing::warn!(partition = %self.name, end = %end, %leader_start,
                "log ends before the leader's starts; starting over at the leader's log start");
            self.log.restart_at(leader_start).map_err(|e| self.log_error("restart", &e))?;
            self.publish_log_end();
            self.clamp_high_watermark();
            self.publish_high_watermark(leader_start);
        } else if end > leader_end {
            self.truncate_follower(leader_end, "past the leader's log end")?;
        }
        Ok(())
    }

    fn truncate_follower(&self, to: Offset, why: &str) -> Result<(), ApiError> {
        let end = self.log.log_end_offset();
        if to >= end {
            return Ok(());
        }
        if to < self.high_watermark() {
            // Only an unclean election makes a follower lose committed records.
            tracing::warn!(partition = %self.name, to = %to, high_watermark = %self.high_watermark(),
                "truncating below the high watermark ({why})");
        }
        tracing::info!(partition = %self.name, from = %end, to = %to, "truncating follower log ({why})");
        self.log.truncate_to(to).map_err(|e| self.log_error("truncate", &e))?;
        self.publish_log_end();
        self.clamp_high_watermark();
        Ok(())
    }
}

fn not_leader(p: &Partition) -> ApiError {
    ApiError::new(
        ErrorCode::NotLeaderOrFollower,
        format!("this broker is not the leader of {}", p.name),
    )
}
