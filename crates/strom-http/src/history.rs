//! A bounded in-memory history for the console's charts: every sample interval, each group's
//! total lag and each topic's record/byte totals. Ten minutes of samples are kept (at most
//! [`MAX_SAMPLES`] per series), for at most [`crate::groups::MAX_GROUPS`] groups and
//! [`MAX_TOPICS`] topics; series of groups and topics that disappear are dropped. Nothing is
//! persisted: a restart starts an empty chart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use strom_broker::Broker;
use tokio::sync::watch;

use crate::groups::LeaderEnds;

/// How far back the charts reach.
const WINDOW: Duration = Duration::from_secs(600);
/// Most samples one series keeps, whatever the interval.
pub(crate) const MAX_SAMPLES: usize = 600;
/// Most topics whose throughput is tracked.
pub(crate) const MAX_TOPICS: usize = 10_000;

/// One group's lag at one time.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LagSample {
    /// Milliseconds since the Unix epoch.
    pub(crate) t: u64,
    pub(crate) lag: i64,
}

/// A topic's totals at one time (records and bytes appended on this node as leader).
#[derive(Debug, Clone, Copy)]
struct TopicSample {
    t: u64,
    records_in: u64,
    bytes_in: u64,
}

/// Records and bytes per second over the last sample interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Throughput {
    pub(crate) records_per_sec: f64,
    pub(crate) bytes_per_sec: f64,
}

/// The sampled series. Leaf lock: held only to copy or push, never across I/O or `.await`.
#[derive(Debug)]
pub(crate) struct History {
    capacity: usize,
    lags: Mutex<BTreeMap<String, VecDeque<LagSample>>>,
    topics: Mutex<BTreeMap<String, VecDeque<TopicSample>>>,
}

impl History {
    pub(crate) fn new(interval: Duration) -> Self {
        let per_window = WINDOW.as_millis() / interval.as_millis().max(1);
        let capacity = usize::try_from(per_window).unwrap_or(MAX_SAMPLES).clamp(2, MAX_SAMPLES);
        History { capacity, lags: Mutex::new(BTreeMap::new()), topics: Mutex::new(BTreeMap::new()) }
    }

    /// One group's lag samples, oldest first.
    pub(crate) fn lag(&self, group_id: &str) -> Vec<LagSample> {
        self.lags.lock().get(group_id).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// A topic's throughput between its last two samples.
    pub(crate) fn throughput(&self, topic: &str) -> Throughput {
        let topics = self.topics.lock();
        let Some(series) = topics.get(topic) else { return Throughput::default() };
        let (Some(last), Some(before)) = (series.back(), series.iter().rev().nth(1)) else {
            return Throughput::default();
        };
        let seconds = (last.t.saturating_sub(before.t)) as f64 / 1000.0;
        if seconds <= 0.0 {
            return Throughput::default();
        }
        Throughput {
            records_per_sec: last.records_in.saturating_sub(before.records_in) as f64 / seconds,
            bytes_per_sec: last.bytes_in.saturating_sub(before.bytes_in) as f64 / seconds,
        }
    }

    /// Takes one sample of everything.
    pub(crate) fn sample(&self, broker: &Broker, leader_ends: &LeaderEnds) {
        let t = now_ms();
        let groups = crate::groups::group_lags(broker, leader_ends);
        {
            let mut lags = self.lags.lock();
            lags.retain(|id, _| groups.iter().any(|g| &g.group_id == id));
            for g in &groups {
                let series = lags.entry(g.group_id.clone()).or_default();
                push_bounded(series, LagSample { t, lag: g.total_lag }, self.capacity);
            }
        }
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for p in broker.partition_stats() {
            if totals.len() >= MAX_TOPICS && !totals.contains_key(&p.topic) {
                continue;
            }
            let entry = totals.entry(p.topic).or_default();
            entry.0 += p.records_in;
            entry.1 += p.bytes_in;
        }
        let mut topics = self.topics.lock();
        topics.retain(|name, _| totals.contains_key(name));
        for (name, (records_in, bytes_in)) in totals {
            let series = topics.entry(name).or_default();
            push_bounded(series, TopicSample { t, records_in, bytes_in }, self.capacity);
        }
    }
}

fn push_bounded<T>(series: &mut VecDeque<T>, sample: T, capacity: usize) {
    while series.len() >= capacity {
        series.pop_front();
    }
    series.push_back(sample);
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Samples every `interval` until `stopped` turns true.
pub(crate) async fn sample_loop(
    broker: Arc<Broker>,
    history: Arc<History>,
    leader_ends: Arc<LeaderEnds>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                leader_ends.refresh(&broker).await;
                let (broker, history, ends) = (broker.clone(), history.clone(), leader_ends.clone());
                // Reads in-memory state only, but over every partition and group: not on the
                // async workers.
                let _ = tokio::task::spawn_blocking(move || history.sample(&broker, &ends)).await;
            }
            () = turned_true(&mut stopped) => return,
        }
    }
}

/// Completes when the flag turns `true` (or its sender is gone).
pub(crate) async fn turned_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, before the task yields again.
    let _ = flag.wait_for(|on| *on).await.is_ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_ten_minutes_and_never_more_than_the_bound() {
        assert_eq!(History::new(Duration::from_secs(5)).capacity, 120);
        assert_eq!(History::new(Duration::from_millis(1)).capacity, MAX_SAMPLES);
        let mut series = VecDeque::new();
        for i in 0..500 {
            push_bounded(&mut series, i, 120);
        }
        assert_eq!(series.len(), 120);
        assert_eq!(series.front().copied(), Some(380));
    }
}
