//! Completion of sent records: one shared slot per batch, one [`DeliveryFuture`] per record.
//!
//! A batch's outcome is stored once and every record's future reads it, so acknowledging a
//! batch of N records costs one lock and N wake-ups, with no per-record channel.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use strom_format::{Offset, PartitionId};
use tokio::sync::{Notify, Semaphore};

use crate::{ProducerError, RecordMetadata};

/// What the broker reported for one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchAck {
    /// Offset of the batch's first record; `None` with acks=0.
    pub base_offset: Option<Offset>,
    /// The broker's append time, when the topic uses `LogAppendTime`.
    pub log_append_time: Option<i64>,
}

/// The outcome slot of one batch, shared with the futures of its records.
///
/// Aligned to two cache lines: `send` bumps the reference count of the open batch's slot for
/// every record while the application's thread polls and drops the futures of older batches;
/// with slots packed next to each other those were the same cache lines, bouncing between
/// cores on every record (the profile showed the reference-count increment as the costliest
/// instruction of `Accumulator::append`).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct BatchShared {
    topic: Arc<str>,
    partition: PartitionId,
    /// Set once. A future of a completed batch reads it with one atomic load and no lock, so
    /// awaiting N records of a batch on one thread writes nothing the completing thread or
    /// `send` also writes.
    outcome: OnceLock<Result<BatchAck, ProducerError>>,
    /// Futures waiting for the outcome. Registered and taken under this lock, and the outcome
    /// is checked again under it, so a completion between a future's first look and its
    /// registration is not missed.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchShared {
    fn new(topic: Arc<str>, partition: PartitionId) -> Arc<Self> {
        Arc::new(BatchShared {
            topic,
            partition,
            outcome: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        })
    }

    /// Stores the outcome (first one wins) and wakes every waiting record.
    fn complete(&self, outcome: Result<BatchAck, ProducerError>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves to the [`RecordMetadata`] of one sent record once its batch is acknowledged, or
/// to the error that failed the batch.
///
/// Returned by [`Producer::send`](crate::Producer::send). Dropping it does not cancel the send.
///
/// ```no_run
/// # async fn demo(producer: strom_producer::Producer) -> Result<(), strom_producer::ProducerError> {
/// use strom_producer::ProducerRecord;
/// let pending = producer.send(ProducerRecord::new("orders").key("k").value("v")).await?;
/// let metadata = pending.await?;
/// println!("stored at offset {:?}", metadata.offset);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a DeliveryFuture reports whether the record was stored; await it or drop it knowingly"]
pub struct DeliveryFuture {
    batch: Arc<BatchShared>,
    index: u32,
    timestamp: i64,
    waker_slot: Option<usize>,
}

impl DeliveryFuture {
    /// The partition the record was assigned to (known before it is acknowledged).
    ///
    /// ```no_run
    /// # async fn demo(producer: strom_producer::Producer) -> Result<(), strom_producer::ProducerError> {
    /// let pending = producer.send(strom_producer::ProducerRecord::new("t").key("k")).await?;
    /// println!("going to partition {}", pending.partition());
    /// # Ok(()) }
    /// ```
    pub fn partition(&self) -> PartitionId {
        self.batch.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProducerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(outcome) = this.batch.outcome.get() {
            return Poll::Ready(this.metadata(outcome));
        }
        let mut wakers = this.batch.wakers.lock();
        // Completed between the look above and the lock: `complete` sets the outcome before
        // it takes the wakers, so it is visible here.
        if let Some(outcome) = this.batch.outcome.get() {
            drop(wakers);
            return Poll::Ready(this.metadata(outcome));
        }
        // One slot per future, so re-polling replaces the waker instead of growing the list.
        match this.waker_slot.and_then(|i| wakers.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            None => {
                this.waker_slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl DeliveryFuture {
    fn metadata(
        &self,
        outcome: &Result<BatchAck, ProducerError>,
    ) -> Result<RecordMetadata, ProducerError> {
        match outcome {
            Ok(ack) => Ok(RecordMetadata {
                topic: Arc::clone(&self.batch.topic),
                partition: self.batch.partition,
                offset: ack.base_offset.map(|b| b.add(i64::from(self.index))),
                timestamp: ack.log_append_time.unwrap_or(self.timestamp),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Batch ids not yet completed, and the buffer memory they hold. `flush` waits on it.
#[derive(Debug)]
pub(crate) struct Tracker {
    incomplete: Mutex<TrackerState>,
    done: Notify,
    /// One permit per buffered byte.
    pub(crate) memory: Semaphore,
}

#[derive(Debug, Default)]
struct TrackerState {
    next_id: u64,
    incomplete: BTreeSet<u64>,
}

impl Tracker {
    pub(crate) fn new(buffer_memory: usize) -> Arc<Self> {
        Arc::new(Tracker {
            incomplete: Mutex::new(TrackerState::default()),
            done: Notify::new(),
            memory: Semaphore::new(buffer_memory.min(Semaphore::MAX_PERMITS)),
        })
    }

    /// The id the next batch will get: every batch created before this call has a smaller one.
    pub(crate) fn next_id(&self) -> u64 {
        self.incomplete.lock().next_id
    }

    /// Waits until every batch with an id below `below` has completed.
    pub(crate) async fn wait_below(&self, below: u64) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before the check, so a completion in between is not missed.
            notified.as_mut().enable();
            let pending = self.incomplete.lock().incomplete.first().is_some_and(|&id| id < below);
            if !pending {
                return;
            }
            notified.await;
        }
    }

    fn register(&self) -> u64 {
        let mut state = self.incomplete.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.incomplete.insert(id);
        id
    }

    fn finish(&self, id: u64, reserved: usize) {
        self.incomplete.lock().incomplete.remove(&id);
        self.memory.add_permits(reserved);
        self.done.notify_waiters();
    }
}

/// The producer side of one batch: completes its records and releases its buffer memory.
/// Dropped without an outcome (shutdown), it fails the records with [`ProducerError::Closed`].
#[derive(Debug)]
pub(crate) struct Completer {
    shared: Arc<BatchShared>,
    id: u64,
    reserved: usize,
    tracker: Arc<Tracker>,
}

impl Completer {
    pub(crate) fn new(tracker: &Arc<Tracker>, topic: Arc<str>, partition: PartitionId) -> Self {
        Completer {
            shared: BatchShared::new(topic, partition),
            id: tracker.register(),
            reserved: 0,
            tracker: Arc::clone(tracker),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Accounts `bytes` of buffer memory (already acquired) to this batch and returns the
    /// future of the record at `index`.
    pub(crate) fn add_record(
        &mut self,
        index: u32,
        timestamp: i64,
        bytes: usize,
    ) -> DeliveryFuture {
        self.reserved += bytes;
        DeliveryFuture { batch: Arc::clone(&self.shared), index, timestamp, waker_slot: None }
    }

    pub(crate) fn succeed(self, ack: BatchAck) {
        self.shared.complete(Ok(ack));
    }

    pub(crate) fn fail(self, error: ProducerError) {
        self.shared.complete(Err(error));
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.shared.complete(Err(ProducerError::Closed));
        self.tracker.finish(self.id, self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn futures_resolve_with_index_offsets_and_memory_returns() {
        let tracker = Tracker::new(1000);
        let permits = tracker.memory.acquire_many(300).await.unwrap();
        permits.forget();
        let mut c = Completer::new(&tracker, Arc::from("t"), PartitionId::new(2));
        let f0 = c.add_record(0, 10, 100);
        let f1 = c.add_record(1, 20, 200);
        assert_eq!(tracker.memory.available_permits(), 700);
        let waiter = tokio::spawn(f1);
        tokio::task::yield_now().await;
        c.succeed(BatchAck { base_offset: Some(Offset::new(40)), log_append_time: None });
        let m1 = waiter.await.unwrap().unwrap();
        assert_eq!(m1.offset, Some(Offset::new(41)));
        assert_eq!(m1.timestamp, 20);
        assert_eq!(m1.partition, PartitionId::new(2));
        assert_eq!(f0.await.unwrap().offset, Some(Offset::new(40)));
        assert_eq!(tracker.memory.available_permits(), 1000);
        tracker.wait_below(u64::MAX).await;
    }

    #[tokio::test]
    async fn dropped_batch_fails_with_closed() {
        let tracker = Tracker::new(10);
        let mut c = Completer::new(&tracker, Arc::from("t"), PartitionId::new(0));
        let f = c.add_record(0, 0, 0);
        drop(c);
        assert!(matches!(f.await, Err(ProducerError::Closed)));
    }
}
