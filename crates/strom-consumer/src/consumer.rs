//! The application-facing consumer: where its partitions come from (a manual assignment or a
//! group subscription), the calls that move and commit its positions. The fetching itself is
//! the fetcher's; group membership is `group`'s and `membership`'s.

use std::time::Duration;

use strom_client::Client;
use strom_format::{Offset, PartitionId};
use tokio::time::Instant;
use tracing::warn;

use crate::coordinator::GroupRpc;
use crate::fetcher::Fetcher;
use crate::group::{GroupCtx, GroupMetadata};
use crate::{ConsumerConfig, ConsumerError, ConsumerRecord, RebalanceListener, TopicPartition};

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

/// Reads records from partitions in offset order per partition: partitions the application
/// [assigns](Consumer::assign) it, or that its consumer group hands it after
/// [`Consumer::subscribe`].
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
/// let config =
///     ConsumerConfig::builder("127.0.0.1:9095").auto_offset_reset(OffsetReset::Earliest).build()?;
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
///
/// # Consumer groups
///
/// With [`ConsumerConfig::group_id`] set, [`Consumer::subscribe`] makes the consumer a member
/// of that group (Kafka's classic group protocol, so Strom and Kafka consumers can share a
/// group): the group divides the partitions of the subscribed topics among its members,
/// rebalances when members come and go, and keeps the members' committed offsets, from which
/// partitions resume when they move. Joining, rebalancing and auto-commits happen inside
/// [`Consumer::poll`]; a background task sends heartbeats, so processing between polls may
/// take up to [`ConsumerConfig::max_poll_interval`].
///
/// ```no_run
/// # async fn demo() -> Result<(), strom_consumer::ConsumerError> {
/// use std::time::Duration;
/// use strom_consumer::{Consumer, ConsumerConfig};
///
/// let config = ConsumerConfig::builder("127.0.0.1:9095").group_id("billing").build()?;
/// let mut consumer = Consumer::new(config).await?;
/// consumer.subscribe(vec!["orders".into()], None)?;
/// for _ in 0..100 {
///     for record in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{}-{}@{}", record.topic, record.partition, record.offset);
///     }
/// }
/// // Commits what was consumed (auto-commit) and leaves the group right away.
/// consumer.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    pub(crate) client: Client,
    pub(crate) assignment: Vec<TopicPartition>,
    pub(crate) fetcher: Fetcher,
    /// Present when a `group_id` is configured.
    pub(crate) group: Option<GroupCtx>,
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
        let group = config.group_id.clone().map(|group_id| {
            GroupCtx::new(GroupRpc::new(client.clone(), group_id, config.retry_backoff), &config)
        });
        Ok(Consumer { client, assignment: Vec::new(), fetcher, group })
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
    /// ones start at the group's committed offset (with a `group_id`, when there is one), else
    /// at [`ConsumerConfig::auto_offset_reset`], unless [`Consumer::seek`] says otherwise
    /// before the next poll. Duplicates are ignored.
    ///
    /// A manual assignment replaces a [subscription](Consumer::subscribe): the consumer leaves
    /// its group (in the background, without committing or calling the listener; use
    /// [`Consumer::unsubscribe`] first for that).
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
        if let Some(group) = self.group.as_mut()
            && group.membership.take().is_some()
        {
            warn!(group = %group.rpc.group_id(), "manual assignment ends the subscription");
        }
        self.fetcher.assign(&partitions, self.group.is_some());
        self.assignment = partitions;
    }

    /// The partitions this consumer reads, sorted: the manual assignment, or what the group
    /// assigned it (empty while it (re)joins under eager rebalancing).
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
    /// When subscribed, a poll also does the group's work: joining and rebalancing (calling
    /// the [`RebalanceListener`]), reading committed offsets for new partitions, and
    /// auto-commits. A rebalance step (a commit before revoking, say) may make it return
    /// later than `timeout`, by at most the request timeout per step; a group error (the
    /// coordinator refusing this member) is returned, and the next poll tries again.
    ///
    /// Cancelling a poll (dropping its future, e.g. in `tokio::select!`) loses no records:
    /// they are handed out only after its last `.await`. An interrupted group step is
    /// finished by the next poll.
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
        let start = Instant::now();
        // A timeout too large to represent means "no timeout" in practice.
        let deadline =
            start.checked_add(timeout).unwrap_or_else(|| start + Duration::from_secs(86_400));
        loop {
            let wake = self.maintain_group().await?;
            let until = wake.map_or(deadline, |w| w.min(deadline));
            let interrupt = self.group.as_ref().and_then(GroupCtx::interrupt);
            let wait = until.saturating_duration_since(Instant::now());
            let records = self.fetcher.poll(wait, interrupt.as_deref().map(|s| &s.wake)).await?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    /// Joins the consumer group [`ConsumerConfig::group_id`] to read `topics`: the group
    /// divides their partitions among its members, and the assignment follows as members
    /// come and go. Takes effect in the next [`Consumer::poll`], which joins the group.
    ///
    /// `listener` hears about every partition the group gives or takes. Subscribing again
    /// replaces the topics (a rebalance follows if they changed) and the listener. Fails with
    /// [`ConsumerError::NoGroupId`] without a group id, and with
    /// [`ConsumerError::InvalidArgument`] for an empty topic list or while partitions are
    /// assigned manually (`assign(vec![])` first).
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use strom_consumer::RebalanceCallbacks;
    /// let listener = RebalanceCallbacks::new()
    ///     .on_assigned(|tps| println!("assigned {tps:?}"))
    ///     .on_revoked(|tps| println!("revoked {tps:?}"));
    /// consumer.subscribe(vec!["orders".into(), "payments".into()], Some(Box::new(listener)))?;
    /// # Ok(()) }
    /// ```
    pub fn subscribe(
        &mut self,
        topics: Vec<String>,
        listener: Option<Box<dyn RebalanceListener>>,
    ) -> Result<(), ConsumerError> {
        let group = self.group.as_mut().ok_or(ConsumerError::NoGroupId)?;
        let mut topics = topics;
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(ConsumerError::InvalidArgument("subscribe to at least one topic".into()));
        }
        if let Some(bad) = topics.iter().find(|t| t.is_empty() || t.len() > i16::MAX as usize) {
            return Err(ConsumerError::InvalidArgument(format!("invalid topic name {bad:?}")));
        }
        if group.membership.is_none() && !self.assignment.is_empty() {
            return Err(ConsumerError::InvalidArgument(
                "partitions are assigned manually; assign(vec![]) before subscribing".into(),
            ));
        }
        group.subscribe(topics, listener);
        Ok(())
    }

    /// The topics subscribed to, sorted; empty when not subscribed.
    ///
    /// ```no_run
    /// # fn demo(consumer: &strom_consumer::Consumer) {
    /// println!("reading {:?}", consumer.subscription());
    /// # }
    /// ```
    pub fn subscription(&self) -> &[String] {
        self.group.as_ref().map_or(&[], GroupCtx::topics)
    }

    /// Ends the subscription in an orderly way: commits the positions (with auto-commit),
    /// calls `on_partitions_revoked`, and leaves the group, so the others take over at once.
    /// Does nothing when not subscribed. Returns the first failure, after trying all of it.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// consumer.unsubscribe().await?;
    /// assert!(consumer.assignment().is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn unsubscribe(&mut self) -> Result<(), ConsumerError> {
        self.leave_group().await
    }

    /// This consumer's group, generation and member id; `None` without a `group_id`.
    ///
    /// ```no_run
    /// # fn demo(consumer: &strom_consumer::Consumer) {
    /// if let Some(meta) = consumer.group_metadata() {
    ///     println!("{} generation {} as {}", meta.group_id, meta.generation_id, meta.member_id);
    /// }
    /// # }
    /// ```
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        self.group.as_ref().map(GroupCtx::metadata)
    }

    /// Commits the current positions of every assigned partition (the offset after the last
    /// record `poll` returned), waiting until the coordinator has them durably.
    ///
    /// As a group member the commit carries its generation: after the group rebalanced away
    /// from it, it fails with [`ConsumerError::CommitFailed`] and commits nothing. With a
    /// manual assignment it commits outside group management, which the coordinator accepts
    /// only while the group has no members. Partitions without a position yet are skipped.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use std::time::Duration;
    /// let records = consumer.poll(Duration::from_secs(1)).await?;
    /// // ... process and store the records ...
    /// consumer.commit_sync().await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit_sync(&mut self) -> Result<(), ConsumerError> {
        let offsets = self.positions(&self.assignment, false);
        self.commit_offsets(&offsets).await
    }

    /// Commits the given offsets: for each partition, the offset of the next record to read
    /// (one past the last one processed), as in Kafka. See [`Consumer::commit_sync`].
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use std::time::Duration;
    /// use strom_consumer::TopicPartition;
    /// for record in consumer.poll(Duration::from_secs(1)).await? {
    ///     // ... process the record, then commit exactly up to it ...
    ///     let tp = TopicPartition::new(&*record.topic, record.partition);
    ///     consumer.commit_offsets(&[(tp, record.offset.next())]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<(), ConsumerError> {
        let group = self.group.as_mut().ok_or(ConsumerError::NoGroupId)?;
        group.commit(offsets).await
    }

    /// The group's committed offset of `tp` (the next offset to read), or `None` if it has
    /// none, read from the coordinator.
    ///
    /// ```no_run
    /// # async fn demo(consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// use strom_consumer::TopicPartition;
    /// use strom_format::PartitionId;
    /// let tp = TopicPartition::new("orders", PartitionId::new(0));
    /// match consumer.committed(&tp).await? {
    ///     Some(offset) => println!("the group resumes {tp} at {offset}"),
    ///     None => println!("the group has not committed {tp}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn committed(&self, tp: &TopicPartition) -> Result<Option<Offset>, ConsumerError> {
        let group = self.group.as_ref().ok_or(ConsumerError::NoGroupId)?;
        let committed = group.fetch_committed(std::slice::from_ref(tp)).await?;
        Ok(committed.get(tp).copied())
    }

    /// Shuts the consumer down: with auto-commit, commits the positions of its partitions;
    /// when subscribed, calls `on_partitions_revoked` and leaves the group so its partitions
    /// move to the other members at once. Returns the first failure, after trying all of it.
    ///
    /// Dropping a consumer without `close` also leaves its group (in the background, if a
    /// tokio runtime is still running) but commits nothing.
    ///
    /// ```no_run
    /// # async fn demo(consumer: strom_consumer::Consumer) -> Result<(), strom_consumer::ConsumerError> {
    /// consumer.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(mut self) -> Result<(), ConsumerError> {
        let Some(group) = self.group.as_ref() else { return Ok(()) };
        if group.membership.is_some() {
            return self.leave_group().await;
        }
        if !self.auto_commit_enabled() {
            return Ok(());
        }
        let offsets = self.positions(&self.assignment, true);
        self.commit_offsets(&offsets).await
    }

    fn auto_commit_enabled(&self) -> bool {
        self.group.as_ref().is_some_and(GroupCtx::auto_commit)
    }
}
