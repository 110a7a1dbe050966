//! Building a RecordBatch v2 on the producer side: records are encoded straight into one
//! buffer, then compressed and wrapped in the batch header with its CRC-32C.

use bytes::Bytes;

use crate::batch::{BATCH_HEADER_LEN, CRC_START, LOG_OVERHEAD, MAGIC_V2};
use crate::batch::{NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE};
use crate::compression;
use crate::record::Header;
use crate::varint::{put_varint, put_varlong, varint_len, varlong_len};
use crate::{Compression, FormatError, LeaderEpoch};

/// The largest batch the format can describe: `batchLength` is an `i32`.
const MAX_BATCH_LEN: usize = i32::MAX as usize + LOG_OVERHEAD;

/// Accumulates records into one RecordBatch v2.
///
/// The batch gets base offset 0 (the leader assigns the real one), partition leader epoch -1,
/// `CreateTime` timestamps, offset deltas 0, 1, 2, ... and, as Kafka's Java client does, the first
/// record's timestamp as `baseTimestamp` (later records may be older: deltas can be negative).
///
/// ```
/// use strom_format::{BatchBuilder, Compression, Header, RecordBatch};
/// let mut b = BatchBuilder::new(Compression::Gzip).with_producer(7, 0, 42);
/// b.append(1_000, Some(b"k".as_slice()), Some(b"v1".as_slice()), &[]);
/// b.append(1_005, None, None, &[Header::new("h", None)]);
/// assert_eq!(b.len(), 2);
/// let batch = RecordBatch::new(b.build().unwrap()).unwrap();
/// assert_eq!((batch.base_timestamp(), batch.max_timestamp()), (1_000, 1_005));
/// assert_eq!((batch.producer_id(), batch.base_sequence()), (7, 42));
/// assert_eq!(batch.records().unwrap().count(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    /// A zeroed header followed by the uncompressed records.
    buf: Vec<u8>,
    count: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Set when an append could not be encoded; `build` reports it.
    error: Option<FormatError>,
}

impl BatchBuilder {
    /// An empty batch whose records section will be compressed with `compression`.
    pub fn new(compression: Compression) -> Self {
        Self::with_buffer(compression, Vec::new())
    }

    /// An empty batch like [`BatchBuilder::new`], built in `buf` (cleared first) so a producer
    /// can reuse the buffer of a batch that was already sent: no allocation and no page faults
    /// on fresh memory when `buf` has room for the batch. Without compression,
    /// [`BatchBuilder::build`] returns this very buffer.
    ///
    /// ```
    /// use strom_format::{BatchBuilder, Compression};
    /// let mut b = BatchBuilder::with_buffer(Compression::None, Vec::with_capacity(16 * 1024));
    /// b.append(1_000, None, Some(b"v".as_slice()), &[]);
    /// assert_eq!(b.build().unwrap().len(), 61 + 8);
    /// ```
    pub fn with_buffer(compression: Compression, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            compression,
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            error: None,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// The codec the batch will be compressed with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Appends a record with offset delta [`BatchBuilder::len`].
    ///
    /// A record that would push the batch past what the format can hold (2 GiB) is not added
    /// and makes [`BatchBuilder::build`] fail with [`FormatError::TooLarge`]; producers close
    /// batches far earlier using [`BatchBuilder::estimated_size`].
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.error.is_some() {
            return;
        }
        let Ok(offset_delta) = i32::try_from(self.count) else {
            self.error = Some(FormatError::Corrupt("more than i32::MAX records in one batch"));
            return;
        };
        let base_timestamp = if self.count == 0 { timestamp_ms } else { self.base_timestamp };
        // Java's client computes the delta in wrapping `long` arithmetic too.
        let timestamp_delta = timestamp_ms.wrapping_sub(base_timestamp);

        let mut body = 1usize
            .saturating_add(varlong_len(timestamp_delta))
            .saturating_add(varint_len(offset_delta))
            .saturating_add(field_len(key))
            .saturating_add(field_len(value))
            .saturating_add(varint_len(clamp_len(headers.len())));
        for h in headers {
            body = body
                .saturating_add(varint_len(clamp_len(h.key.len())))
                .saturating_add(h.key.len())
                .saturating_add(field_len(h.value.as_deref()));
        }
        let Ok(body_len) = i32::try_from(body) else {
            self.error = Some(FormatError::TooLarge { size: body, limit: i32::MAX as usize });
            return;
        };
        // The body bounds every length inside it, so all of them fit an i32 from here on.
        let total = self.buf.len().saturating_add(varint_len(body_len)).saturating_add(body);
        if total > MAX_BATCH_LEN {
            self.error = Some(FormatError::TooLarge { size: total, limit: MAX_BATCH_LEN });
            return;
        }

        self.buf.reserve(total - self.buf.len());
        put_varint(&mut self.buf, body_len);
        self.buf.push(0); // record attributes: unused
        put_varlong(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_field(&mut self.buf, key);
        put_field(&mut self.buf, value);
        put_varint(&mut self.buf, clamp_len(headers.len()));
        for h in headers {
            put_varint(&mut self.buf, clamp_len(h.key.len()));
            self.buf.extend_from_slice(h.key.as_bytes());
            put_field(&mut self.buf, h.value.as_deref());
        }
        debug_assert_eq!(self.buf.len(), total);

        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        self.count += 1;
    }

    /// Records appended so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the batch so far before compression, header included: what Kafka's `batch.size`
    /// is compared with.
    pub fn estimated_size(&self) -> usize {
        self.buf.len()
    }

    /// Compresses the records and writes the header and CRC.
    ///
    /// Fails with [`FormatError::Empty`] when no record was appended, with
    /// [`FormatError::TooLarge`] when an append overflowed the format's limits, and with
    /// [`FormatError::Codec`] when the codec fails.
    pub fn build(self) -> Result<Bytes, FormatError> {
        self.build_pooled(Vec::new()).map(|(batch, _)| batch)
    }

    /// [`BatchBuilder::build`] for a producer that pools its buffers. A compressed batch is
    /// written into `spare` (cleared first; it grows only if too small), and the builder's own
    /// buffer, which held the uncompressed records, comes back as the second value for the
    /// next batch. Without compression the batch is the builder's buffer and `spare` comes
    /// back unused. Either way no buffer is allocated when the two given have room.
    ///
    /// ```
    /// use strom_format::{BatchBuilder, Compression, RecordBatch};
    /// let mut b = BatchBuilder::with_buffer(Compression::Lz4, Vec::with_capacity(4096));
    /// b.append(1_000, None, Some([7u8; 1000].as_slice()), &[]);
    /// let (batch, records_buf) = b.build_pooled(Vec::with_capacity(4096)).unwrap();
    /// assert_eq!(records_buf.capacity(), 4096);
    /// assert_eq!(RecordBatch::new(batch).unwrap().records().unwrap().count(), 1);
    /// ```
    pub fn build_pooled(self, mut spare: Vec<u8>) -> Result<(Bytes, Vec<u8>), FormatError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.count == 0 {
            return Err(FormatError::Empty);
        }
        let (mut out, back) = match self.compression {
            Compression::None => (self.buf, spare),
            codec => {
                let records = self.buf.get(BATCH_HEADER_LEN..).unwrap_or_default();
                spare.clear();
                spare.reserve(BATCH_HEADER_LEN + records.len() / 2 + 64);
                spare.resize(BATCH_HEADER_LEN, 0);
                compression::compress(codec, records, &mut spare)?;
                (spare, self.buf)
            }
        };
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| FormatError::TooLarge { size: out.len(), limit: MAX_BATCH_LEN })?;
        let last_offset_delta = i32::try_from(self.count - 1).unwrap_or(i32::MAX);
        let records_count = i32::try_from(self.count).unwrap_or(i32::MAX);

        let mut header = [0u8; BATCH_HEADER_LEN];
        let mut w = HeaderWriter { buf: &mut header, pos: 0 };
        w.put(&0i64.to_be_bytes()); // baseOffset: the leader assigns it
        w.put(&batch_length.to_be_bytes());
        w.put(&LeaderEpoch::UNKNOWN.get().to_be_bytes());
        w.put(&MAGIC_V2.to_be_bytes());
        w.put(&0u32.to_be_bytes()); // crc, filled in below
        w.put(&i16::from(self.compression.id()).to_be_bytes());
        w.put(&last_offset_delta.to_be_bytes());
        w.put(&self.base_timestamp.to_be_bytes());
        w.put(&self.max_timestamp.to_be_bytes());
        w.put(&self.producer_id.to_be_bytes());
        w.put(&self.producer_epoch.to_be_bytes());
        w.put(&self.base_sequence.to_be_bytes());
        w.put(&records_count.to_be_bytes());
        debug_assert_eq!(w.pos, BATCH_HEADER_LEN);

        if let Some(h) = out.get_mut(..BATCH_HEADER_LEN) {
            h.copy_from_slice(&header);
        }
        let crc = crc32c::crc32c(out.get(CRC_START..).unwrap_or_default());
        if let Some(c) = out.get_mut(CRC_START - 4..CRC_START) {
            c.copy_from_slice(&crc.to_be_bytes());
        }
        Ok((Bytes::from(out), back))
    }
}

/// Sequential writes into the fixed-size header.
struct HeaderWriter<'a> {
    buf: &'a mut [u8; BATCH_HEADER_LEN],
    pos: usize,
}

impl HeaderWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

/// Lengths are checked against `i32::MAX` through the record length before they are written.
fn clamp_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn field_len(field: Option<&[u8]>) -> usize {
    match field {
        None => 1,
        Some(b) => varint_len(clamp_len(b.len())).saturating_add(b.len()),
    }
}

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, clamp_len(b.len()));
            out.extend_from_slice(b);
        }
    }
}
