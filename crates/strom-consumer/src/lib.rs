//! The consumer SDK of Strom: reads records from partitions in offset order over the gRPC API.
//!
//! A [`Consumer`] reads the partitions the application [assigns](Consumer::assign) it, from
//! positions it [seeks](Consumer::seek) to or that [`ConsumerConfig::auto_offset_reset`]
//! picks, and [`Consumer::poll`] hands the records out. Fetches to each leader broker are
//! pipelined with the application's processing; batches are checked (CRC-32C) and decoded
//! with `strom_format`, and corrupt data is an error, never skipped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strom_consumer::ConsumerError> {
//! use std::time::Duration;
//! use strom_consumer::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
//! use strom_format::PartitionId;
//!
//! let mut consumer = Consumer::new(ConsumerConfig::new("127.0.0.1:9095")).await?;
//! let tp = TopicPartition::new("orders", PartitionId::new(0));
//! consumer.assign(vec![tp.clone()]);
//! consumer.seek(&tp, SeekTo::Beginning)?;
//! for record in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{}: {:?} = {:?}", record.offset, record.key, record.value);
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod consumer;
mod decode;
mod error;
mod fetcher;
mod record;

pub use config::{ConsumerConfig, OffsetReset};
pub use consumer::{Consumer, SeekTo};
pub use error::ConsumerError;
pub use record::{ConsumerRecord, TopicPartition};
pub use strom_client::ClientConfig;
pub use strom_format::{Header, Offset, PartitionId};

#[cfg(test)]
mod tests {
    use super::*;

    /// Applications spawn consumers onto multi-threaded runtimes: the consumer, its errors and
    /// the future of `poll` must be `Send`.
    #[test]
    fn consumer_and_poll_future_are_send() {
        fn is_send<T: Send>(_: &T) {}
        fn check(consumer: &mut Consumer) {
            is_send(consumer);
            is_send(&consumer.poll(std::time::Duration::ZERO));
            is_send(&consumer.partitions_for("t"));
        }
        fn error_is_send_sync<T: Send + Sync + std::error::Error + 'static>() {}
        error_is_send_sync::<ConsumerError>();
        let _ = check;
    }
}
