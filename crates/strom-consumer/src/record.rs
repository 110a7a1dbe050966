//! What the consumer hands to the application: partitions and the records read from them.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use strom_format::{Header, Offset, PartitionId};

/// A partition of a topic.
///
/// ```
/// use strom_consumer::TopicPartition;
/// use strom_format::PartitionId;
/// let tp = TopicPartition::new("orders", PartitionId::new(0));
/// assert_eq!(tp.to_string(), "orders-0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's number within it.
    pub partition: PartitionId,
}

impl TopicPartition {
    /// Names `partition` of `topic`.
    ///
    /// ```
    /// use strom_consumer::TopicPartition;
    /// use strom_format::PartitionId;
    /// assert_eq!(TopicPartition::new("t", PartitionId::new(2)).partition.get(), 2);
    /// ```
    pub fn new(topic: impl Into<String>, partition: PartitionId) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One record as read from a partition.
///
/// Key, value and header values share the fetched buffer (for uncompressed batches) rather
/// than copying it.
///
/// ```
/// use strom_consumer::ConsumerRecord;
/// fn show(record: &ConsumerRecord) -> String {
///     let value = record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
///     format!("{}-{}@{}: {}", record.topic, record.partition, record.offset, value)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic (shared by every record of the partition).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: PartitionId,
    /// The record's offset.
    pub offset: Offset,
    /// Milliseconds since the Unix epoch: set by the producer, or by the broker for topics with
    /// `LogAppendTime`.
    pub timestamp: i64,
    /// The key, if the record has one.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// The record's headers, in order.
    pub headers: Vec<Header>,
}
