//! The replica manager: makes this node's partitions match the committed metadata image.
//!
//! Every node runs it, the controller included. For each image it opens the logs of partitions
//! this node holds a replica of, gives each its role (leader with its ISR, or follower of which
//! leader) and leader epoch, and
//! deletes the logs of topics the image no longer has (or has re-created under a new id). It is
//! the only writer of the [`Registry`], so request handlers see a topic only once its local logs
//! are open, and `reconciled` tells waiters which image that was.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_format::LeaderEpoch;
use strom_replication::{Assignment, LeaderConfig};
use tokio::sync::watch;

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::BrokerError;
use crate::partition::{IsrMove, Partition, PartitionAssignment};
use crate::quorum::Image;
use crate::topic::{Registry, Topic};

/// How long deletion or shutdown waits for in-flight requests to let go of a partition.
pub(crate) const RECLAIM_PATIENCE: Duration = Duration::from_secs(10);
/// Partition logs opened in parallel when a topic arrives (creating 10,000 is mostly mkdir).
const OPEN_THREADS: usize = 8;

/// What one reconciliation changed, for the caller's follow-up (coordinator, offsets).
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// Topics removed from this node (deleted or re-created).
    pub(crate) removed: Vec<String>,
    /// Committed ISR changes of partitions this node leads: (shrinks, expansions).
    pub(crate) isr_moves: (u64, u64),
}

/// Brings the registry in line with `image`. Blocking (opens and deletes logs).
///
/// Roles wait for this process's own registration (`incarnation`) to be in the image: until
/// then the image may still name this node leader in an epoch its previous incarnation led,
/// whose unflushed tail a crash may have lost while followers kept it. The controller accepts
/// the new incarnation only after fencing the old one, which moves those leaderships to new
/// epochs.
pub(crate) fn reconcile(
    config: &BrokerConfig,
    registry: &Registry,
    image: &Image,
    incarnation: u64,
) -> Reconciled {
    let node = config.node_id;
    let registered =
        image.state.broker(node).is_some_and(|b| b.registration.incarnation == incarnation);
    let mut outcome = Reconciled::default();
    // Names first: holding the registry's `Arc<Topic>`s here would keep the deleted topics
    // alive, and their deletion waits for every holder to let go.
    let stale: Vec<String> = registry
        .topics()
        .iter()
        .filter(|t| image.state.topic(&t.name).is_none_or(|m| m.topic_id != t.topic_id))
        .map(|t| t.name.clone())
        .collect();
    for name in stale {
        if let Some(gone) = registry.remove(&name) {
            delete_topic_logs(gone);
        }
        outcome.removed.push(name);
    }
    for (name, meta) in image.state.topics() {
        let existing = registry.topic(name);
        let config_now = match TopicConfig::resolve(config, &meta.configs) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(topic = %name, error = %e, "topic config invalid; keeping the old one");
                match &existing {
                    Some(t) => t.config.clone(),
                    None => continue,
                }
            }
        };
        let mut partitions: Vec<Option<Arc<Partition>>> = Vec::with_capacity(meta.partitions.len());
        let mut to_open = Vec::new();
        for p in &meta.partitions {
            let local = p.replicas.contains(&node);
            let have = existing
                .as_ref()
                .and_then(|t| t.partitions.get(p.partition as usize).cloned().flatten());
            match (local, have) {
                (true, Some(part)) => partitions.push(Some(part)),
                (true, None) => {
                    to_open.push(p.partition);
                    partitions.push(None);
                }
                (false, _) => partitions.push(None),
            }
        }
        let mut changed = existing
            .as_ref()
            .is_none_or(|t| t.partitions.len() != partitions.len() || t.config != config_now);
        if existing.as_ref().is_some_and(|t| t.config != config_now) {
            // An altered topic config takes effect on the open logs, as in Kafka: no restart.
            let log_config = config_now.log_config();
            for part in partitions.iter().flatten() {
                if let Err(e) = part.log().set_config(log_config.clone()) {
                    tracing::error!(topic = %name, error = %e, "new topic config refused by the log");
                }
            }
        }
        if !to_open.is_empty() {
            for (id, opened) in open_partitions(&config.data_dir, name, &to_open, &config_now) {
                match opened {
                    Ok(part) => partitions[id as usize] = Some(Arc::new(part)),
                    Err(e) => tracing::error!(topic = %name, partition = id, error = %e,
                        "opening partition failed; it stays offline here"),
                }
            }
            changed = true;
        }
        let leader_config = LeaderConfig {
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
            min_insync_replicas: config_now.min_insync_replicas(),
        };
        for p in meta.partitions.iter().filter(|_| registered) {
            if let Some(Some(part)) = partitions.get(p.partition as usize) {
                let moved = part.apply_assignment(&PartitionAssignment {
                    me: node,
                    leader: p.leader,
                    assignment: Assignment {
                        leader_epoch: LeaderEpoch::new(p.leader_epoch),
                        partition_epoch: p.partition_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                    },
                    config: leader_config,
                });
                let (shrinks, expands) = &mut outcome.isr_moves;
                match moved {
                    Some(IsrMove::Shrank) => *shrinks += 1,
                    Some(IsrMove::Expanded) => *expands += 1,
                    Some(IsrMove::Both) => {
                        *shrinks += 1;
                        *expands += 1;
                    }
                    None => {}
                }
            }
        }
        if changed {
            registry.insert(Arc::new(Topic {
                name: name.clone(),
                topic_id: meta.topic_id.clone(),
                config: config_now,
                partitions,
            }));
        }
    }
    outcome
}

/// Opens `ids` of `topic`, several threads at a time.
fn open_partitions(
    data_dir: &Path,
    topic: &str,
    ids: &[i32],
    config: &TopicConfig,
) -> Vec<(i32, Result<Partition, BrokerError>)> {
    let chunk = ids.len().div_ceil(OPEN_THREADS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = ids
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&id| {
                            let log = config.log_config();
                            (id, Partition::open(data_dir, topic, id, log))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    })
}

/// Takes a deleted topic's partitions out of service and deletes their logs.
fn delete_topic_logs(topic: Arc<Topic>) {
    for p in topic.local_partitions() {
        p.mark_deleted();
    }
    let deadline = Instant::now() + RECLAIM_PATIENCE;
    for reclaimed in dismantle(topic, deadline) {
        match reclaimed {
            Ok(p) => {
                let dir = p.dir().to_path_buf();
                if let Err(e) = p.into_log().delete() {
                    tracing::warn!(dir = %dir.display(), error = %e, "deleting log failed");
                    remove_dir(&dir);
                }
            }
            Err(p) => {
                tracing::warn!(
                    partition = p.name(),
                    "partition still in use after {RECLAIM_PATIENCE:?}; removing its files"
                );
                remove_dir(p.dir());
            }
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing directory failed");
    }
}

/// Takes sole ownership of `arc`, waiting until `deadline` for other holders (requests in
/// flight) to drop their clones. Blocking.
pub(crate) fn reclaim<T>(mut arc: Arc<T>, deadline: Instant) -> Result<T, Arc<T>> {
    loop {
        match Arc::try_unwrap(arc) {
            Ok(value) => return Ok(value),
            Err(back) if Instant::now() >= deadline => return Err(back),
            Err(back) => {
                arc = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Takes a topic out of service and returns its local partitions, owned where nobody else
/// holds them any more. Blocking.
pub(crate) fn dismantle(
    topic: Arc<Topic>,
    deadline: Instant,
) -> Vec<Result<Partition, Arc<Partition>>> {
    let partitions = match reclaim(topic, deadline) {
        Ok(topic) => topic.partitions,
        Err(shared) => shared.partitions.clone(),
    };
    partitions.into_iter().flatten().map(|p| reclaim(p, deadline)).collect()
}

/// Runs [`reconcile`] for every new image until shutdown, publishing the applied index of the
/// last image reconciled on `done`.
pub(crate) async fn follow(
    config: Arc<BrokerConfig>,
    registry: Arc<Registry>,
    mut images: watch::Receiver<Arc<Image>>,
    done: watch::Sender<u64>,
    incarnation: u64,
    on_change: impl Fn(Reconciled) + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let on_change = Arc::new(on_change);
    loop {
        let image = images.borrow_and_update().clone();
        let (config2, registry2, on_change2) =
            (config.clone(), registry.clone(), on_change.clone());
        let applied = image.applied;
        let ran = tokio::task::spawn_blocking(move || {
            let outcome = reconcile(&config2, &registry2, &image, incarnation);
            on_change2(outcome);
        })
        .await;
        if let Err(e) = ran {
            tracing::error!(error = %e, "reconciling the metadata image failed");
        }
        done.send_replace(applied);
        tokio::select! {
            changed = images.changed() => if changed.is_err() { break },
            () = crate::broker::stopped(&mut shutdown) => break,
        }
    }
}
