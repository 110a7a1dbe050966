//! Kafka's RecordBatch v2 (magic 2), byte for byte: the one record format of Strom, used on the
//! wire of both APIs and on disk.
//!
//! The producer builds batches with [`BatchBuilder`]; the broker checks them as a
//! [`RecordBatch`] (shape on construction, [`RecordBatch::validate_crc`] for the CRC-32C) and
//! assigns offsets with [`set_base_offset`], which lies outside the CRC; consumers decode records
//! with [`RecordBatch::records`]. Pure code: no I/O, no async, no panics on hostile input.
//!
//! ```
//! use strom_format::{BatchBuilder, Compression, Header, RecordBatch};
//!
//! let mut builder = BatchBuilder::new(Compression::Lz4);
//! builder.append(1_700_000_000_000, Some(b"k".as_slice()), Some(b"hello".as_slice()),
//!     &[Header::new("trace", Some(b"1".as_slice()))]);
//! let batch = RecordBatch::new(builder.build().unwrap()).unwrap();
//! batch.validate_crc().unwrap();
//! let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
//! assert_eq!(records[0].value.as_deref(), Some(b"hello".as_slice()));
//! ```

mod batch;
mod builder;
mod compression;
mod error;
mod record;
mod types;
mod validate;
pub mod varint;

pub use batch::{
    Attributes, BATCH_HEADER_LEN, Batches, CRC_START, LOG_OVERHEAD, MAGIC_V2, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE, RecordBatch, TimestampType, peek_batch_size, set_base_offset,
    set_max_timestamp, set_partition_leader_epoch, set_producer,
};
pub use builder::BatchBuilder;
pub use compression::{Compression, UnknownCompressionName};
pub use error::FormatError;
pub use record::{Header, Record, Records};
pub use types::{LeaderEpoch, Offset, PartitionId};
pub use validate::RecordsSummary;
