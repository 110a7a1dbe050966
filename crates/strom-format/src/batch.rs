//! Zero-copy view of one Kafka RecordBatch v2 (magic 2), and the walk over a buffer of them.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset
//!      8     4  batchLength          (bytes after this field)
//!     12     4  partitionLeaderEpoch
//!     16     1  magic (= 2)
//!     17     4  crc                  (CRC-32C of bytes 21..end)
//!     21     2  attributes
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordsCount
//!     61     -  records (possibly compressed)
//! ```
//!
//! `baseOffset` and `partitionLeaderEpoch` lie outside the CRC, which is what lets a leader
//! assign offsets and stamp its epoch without re-encoding or re-checksumming the batch.

use bytes::Bytes;

use crate::{Compression, FormatError, LeaderEpoch, Offset};

/// Bytes of the fixed header before the first record.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// The only magic value Strom accepts.
pub const MAGIC_V2: i8 = 2;
/// Where the CRC-covered region starts.
pub const CRC_START: usize = 21;
/// `producerId` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch from a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// Whether record timestamps were set by the producer or by the broker on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer (`CreateTime`).
    CreateTime,
    /// Overwritten by the broker (`LogAppendTime`).
    LogAppendTime,
}

/// The batch `attributes` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attributes(pub i16);

impl Attributes {
    const COMPRESSION_MASK: i16 = 0x07;
    const TIMESTAMP_TYPE: i16 = 0x08;
    const TRANSACTIONAL: i16 = 0x10;
    const CONTROL: i16 = 0x20;

    /// Attributes of a plain batch with the given codec and `CreateTime` timestamps.
    pub fn new(compression: Compression) -> Self {
        Attributes(compression.id() as i16)
    }

    /// The codec the records are compressed with.
    pub fn compression(self) -> Result<Compression, FormatError> {
        Compression::from_id((self.0 & Self::COMPRESSION_MASK) as u8)
    }

    /// Who set the timestamps.
    pub fn timestamp_type(self) -> TimestampType {
        if self.0 & Self::TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Part of a transaction.
    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }

    /// A control batch (transaction markers), not user data.
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }
}

/// Reads the total size of the batch starting at `buf[0]`, from its header alone.
///
/// Returns `Ok(None)` when fewer than [`LOG_OVERHEAD`] bytes are present (a partial header, as at
/// the end of a fetch response), and an error when the announced length is impossible.
pub fn peek_batch_size(buf: &[u8]) -> Result<Option<usize>, FormatError> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let batch_length = read_i32(buf, BATCH_LENGTH_AT);
    if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(FormatError::Corrupt("batchLength smaller than the batch header"));
    }
    Ok(Some(LOG_OVERHEAD + batch_length as usize))
}

/// One RecordBatch v2 whose header has been checked for shape (length, magic, counts).
///
/// Construction does not check the CRC: call [`RecordBatch::validate_crc`] where bytes come from
/// outside (the network, a disk after a crash). Cloning is cheap: it shares the bytes.
///
/// ```
/// use strom_format::{BatchBuilder, Compression, RecordBatch};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(1_700_000_000_000, Some(b"key".as_slice()), Some(b"value".as_slice()), &[]);
/// let batch = RecordBatch::new(b.build().unwrap()).unwrap();
/// batch.validate_crc().unwrap();
/// assert_eq!(batch.records_count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    buf: Bytes,
}

impl RecordBatch {
    /// Checks the header of a buffer holding exactly one batch.
    pub fn new(buf: Bytes) -> Result<Self, FormatError> {
        let size = match peek_batch_size(&buf)? {
            Some(size) => size,
            None => {
                return Err(FormatError::Truncated {
                    needed: BATCH_HEADER_LEN,
                    available: buf.len(),
                });
            }
        };
        if buf.len() < size.max(BATCH_HEADER_LEN) {
            return Err(FormatError::Truncated { needed: size, available: buf.len() });
        }
        if buf.len() > size {
            return Err(FormatError::Corrupt("bytes after the end of the batch"));
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(FormatError::UnsupportedMagic(magic));
        }
        let batch = RecordBatch { buf };
        if batch.last_offset_delta() < 0 {
            return Err(FormatError::Corrupt("negative lastOffsetDelta"));
        }
        if batch.records_count() < 0 {
            return Err(FormatError::Corrupt("negative recordsCount"));
        }
        batch.attributes().compression()?;
        Ok(batch)
    }

    /// The whole batch, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The whole batch, header included.
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }

    /// Size of the batch in bytes, header included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> Offset {
        Offset::new(read_i64(&self.buf, BASE_OFFSET_AT))
    }

    /// Offset of the last record (`baseOffset + lastOffsetDelta`).
    pub fn last_offset(&self) -> Offset {
        self.base_offset().add(i64::from(self.last_offset_delta()))
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().next()
    }

    /// The epoch of the leader that appended the batch.
    pub fn partition_leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch::new(read_i32(&self.buf, LEADER_EPOCH_AT))
    }

    /// The CRC stored in the header.
    pub fn crc(&self) -> u32 {
        read_i32(&self.buf, CRC_AT) as u32
    }

    /// The CRC-32C of the bytes the header's CRC covers.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.buf[CRC_START..])
    }

    /// Fails when the stored CRC does not match the bytes.
    pub fn validate_crc(&self) -> Result<(), FormatError> {
        let (stored, computed) = (self.crc(), self.compute_crc());
        if stored == computed { Ok(()) } else { Err(FormatError::CrcMismatch { stored, computed }) }
    }

    /// The `attributes` field.
    pub fn attributes(&self) -> Attributes {
        Attributes(read_i16(&self.buf, ATTRIBUTES_AT))
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Compression {
        // `new` rejected unknown codecs, so this cannot fail.
        self.attributes().compression().unwrap_or(Compression::None)
    }

    /// `lastOffsetDelta`.
    pub fn last_offset_delta(&self) -> i32 {
        read_i32(&self.buf, LAST_OFFSET_DELTA_AT)
    }

    /// Timestamp of the first record; the others are deltas from it.
    pub fn base_timestamp(&self) -> i64 {
        read_i64(&self.buf, BASE_TIMESTAMP_AT)
    }

    /// Largest timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        read_i64(&self.buf, MAX_TIMESTAMP_AT)
    }

    /// Idempotent producer id, or -1.
    pub fn producer_id(&self) -> i64 {
        read_i64(&self.buf, PRODUCER_ID_AT)
    }

    /// Idempotent producer epoch, or -1.
    pub fn producer_epoch(&self) -> i16 {
        read_i16(&self.buf, PRODUCER_EPOCH_AT)
    }

    /// Sequence number of the first record, or -1.
    pub fn base_sequence(&self) -> i32 {
        read_i32(&self.buf, BASE_SEQUENCE_AT)
    }

    /// Number of records the header announces.
    pub fn records_count(&self) -> i32 {
        read_i32(&self.buf, RECORDS_COUNT_AT)
    }

    /// The records section as stored (compressed when the batch is).
    pub fn records_payload(&self) -> Bytes {
        self.buf.slice(BATCH_HEADER_LEN..)
    }
}

/// Rewrites `baseOffset` in place. It lies outside the CRC, so the batch stays valid.
///
/// Panics if `buf` is shorter than a batch header; callers hold a checked [`RecordBatch`]'s bytes.
pub fn set_base_offset(buf: &mut [u8], offset: Offset) {
    assert!(buf.len() >= BATCH_HEADER_LEN, "set_base_offset on a buffer shorter than a header");
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&offset.get().to_be_bytes());
}

/// Rewrites `partitionLeaderEpoch` in place. It lies outside the CRC, so the batch stays valid.
///
/// Panics if `buf` is shorter than a batch header.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: LeaderEpoch) {
    assert!(buf.len() >= BATCH_HEADER_LEN, "set_partition_leader_epoch on a short buffer");
    buf[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.get().to_be_bytes());
}

/// Sets the batch's timestamp type and `maxTimestamp` and recomputes the CRC (both fields lie
/// inside it), as Kafka's `setMaxTimestamp` does: a broker stamps `LogAppendTime` batches with
/// its clock (readers then take that as every record's timestamp) and corrects a producer's
/// wrong `maxTimestamp`, which time retention and the time index trust.
///
/// Panics if `buf` is shorter than a batch header.
///
/// ```
/// use strom_format::{set_max_timestamp, BatchBuilder, Compression, RecordBatch, TimestampType};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(5, None, Some(b"v".as_slice()), &[]);
/// let mut buf = b.build().unwrap().to_vec();
/// set_max_timestamp(&mut buf, TimestampType::LogAppendTime, 1_000);
/// let batch = RecordBatch::new(buf.into()).unwrap();
/// batch.validate_crc().unwrap();
/// assert_eq!(batch.attributes().timestamp_type(), TimestampType::LogAppendTime);
/// assert_eq!(batch.records().unwrap().next().unwrap().unwrap().timestamp, 1_000);
/// ```
pub fn set_max_timestamp(buf: &mut [u8], timestamp_type: TimestampType, max_timestamp: i64) {
    assert!(buf.len() >= BATCH_HEADER_LEN, "set_max_timestamp on a short buffer");
    let mut attributes = read_i16(buf, ATTRIBUTES_AT) & !Attributes::TIMESTAMP_TYPE;
    if timestamp_type == TimestampType::LogAppendTime {
        attributes |= Attributes::TIMESTAMP_TYPE;
    }
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites `producerId`, `producerEpoch` and `baseSequence` of the batch at the start of
/// `buf` and recomputes its CRC (those fields lie inside it): an idempotent producer re-stamps a
/// batch it must send under a new producer id.
///
/// ```
/// use strom_format::{BatchBuilder, Compression, RecordBatch, set_producer};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.append(0, None, Some(b"v".as_slice()), &[]);
/// let mut buf = b.build().unwrap().to_vec();
/// set_producer(&mut buf, 9, 1, 40);
/// let batch = RecordBatch::new(buf.into()).unwrap();
/// assert_eq!((batch.producer_id(), batch.producer_epoch(), batch.base_sequence()), (9, 1, 40));
/// batch.validate_crc().unwrap();
/// ```
///
/// Panics if `buf` is shorter than a batch header.
pub fn set_producer(buf: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(buf.len() >= BATCH_HEADER_LEN, "set_producer on a buffer shorter than a header");
    buf[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    buf[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates the batches of a buffer that holds several back to back (a log read, a fetch
/// response, a produce request).
///
/// Stops at the end of the buffer. A trailing partial batch, which Kafka allows at the end of a
/// fetch response, ends the walk without an error; [`Batches::remaining`] tells how many bytes
/// were left. A header that cannot be right (bad length, bad magic) yields an error, after which
/// the iterator is finished.
///
/// ```
/// use strom_format::{BatchBuilder, Batches, Compression};
/// let mut buf = Vec::new();
/// for _ in 0..3 {
///     let mut b = BatchBuilder::new(Compression::None);
///     b.append(0, None, Some(b"v".as_slice()), &[]);
///     buf.extend_from_slice(&b.build().unwrap());
/// }
/// let n = Batches::new(buf.into()).filter(|b| b.is_ok()).count();
/// assert_eq!(n, 3);
/// ```
#[derive(Debug, Clone)]
pub struct Batches {
    buf: Bytes,
    pos: usize,
    failed: bool,
}

impl Batches {
    /// Walks `buf` from its start.
    pub fn new(buf: Bytes) -> Self {
        Batches { buf, pos: 0, failed: false }
    }

    /// Bytes not yet yielded (non-zero at the end means a partial trailing batch).
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Byte position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let size = match peek_batch_size(rest) {
            Ok(Some(size)) if size <= rest.len() => size,
            Ok(_) => return None,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let batch = RecordBatch::new(self.buf.slice(self.pos..self.pos + size));
        match batch {
            Ok(b) => {
                self.pos += size;
                Some(Ok(b))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

pub(crate) fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

pub(crate) fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

pub(crate) fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}
