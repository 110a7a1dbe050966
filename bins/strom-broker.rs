//! `strom-broker`: runs one Strom node, controller and broker at once, serving the gRPC API
//! and the Kafka protocol.
//! Settings come from defaults, then `--config FILE` (TOML), then flags; SIGTERM or Ctrl-C
//! shuts down gracefully (requests drained, every log flushed and closed).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strom_broker::{BrokerConfig, BrokerServer};
use strom_kafka::{KafkaConfig, KafkaListener};
use tracing_subscriber::EnvFilter;

/// Runs a single-node Strom broker.
#[derive(Debug, Parser)]
#[command(name = "strom-broker", version, about)]
struct Args {
    /// TOML config file (same names as the BrokerConfig fields); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one [default: 127.0.0.1:9095].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// host:port clients are told to connect to [default: the bound address].
    #[arg(long, value_name = "HOST:PORT")]
    advertised_address: Option<String>,
    /// Data directory [default: ./strom-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This node's id [default: 1].
    #[arg(long)]
    node_id: Option<i32>,
    /// Partitions of topics created without a count [default: 1].
    #[arg(long)]
    num_partitions: Option<i32>,
    /// Segment size at which a new segment is rolled [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Segment age at which a new segment is rolled; -1: never [default: 7 days].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    segment_ms: Option<i64>,
    /// Delete segments older than this; -1: keep forever [default: 7 days].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Delete the oldest segments above this partition size; -1: unlimited [default: -1].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Fsync after this many messages; -1: not by count [default: -1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    flush_messages: Option<i64>,
    /// Fsync data older than this; -1: not by time [default: -1].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    flush_ms: Option<i64>,
    /// Largest record batch a topic accepts [default: 1048588].
    #[arg(long, value_name = "BYTES")]
    message_max_bytes: Option<usize>,
    /// Create unknown topics when a client asks for their metadata.
    #[arg(long)]
    auto_create_topics: bool,
    /// Address of the Kafka protocol listener, or `none` to disable it [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR|none")]
    kafka_listen: Option<String>,
    /// host:port Kafka clients are told to connect to [default: the Kafka listener's address].
    #[arg(long, value_name = "HOST:PORT")]
    kafka_advertised_address: Option<String>,
    /// Log filter, e.g. `info` or `strom_broker=debug` [default: $RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let mut c = match &self.config {
            Some(path) => BrokerConfig::load(path)?,
            None => BrokerConfig::default(),
        };
        fn set<T>(field: &mut T, flag: Option<T>) {
            if let Some(v) = flag {
                *field = v;
            }
        }
        set(&mut c.listen, self.listen);
        if self.advertised_address.is_some() {
            c.advertised_address = self.advertised_address;
        }
        set(&mut c.data_dir, self.data_dir);
        set(&mut c.node_id, self.node_id);
        set(&mut c.num_partitions, self.num_partitions);
        set(&mut c.log_segment_bytes, self.segment_bytes);
        set(&mut c.log_segment_ms, self.segment_ms);
        set(&mut c.log_retention_ms, self.retention_ms);
        set(&mut c.log_retention_bytes, self.retention_bytes);
        set(&mut c.log_flush_interval_messages, self.flush_messages);
        set(&mut c.log_flush_interval_ms, self.flush_ms);
        set(&mut c.message_max_bytes, self.message_max_bytes);
        c.auto_create_topics |= self.auto_create_topics;
        set(&mut c.kafka_listen, self.kafka_listen);
        if self.kafka_advertised_address.is_some() {
            c.kafka_advertised_address = self.kafka_advertised_address;
        }
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).context("bad --log-level")?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The Kafka listener's settings, `None` when `--kafka-listen none` disables it.
fn kafka_config(c: &BrokerConfig) -> anyhow::Result<Option<KafkaConfig>> {
    Ok(c.kafka_listen_addr()?.map(|listen| KafkaConfig {
        listen,
        advertised_address: c.kafka_advertised_address.clone(),
        max_request_bytes: c.max_request_bytes,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    init_logging(args.log_level.take().as_deref())?;
    let config = args.into_config()?;
    let kafka = kafka_config(&config)?;
    let server = BrokerServer::start(config).await.context("starting the broker")?;
    let kafka = match kafka {
        Some(k) => Some(
            KafkaListener::start(server.broker().clone(), k)
                .await
                .context("starting the Kafka listener")?,
        ),
        None => None,
    };
    // Scripts and tests read these lines to learn the ports when started with port 0.
    if let Some(k) = &kafka {
        println!("strom-broker kafka protocol on {}", k.local_addr());
    }
    println!("strom-broker listening on {}", server.local_addr());
    std::io::stdout().flush().context("writing to stdout")?;
    let served = server.run_until(termination()).await;
    if let Some(k) = kafka {
        k.shutdown().await;
    }
    served.context("broker failed")?;
    tracing::info!("bye");
    Ok(())
}
