//! The partition's writer: one thread per partition that owns its leader appends behind a
//! bounded queue. It takes every append queued at the moment it wakes, writes them in one go
//! (one acquisition of the log's writer lock, one flush decision: see
//! `Log::append_group_with_leader_epoch`), publishes the new log end and high watermark, and
//! then answers each. This replaces a `spawn_blocking` hop per append: under load, concurrent
//! producers share one wake-up and one lock round instead of paying for their own.
//!
//! The thread starts with the partition's first produce, holds only a weak reference to the
//! partition, and ends when it has been idle for [`WRITER_IDLE`] (the next append starts a new
//! one) or when the partition is dropped. Every caller with an append in the queue holds the
//! partition, so a queued append is always written and answered before the partition can be
//! closed (the shutdown drain).
//!
//! The invariant of the idle exit: an append that was queued is written by the thread that
//! owns the queue, in queue order, and a thread leaves only when it can prove nothing will
//! ever be queued to it again. Senders of a queue are handed out only under the slot's lock,
//! and the thread leaves only under that lock, with its queue empty and no sender left but
//! the slot's own, which it removes: from then on nobody can reach the old queue, and the next
//! append finds the slot empty and starts a new writer. So no append is lost, and none can
//! overtake an earlier one through a second live queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_format::LeaderEpoch;
use strom_log::AppendInfo;
use strom_proto::v1::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use super::Partition;
use crate::error::ApiError;

/// Appends one partition's queue holds before producers wait (and time out): with the
/// broker's in-flight byte budget in front of it, this bounds waiting requests, not memory.
pub(crate) const WRITE_QUEUE_DEPTH: usize = 128;

/// How long a writer thread waits without an append before it ends. A broker may lead
/// thousands of partitions of which few are written at any time; a thread each (a stack and
/// a kernel task) for partitions written once an hour is waste. Thirty seconds is long enough
/// that a producer writing at all (even one batch every few seconds) never pays the restart
/// (a thread spawn, tens of microseconds), and short enough that the threads of a burst are
/// gone soon after it.
pub(crate) const WRITER_IDLE: Duration = Duration::from_secs(30);

/// What a writer answers an append with: the offsets and the epoch they were stamped with.
pub(crate) type AppendAnswer = Result<(AppendInfo, LeaderEpoch), ApiError>;

/// One queued append.
pub(crate) struct AppendRequest {
    pub(crate) records: Bytes,
    /// acks=all: check `min.insync.replicas` in the writer, just before the write.
    pub(crate) check_min_isr: bool,
    pub(crate) reply: oneshot::Sender<AppendAnswer>,
}

/// The running writer, as the partition holds it.
struct Running {
    tx: mpsc::Sender<AppendRequest>,
    /// Unparked after every send: the thread parks when its queue is empty.
    thread: Thread,
    /// Which start of the writer this is; the thread checks the slot still holds its own.
    generation: u64,
}

/// The partition's writer, started on demand (see the module doc). Lock order: the slot's
/// lock is a leaf; nothing blocking happens under it (`try_send`, a thread spawn at most).
pub(crate) struct WriterSlot {
    running: parking_lot::Mutex<Option<Running>>,
    generations: AtomicU64,
    /// Writer threads alive right now: at most one, plus one that has left the slot and is
    /// returning.
    threads: Arc<AtomicUsize>,
    /// Capacity of the writer's queue.
    pub(crate) depth: usize,
    /// How long the thread waits for an append before it ends ([`WRITER_IDLE`]; shorter in
    /// tests).
    pub(crate) idle: Duration,
}

impl WriterSlot {
    pub(crate) fn new() -> Self {
        WriterSlot {
            running: parking_lot::Mutex::new(None),
            generations: AtomicU64::new(0),
            threads: Arc::new(AtomicUsize::new(0)),
            depth: WRITE_QUEUE_DEPTH,
            idle: WRITER_IDLE,
        }
    }

    /// Writer threads alive right now.
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }

    /// A sender of the running writer's queue, if one runs (tests inspect the queue).
    #[cfg(test)]
    pub(crate) fn sender(&self) -> Option<mpsc::Sender<AppendRequest>> {
        self.running.lock().as_ref().map(|r| r.tx.clone())
    }
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        // The thread is parked until an append or its idle timeout: wake it to see that its
        // queue has lost its last sender and end now.
        if let Some(running) = self.running.get_mut().take() {
            let thread = running.thread.clone();
            drop(running);
            thread.unpark();
        }
    }
}

/// Decrements the live-thread count however the thread ends.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Most appends written as one group; a bound on how long the first one waits for the last.
const MAX_GROUP: usize = 256;

fn run(
    partition: Weak<Partition>,
    mut rx: mpsc::Receiver<AppendRequest>,
    generation: u64,
    idle: Duration,
    alive: Alive,
) {
    let _alive = alive;
    let mut group = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(first) => group.push(first),
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {
                let waited = idle_since.elapsed();
                if waited < idle {
                    // A send unparks us; a wake-up with nothing queued just loops.
                    std::thread::park_timeout(idle - waited);
                    continue;
                }
                if leave_if_unreachable(&partition, &rx, generation) {
                    return;
                }
                // Someone still holds a sender (an append on its way): stay for another
                // idle period.
                idle_since = Instant::now();
                continue;
            }
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let Some(p) = partition.upgrade() else {
            answer_all(&mut group, "the partition was closed");
            continue;
        };
        // A panic (a bug) must not take the queue down with it: the callers of this group
        // get an error, like a panicked blocking task used to give, and the writer goes on.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.append_group(&mut group);
        }));
        if written.is_err() {
            tracing::error!(partition = p.name(), "the partition writer panicked");
            answer_all(&mut group, "internal error in the partition writer");
        }
        drop(p);
        idle_since = Instant::now();
    }
}

/// The idle exit (see the module doc): under the slot's lock, with the queue empty and the
/// slot's sender the only one left, removes this writer from the slot and says to end.
fn leave_if_unreachable(
    partition: &Weak<Partition>,
    rx: &mpsc::Receiver<AppendRequest>,
    generation: u64,
) -> bool {
    // The partition is gone, its slot and sender with it: the queue reports `Disconnected`
    // once the callers still holding senders are done.
    let Some(p) = partition.upgrade() else { return false };
    let mut running = p.writer.running.lock();
    if !rx.is_empty() || rx.sender_strong_count() > 1 {
        return false;
    }
    assert!(
        running.as_ref().is_some_and(|r| r.generation == generation),
        "{}: an idle writer found another writer in its slot",
        p.name()
    );
    *running = None;
    drop(running);
    // Invariant: the last sender went with the slot, so nothing was or can be queued here.
    assert!(
        rx.is_empty() && rx.sender_strong_count() == 0,
        "{}: an append reached a writer that had left",
        p.name()
    );
    true
}

fn answer_all(group: &mut Vec<AppendRequest>, why: &str) {
    for request in group.drain(..) {
        let _ = request.reply.send(Err(ApiError::new(ErrorCode::UnknownServerError, why)));
    }
}

impl Partition {
    /// Appends as leader through the partition's writer (see the module doc), first checking
    /// `min.insync.replicas` when `check_min_isr` (acks=all). When the queue is full this
    /// waits for room until `deadline`, then fails with REQUEST_TIMED_OUT (nothing written):
    /// backpressure, never an unbounded queue.
    pub(crate) async fn append_queued(
        self: &Arc<Self>,
        records: Bytes,
        check_min_isr: bool,
        deadline: tokio::time::Instant,
    ) -> AppendAnswer {
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest { records, check_min_isr, reply };
        // Queued under the slot's lock (see the module doc); only a full queue makes us take
        // a sender out of it and wait for room.
        let full = {
            let mut running = self.writer.running.lock();
            let writer = match &mut *running {
                Some(writer) => writer,
                empty @ None => empty.insert(self.start_writer()?),
            };
            match writer.tx.try_send(request) {
                Ok(()) => {
                    writer.thread.unpark();
                    None
                }
                Err(mpsc::error::TrySendError::Full(request)) => {
                    Some((request, writer.tx.clone(), writer.thread.clone()))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Only a writer that died of a bug closes its queue while in the slot
                    // (one leaving empties the slot first): the next append starts afresh.
                    *running = None;
                    return Err(writer_gone(self.name()));
                }
            }
        };
        if let Some((request, tx, thread)) = full {
            // Holding `tx` keeps the writer from leaving (it is not idle anyway: its queue is
            // full) until this append is in the queue.
            match tokio::time::timeout_at(deadline, tx.send(request)).await {
                Ok(Ok(())) => thread.unpark(),
                Ok(Err(_)) => return Err(writer_gone(self.name())),
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "{}: the partition's write queue stayed full ({} appends waiting) \
                             until the request timed out; nothing was written",
                            self.name(),
                            tx.max_capacity()
                        ),
                    ));
                }
            }
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone(self.name())))
    }

    /// Starts a writer thread; the caller holds the slot's lock and puts it there.
    fn start_writer(self: &Arc<Self>) -> Result<Running, ApiError> {
        let slot = &self.writer;
        let generation = slot.generations.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(slot.depth.max(1));
        slot.threads.fetch_add(1, Ordering::AcqRel);
        let alive = Alive(Arc::clone(&slot.threads));
        let (partition, idle) = (Arc::downgrade(self), slot.idle);
        let spawned = std::thread::Builder::new()
            .name(format!("writer-{}", self.name()))
            .spawn(move || run(partition, rx, generation, idle, alive));
        match spawned {
            Ok(handle) => Ok(Running { tx, thread: handle.thread().clone(), generation }),
            Err(e) => {
                // The closure (and its `Alive`) was dropped with the failed spawn.
                tracing::error!(partition = self.name(), error = %e, "cannot start the writer");
                Err(ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("cannot start a writer: {e}"),
                ))
            }
        }
    }

    /// Writes a group of queued appends (the writer thread's side) and answers each.
    /// Requests that fail the partition's checks are answered at once; the rest go to the
    /// log together. The log end and high watermark are published before anyone is answered.
    fn append_group(&self, group: &mut Vec<AppendRequest>) {
        let epoch = self.check_live().and_then(|()| self.check_leader());
        let mut accepted = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(group.len());
        for request in group.drain(..) {
            let checked = epoch.clone().and_then(|epoch| {
                if request.records.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::CorruptMessage,
                        "no record batches in request",
                    ));
                }
                if request.check_min_isr {
                    self.check_min_isr(ErrorCode::NotEnoughReplicas)?;
                }
                Ok(epoch)
            });
            match checked {
                Ok(_) => {
                    records.push(request.records.clone());
                    accepted.push(request);
                }
                Err(e) => {
                    let _ = request.reply.send(Err(e));
                }
            }
        }
        let Ok(epoch) = epoch else { return };
        if accepted.is_empty() {
            return;
        }
        let sizes: Vec<usize> = records.iter().map(Bytes::len).collect();
        let results = self.log.append_group_with_leader_epoch(records, epoch);
        if results.iter().any(Result::is_err) {
            self.clamp_high_watermark();
        }
        self.publish_log_end();
        self.leader_log_moved();
        for ((request, result), size) in accepted.into_iter().zip(results).zip(sizes) {
            let answer = match result {
                Ok(info) => {
                    self.counters.appended(size, info.first_offset, info.last_offset);
                    Ok((info, epoch))
                }
                Err(e) => Err(self.log_error("append", &e)),
            };
            let _ = request.reply.send(answer);
        }
    }
}

fn writer_gone(partition: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotLeaderOrFollower,
        format!("{partition}: the partition is closing; retry on the current leader"),
    )
}
