//! Committed offsets: an in-memory cache in front of the `__consumer_offsets` partitions,
//! rebuilt from them on start and written through to them on every commit.
//!
//! Durability: [`OffsetStore::commit`] returns only after the commit's batch is appended and
//! flushed to stable storage, and only then does the cache (what fetches see) change. So an
//! acknowledged commit survives a crash, and a failed one is invisible: all or nothing per
//! request, because one request is one batch.
//!
//! The cache applies writes in log order even when commits race: every cached value remembers
//! the log offset of the record that wrote it, and an older record never overwrites a newer
//! one. Replaying the log after a restart therefore yields exactly the state the cache had.
//!
//! Group commit: concurrent writes to one partition share an append and an fsync. The first
//! writer to find the partition idle becomes the leader: it takes every write queued so far
//! (up to [`MAX_GROUP_COMMIT_BYTES`]) into one batch, appends and flushes it, applies it to
//! the cache and wakes the writers it carried. Writes that queue meanwhile go in the next
//! batch. A failed batch fails every write in it, and none of them is visible.
//!
//! Expiry: [`OffsetStore::expire_group`] writes tombstones for a group's offsets committed
//! before a cutoff (`offsets.retention.minutes`), so the compacted topic drops them too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use strom_format::{
    BatchBuilder, Batches, Compression, FormatError, LeaderEpoch, Offset, PartitionId, RecordBatch,
    set_base_offset,
};
use tracing::{debug, info, warn};

use crate::error::{CoordinatorError, OffsetsLogError};
use crate::offset_schema::{
    CommittedOffset, SchemaError, decode_key, decode_value, encode_key, encode_value,
    partition_for_group,
};

/// The internal topic committed offsets live in.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's default partition count of `__consumer_offsets` (`offsets.topic.num.partitions`).
pub const DEFAULT_OFFSETS_PARTITIONS: usize = 50;

/// Most record bytes (keys and values) one group-committed batch carries; a single write
/// larger than this still goes out, alone.
pub const MAX_GROUP_COMMIT_BYTES: usize = 256 * 1024;

/// How much one replay read asks for; doubled up to [`MAX_REPLAY_READ`] for larger batches.
const REPLAY_READ: usize = 1 << 20;
const MAX_REPLAY_READ: usize = 64 << 20;

/// One partition of `__consumer_offsets`, as the store needs it. The broker implements it for
/// its (replicated) partitions; [`strom_log::Log`] implements it for a local log.
///
/// All methods block (disk I/O); the coordinator calls them from `spawn_blocking`.
pub trait OffsetsLog: Send + Sync {
    /// Appends one RecordBatch v2 (base offset 0, as built); returns the offset its first
    /// record was given.
    fn append(&self, batch: Bytes) -> Result<Offset, OffsetsLogError>;
    /// Reads whole batches starting with the one holding `from`, about `max_bytes` of them
    /// (at least one batch if `from` is below the end).
    fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, OffsetsLogError>;
    /// The first offset still in the log.
    fn log_start_offset(&self) -> Offset;
    /// The offset the next append will get; replay reads up to here.
    fn log_end_offset(&self) -> Offset;
    /// Makes everything appended so far durable.
    fn flush(&self) -> Result<(), OffsetsLogError>;
}

/// A cached value and the log offset of the record that wrote it (`None`: a tombstone, kept
/// so that an older racing write cannot bring the key back).
#[derive(Debug, Clone)]
struct Slot {
    at: Offset,
    value: Option<CommittedOffset>,
}

/// group -> topic -> partition -> slot; ordered so listings come out sorted.
type Cache = HashMap<String, BTreeMap<String, BTreeMap<PartitionId, Slot>>>;

/// One partition's offset to write: the entry of a commit request once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetWrite {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: PartitionId,
    /// The next offset to consume.
    pub offset: Offset,
    /// Leader epoch of the last consumed record.
    pub leader_epoch: LeaderEpoch,
    /// Client metadata.
    pub metadata: String,
}

/// The committed offsets of every group, cached in memory and persisted in the
/// `__consumer_offsets` partitions.
///
/// ```
/// use std::sync::Arc;
/// use strom_coordinator::{MemoryOffsetsLog, OffsetStore, OffsetWrite, OffsetsLog};
/// use strom_format::{LeaderEpoch, Offset, PartitionId};
///
/// let logs: Vec<Arc<dyn OffsetsLog>> = vec![Arc::new(MemoryOffsetsLog::default())];
/// let store = OffsetStore::load(logs.clone()).unwrap();
/// store.commit("billing", &[OffsetWrite {
///     topic: "orders".into(), partition: PartitionId::new(0), offset: Offset::new(42),
///     leader_epoch: LeaderEpoch::UNKNOWN, metadata: String::new(),
/// }], 1_700_000_000_000).unwrap();
/// // A restart replays the log into the same state.
/// let reloaded = OffsetStore::load(logs).unwrap();
/// let c = reloaded.fetch("billing", "orders", PartitionId::new(0)).unwrap();
/// assert_eq!(c.offset, Offset::new(42));
/// ```
pub struct OffsetStore {
    partitions: Vec<Arc<dyn OffsetsLog>>,
    cache: RwLock<Cache>,
    /// One group-commit queue per partition, same index.
    queues: Vec<CommitQueue>,
}

/// One record of a write: its encoded key and value, and what it does to the cache.
#[derive(Debug)]
struct PendingRecord {
    key: Bytes,
    value: Option<Bytes>,
    timestamp_ms: i64,
    topic: String,
    partition: PartitionId,
    decoded: Option<CommittedOffset>,
}

/// One caller's write waiting for a group commit.
#[derive(Debug)]
struct QueuedWrite {
    ticket: u64,
    group: String,
    records: Vec<PendingRecord>,
}

impl QueuedWrite {
    fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.key.len() + r.value.as_ref().map_or(0, Bytes::len)).sum()
    }
}

/// The group-commit queue of one partition.
#[derive(Debug, Default)]
struct CommitQueue {
    state: Mutex<QueueState>,
    done: parking_lot::Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    queued: std::collections::VecDeque<QueuedWrite>,
    /// A leader is appending a batch (outside the lock).
    busy: bool,
    next_ticket: u64,
    /// Outcomes the leader left for the writers it carried: `None` is success, `Some` the
    /// failure's message (the leader itself gets the original error).
    finished: HashMap<u64, Option<String>>,
    /// Batches appended so far (for tests and metrics).
    batches: u64,
}

impl fmt::Debug for OffsetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffsetStore")
            .field("partitions", &self.partitions.len())
            .field("groups", &self.cache.read().len())
            .finish()
    }
}

impl OffsetStore {
    /// Replays every partition (in index order: index `i` is `__consumer_offsets-i`) into the
    /// cache: last write wins, tombstones delete. Blocks on disk reads.
    pub fn load(partitions: Vec<Arc<dyn OffsetsLog>>) -> Result<Self, CoordinatorError> {
        if partitions.is_empty() {
            return Err(CoordinatorError::NoPartitions);
        }
        let mut cache = Cache::new();
        for (index, log) in partitions.iter().enumerate() {
            replay(index, log.as_ref(), &mut cache)?;
        }
        // Tombstones only matter against racing writes, and there are none yet.
        for topics in cache.values_mut() {
            for parts in topics.values_mut() {
                parts.retain(|_, slot| slot.value.is_some());
            }
            topics.retain(|_, parts| !parts.is_empty());
        }
        cache.retain(|_, topics| !topics.is_empty());
        info!(partitions = partitions.len(), groups = cache.len(), "loaded committed offsets");
        let queues = partitions.iter().map(|_| CommitQueue::default()).collect();
        Ok(OffsetStore { partitions, cache: RwLock::new(cache), queues })
    }

    /// How many `__consumer_offsets` partitions the store spans.
    pub fn num_partitions(&self) -> usize {
        self.partitions.len()
    }

    /// The `__consumer_offsets` partition holding `group_id`'s offsets.
    pub fn partition_for(&self, group_id: &str) -> usize {
        partition_for_group(group_id, self.partitions.len())
    }

    /// Commits `writes` for `group_id` as one batch: append, flush, then update the cache.
    /// On error nothing is visible (the cache is untouched). Blocks on disk I/O.
    pub fn commit(
        &self,
        group_id: &str,
        writes: &[OffsetWrite],
        timestamp_ms: i64,
    ) -> Result<(), CoordinatorError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(writes.len());
        for w in writes {
            let key = encode_key(group_id, &w.topic, w.partition).map_err(schema_error)?;
            let value = CommittedOffset {
                offset: w.offset,
                leader_epoch: w.leader_epoch,
                metadata: w.metadata.clone(),
                commit_timestamp: timestamp_ms,
            };
            let encoded = encode_value(&value).map_err(schema_error)?;
            records.push(PendingRecord {
                key,
                value: Some(encoded),
                timestamp_ms,
                topic: w.topic.clone(),
                partition: w.partition,
                decoded: Some(value),
            });
        }
        self.write(group_id, records)
    }

    /// Tombstones for `group_id`'s offsets committed at or before `cutoff_ms` (Kafka's offset
    /// expiry: the caller checks the group is empty and computes the cutoff from
    /// `offsets.retention.minutes`). Returns how many offsets were removed. Blocks on disk I/O.
    pub fn expire_group(&self, group_id: &str, cutoff_ms: i64) -> Result<usize, CoordinatorError> {
        let victims: Vec<(String, PartitionId)> = self
            .fetch_group(group_id)
            .into_iter()
            .filter(|(_, _, c)| c.commit_timestamp <= cutoff_ms)
            .map(|(t, p, _)| (t, p))
            .collect();
        if victims.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut records = Vec::with_capacity(victims.len());
        for (topic, p) in victims {
            let key = encode_key(group_id, &topic, p).map_err(schema_error)?;
            records.push(tombstone(key, now, topic, p));
        }
        let n = records.len();
        self.write(group_id, records)?;
        info!(group = group_id, expired = n, "expired committed offsets");
        Ok(n)
    }

    /// Groups that have an offset committed at or before `cutoff_ms`: candidates for expiry.
    pub fn groups_with_offsets_before(&self, cutoff_ms: i64) -> Vec<String> {
        let cache = self.cache.read();
        let mut out: Vec<String> = cache
            .iter()
            .filter(|(_, topics)| {
                topics.values().any(|parts| {
                    parts
                        .values()
                        .any(|s| s.value.as_ref().is_some_and(|v| v.commit_timestamp <= cutoff_ms))
                })
            })
            .map(|(g, _)| g.clone())
            .collect();
        out.sort();
        out
    }

    /// How many batches have been appended to `__consumer_offsets` partition `index` by this
    /// store (every group commit counts once).
    pub fn batches_written(&self, index: usize) -> u64 {
        self.queues.get(index).map_or(0, |q| q.state.lock().batches)
    }

    /// How many commits wait for the write in progress on partition `index` to finish, to be
    /// carried together by the next one (the depth of the group commit).
    pub fn queued_writes(&self, index: usize) -> usize {
        self.queues.get(index).map_or(0, |q| q.state.lock().queued.len())
    }

    /// Deletes every group's committed offsets for `topic` (tombstones), as Kafka does when a
    /// topic is deleted. Returns how many offsets were removed. Blocks on disk I/O.
    pub fn delete_topic(&self, topic: &str) -> Result<usize, CoordinatorError> {
        let victims: Vec<(String, Vec<PartitionId>)> = {
            let cache = self.cache.read();
            cache
                .iter()
                .filter_map(|(group, topics)| {
                    let parts: Vec<PartitionId> = topics
                        .get(topic)?
                        .iter()
                        .filter(|(_, slot)| slot.value.is_some())
                        .map(|(p, _)| *p)
                        .collect();
                    (!parts.is_empty()).then(|| (group.clone(), parts))
                })
                .collect()
        };
        let mut deleted = 0;
        // One batch per group keeps each write inside that group's partition.
        for (group, parts) in victims {
            let now = now_ms();
            let mut records = Vec::with_capacity(parts.len());
            for p in &parts {
                let key = encode_key(&group, topic, *p).map_err(schema_error)?;
                records.push(tombstone(key, now, topic.to_owned(), *p));
            }
            self.write(&group, records)?;
            deleted += parts.len();
        }
        if deleted > 0 {
            info!(topic, deleted, "deleted committed offsets of a topic");
        }
        Ok(deleted)
    }

    /// Deletes every committed offset of `group_id` (tombstones, one batch), as Kafka's
    /// DeleteGroups does. Returns how many offsets were removed. Blocks on disk I/O.
    pub fn delete_group(&self, group_id: &str) -> Result<usize, CoordinatorError> {
        let victims = self.fetch_group(group_id);
        if victims.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut records = Vec::with_capacity(victims.len());
        for (topic, p, _) in &victims {
            let key = encode_key(group_id, topic, *p).map_err(schema_error)?;
            records.push(tombstone(key, now, topic.clone(), *p));
        }
        self.write(group_id, records)?;
        info!(group = group_id, deleted = victims.len(), "deleted a group's committed offsets");
        Ok(victims.len())
    }

    /// Deletes `group_id`'s committed offsets of `partitions` (tombstones, one batch), as
    /// Kafka's OffsetDelete does; partitions without an offset are skipped. Returns how many
    /// offsets were removed. Blocks on disk I/O.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, PartitionId)],
    ) -> Result<usize, CoordinatorError> {
        let now = now_ms();
        let mut records = Vec::new();
        for (topic, p) in partitions {
            if self.fetch(group_id, topic, *p).is_some() {
                let key = encode_key(group_id, topic, *p).map_err(schema_error)?;
                records.push(tombstone(key, now, topic.clone(), *p));
            }
        }
        if records.is_empty() {
            return Ok(0);
        }
        let deleted = records.len();
        self.write(group_id, records)?;
        info!(group = group_id, deleted, "deleted committed offsets of a group");
        Ok(deleted)
    }

    /// Queues `records` for the group's partition and returns once they are durable and in
    /// the cache (or failed): either this caller writes a batch itself, carrying every write
    /// queued behind it, or a concurrent leader carries this one.
    fn write(&self, group_id: &str, records: Vec<PendingRecord>) -> Result<(), CoordinatorError> {
        let index = self.partition_for(group_id);
        let queue = self.queues.get(index).ok_or(CoordinatorError::NoPartitions)?;
        let mut state = queue.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push_back(QueuedWrite { ticket, group: group_id.to_owned(), records });
        loop {
            if let Some(outcome) = state.finished.remove(&ticket) {
                return match outcome {
                    None => Ok(()),
                    Some(msg) => Err(CoordinatorError::Log(OffsetsLogError::new(msg))),
                };
            }
            if !state.busy {
                state.busy = true;
                let batch = take_batch(&mut state.queued);
                drop(state);
                let result = self.append_batch(index, &batch);
                state = queue.state.lock();
                state.busy = false;
                state.batches += 1;
                let mine = batch.iter().any(|w| w.ticket == ticket);
                let message = result.as_ref().err().map(ToString::to_string);
                for w in &batch {
                    if w.ticket != ticket {
                        state.finished.insert(w.ticket, message.clone());
                    }
                }
                queue.done.notify_all();
                if mine {
                    return result;
                }
                continue;
            }
            queue.done.wait(&mut state);
        }
    }

    /// Appends the records of `writes` as one batch to partition `index`, flushes, then applies
    /// them to the cache in record order.
    fn append_batch(&self, index: usize, writes: &[QueuedWrite]) -> Result<(), CoordinatorError> {
        let log = self.partitions.get(index).ok_or(CoordinatorError::NoPartitions)?;
        let mut builder = BatchBuilder::new(Compression::None);
        for w in writes {
            for r in &w.records {
                builder.append(r.timestamp_ms, Some(&r.key), r.value.as_deref(), &[]);
            }
        }
        let batch = builder.build()?;
        let base = log.append(batch)?;
        log.flush()?;
        let mut cache = self.cache.write();
        let mut i = 0i64;
        for w in writes {
            for r in &w.records {
                apply(&mut cache, &w.group, &r.topic, r.partition, base.add(i), r.decoded.clone());
                i += 1;
            }
        }
        debug!(
            partition = index,
            base = base.get(),
            writes = writes.len(),
            records = i,
            "offsets written"
        );
        Ok(())
    }

    /// The committed offset of one partition.
    pub fn fetch(
        &self,
        group_id: &str,
        topic: &str,
        partition: PartitionId,
    ) -> Option<CommittedOffset> {
        let cache = self.cache.read();
        cache.get(group_id)?.get(topic)?.get(&partition)?.value.clone()
    }

    /// Every committed offset of a group, sorted by topic and partition.
    pub fn fetch_group(&self, group_id: &str) -> Vec<(String, PartitionId, CommittedOffset)> {
        let cache = self.cache.read();
        let Some(topics) = cache.get(group_id) else { return Vec::new() };
        topics
            .iter()
            .flat_map(|(topic, parts)| {
                parts
                    .iter()
                    .filter_map(move |(p, slot)| slot.value.clone().map(|v| (topic.clone(), *p, v)))
            })
            .collect()
    }

    /// True if the group has at least one committed offset.
    pub fn has_offsets(&self, group_id: &str) -> bool {
        let cache = self.cache.read();
        cache.get(group_id).is_some_and(|topics| {
            topics.values().any(|parts| parts.values().any(|s| s.value.is_some()))
        })
    }

    /// Every group with at least one committed offset, sorted.
    pub fn groups(&self) -> Vec<String> {
        let cache = self.cache.read();
        let mut groups: Vec<String> = cache
            .iter()
            .filter(|(_, topics)| {
                topics.values().any(|parts| parts.values().any(|s| s.value.is_some()))
            })
            .map(|(g, _)| g.clone())
            .collect();
        groups.sort();
        groups
    }
}

/// The queued writes that go into the next batch: at least the first, then as many as fit in
/// [`MAX_GROUP_COMMIT_BYTES`], in queue order.
fn take_batch(queued: &mut std::collections::VecDeque<QueuedWrite>) -> Vec<QueuedWrite> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = queued.front() {
        let size = next.bytes();
        if !batch.is_empty() && bytes + size > MAX_GROUP_COMMIT_BYTES {
            break;
        }
        bytes += size;
        batch.extend(queued.pop_front());
    }
    batch
}

fn tombstone(key: Bytes, now: i64, topic: String, partition: PartitionId) -> PendingRecord {
    PendingRecord { key, value: None, timestamp_ms: now, topic, partition, decoded: None }
}

fn schema_error(e: SchemaError) -> CoordinatorError {
    match e {
        SchemaError::TooLong(field) => CoordinatorError::Encode(field),
        _ => CoordinatorError::Encode("offset commit record"),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Applies one record to the cache unless a newer record already wrote the key.
fn apply(
    cache: &mut Cache,
    group: &str,
    topic: &str,
    partition: PartitionId,
    at: Offset,
    value: Option<CommittedOffset>,
) {
    let parts = cache.entry(group.to_owned()).or_default().entry(topic.to_owned()).or_default();
    match parts.get(&partition) {
        Some(slot) if slot.at >= at => {}
        _ => {
            parts.insert(partition, Slot { at, value });
        }
    }
}

/// Reads one partition from its start to its end into the cache.
fn replay(index: usize, log: &dyn OffsetsLog, cache: &mut Cache) -> Result<(), CoordinatorError> {
    let end = log.log_end_offset();
    let mut pos = log.log_start_offset();
    let mut max_bytes = REPLAY_READ;
    let mut records = 0usize;
    while pos < end {
        let buf = log.read(pos, max_bytes)?;
        if buf.is_empty() {
            // Only offsets the log cleaner removed are left below the end (the partition is
            // compacted: its load reads the live keys, not every commit ever made).
            break;
        }
        let mut progressed = false;
        for batch in Batches::new(buf) {
            let batch = batch?;
            if batch.next_offset() <= pos {
                continue;
            }
            if !batch.attributes().is_control() {
                records += replay_batch(index, &batch, pos, cache)?;
            }
            pos = batch.next_offset();
            progressed = true;
        }
        if progressed {
            max_bytes = REPLAY_READ;
        } else if max_bytes < MAX_REPLAY_READ {
            // The next batch is larger than what we asked for.
            max_bytes *= 2;
        } else {
            return Err(CoordinatorError::ReplayStuck { partition: index, offset: pos.get() });
        }
    }
    debug!(partition = index, records, "replayed offsets partition");
    Ok(())
}

fn replay_batch(
    index: usize,
    batch: &RecordBatch,
    from: Offset,
    cache: &mut Cache,
) -> Result<usize, FormatError> {
    let mut n = 0;
    for record in batch.records()? {
        let record = record?;
        if record.offset < from {
            continue;
        }
        let Some(key) = record.key.as_ref() else { continue };
        let key = match decode_key(key) {
            Ok(key) => key,
            // Group metadata and other record types share the topic; they are not offsets.
            Err(SchemaError::NotAnOffsetKey(_)) => continue,
            Err(e) => {
                warn!(partition = index, offset = record.offset.get(), error = %e, "skipping unreadable offsets key");
                continue;
            }
        };
        let value = match record.value.as_ref().map(|v| decode_value(v)) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                warn!(partition = index, offset = record.offset.get(), error = %e, "skipping unreadable offsets value");
                continue;
            }
        };
        apply(cache, &key.group, &key.topic, key.partition, record.offset, value);
        n += 1;
    }
    Ok(n)
}

/// An in-memory [`OffsetsLog`]: not durable, for tests and for embedding the coordinator where
/// offsets need not survive the process.
#[derive(Debug, Default)]
pub struct MemoryOffsetsLog {
    batches: Mutex<Vec<Bytes>>,
    next: Mutex<Offset>,
}

impl MemoryOffsetsLog {
    /// Largest batch accepted, like a broker's `message.max.bytes`.
    pub const MAX_BATCH_BYTES: usize = 16 << 20;
}

impl OffsetsLog for MemoryOffsetsLog {
    fn append(&self, batch: Bytes) -> Result<Offset, OffsetsLogError> {
        if batch.len() > Self::MAX_BATCH_BYTES {
            return Err(OffsetsLogError::new("batch too large"));
        }
        let checked = RecordBatch::new(batch).map_err(OffsetsLogError::new)?;
        let count = i64::from(checked.last_offset_delta()) + 1;
        let mut buf = BytesMut::from(checked.as_bytes().as_ref());
        let mut batches = self.batches.lock();
        let mut next = self.next.lock();
        let base = *next;
        set_base_offset(&mut buf, base);
        batches.push(buf.freeze());
        *next = base.add(count);
        Ok(base)
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, OffsetsLogError> {
        let batches = self.batches.lock();
        let mut out = BytesMut::new();
        for b in batches.iter() {
            let batch = RecordBatch::new(b.clone()).map_err(OffsetsLogError::new)?;
            if batch.next_offset() <= from {
                continue;
            }
            if !out.is_empty() && out.len() + b.len() > max_bytes {
                break;
            }
            out.extend_from_slice(b);
        }
        Ok(out.freeze())
    }

    fn log_start_offset(&self) -> Offset {
        Offset::ZERO
    }

    fn log_end_offset(&self) -> Offset {
        *self.next.lock()
    }

    fn flush(&self) -> Result<(), OffsetsLogError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(topic: &str, partition: i32, offset: i64) -> OffsetWrite {
        OffsetWrite {
            topic: topic.into(),
            partition: PartitionId::new(partition),
            offset: Offset::new(offset),
            leader_epoch: LeaderEpoch::UNKNOWN,
            metadata: format!("m{offset}"),
        }
    }

    fn logs(n: usize) -> Vec<Arc<dyn OffsetsLog>> {
        (0..n).map(|_| Arc::new(MemoryOffsetsLog::default()) as Arc<dyn OffsetsLog>).collect()
    }

    #[test]
    fn commits_are_replayed_last_write_wins() {
        let logs = logs(3);
        let store = OffsetStore::load(logs.clone()).unwrap();
        store.commit("g1", &[write("t", 0, 5), write("t", 1, 7)], 1).unwrap();
        store.commit("g1", &[write("t", 0, 9)], 2).unwrap();
        store.commit("g2", &[write("u", 3, 1)], 3).unwrap();
        let reloaded = OffsetStore::load(logs).unwrap();
        for s in [&store, &reloaded] {
            let c = s.fetch("g1", "t", PartitionId::new(0)).unwrap();
            assert_eq!((c.offset.get(), c.metadata.as_str(), c.commit_timestamp), (9, "m9", 2));
            assert_eq!(s.fetch("g1", "t", PartitionId::new(1)).unwrap().offset.get(), 7);
            assert_eq!(s.groups(), vec!["g1".to_string(), "g2".to_string()]);
            assert_eq!(s.fetch_group("g1").len(), 2);
        }
    }

    #[test]
    fn a_compacted_offsets_log_reloads_the_latest_commits_from_a_few_records() {
        let dir = tempfile::tempdir().unwrap();
        let config = strom_log::LogConfig {
            compact: true,
            segment_bytes: 2048,
            min_cleanable_dirty_ratio_permille: 0,
            ..strom_log::LogConfig::default()
        };
        let log = Arc::new(strom_log::Log::open(dir.path(), config).unwrap());
        let logs: Vec<Arc<dyn OffsetsLog>> = vec![log.clone()];
        let store = OffsetStore::load(logs.clone()).unwrap();
        for i in 0..500 {
            store.commit("g", &[write("t", (i % 5) as i32, i)], i).unwrap();
        }
        store.commit("gone", &[write("t", 0, 1)], 1).unwrap();
        store.delete_group("gone").unwrap();
        let stats = log.clean(log.log_end_offset(), &strom_log::CleanerLimits::default()).unwrap();
        assert!(stats.records_read > 400 && stats.records_kept < 20, "{stats:?}");
        let reloaded = OffsetStore::load(logs).unwrap();
        for p in 0..5 {
            let c = reloaded.fetch("g", "t", PartitionId::new(p)).unwrap();
            assert_eq!(c.offset.get(), 495 + i64::from(p));
        }
        assert!(!reloaded.has_offsets("gone"));
    }

    #[test]
    fn writes_go_to_the_groups_partition() {
        let logs = logs(50);
        let store = OffsetStore::load(logs.clone()).unwrap();
        store.commit("my-group", &[write("t", 0, 1)], 1).unwrap();
        for (i, log) in logs.iter().enumerate() {
            let expected = if i == 12 { 1 } else { 0 };
            assert_eq!(log.log_end_offset().get(), expected, "partition {i}");
        }
    }

    #[test]
    fn delete_topic_writes_tombstones_that_survive_replay() {
        let logs = logs(4);
        let store = OffsetStore::load(logs.clone()).unwrap();
        store.commit("a", &[write("gone", 0, 1), write("kept", 0, 2)], 1).unwrap();
        store.commit("b", &[write("gone", 1, 3)], 1).unwrap();
        assert_eq!(store.delete_topic("gone").unwrap(), 2);
        assert_eq!(store.delete_topic("gone").unwrap(), 0);
        let reloaded = OffsetStore::load(logs).unwrap();
        for s in [&store, &reloaded] {
            assert!(s.fetch("a", "gone", PartitionId::new(0)).is_none());
            assert!(s.fetch("a", "kept", PartitionId::new(0)).is_some());
            assert!(!s.has_offsets("b"));
            assert_eq!(s.groups(), vec!["a".to_string()]);
        }
    }

    #[test]
    fn an_older_record_never_overwrites_a_newer_one() {
        let mut cache = Cache::new();
        let v = |o| CommittedOffset {
            offset: Offset::new(o),
            leader_epoch: LeaderEpoch::UNKNOWN,
            metadata: String::new(),
            commit_timestamp: 0,
        };
        let p = PartitionId::new(0);
        apply(&mut cache, "g", "t", p, Offset::new(10), Some(v(10)));
        apply(&mut cache, "g", "t", p, Offset::new(5), Some(v(5)));
        assert_eq!(cache["g"]["t"][&p].value, Some(v(10)));
        apply(&mut cache, "g", "t", p, Offset::new(11), None);
        apply(&mut cache, "g", "t", p, Offset::new(8), Some(v(8)));
        assert_eq!(cache["g"]["t"][&p].value, None);
    }

    #[test]
    fn replay_skips_foreign_records_and_reads_large_batches() {
        let log = Arc::new(MemoryOffsetsLog::default());
        // A group metadata record (key version 2) and a null-key record: both ignored.
        let mut b = BatchBuilder::new(Compression::None);
        b.append(0, Some(&[0, 2, 0, 1, b'g'][..]), Some(&b"whatever"[..]), &[]);
        b.append(0, None, Some(&b"x"[..]), &[]);
        log.append(b.build().unwrap()).unwrap();
        // A commit batch bigger than one replay read.
        let store = OffsetStore::load(vec![log.clone() as Arc<dyn OffsetsLog>]).unwrap();
        let big = "x".repeat(4000);
        let writes: Vec<OffsetWrite> = (0..400)
            .map(|p| OffsetWrite { metadata: big.clone(), ..write("t", p, i64::from(p)) })
            .collect();
        store.commit("g", &writes, 1).unwrap();
        let reloaded = OffsetStore::load(vec![log as Arc<dyn OffsetsLog>]).unwrap();
        assert_eq!(reloaded.fetch_group("g").len(), 400);
        assert_eq!(reloaded.groups(), vec!["g".to_string()]);
    }

    #[test]
    fn expiry_writes_tombstones_for_offsets_committed_before_the_cutoff() {
        let logs = logs(1);
        let store = OffsetStore::load(logs.clone()).unwrap();
        store.commit("g", &[write("t", 0, 5)], 1_000).unwrap();
        store.commit("g", &[write("t", 1, 6)], 2_000).unwrap();
        store.commit("h", &[write("t", 0, 7)], 5_000).unwrap();
        assert_eq!(store.groups_with_offsets_before(999), Vec::<String>::new());
        assert_eq!(store.groups_with_offsets_before(1_000), vec!["g".to_string()]);
        assert_eq!(store.expire_group("g", 999).unwrap(), 0);
        assert_eq!(store.expire_group("g", 1_000).unwrap(), 1);
        let end = logs[0].log_end_offset();
        // The tombstone is in the log (null value), so compaction drops the key too.
        let last =
            Batches::new(logs[0].read(end.add(-1), 1 << 20).unwrap()).last().unwrap().unwrap();
        let record = last.records().unwrap().last().unwrap().unwrap();
        assert!(record.value.is_none());
        let reloaded = OffsetStore::load(logs).unwrap();
        for s in [&store, &reloaded] {
            assert!(s.fetch("g", "t", PartitionId::new(0)).is_none());
            assert_eq!(s.fetch("g", "t", PartitionId::new(1)).unwrap().offset.get(), 6);
            assert_eq!(s.fetch("h", "t", PartitionId::new(0)).unwrap().offset.get(), 7);
        }
    }

    #[test]
    fn no_partitions_is_an_error() {
        assert!(matches!(OffsetStore::load(Vec::new()), Err(CoordinatorError::NoPartitions)));
    }
}
