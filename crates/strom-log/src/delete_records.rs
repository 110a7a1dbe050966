//! Deleting records below an offset (Kafka's DeleteRecords, `UnifiedLog.deleteRecords` /
//! `maybeIncrementLogStartOffset`): the log start offset moves to any offset up to the log
//! end, even inside a segment, and every segment wholly below it goes.
//!
//! Invariant: once [`Log::delete_records_before`] returns, no record below the new start is
//! ever served again, after any crash: the checkpoint (`log_start.rs`, kind `Within`) is
//! durable before anything changes, and recovery hides the records of the first segment below
//! it (or restarts the log at it when a power cut cut the log short of it). The records of
//! the segment holding the start stay on disk until retention deletes the whole segment, as
//! in Kafka; a read at the start returns the whole batch holding it, whose first records may
//! lie below (clients skip records below their fetch offset, as with any batch).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strom_format::Offset;

use crate::log_start::{self, StartKind};
use crate::producer_snapshot;
use crate::recovery::sync_dir;
use crate::{Log, LogError};

impl Log {
    /// Deletes every record below `offset`: the log start offset becomes `offset` (which may
    /// lie inside a segment), segments wholly below it are deleted, reads below it fail with
    /// [`LogError::OffsetOutOfRange`], and the leader-epoch cache starts at it. An `offset`
    /// at or below the current start changes nothing. Returns the log start offset after the
    /// call (Kafka's low watermark of this replica).
    ///
    /// `offset` above the log end offset (or negative) is [`LogError::OffsetOutOfRange`].
    /// Callers that serve consumers bound it by their high watermark first.
    ///
    /// Durability: the new start is on stable storage (checkpoint written and fsynced) before
    /// anything else changes, so when it returns a crash reopens at `offset` or later, never
    /// below. An error may mean "done in part": a crash after it may reopen at `offset`.
    ///
    /// ```
    /// # use strom_format::{BatchBuilder, Compression, Offset};
    /// use strom_log::{Log, LogConfig};
    /// # fn batch(n: usize) -> bytes::Bytes {
    /// #     let mut b = BatchBuilder::new(Compression::None);
    /// #     for i in 0..n { b.append(i as i64, None, Some(b"v".as_slice()), &[]); }
    /// #     b.build().unwrap()
    /// # }
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append(batch(10)).unwrap(); // 0..=9, one segment
    /// assert_eq!(log.delete_records_before(Offset::new(4)).unwrap().get(), 4);
    /// assert_eq!(log.log_start_offset().get(), 4);
    /// assert!(log.read(Offset::new(3), 1 << 20).is_err());
    /// assert!(log.read(Offset::new(4), 1 << 20).is_ok());
    /// ```
    pub fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let _writer = self.writer.lock();
        self.check_poison()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset.get() < 0 || offset > end {
            return Err(LogError::OffsetOutOfRange { requested: offset, start, end });
        }
        if offset <= start {
            return Ok(start);
        }
        // First of all: from here a crash reopens at `offset` (recovery hides what is below).
        log_start::write_kind(self.storage(), &self.dir, offset, StartKind::Within)?;
        // Before the segments go: a reader that then misses a segment retries, sees the new
        // start and answers OffsetOutOfRange instead of reading a deleted file.
        self.start.store(offset.get(), Ordering::Release);

        let segments = self.snapshot();
        // Segment i is wholly below `offset` when the next one begins at or below it; the
        // active segment is never deleted (it may hold the start, or start at it).
        let below = segments.windows(2).take_while(|w| w[1].base() <= offset).count();
        if below > 0 {
            let kept = segments.get(below..).unwrap_or_default();
            debug_assert!(!kept.is_empty(), "the active segment is kept");
            *self.segments.write() = Arc::new(kept.to_vec());
            for segment in segments.iter().take(below) {
                tracing::info!(segment = %segment.path().display(), %offset,
                    "deleting a segment below the deleted-records offset");
                segment.delete_files(self.storage())?;
            }
            sync_dir(self.storage(), &self.dir)?;
            let first = kept.first().map_or(offset, |s| s.base());
            if let Err(e) = producer_snapshot::remove_below(self.storage(), &self.dir, first) {
                // Stale snapshots only cost disk; retention or the next deletion retries.
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "could not delete producer-state snapshots after deleting records");
            }
        }
        if let Err(e) = self.epochs.truncate_from_start(offset) {
            // Answers already follow the new start; a stale file is fixed up by open.
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not write the leader-epoch checkpoint after deleting records");
        }
        tracing::info!(dir = %self.dir.display(), %offset, deleted_segments = below,
            "deleted records: the log start offset moved");
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use strom_format::{BatchBuilder, Batches, Compression, LeaderEpoch, Offset};

    use crate::{Log, LogConfig, LogError};

    fn batch(n: usize) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..n {
            b.append(i as i64, None, Some(b"v".as_slice()), &[]);
        }
        b.build().expect("batch")
    }

    /// 4 segments of one 10-record batch each: 0, 10, 20, 30 (end 40).
    fn four_segments(dir: &std::path::Path) -> (Log, LogConfig) {
        let config = LogConfig { segment_bytes: 1, ..LogConfig::default() };
        let log = Log::open(dir, config.clone()).expect("open");
        for epoch in 1..=4 {
            log.append_with_leader_epoch(batch(10), LeaderEpoch::new(epoch)).expect("append");
        }
        (log, config)
    }

    fn out_of_range(log: &Log, at: i64) -> bool {
        matches!(log.read(Offset::new(at), 1 << 20), Err(LogError::OffsetOutOfRange { .. }))
    }

    /// The base offset of the first batch a read at `at` returns.
    fn first_base(log: &Log, at: i64) -> i64 {
        let read = log.read(Offset::new(at), 1 << 20).expect("read");
        let batch = Batches::new(read.records).next().expect("a batch").expect("valid");
        batch.base_offset().get()
    }

    #[test]
    fn inside_a_segment_moves_the_start_and_keeps_the_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = four_segments(dir.path());
        assert_eq!(log.delete_records_before(Offset::new(5)).expect("delete").get(), 5);
        assert_eq!(log.log_start_offset().get(), 5);
        assert_eq!(log.segment_count(), 4);
        assert!(out_of_range(&log, 4));
        assert!(out_of_range(&log, 0));
        // The batch holding the start comes back whole.
        assert_eq!(first_base(&log, 5), 0);
        assert_eq!(log.read(Offset::new(5), 1 << 20).expect("read").log_start_offset.get(), 5);
    }

    #[test]
    fn a_timestamp_lookup_skips_the_records_below_a_start_inside_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = four_segments(dir.path());
        // Every batch holds timestamps 0..=9 at offsets base..base+9.
        assert_eq!(log.offset_for_timestamp(0).expect("lookup"), Some((Offset::new(0), 0)));
        log.delete_records_before(Offset::new(5)).expect("delete");
        // The first record at or after the start whose timestamp is high enough, with its
        // own timestamp (not the deleted record's).
        assert_eq!(log.offset_for_timestamp(0).expect("lookup"), Some((Offset::new(5), 5)));
        assert_eq!(log.offset_for_timestamp(3).expect("lookup"), Some((Offset::new(5), 5)));
        assert_eq!(log.offset_for_timestamp(7).expect("lookup"), Some((Offset::new(7), 7)));
    }

    #[test]
    fn across_segments_deletes_the_segments_wholly_below() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = four_segments(dir.path());
        log.delete_records_before(Offset::new(25)).expect("delete");
        assert_eq!(log.segment_count(), 2, "segments 0 and 10 went, 20 holds the start");
        assert_eq!(log.log_start_offset().get(), 25);
        assert!(out_of_range(&log, 24));
        assert_eq!(first_base(&log, 25), 20);
        // Exactly at a segment's base: the segments before it go.
        log.delete_records_before(Offset::new(30)).expect("delete");
        assert_eq!(log.segment_count(), 1);
        assert_eq!(first_base(&log, 30), 30);
        // The epoch cache starts at the start.
        let entries = log.epoch_entries();
        assert_eq!(entries.first().map(|e| (e.epoch.get(), e.start_offset.get())), Some((4, 30)));
    }

    #[test]
    fn below_the_start_is_a_no_op_and_above_the_end_is_out_of_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = four_segments(dir.path());
        log.delete_records_before(Offset::new(15)).expect("delete");
        assert_eq!(log.delete_records_before(Offset::new(3)).expect("no-op").get(), 15);
        assert_eq!(log.log_start_offset().get(), 15);
        assert!(matches!(
            log.delete_records_before(Offset::new(41)),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log.delete_records_before(Offset::new(-1)).is_err());
        // Up to the end: nothing readable is left, appends go on at the end.
        assert_eq!(log.delete_records_before(Offset::new(40)).expect("delete").get(), 40);
        assert!(log.read(Offset::new(40), 1 << 20).expect("read").records.is_empty());
        assert_eq!(log.append(batch(1)).expect("append").first_offset.get(), 40);
        assert_eq!(first_base(&log, 40), 40);
    }

    #[test]
    fn a_restart_keeps_the_start_inside_the_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, config) = four_segments(dir.path());
        log.delete_records_before(Offset::new(23)).expect("delete");
        log.close().expect("close");
        let log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (23, 40));
        assert!(out_of_range(&log, 22));
        assert_eq!(first_base(&log, 23), 20);
        assert_eq!(log.epoch_entries().first().map(|e| e.start_offset.get()), Some(23));
        // Retention of the segment holding the start moves it to the next segment's base.
        drop(log);
        let config = LogConfig { retention_bytes: Some(1), ..config };
        let log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert_eq!(log.enforce_retention().expect("retention"), 1);
        assert_eq!(log.log_start_offset().get(), 30);
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!(log.log_start_offset().get(), 30);
    }

    #[test]
    fn a_crash_after_the_checkpoint_hides_the_records_below_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, config) = four_segments(dir.path());
        log.flush().expect("flush");
        // The crash point: the checkpoint is written, nothing else is (no clean close).
        crate::log_start::write_kind(
            &crate::OsStorage,
            dir.path(),
            Offset::new(15),
            crate::log_start::StartKind::Within,
        )
        .expect("checkpoint");
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (15, 40));
        assert_eq!(log.segment_count(), 3, "segment 0 was wholly below");
        assert!(out_of_range(&log, 14));
    }

    #[test]
    fn a_log_that_lost_its_tail_below_the_start_restarts_at_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, config) = four_segments(dir.path());
        log.close().expect("close");
        // The checkpoint says 45, beyond what survived (as after a power cut that lost the
        // unflushed tail the deletion had passed).
        crate::log_start::write_kind(
            &crate::OsStorage,
            dir.path(),
            Offset::new(45),
            crate::log_start::StartKind::Within,
        )
        .expect("checkpoint");
        let log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (45, 45));
        assert_eq!(log.append(batch(1)).expect("append").first_offset.get(), 45);
        log.close().expect("close");
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (45, 46));
    }

    #[test]
    fn a_truncation_inside_the_batch_holding_the_start_restarts_the_log_at_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, config) = four_segments(dir.path());
        log.delete_records_before(Offset::new(12)).expect("delete");
        // A cut inside the batch holding the start leaves nothing at or above it: the log
        // restarts empty at the start rather than ending below it.
        log.truncate_to(Offset::new(18)).expect("truncate");
        assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (12, 12));
        assert_eq!(log.append(batch(1)).expect("append").first_offset.get(), 12);
        drop(log);
        let log = Log::open(dir.path(), config).expect("reopen");
        assert_eq!((log.log_start_offset().get(), log.log_end_offset().get()), (12, 13));
    }
}
