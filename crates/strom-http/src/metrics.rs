//! `/metrics`: the node's state in the Prometheus (OpenMetrics) text format, through
//! `prometheus-client`. Nothing is registered ahead of time: one [`Collector`] reads the
//! broker's counters and state at every scrape (atomics, the metadata image, the
//! coordinator's in-memory tables, `/proc/self`), so the request paths pay only for their
//! atomic increments. Every metric is listed with its meaning in METRICS.md.
//!
//! Counter names are written without `_total`; the encoder appends it.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use strom_broker::{Broker, HistogramSnapshot, PartitionStats};

use crate::groups::LeaderEnds;

/// A registry whose only collector is the broker's.
pub(crate) fn registry(broker: Arc<Broker>, leader_ends: Arc<LeaderEnds>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector { broker, leader_ends }));
    registry
}

#[derive(Debug)]
struct BrokerCollector {
    broker: Arc<Broker>,
    /// Partition ends for group lag, refreshed by the `/metrics` handler before it encodes.
    leader_ends: Arc<LeaderEnds>,
}

type Labels = Vec<(&'static str, String)>;

/// Writes one counter family.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            // An empty label set would print `name{}`: encode the bare sample instead.
            ConstCounter::new(value).encode(family)?;
            break;
        }
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one gauge family.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            ConstGauge::new(value).encode(family)?;
            break;
        }
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    gauges(encoder, name, help, None, [(Labels::new(), value)])
}

/// Writes one histogram family.
fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, HistogramSnapshot)>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, h) in rows {
        if labels.is_empty() {
            family.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
            break;
        }
        family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum_seconds,
            h.count,
            &h.buckets,
            None,
        )?;
    }
    Ok(())
}

fn topic_label(topic: &str) -> Labels {
    vec![("topic", topic.to_string())]
}

fn partition_labels(p: &PartitionStats) -> Labels {
    vec![("topic", p.topic.clone()), ("partition", p.partition.to_string())]
}

fn to_i64(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let broker = &self.broker;
        let e = &mut encoder;
        let partitions = broker.partition_stats();

        // Traffic per topic (summed over this node's replicas).
        let mut topics: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for p in &partitions {
            let t = topics.entry(p.topic.as_str()).or_default();
            t[0] += p.bytes_in;
            t[1] += p.records_in;
            t[2] += p.bytes_out;
            t[3] += p.records_out;
        }
        let per_topic = |i: usize| topics.iter().map(move |(t, v)| (topic_label(t), v[i]));
        counters(
            e,
            "strom_topic_in",
            "Record bytes appended as leader",
            Some(&Unit::Bytes),
            per_topic(0),
        )?;
        counters(e, "strom_topic_records_in", "Records appended as leader", None, per_topic(1))?;
        counters(
            e,
            "strom_topic_out",
            "Record bytes returned to consumers",
            Some(&Unit::Bytes),
            per_topic(2),
        )?;
        counters(
            e,
            "strom_topic_records_out",
            "Records returned to consumers",
            None,
            per_topic(3),
        )?;

        // Requests.
        let metrics = broker.metrics();
        let latencies = metrics.request_latencies().into_iter().filter(|(_, _, h)| h.count > 0);
        histograms(
            e,
            "strom_request_duration",
            "Time from a request's arrival to its answer, per listener and API family",
            latencies.map(|(l, k, h)| {
                (vec![("listener", l.as_str().to_string()), ("api", k.as_str().to_string())], h)
            }),
        )?;
        counters(
            e,
            "strom_request_errors",
            "Failed produce and fetch partitions, by API and Kafka error name",
            None,
            metrics.errors().into_iter().map(|(k, code, n)| {
                (vec![("api", k.as_str().to_string()), ("error", code.to_string())], n)
            }),
        )?;
        gauges(
            e,
            "strom_connections",
            "Open client and peer connections per listener",
            None,
            metrics
                .connections()
                .into_iter()
                .map(|(l, n)| (vec![("listener", l.as_str().to_string())], to_i64(n))),
        )?;

        // Partitions on this node.
        let rows = |f: fn(&PartitionStats) -> i64| {
            partitions.iter().map(move |p| (partition_labels(p), f(p)))
        };
        gauges(
            e,
            "strom_partition_log_size",
            "Bytes of the partition's log segments",
            Some(&Unit::Bytes),
            rows(|p| to_i64(p.size_bytes)),
        )?;
        gauges(
            e,
            "strom_partition_log_segments",
            "Segments of the partition's log",
            None,
            rows(|p| to_i64(p.segments)),
        )?;
        gauges(
            e,
            "strom_partition_log_start_offset",
            "First offset in the partition's log",
            None,
            rows(|p| p.log_start_offset),
        )?;
        gauges(
            e,
            "strom_partition_log_end_offset",
            "Offset the next append to the partition gets",
            None,
            rows(|p| p.log_end_offset),
        )?;
        gauges(
            e,
            "strom_partition_high_watermark",
            "Offset below which the partition's records are committed",
            None,
            rows(|p| p.high_watermark),
        )?;
        gauges(
            e,
            "strom_partition_leader",
            "1 when this node leads the partition, else 0",
            None,
            rows(|p| i64::from(p.leader)),
        )?;
        gauges(
            e,
            "strom_partition_replicas",
            "Replicas of the partition in the metadata",
            None,
            rows(|p| to_i64(p.replicas)),
        )?;
        gauges(
            e,
            "strom_partition_in_sync_replicas",
            "In-sync replicas of the partition in the metadata",
            None,
            rows(|p| to_i64(p.isr)),
        )?;
        let mut flush = HistogramSnapshot::default();
        for p in &partitions {
            flush.merge(&p.flush);
        }
        if flush.buckets.is_empty() {
            flush.buckets = strom_broker::LATENCY_BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::MAX))
                .map(|b| (b, 0))
                .collect();
        }
        histograms(
            e,
            "strom_log_flush_duration",
            "Scheduled log flushes (fsync) that wrote data",
            [(Labels::new(), flush)],
        )?;

        // This node in the cluster.
        let me = broker.config().node_id;
        let node = broker.describe_nodes().into_iter().find(|n| n.node_id == me);
        let (led, under, offline) = node.map_or((0, 0, 0), |n| {
            (n.leader_partitions, n.under_replicated_partitions, n.offline_partitions)
        });
        gauge(e, "strom_leader_partitions", "Partitions this node leads", to_i64(led))?;
        gauge(
            e,
            "strom_under_replicated_partitions",
            "Partitions this node leads whose ISR is smaller than their replica set",
            to_i64(under),
        )?;
        gauge(
            e,
            "strom_offline_partitions",
            "Partitions with a replica on this node and no leader",
            to_i64(offline),
        )?;
        let (shrinks, expands) = metrics.isr_changes();
        counters(
            e,
            "strom_isr_shrinks",
            "Committed ISR shrinks of partitions this node leads",
            None,
            [(Labels::new(), shrinks)],
        )?;
        counters(
            e,
            "strom_isr_expands",
            "Committed ISR expansions of partitions this node leads",
            None,
            [(Labels::new(), expands)],
        )?;
        let cleaner = metrics.cleaner();
        for (name, help, value) in [
            (
                "strom_log_cleaner_passes",
                "Log cleaner passes over the compacted partitions",
                cleaner.passes,
            ),
            (
                "strom_log_cleaner_segments_cleaned",
                "Segments rewritten by the log cleaner",
                cleaner.segments_cleaned,
            ),
            (
                "strom_log_cleaner_records_read",
                "Records read by the log cleaner",
                cleaner.records_read,
            ),
            (
                "strom_log_cleaner_records_removed",
                "Superseded records and expired tombstones the log cleaner dropped",
                cleaner.records_removed,
            ),
            (
                "strom_log_cleaner_failures",
                "Partition cleanings that failed (the log is left unchanged)",
                cleaner.failures,
            ),
        ] {
            counters(e, name, help, None, [(Labels::new(), value)])?;
        }
        counters(
            e,
            "strom_log_cleaner_freed",
            "Disk bytes given back by the log cleaner",
            Some(&Unit::Bytes),
            [(Labels::new(), cleaner.bytes_freed)],
        )?;
        gauges(
            e,
            "strom_log_cleaner_last_pass_duration",
            "How long the log cleaner's latest pass took",
            Some(&Unit::Other("milliseconds".into())),
            [(Labels::new(), i64::try_from(cleaner.last_pass.as_millis()).unwrap_or(i64::MAX))],
        )?;
        let quorum = broker.quorum_status();
        gauge(
            e,
            "strom_active_controller",
            "1 when this node is the active controller",
            i64::from(quorum.is_controller),
        )?;
        gauge(
            e,
            "strom_controller_id",
            "Node id of the active controller, -1 when unknown",
            i64::from(quorum.controller.unwrap_or(-1)),
        )?;
        gauge(
            e,
            "strom_raft_term",
            "Current Raft term of the metadata quorum",
            to_i64(quorum.term),
        )?;
        gauge(
            e,
            "strom_raft_last_log_index",
            "Index of the last entry in this node's metadata log",
            to_i64(quorum.last_log_index),
        )?;
        gauge(
            e,
            "strom_raft_applied_index",
            "Index of the last committed metadata entry applied here",
            to_i64(quorum.applied_index),
        )?;
        gauge(
            e,
            "strom_ready",
            "1 when /ready answers 200",
            i64::from(broker.readiness().is_ok()),
        )?;

        // Consumer groups this node coordinates.
        let groups = crate::groups::group_lags(broker, &self.leader_ends);
        let group_label = |g: &crate::groups::GroupLag| vec![("group", g.group_id.clone())];
        gauges(
            e,
            "strom_group_members",
            "Members of the consumer group",
            None,
            groups.iter().map(|g| (group_label(g), to_i64(g.members.len()))),
        )?;
        gauges(
            e,
            "strom_group_state",
            "1 for the group's current state",
            None,
            groups
                .iter()
                .map(|g| (vec![("group", g.group_id.clone()), ("state", g.state.clone())], 1)),
        )?;
        let partition_rows = || {
            groups.iter().flat_map(|g| {
                g.partitions.iter().map(move |p| {
                    let labels = vec![
                        ("group", g.group_id.clone()),
                        ("topic", p.topic.clone()),
                        ("partition", p.partition.to_string()),
                    ];
                    (labels, p)
                })
            })
        };
        gauges(
            e,
            "strom_group_committed_offset",
            "The group's committed offset of the partition",
            None,
            partition_rows().map(|(l, p)| (l, p.committed_offset)),
        )?;
        gauges(
            e,
            "strom_group_lag",
            "High watermark minus committed offset (partitions with a replica on this node)",
            None,
            partition_rows().filter_map(|(l, p)| p.lag.map(|lag| (l, lag))),
        )?;
        gauges(
            e,
            "strom_group_lag_sum",
            "Sum of the group's partition lags",
            None,
            groups.iter().map(|g| (group_label(g), g.total_lag)),
        )?;

        // The process.
        let process = crate::process::read();
        if let Some(cpu) = process.cpu_seconds {
            let family = e.encode_descriptor(
                "process_cpu",
                "User and system CPU time",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(family)?;
        }
        if let Some(rss) = process.resident_bytes {
            gauges(
                e,
                "process_resident_memory",
                "Resident memory",
                Some(&Unit::Bytes),
                [(Labels::new(), to_i64(rss))],
            )?;
        }
        if let Some(fds) = process.open_fds {
            gauge(e, "process_open_fds", "Open file descriptors", to_i64(fds))?;
        }
        Ok(())
    }
}
