//! The [`Producer`] handle: validates and partitions records, buffers them in the accumulator
//! with backpressure, and owns the background sender task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use strom_client::Client;
use strom_client::ErrorCode;
use strom_format::BATCH_HEADER_LEN;
use tokio::sync::Notify;

use crate::accumulator::{Accumulator, AccumulatorConfig, Append};
use crate::delivery::Tracker;
use crate::idempotence::Idempotence;
use crate::sender::{self, Inner};
use crate::{
    Acks, DeliveryFuture, ProducerConfig, ProducerError, ProducerRecord, partition_for_key,
};

/// Sends records to a Strom cluster, batching them per partition in the background.
///
/// Cheap to clone; clones share one buffer and one sender task. When the last clone is dropped
/// the buffered records are still sent (within `delivery_timeout`); call
/// [`Producer::close`] to wait for that.
///
/// ```no_run
/// use strom_producer::{Producer, ProducerConfig, ProducerRecord};
///
/// # async fn demo() -> Result<(), strom_producer::ProducerError> {
/// let producer = Producer::new(ProducerConfig::new("127.0.0.1:9095")).await?;
/// let pending = producer.send(ProducerRecord::new("orders").key("k1").value("hello")).await?;
/// let metadata = pending.await?;
/// println!("partition {} offset {:?}", metadata.partition, metadata.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    _lifetime: Arc<Lifetime>,
}

/// Dropped with the last producer clone: lets the sender drain and stop.
#[derive(Debug)]
struct Lifetime(Arc<Inner>);

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Producer {
    /// Connects to the cluster and starts the sender task.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), strom_producer::ProducerError> {
    /// let producer = strom_producer::Producer::new(Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(config: ProducerConfig) -> Result<Producer, ProducerError> {
        config.validate()?;
        let client = Client::connect(config.client.clone()).await?;
        Producer::with_client(client, config)
    }

    /// Builds a producer on an existing client (sharing its connections and metadata). Must be
    /// called within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use strom_client::{Client, ClientConfig};
    /// use strom_producer::{Producer, ProducerConfig};
    /// let client = Client::connect(ClientConfig::new("127.0.0.1:9095")).await?;
    /// let producer = Producer::with_client(client, ProducerConfig::default())?;
    /// # Ok(()) }
    /// ```
    pub fn with_client(client: Client, config: ProducerConfig) -> Result<Producer, ProducerError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ProducerError::InvalidConfig("a producer needs a tokio runtime".to_owned())
        })?;
        let tracker = Tracker::new(config.buffer_memory);
        let accum = Accumulator::new(
            AccumulatorConfig {
                batch_size: config.batch_size,
                linger: config.linger,
                compression: config.compression,
                max_request_size: config.max_request_size,
                retry_alone: config.enable_idempotence && config.acks == Acks::All,
            },
            Arc::clone(&tracker),
        );
        let config_idempotent = config.enable_idempotence && config.acks == Acks::All;
        let inner = Arc::new(Inner {
            config,
            client,
            accum: Mutex::new(accum),
            tracker,
            wake: Notify::new(),
            sender: Mutex::new(None),
            closed: AtomicBool::new(false),
            idempotence: (config_idempotent).then(Idempotence::default),
        });
        let handle = runtime.spawn(sender::run(Arc::clone(&inner)));
        *inner.sender.lock() = Some(handle);
        Ok(Producer { _lifetime: Arc::new(Lifetime(Arc::clone(&inner))), inner })
    }

    /// The client the producer sends through.
    ///
    /// ```no_run
    /// # async fn demo(producer: strom_producer::Producer) {
    /// let topics = producer.client().list_topics(false).await;
    /// # }
    /// ```
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Buffers a record for sending and returns the future of its acknowledgement.
    ///
    /// Waits (up to `max_block`) for the topic's metadata and for buffer memory: that wait is
    /// the producer's backpressure. Fails at once for records over `max_request_size`, unknown
    /// topics and partitions the topic does not have. Records sent to one partition are stored
    /// in the order of their `send` calls.
    ///
    /// ```no_run
    /// # async fn demo(producer: strom_producer::Producer) -> Result<(), strom_producer::ProducerError> {
    /// use strom_producer::ProducerRecord;
    /// let mut pending = Vec::new();
    /// for i in 0..100 {
    ///     pending.push(producer.send(ProducerRecord::new("orders").value(format!("v{i}"))).await?);
    /// }
    /// for p in pending {
    ///     p.await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProducerError> {
        let cfg = &self.inner.config;
        let size = record.encoded_size_bound();
        let with_header = size.saturating_add(BATCH_HEADER_LEN);
        if with_header > cfg.max_request_size {
            return Err(ProducerError::RecordTooLarge {
                size: with_header,
                limit: cfg.max_request_size,
                setting: "max_request_size",
            });
        }
        let permits = match u32::try_from(size) {
            Ok(p) if size <= cfg.buffer_memory => p,
            _ => {
                return Err(ProducerError::RecordTooLarge {
                    size,
                    limit: cfg.buffer_memory,
                    setting: "buffer_memory",
                });
            }
        };
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ProducerError::Closed);
        }
        // `max_block` counts from the first wait; read the clock only if a wait comes (the
        // common call waits for nothing, and a clock read per record is measurable).
        let mut started = None;
        let mut deadline =
            || *started.get_or_insert_with(|| tokio::time::Instant::now() + cfg.max_block);
        // The cache answers almost every call; only a miss pays for a timer. No age check (a
        // clock read) per record: the sender checks the age per request.
        let info = match self.inner.client.cached_topic_unaged(&record.topic) {
            Some(info) => info,
            None => {
                let metadata = self.inner.client.topic_metadata(&record.topic);
                tokio::time::timeout_at(deadline(), metadata)
                    .await
                    .map_err(|_| ProducerError::MaxBlockTimeout(cfg.max_block))??
            }
        };
        let num_partitions = info.num_partitions();
        if num_partitions == 0 {
            return Err(ProducerError::Broker {
                topic: record.topic.clone(),
                partition: strom_format::PartitionId::new(0),
                code: ErrorCode::LeaderNotAvailable,
                message: "topic has no partitions in metadata".to_owned(),
            });
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                if info.partition(p).is_none() {
                    return Err(ProducerError::InvalidPartition {
                        topic: record.topic.clone(),
                        partition: p,
                        num_partitions,
                    });
                }
                Some(p)
            }
            (None, Some(key)) => {
                Some(partition_for_key(key, u32::try_from(num_partitions).unwrap_or(u32::MAX)))
            }
            (None, None) => None,
        };

        let memory = &self.inner.tracker.memory;
        let permit = match memory.try_acquire_many(permits) {
            Ok(permit) => permit,
            // Backpressure: wait for acknowledged batches to return their memory.
            Err(_) => tokio::time::timeout_at(deadline(), memory.acquire_many(permits))
                .await
                .map_err(|_| ProducerError::MaxBlockTimeout(cfg.max_block))?
                .map_err(|_| ProducerError::Closed)?,
        };
        // From here the bytes belong to the batch; its completer returns them.
        permit.forget();

        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let append = Append {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &record.headers,
            timestamp,
            size,
        };
        let appended = {
            let mut accum = self.inner.accum.lock();
            if accum.is_closing() {
                None
            } else {
                Some(accum.append(&record.topic, partition, &info, &append, Instant::now))
            }
        };
        match appended {
            Some((future, wake)) => {
                if wake {
                    self.inner.wake.notify_one();
                }
                Ok(future)
            }
            None => {
                self.inner.tracker.memory.add_permits(size);
                Err(ProducerError::Closed)
            }
        }
    }

    /// Sends every buffered record now (ignoring `linger`) and waits until each record sent
    /// before this call is acknowledged or has failed. Failures are reported by the records'
    /// [`DeliveryFuture`]s.
    ///
    /// ```no_run
    /// # async fn demo(producer: strom_producer::Producer) -> Result<(), strom_producer::ProducerError> {
    /// let _pending = producer.send(strom_producer::ProducerRecord::new("t").value("v")).await?;
    /// producer.flush().await;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) {
        let below = self.inner.tracker.next_id();
        self.inner.accum.lock().flush(below);
        self.inner.wake.notify_one();
        self.inner.tracker.wait_below(below).await;
    }

    /// Flushes, then stops the sender task. Later `send` calls fail with
    /// [`ProducerError::Closed`]; other clones are closed too.
    ///
    /// ```no_run
    /// # async fn demo(producer: strom_producer::Producer) {
    /// producer.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        self.flush().await;
        self.inner.close();
        let handle = self.inner.sender.lock().take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "producer sender task failed");
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
