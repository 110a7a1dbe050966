//! Helpers shared by the integration tests: deterministic batches and whole-log reads.

#![allow(dead_code)]

use bytes::Bytes;
use strom_format::{BatchBuilder, Batches, Compression, Offset, RecordBatch};
use strom_log::{Log, LogError};

/// The value a pattern record at `offset` carries: checkable from the offset alone.
pub fn pattern_value(offset: i64, len: usize) -> Vec<u8> {
    let seed = format!("offset-{offset}-");
    seed.bytes().cycle().take(len.max(seed.len())).collect()
}

/// A batch of `count` pattern records for offsets `first..first+count`, with timestamps
/// `ts(offset)`.
pub fn pattern_batch(first: i64, count: usize, len: usize, ts: impl Fn(i64) -> i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..count as i64 {
        let offset = first + i;
        b.append(ts(offset), Some(&offset.to_be_bytes()), Some(&pattern_value(offset, len)), &[]);
    }
    b.build().expect("build batch")
}

/// A batch with the given record timestamps (values are the index within the batch).
pub fn batch_with_timestamps(timestamps: &[i64]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for (i, ts) in timestamps.iter().enumerate() {
        b.append(*ts, None, Some(format!("v{i}").as_bytes()), &[]);
    }
    b.build().expect("build batch")
}

/// A batch of `count` small records.
pub fn simple_batch(count: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..count {
        b.append(1_000 + i as i64, None, Some(format!("value-{i}").as_bytes()), &[]);
    }
    b.build().expect("build batch")
}

/// Every batch of the log, read front to back with `max_bytes` per read; checks CRCs and that
/// offsets are dense from the log start to the log end.
pub fn read_all(log: &Log, max_bytes: usize) -> Result<Vec<RecordBatch>, LogError> {
    let mut out: Vec<RecordBatch> = Vec::new();
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let read = log.read(next, max_bytes)?;
        assert!(!read.records.is_empty(), "empty read at {next} below end {end}");
        let mut walk = Batches::new(read.records);
        for batch in walk.by_ref() {
            let batch = batch.expect("log returned a malformed batch");
            batch.validate_crc().expect("log returned a batch with a bad CRC");
            if out.is_empty() {
                assert!(batch.base_offset() <= next);
            } else {
                assert_eq!(batch.base_offset(), next, "offsets are dense");
            }
            next = batch.next_offset();
            out.push(batch);
        }
        assert_eq!(walk.remaining(), 0, "reads return whole batches");
    }
    assert_eq!(next, end);
    Ok(out)
}

/// Checks that every record of `batches` follows the pattern.
pub fn assert_pattern(batches: &[RecordBatch]) {
    for batch in batches {
        for record in batch.records().expect("records") {
            let record = record.expect("record");
            let offset = record.offset.get();
            assert_eq!(
                record.key.as_deref(),
                Some(offset.to_be_bytes().as_slice()),
                "key at {offset}"
            );
            let value = record.value.expect("value");
            let expected = pattern_value(offset, value.len());
            assert_eq!(&value[..], &expected[..], "value at {offset}");
        }
    }
}

/// Offsets of every record in `batches`.
pub fn offsets(batches: &[RecordBatch]) -> Vec<Offset> {
    batches
        .iter()
        .flat_map(|b| b.records().expect("records").map(|r| r.expect("record").offset))
        .collect()
}
