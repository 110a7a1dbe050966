//! Fetch: reading committed records from several partitions with Kafka's long poll. The broker
//! answers once `min_bytes` are available, an error occurs, or `max_wait` passes, and sleeps on
//! the partitions' high-watermark signals in between (no polling).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::future::select_all;
use strom_proto::v1::ErrorCode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::{Broker, fetch_offset, run_blocking};
use crate::error::ApiError;
use crate::partition::Partition;
use crate::types::{FetchParams, FetchPartitionParams, FetchedPartition};

/// Most partitions one fetch may name; more is a malformed request.
pub const MAX_FETCH_PARTITIONS: usize = 10_000;

impl Broker {
    /// Reads from each partition in `params`, long-polling as Kafka does. Answers in the order
    /// of `params.partitions`. Only records below a partition's high watermark are returned;
    /// whole batches, so the first may start before the fetch offset.
    pub async fn fetch(&self, params: FetchParams) -> Vec<FetchedPartition> {
        let fetched = self.fetch_unmetered(params).await;
        for e in fetched.iter().filter_map(|f| f.records.as_ref().err()) {
            self.metrics.count_error(crate::metrics::RequestKind::Fetch, e.code.as_str_name());
        }
        fetched
    }

    async fn fetch_unmetered(&self, params: FetchParams) -> Vec<FetchedPartition> {
        if params.partitions.len() > MAX_FETCH_PARTITIONS {
            let error = ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a fetch may name at most {MAX_FETCH_PARTITIONS} partitions"),
            );
            return params.partitions.iter().map(|_| failed(error.clone())).collect();
        }
        let max_wait = params.max_wait.min(self.config().fetch_max_wait());
        let deadline = Instant::now() + max_wait;
        let max_bytes = match params.max_bytes {
            0 => self.config().fetch_max_bytes,
            n => n.min(self.config().fetch_max_bytes),
        };
        let min_bytes = params.min_bytes;
        let specs: Arc<[FetchPartitionParams]> = params.partitions.into();
        let mut shutdown = self.shutdown_signal();
        loop {
            let partitions: Vec<_> =
                specs.iter().map(|s| self.registry().partition(&s.topic, s.partition)).collect();
            // Subscribed before reading: an append landing between the read and the wait
            // still wakes us. The log sizes taken here let a wake estimate what arrived since.
            let mut signals: Vec<watch::Receiver<_>> =
                partitions.iter().flatten().map(|p| p.subscribe()).collect();
            let sizes: Vec<u64> =
                partitions.iter().map(|p| p.as_ref().map_or(0, |p| p.log().size_bytes())).collect();
            let answer = read_round(specs.clone(), partitions.clone(), max_bytes).await;
            let bytes: usize =
                answer.iter().map(|a| a.records.as_ref().map_or(0, |r| r.len())).sum();
            let failed = answer.iter().any(|a| a.records.is_err());
            if bytes >= min_bytes
                || failed
                || signals.is_empty()
                || Instant::now() >= deadline
                || *shutdown.borrow()
            {
                return answer;
            }
            // Parked (Kafka's DelayedFetch): every wake estimates from the partitions' high
            // watermarks and log sizes, without reading, whether the fetch can complete now;
            // only then (or at the deadline) are the partitions read again, once.
            let _parked = Parked::count(self.parked_fetches_counter());
            loop {
                let appended = select_all(signals.iter_mut().map(|s| Box::pin(s.changed())));
                tokio::select! {
                    _ = appended => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.changed() => break,
                }
                if can_complete(&specs, &partitions, &sizes, &answer, min_bytes) {
                    break;
                }
            }
        }
    }

    /// Fetches parked right now, waiting for data (Kafka's fetch purgatory size). Tests wait
    /// on it to know a long poll is in place before they act.
    pub fn parked_fetches(&self) -> usize {
        self.parked_fetches_counter().load(Ordering::Acquire)
    }
}

/// Whether a parked fetch should read again: some partition changed role or was deleted (the
/// read reports it), or the bytes already read plus what the logs grew by since, counted only
/// for partitions whose high watermark is past the fetch offset, reach `min_bytes`. An
/// estimate: a log grows before its high watermark follows, so a read may still come up short
/// (and the fetch parks again), but it never reads on a wake that cannot complete.
fn can_complete(
    specs: &[FetchPartitionParams],
    partitions: &[Result<Arc<Partition>, ApiError>],
    sizes: &[u64],
    answer: &[FetchedPartition],
    min_bytes: usize,
) -> bool {
    let mut estimate = 0usize;
    for (((spec, p), size), read) in specs.iter().zip(partitions).zip(sizes).zip(answer) {
        let Ok(p) = p else { continue };
        if p.is_deleted() || p.check_leader().is_err() {
            return true;
        }
        if p.check_epoch(spec.current_leader_epoch).is_err() {
            return true;
        }
        let read = read.records.as_ref().map_or(0, Bytes::len);
        estimate = estimate.saturating_add(read);
        let Some(offset) = fetch_offset(spec.fetch_offset) else { return true };
        if p.high_watermark() > offset {
            let grown = p.log().size_bytes().saturating_sub(*size);
            let grown = usize::try_from(grown).unwrap_or(usize::MAX);
            // Data visible where the first read found none: at least a byte is there.
            estimate = estimate.saturating_add(if read == 0 { grown.max(1) } else { grown });
        }
    }
    estimate >= min_bytes.max(1)
}

/// Counts one parked fetch for as long as it lives (also when the fetch is dropped).
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Parked(counter)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn failed(error: ApiError) -> FetchedPartition {
    FetchedPartition { records: Err(error), high_watermark: -1, log_start_offset: -1 }
}

/// Reads every partition once, within the response budget. Runs on the blocking pool.
async fn read_round(
    specs: Arc<[FetchPartitionParams]>,
    partitions: Vec<Result<Arc<Partition>, ApiError>>,
    max_bytes: usize,
) -> Vec<FetchedPartition> {
    let count = partitions.len();
    let round = run_blocking(move || {
        let mut total = 0usize;
        let answer = specs
            .iter()
            .zip(partitions)
            .map(|(spec, partition)| {
                let p = match partition {
                    Ok(p) => p,
                    Err(e) => return failed(e),
                };
                let records = read_one(&p, spec, max_bytes.saturating_sub(total), total == 0);
                if let Ok(r) = &records {
                    total += r.len();
                }
                // Offsets also on errors: an out-of-range consumer needs them to reset.
                FetchedPartition {
                    records,
                    high_watermark: p.high_watermark().get(),
                    log_start_offset: p.log_start_offset().get(),
                }
            })
            .collect();
        Ok(answer)
    });
    match round.await {
        Ok(answer) => answer,
        Err(e) => (0..count).map(|_| failed(e.clone())).collect(),
    }
}

fn read_one(
    p: &Partition,
    spec: &FetchPartitionParams,
    remaining: usize,
    first_data: bool,
) -> Result<Bytes, ApiError> {
    p.check_epoch(spec.current_leader_epoch)?;
    let Some(offset) = fetch_offset(spec.fetch_offset) else {
        return Err(ApiError::new(
            ErrorCode::OffsetOutOfRange,
            format!("{}: negative fetch offset {}", p.name(), spec.fetch_offset),
        ));
    };
    if remaining == 0 {
        return Ok(Bytes::new());
    }
    let limit = match spec.max_bytes {
        0 => remaining,
        n => n.min(remaining),
    };
    let records = p.read(offset, limit)?;
    // The log returns at least one batch. Over the limit that is only allowed for the first
    // data of the response, so a batch larger than the limits cannot wedge a consumer.
    if records.len() > limit && !first_data {
        return Ok(Bytes::new());
    }
    Ok(records)
}
