//! The seam between the connector's loop (consume, batch, apply the error policy) and one
//! destination. A sink stores a batch of records and the consumed offsets atomically, so the
//! destination itself says where each partition resumes: that is what makes delivery
//! exactly-once across crashes and rebalances.

use std::collections::HashMap;
use std::future::Future;

use strom_consumer::{ConsumerRecord, TopicPartition};
use strom_format::Offset;

use crate::ConnectError;

/// The stored offset of a partition where nothing was written yet: read from the beginning.
pub const NOTHING_STORED: Offset = Offset::new(-1);

/// How one partition's stored offset moves with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetUpdate {
    /// The partition.
    pub tp: TopicPartition,
    /// The offset the destination must hold now (the fence): if another instance moved it,
    /// the write fails with [`ConnectError::Fenced`]. [`NOTHING_STORED`] for a fresh partition.
    pub expected: Offset,
    /// The next offset to read once the batch is stored.
    pub next: Offset,
}

/// A destination that stores records and offsets in one atomic step.
///
/// Implementations report [`ConnectError::Unavailable`] for anything retrying can fix (the
/// caller retries the same call with backoff), [`ConnectError::BadRecord`] naming the first
/// record of the batch that cannot be stored, and [`ConnectError::Fenced`] when the stored
/// offsets are not the expected ones. After any error nothing of the batch is stored.
pub trait Sink: Send {
    /// Connects and creates what is missing (the offsets table, the destination table).
    fn prepare(&mut self) -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// The stored next offset of each partition for `group`; [`NOTHING_STORED`] for those
    /// never written.
    fn stored_offsets(
        &mut self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = Result<HashMap<TopicPartition, Offset>, ConnectError>> + Send;

    /// Stores `records` (in order) and moves the offsets of `group`, all or nothing.
    ///
    /// If the stored offsets already equal every `next` (a retry after a commit whose answer
    /// was lost), this succeeds without writing anything again.
    fn write(
        &mut self,
        group: &str,
        records: &[ConsumerRecord],
        offsets: &[OffsetUpdate],
    ) -> impl Future<Output = Result<(), ConnectError>> + Send;
}
