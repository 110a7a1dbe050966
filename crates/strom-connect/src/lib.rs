//! Strom Connect: moves records from Strom topics into other systems, exactly once.
//!
//! The library holds what every sink shares: the [`Sink`] trait (store a batch and the
//! consumed offsets atomically), batching by rows, bytes and time, the error policy (stop, or
//! dead-letter the record and go on), and offset handling: positions always come from the
//! destination, read again after every rebalance, so a crash or a rebalance at any point leaves
//! no duplicate and no gap. [`PostgresSink`] is the first destination.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strom_connect::ConnectError> {
//! let file = strom_connect::ConfigFile::parse(r#"
//!     [[postgres]]
//!     bootstrap = "127.0.0.1:9095"
//!     topics = ["orders"]
//!     group = "pg-orders"
//!     dsn = "postgres://strom@127.0.0.1:5432/shop"
//!     table = "orders"
//! "#)?;
//! let config = file.postgres[0].clone();
//! let sink = strom_connect::PostgresSink::new(&config);
//! strom_connect::run(config, sink, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod config;
mod error;
mod json_rows;
mod postgres;
mod runner;
mod sink;

pub use config::{
    BatchConfig, ConfigFile, ErrorPolicy, Format, MAX_BATCH_BYTES, MAX_BATCH_ROWS, Mode, SinkConfig,
};
pub use error::ConnectError;
pub use postgres::{OFFSETS_TABLE, PostgresSink};
pub use runner::{
    DLQ_ERROR_HEADER, DLQ_OFFSET_HEADER, DLQ_PARTITION_HEADER, DLQ_TOPIC_HEADER, run,
};
pub use sink::{NOTHING_STORED, OffsetUpdate, Sink};
