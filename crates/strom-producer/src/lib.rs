//! Strom's producer SDK: batches records per partition, sends them in the background with
//! Kafka's semantics (acks, linger, batch size, compression, retries in order, delivery
//! timeout) and reports each record's offset through a future.
//!
//! Keys choose partitions exactly as Kafka's Java client does ([`partition_for_key`]), so a
//! key lands in the same partition whichever client wrote it; records without a key use a
//! sticky partitioner (one partition per batch).
//!
//! ```no_run
//! use strom_producer::{Acks, Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn demo() -> Result<(), strom_producer::ProducerError> {
//! let config = ProducerConfig::builder("127.0.0.1:9095").acks(Acks::All).build()?;
//! let producer = Producer::new(config).await?;
//! let pending = producer.send(ProducerRecord::new("orders").key("k1").value("hello")).await?;
//! println!("stored at {:?}", pending.await?.offset);
//! producer.close().await;
//! # Ok(()) }
//! ```

mod accumulator;
mod codec;
mod config;
mod delivery;
mod error;
mod idempotence;
mod partitioner;
mod producer;
mod record;
mod sender;

pub use config::{Acks, ProducerConfig, ProducerConfigBuilder};
pub use delivery::DeliveryFuture;
pub use error::ProducerError;
pub use partitioner::{murmur2, partition_for_key};
pub use producer::Producer;
pub use record::{ProducerRecord, RecordMetadata};
pub use strom_client::{ClientConfig, ClientError, ErrorCode};
pub use strom_format::{Compression, Header, Offset, PartitionId};
