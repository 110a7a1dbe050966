//! The application-facing consumer: where its partitions come from (a manual assignment) and
//! the calls that move its positions; the fetching itself is the fetcher's.

use std::time::Duration;

use strom_client::Client;
use strom_format::{Offset, PartitionId};

use crate::fetcher::Fetcher;
use crate::{ConsumerConfig, ConsumerError, ConsumerRecord, TopicPartition};

/// Where [`Consumer::seek`] moves a partition's position.
///
/// ```
/// use strom_consumer::SeekTo;
/// use strom_format::Offset;
/// let to = SeekTo::Offset(Offset::new(42));
/// assert_ne!(to, SeekTo::Beginning);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The first offset still in the log.
    Beginning,
    /// The high watermark: the next record produced.
    End,
    /// This exact offset.
    Offset(Offset),
    /// The first record whose timestamp (ms since the epoch) is at or after this one, or the
    /// end if there is none.
    Timestamp(i64),
}

/// Reads records from partitions the application assigns it, in offset order per partition.
///
/// Fetches are pipelined: when [`Consumer::poll`] returns, the next fetch is already on its
/// way (one in flight per leader broker, buffered data bounded by
/// [`ConsumerConfig::fetch_max_bytes`]), so the broker round trip overlaps the application's
/// processing. Retriable failures (a leader moving, a broker restarting) are retried after a
/// metadata refresh and a backoff, invisibly; everything else is returned from `poll`.
///
/// ```no_run
/// # async fn demo() -> Result<(), strom_consumer::ConsumerError> {
/// use std::time::Duration;
/// use strom_consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
///
/// let config = ConsumerConfig {
///     auto_offset_reset: OffsetReset::Earliest,
///     ..ConsumerConfig::new("127.0.0.1:9095")
/// };
/// let mut consumer = Consumer::new(config).await?;
/// let partitions = consumer.partitions_for("orders").await?;
/// consumer.assign(partitions);
/// loop {
///     for record in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    assignment: Vec<TopicPartition>,
    fetcher: Fetcher,
}

impl Consumer {
    /// Checks `config`, connects to the cluster and fetches its metadata.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), strom_consumer::ConsumerError> {
    /// use strom_consumer::{Consumer, ConsumerConfig};
    /// let consumer = Consumer::new(ConsumerConfig::new("127.0.0.1:9095")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(config: ConsumerConfig) -> Result<Consumer, ConsumerError> {
        config.validate()?;
        let client = Client::connect(config.client.clone()).await?;
        let fetcher = Fetcher::new(client.clone(), &config);
        Ok(Consumer { client, assignment: Vec::new(), fetcher })
    }

    /// The cluster client the consumer uses, for metadata and admin calls beside consuming.
    ///
    /// ```no_run
    /// # async fn demo(consumer: strom_consumer::Consumer) -> Result<(), strom_client::ClientError> {
    /// let topics = consumer.client().list_topics(false).await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every partition of `topic`, from the cluster's metadata: the usual argument of
    /// [`Consumer::assign`] for reading a whole topic. Fails if the topic does not exist.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// let partitions = consumer.partitions_for("orders").await?;
    /// consumer.assign(partitions);
    /// # Ok(()) }
    /// ```
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<TopicPartition>, ConsumerError> {
        let info = self.client.refresh_metadata(topic).await?;
        let mut ids: Vec<PartitionId> = info.partitions.iter().map(|p| p.id).collect();
        ids.sort();
        Ok(ids.into_iter().map(|id| TopicPartition::new(topic, id)).collect())
    }

    /// Replaces the partitions this consumer reads.
    ///
    /// Partitions already assigned keep their positions and any records fetched for them; new
    /// ones start at [`ConsumerConfig::auto_offset_reset`] unless [`Consumer::seek`] says
    /// otherwise before the next poll. Duplicates are ignored.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) {
    /// use strom_consumer::TopicPartition;
    /// use strom_format::PartitionId;
    /// consumer.assign(vec![
    ///     TopicPartition::new("orders", PartitionId::new(0)),
    ///     TopicPartition::new("orders", PartitionId::new(1)),
    /// ]);
    /// assert_eq!(consumer.assignment().len(), 2);
    /// # }
    /// ```
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let mut partitions = partitions;
        partitions.sort();
        partitions.dedup();
        self.fetcher.assign(&partitions);
        self.assignment = partitions;
    }

    /// The partitions this consumer reads, sorted.
    ///
    /// ```no_run
    /// # fn demo(consumer: &strom_consumer::Consumer) {
    /// for tp in consumer.assignment() {
    ///     println!("{tp}: next offset {:?}", consumer.position(tp));
    /// }
    /// # }
    /// ```
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// Moves the position of an assigned partition; the next [`Consumer::poll`] returns records
    /// from there. Records already fetched from elsewhere are discarded.
    ///
    /// `Beginning`, `End` and `Timestamp` are resolved with ListOffsets by the next poll, so
    /// [`Consumer::position`] is `None` until then. Fails with [`ConsumerError::NotAssigned`]
    /// for a partition outside the assignment and [`ConsumerError::InvalidArgument`] for a
    /// negative offset or timestamp.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use strom_consumer::{SeekTo, TopicPartition};
    /// use strom_format::{Offset, PartitionId};
    /// let tp = TopicPartition::new("orders", PartitionId::new(0));
    /// consumer.assign(vec![tp.clone()]);
    /// consumer.seek(&tp, SeekTo::Offset(Offset::new(1000)))?;
    /// assert_eq!(consumer.position(&tp), Some(Offset::new(1000)));
    /// // Replay the last hour.
    /// consumer.seek(&tp, SeekTo::Timestamp(1_700_000_000_000 - 3_600_000))?;
    /// # Ok(()) }
    /// ```
    pub fn seek(&mut self, tp: &TopicPartition, to: SeekTo) -> Result<(), ConsumerError> {
        self.fetcher.seek(tp, to)
    }

    /// The offset of the next record [`Consumer::poll`] returns for `tp`: one past the last
    /// record returned. `None` when `tp` is not assigned or its position is not resolved yet.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use std::time::Duration;
    /// let records = consumer.poll(Duration::from_millis(100)).await?;
    /// if let Some(last) = records.last() {
    ///     let tp = strom_consumer::TopicPartition::new(&*last.topic, last.partition);
    ///     assert_eq!(consumer.position(&tp), Some(last.offset.next()));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.fetcher.position(tp)
    }

    /// Returns the next records of the assigned partitions (at most
    /// [`ConsumerConfig::max_poll_records`]), waiting up to `timeout` when none are buffered;
    /// an empty vector means none arrived in time.
    ///
    /// Records of one partition come in offset order, starting exactly at its position, with
    /// none skipped. Errors concern one partition (corrupt data, an out-of-range offset with
    /// no reset policy, a non-retriable broker error) and leave its position where it was, so
    /// the same error comes back until the application seeks past it.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use std::time::Duration;
    /// loop {
    ///     let records = consumer.poll(Duration::from_millis(500)).await?;
    ///     if records.is_empty() {
    ///         break; // caught up
    ///     }
    ///     for record in records {
    ///         println!("{:?}", record.value);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumerError> {
        self.fetcher.poll(timeout).await
    }
}
