//! The broker's own instrumentation: counters the request paths bump (atomics only, no map
//! lookup or lock on the hot path) and the snapshots an exporter reads at scrape time
//! ([`Broker::partition_stats`], [`Broker::quorum_status`], [`Broker::readiness`]).
//!
//! No metrics library lives here: the HTTP crate (`strom-http`) turns these numbers into the
//! Prometheus text format. Counters only ever grow; a partition's counters start at zero when
//! its replica is opened on this node (a restart or a re-created topic resets them, which
//! Prometheus' `rate()` tolerates).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use strom_format::Offset;

use crate::broker::Broker;
use crate::partition::Partition;

/// Upper bounds (seconds) of the latency histograms' buckets; the last bucket is `+Inf`.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with fixed buckets, lock-free to observe.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); index `LATENCY_BUCKETS.len()` is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A point-in-time copy of a `Histogram`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations in this bucket)`, not cumulative, ending with
    /// `f64::MAX`, the `+Inf` bucket (as `prometheus-client` marks it).
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot =
            LATENCY_BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Copies the current values (each field read once; a concurrent observation may be
    /// counted in some fields and not yet in others, which a scrape tolerates).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = LATENCY_BUCKETS.iter().copied().chain(std::iter::once(f64::MAX));
        HistogramSnapshot {
            buckets: bounds
                .zip(self.buckets.iter())
                .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl HistogramSnapshot {
    /// Adds another snapshot's counts into this one (same buckets).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.iter().map(|&(b, _)| (b, 0)).collect();
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }
}

/// Which front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Listener {
    /// The gRPC listener (clients and peers).
    Grpc,
    /// The Kafka protocol listener.
    Kafka,
}

impl Listener {
    /// Every listener, in label order.
    pub const ALL: [Listener; 2] = [Listener::Grpc, Listener::Kafka];

    /// The `listener` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Grpc => "grpc",
            Listener::Kafka => "kafka",
        }
    }
}

/// The request families metrics are kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// Produce.
    Produce,
    /// Consumer fetch.
    Fetch,
    /// ListOffsets.
    ListOffsets,
    /// Metadata, DescribeCluster, ApiVersions and other cluster reads.
    Metadata,
    /// Group membership, offset commit/fetch, coordinator lookup.
    Group,
    /// Topic and config administration.
    Admin,
    /// Node-to-node replication (follower fetch, ISR changes, controlled shutdown).
    Replication,
    /// Node-to-node metadata quorum (Raft, heartbeats).
    Quorum,
    /// Anything else.
    Other,
}

impl RequestKind {
    /// Every kind, in label order.
    pub const ALL: [RequestKind; 9] = [
        RequestKind::Produce,
        RequestKind::Fetch,
        RequestKind::ListOffsets,
        RequestKind::Metadata,
        RequestKind::Group,
        RequestKind::Admin,
        RequestKind::Replication,
        RequestKind::Quorum,
        RequestKind::Other,
    ];

    /// The `api` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Produce => "produce",
            RequestKind::Fetch => "fetch",
            RequestKind::ListOffsets => "list_offsets",
            RequestKind::Metadata => "metadata",
            RequestKind::Group => "group",
            RequestKind::Admin => "admin",
            RequestKind::Replication => "replication",
            RequestKind::Quorum => "quorum",
            RequestKind::Other => "other",
        }
    }

    /// The family of a gRPC method path (`/strom.v1.Broker/Produce`).
    pub fn from_grpc_path(path: &str) -> RequestKind {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or("");
        let method = parts.next().unwrap_or("");
        match (service, method) {
            ("strom.v1.Broker", "Produce") => RequestKind::Produce,
            ("strom.v1.Broker", "Fetch") => RequestKind::Fetch,
            ("strom.v1.Broker", "ListOffsets") => RequestKind::ListOffsets,
            ("strom.v1.Admin", "Metadata" | "DescribeCluster") => RequestKind::Metadata,
            ("strom.v1.Admin", _) => RequestKind::Admin,
            ("strom.v1.Group", _) => RequestKind::Group,
            ("strom.v1.Replication", _) => RequestKind::Replication,
            ("strom.v1.Quorum", _) => RequestKind::Quorum,
            _ => RequestKind::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests of one family through one listener.
#[derive(Debug, Default)]
struct RequestStats {
    latency: Histogram,
}

/// Node-wide counters, shared by every request path.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    requests: [[RequestStats; RequestKind::ALL.len()]; Listener::ALL.len()],
    /// Errors by (family, Kafka error name): only touched when a request fails.
    errors: Mutex<BTreeMap<(RequestKind, &'static str), u64>>,
    isr_shrinks: AtomicU64,
    isr_expands: AtomicU64,
    cleaner: Mutex<CleanerTotals>,
    grpc_connections: Arc<AtomicUsize>,
    kafka_connections: AtomicUsize,
}

impl BrokerMetrics {
    /// Records one answered request and how long it took.
    pub fn observe_request(&self, listener: Listener, kind: RequestKind, elapsed: Duration) {
        self.requests[listener as usize][kind.index()].latency.observe(elapsed);
    }

    /// Counts a failed produce or fetch (or any family) by its error name.
    pub fn count_error(&self, kind: RequestKind, code: &'static str) {
        *self.errors.lock().entry((kind, code)).or_insert(0) += 1;
    }

    /// Latency histograms per listener and family (families never seen are included).
    pub fn request_latencies(&self) -> Vec<(Listener, RequestKind, HistogramSnapshot)> {
        let mut out = Vec::new();
        for listener in Listener::ALL {
            for kind in RequestKind::ALL {
                let snapshot = self.requests[listener as usize][kind.index()].latency.snapshot();
                out.push((listener, kind, snapshot));
            }
        }
        out
    }

    /// Errors so far by family and error name (`NOT_LEADER_OR_FOLLOWER`, ...).
    pub fn errors(&self) -> Vec<(RequestKind, &'static str, u64)> {
        self.errors.lock().iter().map(|(&(k, c), &n)| (k, c, n)).collect()
    }

    /// Committed ISR shrinks and expansions of partitions this node led: `(shrinks, expands)`.
    pub fn isr_changes(&self) -> (u64, u64) {
        (self.isr_shrinks.load(Ordering::Relaxed), self.isr_expands.load(Ordering::Relaxed))
    }

    pub(crate) fn count_isr_moves(&self, (shrinks, expands): (u64, u64)) {
        self.isr_shrinks.fetch_add(shrinks, Ordering::Relaxed);
        self.isr_expands.fetch_add(expands, Ordering::Relaxed);
    }

    /// What the log cleaner has done since start.
    pub fn cleaner(&self) -> CleanerTotals {
        *self.cleaner.lock()
    }

    pub(crate) fn count_cleaner_pass(
        &self,
        pass: &crate::log_cleaner::CleanerPass,
        took: Duration,
    ) {
        let mut c = self.cleaner.lock();
        c.passes += 1;
        c.segments_cleaned += pass.segments as u64;
        c.records_read += pass.records_read;
        c.records_removed += pass.records_read.saturating_sub(pass.records_kept);
        c.bytes_freed += pass.bytes_freed;
        c.failures += pass.failures as u64;
        c.last_pass = took;
    }

    /// The count of open gRPC connections, as the connection limiter keeps it.
    pub(crate) fn grpc_connection_counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.grpc_connections)
    }

    /// Open connections per listener.
    pub fn connections(&self) -> Vec<(Listener, usize)> {
        vec![
            (Listener::Grpc, self.grpc_connections.load(Ordering::Relaxed)),
            (Listener::Kafka, self.kafka_connections.load(Ordering::Relaxed)),
        ]
    }

    /// Counts a Kafka connection as open until the guard drops.
    pub fn kafka_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.kafka_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }
}

/// The log cleaner's work since the broker started (Kafka's `kafka.log:type=LogCleaner`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanerTotals {
    /// Passes over the compacted partitions, including those with nothing to clean.
    pub passes: u64,
    /// Segments rewritten.
    pub segments_cleaned: u64,
    /// Records read by the cleaner.
    pub records_read: u64,
    /// Records dropped: superseded values and expired tombstones.
    pub records_removed: u64,
    /// Disk bytes given back by cleaning.
    pub bytes_freed: u64,
    /// Partition cleanings that failed (the log is left unchanged).
    pub failures: u64,
    /// How long the latest pass took (Kafka's `max-clean-time-secs` looks at the same).
    pub last_pass: Duration,
}

/// One open Kafka connection, uncounted on drop.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<BrokerMetrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.kafka_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Traffic counters of one partition replica, bumped by its produce and fetch paths.
#[derive(Debug, Default)]
pub(crate) struct PartitionCounters {
    bytes_in: AtomicU64,
    records_in: AtomicU64,
    bytes_out: AtomicU64,
    records_out: AtomicU64,
    flush: Histogram,
}

impl PartitionCounters {
    /// A leader append of `bytes` holding offsets `first..=last`.
    pub(crate) fn appended(&self, bytes: usize, first: Offset, last: Offset) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        let records = (last.get() - first.get() + 1).max(0);
        self.records_in.fetch_add(records as u64, Ordering::Relaxed);
    }

    /// A consumer read from `from` that returned `bytes` ending before offset `next`.
    pub(crate) fn read(&self, bytes: usize, from: Offset, next: Option<Offset>) {
        if bytes == 0 {
            return;
        }
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        // Offsets are dense, so the records handed out are those from `from` (the first batch
        // may start below it; the consumer drops those) up to the end of the last batch.
        if let Some(next) = next {
            let records = (next.get() - from.get()).max(0);
            self.records_out.fetch_add(records as u64, Ordering::Relaxed);
        }
    }

    /// A scheduled flush that wrote something to stable storage.
    pub(crate) fn flushed(&self, elapsed: Duration) {
        self.flush.observe(elapsed);
    }
}

/// One partition replica on this node, as a scrape sees it.
#[derive(Debug, Clone)]
pub struct PartitionStats {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Whether this node leads it now.
    pub leader: bool,
    /// Record bytes appended as leader.
    pub bytes_in: u64,
    /// Records appended as leader.
    pub records_in: u64,
    /// Record bytes returned to consumers.
    pub bytes_out: u64,
    /// Records returned to consumers.
    pub records_out: u64,
    /// Bytes of the log on disk (segments).
    pub size_bytes: u64,
    /// Segments of the log.
    pub segments: u64,
    /// First offset in the log.
    pub log_start_offset: i64,
    /// Offset the next append gets.
    pub log_end_offset: i64,
    /// The high watermark.
    pub high_watermark: i64,
    /// Replicas in the metadata.
    pub replicas: usize,
    /// In-sync replicas in the metadata.
    pub isr: usize,
    /// Scheduled flush durations.
    pub flush: HistogramSnapshot,
}

/// The metadata quorum as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The active controller, if known.
    pub controller: Option<i32>,
    /// Whether this node is the active controller.
    pub is_controller: bool,
    /// The current Raft term.
    pub term: u64,
    /// Index of the last entry in this node's Raft log.
    pub last_log_index: u64,
    /// Index of the last committed entry applied to the metadata image here.
    pub applied_index: u64,
}

/// A tower layer over the gRPC server that times every call by method family.
#[derive(Debug, Clone)]
pub(crate) struct MetricsLayer(pub(crate) Arc<BrokerMetrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: Arc::clone(&self.0) }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<BrokerMetrics>,
}

impl<S, B> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let kind = RequestKind::from_grpc_path(request.uri().path());
        let started = std::time::Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            metrics.observe_request(Listener::Grpc, kind, started.elapsed());
            result
        })
    }
}

impl Broker {
    /// The node's counters.
    pub fn metrics(&self) -> &Arc<BrokerMetrics> {
        &self.metrics
    }

    /// Every partition replica open on this node, with its counters and log gauges. Reads
    /// atomics and the metadata image only: no I/O, no lock held for long.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        let image = self.image();
        self.registry()
            .partitions()
            .iter()
            .map(|p| {
                let (replicas, isr) = image
                    .state
                    .partition(p.topic(), p.index())
                    .map_or((0, 0), |m| (m.replicas.len(), m.isr.len()));
                stats_of(p, replicas, isr)
            })
            .collect()
    }

    /// The metadata quorum: controller, Raft term, log and applied indexes.
    pub fn quorum_status(&self) -> QuorumStatus {
        let mut status = self.quorum_log().raft_status();
        status.controller = self.controller().id;
        status.applied_index = status.applied_index.max(self.image().applied);
        status
    }

    /// `Ok` when this node serves: it is registered and unfenced in the committed metadata,
    /// has opened the replicas of the image it applied, and a controller is known. Otherwise
    /// why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if !self.is_serving() {
            return Err("recovering: not caught up with the metadata quorum since the start".into());
        }
        let image = self.image();
        let me = self.config().node_id;
        match image.state.broker(me) {
            None => return Err(format!("node {me} is not registered in the metadata yet")),
            Some(b) if b.fenced => return Err(format!("node {me} is fenced")),
            Some(_) => {}
        }
        if self.controller().id.is_none() {
            return Err("no active controller known".into());
        }
        let reconciled = self.reconciled_index();
        if reconciled < image.applied {
            return Err(format!(
                "replicas opened up to metadata index {reconciled}, applied {}",
                image.applied
            ));
        }
        Ok(())
    }
}

fn stats_of(p: &Partition, replicas: usize, isr: usize) -> PartitionStats {
    let c = p.counters();
    let log = p.log();
    PartitionStats {
        topic: p.topic().to_string(),
        partition: p.index(),
        leader: p.is_leader(),
        bytes_in: c.bytes_in.load(Ordering::Relaxed),
        records_in: c.records_in.load(Ordering::Relaxed),
        bytes_out: c.bytes_out.load(Ordering::Relaxed),
        records_out: c.records_out.load(Ordering::Relaxed),
        size_bytes: log.size_bytes(),
        segments: log.segment_count() as u64,
        log_start_offset: log.log_start_offset().get(),
        log_end_offset: log.log_end_offset().get(),
        high_watermark: p.high_watermark().get(),
        replicas,
        isr,
        flush: c.flush.snapshot(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_puts_each_observation_in_its_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[3], (0.005, 1));
        assert_eq!(s.buckets.last().copied(), Some((f64::MAX, 1)));
        assert!((s.sum_seconds - 60.0033).abs() < 1e-6);
    }

    #[test]
    fn grpc_paths_map_to_request_families() {
        assert_eq!(RequestKind::from_grpc_path("/strom.v1.Broker/Produce"), RequestKind::Produce);
        assert_eq!(RequestKind::from_grpc_path("/strom.v1.Broker/Fetch"), RequestKind::Fetch);
        assert_eq!(RequestKind::from_grpc_path("/strom.v1.Group/JoinGroup"), RequestKind::Group);
        assert_eq!(RequestKind::from_grpc_path("/strom.v1.Admin/CreateTopics"), RequestKind::Admin);
        assert_eq!(RequestKind::from_grpc_path("/strom.v1.Admin/Metadata"), RequestKind::Metadata);
        assert_eq!(
            RequestKind::from_grpc_path("/strom.v1.Replication/ReplicaFetch"),
            RequestKind::Replication
        );
        assert_eq!(RequestKind::from_grpc_path("/nonsense"), RequestKind::Other);
    }

    #[test]
    fn partition_counters_count_records_from_offsets() {
        let c = PartitionCounters::default();
        c.appended(100, Offset::new(10), Offset::new(14));
        c.read(80, Offset::new(12), Some(Offset::new(15)));
        c.read(0, Offset::new(15), None);
        assert_eq!(c.records_in.load(Ordering::Relaxed), 5);
        assert_eq!(c.bytes_in.load(Ordering::Relaxed), 100);
        assert_eq!(c.records_out.load(Ordering::Relaxed), 3);
        assert_eq!(c.bytes_out.load(Ordering::Relaxed), 80);
    }
}
