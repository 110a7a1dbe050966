//! `strom-broker`: runs one Strom node, controller and broker at once, serving the gRPC API,
//! the Kafka protocol and HTTP (metrics, health, web console).
//! Settings come from defaults, then `--config FILE` (TOML), then flags; SIGTERM or Ctrl-C
//! shuts down gracefully (requests drained, every log flushed and closed).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use strom_broker::{BrokerConfig, BrokerServer};
use strom_http::{HttpConfig, HttpServer};
use strom_kafka::{KafkaConfig, KafkaListener};
use tracing_subscriber::EnvFilter;

/// Runs a single-node Strom broker.
#[derive(Debug, Parser)]
#[command(name = "strom-broker", version, about)]
struct Args {
    /// TOML config file (same names as the BrokerConfig fields); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, `host:port` (a name such as localhost, or an IP); port 0 picks
    /// a free one [default: 127.0.0.1:9095].
    #[arg(long, value_name = "HOST:PORT", value_parser = resolve_listen)]
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
    /// The metadata quorum: `1@HOST:PORT,2@HOST:PORT,...`, each voter's `--listen` address.
    /// A node not listed is a broker-only node. Without it the node is a quorum of itself.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// Fence a broker not heard from for this long [default: 1500].
    #[arg(long, value_name = "MS")]
    broker_session_timeout_ms: Option<u64>,
    /// In-sync replicas acks=all needs, unless a topic overrides it [default: 1].
    #[arg(long, value_name = "N")]
    min_insync_replicas: Option<i32>,
    /// A follower behind its leader for this long leaves the ISR [default: 10000].
    #[arg(long, value_name = "MS")]
    replica_lag_time_max_ms: Option<u64>,
    /// Replicas of topics created without a replication factor [default: 1].
    #[arg(long, value_name = "N")]
    default_replication_factor: Option<i32>,
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
    /// Close client connections that send nothing for this long [default: 600000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    connections_max_idle_ms: Option<u64>,
    /// Client connections open at once; more are refused [default: 10000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Address of the Kafka protocol listener, or `none` to disable it [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR|none")]
    kafka_listen: Option<String>,
    /// host:port Kafka clients are told to connect to [default: the Kafka listener's address].
    #[arg(long, value_name = "HOST:PORT")]
    kafka_advertised_address: Option<String>,
    /// Incremental fetch sessions (KIP-227) the Kafka listener keeps; 0 disables them
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    max_incremental_fetch_session_cache_slots: Option<usize>,
    /// Address of the HTTP listener (/metrics, /health, /ready, web console), or `none` to
    /// disable it [default: 127.0.0.1:9096].
    #[arg(long, value_name = "ADDR|none")]
    http_listen: Option<String>,
    /// Forget an idempotent producer's sequence state this long after its last batch
    /// (Kafka's producer.id.expiration.ms) [default: 86400000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    producer_id_expiration_ms: Option<u64>,
    /// Run the log cleaner for compacted topics (Kafka's log.cleaner.enable) [default: true].
    #[arg(long, value_name = "BOOL")]
    log_cleaner_enable: Option<bool>,
    /// Pause between two log-cleaner passes (log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    log_cleaner_backoff_ms: Option<u64>,
    /// Memory of the cleaner's key map (log.cleaner.dedupe.buffer.size) [default: 134217728].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    log_cleaner_dedupe_buffer_size: Option<u64>,
    /// Cleaner I/O limit in bytes per second, 0 for none
    /// (log.cleaner.io.max.bytes.per.second) [default: 0].
    #[arg(long, value_name = "BYTES")]
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// Log filter, e.g. `info` or `strom_broker=debug` [default: $RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Append logs to this file instead of writing them to stderr.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

/// `--listen`: an IP or a host name (resolved now; the first address wins, IPv4 first).
fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?} (expected host:port): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
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
        if let Some(voters) = &self.voters {
            c.voters = strom_broker::parse_voters(voters)?;
        }
        set(&mut c.broker_session_timeout_ms, self.broker_session_timeout_ms);
        set(&mut c.default_replication_factor, self.default_replication_factor);
        set(&mut c.min_insync_replicas, self.min_insync_replicas);
        set(&mut c.replica_lag_time_max_ms, self.replica_lag_time_max_ms);
        set(&mut c.num_partitions, self.num_partitions);
        set(&mut c.log_segment_bytes, self.segment_bytes);
        set(&mut c.log_segment_ms, self.segment_ms);
        set(&mut c.log_retention_ms, self.retention_ms);
        set(&mut c.log_retention_bytes, self.retention_bytes);
        set(&mut c.log_flush_interval_messages, self.flush_messages);
        set(&mut c.log_flush_interval_ms, self.flush_ms);
        set(&mut c.message_max_bytes, self.message_max_bytes);
        c.auto_create_topics |= self.auto_create_topics;
        set(&mut c.connections_max_idle_ms, self.connections_max_idle_ms);
        if let Some(n) = self.max_connections {
            c.max_connections = usize::try_from(n).context("--max-connections is too large")?;
        }
        set(&mut c.kafka_listen, self.kafka_listen);
        set(
            &mut c.max_incremental_fetch_session_cache_slots,
            self.max_incremental_fetch_session_cache_slots,
        );
        set(&mut c.producer_id_expiration_ms, self.producer_id_expiration_ms);
        set(&mut c.log_cleaner_enable, self.log_cleaner_enable);
        set(&mut c.log_cleaner_backoff_ms, self.log_cleaner_backoff_ms);
        set(&mut c.log_cleaner_dedupe_buffer_size, self.log_cleaner_dedupe_buffer_size);
        set(&mut c.log_cleaner_io_max_bytes_per_second, self.log_cleaner_io_max_bytes_per_second);
        if self.kafka_advertised_address.is_some() {
            c.kafka_advertised_address = self.kafka_advertised_address;
        }
        set(&mut c.http_listen, self.http_listen);
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(level: Option<&str>, file: Option<&Path>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).context("bad --log-level")?,
        // openraft narrates every vote at info and every unreachable peer every 100 ms at
        // warn/error; the quorum logs the events an operator needs itself.
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,openraft=error,openraft::replication=off")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            builder.with_writer(std::sync::Mutex::new(file)).with_ansi(false).init();
        }
        None => {
            check_stderr()?;
            builder.with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
        }
    }
    Ok(())
}

/// Logs go to stderr; if it cannot be written (closed, a full device) the broker would run
/// blind and its errors would vanish. Say so on stdout, which scripts read, and stop.
fn check_stderr() -> anyhow::Result<()> {
    let probe = std::io::stderr().write_all(b"strom-broker: starting\n");
    if let Err(e) = probe.and_then(|()| std::io::stderr().flush()) {
        let message = format!(
            "strom-broker: error: cannot write to stderr ({e}); \
             redirect it or use --log-file FILE"
        );
        // stdout may be unusable too; the exit status still tells.
        let _ = writeln!(std::io::stdout(), "{message}");
        anyhow::bail!(message);
    }
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
        fetch_session_cache_slots: c.max_incremental_fetch_session_cache_slots,
        ..KafkaConfig::new(listen)
    }))
}

/// Keeps glibc's malloc from handing fetch read buffers back to the kernel after every
/// response. A fetch reads each partition into a fresh buffer of up to
/// `max.partition.fetch.bytes` (1 MiB) that lives until the socket has taken it (the records go
/// out without a copy); with glibc's defaults such buffers are `mmap`ed or trimmed off the heap
/// on free, so every read faults its pages in again (10% of the broker's time when consuming
/// six partitions). A fixed 32 MiB mmap threshold (glibc's maximum) and a 256 MiB trim
/// threshold keep freed buffers in the heap for the next read; what the heap holds on to is
/// bounded by the fetches in flight at the peak.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let log_file = args.log_file.take();
    init_logging(args.log_level.take().as_deref(), log_file.as_deref())?;
    let config = args.into_config()?;
    let kafka = kafka_config(&config)?;
    let http_listen = config.http_listen_addr()?;
    let server = BrokerServer::start(config).await.context("starting the broker")?;
    let kafka = match kafka {
        Some(k) => Some(
            KafkaListener::start(server.broker().clone(), k)
                .await
                .context("starting the Kafka listener")?,
        ),
        None => None,
    };
    let http = match http_listen {
        Some(listen) => Some(
            HttpServer::start(server.broker().clone(), HttpConfig::new(listen))
                .await
                .context("starting the HTTP listener")?,
        ),
        None => None,
    };
    // Scripts and tests read these lines to learn the ports when started with port 0.
    if let Some(k) = &kafka {
        println!("strom-broker kafka protocol on {}", k.local_addr());
    }
    if let Some(h) = &http {
        println!("strom-broker http on {}", h.local_addr());
    }
    println!("strom-broker listening on {}", server.local_addr());
    std::io::stdout().flush().context("writing to stdout")?;
    let served = server.run_until(termination()).await;
    if let Some(k) = kafka {
        k.shutdown().await;
    }
    if let Some(h) = http {
        h.shutdown().await;
    }
    served.context("broker failed")?;
    tracing::info!("bye");
    Ok(())
}
