//! The connector's loop: consume as a group member, keep each owned partition's position in
//! step with the offsets stored in the sink, gather records into batches, write them with
//! their offsets, and apply the error policy to bad records.
//!
//! Invariant: a record is handed to the sink only if its offset is at or past the partition's
//! position as stored in the sink (as this instance last read or wrote it), and the offsets of a
//! batch move only together with its rows. The group's committed offsets trail the sink's and
//! are for monitoring only; positions always come from the sink after an assignment.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strom_consumer::{
    Consumer, ConsumerConfig, ConsumerError, ConsumerRecord, OffsetReset, RebalanceListener,
    SeekTo, TopicPartition,
};
use strom_format::Offset;
use strom_producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::ConnectError;
use crate::config::{ErrorPolicy, SinkConfig};
use crate::sink::{NOTHING_STORED, OffsetUpdate, Sink};

/// Headers a dead-lettered record carries besides its own.
pub const DLQ_ERROR_HEADER: &str = "strom.dlq.error";
/// The topic the record came from.
pub const DLQ_TOPIC_HEADER: &str = "strom.dlq.topic";
/// The partition the record came from (decimal).
pub const DLQ_PARTITION_HEADER: &str = "strom.dlq.partition";
/// The record's offset (decimal).
pub const DLQ_OFFSET_HEADER: &str = "strom.dlq.offset";

/// First wait before retrying an unavailable sink or broker; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest single poll while the batch is empty, so shutdown is noticed.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Records one poll returns at most.
const MAX_POLL_RECORDS: usize = 10_000;

/// Exponential backoff between retries.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    attempt: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: FIRST_BACKOFF, attempt: 0 }
    }

    /// Waits the current delay and doubles it; returns the attempt number, or `None` when the
    /// sink is told to stop (retrying would keep it from ever stopping while a peer is down).
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> Option<u32> {
        tokio::select! {
            () = tokio::time::sleep(self.next) => {}
            () = stopped(stop) => return None,
        }
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.attempt += 1;
        Some(self.attempt)
    }
}

/// Completes once the sink is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once `run` is over.
    let _ = stop.wait_for(|s| *s).await;
}

/// The error of a sink stopped while it was retrying: nothing pending was committed, so the
/// next run reads it again.
fn stopped_while_retrying(e: &ConnectError) -> ConnectError {
    ConnectError::Unavailable(format!(
        "stopped while retrying ({e}); nothing uncommitted is lost: the next run reads it again"
    ))
}

/// Rebalance events, collected inside `poll` (the callbacks cannot reach the consumer or do
/// I/O) and acted on right after it returns.
#[derive(Debug, Default)]
struct Events {
    revoked: Vec<TopicPartition>,
    assigned: Vec<TopicPartition>,
}

/// The listener handed to the consumer: records what happened, in order.
struct Recorder(Arc<Mutex<Events>>);

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        let mut events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        events.revoked.extend_from_slice(partitions);
        events.assigned.retain(|tp| !partitions.contains(tp));
    }

    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let mut events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        events.assigned.extend_from_slice(partitions);
    }
}

/// What this instance knows of an owned partition.
#[derive(Debug, Clone, Copy)]
struct Owned {
    /// The next offset the sink holds (the fence of the next write).
    stored: Offset,
    /// The next offset to accept from the consumer; `None` right after a seek to the
    /// beginning (whatever comes first is the beginning).
    accept_from: Option<Offset>,
}

/// The records gathered for the next write.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<ConsumerRecord>,
    /// Per partition, the next offset once the batch is stored; includes records that went
    /// to the dead-letter topic instead.
    next: HashMap<TopicPartition, Offset>,
    bytes: usize,
    since: Option<Instant>,
}

impl Batch {
    fn push(&mut self, record: ConsumerRecord, tp: TopicPartition) {
        self.bytes += record.key.as_ref().map_or(0, |b| b.len())
            + record.value.as_ref().map_or(0, |b| b.len());
        self.next.insert(tp, record.offset.next());
        self.since.get_or_insert_with(Instant::now);
        self.records.push(record);
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.next.is_empty()
    }

    fn clear(&mut self) {
        *self = Batch::default();
    }

    /// Keeps only the records before `index`, with the offsets they reach.
    fn truncate(&mut self, index: usize) {
        let kept: Vec<ConsumerRecord> = self.records.drain(..index).collect();
        self.clear();
        for r in kept {
            let tp = TopicPartition::new(&*r.topic, r.partition);
            self.push(r, tp);
        }
    }

    /// Drops everything of the given partitions.
    fn forget(&mut self, partitions: &[TopicPartition]) {
        self.records.retain(|r| {
            !partitions.iter().any(|tp| tp.partition == r.partition && *tp.topic == *r.topic)
        });
        self.next.retain(|tp, _| !partitions.contains(tp));
    }
}

/// Runs one sink until `shutdown` completes (then flushes and leaves the group) or until a
/// bad record stops it under `errors = fail`, or an error that retrying cannot fix.
pub async fn run<S: Sink>(
    config: SinkConfig,
    sink: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConnectError> {
    config.validate()?;
    let (stop_tx, stop) = watch::channel(false);
    let work = async move {
        let mut runner = Runner::start(config, sink, stop).await?;
        let result = runner.run().await;
        if let Err(e) = runner.consumer.close().await {
            debug!(error = %e, "leaving the group failed");
        }
        if let Some(dlq) = &runner.dlq {
            dlq.close().await;
        }
        result
    };
    tokio::pin!(work, shutdown);
    tokio::select! {
        result = &mut work => result,
        () = &mut shutdown => {
            // The loop flushes what it has and returns; retries give up.
            let _ = stop_tx.send(true);
            work.await
        }
    }
}

struct Runner<S> {
    config: SinkConfig,
    sink: S,
    consumer: Consumer,
    dlq: Option<Producer>,
    events: Arc<Mutex<Events>>,
    owned: HashMap<TopicPartition, Owned>,
    batch: Batch,
    /// Becomes true when the sink is told to stop.
    stop: watch::Receiver<bool>,
}

impl<S: Sink> Runner<S> {
    async fn start(
        config: SinkConfig,
        mut sink: S,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Runner<S>, ConnectError> {
        let mut backoff = Backoff::new();
        loop {
            match sink.prepare().await {
                Ok(()) => break,
                Err(e) if e.is_retriable() => {
                    let Some(attempt) = backoff.wait(&mut stop).await else {
                        return Err(stopped_while_retrying(&e));
                    };
                    warn!(sink = config.name(), attempt, error = %e, "sink unavailable, retrying");
                }
                Err(e) => return Err(e),
            }
        }
        let session = Duration::from_millis(config.session_timeout_ms);
        let consumer_config = ConsumerConfig::builder(config.bootstrap.clone())
            .group_id(config.group.clone())
            .enable_auto_commit(false)
            .auto_offset_reset(OffsetReset::Earliest)
            .session_timeout(session)
            .heartbeat_interval(session / 3)
            .max_poll_records(config.batch.max_rows.clamp(1, MAX_POLL_RECORDS))
            .build()?;
        let mut consumer = Consumer::new(consumer_config).await?;
        let events = Arc::new(Mutex::new(Events::default()));
        consumer.subscribe(config.topics.clone(), Some(Box::new(Recorder(events.clone()))))?;
        let dlq = match &config.dlq_topic {
            Some(_) => {
                let producer_config =
                    ProducerConfig::builder(config.bootstrap.clone()).acks(Acks::All).build()?;
                Some(Producer::new(producer_config).await?)
            }
            None => None,
        };
        info!(sink = config.name(), topics = ?config.topics, group = %config.group, "sink started");
        Ok(Runner {
            config,
            sink,
            consumer,
            dlq,
            events,
            owned: HashMap::new(),
            batch: Batch::default(),
            stop,
        })
    }

    async fn run(&mut self) -> Result<(), ConnectError> {
        let mut poll_backoff = Backoff::new();
        loop {
            let timeout = match self.batch.since {
                None => IDLE_POLL,
                Some(since) => (since + self.config.batch.flush_interval())
                    .saturating_duration_since(Instant::now()),
            };
            let polled = tokio::select! {
                () = stopped(&mut self.stop) => {
                    info!(sink = self.config.name(), "shutting down");
                    return self.flush().await;
                }
                polled = self.consumer.poll(timeout) => polled,
            };
            let records = match polled {
                Ok(records) => {
                    poll_backoff = Backoff::new();
                    records
                }
                Err(e) if consumer_retriable(&e) => {
                    let Some(attempt) = poll_backoff.wait(&mut self.stop).await else {
                        return self.flush().await;
                    };
                    warn!(sink = self.config.name(), attempt, error = %e, "poll failed, retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let fresh = self.apply_rebalance().await?;
            for record in records {
                let tp = TopicPartition::new(&*record.topic, record.partition);
                if fresh.contains(&tp) {
                    // Fetched from the group's position before the seek to the stored one.
                    continue;
                }
                let Some(owned) = self.owned.get_mut(&tp) else { continue };
                if owned.accept_from.is_some_and(|from| record.offset < from) {
                    continue;
                }
                owned.accept_from = Some(record.offset.next());
                self.batch.push(record, tp);
                if self.batch.records.len() >= self.config.batch.max_rows
                    || self.batch.bytes >= self.config.batch.max_bytes
                {
                    self.flush().await?;
                }
            }
            if self
                .batch
                .since
                .is_some_and(|since| since.elapsed() >= self.config.batch.flush_interval())
            {
                self.flush().await?;
            }
        }
    }

    /// Acts on the rebalance events of the last poll: forgets revoked partitions (and their
    /// unwritten records: the new owner reads them again from the stored offsets), reads the
    /// stored offsets of assigned ones and seeks there. Returns the newly assigned partitions.
    async fn apply_rebalance(&mut self) -> Result<Vec<TopicPartition>, ConnectError> {
        let Events { revoked, assigned } = {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *events)
        };
        if !revoked.is_empty() {
            info!(sink = self.config.name(), ?revoked, "partitions revoked");
            self.batch.forget(&revoked);
            for tp in &revoked {
                self.owned.remove(tp);
            }
        }
        if !assigned.is_empty() {
            self.seek_to_stored(&assigned).await?;
        }
        if !revoked.is_empty() || !assigned.is_empty() {
            let mut owned: Vec<String> = self.owned.keys().map(ToString::to_string).collect();
            owned.sort();
            info!(sink = self.config.name(), owned = %owned.join(","), "owning partitions");
        }
        Ok(assigned)
    }

    /// Reads the stored offsets of `partitions` (retrying while the sink is down) and seeks.
    async fn seek_to_stored(&mut self, partitions: &[TopicPartition]) -> Result<(), ConnectError> {
        let mut backoff = Backoff::new();
        let stored = loop {
            match self.sink.stored_offsets(&self.config.group, partitions).await {
                Ok(stored) => break stored,
                Err(e) if e.is_retriable() => {
                    let Some(attempt) = backoff.wait(&mut self.stop).await else {
                        return Err(stopped_while_retrying(&e));
                    };
                    warn!(sink = self.config.name(), attempt, error = %e, "reading stored offsets failed, retrying");
                }
                Err(e) => return Err(e),
            }
        };
        for tp in partitions {
            let at = stored.get(tp).copied().unwrap_or(NOTHING_STORED);
            let (to, accept_from) = if at == NOTHING_STORED {
                (SeekTo::Beginning, None)
            } else {
                (SeekTo::Offset(at), Some(at))
            };
            match self.consumer.seek(tp, to) {
                Ok(()) => {}
                // No longer ours (a rebalance this instance has not acted on yet).
                Err(ConsumerError::NotAssigned(_)) => {
                    self.owned.remove(tp);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            debug!(sink = self.config.name(), %tp, stored = %at, "seeked to the stored offset");
            self.owned.insert(tp.clone(), Owned { stored: at, accept_from });
        }
        Ok(())
    }

    /// Writes the batch with its offsets, retrying while the sink is unavailable and applying
    /// the error policy to bad records.
    async fn flush(&mut self) -> Result<(), ConnectError> {
        let mut backoff = Backoff::new();
        let mut stop: Option<ConnectError> = None;
        while !self.batch.is_empty() {
            let updates: Vec<OffsetUpdate> = self
                .batch
                .next
                .iter()
                .filter_map(|(tp, next)| {
                    let owned = self.owned.get(tp)?;
                    Some(OffsetUpdate { tp: tp.clone(), expected: owned.stored, next: *next })
                })
                .collect();
            match self.sink.write(&self.config.group, &self.batch.records, &updates).await {
                Ok(()) => {
                    let rows = self.batch.records.len();
                    for u in &updates {
                        if let Some(owned) = self.owned.get_mut(&u.tp) {
                            owned.stored = u.next;
                        }
                    }
                    self.batch.clear();
                    debug!(sink = self.config.name(), rows, "batch stored");
                    self.commit_for_monitoring(&updates).await;
                }
                Err(e) if e.is_retriable() => {
                    let Some(attempt) = backoff.wait(&mut self.stop).await else {
                        return Err(stopped_while_retrying(&e));
                    };
                    warn!(sink = self.config.name(), attempt, error = %e, "write failed, retrying");
                }
                Err(ConnectError::Fenced(why)) => {
                    warn!(sink = self.config.name(), %why, "another instance wrote our partitions; re-reading stored offsets");
                    self.batch.clear();
                    let owned: Vec<TopicPartition> = self.owned.keys().cloned().collect();
                    self.seek_to_stored(&owned).await?;
                }
                Err(ConnectError::BadRecord { index, reason }) => {
                    let Some(record) = self.batch.records.get(index).cloned() else {
                        return Err(ConnectError::Sink(format!(
                            "the sink named record {index} of a batch of {}",
                            self.batch.records.len()
                        )));
                    };
                    match self.config.errors {
                        ErrorPolicy::Tolerate => {
                            self.dead_letter(&record, &reason).await?;
                            // Its offset stays in the batch's offsets: it counts as handled.
                            self.batch.records.remove(index);
                        }
                        ErrorPolicy::Fail => {
                            warn!(sink = self.config.name(), topic = %record.topic, partition = %record.partition, offset = %record.offset, %reason, "bad record, stopping");
                            self.batch.truncate(index);
                            stop = Some(ConnectError::Stopped {
                                topic: record.topic.to_string(),
                                partition: record.partition.get(),
                                offset: record.offset.get(),
                                reason,
                            });
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match stop {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends a bad record to the dead-letter topic and waits until it is stored.
    async fn dead_letter(&self, record: &ConsumerRecord, reason: &str) -> Result<(), ConnectError> {
        let (Some(dlq), Some(topic)) = (&self.dlq, &self.config.dlq_topic) else {
            return Err(ConnectError::Config("no dead-letter topic".into()));
        };
        warn!(sink = self.config.name(), topic = %record.topic, partition = %record.partition, offset = %record.offset, %reason, dlq = %topic, "bad record to the dead-letter topic");
        let mut out = ProducerRecord::new(topic.clone())
            .headers(record.headers.clone())
            .header(DLQ_ERROR_HEADER, Some(reason.as_bytes()))
            .header(DLQ_TOPIC_HEADER, Some(record.topic.as_bytes()))
            .header(DLQ_PARTITION_HEADER, Some(record.partition.get().to_string().as_bytes()))
            .header(DLQ_OFFSET_HEADER, Some(record.offset.get().to_string().as_bytes()))
            .timestamp(record.timestamp);
        if let Some(key) = &record.key {
            out = out.key(key.clone());
        }
        if let Some(value) = &record.value {
            out = out.value(value.clone());
        }
        dlq.send(out).await?.await?;
        Ok(())
    }

    /// Tells the group how far the sink got, so lag tools see it. Failures only matter to
    /// monitoring: positions come from the sink.
    async fn commit_for_monitoring(&mut self, updates: &[OffsetUpdate]) {
        let offsets: Vec<(TopicPartition, Offset)> =
            updates.iter().map(|u| (u.tp.clone(), u.next)).collect();
        if let Err(e) = self.consumer.commit_offsets(&offsets).await {
            debug!(sink = self.config.name(), error = %e, "monitoring commit failed");
        }
    }
}

/// Consumer errors that a later poll can get past (a broker or coordinator away for a while).
fn consumer_retriable(e: &ConsumerError) -> bool {
    matches!(
        e,
        ConsumerError::Client(_) | ConsumerError::Group { .. } | ConsumerError::Storage { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strom_format::PartitionId;

    fn record(partition: i32, offset: i64) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: PartitionId::new(partition),
            offset: Offset::new(offset),
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        }
    }

    fn batch_of(records: &[(i32, i64)]) -> Batch {
        let mut batch = Batch::default();
        for &(p, o) in records {
            batch.push(record(p, o), TopicPartition::new("t", PartitionId::new(p)));
        }
        batch
    }

    #[test]
    fn truncated_batch_reaches_only_the_kept_offsets() {
        let mut batch = batch_of(&[(0, 5), (1, 9), (0, 6), (1, 10)]);
        batch.truncate(2);
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.next[&TopicPartition::new("t", PartitionId::new(0))], Offset::new(6));
        assert_eq!(batch.next[&TopicPartition::new("t", PartitionId::new(1))], Offset::new(10));
    }

    #[test]
    fn forgetting_a_partition_drops_its_records_and_offsets() {
        let mut batch = batch_of(&[(0, 5), (1, 9)]);
        batch.forget(&[TopicPartition::new("t", PartitionId::new(1))]);
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.next.len(), 1);
    }

    #[test]
    fn revoking_cancels_a_pending_assignment() {
        let events = Arc::new(Mutex::new(Events::default()));
        let mut recorder = Recorder(events.clone());
        let tp = TopicPartition::new("t", PartitionId::new(0));
        recorder.on_partitions_assigned(std::slice::from_ref(&tp));
        recorder.on_partitions_revoked(std::slice::from_ref(&tp));
        let events = events.lock().expect("lock");
        assert!(events.assigned.is_empty());
        assert_eq!(events.revoked, vec![tp]);
    }
}
