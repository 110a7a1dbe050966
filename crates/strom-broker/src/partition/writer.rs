//! The partition's writer: one thread per partition that owns its leader appends behind a
//! bounded queue. It takes every append queued at the moment it wakes, writes them in one go
//! (one acquisition of the log's writer lock, one flush decision: see
//! `Log::append_group_with_leader_epoch`), publishes the new log end and high watermark, and
//! then answers each. This replaces a `spawn_blocking` hop per append: under load, concurrent
//! producers share one wake-up and one lock round instead of paying for their own.
//!
//! The thread starts with the partition's first produce and holds only a weak reference to
//! it: it ends when the partition is dropped (its sender goes with it). Every caller with an
//! append in the queue holds the partition, so a queued append is always written and answered
//! before the partition can be closed (the shutdown drain).

use std::sync::{Arc, Weak};

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

/// What a writer answers an append with: the offsets and the epoch they were stamped with.
pub(crate) type AppendAnswer = Result<(AppendInfo, LeaderEpoch), ApiError>;

/// One queued append.
pub(crate) struct AppendRequest {
    pub(crate) records: Bytes,
    /// acks=all: check `min.insync.replicas` in the writer, just before the write.
    pub(crate) check_min_isr: bool,
    pub(crate) reply: oneshot::Sender<AppendAnswer>,
}

/// Starts the writer thread of `partition` and returns the sending side of its queue.
pub(crate) fn spawn(
    partition: Weak<Partition>,
    name: &str,
    depth: usize,
) -> std::io::Result<mpsc::Sender<AppendRequest>> {
    let (tx, rx) = mpsc::channel(depth.max(1));
    std::thread::Builder::new().name(format!("writer-{name}")).spawn(move || run(partition, rx))?;
    Ok(tx)
}

/// Most appends written as one group; a bound on how long the first one waits for the last.
const MAX_GROUP: usize = 256;

fn run(partition: Weak<Partition>, mut rx: mpsc::Receiver<AppendRequest>) {
    let mut group = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
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
    }
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
        let tx = self.writer()?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest { records, check_min_isr, reply };
        match tx.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(request)) => {
                match tokio::time::timeout_at(deadline, tx.send(request)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(writer_gone(self.name())),
                    Err(_) => {
                        return Err(ApiError::new(
                            ErrorCode::RequestTimedOut,
                            format!(
                                "{}: the partition's write queue stayed full ({} appends \
                                 waiting) until the request timed out; nothing was written",
                                self.name(),
                                tx.max_capacity()
                            ),
                        ));
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(writer_gone(self.name())),
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone(self.name())))
    }

    /// The writer's queue, starting the writer on first use.
    fn writer(self: &Arc<Self>) -> Result<mpsc::Sender<AppendRequest>, ApiError> {
        if let Some(tx) = self.writer.get() {
            return Ok(tx.clone());
        }
        let _start = self.writer_start.lock();
        if let Some(tx) = self.writer.get() {
            return Ok(tx.clone());
        }
        let tx = spawn(Arc::downgrade(self), self.name(), self.write_queue_depth).map_err(|e| {
            tracing::error!(partition = self.name(), error = %e, "cannot start the writer");
            ApiError::new(ErrorCode::UnknownServerError, format!("cannot start a writer: {e}"))
        })?;
        let _ = self.writer.set(tx.clone());
        Ok(tx)
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
