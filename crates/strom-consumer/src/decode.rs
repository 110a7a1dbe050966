//! Turns the record bytes of one partition in a fetch response into consumer records at or
//! above the fetch position: skips what lies below it, checks every CRC, and stops at the first
//! corrupt batch without losing the records before it.

use std::sync::Arc;

use bytes::Bytes;
use strom_format::{Batches, FormatError, Offset, PartitionId, RecordBatch, TimestampType};

use crate::ConsumerRecord;

/// What one partition's fetched bytes hold for a consumer at `fetch_offset`.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Records at or above the fetch offset, in offset order.
    pub(crate) records: Vec<ConsumerRecord>,
    /// The position after the last complete batch consumed (or the fetch offset): where the
    /// next fetch starts once every record above has been handed out.
    pub(crate) next_offset: Offset,
    /// The first corrupt batch, and the position it was met at. Records before it are kept.
    pub(crate) error: Option<(Offset, FormatError)>,
    /// Set when the bytes hold nothing but the start of one batch too large for the fetch:
    /// that batch's full size, when its header says.
    pub(crate) oversized: Option<usize>,
    /// Size of the fetched bytes, for bounding what is buffered ahead of the application.
    pub(crate) bytes: usize,
}

/// Decodes `data` (whole RecordBatch v2 slices back to back, possibly ending in a partial one)
/// for a consumer whose position is `fetch_offset`.
pub(crate) fn decode_partition(
    topic: &Arc<str>,
    partition: PartitionId,
    fetch_offset: Offset,
    data: Bytes,
) -> Decoded {
    let bytes = data.len();
    let mut position = fetch_offset;
    let mut records = Vec::new();
    let mut error = None;
    let mut batches = Batches::new(data.clone());
    for item in &mut batches {
        let batch = match item {
            Ok(batch) => batch,
            Err(e) => {
                error = Some((position, e));
                break;
            }
        };
        // The log returns whole batches, so the first may start before the fetch offset.
        if batch.next_offset() <= position {
            continue;
        }
        if let Err(e) = decode_batch(topic, partition, &batch, position, &mut records) {
            error = Some((position, e));
            break;
        }
        position = batch.next_offset();
    }
    let oversized = if records.is_empty() && error.is_none() && position == fetch_offset {
        let rest = data.get(batches.position()..).unwrap_or_default();
        if rest.is_empty() {
            None
        } else {
            match strom_format::peek_batch_size(rest) {
                Ok(size) => Some(size.unwrap_or(strom_format::BATCH_HEADER_LEN)),
                Err(e) => {
                    error = Some((position, e));
                    None
                }
            }
        }
    } else {
        None
    };
    Decoded { records, next_offset: position, error, oversized, bytes }
}

/// Appends the records of `batch` at or above `position` to `out`, all or nothing.
fn decode_batch(
    topic: &Arc<str>,
    partition: PartitionId,
    batch: &RecordBatch,
    position: Offset,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), FormatError> {
    // Offsets near i64::MAX would wrap; no real log gets there, so such a batch is corrupt.
    if batch.base_offset().get() < 0
        || batch.base_offset().get() > i64::MAX - i64::from(i32::MAX) - 1
    {
        return Err(FormatError::Corrupt("base offset out of range"));
    }
    batch.validate_crc()?;
    let attributes = batch.attributes();
    // Transaction markers are not application data; the position still moves past them.
    if attributes.is_control() {
        return Ok(());
    }
    let log_append_time = attributes.timestamp_type() == TimestampType::LogAppendTime;
    let start = out.len();
    // One allocation per batch rather than a doubling series; the header's count is only a
    // hint (bounded by what an uncompressed batch of this size could hold: a record takes at
    // least 7 bytes), so a lying header cannot make this reserve much.
    let hint = usize::try_from(batch.records_count()).unwrap_or(0);
    out.reserve(hint.min(batch.size() / 7 + 1));
    let mut previous: Option<Offset> = None;
    let result = (|| {
        for record in batch.records()? {
            let record = record?;
            if previous.is_some_and(|p| record.offset <= p) {
                return Err(FormatError::Corrupt("record offsets not strictly increasing"));
            }
            previous = Some(record.offset);
            if record.offset < position {
                continue;
            }
            out.push(ConsumerRecord {
                topic: Arc::clone(topic),
                partition,
                offset: record.offset,
                timestamp: if log_append_time { batch.max_timestamp() } else { record.timestamp },
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
        Ok(())
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strom_format::{BatchBuilder, CRC_START, Compression, Header, set_base_offset};

    const TS: i64 = 1_700_000_000_000;

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    /// One batch of `count` records at `base`, values "v<offset>".
    fn batch(base: i64, count: i64, compression: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(compression);
        for i in 0..count {
            let value = format!("v{}", base + i);
            let key = format!("k{}", base + i);
            b.append(TS + i, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
        }
        let mut buf = b.build().unwrap().to_vec();
        set_base_offset(&mut buf, Offset::new(base));
        buf
    }

    /// Batches of the given sizes, back to back from offset 0.
    fn log(sizes: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut base = 0;
        for &n in sizes {
            out.extend_from_slice(&batch(base, n, Compression::None));
            base += n;
        }
        out
    }

    fn offsets(d: &Decoded) -> Vec<i64> {
        d.records.iter().map(|r| r.offset.get()).collect()
    }

    fn decode(fetch: i64, data: Vec<u8>) -> Decoded {
        decode_partition(&topic(), PartitionId::new(0), Offset::new(fetch), Bytes::from(data))
    }

    /// Recomputes the CRC after the test edits a CRC-covered field.
    fn fix_crc(buf: &mut [u8]) {
        let crc = crc32c::crc32c(&buf[CRC_START..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn skips_records_below_the_fetch_offset_inside_the_first_batch() {
        let d = decode(3, log(&[5, 5]));
        assert_eq!(offsets(&d), (3..10).collect::<Vec<_>>());
        assert_eq!(d.next_offset, Offset::new(10));
        assert!(d.error.is_none());
        let first = &d.records[0];
        assert_eq!(first.value.as_deref(), Some(b"v3".as_slice()));
        assert_eq!(first.key.as_deref(), Some(b"k3".as_slice()));
        assert_eq!(first.timestamp, TS + 3);
        assert_eq!(&*first.topic, "t");
    }

    #[test]
    fn skips_whole_batches_below_the_fetch_offset() {
        let d = decode(7, log(&[3, 3, 3]));
        assert_eq!(offsets(&d), vec![7, 8]);
        assert_eq!(d.next_offset, Offset::new(9));
    }

    #[test]
    fn everything_below_the_position_yields_nothing_and_keeps_the_position() {
        let d = decode(9, log(&[3, 3, 3]));
        assert!(d.records.is_empty());
        assert_eq!(d.next_offset, Offset::new(9));
        assert!(d.oversized.is_none() && d.error.is_none());
    }

    #[test]
    fn partial_trailing_batch_is_left_for_the_next_fetch() {
        let mut data = log(&[4]);
        let second = batch(4, 4, Compression::None);
        data.extend_from_slice(&second[..second.len() - 5]);
        let d = decode(0, data);
        assert_eq!(offsets(&d), vec![0, 1, 2, 3]);
        assert_eq!(d.next_offset, Offset::new(4));
        assert!(d.error.is_none());
        assert!(d.oversized.is_none(), "progress was made, so the batch is not oversized");
    }

    #[test]
    fn only_a_partial_batch_reports_its_full_size() {
        let whole = batch(0, 10, Compression::None);
        let d = decode(0, whole[..30].to_vec());
        assert!(d.records.is_empty() && d.error.is_none());
        assert_eq!(d.oversized, Some(whole.len()));
        assert_eq!(d.next_offset, Offset::ZERO);
        // Not even a length field: the size is unknown, but more than a header is needed.
        let d = decode(0, whole[..5].to_vec());
        assert_eq!(d.oversized, Some(strom_format::BATCH_HEADER_LEN));
    }

    #[test]
    fn corrupt_batch_keeps_the_records_before_it_and_stops() {
        let mut data = log(&[3]);
        let mut bad = batch(3, 3, Compression::None);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        data.extend_from_slice(&bad);
        data.extend_from_slice(&batch(6, 3, Compression::None));
        let d = decode(1, data);
        assert_eq!(offsets(&d), vec![1, 2]);
        assert_eq!(d.next_offset, Offset::new(3));
        let (at, e) = d.error.expect("corruption reported");
        assert_eq!(at, Offset::new(3));
        assert!(matches!(e, FormatError::CrcMismatch { .. }), "{e:?}");
    }

    #[test]
    fn corrupt_batch_below_the_position_is_not_checked() {
        // Bytes the consumer already has are none of its business (the broker sent them only
        // because batches are whole).
        let mut bad = batch(0, 3, Compression::None);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bad.extend_from_slice(&batch(3, 2, Compression::None));
        let d = decode(3, bad);
        assert_eq!(offsets(&d), vec![3, 4]);
        assert!(d.error.is_none());
    }

    #[test]
    fn bad_header_is_an_error_not_a_skip() {
        let mut data = log(&[2]);
        let mut bad = batch(2, 2, Compression::None);
        bad[16] = 1; // magic
        data.extend_from_slice(&bad);
        let d = decode(0, data);
        assert_eq!(offsets(&d), vec![0, 1]);
        assert!(matches!(d.error, Some((o, FormatError::UnsupportedMagic(1))) if o.get() == 2));
    }

    #[test]
    fn undecodable_records_drop_the_whole_batch() {
        let mut bad = batch(0, 3, Compression::None);
        // recordsCount claims one more record than the section holds: the first three decode,
        // the fourth does not, and none of the batch may be returned.
        bad[57..61].copy_from_slice(&4i32.to_be_bytes());
        bad[23..27].copy_from_slice(&3i32.to_be_bytes());
        fix_crc(&mut bad);
        let d = decode(0, bad);
        assert!(d.records.is_empty());
        assert!(d.error.is_some());
        assert_eq!(d.next_offset, Offset::ZERO);
    }

    #[test]
    fn control_batches_advance_the_position_without_records() {
        let mut control = batch(0, 2, Compression::None);
        control[21..23].copy_from_slice(&0x20i16.to_be_bytes());
        fix_crc(&mut control);
        control.extend_from_slice(&batch(2, 1, Compression::None));
        let d = decode(0, control);
        assert_eq!(offsets(&d), vec![2]);
        assert_eq!(d.next_offset, Offset::new(3));
    }

    #[test]
    fn log_append_time_batches_report_the_broker_timestamp() {
        let mut b = batch(0, 2, Compression::None);
        b[21..23].copy_from_slice(&0x08i16.to_be_bytes());
        b[35..43].copy_from_slice(&(TS + 1000).to_be_bytes());
        fix_crc(&mut b);
        let d = decode(0, b);
        assert!(d.records.iter().all(|r| r.timestamp == TS + 1000));
    }

    #[test]
    fn headers_and_null_fields_survive() {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(
            TS,
            None,
            None,
            &[Header::new("h", Some(b"x".as_slice())), Header::new("n", None)],
        );
        let d = decode(0, b.build().unwrap().to_vec());
        let r = &d.records[0];
        assert_eq!((r.key.clone(), r.value.clone()), (None, None));
        assert_eq!(
            r.headers,
            vec![Header::new("h", Some(b"x".as_slice())), Header::new("n", None)]
        );
    }

    #[test]
    fn compressed_batches_decode() {
        for codec in Compression::ALL {
            let mut data = batch(0, 50, codec);
            data.extend_from_slice(&batch(50, 50, codec));
            let d = decode(25, data);
            assert_eq!(offsets(&d), (25..100).collect::<Vec<_>>(), "{codec:?}");
            assert_eq!(d.records[0].value.as_deref(), Some(b"v25".as_slice()));
        }
    }

    proptest! {
        /// Whatever the batch boundaries, the fetch position and where the response is cut,
        /// the records returned are exactly the offsets from the position up to the last
        /// complete batch: none below it, none skipped, in order.
        #[test]
        fn returns_exactly_the_offsets_from_the_position(
            sizes in proptest::collection::vec(1i64..20, 1..8),
            fetch_frac in 0.0f64..1.0,
            cut_frac in 0.0f64..1.0,
        ) {
            let data = log(&sizes);
            let total: i64 = sizes.iter().sum();
            let fetch = ((total as f64) * fetch_frac) as i64;
            let cut = ((data.len() as f64) * cut_frac) as usize;
            let mut complete_end = 0i64;
            let mut byte_end = 0usize;
            let mut base = 0;
            for &n in &sizes {
                byte_end += batch(base, n, Compression::None).len();
                base += n;
                if byte_end <= cut {
                    complete_end = base;
                }
            }
            let d = decode(fetch, data[..cut].to_vec());
            prop_assert!(d.error.is_none());
            let want: Vec<i64> = (fetch..complete_end.max(fetch)).collect();
            prop_assert_eq!(offsets(&d), want);
            prop_assert_eq!(d.next_offset.get(), complete_end.max(fetch));
        }
    }
}
