//! The embeddable, durable partition log of Strom: Kafka's log (segments, sparse offset and
//! time indexes, crash recovery, retention), as a synchronous library with no async runtime.
//!
//! A [`Log`] is one directory. Records are Kafka RecordBatch v2 bytes ([`strom_format`]),
//! stored exactly as appended except for the base offset (and optionally the leader epoch),
//! which the leader assigns by rewriting fields outside the CRC.
//!
//! ```
//! use strom_format::{Batches, BatchBuilder, Compression, Offset};
//! use strom_log::{FlushPolicy, Log, LogConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = LogConfig { flush: FlushPolicy::EveryAppend, ..LogConfig::default() };
//! let log = Log::open(dir.path(), config).unwrap();
//!
//! let mut batch = BatchBuilder::new(Compression::Lz4);
//! batch.append(1_700_000_000_000, Some(b"k".as_slice()), Some(b"v".as_slice()), &[]);
//! let info = log.append(batch.build().unwrap()).unwrap();
//! assert_eq!(info.first_offset, Offset::ZERO);
//! assert_eq!(log.flushed_offset(), Offset::new(1)); // EveryAppend: already on disk
//!
//! let read = log.read(Offset::ZERO, 1 << 20).unwrap();
//! for batch in Batches::new(read.records) {
//!     for record in batch.unwrap().records().unwrap() {
//!         let record = record.unwrap();
//!         assert_eq!(record.key.as_deref(), Some(b"k".as_slice()));
//!     }
//! }
//! log.close().unwrap();
//! ```
//!
//! # Files
//!
//! ```text
//! 00000000000000000000.log        batches back to back, first offset 0
//! 00000000000000000000.index      sparse: (relative offset u32, file position u32)
//! 00000000000000000000.timeindex  sparse: (largest timestamp so far i64, relative offset u32)
//! 00000000000000052133.log        the next segment, first offset 52133 ...
//! recovery-point                  offset below which everything was fsynced
//! leader-epoch-checkpoint         leader epochs and the offsets they began at (Kafka's format)
//! 00000000000000052133.snapshot   producer state of every batch below 52133 (idempotence)
//! .clean-shutdown                 present only while the log is closed cleanly
//! ```
//!
//! # Durability
//!
//! What is on stable storage when a call returns:
//!
//! - [`Log::append`] (and the epoch and replica variants): the batches are in the operating
//!   system's page cache and visible to readers. They survive a crash of the process, but
//!   survive power loss only under [`FlushPolicy::EveryAppend`], or once
//!   [`Log::flushed_offset`] has passed them (a flush by the policy, by [`Log::flush`], or by
//!   a segment roll, which always fsyncs the segment it closes).
//! - [`Log::flush`] and [`Log::close`]: every record appended before the call, and the indexes.
//! - [`Log::truncate_to`], [`Log::restart_at`] and [`Log::enforce_retention`]: the truncation
//!   or deletion, directory included; removed records never come back after a crash.
//!
//! After power loss, the log holds at least every record below the last flushed offset, and
//! possibly more: every record it keeps has a valid CRC and the offsets stay dense.
//!
//! # Recovery
//!
//! [`Log::open`] removes the clean-shutdown marker. Without one (a crash), it scans every
//! segment from the one holding the recovery point to the end, checks every batch (header
//! shape, CRC, contiguous offsets), cuts the file at the first torn or corrupt batch, deletes
//! later segments and rebuilds the indexes. With one, it checks the active segment's tail (the
//! batches after its last index entry). Missing or inconsistent indexes are rebuilt from their
//! segment. Corruption found later, in data that was already flushed, is never served: reads
//! of it fail with [`LogError::Corrupt`]. No file content makes open or read panic.
//!
//! # Leader epochs
//!
//! The log keeps Kafka's leader-epoch cache (KIP-101/KIP-279): for every leader epoch found in
//! its batches (`partitionLeaderEpoch`, -1 meaning none), the offset it began at
//! ([`Log::epoch_entries`], [`Log::end_offset_for_epoch`], which answers a follower's
//! OffsetForLeaderEpoch). Invariant: epochs strictly increase and start offsets never decrease,
//! and the entries say exactly what the batches between the log start and end say. Appends
//! that start a newer epoch make its entry durable before writing the batches, an older epoch
//! is refused ([`LogError::EpochRegression`]), truncation drops entries after its cut, and
//! retention and [`Log::restart_at`] move or clear them; open drops entries a crash left
//! beyond the log end and rebuilds the file from batch headers when it is missing or corrupt.
//!
//! # Idempotent producers
//!
//! Batches with a producer id (>= 0) are checked on the leader path under the writer lock
//! ([`producer_state`], Kafka 4's rules): a retry of one of the producer's last 5 batches
//! writes nothing and returns the original offsets ([`AppendInfo::duplicate`]); a sequence gap
//! is [`LogError::OutOfOrderSequence`], an older epoch [`LogError::InvalidProducerEpoch`].
//! Replicated appends and recovery rebuild the same state without checks. The state is
//! snapshotted at every roll and on close; open loads the latest snapshot at or below the log
//! end and replays the batches after it; truncation deletes snapshots above the cut and
//! rebuilds the same way. Producers idle for [`LogConfig::producer_id_expiration_ms`] are
//! forgotten. Batches without a producer id cost one header read.
//!
//! # Storage
//!
//! Every file-system call goes through a [`Storage`] (and the [`StorageFile`]s it opens):
//! [`OsStorage`], the operating system's, unless the log is opened with
//! [`Log::open_with_storage`]. With the cargo feature `sim`, `SimStorage` is an in-memory,
//! seeded file system that loses what was not fsynced on a simulated power cut, tears the
//! last write, and fails writes or fsyncs on demand: the crash tests run the log on it.
//!
//! # Concurrency
//!
//! [`Log`] is `Send + Sync` and every method takes `&self`. Appends, truncations, retention and
//! rolls serialize on one writer lock. Readers never take it: they snapshot the segment list
//! and read with positional reads below each segment's committed size, which is published only
//! after a write completes, so they never see part of a batch. A read racing with a truncation
//! either retries or fails; it never returns mixed bytes.

mod cleaner;
mod clock;
mod config;
mod delete_records;
mod error;
mod index_file;
mod leader_epoch_cache;
mod log;
mod log_start;
mod offset_index;
mod offset_map;
mod producer_snapshot;
pub mod producer_state;
mod recovery;
mod retention;
mod segment;
#[cfg(any(test, feature = "sim"))]
mod sim_storage;
mod storage;
mod time_index;
mod validate;

pub use cleaner::{CleanStats, CleanStep, CleanerLimits};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, LogConfig};
pub use error::LogError;
pub use leader_epoch_cache::EpochEntry;
pub use log::{AppendInfo, Log, ReadResult};
#[cfg(any(test, feature = "sim"))]
pub use sim_storage::{SimFault, SimStorage};
pub use storage::{DirEntry, OpenMode, OsStorage, Storage, StorageFile};
