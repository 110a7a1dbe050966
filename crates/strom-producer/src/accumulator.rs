//! The record accumulator: per-partition open batches and queues of closed ones, and the rules
//! for which batches are ready to send. Pure, synchronous state behind one mutex; the sender
//! task and `send` only ever hold the lock for bookkeeping, never across I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_client::TopicInfo;
use strom_format::{BatchBuilder, Compression, Header, PartitionId};

use crate::ProducerError;
use crate::delivery::{Completer, DeliveryFuture, Tracker};
use crate::partitioner::pick_sticky;

/// A batch's records: still open for appends in a builder, or encoded (and then never touched
/// again, so a retry resends exactly the same bytes).
#[derive(Debug)]
pub(crate) enum Payload {
    Open(BatchBuilder),
    Built(Bytes),
}

impl Payload {
    fn size(&self) -> usize {
        match self {
            Payload::Open(b) => b.estimated_size(),
            Payload::Built(b) => b.len(),
        }
    }
}

/// A closed batch on its way to the broker.
#[derive(Debug)]
pub(crate) struct Batch {
    pub payload: Payload,
    pub completer: Completer,
    pub records: u32,
    pub created: Instant,
    /// Send attempts that failed so far.
    pub attempts: u32,
    /// Not to be sent before this (retry backoff).
    pub retry_at: Option<Instant>,
    /// Why the last attempt failed, for the delivery-timeout error.
    pub last_error: Option<Arc<ProducerError>>,
    /// The leader refused the batch's producer id or sequence: stamp it anew (new producer
    /// id, next sequence) before it is sent again.
    pub restamp: bool,
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    completer: Completer,
    created: Instant,
}

impl OpenBatch {
    fn close(self) -> Batch {
        let records = u32::try_from(self.builder.len()).unwrap_or(u32::MAX);
        Batch {
            payload: Payload::Open(self.builder),
            completer: self.completer,
            records,
            created: self.created,
            attempts: 0,
            retry_at: None,
            last_error: None,
            restamp: false,
        }
    }
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<Batch>,
    /// A request for this partition is outstanding: at most one, so retries keep order.
    in_flight: bool,
}

#[derive(Debug)]
struct TopicQueues {
    name: Arc<str>,
    partitions: HashMap<i32, PartitionQueue>,
    /// Where records without a key go until their batch closes.
    sticky: Option<PartitionId>,
    /// A metadata refresh is running: hold batches back, they would go to a stale leader.
    refreshing: bool,
    /// The last refresh found no such topic.
    unknown: bool,
}

/// One partition's batches taken for sending, oldest first.
#[derive(Debug)]
pub(crate) struct Drained {
    pub topic: Arc<str>,
    pub partition: PartitionId,
    pub batches: Vec<Batch>,
}

/// The result of [`Accumulator::drain`].
#[derive(Debug, Default)]
pub(crate) struct Drain {
    pub ready: Vec<Drained>,
    /// When the next batch becomes sendable (linger or backoff expiry), if any is waiting.
    pub next_wakeup: Option<Instant>,
    /// Nothing is buffered or in flight.
    pub idle: bool,
    /// The producer is closing, so no record can be appended any more.
    pub closing: bool,
}

/// The settings the accumulator needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccumulatorConfig {
    pub batch_size: usize,
    pub linger: Duration,
    pub compression: Compression,
    pub max_request_size: usize,
    /// Idempotence: a retried batch is sent alone, so the leader can answer it with its
    /// original offsets without a new batch riding along (see `Log::append`'s duplicates).
    pub retry_alone: bool,
}

/// One record to append; borrowed from the caller's `ProducerRecord`.
#[derive(Debug)]
pub(crate) struct Append<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
    pub timestamp: i64,
    /// Upper bound of the encoded size; also the buffer memory already acquired for it.
    pub size: usize,
}

/// Per-partition batches of every topic the producer writes to.
#[derive(Debug)]
pub(crate) struct Accumulator {
    config: AccumulatorConfig,
    tracker: Arc<Tracker>,
    topics: HashMap<String, TopicQueues>,
    /// Open batches with an id below this are sent without waiting for linger (`flush`).
    flush_below: u64,
    /// No more appends; send everything now.
    closing: bool,
    /// Buffers of acknowledged batches, for the next batches to be built in (allocating fresh
    /// ones cost page faults on every batch). Bounded by `max_free`.
    free: Vec<Vec<u8>>,
    max_free: usize,
}

/// What the pool of spare batch buffers may hold at most, in bytes and in buffers.
const POOL_BYTES: usize = 16 << 20;
const POOL_BUFFERS: usize = 64;

impl Accumulator {
    pub(crate) fn new(config: AccumulatorConfig, tracker: Arc<Tracker>) -> Self {
        let max_free = (POOL_BYTES / config.batch_size.max(1)).clamp(1, POOL_BUFFERS);
        Accumulator {
            config,
            tracker,
            topics: HashMap::new(),
            flush_below: 0,
            closing: false,
            free: Vec::new(),
            max_free,
        }
    }

    /// Takes back the buffer of a sent batch when nothing else holds it and it has the size
    /// of a batch (an oversized record's buffer is let go).
    pub(crate) fn recycle(&mut self, bytes: Bytes) {
        if self.free.len() >= self.max_free {
            return;
        }
        let Ok(mut buf) = bytes.try_into_mut() else { return };
        // Empty first: turning it into a Vec then moves no bytes.
        buf.clear();
        self.recycle_vec(Vec::from(buf));
    }

    /// A buffer for a compressed batch: a spare one from the pool, or a new one of a batch's
    /// size. Only compressed batches ask; the others are built in their builder's buffer.
    pub(crate) fn spare_buffer(&mut self) -> Vec<u8> {
        let cap = self.config.batch_size.min(self.config.max_request_size);
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(cap))
    }

    /// Takes back a buffer no batch uses any more (the uncompressed records of a compressed
    /// batch), under the same rules as [`Accumulator::recycle`].
    pub(crate) fn recycle_vec(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if self.free.len() < self.max_free
            && cap >= self.config.batch_size
            && cap <= self.config.batch_size.saturating_mul(2)
        {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers in the pool (tests).
    #[cfg(test)]
    pub(crate) fn spare_buffers(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Makes every batch created before the batch id `below` sendable at once.
    pub(crate) fn flush(&mut self, below: u64) {
        self.flush_below = self.flush_below.max(below);
    }

    /// Appends a record. `partition` is `None` for the sticky partitioner; `now` is called only
    /// when a batch opens (a clock read per record is measurable). Returns the record's future
    /// and whether the sender should look at the queues: a batch opened or closed on a
    /// partition without a request in flight. While one is in flight nothing of the partition
    /// can be sent, and its answer wakes the sender anyway: one wake-up per request instead of
    /// two per batch.
    pub(crate) fn append(
        &mut self,
        topic: &str,
        partition: Option<PartitionId>,
        info: &TopicInfo,
        record: &Append<'_>,
        now: impl FnOnce() -> Instant,
    ) -> (DeliveryFuture, bool) {
        let cfg = self.config;
        let tq = match self.topics.get_mut(topic) {
            Some(tq) => tq,
            None => self.topics.entry(topic.to_owned()).or_insert_with(|| TopicQueues {
                name: Arc::from(topic),
                partitions: HashMap::new(),
                sticky: None,
                refreshing: false,
                unknown: false,
            }),
        };
        let mut wake = false;
        let partition = match partition {
            Some(p) => p,
            None => {
                let mut p = *tq.sticky.get_or_insert_with(|| pick_sticky(info, None));
                // Switch when this record would overflow the sticky batch: that batch is done
                // and the next one starts on another partition, as Kafka's sticky partitioner
                // does.
                if let Some(q) = tq.partitions.get_mut(&p.get())
                    && let Some(full) =
                        q.open.take_if(|o| would_overflow(&o.builder, record.size, cfg.batch_size))
                {
                    q.ready.push_back(full.close());
                    wake |= !q.in_flight;
                    p = pick_sticky(info, Some(p));
                    tq.sticky = Some(p);
                }
                p
            }
        };
        let name = Arc::clone(&tq.name);
        let queue = tq.partitions.entry(partition.get()).or_default();
        if let Some(open) =
            queue.open.take_if(|o| would_overflow(&o.builder, record.size, cfg.batch_size))
        {
            queue.ready.push_back(open.close());
            wake |= !queue.in_flight;
        }
        let free = &mut self.free;
        let idle = !queue.in_flight;
        let open = queue.open.get_or_insert_with(|| {
            wake |= idle;
            // Room for the whole batch up front: appends never reallocate (and copy) it.
            let buf = free
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(cfg.batch_size.min(cfg.max_request_size)));
            OpenBatch {
                builder: BatchBuilder::with_buffer(cfg.compression, buf),
                completer: Completer::new(&self.tracker, name, partition),
                created: now(),
            }
        });
        let index = u32::try_from(open.builder.len()).unwrap_or(u32::MAX);
        open.builder.append(record.timestamp, record.key, record.value, record.headers);
        let future = open.completer.add_record(index, record.timestamp, record.size);
        if open.builder.estimated_size() >= cfg.batch_size
            && let Some(full) = queue.open.take()
        {
            queue.ready.push_back(full.close());
            wake |= !queue.in_flight;
            if tq.sticky == Some(partition) {
                tq.sticky = Some(pick_sticky(info, Some(partition)));
            }
        }
        (future, wake)
    }

    /// Takes the batches that may be sent now: per partition without a request in flight, the
    /// closed batches whose backoff has passed (up to `max_request_size`), and the open batch
    /// once it has lingered long enough (or on flush and close).
    pub(crate) fn drain(&mut self, now: Instant) -> Drain {
        let cfg = self.config;
        let mut out = Drain { idle: true, closing: self.closing, ..Drain::default() };
        let wake_at = |t: Instant, out: &mut Drain| {
            out.next_wakeup = Some(out.next_wakeup.map_or(t, |w| w.min(t)));
        };
        for tq in self.topics.values_mut() {
            for (&pid, queue) in tq.partitions.iter_mut() {
                if queue.in_flight || queue.open.is_some() || !queue.ready.is_empty() {
                    out.idle = false;
                }
                if queue.in_flight || tq.refreshing {
                    continue;
                }
                let mut taken = Vec::new();
                let mut bytes = 0usize;
                while let Some(front) = queue.ready.front() {
                    if let Some(at) = front.retry_at
                        && at > now
                    {
                        wake_at(at, &mut out);
                        break;
                    }
                    let size = front.payload.size();
                    if !taken.is_empty() && bytes.saturating_add(size) > cfg.max_request_size {
                        break;
                    }
                    if cfg.retry_alone && !taken.is_empty() && front.attempts > 0 {
                        break;
                    }
                    bytes = bytes.saturating_add(size);
                    if let Some(b) = queue.ready.pop_front() {
                        let retry = b.attempts > 0;
                        taken.push(b);
                        if cfg.retry_alone && retry {
                            break;
                        }
                    }
                }
                let retrying = cfg.retry_alone && taken.iter().any(|b| b.attempts > 0);
                if queue.ready.is_empty()
                    && !retrying
                    && let Some(open) = &queue.open
                {
                    let due = open.created + cfg.linger;
                    let forced = self.closing || open.completer.id() < self.flush_below;
                    let fits = taken.is_empty()
                        || bytes.saturating_add(open.builder.estimated_size())
                            <= cfg.max_request_size;
                    if (due <= now || forced) && fits {
                        if let Some(open) = queue.open.take() {
                            taken.push(open.close());
                        }
                        if tq.sticky == Some(PartitionId::new(pid)) {
                            tq.sticky = None;
                        }
                    } else if !forced && taken.is_empty() {
                        wake_at(due, &mut out);
                    }
                }
                if !taken.is_empty() {
                    queue.in_flight = true;
                    out.ready.push(Drained {
                        topic: Arc::clone(&tq.name),
                        partition: PartitionId::new(pid),
                        batches: taken,
                    });
                }
            }
        }
        out
    }

    /// Puts batches back at the front of their partition (oldest first) after a failed
    /// attempt, and clears the partition's in-flight mark.
    pub(crate) fn requeue(&mut self, topic: &str, partition: PartitionId, batches: Vec<Batch>) {
        if let Some(queue) = self.queue_mut(topic, partition) {
            for b in batches.into_iter().rev() {
                queue.ready.push_front(b);
            }
            queue.in_flight = false;
        }
        // A queue that vanished cannot happen (queues are never removed); dropping the
        // batches then fails their records with `Closed`, which is still an answer.
    }

    /// Clears the in-flight mark once a partition's request is answered.
    pub(crate) fn done(&mut self, topic: &str, partition: PartitionId) {
        if let Some(queue) = self.queue_mut(topic, partition) {
            queue.in_flight = false;
        }
    }

    /// Marks a topic's metadata refresh as started; `false` if one is already running.
    pub(crate) fn start_refresh(&mut self, topic: &str) -> bool {
        match self.topics.get_mut(topic) {
            Some(tq) if !tq.refreshing => {
                tq.refreshing = true;
                true
            }
            _ => false,
        }
    }

    /// Marks a topic's refresh as finished; `unknown`: the cluster has no such topic.
    pub(crate) fn end_refresh(&mut self, topic: &str, unknown: bool) {
        if let Some(tq) = self.topics.get_mut(topic) {
            tq.refreshing = false;
            tq.unknown = unknown;
        }
    }

    /// Whether the last metadata refresh of `topic` found it missing.
    pub(crate) fn is_unknown(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some_and(|tq| tq.unknown)
    }

    fn queue_mut(&mut self, topic: &str, partition: PartitionId) -> Option<&mut PartitionQueue> {
        self.topics.get_mut(topic)?.partitions.get_mut(&partition.get())
    }
}

fn would_overflow(builder: &BatchBuilder, record_size: usize, batch_size: usize) -> bool {
    !builder.is_empty() && builder.estimated_size().saturating_add(record_size) > batch_size
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_client::PartitionInfo;
    use strom_format::{LeaderEpoch, RecordBatch};

    fn info(n: i32) -> TopicInfo {
        TopicInfo {
            name: "t".into(),
            partitions: (0..n)
                .map(|i| PartitionInfo {
                    id: PartitionId::new(i),
                    leader: 1,
                    leader_epoch: LeaderEpoch::new(0),
                })
                .collect(),
        }
    }

    fn accumulator(batch_size: usize, linger_ms: u64) -> Accumulator {
        Accumulator::new(
            AccumulatorConfig {
                batch_size,
                linger: Duration::from_millis(linger_ms),
                compression: Compression::None,
                max_request_size: 1 << 20,
                retry_alone: false,
            },
            Tracker::new(1 << 30),
        )
    }

    fn rec(value: &[u8]) -> Append<'_> {
        Append { key: None, value: Some(value), headers: &[], timestamp: 1, size: value.len() + 36 }
    }

    fn built(batch: Batch) -> RecordBatch {
        match batch.payload {
            Payload::Open(b) => RecordBatch::new(b.build().unwrap()).unwrap(),
            Payload::Built(b) => RecordBatch::new(b).unwrap(),
        }
    }

    #[test]
    fn batches_close_at_batch_size() {
        let mut acc = accumulator(1000, 60_000);
        let t0 = Instant::now();
        let info = info(1);
        let value = [7u8; 100];
        let mut futures = Vec::new();
        for _ in 0..25 {
            let (f, _) = acc.append("t", Some(PartitionId::new(0)), &info, &rec(&value), || t0);
            futures.push(f);
        }
        // Linger has not passed: only the closed batches are ready, the open one waits.
        let drain = acc.drain(t0);
        assert_eq!(drain.ready.len(), 1);
        let batches = drain.ready.into_iter().next().unwrap().batches;
        assert!(batches.len() >= 2);
        let mut total = 0;
        for b in batches {
            let batch = built(b);
            assert!(batch.size() <= 1000, "batch of {} bytes", batch.size());
            total += batch.records_count();
        }
        assert!(total < 25);
        assert_eq!(drain.next_wakeup, None, "partition is in flight, nothing to wake for");
    }

    #[test]
    fn open_batch_waits_for_linger() {
        let mut acc = accumulator(1 << 20, 10);
        let t0 = Instant::now();
        let info = info(1);
        let _f = acc.append("t", Some(PartitionId::new(0)), &info, &rec(b"x"), || t0);
        let drain = acc.drain(t0 + Duration::from_millis(5));
        assert!(drain.ready.is_empty());
        assert_eq!(drain.next_wakeup, Some(t0 + Duration::from_millis(10)));
        assert!(!drain.idle);
        let drain = acc.drain(t0 + Duration::from_millis(10));
        assert_eq!(drain.ready.len(), 1);
    }

    #[test]
    fn flush_and_close_skip_linger() {
        let mut acc = accumulator(1 << 20, 60_000);
        let t0 = Instant::now();
        let info = info(2);
        let _a = acc.append("t", Some(PartitionId::new(0)), &info, &rec(b"a"), || t0);
        acc.flush(acc.tracker.next_id());
        let _b = acc.append("t", Some(PartitionId::new(1)), &info, &rec(b"b"), || t0);
        let drain = acc.drain(t0);
        assert_eq!(drain.ready.len(), 1, "only the batch created before flush is forced");
        assert_eq!(drain.ready[0].partition, PartitionId::new(0));
        acc.close();
        assert_eq!(acc.drain(t0).ready.len(), 1);
    }

    #[test]
    fn one_request_in_flight_per_partition_and_requeue_keeps_order() {
        let mut acc = accumulator(200, 0);
        let t0 = Instant::now();
        let info = info(1);
        let p = PartitionId::new(0);
        let mut futures = Vec::new();
        for i in 0..10u8 {
            futures.push(acc.append("t", Some(p), &info, &rec(&[i; 50]), || t0).0);
        }
        let first = acc.drain(t0).ready.pop().unwrap();
        assert!(acc.drain(t0).ready.is_empty(), "partition is in flight");
        let ids: Vec<u64> = first.batches.iter().map(|b| b.completer.id()).collect();
        let mut batches = first.batches;
        for b in &mut batches {
            b.retry_at = Some(t0 + Duration::from_millis(100));
        }
        acc.requeue("t", p, batches);
        let drain = acc.drain(t0);
        assert!(drain.ready.is_empty(), "backoff holds the partition");
        assert_eq!(drain.next_wakeup, Some(t0 + Duration::from_millis(100)));
        let again = acc.drain(t0 + Duration::from_millis(100)).ready.pop().unwrap();
        let again_ids: Vec<u64> = again.batches.iter().map(|b| b.completer.id()).collect();
        assert_eq!(&again_ids[..ids.len()], &ids[..]);
        assert!(again_ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn sticky_partition_moves_when_batch_closes() {
        let mut acc = accumulator(1000, 60_000);
        let t0 = Instant::now();
        let info = info(4);
        let mut parts = Vec::new();
        for _ in 0..60 {
            let (f, _) = acc.append("t", None, &info, &rec(&[1; 100]), || t0);
            parts.push(f.partition());
        }
        // Runs of the same partition, one run per batch, switching at each batch boundary.
        let switches = parts.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(switches >= 5, "{parts:?}");
        let run = parts.iter().take_while(|p| **p == parts[0]).count();
        assert!(run >= 2, "a batch holds several records: {parts:?}");
    }

    #[test]
    fn only_a_partition_without_a_request_in_flight_wakes_the_sender() {
        // Three of these records fit a batch.
        let mut acc = accumulator(300, 60_000);
        let t0 = Instant::now();
        let info = info(1);
        let p = Some(PartitionId::new(0));
        let (_f, wake) = acc.append("t", p, &info, &rec(&[1; 50]), || t0);
        assert!(wake, "a new batch needs its linger timer");
        let (_f, wake) = acc.append("t", p, &info, &rec(&[1; 50]), || t0);
        assert!(!wake, "nothing changed for the sender");
        // Force the open batch out: the partition now has a request in flight.
        acc.flush(acc.tracker.next_id());
        assert_eq!(acc.drain(t0).ready.len(), 1);
        let mut clock_reads = 0;
        for _ in 0..10 {
            let (_f, wake) = acc.append("t", p, &info, &rec(&[2; 50]), || {
                clock_reads += 1;
                t0
            });
            assert!(!wake, "batches opened and closed behind a request in flight");
        }
        assert!((2..10).contains(&clock_reads), "the clock is read per batch, not per record");
        // The answer clears the mark; the sender's next drain finds the closed batches.
        acc.done("t", PartitionId::new(0));
        assert_eq!(acc.drain(t0).ready.len(), 1);
        let (_f, wake) = acc.append("t", p, &info, &rec(&[3; 50]), || t0);
        assert!(!wake, "in flight again");
    }

    #[test]
    fn compressed_batches_take_and_return_pooled_buffers() {
        let mut acc = accumulator(1000, 0);
        acc.recycle_vec(Vec::with_capacity(1000));
        acc.recycle_vec(Vec::with_capacity(10));
        assert_eq!(acc.spare_buffers(), 1, "a buffer smaller than a batch is let go");
        let spare = acc.spare_buffer();
        assert_eq!((spare.capacity(), acc.spare_buffers()), (1000, 0));
        assert!(acc.spare_buffer().capacity() >= 1000, "an empty pool hands out a new buffer");
    }

    #[test]
    fn drain_reports_idle() {
        let mut acc = accumulator(1000, 0);
        assert!(acc.drain(Instant::now()).idle);
        let info = info(1);
        let t0 = Instant::now();
        let _f = acc.append("t", Some(PartitionId::new(0)), &info, &rec(b"x"), || t0);
        let d = acc.drain(t0);
        assert!(!d.idle);
        acc.done("t", PartitionId::new(0));
        assert!(acc.drain(t0).idle);
    }

    #[test]
    fn buffers_of_sent_batches_are_reused() {
        let mut acc = accumulator(1000, 0);
        let t0 = Instant::now();
        let info = info(1);
        let (_f, _) = acc.append("t", Some(PartitionId::new(0)), &info, &rec(&[1u8; 100]), || t0);
        let batch = acc.drain(t0).ready.remove(0).batches.remove(0);
        let Payload::Open(builder) = batch.payload else { panic!("not built yet") };
        let bytes = builder.build().unwrap();
        let ptr = bytes.as_ptr();
        // Still referenced elsewhere (a request being written): not taken.
        let other = bytes.clone();
        acc.recycle(bytes);
        assert_eq!(acc.spare_buffers(), 0);
        acc.recycle(other);
        assert_eq!(acc.spare_buffers(), 1);
        acc.done("t", PartitionId::new(0));
        let (_f, _) = acc.append("t", Some(PartitionId::new(0)), &info, &rec(&[2u8; 100]), || t0);
        assert_eq!(acc.spare_buffers(), 0);
        let batch = acc.drain(t0).ready.remove(0).batches.remove(0);
        let Payload::Open(builder) = batch.payload else { panic!("not built yet") };
        let bytes = builder.build().unwrap();
        assert_eq!(bytes.as_ptr(), ptr, "the second batch is built in the first one's buffer");
        assert_eq!(
            built(Batch { payload: Payload::Built(bytes), ..batch }).records().unwrap().count(),
            1
        );
    }
}
