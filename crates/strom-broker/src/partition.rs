//! One partition replica as this broker serves it: its log, its high watermark and leader
//! epoch, and the signal that wakes fetches parked on it.
//!
//! High watermark: the offset below which records are committed and visible to consumers.
//! With one node the leader is the whole ISR, so the high watermark moves to the log end offset
//! as soon as an append returns, and acks 0, 1 and all all mean "appended by the leader" (on
//! stable storage only when the flush policy says so). Replication will move it to the minimum
//! log end offset of the ISR instead; everything reading below it stays as it is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use strom_coordinator::{OffsetsLog, OffsetsLogError};
use strom_format::{Batches, LeaderEpoch, Offset};
use strom_log::{AppendInfo, Log, LogConfig};
use strom_proto::v1::ErrorCode;
use tokio::sync::watch;

use crate::error::{ApiError, BrokerError};

/// `ListOffsets` timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp asking for the high watermark.
pub const LATEST_TIMESTAMP: i64 = -1;

/// Most segments one partition read continues into.
const MAX_SEGMENTS_PER_READ: usize = 64;

/// The offset after the last whole batch of `records`; `None` when there is no batch.
fn next_offset_after(records: &Bytes) -> Option<Offset> {
    Batches::new(records.clone()).map_while(Result::ok).last().map(|b| b.next_offset())
}

/// The directory of a partition inside the data directory, named as Kafka names it.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// A replica's part in its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Role {
    leader: bool,
    epoch: LeaderEpoch,
}

pub(crate) struct Partition {
    name: String,
    dir: PathBuf,
    log: Log,
    /// Whether this replica leads, and in which epoch; set from the metadata image.
    role: parking_lot::RwLock<Role>,
    /// Carries the high watermark; every advance wakes the fetches subscribed to it.
    high_watermark: watch::Sender<Offset>,
    deleted: AtomicBool,
    /// The first corruption a read met, kept for `describe` until the broker restarts (whose
    /// recovery truncates a corrupt tail, or finds the damage again). Leaf lock.
    corruption: parking_lot::Mutex<Option<String>>,
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

impl Partition {
    /// Opens (creating if needed) the log of `topic`-`id` and serves it as leader in `epoch`.
    /// Blocking: recovers the log.
    pub(crate) fn open(
        data_dir: &Path,
        topic: &str,
        id: i32,
        config: LogConfig,
        epoch: LeaderEpoch,
    ) -> Result<Partition, BrokerError> {
        let name = format!("{topic}-{id}");
        let dir = partition_dir(data_dir, topic, id);
        let log = Log::open(&dir, config)
            .map_err(|source| BrokerError::Log { partition: name.clone(), source })?;
        // Everything that survived recovery was appended by this node, the whole ISR.
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        Ok(Partition {
            name,
            dir,
            log,
            role: parking_lot::RwLock::new(Role { leader: true, epoch }),
            high_watermark,
            deleted: AtomicBool::new(false),
            corruption: parking_lot::Mutex::new(None),
        })
    }

    /// `topic-partition`, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this replica is the partition's leader.
    pub(crate) fn is_leader(&self) -> bool {
        self.role.read().leader
    }

    /// Makes this replica leader (or not) in `epoch`, as the metadata says. Fetches parked on
    /// the partition wake, so a deposed leader's readers learn of it at once.
    pub(crate) fn set_role(&self, leader: bool, epoch: LeaderEpoch) {
        let next = Role { leader, epoch };
        let changed = {
            let mut role = self.role.write();
            // Epochs only grow: an older image arriving late must not take leadership back.
            if epoch < role.epoch || *role == next {
                false
            } else {
                *role = next;
                true
            }
        };
        if changed {
            tracing::info!(partition = %self.name, leader, epoch = epoch.get(), "replica role changed");
            self.high_watermark.send_modify(|_| {});
        }
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
        if role.leader {
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

    /// Appends batches (validated by the log, offsets assigned, stamped with the leader epoch)
    /// and advances the high watermark past them. Blocking.
    pub(crate) fn append(&self, records: Bytes) -> Result<AppendInfo, ApiError> {
        self.check_live()?;
        if records.is_empty() {
            return Err(ApiError::new(ErrorCode::CorruptMessage, "no record batches in request"));
        }
        let epoch = self.check_leader()?;
        let info = match self.log.append_with_leader_epoch(records, epoch) {
            Ok(info) => info,
            Err(e) => {
                self.clamp_high_watermark();
                return Err(self.log_error("append", &e));
            }
        };
        // Appends to one log are serialised by the log, so when this one returns every
        // earlier one is complete and the high watermark may pass them all.
        let end = info.last_offset.next();
        self.high_watermark.send_if_modified(|hw| {
            if end > *hw {
                *hw = end;
                true
            } else {
                false
            }
        });
        Ok(info)
    }

    /// After a failed write or flush the log cuts itself back to its last good end, which may
    /// lie below the high watermark (records acknowledged before a failed fsync): the high
    /// watermark follows it down, so no consumer is told of records that are gone.
    pub(crate) fn clamp_high_watermark(&self) {
        let end = self.log.log_end_offset();
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
        Ok(self.read_on(first, max_bytes, hw))
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

/// A partition of `__consumer_offsets` as the coordinator's offset store sees it. Appends go
/// through [`Partition::append`], so they advance the high watermark and wake fetchers of the
/// topic like any produce; reads stop at the high watermark, which is also what the store is
/// told the end is, so a replay never waits for records it cannot read.
impl OffsetsLog for Partition {
    fn append(&self, batch: Bytes) -> Result<Offset, OffsetsLogError> {
        Partition::append(self, batch).map(|info| info.first_offset).map_err(OffsetsLogError::new)
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, OffsetsLogError> {
        Partition::read(self, from, max_bytes).map_err(OffsetsLogError::new)
    }

    fn log_start_offset(&self) -> Offset {
        Partition::log_start_offset(self)
    }

    fn log_end_offset(&self) -> Offset {
        self.high_watermark()
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
mod tests {
    use super::*;

    #[test]
    fn a_stale_epoch_is_fenced_and_a_newer_one_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Partition::open(dir.path(), "t", 0, LogConfig::default(), LeaderEpoch::new(0))
            .expect("open");
        p.set_role(true, LeaderEpoch::new(3));
        assert!(p.check_epoch(None).is_ok());
        assert!(p.check_epoch(Some(3)).is_ok());
        assert_eq!(p.check_epoch(Some(2)).unwrap_err().code, ErrorCode::FencedLeaderEpoch);
        assert_eq!(p.check_epoch(Some(4)).unwrap_err().code, ErrorCode::UnknownLeaderEpoch);
        // An older image arriving late never takes the epoch back.
        p.set_role(false, LeaderEpoch::new(2));
        assert!(p.is_leader());
        p.set_role(false, LeaderEpoch::new(4));
        assert_eq!(p.check_leader().unwrap_err().code, ErrorCode::NotLeaderOrFollower);
    }
}
