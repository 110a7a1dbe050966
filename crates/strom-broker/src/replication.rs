//! The leader side of replication on this node: answering followers' fetches (long-polling
//! until a partition's log grows), and carrying ISR changes that leaders propose to the active
//! controller (Kafka's AlterPartition), plus the periodic check that shrinks the ISR of a
//! partition whose follower fell behind.
//!
//! The decisions are strom-replication's (`LeaderState` inside each [`Partition`]); this file
//! moves requests and proposals. ISR changes go through a bounded queue to one task, so a
//! burst of them (a broker died: every partition it followed shrinks) is sent one at a time
//! and a full queue only delays a change (the next tick proposes it again).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::select_all;
use strom_format::{LeaderEpoch, Offset};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_replication::IsrChange;
use tokio::sync::mpsc;

use crate::broker::{Broker, run_blocking};
use crate::error::ApiError;
use crate::partition::{FollowerAnswer, FollowerFetch, Partition};

/// ISR changes waiting to be sent; beyond this they are dropped and proposed again later.
pub(crate) const ISR_QUEUE_LEN: usize = 4096;
/// How often leaders look for followers that fell out of sync.
const ISR_TICK: Duration = Duration::from_millis(250);
/// Most partitions one follower fetch may name.
const MAX_FETCH_PARTITIONS: usize = 10_000;
/// A pending ISR change with no answer is sent again after this long.
const ISR_RESEND_AFTER: Duration = Duration::from_secs(2);
/// Longest an ISR change waits for the controller's answer before it is proposed again.
const ALTER_PARTITION_PATIENCE: Duration = Duration::from_secs(3);
/// Longest a leader holds a follower fetch, whatever the follower asks.
const MAX_FOLLOWER_WAIT: Duration = Duration::from_secs(5);

/// An ISR change on its way to the controller.
pub(crate) type IsrProposal = (Arc<Partition>, IsrChange);

/// Answers a follower's fetch: every named partition this node leads is served (records from
/// the follower's log end, or a diverging epoch); when none has records, the request waits up
/// to its `max_wait_ms` for one of their logs to grow.
pub(crate) async fn serve_replica_fetch(
    broker: &Broker,
    request: pb::ReplicaFetchRequest,
) -> pb::ReplicaFetchResponse {
    if request.partitions.len() > MAX_FETCH_PARTITIONS {
        return pb::ReplicaFetchResponse {
            error_code: ErrorCode::InvalidRequest as i32,
            error_message: format!(
                "a replica fetch may name at most {MAX_FETCH_PARTITIONS} partitions"
            ),
            partitions: Vec::new(),
        };
    }
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FOLLOWER_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let follower = request.replica_id;
    let partitions: Vec<Result<Arc<Partition>, ApiError>> = request
        .partitions
        .iter()
        .map(|p| broker.registry().partition(&p.topic, p.partition))
        .collect();
    let mut shutdown = broker.shutdown_signal();
    loop {
        // Subscribe before reading, so an append between the read and the wait wakes us.
        let mut watchers: Vec<_> = partitions
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(|p| {
                let mut rx = p.subscribe_log_end();
                rx.borrow_and_update();
                rx
            })
            .collect();
        let answered = serve_round(broker, follower, &request, &partitions).await;
        let ready = answered.iter().zip(&request.partitions).any(|((a, _), asked)| match a {
            // A log start the follower has not taken yet (DeleteRecords moved it) is news
            // too: it is what the leader's DeleteRecords waits for.
            Ok(a) => {
                !a.records.is_empty()
                    || a.diverging.is_some()
                    || a.out_of_range
                    || (a.log_start_offset.get() > asked.log_start_offset
                        && asked.fetch_offset > asked.log_start_offset)
            }
            Err(_) => true,
        });
        if ready
            || watchers.is_empty()
            || tokio::time::Instant::now() >= deadline
            || broker.is_shutting_down()
        {
            return response(answered);
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = changed => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = crate::broker::stopped(&mut shutdown) => {}
        }
    }
}

type Answered = Vec<(Result<FollowerAnswer, ApiError>, (String, i32))>;
/// One partition to serve: the partition (or why not), what the follower asked, its name.
type Job = (Result<Arc<Partition>, ApiError>, FollowerFetch, (String, i32));

async fn serve_round(
    broker: &Broker,
    follower: i32,
    request: &pb::ReplicaFetchRequest,
    partitions: &[Result<Arc<Partition>, ApiError>],
) -> Answered {
    let mut budget = request.max_bytes.max(1) as usize;
    let jobs: Vec<Job> = request
        .partitions
        .iter()
        .zip(partitions)
        .map(|(asked, p)| {
            let fetch = FollowerFetch {
                follower,
                fetch_offset: Offset::new(asked.fetch_offset),
                last_fetched_epoch: (asked.last_fetched_epoch >= 0)
                    .then(|| LeaderEpoch::new(asked.last_fetched_epoch)),
                current_leader_epoch: LeaderEpoch::new(asked.current_leader_epoch),
                max_bytes: asked.partition_max_bytes.max(1) as usize,
                log_start_offset: Offset::new(asked.log_start_offset.max(0)),
            };
            (p.clone(), fetch, (asked.topic.clone(), asked.partition))
        })
        .collect();
    let served = run_blocking(move || {
        let mut out = Vec::with_capacity(jobs.len());
        let mut proposals = Vec::new();
        for (p, mut fetch, key) in jobs {
            let answer = match p {
                Ok(p) => {
                    fetch.max_bytes = fetch.max_bytes.min(budget.max(1));
                    let (answer, change) = p.serve_follower(fetch);
                    if let Ok(a) = &answer {
                        budget = budget.saturating_sub(a.records.len());
                    }
                    if let Some(change) = change {
                        proposals.push((p, change));
                    }
                    answer
                }
                Err(e) => Err(e),
            };
            out.push((answer, key));
        }
        Ok((out, proposals))
    })
    .await;
    match served {
        Ok((out, proposals)) => {
            for proposal in proposals {
                broker.propose_isr_change(proposal);
            }
            out
        }
        Err(e) => request
            .partitions
            .iter()
            .map(|p| (Err(e.clone()), (p.topic.clone(), p.partition)))
            .collect(),
    }
}

fn response(answered: Answered) -> pb::ReplicaFetchResponse {
    let partitions = answered
        .into_iter()
        .map(|(answer, (topic, partition))| match answer {
            Ok(a) => pb::ReplicaFetchPartitionResponse {
                topic,
                partition,
                error_code: if a.out_of_range {
                    ErrorCode::OffsetOutOfRange as i32
                } else {
                    ErrorCode::None as i32
                },
                error_message: String::new(),
                high_watermark: a.high_watermark.get(),
                log_start_offset: a.log_start_offset.get(),
                log_end_offset: a.log_end_offset.get(),
                diverging_epoch: a.diverging.map(|d| pb::EpochEndOffset {
                    epoch: d.epoch.get(),
                    end_offset: d.end_offset.get(),
                }),
                records: a.records,
            },
            Err(e) => pb::ReplicaFetchPartitionResponse {
                topic,
                partition,
                error_code: e.code as i32,
                error_message: e.message,
                high_watermark: -1,
                log_start_offset: -1,
                log_end_offset: -1,
                diverging_epoch: None,
                records: Default::default(),
            },
        })
        .collect();
    pb::ReplicaFetchResponse {
        error_code: ErrorCode::None as i32,
        error_message: String::new(),
        partitions,
    }
}

/// Sends leaders' ISR changes to the controller one at a time, and every [`ISR_TICK`] asks
/// each led partition whether a follower fell out of sync. Stops with the broker.
pub(crate) async fn isr_loop(broker: Weak<Broker>, mut proposals: mpsc::Receiver<IsrProposal>) {
    let mut shutdown = match broker.upgrade() {
        Some(b) => b.shutdown_signal(),
        None => return,
    };
    let mut tick = tokio::time::interval(ISR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each partition's pending change was last sent, to resend those left unanswered.
    let mut sent: HashMap<String, Instant> = HashMap::new();
    loop {
        let next = tokio::select! {
            p = proposals.recv() => match p { Some(p) => Some(p), None => return },
            _ = tick.tick() => None,
            () = crate::broker::stopped(&mut shutdown) => return,
        };
        let Some(broker) = broker.upgrade() else { return };
        match next {
            Some((partition, change)) => {
                sent.insert(partition.name().to_string(), Instant::now());
                send_isr_change(&broker, &partition, change).await;
            }
            None => {
                let mut still_pending = HashSet::new();
                for p in broker.registry().partitions() {
                    if let Some(change) = p.leader_tick() {
                        broker.propose_isr_change((p, change));
                    } else if let Some(change) = p.pending_isr_change() {
                        // No answer came (lost, or the controller moved): the same change
                        // again, never a different one, so a late copy cannot contradict it.
                        let due =
                            sent.get(p.name()).is_none_or(|t| t.elapsed() >= ISR_RESEND_AFTER);
                        still_pending.insert(p.name().to_string());
                        if due {
                            broker.propose_isr_change((p, change));
                        }
                    }
                }
                sent.retain(|name, _| still_pending.contains(name));
            }
        }
    }
}

async fn send_isr_change(broker: &Broker, partition: &Partition, change: IsrChange) {
    tracing::info!(partition = partition.name(), isr = ?change.isr,
        leader_epoch = change.leader_epoch.get(), partition_epoch = change.partition_epoch,
        "proposing ISR change");
    let request = pb::AlterPartitionRequest {
        cluster_id: broker.cluster_id().to_string(),
        broker_id: broker.config().node_id,
        topic: partition.topic().to_string(),
        partition: partition.index(),
        leader_epoch: change.leader_epoch.get(),
        partition_epoch: change.partition_epoch,
        new_isr: change.isr.clone(),
    };
    // A frozen controller must not stall every later ISR change for the peer timeout.
    let sent = tokio::time::timeout(ALTER_PARTITION_PATIENCE, broker.alter_partition(request))
        .await
        .unwrap_or_else(|_| Err(crate::controller::not_controller()));
    match sent {
        // Committed: the image brings the new ISR (and clears the pending change) when this
        // node applies it. Unchanged: nothing will come, so clear it now.
        Ok(true) => {}
        Ok(false) => partition.isr_change_failed(),
        // A definite refusal: the change will never commit, so the leader may compute anew.
        Err(e) if is_refusal(e.code) => {
            tracing::info!(partition = partition.name(), error = %e, "ISR change refused");
            partition.isr_change_failed();
        }
        // No answer, or no controller: the change may still commit. It stays pending (the
        // high watermark keeps counting an added member) and is sent again.
        Err(e) => {
            tracing::debug!(partition = partition.name(), error = %e, "ISR change unanswered; will resend");
        }
    }
}

/// Whether the controller's answer means the change can never commit as sent. A stale
/// partition epoch is not one: another change (maybe this one, answered late) committed, and
/// the pending change stays until the image that carries it clears it.
fn is_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::FencedLeaderEpoch
            | ErrorCode::IneligibleReplica
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::InvalidRequest
    )
}
