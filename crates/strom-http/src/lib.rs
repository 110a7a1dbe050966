//! The HTTP listener of a Strom node (`--http-listen`, default `127.0.0.1:9096`): Prometheus
//! metrics at `/metrics`, `/health` (the process answers) and `/ready` (registered, caught up
//! with the metadata, serving; 503 otherwise), a small JSON API under `/api/` and the web
//! console that uses it, served from assets compiled into the binary.
//!
//! It runs beside the gRPC and Kafka listeners on the same [`strom_broker::Broker`] and only
//! reads the broker's state (apart from topic creation, which goes through
//! [`strom_broker::Broker::create_topic`] like any admin request). Every input is bounded:
//! query strings ([`MAX_QUERY_BYTES`]), request bodies ([`MAX_BODY_BYTES`]), records per page
//! of the message browser, groups and samples kept for the lag chart.
//!
//! ```no_run
//! # async fn demo(broker: std::sync::Arc<strom_broker::Broker>) -> Result<(), strom_http::HttpError> {
//! let config = strom_http::HttpConfig::new("127.0.0.1:0".parse().expect("address"));
//! let server = strom_http::HttpServer::start(broker, config).await?;
//! println!("metrics on http://{}/metrics", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod console;
mod error;
mod groups;
mod history;
mod metrics;
mod process;
mod server;

pub use error::HttpError;
pub use server::{
    DEFAULT_SAMPLE_INTERVAL, HttpConfig, HttpServer, MAX_BODY_BYTES, MAX_QUERY_BYTES,
};
