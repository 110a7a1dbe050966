//! The broker's log cleaner: every `log_cleaner_backoff_ms`, one pass of `strom_log`'s
//! cleaner over each local partition of a compacted topic (`cleanup.policy` with `compact`),
//! on the blocking pool, bounded by the broker's `log_cleaner_*` limits.
//!
//! A partition is cleaned only below its high watermark (no transactions yet, so that is also
//! the last stable offset): a follower never cleans what its leader might still truncate, and
//! a consumer never sees the cleaned and uncleaned versions of an offset both. Passes run one
//! at a time (the task awaits each), so the dedupe buffer is allocated once at most.

use std::sync::Arc;
use std::time::Duration;

use strom_log::CleanerLimits;
use tokio::sync::watch;

use crate::broker::stopped;
use crate::config::BrokerConfig;
use crate::metrics::BrokerMetrics;
use crate::topic::Registry;

/// What one pass over every compacted partition did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanerPass {
    /// Partitions whose log was cleaned.
    pub partitions: usize,
    /// Segments rewritten.
    pub segments: usize,
    /// Records read by the cleaner.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Bytes of the rewritten segments before cleaning, less their size after: what the pass
    /// gave back to the disk.
    pub bytes_freed: u64,
    /// Partitions whose cleaning failed (their logs are unchanged; the next pass retries).
    pub failures: usize,
}

/// The cleaner limits of `config`.
pub(crate) fn limits(config: &BrokerConfig) -> CleanerLimits {
    CleanerLimits::new(
        usize::try_from(config.log_cleaner_dedupe_buffer_size).unwrap_or(usize::MAX),
        Some(config.log_cleaner_io_max_bytes_per_second).filter(|r| *r > 0),
    )
}

/// The cleaner task: a pass every `backoff` until shutdown.
pub(crate) async fn run(
    registry: Arc<Registry>,
    metrics: Arc<BrokerMetrics>,
    limits: CleanerLimits,
    backoff: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval(backoff);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => { clean_all(&registry, &metrics, &limits).await; }
            () = stopped(&mut shutdown) => break,
        }
    }
}

/// One pass over every local partition of a compacted topic, counted in `metrics`.
pub(crate) async fn clean_all(
    registry: &Registry,
    metrics: &BrokerMetrics,
    limits: &CleanerLimits,
) -> CleanerPass {
    let partitions = registry.partitions();
    let limits = limits.clone();
    let pass = tokio::task::spawn_blocking(move || {
        let mut total = CleanerPass::default();
        for p in partitions {
            if p.is_deleted() || !p.log().config().compact {
                continue;
            }
            match p.log().clean(p.high_watermark(), &limits) {
                Ok(stats) if stats.segments_cleaned > 0 => {
                    total.partitions += 1;
                    total.segments += stats.segments_cleaned;
                    total.records_read += stats.records_read;
                    total.records_kept += stats.records_kept;
                    total.bytes_freed += stats.bytes_before.saturating_sub(stats.bytes_after);
                }
                Ok(_) => {}
                Err(e) => {
                    total.failures += 1;
                    // The log is unchanged (a pass swaps segments in only when complete); the
                    // next pass tries again.
                    tracing::error!(partition = p.name(), error = %e, "log cleaning failed");
                }
            }
        }
        total
    });
    let started = std::time::Instant::now();
    let total = match pass.await {
        Ok(total) => total,
        Err(e) => {
            tracing::error!(error = %e, "log cleaner task failed");
            CleanerPass { failures: 1, ..CleanerPass::default() }
        }
    };
    metrics.count_cleaner_pass(&total, started.elapsed());
    total
}
