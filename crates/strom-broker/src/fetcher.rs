//! Replica fetchers: the follower side of replication (Kafka's `ReplicaFetcherThread`). One
//! task per source broker fetches, in one request, every partition this node follows from it,
//! then applies the answers in order: records appended as the leader assigned them, the
//! leader's high watermark taken, a diverging epoch truncated to.
//!
//! The replica manager calls [`Fetchers::update`] after every image; a task whose list empties
//! stops. Each request names the leader epoch the follower believes current, and each answer is
//! applied only if the partition still follows in that epoch, so a slow answer from a deposed
//! leader is dropped rather than written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strom_format::{LeaderEpoch, Offset};
use strom_proto::v1 as pb;
use strom_proto::v1::ErrorCode;
use strom_replication::{EpochEndOffset, NodeId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::BrokerConfig;
use crate::leader_connection::LeaderConnection;
use crate::partition::Partition;
use crate::quorum::Image;
use crate::topic::Registry;

/// Waits after a failed fetch, doubling from the first up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));
/// How long past its own max wait a fetch may take before the leader counts as unreachable.
const FETCH_GRACE: Duration = Duration::from_secs(5);
/// Partitions one fetch request carries at most; a source with more is fetched in rounds.
const MAX_PARTITIONS_PER_FETCH: usize = 2000;

/// The fetcher tasks of this node, by source broker.
#[derive(Debug)]
pub(crate) struct Fetchers {
    ctx: Arc<Context>,
    tasks: Mutex<HashMap<NodeId, Fetcher>>,
}

#[derive(Debug)]
struct Fetcher {
    partitions: watch::Sender<Vec<Arc<Partition>>>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Context {
    config: Arc<BrokerConfig>,
    cluster_id: String,
    images: watch::Receiver<Arc<Image>>,
    shutdown: watch::Receiver<bool>,
}

impl Fetchers {
    pub(crate) fn new(
        config: Arc<BrokerConfig>,
        cluster_id: String,
        images: watch::Receiver<Arc<Image>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Fetchers {
            ctx: Arc::new(Context { config, cluster_id, images, shutdown }),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Points the fetchers at the partitions this node follows now (after an image was
    /// reconciled): starts a task per new source, gives running ones their new lists, stops
    /// those left with nothing.
    pub(crate) fn update(&self, registry: &Registry) {
        let me = self.ctx.config.node_id;
        let mut by_leader: HashMap<NodeId, Vec<Arc<Partition>>> = HashMap::new();
        for p in registry.partitions() {
            let (leader, _) = p.leader_and_epoch();
            if leader != me && leader >= 0 && !p.is_deleted() {
                by_leader.entry(leader).or_default().push(p);
            }
        }
        let mut tasks = self.tasks.lock();
        tasks.retain(|leader, fetcher| {
            if by_leader.contains_key(leader) && !fetcher.task.is_finished() {
                true
            } else {
                fetcher.task.abort();
                false
            }
        });
        for (leader, partitions) in by_leader {
            match tasks.get(&leader) {
                Some(fetcher) => {
                    fetcher.partitions.send_if_modified(|current| {
                        let same = current.len() == partitions.len()
                            && current.iter().zip(&partitions).all(|(a, b)| Arc::ptr_eq(a, b));
                        if !same {
                            *current = partitions;
                        }
                        !same
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(partitions);
                    let task = tokio::spawn(run(self.ctx.clone(), leader, rx));
                    tracing::debug!(leader, "replica fetcher started");
                    tasks.insert(leader, Fetcher { partitions: tx, task });
                }
            }
        }
    }

    /// Stops every fetcher (shutdown).
    pub(crate) fn stop(&self) {
        for (_, fetcher) in self.tasks.lock().drain() {
            fetcher.task.abort();
        }
    }
}

/// One partition of a request in flight: what was asked, to check the answer against.
struct Asked {
    partition: Arc<Partition>,
    epoch: LeaderEpoch,
}

async fn run(
    ctx: Arc<Context>,
    leader: NodeId,
    mut partitions: watch::Receiver<Vec<Arc<Partition>>>,
) {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = BACKOFF.0;
    let mut failing = 0u32;
    let mut connection = LeaderConnection::default();
    loop {
        let list = partitions.borrow_and_update().clone();
        if list.is_empty() {
            tokio::select! {
                changed = partitions.changed() => if changed.is_err() { return },
                () = crate::broker::stopped(&mut shutdown) => return,
            }
            continue;
        }
        let address =
            ctx.images.borrow().state.broker(leader).map(|b| b.registration.address.clone());
        let outcome = match address {
            Some(address) => {
                tokio::select! {
                    outcome = fetch_once(&ctx, &mut connection, leader, &address, &list) => outcome,
                    // A new list (a partition moved) restarts the round at once.
                    changed = partitions.changed() => {
                        if changed.is_err() { return }
                        continue;
                    }
                    () = crate::broker::stopped(&mut shutdown) => return,
                }
            }
            None => Err(format!("no address known for node {leader}")),
        };
        match outcome {
            Ok(Progress::Some) => {
                backoff = BACKOFF.0;
                failing = 0;
            }
            Ok(Progress::Waiting) => {
                // The leader had nothing to say that moves us on (it is not leader yet, or
                // does not know the epoch yet): wait for metadata rather than spin.
                pause(backoff, &mut partitions, &mut shutdown).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            Err(e) => {
                failing += 1;
                if failing == 1 || failing.is_multiple_of(50) {
                    tracing::info!(leader, error = %e, "replica fetch failed; retrying");
                } else {
                    tracing::debug!(leader, error = %e, "replica fetch failed");
                }
                pause(backoff, &mut partitions, &mut shutdown).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn pause(
    delay: Duration,
    partitions: &mut watch::Receiver<Vec<Arc<Partition>>>,
    shutdown: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = partitions.changed() => {}
        () = crate::broker::stopped(shutdown) => {}
    }
}

enum Progress {
    /// Records, a high watermark or a truncation applied: fetch again at once.
    Some,
    /// Only errors that wait on metadata.
    Waiting,
}

async fn fetch_once(
    ctx: &Context,
    connection: &mut LeaderConnection,
    leader: NodeId,
    address: &str,
    list: &[Arc<Partition>],
) -> Result<Progress, String> {
    let mut asked = Vec::with_capacity(list.len().min(MAX_PARTITIONS_PER_FETCH));
    let mut request = pb::ReplicaFetchRequest {
        cluster_id: ctx.cluster_id.clone(),
        replica_id: ctx.config.node_id,
        max_wait_ms: ctx.config.replica_fetch_wait_max_ms as u32,
        max_bytes: u32::try_from(ctx.config.replica_fetch_max_bytes).unwrap_or(u32::MAX),
        partitions: Vec::new(),
    };
    for p in list.iter().filter(|p| !p.is_deleted()).take(MAX_PARTITIONS_PER_FETCH) {
        let (fetch_offset, last_epoch, epoch) = p.follower_position();
        request.partitions.push(pb::ReplicaFetchPartition {
            topic: p.topic().to_string(),
            partition: p.index(),
            fetch_offset: fetch_offset.get(),
            last_fetched_epoch: last_epoch.map_or(-1, LeaderEpoch::get),
            current_leader_epoch: epoch.get(),
            partition_max_bytes: u32::try_from(ctx.config.replica_fetch_max_bytes)
                .unwrap_or(u32::MAX),
            log_start_offset: p.follower_log_start().get(),
        });
        asked.push(Asked { partition: p.clone(), epoch });
    }
    let max_response = ctx.config.replica_fetch_max_bytes.saturating_mul(2).max(64 << 20);
    // A frozen leader must not hold the fetcher past the time it could have answered.
    let patience = Duration::from_millis(ctx.config.replica_fetch_wait_max_ms) + FETCH_GRACE;
    let answer =
        tokio::time::timeout(patience, connection.replica_fetch(address, &request, max_response))
            .await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(format!("node {leader}: {e}")),
        Err(_) => {
            connection.close();
            return Err(format!("node {leader} at {address}: no answer in {patience:?}"));
        }
    };
    if response.error_code != ErrorCode::None as i32 {
        return Err(format!("node {leader}: {}", response.error_message));
    }
    // Apply in one blocking pass, in request order (the leader answers in it).
    tokio::task::spawn_blocking(move || apply(asked, response.partitions))
        .await
        .map_err(|e| format!("applying a replica fetch: {e}"))
}

fn apply(asked: Vec<Asked>, answers: Vec<pb::ReplicaFetchPartitionResponse>) -> Progress {
    let mut progress = Progress::Waiting;
    for (a, r) in asked.into_iter().zip(answers) {
        let p = &a.partition;
        if r.topic != p.topic() || r.partition != p.index() {
            tracing::warn!(partition = p.name(), answered = %format!("{}-{}", r.topic, r.partition),
                "replica fetch answer out of order; dropping the rest");
            break;
        }
        let code = ErrorCode::try_from(r.error_code).unwrap_or(ErrorCode::UnknownServerError);
        let outcome = match code {
            ErrorCode::None => {
                progress = Progress::Some;
                match r.diverging_epoch {
                    Some(d) => {
                        let d = EpochEndOffset {
                            epoch: LeaderEpoch::new(d.epoch),
                            end_offset: Offset::new(d.end_offset),
                        };
                        p.truncate_diverging(a.epoch, d).map(|_| ())
                    }
                    None => p.apply_from_leader(
                        a.epoch,
                        r.records,
                        Offset::new(r.high_watermark),
                        Offset::new(r.log_start_offset),
                    ),
                }
            }
            ErrorCode::OffsetOutOfRange => {
                progress = Progress::Some;
                p.reset_out_of_range(
                    a.epoch,
                    Offset::new(r.log_start_offset),
                    Offset::new(r.log_end_offset),
                )
            }
            ErrorCode::NotLeaderOrFollower
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::UnknownTopicOrPartition => {
                tracing::debug!(partition = p.name(), ?code, message = %r.error_message,
                    "leader not ready for this partition; waiting for metadata");
                Ok(())
            }
            other => {
                tracing::warn!(partition = p.name(), code = ?other, message = %r.error_message,
                    "replica fetch refused");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(partition = p.name(), error = %e, "applying replicated records failed");
        }
    }
    progress
}
