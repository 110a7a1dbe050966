//! The deep check a broker runs on a producer's batch before appending it.
//!
//! Compressed records are validated as a stream: the decoder's output passes through a small
//! buffer one record at a time, so memory stays flat however far a batch expands, and a batch
//! that expands past the caller's limit is refused as soon as it crosses it. Uncompressed
//! records are walked in place. Both use the one record parser of `record.rs`.

use std::io::{BufRead, BufReader, Read};

use crate::compression::decompressor;
use crate::record::parse_record;
use crate::varint::get_varint;
use crate::{Compression, FormatError, RecordBatch};

/// Bytes of decoded records buffered between the decompressor and the record parser.
const STREAM_BUFFER: usize = 16 * 1024;
/// Bytes of a varint at most.
const MAX_VARINT_LEN: usize = 5;

/// What validation learned about a batch's records: the range of their timestamps as the
/// producer set them, so the broker can check them without decoding the batch again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsSummary {
    /// The smallest record timestamp (`baseTimestamp + timestampDelta`).
    pub min_timestamp: i64,
    /// The largest record timestamp.
    pub max_timestamp: i64,
}

impl RecordBatch {
    /// The full check the broker runs on a producer's batch before appending it: the CRC, every
    /// record decodes, the count matches `recordsCount`, offset deltas strictly increase from 0
    /// or more and the last one equals `lastOffsetDelta`. A batch without records is
    /// [`FormatError::Empty`]. Decompresses at most
    /// [`RecordBatch::DEFAULT_MAX_DECOMPRESSED`] bytes; see
    /// [`RecordBatch::validate_records_bounded`].
    ///
    /// ```
    /// use strom_format::{BatchBuilder, Compression, RecordBatch};
    /// let mut b = BatchBuilder::new(Compression::Zstd);
    /// b.append(7, None, Some(b"v".as_slice()), &[]);
    /// b.append(3, None, Some(b"w".as_slice()), &[]);
    /// let summary = RecordBatch::new(b.build().unwrap()).unwrap().validate_records().unwrap();
    /// assert_eq!((summary.min_timestamp, summary.max_timestamp), (3, 7));
    /// ```
    pub fn validate_records(&self) -> Result<RecordsSummary, FormatError> {
        self.validate_records_bounded(Self::DEFAULT_MAX_DECOMPRESSED)
    }

    /// [`RecordBatch::validate_records`], refusing with [`FormatError::TooLarge`] a records
    /// section that decompresses to more than `max_decompressed` bytes. Memory use does not
    /// grow with the decompressed size: records stream through a small buffer.
    ///
    /// ```
    /// use strom_format::{BatchBuilder, Compression, FormatError, RecordBatch};
    /// let mut b = BatchBuilder::new(Compression::Gzip);
    /// b.append(0, None, Some(vec![0u8; 100_000].as_slice()), &[]);
    /// let batch = RecordBatch::new(b.build().unwrap()).unwrap();
    /// assert!(matches!(batch.validate_records_bounded(10_000), Err(FormatError::TooLarge { .. })));
    /// batch.validate_records_bounded(200_000).unwrap();
    /// ```
    pub fn validate_records_bounded(
        &self,
        max_decompressed: usize,
    ) -> Result<RecordsSummary, FormatError> {
        self.validate_crc()?;
        let count = usize::try_from(self.records_count())
            .map_err(|_| FormatError::Corrupt("negative recordsCount"))?;
        if count == 0 {
            return Err(FormatError::Empty);
        }
        let mut check = Check::new(self);
        let payload = self.records_payload();
        match self.compression() {
            Compression::None => {
                if payload.len() > max_decompressed {
                    return Err(FormatError::TooLarge {
                        size: payload.len(),
                        limit: max_decompressed,
                    });
                }
                let mut pos = 0;
                for _ in 0..count {
                    let len = get_varint(&payload, &mut pos)?;
                    let end = record_end(pos, len, payload.len())?;
                    check.record(payload.get(..end).unwrap_or_default(), pos)?;
                    pos = end;
                }
                if pos != payload.len() {
                    return Err(FormatError::Corrupt("bytes after the last record"));
                }
            }
            codec => {
                let cap = u64::try_from(max_decompressed).unwrap_or(u64::MAX).saturating_add(1);
                let stream = decompressor(codec, &payload)?.take(cap);
                let mut stream = Stream {
                    codec,
                    reader: BufReader::with_capacity(STREAM_BUFFER, stream),
                    consumed: 0,
                    limit: max_decompressed,
                };
                let mut body = Vec::new();
                for _ in 0..count {
                    let len = stream.varint()?;
                    let len = usize::try_from(len)
                        .map_err(|_| FormatError::Corrupt("negative record length"))?;
                    stream.exact(len, &mut body)?;
                    check.record(&body, 0)?;
                }
                if stream.more()? {
                    return Err(FormatError::Corrupt("bytes after the last record"));
                }
            }
        }
        check.finish()
    }
}

/// Where a record announced as `len` bytes from `pos` ends, if the section holds it.
fn record_end(pos: usize, len: i32, available: usize) -> Result<usize, FormatError> {
    let len = usize::try_from(len).map_err(|_| FormatError::Corrupt("negative record length"))?;
    pos.checked_add(len)
        .filter(|&end| end <= available)
        .ok_or(FormatError::Truncated { needed: pos.saturating_add(len), available })
}

/// The per-record rules and what they accumulate.
struct Check {
    base_timestamp: i64,
    last_offset_delta: i32,
    prev: Option<i32>,
    min_ts: i64,
    max_ts: i64,
}

impl Check {
    fn new(batch: &RecordBatch) -> Self {
        Check {
            base_timestamp: batch.base_timestamp(),
            last_offset_delta: batch.last_offset_delta(),
            prev: None,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        }
    }

    /// Checks the record whose fields run from `body[pos]` to the end of `body`.
    fn record(&mut self, body: &[u8], pos: usize) -> Result<(), FormatError> {
        let raw = parse_record(body, pos, self.last_offset_delta, |_, _| {})?;
        if self.prev.is_some_and(|p| raw.offset_delta <= p) {
            return Err(FormatError::Corrupt("offset deltas not strictly increasing"));
        }
        self.prev = Some(raw.offset_delta);
        let ts = self.base_timestamp.wrapping_add(raw.timestamp_delta);
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        Ok(())
    }

    fn finish(self) -> Result<RecordsSummary, FormatError> {
        if self.prev != Some(self.last_offset_delta) {
            return Err(FormatError::Corrupt("last offsetDelta differs from lastOffsetDelta"));
        }
        Ok(RecordsSummary { min_timestamp: self.min_ts, max_timestamp: self.max_ts })
    }
}

/// Decompressed records read through a bounded buffer, counting what passed.
struct Stream<R> {
    codec: Compression,
    reader: BufReader<R>,
    consumed: usize,
    limit: usize,
}

impl<R: Read> Stream<R> {
    fn codec_error(codec: Compression, e: std::io::Error) -> FormatError {
        FormatError::Codec { codec: codec.name(), message: e.to_string() }
    }

    fn too_large(&self, size: usize) -> FormatError {
        FormatError::TooLarge { size, limit: self.limit }
    }

    /// Reads one zig-zag varint.
    fn varint(&mut self) -> Result<i32, FormatError> {
        let codec = self.codec;
        let mut bytes = [0u8; MAX_VARINT_LEN];
        for i in 0..MAX_VARINT_LEN {
            let buf = self.reader.fill_buf().map_err(|e| Self::codec_error(codec, e))?;
            let Some(&b) = buf.first() else {
                return Err(FormatError::Truncated {
                    needed: self.consumed + 1,
                    available: self.consumed,
                });
            };
            self.reader.consume(1);
            self.consumed += 1;
            bytes[i] = b;
            if b & 0x80 == 0 {
                let mut pos = 0;
                return get_varint(&bytes[..=i], &mut pos);
            }
        }
        Err(FormatError::Corrupt("varint longer than 5 bytes"))
    }

    /// Reads exactly `len` bytes into `body`, refusing before it allocates past the limit.
    fn exact(&mut self, len: usize, body: &mut Vec<u8>) -> Result<(), FormatError> {
        let end = self.consumed.saturating_add(len);
        if end > self.limit {
            return Err(self.too_large(end));
        }
        let codec = self.codec;
        body.clear();
        let got = (&mut self.reader)
            .take(len as u64)
            .read_to_end(body)
            .map_err(|e| Self::codec_error(codec, e))?;
        self.consumed += got;
        if got < len {
            return Err(FormatError::Truncated { needed: end, available: self.consumed });
        }
        Ok(())
    }

    /// Whether any decoded byte is left (the stream must end with the last record).
    fn more(&mut self) -> Result<bool, FormatError> {
        let codec = self.codec;
        let buf = self.reader.fill_buf().map_err(|e| Self::codec_error(codec, e))?;
        if buf.is_empty() {
            return Ok(false);
        }
        if self.consumed >= self.limit {
            return Err(self.too_large(self.consumed + 1));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchBuilder;
    use proptest::prelude::*;

    /// The codecs this build has (all, with default features).
    fn built() -> Vec<Compression> {
        Compression::ALL.into_iter().filter(|c| c.is_built()).collect()
    }

    fn batch(codec: Compression, records: &[(i64, Vec<u8>)]) -> RecordBatch {
        let mut b = BatchBuilder::new(codec);
        for (ts, value) in records {
            b.append(
                *ts,
                Some(b"k".as_slice()),
                Some(value.as_slice()),
                &[crate::Header::new("h", None)],
            );
        }
        RecordBatch::new(b.build().unwrap()).unwrap()
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_for_every_codec() {
        // 8 MiB of zeros compresses to a few KiB; the limit is crossed long before the end.
        let value = vec![0u8; 8 << 20];
        for codec in built() {
            let b = batch(codec, &[(1, value.clone())]);
            let err = b.validate_records_bounded(1 << 20).unwrap_err();
            assert!(matches!(err, FormatError::TooLarge { .. }), "{codec}: {err}");
            b.validate_records_bounded(9 << 20).unwrap();
        }
    }

    #[test]
    fn truncated_and_trailing_streams_are_errors() {
        for codec in built().into_iter().filter(|c| *c != Compression::None) {
            let good = batch(codec, &[(1, b"a".to_vec()), (2, b"b".to_vec())]);
            // One record fewer than announced: the stream has bytes after the last record.
            let mut bytes = good.as_bytes().to_vec();
            bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
            bytes[23..27].copy_from_slice(&0i32.to_be_bytes());
            let crc = crc32c::crc32c(&bytes[crate::CRC_START..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let short = RecordBatch::new(bytes.into()).unwrap();
            assert!(short.validate_records().is_err(), "{codec}");
            // One record more than the stream holds.
            let mut bytes = good.as_bytes().to_vec();
            bytes[57..61].copy_from_slice(&3i32.to_be_bytes());
            bytes[23..27].copy_from_slice(&2i32.to_be_bytes());
            let crc = crc32c::crc32c(&bytes[crate::CRC_START..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let long = RecordBatch::new(bytes.into()).unwrap();
            assert!(long.validate_records().is_err(), "{codec}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Streaming validation agrees with decoding: same verdict, same timestamps.
        #[test]
        fn validation_agrees_with_decoding(
            codec in prop::sample::select(built()),
            records in prop::collection::vec((0i64..1_000_000, prop::collection::vec(any::<u8>(), 0..300)), 1..20),
        ) {
            let b = batch(codec, &records);
            let summary = b.validate_records().unwrap();
            let decoded: Vec<_> = b.records().unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(summary.min_timestamp, decoded.iter().map(|r| r.timestamp).min().unwrap());
            prop_assert_eq!(summary.max_timestamp, decoded.iter().map(|r| r.timestamp).max().unwrap());
        }

        /// Random bytes in a records section never panic, whatever the codec.
        #[test]
        fn garbage_records_never_panic(
            codec in prop::sample::select(built()),
            garbage in prop::collection::vec(any::<u8>(), 0..2000),
            count in 1i32..50,
        ) {
            let b = batch(codec, &[(1, b"x".to_vec())]);
            let mut bytes = b.as_bytes()[..crate::BATCH_HEADER_LEN].to_vec();
            bytes.extend_from_slice(&garbage);
            let len = i32::try_from(bytes.len() - crate::LOG_OVERHEAD).unwrap();
            bytes[8..12].copy_from_slice(&len.to_be_bytes());
            bytes[57..61].copy_from_slice(&count.to_be_bytes());
            bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
            let crc = crc32c::crc32c(&bytes[crate::CRC_START..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            if let Ok(b) = RecordBatch::new(bytes.into()) {
                let _ = b.validate_records_bounded(1 << 16);
            }
        }
    }
}
