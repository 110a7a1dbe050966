//! Per-partition state of idempotent producers (Kafka's `ProducerStateManager` and
//! `ProducerStateEntry`, KIP-98 / KIP-360): for every producer id, its epoch and the sequence
//! numbers and offsets of its last [`MAX_CACHED_BATCHES`] batches, so the leader refuses a
//! batch that skips sequence numbers or comes from a fenced epoch, and answers a retried batch
//! with the offsets it was first stored at instead of writing it twice.
//!
//! Invariant: the state is a function of the batches below the log end offset (and of expiry
//! by time) only. Leaders, followers copying the leader's batches and recovery replaying the
//! log all go through [`ProducerStateManager::apply`], so every replica holds the same state
//! and a new leader dedupes retries sent to the old one. The sequence checks
//! ([`ProducerStateManager::check`]) run under the log's writer lock, in the same critical
//! section as the append they guard.
//!
//! Snapshots ([`ProducerStateManager::encode`] / [`ProducerStateManager::decode`]) are
//! `<offset>.snapshot` files beside the segments: the state of every batch below `offset`,
//! with a CRC-32C, so recovery replays only the log after the latest snapshot.

use std::collections::{BTreeMap, VecDeque};

use strom_format::{NO_PRODUCER_EPOCH, Offset, RecordBatch};

/// Batches remembered per producer: Kafka's `max.in.flight.requests.per.connection` limit for
/// idempotence, so any retry of an in-flight batch finds its original.
pub const MAX_CACHED_BATCHES: usize = 5;

/// Where one stored batch of a producer lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence number of the batch's first record.
    pub first_seq: i32,
    /// Sequence number of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// The batch's `maxTimestamp`.
    pub max_timestamp: i64,
}

/// What the log remembers of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its latest batches in this epoch, oldest first, at most [`MAX_CACHED_BATCHES`].
    pub batches: VecDeque<BatchMetadata>,
    /// `maxTimestamp` of its latest batch: expiry counts from here.
    pub last_timestamp: i64,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn duplicate_of(&self, batch: &ProducerBatch) -> Option<BatchMetadata> {
        if batch.epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|m| m.first_seq == batch.first_seq && m.last_seq == batch.last_seq)
            .copied()
    }

    fn add(&mut self, batch: &ProducerBatch) {
        if batch.epoch != self.epoch {
            // A new epoch starts a new sequence: nothing of the old one can be retried.
            self.epoch = batch.epoch;
            self.batches.clear();
        }
        if self.batches.len() == MAX_CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(batch.metadata());
        self.last_timestamp = batch.max_timestamp;
    }
}

/// The producer fields of one batch and the offsets it got (or has, when replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer id (>= 0: only idempotent batches have one).
    pub producer_id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// `baseSequence`.
    pub first_seq: i32,
    /// `baseSequence + lastOffsetDelta`, wrapping past `i32::MAX` as Kafka does.
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: Offset,
    /// Offset of the last record.
    pub last_offset: Offset,
    /// `maxTimestamp`.
    pub max_timestamp: i64,
}

impl ProducerBatch {
    /// The producer fields of `batch`, whose first record lies at `base`; `None` for a batch
    /// without a producer id (not idempotent: the producer state ignores it).
    pub fn of(batch: &RecordBatch, base: Offset) -> Option<ProducerBatch> {
        let producer_id = batch.producer_id();
        if producer_id < 0 {
            return None;
        }
        let delta = batch.last_offset_delta();
        Some(ProducerBatch {
            producer_id,
            epoch: batch.producer_epoch(),
            first_seq: batch.base_sequence(),
            last_seq: increment_sequence(batch.base_sequence(), delta),
            first_offset: base,
            last_offset: base.add(i64::from(delta)),
            max_timestamp: batch.max_timestamp(),
        })
    }

    fn metadata(&self) -> BatchMetadata {
        BatchMetadata {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            max_timestamp: self.max_timestamp,
        }
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if increment < 0 {
        return sequence;
    }
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Kafka's `inSequence`: `next` directly follows `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// What the leader does with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Append,
    /// A retry of a stored batch: write nothing, answer with the original's offsets.
    Duplicate(BatchMetadata),
}

/// Why the leader refuses an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceError {
    /// The batch's sequence does not follow the producer's last one (a gap, or an old batch
    /// that is no longer cached): Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder {
        /// The producer id.
        producer_id: i64,
        /// The sequence the next batch must start with (-1: unknown).
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The batch's epoch is older than the producer's: a fenced producer, Kafka's
    /// INVALID_PRODUCER_EPOCH.
    InvalidEpoch {
        /// The producer id.
        producer_id: i64,
        /// The producer's current epoch.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
}

/// The producer state of one partition log.
///
/// ```
/// use strom_format::Offset;
/// use strom_log::producer_state::{ProducerBatch, ProducerStateManager, Verdict};
///
/// let batch = |seq: i32, offset: i64| ProducerBatch {
///     producer_id: 7, epoch: 0, first_seq: seq, last_seq: seq + 9,
///     first_offset: Offset::new(offset), last_offset: Offset::new(offset + 9), max_timestamp: 0,
/// };
/// let mut state = ProducerStateManager::default();
/// assert_eq!(state.check(&batch(0, 0)), Ok(Verdict::Append));
/// state.apply(&batch(0, 0));
/// // The same batch again is a retry: answered with the offsets it got first.
/// assert!(matches!(state.check(&batch(0, 10)), Ok(Verdict::Duplicate(m)) if m.first_offset == Offset::new(0)));
/// // A gap is refused.
/// assert!(state.check(&batch(20, 10)).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    /// Kafka 4's rules for a batch a client sent to the leader (`ProducerAppendInfo` with
    /// origin CLIENT): a copy of one of the producer's cached batches in the same epoch is a
    /// duplicate; an older epoch is fenced; a newer epoch must start at sequence 0; the same
    /// epoch must continue the last sequence. An unknown producer (never seen, or expired) is
    /// accepted at any sequence, as Kafka does since KIP-360.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Verdict, SequenceError> {
        check_entry(self.producers.get(&batch.producer_id), batch)
    }

    /// Records a stored batch (the leader after writing it, a follower after copying it,
    /// recovery while replaying the log). Never refuses: the leader already checked.
    pub fn apply(&mut self, batch: &ProducerBatch) {
        self.producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
                last_timestamp: batch.max_timestamp,
            })
            .add(batch);
    }

    /// The entry of `producer_id`, if known.
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forgets everything (the log was emptied).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Forgets producers whose latest batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `producer.id.expiration.ms`); returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    /// The snapshot file's bytes: `STPS`, version 1, CRC-32C of the rest, the entry count,
    /// then per producer id, epoch, last timestamp and its cached batches. Big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.producers.len() * 64);
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            // At most MAX_CACHED_BATCHES, so it fits a byte.
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.get().to_be_bytes());
                body.extend_from_slice(&b.last_offset.get().to_be_bytes());
                body.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 10);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses [`ProducerStateManager::encode`]'s bytes; any damage (wrong magic or version,
    /// CRC mismatch, truncation, trailing bytes, more than 5 batches) is an error, never a
    /// panic.
    pub fn decode(bytes: &[u8]) -> Result<ProducerStateManager, String> {
        let mut r = Reader { buf: bytes };
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err("not a producer-state snapshot".into());
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = u32::from_be_bytes(r.array()?);
        if crc32c::crc32c(r.buf) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let count = u32::from_be_bytes(r.array()?);
        let mut producers = BTreeMap::new();
        for _ in 0..count {
            let pid = i64::from_be_bytes(r.array()?);
            let epoch = i16::from_be_bytes(r.array()?);
            let last_timestamp = i64::from_be_bytes(r.array()?);
            let n = usize::from(r.take(1)?.first().copied().unwrap_or(0));
            if n > MAX_CACHED_BATCHES {
                return Err(format!("{n} cached batches for producer {pid}"));
            }
            let mut batches = VecDeque::with_capacity(MAX_CACHED_BATCHES);
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_seq: i32::from_be_bytes(r.array()?),
                    last_seq: i32::from_be_bytes(r.array()?),
                    first_offset: Offset::new(i64::from_be_bytes(r.array()?)),
                    last_offset: Offset::new(i64::from_be_bytes(r.array()?)),
                    max_timestamp: i64::from_be_bytes(r.array()?),
                });
            }
            producers.insert(pid, ProducerEntry { epoch, batches, last_timestamp });
        }
        if !r.buf.is_empty() {
            return Err("trailing bytes after the snapshot".into());
        }
        Ok(ProducerStateManager { producers })
    }
}

/// [`ProducerStateManager::check`] against one entry (`None`: unknown producer).
pub fn check_entry(
    entry: Option<&ProducerEntry>,
    batch: &ProducerBatch,
) -> Result<Verdict, SequenceError> {
    let Some(entry) = entry else {
        return Ok(Verdict::Append);
    };
    if let Some(original) = entry.duplicate_of(batch) {
        return Ok(Verdict::Duplicate(original));
    }
    if batch.epoch < entry.epoch {
        return Err(SequenceError::InvalidEpoch {
            producer_id: batch.producer_id,
            current: entry.epoch,
            got: batch.epoch,
        });
    }
    let expected = entry.last_seq().map_or(0, |s| increment_sequence(s, 1));
    if batch.epoch != entry.epoch {
        if batch.first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
            return Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                expected: 0,
                got: batch.first_seq,
            });
        }
        return Ok(Verdict::Append);
    }
    let follows = match entry.last_seq() {
        Some(last) => in_sequence(last, batch.first_seq),
        None => batch.first_seq == 0,
    };
    if entry.epoch == NO_PRODUCER_EPOCH || follows {
        Ok(Verdict::Append)
    } else {
        Err(SequenceError::OutOfOrder {
            producer_id: batch.producer_id,
            expected,
            got: batch.first_seq,
        })
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"STPS";
const SNAPSHOT_VERSION: u16 = 1;

/// A bounds-checked cursor over snapshot bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated snapshot".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: seq,
            last_seq: increment_sequence(seq, n - 1),
            first_offset: Offset::new(offset),
            last_offset: Offset::new(offset + i64::from(n) - 1),
            max_timestamp: 1_000 + offset,
        }
    }

    #[test]
    fn unknown_producer_is_accepted_at_any_sequence() {
        let state = ProducerStateManager::default();
        assert_eq!(state.check(&batch(1, 0, 0, 3, 0)), Ok(Verdict::Append));
        assert_eq!(state.check(&batch(1, 0, 42, 3, 0)), Ok(Verdict::Append));
    }

    #[test]
    fn retry_of_any_of_the_last_five_batches_is_a_duplicate_with_its_original_offsets() {
        let mut state = ProducerStateManager::default();
        for i in 0..7 {
            state.apply(&batch(1, 0, i * 2, 2, i64::from(i) * 2));
        }
        // Batches 2..=6 are cached, 0 and 1 are not.
        for i in 2..7 {
            let retry = batch(1, 0, i * 2, 2, 99);
            match state.check(&retry) {
                Ok(Verdict::Duplicate(m)) => assert_eq!(m.first_offset.get(), i64::from(i) * 2),
                other => panic!("batch {i}: {other:?}"),
            }
        }
        assert!(matches!(
            state.check(&batch(1, 0, 2, 2, 99)),
            Err(SequenceError::OutOfOrder { expected: 14, got: 2, .. })
        ));
    }

    #[test]
    fn gap_is_out_of_order_and_next_sequence_is_appended() {
        let mut state = ProducerStateManager::default();
        state.apply(&batch(1, 0, 0, 5, 0));
        assert_eq!(state.check(&batch(1, 0, 5, 1, 5)), Ok(Verdict::Append));
        assert!(matches!(
            state.check(&batch(1, 0, 6, 1, 5)),
            Err(SequenceError::OutOfOrder { expected: 5, got: 6, .. })
        ));
    }

    #[test]
    fn older_epoch_is_fenced_and_newer_epoch_restarts_at_zero() {
        let mut state = ProducerStateManager::default();
        state.apply(&batch(1, 3, 0, 5, 0));
        assert!(matches!(
            state.check(&batch(1, 2, 5, 1, 5)),
            Err(SequenceError::InvalidEpoch { current: 3, got: 2, .. })
        ));
        assert_eq!(state.check(&batch(1, 4, 0, 1, 5)), Ok(Verdict::Append));
        assert!(matches!(
            state.check(&batch(1, 4, 7, 1, 5)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        state.apply(&batch(1, 4, 0, 1, 5));
        assert_eq!(state.entry(1).map(|e| (e.epoch, e.batches.len())), Some((4, 1)));
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut state = ProducerStateManager::default();
        state.apply(&batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(state.check(&batch(1, 0, 0, 1, 2)), Ok(Verdict::Append));
    }

    #[test]
    fn producers_expire_after_their_last_batch() {
        let mut state = ProducerStateManager::default();
        state.apply(&batch(1, 0, 0, 1, 0)); // timestamp 1000
        state.apply(&batch(2, 0, 0, 1, 500)); // timestamp 1500
        assert_eq!(state.remove_expired(2_000, 1_000), 1);
        assert!(state.entry(1).is_none() && state.entry(2).is_some());
    }

    #[test]
    fn damaged_snapshots_are_errors() {
        let mut state = ProducerStateManager::default();
        state.apply(&batch(1, 0, 0, 1, 0));
        let bytes = state.encode();
        assert_eq!(ProducerStateManager::decode(&bytes), Ok(state));
        for cut in 0..bytes.len() {
            assert!(ProducerStateManager::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(ProducerStateManager::decode(&flipped).is_err());
    }

    /// The rules as a model: per producer, the epoch and the list of stored sequence ranges.
    fn model_check(stored: &[(i16, i32, i32)], b: &ProducerBatch) -> &'static str {
        let Some(&(epoch, _, last)) = stored.last() else { return "append" };
        let same_epoch: Vec<_> = stored.iter().filter(|s| s.0 == epoch).collect();
        let cached = same_epoch.iter().rev().take(MAX_CACHED_BATCHES);
        if b.epoch == epoch && cached.clone().any(|s| s.1 == b.first_seq && s.2 == b.last_seq) {
            return "duplicate";
        }
        if b.epoch < epoch {
            return "fenced";
        }
        if b.epoch > epoch {
            return if b.first_seq == 0 { "append" } else { "out_of_order" };
        }
        if i64::from(b.first_seq) == i64::from(last) + 1 { "append" } else { "out_of_order" }
    }

    proptest! {
        /// Random producers, epochs, sequences and retries: the manager answers as the model,
        /// applies only what it accepted, offsets stay dense, and a snapshot round-trips.
        #[test]
        fn manager_follows_the_kafka_rules(
            ops in proptest::collection::vec((0i64..3, 0i16..3, 0i32..12, 1i32..4), 1..80)
        ) {
            let mut state = ProducerStateManager::default();
            let mut model: BTreeMap<i64, Vec<(i16, i32, i32)>> = BTreeMap::new();
            let mut end = 0i64;
            for (pid, epoch, seq, n) in ops {
                let b = batch(pid, epoch, seq, n, end);
                let stored = model.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
                let expected = model_check(stored, &b);
                let got = match state.check(&b) {
                    Ok(Verdict::Append) => "append",
                    Ok(Verdict::Duplicate(m)) => {
                        prop_assert_eq!((m.first_seq, m.last_seq), (b.first_seq, b.last_seq));
                        prop_assert!(m.last_offset < Offset::new(end));
                        "duplicate"
                    }
                    Err(SequenceError::InvalidEpoch { .. }) => "fenced",
                    Err(SequenceError::OutOfOrder { .. }) => "out_of_order",
                };
                prop_assert_eq!(got, expected);
                if got == "append" {
                    state.apply(&b);
                    model.entry(pid).or_default().push((epoch, b.first_seq, b.last_seq));
                    end += i64::from(n);
                }
            }
            prop_assert_eq!(ProducerStateManager::decode(&state.encode()), Ok(state));
        }
    }
}
