//! One partition replica as this broker serves it: its log, its role (leader or follower, in
//! which leader epoch), its high watermark, and the signals that wake fetches parked on it.
//!
//! High watermark: the offset below which records are committed (on every member of the ISR)
//! and visible to consumers. As leader, the partition's [`LeaderState`] (strom-replication)
//! computes it from what the followers' fetches report; as follower, it is what the leader last
//! said, capped at the local log end. Consumers read from the leader only, below it.
//! The replication side (serving followers, applying what the leader sends, truncating a
//! divergent tail) is in the `replica` submodule.

mod delete_records;
mod hw_checkpoint;
mod replica;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use strom_coordinator::{OffsetsLog, OffsetsLogError};
use strom_format::{Batches, LeaderEpoch, Offset};
use strom_log::{AppendInfo, Log, LogConfig};
use strom_proto::v1::ErrorCode;
use strom_replication::{Assignment, LeaderConfig, LeaderState, NodeId};
use tokio::sync::watch;

use crate::error::{ApiError, BrokerError};

pub(crate) use replica::{FollowerAnswer, FollowerFetch};

/// `ListOffsets` timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp asking for the high watermark.
pub const LATEST_TIMESTAMP: i64 = -1;

/// Most segments one partition read continues into.
const MAX_SEGMENTS_PER_READ: usize = 64;
/// How long a commit to `__consumer_offsets` waits for the ISR before it fails.
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Milliseconds on a process-wide monotonic clock: the time input of the replication logic.
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The offset after the last whole batch of `records`; `None` when there is no batch.
fn next_offset_after(records: &Bytes) -> Option<Offset> {
    Batches::new(records.clone()).map_while(Result::ok).last().map(|b| b.next_offset())
}

/// The directory of a partition inside the data directory, named as Kafka names it.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// "No leader", as in the metadata.
const NO_LEADER: NodeId = -1;

/// A replica's part in its partition, as the metadata image last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Role {
    /// Whether this replica leads.
    leading: bool,
    /// The leader's node id ([`NO_LEADER`] while offline).
    leader: NodeId,
    epoch: LeaderEpoch,
}

/// The partition's place in the metadata, as [`Partition::apply_assignment`] takes it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionAssignment {
    pub(crate) me: NodeId,
    pub(crate) leader: NodeId,
    pub(crate) assignment: Assignment,
    pub(crate) config: LeaderConfig,
}

pub(crate) struct Partition {
    topic: String,
    index: i32,
    name: String,
    dir: PathBuf,
    log: Log,
    /// Leader or follower, and in which epoch; set from the metadata image.
    role: parking_lot::RwLock<Role>,
    /// The leader's replication state while this replica leads. Leaf lock: never held across
    /// I/O.
    leader: parking_lot::Mutex<Option<LeaderState>>,
    /// Serialises what the follower side writes (replicated appends, truncation) with role
    /// changes, so a response from a leader of an older epoch is never applied after the
    /// replica moved on. Held across that I/O on purpose; only the fetcher and the replica
    /// manager take it.
    replica_lock: parking_lot::Mutex<()>,
    /// Carries the high watermark; every advance wakes the fetches subscribed to it.
    high_watermark: watch::Sender<Offset>,
    /// Carries the log end offset; wakes follower fetches parked on the leader.
    log_end: watch::Sender<Offset>,
    deleted: AtomicBool,
    /// The first corruption a read met, kept for `describe` until the broker restarts (whose
    /// recovery truncates a corrupt tail, or finds the damage again). Leaf lock.
    corruption: parking_lot::Mutex<Option<String>>,
    /// Traffic counters for the metrics endpoint (atomics only).
    counters: crate::metrics::PartitionCounters,
    /// The high watermark last written to the checkpoint file (-1: none yet).
    checkpointed_high_watermark: std::sync::atomic::AtomicI64,
    /// When the scheduled checkpoint last ran (leaf lock).
    last_hw_checkpoint: parking_lot::Mutex<Option<Instant>>,
    /// The partition's writer (`writer` module): started by a produce, gone when idle.
    writer: writer::WriterSlot,
    /// The followers' log starts, for the low watermark DeleteRecords waits for.
    follower_starts: delete_records::FollowerStarts,
    /// As follower: the high watermark the leader last reported, before it is capped at the
    /// local log end (DescribeLogDirs' offset lag). -1 until a fetch answered.
    leader_high_watermark: std::sync::atomic::AtomicI64,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("name", &self.name)
            .field("role", &*self.role.read())
            .field("high_watermark", &self.high_watermark())
            .finish_non_exhaustive()
    }
}

/// How a leader's committed ISR changed from one metadata image to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IsrMove {
    /// Replicas left the ISR (and none joined).
    Shrank,
    /// Replicas joined the ISR (and none left).
    Expanded,
    /// Some left and others joined in one committed change: counted as both.
    Both,
}

impl IsrMove {
    fn between(before: &[NodeId], after: &[NodeId]) -> Option<IsrMove> {
        let left = before.iter().any(|n| !after.contains(n));
        let joined = after.iter().any(|n| !before.contains(n));
        match (left, joined) {
            (true, true) => Some(IsrMove::Both),
            (true, false) => Some(IsrMove::Shrank),
            (false, true) => Some(IsrMove::Expanded),
            (false, false) => None,
        }
    }
}

impl Partition {
    /// Opens (creating if needed) the log of `topic`-`id`. It serves nothing until the
    /// metadata gives it a role ([`Partition::apply_assignment`]). Blocking: recovers the log.
    pub(crate) fn open(
        data_dir: &Path,
        topic: &str,
        id: i32,
        config: LogConfig,
    ) -> Result<Partition, BrokerError> {
        let name = format!("{topic}-{id}");
        let dir = partition_dir(data_dir, topic, id);
        let log = Log::open(&dir, config)
            .map_err(|source| BrokerError::Log { partition: name.clone(), source })?;
        // The high watermark resumes from its checkpoint (clamped to the log); the leader's
        // ISR logic moves it on from there (at once when it is the only member).
        let resumed = hw_checkpoint::initial(&dir, log.log_start_offset(), log.log_end_offset());
        let (high_watermark, _) = watch::channel(resumed);
        let (log_end, _) = watch::channel(log.log_end_offset());
        Ok(Partition {
            topic: topic.to_string(),
            index: id,
            name,
            dir,
            log,
            role: parking_lot::RwLock::new(Role {
                leading: false,
                leader: NO_LEADER,
                epoch: LeaderEpoch::UNKNOWN,
            }),
            leader: parking_lot::Mutex::new(None),
            replica_lock: parking_lot::Mutex::new(()),
            high_watermark,
            log_end,
            deleted: AtomicBool::new(false),
            corruption: parking_lot::Mutex::new(None),
            counters: Default::default(),
            checkpointed_high_watermark: std::sync::atomic::AtomicI64::new(-1),
            last_hw_checkpoint: parking_lot::Mutex::new(None),
            writer: writer::WriterSlot::new(),
            follower_starts: delete_records::FollowerStarts::new(),
            leader_high_watermark: std::sync::atomic::AtomicI64::new(-1),
        })
    }

    /// `topic-partition`, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The topic name.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number.
    pub(crate) fn index(&self) -> i32 {
        self.index
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the high-watermark checkpoint if the high watermark moved since the last one.
    /// Blocking (file I/O); called by the flush scheduler and at shutdown. A failure is logged
    /// and retried on the next call: the checkpoint only shortens a restart's catch-up.
    /// The flush scheduler's call: [`Partition::checkpoint_high_watermark`] at most every
    /// [`hw_checkpoint::INTERVAL`] (Kafka's `replica.high.watermark.checkpoint.interval.ms`),
    /// so thousands of partitions do not rewrite a file every tick.
    pub(crate) fn checkpoint_high_watermark_if_due(&self, now: Instant) {
        {
            let mut last = self.last_hw_checkpoint.lock();
            if last.is_some_and(|at| now.saturating_duration_since(at) < hw_checkpoint::INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        self.checkpoint_high_watermark();
    }

    pub(crate) fn checkpoint_high_watermark(&self) {
        let hw = self.high_watermark();
        if self.checkpointed_high_watermark.load(Ordering::Relaxed) == hw.get() {
            return;
        }
        match hw_checkpoint::write(&self.dir, hw) {
            Ok(()) => self.checkpointed_high_watermark.store(hw.get(), Ordering::Relaxed),
            Err(e) => tracing::warn!(partition = %self.name, error = %e,
                "writing the high-watermark checkpoint failed"),
        }
    }

    /// Whether this replica is the partition's leader.
    pub(crate) fn is_leader(&self) -> bool {
        self.role.read().leading
    }

    /// The leader this replica follows (or itself), and the epoch.
    pub(crate) fn leader_and_epoch(&self) -> (NodeId, LeaderEpoch) {
        let role = *self.role.read();
        (role.leader, role.epoch)
    }

    /// Takes the partition's place in a committed metadata image: leader (starting or keeping
    /// its replication state), follower, or offline. An image older than the role (a smaller
    /// leader epoch) changes nothing. Parked fetches and acks=all waiters wake on a role change
    /// so they learn of it at once.
    ///
    /// Returns how the committed ISR moved when this node kept leading in the same epoch: the
    /// leader's view of ISR shrinks and expansions that the controller committed (Kafka's
    /// IsrShrinksPerSec / IsrExpandsPerSec count these, not proposals).
    pub(crate) fn apply_assignment(&self, a: &PartitionAssignment) -> Option<IsrMove> {
        let _replica = self.replica_lock.lock();
        let epoch = a.assignment.leader_epoch;
        let next = Role { leading: a.leader == a.me, leader: a.leader, epoch };
        let mut moved = None;
        let (changed, high_watermark) = {
            let mut role = self.role.write();
            if epoch < role.epoch {
                return None;
            }
            let mut leader = self.leader.lock();
            let high_watermark = if next.leading {
                let now = now_ms();
                match leader.as_mut() {
                    Some(state) if state.leader_epoch() == epoch => {
                        state.set_config(a.config);
                        moved = IsrMove::between(state.isr(), &a.assignment.isr);
                        state.update_assignment(&a.assignment, now)
                    }
                    _ => {
                        let state = LeaderState::new(
                            a.me,
                            &a.assignment,
                            self.log.log_end_offset(),
                            self.high_watermark(),
                            now,
                            a.config,
                        );
                        let hw = state.high_watermark();
                        *leader = Some(state);
                        Some(hw)
                    }
                }
            } else {
                *leader = None;
                None
            };
            let changed = *role != next;
            *role = next;
            (changed, high_watermark)
        };
        if let Some(hw) = high_watermark {
            self.publish_high_watermark(hw);
        }
        if changed {
            tracing::info!(partition = %self.name, leading = next.leading, leader = next.leader,
                epoch = epoch.get(), "replica role changed");
            self.high_watermark.send_modify(|_| {});
            self.log_end.send_modify(|_| {});
            self.follower_starts.clear();
        } else {
            // The ISR may have changed: DeleteRecords waiting on the low watermark looks again.
            self.follower_starts.wake();
        }
        moved
    }

    fn publish_high_watermark(&self, hw: Offset) {
        self.high_watermark.send_if_modified(|current| {
            if *current == hw {
                false
            } else {
                *current = hw;
                true
            }
        });
    }

    fn publish_log_end(&self) {
        let end = self.log.log_end_offset();
        self.log_end.send_if_modified(|current| {
            if *current == end {
                false
            } else {
                *current = end;
                true
            }
        });
    }

    /// A receiver that sees every later log-end change (and role change).
    pub(crate) fn subscribe_log_end(&self) -> watch::Receiver<Offset> {
        self.log_end.subscribe()
    }

    /// FENCED_LEADER_EPOCH when the client's epoch is older than this replica's,
    /// UNKNOWN_LEADER_EPOCH when it is newer (this replica has not seen the change yet).
    pub(crate) fn check_epoch(&self, client: Option<i32>) -> Result<(), ApiError> {
        let Some(client) = client else { return Ok(()) };
        let current = self.role.read().epoch.get();
        match client.cmp(&current) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(ApiError::new(
                ErrorCode::FencedLeaderEpoch,
                format!("{}: leader epoch {client} is older than {current}", self.name),
            )),
            std::cmp::Ordering::Greater => Err(ApiError::new(
                ErrorCode::UnknownLeaderEpoch,
                format!("{}: leader epoch {client} is newer than {current} known here", self.name),
            )),
        }
    }

    /// NOT_LEADER_OR_FOLLOWER unless this replica leads.
    pub(crate) fn check_leader(&self) -> Result<LeaderEpoch, ApiError> {
        let role = *self.role.read();
        if role.leading {
            Ok(role.epoch)
        } else {
            Err(ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!("this broker is not the leader of {}", self.name),
            ))
        }
    }

    /// Why the partition cannot be read or written right now, if it cannot: corrupt data met
    /// by a read, or a failed write the log has not been able to undo yet.
    pub(crate) fn storage_error(&self) -> Option<String> {
        self.corruption.lock().clone().or_else(|| self.log.storage_error())
    }

    pub(crate) fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    /// How far this replica's log end is behind the high watermark: 0 on the leader, on a
    /// follower against the high watermark its leader last reported (DescribeLogDirs).
    pub(crate) fn offset_lag(&self) -> i64 {
        if self.is_leader() {
            return 0;
        }
        let leader_hw = self.leader_high_watermark.load(Ordering::Acquire);
        leader_hw.saturating_sub(self.log.log_end_offset().get()).max(0)
    }

    pub(crate) fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }

    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    pub(crate) fn into_log(self) -> Log {
        self.log
    }

    /// A receiver that sees every later high-watermark change (or deletion).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Refuses further requests and wakes parked fetches so they let go of the partition.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.high_watermark.send_modify(|_| {});
    }

    fn check_live(&self) -> Result<(), ApiError> {
        if self.is_deleted() {
            let code = ErrorCode::UnknownTopicOrPartition;
            return Err(ApiError::new(code, format!("{} is being deleted", self.name)));
        }
        Ok(())
    }

    /// Appends batches as leader (validated by the log, offsets assigned, stamped with the
    /// leader epoch) and lets the replication state move the high watermark (at once when this
    /// replica is the whole ISR). Returns the epoch the batches were stamped with, the one an
    /// acks=all wait must still lead in. Blocking.
    pub(crate) fn append(&self, records: Bytes) -> Result<(AppendInfo, LeaderEpoch), ApiError> {
        self.check_live()?;
        if records.is_empty() {
            return Err(ApiError::new(ErrorCode::CorruptMessage, "no record batches in request"));
        }
        let epoch = self.check_leader()?;
        let size = records.len();
        let info = match self.log.append_with_leader_epoch(records, epoch) {
            Ok(info) => info,
            Err(e) => {
                self.clamp_high_watermark();
                return Err(self.log_error("append", &e));
            }
        };
        self.publish_log_end();
        self.leader_log_moved();
        self.counters.appended(size, info.first_offset, info.last_offset);
        Ok((info, epoch))
    }

    /// The leader's log end moved (an append, or a cut after a failed write): the high
    /// watermark may follow.
    fn leader_log_moved(&self) {
        let end = self.log.log_end_offset();
        let moved = self.leader.lock().as_mut().and_then(|s| s.on_append(end));
        if let Some(hw) = moved {
            self.publish_high_watermark(hw);
        }
    }

    /// acks=all may be tried: the committed ISR holds at least `min.insync.replicas`.
    pub(crate) fn check_min_isr(&self, code: ErrorCode) -> Result<(), ApiError> {
        let guard = self.leader.lock();
        let Some(state) = guard.as_ref() else {
            drop(guard);
            return self.check_leader().map(|_| ());
        };
        state.check_min_isr().map_err(|e| ApiError::new(code, format!("{}: {e}", self.name)))
    }

    /// Waits until the high watermark passes `end` (every ISR member has the records below
    /// it) while this replica still leads in `epoch`, or until `deadline`.
    ///
    /// Errors say the outcome is unknown: REQUEST_TIMED_OUT, or NOT_LEADER_OR_FOLLOWER when
    /// leadership moved meanwhile (the new leader may or may not have the records), or
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below `min.insync.replicas`.
    pub(crate) async fn wait_committed(
        &self,
        end: Offset,
        epoch: LeaderEpoch,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        let mut hw = self.subscribe();
        loop {
            self.check_live()?;
            let role = *self.role.read();
            if !role.leading || role.epoch != epoch {
                return Err(ApiError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "{}: leadership moved while waiting for the in-sync replicas; the \
                         records may or may not have been kept",
                        self.name
                    ),
                ));
            }
            if *hw.borrow_and_update() >= end {
                return self.check_min_isr(ErrorCode::NotEnoughReplicasAfterAppend);
            }
            match tokio::time::timeout_at(deadline, hw.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(ApiError::new(ErrorCode::NotLeaderOrFollower, "partition closed"));
                }
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "{}: the in-sync replicas did not confirm the records in time \
                             (high watermark {}, needed {end}); they may or may not be kept",
                            self.name,
                            self.high_watermark()
                        ),
                    ));
                }
            }
        }
    }

    /// After a failed write or flush the log cuts itself back to its last good end, which may
    /// lie below the high watermark (records acknowledged before a failed fsync): the high
    /// watermark follows it down, so no consumer is told of records that are gone.
    pub(crate) fn clamp_high_watermark(&self) {
        let end = self.log.log_end_offset();
        self.publish_log_end();
        self.leader_log_moved();
        self.high_watermark.send_if_modified(|hw| {
            if end < *hw {
                tracing::warn!(partition = %self.name, from = %*hw, to = %end,
                    "high watermark lowered after the log was cut back");
                *hw = end;
                true
            } else {
                false
            }
        });
    }

    /// Whole batches from the one holding `from`, none at or above the high watermark, about
    /// `max_bytes` of them (at least one batch when any is readable). Blocking.
    pub(crate) fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, ApiError> {
        self.check_live()?;
        self.check_leader()?;
        let hw = self.high_watermark();
        let start = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        if from < start || from > end {
            return Err(ApiError::new(
                ErrorCode::OffsetOutOfRange,
                format!("{}: offset {from} is outside [{start}, {end}]", self.name),
            ));
        }
        if from >= hw {
            return Ok(Bytes::new());
        }
        let first = self
            .log
            .read_below(from, max_bytes.max(1), hw)
            .map_err(|e| self.read_error(from, &e))?
            .records;
        let records = self.read_on(first, max_bytes, hw);
        self.counters.read(records.len(), from, next_offset_after(&records));
        Ok(records)
    }

    /// Traffic counters of this replica.
    pub(crate) fn counters(&self) -> &crate::metrics::PartitionCounters {
        &self.counters
    }

    /// A log read stops at the end of a segment. A consumer catching up should not get one
    /// segment's tail per round trip (or wait out a long poll while later segments hold data),
    /// so reading continues into the next segments while the limit allows. This copies, but
    /// only when a read crosses a segment boundary.
    fn read_on(&self, first: Bytes, max_bytes: usize, hw: Offset) -> Bytes {
        let mut total = first.len();
        let Some(mut next) = next_offset_after(&first) else { return first };
        let mut chunks = vec![first];
        while total < max_bytes && next < hw && chunks.len() < MAX_SEGMENTS_PER_READ {
            let more = match self.log.read_below(next, max_bytes - total, hw) {
                Ok(read) => read.records,
                // What was read is still good; the next fetch reports the error.
                Err(_) => break,
            };
            let Some(after) = next_offset_after(&more) else { break };
            if total + more.len() > max_bytes {
                break;
            }
            total += more.len();
            next = after;
            chunks.push(more);
        }
        match chunks.as_slice() {
            [only] => only.clone(),
            _ => {
                let mut joined = BytesMut::with_capacity(total);
                for chunk in &chunks {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        }
    }

    /// Resolves a ListOffsets timestamp to `(offset, timestamp)`; `(-1, -1)` when no committed
    /// record is at or after it. Blocking.
    pub(crate) fn offset_for(&self, timestamp: i64) -> Result<(i64, i64), ApiError> {
        self.check_live()?;
        self.check_leader()?;
        match timestamp {
            EARLIEST_TIMESTAMP => Ok((self.log.log_start_offset().get(), -1)),
            LATEST_TIMESTAMP => Ok((self.high_watermark().get(), -1)),
            ts if ts >= 0 => {
                let found = self
                    .log
                    .offset_for_timestamp(ts)
                    .map_err(|e| self.log_error("timestamp lookup", &e))?;
                // The log skips records below a start DeleteRecords moved inside a batch.
                match found {
                    Some((offset, ts)) if offset < self.high_watermark() => Ok((offset.get(), ts)),
                    _ => Ok((-1, -1)),
                }
            }
            other => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("unsupported ListOffsets timestamp {other} (use -2, -1 or >= 0)"),
            )),
        }
    }

    /// A failed read. Corruption is logged once per partition with the segment, byte and
    /// offset, and marks the partition (see `storage_error`); the other partitions are
    /// unaffected. The client gets KAFKA_STORAGE_ERROR naming the offset, every time.
    fn read_error(&self, from: Offset, error: &strom_log::LogError) -> ApiError {
        let strom_log::LogError::Corrupt { path, position, reason } = error else {
            return self.log_error("read", error);
        };
        let what = format!(
            "corrupt data in segment {} at byte {position}, reading offset {from}: {reason}",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |f| { f.to_string_lossy().into_owned() }
            ),
        );
        let mut marked = self.corruption.lock();
        if marked.is_none() {
            tracing::error!(partition = %self.name, segment = %path.display(), position,
                offset = %from, %reason, "corrupt data: the partition is marked as having a \
                storage error; run `strom-admin log verify` on the data directory");
            *marked = Some(what.clone());
        }
        drop(marked);
        ApiError::storage(format!("{}: {what}", self.name))
    }

    fn log_error(&self, op: &str, error: &strom_log::LogError) -> ApiError {
        let api = ApiError::from_log(&self.name, error);
        if api.code == ErrorCode::KafkaStorageError || api.code == ErrorCode::UnknownServerError {
            tracing::error!(partition = %self.name, %error, "{op} failed");
        } else {
            tracing::debug!(partition = %self.name, %error, "{op} rejected");
        }
        api
    }
}

/// A partition of `__consumer_offsets` as the coordinator's offset store sees it. A commit is
/// acknowledged only once the ISR has it (acks=all, bounded by [`OFFSETS_COMMIT_TIMEOUT`]).
/// Replay reads up to the log end, not the high watermark: a new leader's log holds every
/// acknowledged commit, while its high watermark may still lag (it learns it from the
/// previous leader one fetch late).
impl OffsetsLog for Partition {
    fn append(&self, batch: Bytes) -> Result<Offset, OffsetsLogError> {
        self.check_min_isr(ErrorCode::NotEnoughReplicas).map_err(OffsetsLogError::new)?;
        let (info, epoch) = Partition::append(self, batch).map_err(OffsetsLogError::new)?;
        let deadline = tokio::time::Instant::now() + OFFSETS_COMMIT_TIMEOUT;
        let end = info.last_offset.next();
        // Called on a blocking thread (the coordinator's spawn_blocking).
        let waited = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(self.wait_committed(end, epoch, deadline)),
            Err(_) => Ok(()),
        };
        waited.map(|()| info.first_offset).map_err(OffsetsLogError::new)
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, OffsetsLogError> {
        self.check_live().map_err(OffsetsLogError::new)?;
        self.log
            .read(from, max_bytes)
            .map(|r| r.records)
            .map_err(|e| OffsetsLogError::new(self.read_error(from, &e)))
    }

    fn log_start_offset(&self) -> Offset {
        Partition::log_start_offset(self)
    }

    fn log_end_offset(&self) -> Offset {
        self.log.log_end_offset()
    }

    fn flush(&self) -> Result<(), OffsetsLogError> {
        self.check_live().map_err(OffsetsLogError::new)?;
        self.log.flush().map_err(|e| {
            self.clamp_high_watermark();
            OffsetsLogError::new(e)
        })
    }
}

#[cfg(test)]
// The writer tests stall the writer thread on purpose by holding a lock it needs.
#[allow(clippy::await_holding_lock)]
mod tests {
    use super::*;

    fn assignment(me: NodeId, leader: NodeId, epoch: i32, isr: &[NodeId]) -> PartitionAssignment {
        PartitionAssignment {
            me,
            leader,
            assignment: Assignment {
                leader_epoch: LeaderEpoch::new(epoch),
                partition_epoch: epoch,
                replicas: vec![1, 2, 3],
                isr: isr.to_vec(),
            },
            config: LeaderConfig { replica_lag_time_max_ms: 10_000, min_insync_replicas: 2 },
        }
    }

    #[test]
    fn a_stale_epoch_is_fenced_and_a_newer_one_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Partition::open(dir.path(), "t", 0, LogConfig::default()).expect("open");
        p.apply_assignment(&assignment(1, 1, 3, &[1, 2, 3]));
        assert!(p.check_epoch(None).is_ok());
        assert!(p.check_epoch(Some(3)).is_ok());
        assert_eq!(p.check_epoch(Some(2)).unwrap_err().code, ErrorCode::FencedLeaderEpoch);
        assert_eq!(p.check_epoch(Some(4)).unwrap_err().code, ErrorCode::UnknownLeaderEpoch);
        // An older image arriving late never takes the epoch back.
        p.apply_assignment(&assignment(1, 2, 2, &[1, 2, 3]));
        assert!(p.is_leader());
        p.apply_assignment(&assignment(1, 2, 4, &[1, 2, 3]));
        assert_eq!(p.check_leader().unwrap_err().code, ErrorCode::NotLeaderOrFollower);
    }

    fn batch(records: usize) -> Bytes {
        let mut b = strom_format::BatchBuilder::new(strom_format::Compression::None);
        for i in 0..records {
            b.append(i as i64, None, Some(b"value".as_slice()), &[]);
        }
        b.build().expect("batch")
    }

    /// A partition leading alone (ISR = itself), so the high watermark follows every append.
    fn sole_leader(dir: &Path, depth: usize) -> std::sync::Arc<Partition> {
        sole_leader_with(dir, |w| w.depth = depth)
    }

    /// [`sole_leader`] with its writer's settings changed by `configure`.
    fn sole_leader_with(
        dir: &Path,
        configure: impl FnOnce(&mut writer::WriterSlot),
    ) -> std::sync::Arc<Partition> {
        let mut p = Partition::open(dir, "t", 0, LogConfig::default()).expect("open");
        configure(&mut p.writer);
        let mut a = assignment(1, 1, 0, &[1]);
        a.assignment.replicas = vec![1];
        a.config.min_insync_replicas = 1;
        p.apply_assignment(&a);
        std::sync::Arc::new(p)
    }

    fn far_deadline() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(30)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_get_distinct_ordered_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = sole_leader(dir.path(), writer::WRITE_QUEUE_DEPTH);
        let (tasks, per_task, records) = (8, 40, 3);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let p = p.clone();
            handles.push(tokio::spawn(async move {
                let mut firsts = Vec::new();
                for _ in 0..per_task {
                    let (info, _) = p
                        .append_queued(batch(records), true, far_deadline())
                        .await
                        .expect("append");
                    assert_eq!(
                        info.last_offset.get() - info.first_offset.get(),
                        records as i64 - 1
                    );
                    firsts.push(info.first_offset.get());
                }
                firsts
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            let firsts = h.await.expect("task");
            // One producer's appends are answered in the order it sent them.
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
            all.extend(firsts);
        }
        all.sort_unstable();
        let expected: Vec<i64> =
            (0..(tasks * per_task) as i64).map(|i| i * records as i64).collect();
        assert_eq!(all, expected, "every append got its own dense range");
        let end = Offset::new((tasks * per_task * records) as i64);
        assert_eq!(p.log().log_end_offset(), end);
        assert_eq!(p.high_watermark(), end, "published before the answers");
    }

    type Queued = tokio::task::JoinHandle<writer::AppendAnswer>;

    fn spawn_append(p: &std::sync::Arc<Partition>, records: Bytes) -> Queued {
        let p = p.clone();
        tokio::spawn(async move { p.append_queued(records, false, far_deadline()).await })
    }

    /// Waits (by yielding, no sleeps) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < std::time::Duration::from_secs(20), "never: {what}");
            tokio::task::yield_now().await;
        }
    }

    /// Holds the writer in the middle of a one-append group: the append is written (log end
    /// `end_after`) and the writer waits for the leader state, held by the returned guard.
    async fn stall_writer<'a>(
        p: &'a std::sync::Arc<Partition>,
        end_after: i64,
    ) -> (parking_lot::MutexGuard<'a, Option<LeaderState>>, Queued) {
        let stall = p.leader.lock();
        let stalled = spawn_append(p, batch(1));
        until("the stalled append is written", || {
            p.log().log_end_offset() == Offset::new(end_after)
        })
        .await;
        (stall, stalled)
    }

    fn queue(p: &Partition) -> tokio::sync::mpsc::Sender<writer::AppendRequest> {
        p.writer.sender().expect("writer started")
    }

    /// Waits (polling every millisecond, with a deadline) until the partition's writer
    /// threads are down to `n`.
    async fn until_writer_threads(p: &Partition, n: usize) {
        let start = std::time::Instant::now();
        while p.writer.threads() != n {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "writer threads stayed at {}, not {n}",
                p.writer.threads()
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Queues `n` appends in this order (each is queued on its first poll, and `join_all`
    /// polls them in order) and returns their first offsets.
    async fn pipelined(p: &std::sync::Arc<Partition>, n: usize) -> Vec<i64> {
        let appends = (0..n).map(|_| p.append_queued(batch(1), false, far_deadline()));
        futures::future::join_all(appends)
            .await
            .into_iter()
            .map(|r| r.expect("append").0.first_offset.get())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_writer_ends_and_the_next_append_starts_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = sole_leader_with(dir.path(), |w| w.idle = std::time::Duration::from_millis(20));
        assert_eq!(p.writer.threads(), 0, "started by the first append");
        assert_eq!(pipelined(&p, 5).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.writer.threads(), 1);
        until_writer_threads(&p, 0).await;
        assert!(p.writer.sender().is_none(), "the idle writer left its slot");
        // Appends after the restart land in the order they were queued, after the others.
        assert_eq!(pipelined(&p, 5).await, vec![5, 6, 7, 8, 9]);
        assert_eq!(p.writer.threads(), 1);
        until_writer_threads(&p, 0).await;
        assert_eq!(p.log().log_end_offset(), Offset::new(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_racing_the_idle_exit_are_neither_lost_nor_reordered() {
        let dir = tempfile::tempdir().expect("tempdir");
        // No idle period at all: the writer tries to leave every time its queue runs dry,
        // so nearly every append meets a writer leaving or just gone.
        let p = sole_leader_with(dir.path(), |w| w.idle = std::time::Duration::ZERO);
        let (tasks, rounds, per_round) = (3, 40, 4);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let p = p.clone();
            handles.push(tokio::spawn(async move {
                let mut firsts = Vec::new();
                for _ in 0..rounds {
                    firsts.extend(pipelined(&p, per_round).await);
                }
                firsts
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            let firsts = h.await.expect("task");
            assert!(firsts.windows(2).all(|w| w[0] < w[1]), "reordered: {firsts:?}");
            all.extend(firsts);
        }
        all.sort_unstable();
        let total = (tasks * rounds * per_round) as i64;
        assert_eq!(all, (0..total).collect::<Vec<_>>(), "every append written once");
        assert_eq!(p.log().log_end_offset(), Offset::new(total));
        until_writer_threads(&p, 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_write_queue_times_out_then_everything_queued_is_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = sole_leader(dir.path(), 2);
        let (stall, stalled) = stall_writer(&p, 1).await;
        let queued = [spawn_append(&p, batch(1)), spawn_append(&p, batch(1))];
        let tx = queue(&p);
        until("the queue is full", || tx.capacity() == 0).await;
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let err = p.append_queued(batch(1), false, soon).await.expect_err("queue is full");
        assert_eq!(err.code, ErrorCode::RequestTimedOut);
        assert!(err.message.contains("write queue"), "{}", err.message);
        drop(stall);
        assert_eq!(stalled.await.expect("task").expect("stalled append").0.first_offset.get(), 0);
        let mut offsets = Vec::new();
        for q in queued {
            offsets.push(q.await.expect("task").expect("queued append").0.first_offset.get());
        }
        offsets.sort_unstable();
        assert_eq!(offsets, vec![1, 2]);
        assert_eq!(p.log().log_end_offset(), Offset::new(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_waits_until_queued_appends_are_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = sole_leader(dir.path(), 8);
        let holder = p.clone();
        let (stall, stalled) = stall_writer(&holder, 1).await;
        let queued: Vec<_> = (0..4).map(|_| spawn_append(&p, batch(2))).collect();
        let tx = queue(&p);
        until("four appends are queued", || tx.capacity() == 4).await;
        drop(tx);
        // The closer (as the broker's shutdown does) can only take the log once every queued
        // append was answered: each caller holds the partition until then.
        let closer = tokio::task::spawn_blocking({
            let mut p = Some(p);
            move || {
                loop {
                    match std::sync::Arc::try_unwrap(p.take().expect("partition")) {
                        Ok(p) => return p.into_log().log_end_offset(),
                        Err(still) => {
                            p = Some(still);
                            std::thread::yield_now();
                        }
                    }
                }
            }
        });
        drop(stall);
        drop(holder);
        stalled.await.expect("task").expect("stalled append");
        for q in queued {
            q.await.expect("task").expect("queued append is answered");
        }
        assert_eq!(closer.await.expect("closer"), Offset::new(9));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_append_in_a_group_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = sole_leader(dir.path(), 8);
        let (stall, stalled) = stall_writer(&p, 1).await;
        let mut corrupt = batch(2).to_vec();
        if let Some(last) = corrupt.last_mut() {
            *last ^= 0xff;
        }
        let tx = queue(&p);
        let mut queued = Vec::new();
        for (i, records) in [batch(2), Bytes::from(corrupt), batch(2)].into_iter().enumerate() {
            queued.push(spawn_append(&p, records));
            // One at a time, so the group's order is the order here.
            until("queued", || tx.capacity() == 8 - (i + 1)).await;
        }
        drop(stall);
        stalled.await.expect("task").expect("stalled append");
        let mut results = Vec::new();
        for q in queued {
            results.push(q.await.expect("task").map(|(info, _)| info.first_offset.get()));
        }
        assert_eq!(results[0].as_ref().ok(), Some(&1));
        assert_eq!(results[1].as_ref().map_err(|e| e.code).err(), Some(ErrorCode::CorruptMessage));
        assert_eq!(results[2].as_ref().ok(), Some(&3));
        assert_eq!(p.log().log_end_offset(), Offset::new(5));
    }

    #[test]
    fn min_insync_is_checked_against_the_committed_isr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Partition::open(dir.path(), "t", 0, LogConfig::default()).expect("open");
        p.apply_assignment(&assignment(1, 1, 0, &[1, 2]));
        assert!(p.check_min_isr(ErrorCode::NotEnoughReplicas).is_ok());
        let mut shrunk = assignment(1, 1, 0, &[1]);
        shrunk.assignment.partition_epoch = 1;
        p.apply_assignment(&shrunk);
        assert_eq!(
            p.check_min_isr(ErrorCode::NotEnoughReplicas).unwrap_err().code,
            ErrorCode::NotEnoughReplicas
        );
    }

    #[test]
    fn a_reopened_replica_resumes_its_checkpointed_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = || {
            let mut b = strom_format::BatchBuilder::new(strom_format::Compression::None);
            for i in 0..5 {
                b.append(i, None, Some(b"v".as_slice()), &[]);
            }
            b.build().expect("batch")
        };
        {
            let p = Partition::open(dir.path(), "t", 0, LogConfig::default()).expect("open");
            p.apply_assignment(&assignment(1, 1, 1, &[1]));
            p.append(batch()).expect("append");
            p.append(batch()).expect("append");
            assert_eq!(p.high_watermark().get(), 10, "a lone ISR member commits at once");
            let now = Instant::now();
            p.checkpoint_high_watermark_if_due(now);
            assert_eq!(
                hw_checkpoint::read(dir.path().join("t-0").as_path()),
                Some(Offset::new(10))
            );
            p.append(batch()).expect("append");
            p.checkpoint_high_watermark_if_due(now);
            assert_eq!(
                hw_checkpoint::read(dir.path().join("t-0").as_path()),
                Some(Offset::new(10)),
                "not due again within the interval"
            );
            p.checkpoint_high_watermark();
            p.into_log().close().expect("close");
        }
        let p = Partition::open(dir.path(), "t", 0, LogConfig::default()).expect("reopen");
        assert_eq!(p.high_watermark().get(), 15, "before any role: the checkpoint");
        assert_eq!(p.offset_for(LATEST_TIMESTAMP).map(|(o, _)| o).ok(), None, "no role yet");
        p.apply_assignment(&assignment(1, 1, 2, &[1, 2, 3]));
        assert_eq!(
            p.offset_for(LATEST_TIMESTAMP).map(|(o, _)| o).ok(),
            Some(15),
            "a leader waiting for its followers answers latest with the checkpoint, not 0"
        );
    }

    #[test]
    fn committed_isr_moves_are_reported_to_the_leader_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Partition::open(dir.path(), "t", 0, LogConfig::default()).expect("open");
        let at = |me, leader, partition_epoch, isr: &[NodeId]| {
            let mut a = assignment(me, leader, 1, isr);
            a.assignment.partition_epoch = partition_epoch;
            a
        };
        assert_eq!(p.apply_assignment(&at(1, 1, 1, &[1, 2, 3])), None, "becoming leader");
        assert_eq!(p.apply_assignment(&at(1, 1, 2, &[1, 2])), Some(IsrMove::Shrank));
        assert_eq!(p.apply_assignment(&at(1, 1, 2, &[1, 2])), None, "the same image again");
        assert_eq!(p.apply_assignment(&at(1, 1, 3, &[1, 2, 3])), Some(IsrMove::Expanded));
        assert_eq!(p.apply_assignment(&at(1, 1, 4, &[1, 3])), Some(IsrMove::Shrank));
        assert_eq!(p.apply_assignment(&at(1, 1, 5, &[1, 2])), Some(IsrMove::Both));
        let follower =
            Partition::open(&dir.path().join("f"), "t", 0, LogConfig::default()).expect("open");
        assert_eq!(follower.apply_assignment(&at(2, 1, 1, &[1, 2, 3])), None);
        assert_eq!(follower.apply_assignment(&at(2, 1, 2, &[1, 2])), None, "followers count none");
    }
}
