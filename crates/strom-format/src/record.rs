//! The records inside a batch: decoding them (zero-copy slices of one buffer), with the one
//! record parser that validation (`validate.rs`) shares.
//!
//! Record layout (Kafka's `DefaultRecord`), varints zig-zag encoded:
//!
//! ```text
//! length: varint            bytes after this field
//! attributes: int8          unused, 0
//! timestampDelta: varlong   from the batch's baseTimestamp
//! offsetDelta: varint       from the batch's baseOffset
//! keyLength: varint         -1 for a null key
//! key: bytes
//! valueLength: varint       -1 for a null value
//! value: bytes
//! headerCount: varint
//! headers: [headerKeyLength: varint, headerKey: utf-8, headerValueLength: varint, value: bytes]
//! ```

use std::ops::Range;

use bytes::Bytes;

use crate::compression;
use crate::varint::{get_varint, get_varlong};
use crate::{Compression, FormatError, Offset, RecordBatch, TimestampType};

/// Smallest possible encoded record: a one-byte length, the attributes, and one byte each for
/// timestamp delta, offset delta, key length, value length and header count.
pub(crate) const MIN_RECORD_LEN: usize = 7;

/// A record header: a UTF-8 key and an optional value. Keys may repeat within a record.
///
/// ```
/// use strom_format::Header;
/// let h = Header::new("trace-id", Some(b"abc".as_slice()));
/// assert_eq!(h.key, "trace-id");
/// assert_eq!(h.value.as_deref(), Some(b"abc".as_slice()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value; `None` is Kafka's null, distinct from an empty value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a copy of `value`.
    pub fn new(key: impl Into<String>, value: Option<&[u8]>) -> Self {
        Header { key: key.into(), value: value.map(Bytes::copy_from_slice) }
    }
}

/// One decoded record, with its absolute offset and timestamp.
///
/// `key`, `value` and header values share the batch's (decompressed) buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// `baseOffset + offsetDelta`.
    pub offset: Offset,
    /// `baseTimestamp + timestampDelta`, in milliseconds since the epoch.
    pub timestamp: i64,
    /// The key; `None` is Kafka's null key, distinct from an empty one.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone, distinct from an empty value.
    pub value: Option<Bytes>,
    /// The headers, in the order they were written.
    pub headers: Vec<Header>,
}

impl RecordBatch {
    /// The default cap on the decompressed size of a batch's records section.
    ///
    /// Kafka's largest default message size is 1 MiB, so 64 MiB only stops abuse.
    pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 << 20;

    /// Decodes the records, decompressing at most [`RecordBatch::DEFAULT_MAX_DECOMPRESSED`]
    /// bytes. Does not check the CRC; see [`RecordBatch::validate_crc`].
    pub fn records(&self) -> Result<Records, FormatError> {
        self.records_with_limit(Self::DEFAULT_MAX_DECOMPRESSED)
    }

    /// Decodes the records, failing with [`FormatError::TooLarge`] when the records section
    /// decompresses to more than `max_decompressed` bytes.
    ///
    /// The records section is decompressed once, here; the records then slice that buffer (or,
    /// uncompressed, the batch itself) without copying.
    pub fn records_with_limit(&self, max_decompressed: usize) -> Result<Records, FormatError> {
        let count = usize::try_from(self.records_count())
            .map_err(|_| FormatError::Corrupt("negative recordsCount"))?;
        let payload = self.records_payload();
        let data = match self.compression() {
            Compression::None => payload,
            // An empty batch (what compaction leaves) may carry no compressed stream at all.
            _ if count == 0 && payload.is_empty() => payload,
            codec => Bytes::from(compression::decompress(codec, &payload, max_decompressed)?),
        };
        if count == 0 && !data.is_empty() {
            return Err(FormatError::Corrupt("records section of a batch without records"));
        }
        if count.saturating_mul(MIN_RECORD_LEN) > data.len() {
            return Err(FormatError::Corrupt(
                "recordsCount exceeds what the records section holds",
            ));
        }
        Ok(Records {
            data,
            pos: 0,
            remaining: count,
            base_offset: self.base_offset().get(),
            base_timestamp: self.base_timestamp(),
            log_append_time: (self.attributes().timestamp_type() == TimestampType::LogAppendTime)
                .then(|| self.max_timestamp()),
            last_offset_delta: self.last_offset_delta(),
            done: false,
        })
    }
}

/// The records of one batch, in order; see [`RecordBatch::records`].
///
/// Yields exactly `recordsCount` records from a well-formed batch. On malformed input it yields
/// one error and then ends.
#[derive(Debug, Clone)]
pub struct Records {
    data: Bytes,
    pos: usize,
    remaining: usize,
    base_offset: i64,
    base_timestamp: i64,
    /// Every record's timestamp when the broker stamped the batch (`LogAppendTime`).
    log_append_time: Option<i64>,
    last_offset_delta: i32,
    done: bool,
}

impl Records {
    /// Records not yet yielded, if the batch is well-formed.
    pub fn remaining(&self) -> usize {
        if self.done { 0 } else { self.remaining }
    }

    /// The next record with its raw offset delta (0 on error).
    fn next_raw(&mut self) -> Option<(i32, Result<Record, FormatError>)> {
        if self.done || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_one().and_then(|(delta, record)| {
            if self.remaining == 0 && self.pos != self.data.len() {
                return Err(FormatError::Corrupt("bytes after the last record"));
            }
            Ok((delta, record))
        });
        match result {
            Ok((delta, record)) => Some((delta, Ok(record))),
            Err(e) => {
                self.done = true;
                Some((0, Err(e)))
            }
        }
    }

    fn decode_one(&mut self) -> Result<(i32, Record), FormatError> {
        let data = &self.data;
        let mut pos = self.pos;
        let len = get_varint(data, &mut pos)?;
        let len =
            usize::try_from(len).map_err(|_| FormatError::Corrupt("negative record length"))?;
        let end = pos.checked_add(len).filter(|&end| end <= data.len()).ok_or(
            FormatError::Truncated { needed: pos.saturating_add(len), available: data.len() },
        )?;
        // Decoding reads from `body`, so a field that runs past the record's length is an error
        // instead of a silent read of the next record.
        let body = data.get(..end).unwrap_or_default();
        let mut headers = Vec::new();
        let raw = parse_record(body, pos, self.last_offset_delta, |key, value| {
            headers.push(Header { key: key.to_owned(), value: value.map(|r| data.slice(r)) });
        })?;
        self.pos = end;
        let record = Record {
            offset: Offset::new(self.base_offset.wrapping_add(i64::from(raw.offset_delta))),
            timestamp: self
                .log_append_time
                .unwrap_or_else(|| self.base_timestamp.wrapping_add(raw.timestamp_delta)),
            key: raw.key.map(|r| data.slice(r)),
            value: raw.value.map(|r| data.slice(r)),
            headers,
        };
        Ok((raw.offset_delta, record))
    }
}

/// One record's fields as positions in the buffer it was parsed from.
#[derive(Debug)]
pub(crate) struct RawRecord {
    pub(crate) offset_delta: i32,
    pub(crate) timestamp_delta: i64,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
}

/// Parses the record whose fields run from `body[pos]` (just after its length prefix) to the
/// end of `body`, calling `header` with each header's key (checked UTF-8) and value position.
/// The one record parser: [`Records`] decodes with it and validation streams through it.
pub(crate) fn parse_record(
    body: &[u8],
    mut pos: usize,
    last_offset_delta: i32,
    mut header: impl FnMut(&str, Option<Range<usize>>),
) -> Result<RawRecord, FormatError> {
    let end = body.len();
    let truncated = || FormatError::Truncated { needed: end + 1, available: end };
    let _attributes = *body.get(pos).ok_or_else(truncated)?;
    pos += 1;
    let timestamp_delta = get_varlong(body, &mut pos)?;
    let offset_delta = get_varint(body, &mut pos)?;
    if offset_delta < 0 {
        return Err(FormatError::Corrupt("negative offsetDelta"));
    }
    if offset_delta > last_offset_delta {
        return Err(FormatError::Corrupt("offsetDelta beyond lastOffsetDelta"));
    }
    let key = read_bytes(body, &mut pos)?;
    let value = read_bytes(body, &mut pos)?;
    let header_count = get_varint(body, &mut pos)?;
    let header_count =
        usize::try_from(header_count).map_err(|_| FormatError::Corrupt("negative header count"))?;
    // Every header takes at least two bytes, which bounds the work by the input.
    if header_count > (end - pos) / 2 {
        return Err(FormatError::Corrupt("header count exceeds the record length"));
    }
    for _ in 0..header_count {
        let key_len = get_varint(body, &mut pos)?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| FormatError::Corrupt("negative header key length"))?;
        let key = body.get(pos..pos.saturating_add(key_len)).ok_or(FormatError::Truncated {
            needed: pos.saturating_add(key_len),
            available: end,
        })?;
        let key = std::str::from_utf8(key)
            .map_err(|_| FormatError::Corrupt("header key is not UTF-8"))?;
        pos += key_len;
        let value = read_bytes(body, &mut pos)?;
        header(key, value);
    }
    if pos != end {
        return Err(FormatError::Corrupt("record length does not match its fields"));
    }
    Ok(RawRecord { offset_delta, timestamp_delta, key, value })
}

/// Reads a varint-length-prefixed byte string (-1 for null) from `body`, as its position.
fn read_bytes(body: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, FormatError> {
    let len = get_varint(body, pos)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| FormatError::Corrupt("negative length"))?;
    let start = *pos;
    let end =
        start.checked_add(len).filter(|&end| end <= body.len()).ok_or(FormatError::Truncated {
            needed: start.saturating_add(len),
            available: body.len(),
        })?;
    *pos = end;
    Ok(Some(start..end))
}

impl Iterator for Records {
    type Item = Result<Record, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw().map(|(_, r)| r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining()))
    }
}

impl std::iter::FusedIterator for Records {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BATCH_HEADER_LEN, BatchBuilder, CRC_START};

    /// One record (timestamp 1000, key "k", value "v"), encoded by hand from Kafka's
    /// `DefaultRecordBatch`/`DefaultRecord` layout; the CRC-32C was computed independently.
    const KNOWN: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 0, // baseOffset
        0, 0, 0, 58, // batchLength: 70 - 12
        0xff, 0xff, 0xff, 0xff, // partitionLeaderEpoch: -1
        2,    // magic
        0x71, 0x6a, 0x61, 0x89, // crc
        0, 0, // attributes: no compression, CreateTime
        0, 0, 0, 0, // lastOffsetDelta
        0, 0, 0, 0, 0, 0, 0x03, 0xe8, // baseTimestamp: 1000
        0, 0, 0, 0, 0, 0, 0x03, 0xe8, // maxTimestamp: 1000
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId: -1
        0xff, 0xff, // producerEpoch: -1
        0xff, 0xff, 0xff, 0xff, // baseSequence: -1
        0, 0, 0, 1,    // recordsCount
        0x10, // record length: 8
        0,    // attributes
        0,    // timestampDelta
        0,    // offsetDelta
        0x02, b'k', // key
        0x02, b'v', // value
        0,    // header count
    ];

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn known_batch_bytes() {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(1000, Some(b"k"), Some(b"v"), &[]);
        assert_eq!(b.estimated_size(), KNOWN.len());
        let built = b.build().unwrap();
        assert_eq!(&built[..], KNOWN);

        let batch = RecordBatch::new(Bytes::from_static(KNOWN)).unwrap();
        batch.validate_records().unwrap();
        assert_eq!(batch.crc(), 0x716a_6189);
        let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            records,
            [Record {
                offset: Offset::ZERO,
                timestamp: 1000,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: vec![],
            }]
        );
    }

    #[test]
    fn uncompressed_records_share_the_batch_buffer() {
        let batch = RecordBatch::new(Bytes::from_static(KNOWN)).unwrap();
        let record = batch.records().unwrap().next().unwrap().unwrap();
        let value = record.value.unwrap();
        let range = KNOWN.as_ptr_range();
        assert!(range.contains(&value.as_ptr()));
    }

    /// A batch around a hand-made records section, with a correct CRC.
    fn batch_of(records: &[u8], count: i32, last_offset_delta: i32) -> RecordBatch {
        let mut buf = KNOWN[..BATCH_HEADER_LEN].to_vec();
        buf.extend_from_slice(records);
        let len = (buf.len() - 12) as i32;
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        buf[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        buf[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[CRC_START..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::new(buf.into()).unwrap()
    }

    fn first_error(batch: &RecordBatch) -> FormatError {
        match batch.records() {
            Err(e) => e,
            Ok(records) => {
                let results: Vec<_> = records.collect();
                assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1, "{results:?}");
                assert!(results.last().unwrap().is_err(), "the error ends the iteration");
                results.into_iter().find_map(Result::err).unwrap()
            }
        }
    }

    /// `0x0e`-long body of one record with offset delta `delta` and one header.
    fn record(delta: u8, header_key: &[u8]) -> Vec<u8> {
        let mut r = vec![0, 0, delta * 2, 0x01, 0x01, 0x02];
        r.push(header_key.len() as u8 * 2);
        r.extend_from_slice(header_key);
        r.push(0x01);
        let mut out = vec![(r.len() * 2) as u8];
        out.extend(r);
        out
    }

    #[test]
    fn hand_made_records_decode() {
        let mut section = record(0, b"a");
        section.extend(record(1, b"b"));
        let batch = batch_of(&section, 2, 1);
        batch.validate_records().unwrap();
        let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[1].offset, records[1].key.as_ref(), records[1].value.as_ref()),
            (Offset::new(1), None, None)
        );
        assert_eq!(records[1].headers, [Header { key: "b".into(), value: None }]);
    }

    #[test]
    fn malformed_records_are_errors() {
        let ok = record(0, b"a");
        let corrupt = |e: FormatError| matches!(e, FormatError::Corrupt(_));
        let truncated = |e: FormatError| matches!(e, FormatError::Truncated { .. });

        // recordsCount larger than the section can hold.
        assert!(corrupt(first_error(&batch_of(&ok, 3, 2))));
        // Fewer records than announced, but a plausible section size.
        let mut two = ok.clone();
        two.extend_from_slice(&[0; 7]);
        assert!(first_error(&batch_of(&two, 2, 1)) != FormatError::Empty);
        // Trailing bytes after the last record.
        let mut trailing = ok.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert!(corrupt(first_error(&batch_of(&trailing, 1, 0))));
        // Record length past the end of the section.
        let mut long = ok.clone();
        long[0] += 2;
        assert!(truncated(first_error(&batch_of(&long, 1, 0))));
        // Record length shorter than its fields.
        let mut short = ok.clone();
        short[0] -= 2;
        short.push(0);
        assert!(first_error(&batch_of(&short, 1, 0)) != FormatError::Empty);
        // Record length longer than its fields.
        let mut padded = ok.clone();
        padded[0] += 2;
        padded.push(0);
        assert!(corrupt(first_error(&batch_of(&padded, 1, 0))));
        // Negative record length.
        let mut negative = ok.clone();
        negative[0] = 0x01;
        assert!(corrupt(first_error(&batch_of(&negative, 1, 0))));
        // offsetDelta beyond lastOffsetDelta.
        assert!(corrupt(first_error(&batch_of(&record(1, b"a"), 1, 0))));
        // Key length -2.
        let mut key = ok.clone();
        key[4] = 0x03;
        assert!(corrupt(first_error(&batch_of(&key, 1, 0))));
        // Negative header count.
        let mut headers = ok.clone();
        headers[6] = 0x01;
        assert!(corrupt(first_error(&batch_of(&headers, 1, 0))));
        // Header key not UTF-8.
        assert!(corrupt(first_error(&batch_of(&record(0, &[0xff]), 1, 0))));
        // Negative header key length.
        let mut header_key = ok.clone();
        header_key[7] = 0x01;
        assert!(corrupt(first_error(&batch_of(&header_key, 1, 0))));
    }

    #[test]
    fn validate_records_checks_offset_deltas() {
        // Repeated offset delta.
        let mut section = record(0, b"a");
        section.extend(record(0, b"b"));
        assert!(matches!(
            batch_of(&section, 2, 1).validate_records(),
            Err(FormatError::Corrupt(_))
        ));
        // Last delta below lastOffsetDelta (gaps are allowed, as compaction leaves them).
        let mut section = record(0, b"a");
        section.extend(record(2, b"b"));
        batch_of(&section, 2, 2).validate_records().unwrap();
        assert!(matches!(
            batch_of(&section, 2, 3).validate_records(),
            Err(FormatError::Corrupt(_))
        ));
        // Decreasing deltas.
        let mut section = record(2, b"a");
        section.extend(record(1, b"b"));
        assert!(batch_of(&section, 2, 2).validate_records().is_err());
        // No records at all.
        assert!(matches!(batch_of(&record(0, b"a"), 0, 0).records(), Err(FormatError::Corrupt(_))));
        let empty = batch_of(&[], 0, 0);
        assert_eq!(empty.records().unwrap().count(), 0);
        assert_eq!(empty.validate_records(), Err(FormatError::Empty));
        // A CRC mismatch comes first.
        let mut buf = KNOWN.to_vec();
        buf[69] = 1;
        let batch = RecordBatch::new(buf.into()).unwrap();
        assert!(matches!(batch.validate_records(), Err(FormatError::CrcMismatch { .. })));
    }
}
