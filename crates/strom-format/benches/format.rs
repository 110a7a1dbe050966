//! Throughput of the batch hot path: build, CRC check and record iteration of 100 x 1 KiB
//! records, uncompressed and with LZ4.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strom_format::{BatchBuilder, Compression, RecordBatch};

const RECORDS: usize = 100;
const VALUE_LEN: usize = 1024;

/// Values that compress like typical JSON-ish payloads rather than like zeros or noise.
fn values() -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let text =
                format!("{{\"id\":{i},\"user\":\"user-{}\",\"amount\":{}}},", i % 17, i * 31);
            text.bytes().cycle().take(VALUE_LEN).collect()
        })
        .collect()
}

fn build(values: &[Vec<u8>], compression: Compression) -> bytes::Bytes {
    let mut b = BatchBuilder::new(compression);
    for (i, v) in values.iter().enumerate() {
        let key = (i as u32).to_be_bytes();
        b.append(1_700_000_000_000 + i as i64, Some(&key), Some(v), &[]);
    }
    b.build().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let values = values();
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Bytes((RECORDS * VALUE_LEN) as u64));
    for compression in [Compression::None, Compression::Lz4] {
        group.bench_function(format!("build/{compression}"), |b| {
            b.iter(|| build(black_box(&values), compression))
        });
        let bytes = build(&values, compression);
        group.bench_function(format!("validate_crc+records/{compression}"), |b| {
            b.iter(|| {
                let Ok(batch) = RecordBatch::new(black_box(bytes.clone())) else { return 0 };
                if batch.validate_crc().is_err() {
                    return 0;
                }
                let Ok(records) = batch.records() else { return 0 };
                records.filter_map(Result::ok).map(|r| r.value.map_or(0, |v| v.len())).sum()
            })
        });
        group.bench_function(format!("roundtrip/{compression}"), |b| {
            b.iter(|| {
                let Ok(batch) = RecordBatch::new(build(black_box(&values), compression)) else {
                    return 0;
                };
                batch.validate_records().map_or(0, |_| batch.size())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
