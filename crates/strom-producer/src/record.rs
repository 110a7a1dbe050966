//! What an application sends ([`ProducerRecord`]) and what it gets back ([`RecordMetadata`]).

use std::sync::Arc;

use bytes::Bytes;
use strom_format::{Header, Offset, PartitionId};

/// One record to send.
///
/// ```
/// use strom_producer::ProducerRecord;
/// let record = ProducerRecord::new("orders")
///     .key("customer-7")
///     .value(r#"{"total": 12}"#)
///     .header("trace", Some(b"abc".as_slice()));
/// assert_eq!(record.key.as_deref(), Some(b"customer-7".as_slice()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Destination topic.
    pub topic: String,
    /// Explicit partition; `None` lets the partitioner choose (by key, or sticky without one).
    pub partition: Option<PartitionId>,
    /// The key; it picks the partition as Kafka's Java client would.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, sent in order.
    pub headers: Vec<Header>,
    /// Create time in ms since the epoch; `None` uses the current time.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, value or headers yet.
    ///
    /// ```
    /// let r = strom_producer::ProducerRecord::new("t");
    /// assert!(r.key.is_none() && r.value.is_none());
    /// ```
    pub fn new(topic: impl Into<String>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key. `Bytes`, `Vec<u8>`, `&'static str` and `&'static [u8]` convert without copies.
    ///
    /// ```
    /// let r = strom_producer::ProducerRecord::new("t").key("k");
    /// assert_eq!(r.key.as_deref(), Some(b"k".as_slice()));
    /// ```
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    ///
    /// ```
    /// let r = strom_producer::ProducerRecord::new("t").value(vec![1u8, 2, 3]);
    /// assert_eq!(r.value.as_deref(), Some([1u8, 2, 3].as_slice()));
    /// ```
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sends to this partition instead of letting the partitioner choose.
    ///
    /// ```
    /// use strom_format::PartitionId;
    /// let r = strom_producer::ProducerRecord::new("t").partition(PartitionId::new(2));
    /// assert_eq!(r.partition, Some(PartitionId::new(2)));
    /// ```
    pub fn partition(mut self, partition: PartitionId) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header.
    ///
    /// ```
    /// let r = strom_producer::ProducerRecord::new("t").header("h", None);
    /// assert_eq!(r.headers.len(), 1);
    /// ```
    pub fn header(mut self, key: impl Into<String>, value: Option<&[u8]>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Replaces the headers.
    ///
    /// ```
    /// use strom_format::Header;
    /// let r = strom_producer::ProducerRecord::new("t").headers(vec![Header::new("a", None)]);
    /// assert_eq!(r.headers[0].key, "a");
    /// ```
    pub fn headers(mut self, headers: Vec<Header>) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the create time (ms since the epoch).
    ///
    /// ```
    /// let r = strom_producer::ProducerRecord::new("t").timestamp(1_700_000_000_000);
    /// assert_eq!(r.timestamp, Some(1_700_000_000_000));
    /// ```
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// An upper bound of the record's encoded size inside a batch: payload plus the widest
    /// varints of every field.
    pub(crate) fn encoded_size_bound(&self) -> usize {
        let field = |b: Option<&Bytes>| 5 + b.map_or(0, Bytes::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|h| 5 + h.key.len() + 5 + h.value.as_ref().map_or(0, Bytes::len))
            .fold(0, usize::saturating_add);
        // length(5) + attributes(1) + timestamp delta(10) + offset delta(5) + header count(5)
        26usize
            .saturating_add(field(self.key.as_ref()))
            .saturating_add(field(self.value.as_ref()))
            .saturating_add(headers)
    }
}

/// Where an acknowledged record landed.
///
/// ```
/// # async fn demo(producer: strom_producer::Producer) -> Result<(), strom_producer::ProducerError> {
/// let meta = producer.send(strom_producer::ProducerRecord::new("t").value("v")).await?.await?;
/// println!("{}-{} @ {:?}", meta.topic, meta.partition, meta.offset);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition the record went to.
    pub partition: PartitionId,
    /// Its offset; `None` with `acks = 0`, where the broker reports nothing.
    pub offset: Option<Offset>,
    /// The record's create time, or the broker's append time for `LogAppendTime` topics.
    pub timestamp: i64,
}
