//! The consumer SDK of Strom: reads records from partitions in offset order over the gRPC API,
//! alone or as a member of a consumer group.
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
//!
//! With a [`ConsumerConfig::group_id`], consumers form a consumer group instead: each
//! [subscribes](Consumer::subscribe) to topics, the group spreads their partitions over its
//! members (Kafka's classic group protocol and assignors, so Kafka clients can be members
//! too), and offsets committed to the group say where a partition resumes when it moves.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strom_consumer::ConsumerError> {
//! use std::time::Duration;
//! use strom_consumer::{Consumer, ConsumerConfig, RebalanceCallbacks};
//!
//! let config = ConsumerConfig::builder("127.0.0.1:9095")
//!     .group_id("billing")
//!     .enable_auto_commit(false)
//!     .build()?;
//! let mut consumer = Consumer::new(config).await?;
//! let listener = RebalanceCallbacks::new().on_assigned(|tps| println!("now reading {tps:?}"));
//! consumer.subscribe(vec!["orders".into()], Some(Box::new(listener)))?;
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     if records.is_empty() {
//!         break;
//!     }
//!     // ... process the records, then record the progress with the group ...
//!     consumer.commit_sync().await?;
//! }
//! consumer.close().await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod consumer;
mod coordinator;
mod decode;
mod error;
mod fetcher;
mod group;
mod listener;
mod membership;
mod record;

pub use config::{AssignmentStrategy, ConsumerConfig, ConsumerConfigBuilder, OffsetReset};
pub use consumer::{Consumer, SeekTo};
pub use error::ConsumerError;
pub use group::GroupMetadata;
pub use listener::{RebalanceCallbacks, RebalanceListener, RevokeContext};
pub use record::{ConsumerRecord, TopicPartition};
pub use strom_client::{ClientConfig, ClientError, ErrorCode};
pub use strom_format::{Header, Offset, PartitionId};

#[cfg(test)]
mod tests {
    use super::*;

    /// Applications spawn consumers onto multi-threaded runtimes: the consumer, its errors and
    /// the future of `poll` must be `Send`.
    #[test]
    fn consumer_and_poll_future_are_send() {
        fn is_send<T: Send>(_: &T) {}
        fn is_sync<T: Sync>(_: &T) {}
        fn check(consumer: &mut Consumer, tp: &TopicPartition) {
            is_send(consumer);
            is_sync(consumer);
            is_send(&consumer.poll(std::time::Duration::ZERO));
            is_send(&consumer.partitions_for("t"));
            is_send(&consumer.committed(tp));
            is_send(&consumer.commit_sync());
            is_send(&consumer.unsubscribe());
        }
        fn close_is_send(consumer: Consumer) {
            is_send(&consumer.close());
        }
        let _ = close_is_send;
        fn error_is_send_sync<T: Send + Sync + std::error::Error + 'static>() {}
        error_is_send_sync::<ConsumerError>();
        let _ = check;
    }
}
