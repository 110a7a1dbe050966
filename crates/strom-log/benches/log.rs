//! Append and sequential-read throughput of the log with 1 KiB records, 16 per batch.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strom_format::{BatchBuilder, Batches, Compression, Offset};
use strom_log::{FlushPolicy, Log, LogConfig};

const RECORDS_PER_BATCH: usize = 16;
const RECORD_BYTES: usize = 1024;
/// Appends past this size truncate the log (untimed), bounding disk use.
const MAX_LOG_BYTES: u64 = 256 << 20;
/// Size of the log the read benchmark scans.
const READ_LOG_BYTES: usize = 32 << 20;

fn batch() -> Bytes {
    let value = vec![0x5a; RECORD_BYTES];
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..RECORDS_PER_BATCH {
        b.append(1_700_000_000_000 + i as i64, Some(&(i as u64).to_be_bytes()), Some(&value), &[]);
    }
    b.build().expect("build batch")
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 << 20, flush: FlushPolicy::Manual, ..LogConfig::default() }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config()).expect("open");
    let batch = batch();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("16x1KiB_batch_manual_flush", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(log.append(batch.clone()).expect("append"));
            }
            let elapsed = start.elapsed();
            if log.size_bytes() > MAX_LOG_BYTES {
                log.truncate_to(Offset::ZERO).expect("truncate");
            }
            elapsed
        })
    });
    group.finish();
}

fn sequential_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config()).expect("open");
    let batch = batch();
    while (log.size_bytes() as usize) < READ_LOG_BYTES {
        log.append(batch.clone()).expect("append");
    }
    let total = log.size_bytes();
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(total));
    group.bench_function("sequential_1MiB_reads", |b| {
        b.iter(|| {
            let mut next = Offset::ZERO;
            let mut bytes = 0;
            while next < end {
                let read = log.read(next, 1 << 20).expect("read");
                bytes += read.records.len();
                let last = Batches::new(read.records).last().expect("a batch").expect("valid");
                next = last.next_offset();
            }
            black_box(bytes)
        })
    });
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = short();
    targets = append, sequential_read
}
criterion_main!(benches);
