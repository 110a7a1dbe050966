//! `strom-bench`: produce and consume throughput and latency against a running cluster, in
//! the spirit of Kafka's `producer-perf-test` and `consumer-perf-test`.

mod cli;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use strom_client::proto::v1::ErrorCode;
use strom_client::{Client, ClientError};
use strom_consumer::{Consumer, ConsumerConfig, OffsetReset};
use strom_format::Compression;
use strom_producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Measures Strom's produce and consume throughput and latency.
#[derive(Debug, Parser)]
#[command(name = "strom-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sends records as fast as the producer takes them; latency is send to acknowledgement.
    Produce(ProduceArgs),
    /// Reads records from the start of every partition; latency is the duration of each poll
    /// that returned records.
    Consume(ConsumeArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// Broker address(es) to bootstrap from, `host:port[,host:port...]`.
    #[arg(long, default_value = "127.0.0.1:9095", env = "STROM_BOOTSTRAP")]
    bootstrap: String,
    /// Topic to use.
    #[arg(long)]
    topic: String,
    /// Records to send or read.
    #[arg(long)]
    num_records: u64,
    /// Create the topic first (an existing topic is used as it is).
    #[arg(long)]
    create_topic: bool,
    /// Partitions of the topic --create-topic creates.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replicas per partition of the topic --create-topic creates [default: the broker's].
    #[arg(long, default_value_t = 0)]
    replication_factor: i32,
    /// Topic config overrides --create-topic sets (repeatable), e.g. min.insync.replicas=2.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Acknowledgement level: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression codec: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Idempotent producer (Kafka's enable.idempotence; acks=all only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    enable_idempotence: bool,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_size: usize,
    /// How long the producer waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Give up when no record arrives for this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

/// Bound of the queue between sending and awaiting acknowledgements; the producer's own
/// buffer memory limits what is really in flight.
const ACK_QUEUE: usize = 100_000;
/// Largest latency the histograms track, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How long --create-topic waits for every partition to get a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    let result = match Cli::parse().command {
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let acks: Acks = args.acks.parse().context("--acks")?;
    let compression: Compression =
        args.compression.parse().map_err(|e| anyhow::anyhow!("--compression: {e}"))?;
    let config = ProducerConfig {
        acks,
        enable_idempotence: args.enable_idempotence,
        compression,
        batch_size: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        ..ProducerConfig::new(common.bootstrap.clone())
    };
    let producer = Producer::new(config)
        .await
        .with_context(|| format!("cannot connect to {}", common.bootstrap))?;
    if common.create_topic {
        create_topic(producer.client(), common).await?;
    }
    // One shared payload: the benchmark measures Strom, not the allocator.
    let payload = Bytes::from(payload(args.record_size));
    let progress = progress_bar(common.num_records);
    let (tx, rx) = mpsc::channel::<(Instant, DeliveryFuture)>(ACK_QUEUE);
    let collector = tokio::spawn(collect_acks(rx, progress.clone()));

    let start = Instant::now();
    for _ in 0..common.num_records {
        let record = ProducerRecord::new(common.topic.clone()).value(payload.clone());
        let sent = Instant::now();
        let pending = producer.send(record).await.context("send failed")?;
        if tx.send((sent, pending)).await.is_err() {
            break; // the collector stopped on an error; it reports it below
        }
    }
    drop(tx);
    producer.flush().await;
    let acked = collector.await.context("acknowledgement collector failed")??;
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    producer.close().await;

    let bytes = acked.count.saturating_mul(args.record_size as u64);
    println!(
        "produce: {} records sent, {}, latency ms: {}",
        acked.count,
        rates(acked.count, bytes, elapsed),
        percentiles(&acked.latency)
    );
    if acked.count < common.num_records {
        bail!("only {} of {} records were acknowledged", acked.count, common.num_records);
    }
    Ok(())
}

struct Acked {
    count: u64,
    latency: Histogram<u64>,
}

/// Awaits acknowledgements in send order and records each one's latency.
async fn collect_acks(
    mut rx: mpsc::Receiver<(Instant, DeliveryFuture)>,
    progress: ProgressBar,
) -> anyhow::Result<Acked> {
    let mut latency = histogram()?;
    let mut count = 0u64;
    while let Some((sent, pending)) = rx.recv().await {
        pending.await.context("record not stored")?;
        latency.saturating_record(micros(sent.elapsed()));
        count += 1;
        if count.is_multiple_of(1024) {
            progress.set_position(count);
        }
    }
    progress.set_position(count);
    Ok(Acked { count, latency })
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::new(common.bootstrap.clone())
    };
    let mut consumer = Consumer::new(config)
        .await
        .with_context(|| format!("cannot connect to {}", common.bootstrap))?;
    if common.create_topic {
        create_topic(consumer.client(), common).await?;
    }
    let partitions = consumer
        .partitions_for(&common.topic)
        .await
        .with_context(|| format!("cannot read topic {:?}", common.topic))?;
    consumer.assign(partitions);

    let progress = progress_bar(common.num_records);
    let mut latency = histogram()?;
    let idle_timeout = Duration::from_millis(args.timeout_ms);
    let (mut count, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut last_record = start;
    while count < common.num_records {
        let left = idle_timeout.saturating_sub(last_record.elapsed());
        if left.is_zero() {
            break;
        }
        let polled = Instant::now();
        let records = consumer.poll(left.min(Duration::from_secs(1))).await?;
        if records.is_empty() {
            continue;
        }
        latency.saturating_record(micros(polled.elapsed()));
        last_record = Instant::now();
        for r in &records {
            let size =
                r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len);
            bytes += size as u64;
        }
        count += records.len() as u64;
        progress.set_position(count.min(common.num_records));
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    println!(
        "consume: {count} records read, {}, poll latency ms: {}",
        rates(count, bytes, elapsed),
        percentiles(&latency)
    );
    if count < common.num_records {
        bail!(
            "only {count} of {} records arrived (none for {} ms)",
            common.num_records,
            args.timeout_ms
        );
    }
    Ok(())
}

/// Creates the topic unless it exists, then waits until every partition has a leader.
async fn create_topic(client: &Client, common: &Common) -> anyhow::Result<()> {
    let topic = &common.topic;
    let configs: HashMap<String, String> = common.configs.iter().cloned().collect();
    match client.create_topic(topic, common.partitions, common.replication_factor, configs).await {
        Ok(()) => {}
        Err(ClientError::Broker { code: ErrorCode::TopicAlreadyExists, .. }) => {
            eprintln!("topic {topic:?} already exists; using it as it is");
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create topic {topic:?}")),
    }
    let give_up = Instant::now() + LEADER_WAIT;
    loop {
        match client.refresh_metadata(topic).await {
            Ok(info) if info.partitions.iter().all(|p| p.leader >= 0) => return Ok(()),
            Ok(_) | Err(ClientError::UnknownTopic(_)) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => bail!("topic {topic:?} has partitions without a leader"),
            Err(e) => return Err(e).with_context(|| format!("topic {topic:?}")),
        }
    }
}

/// A value of `size` bytes of printable, poorly compressible text.
fn payload(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            // xorshift: deterministic, fast, and no dependency on a random crate.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("latency histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn rates(records: u64, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    format!(
        "{:.1} records/sec ({:.2} MB/sec) in {:.3} s",
        records as f64 / secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
        secs
    )
}

fn percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_owned();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "avg {:.3}, p50 {:.3}, p95 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3}",
        h.mean() / 1000.0,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}
