//! `strom-bench`: produce and consume throughput and latency against a running cluster, in
//! the spirit of Kafka's `producer-perf-test` and `consumer-perf-test`; paced runs for latency
//! under a fixed load, end-to-end latency, and CPU seconds per GB of the bench process and of
//! the broker.

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
use serde_json::json;
use strom_client::ErrorCode;
use strom_client::OffsetSpec;
use strom_client::{Client, ClientError};
use strom_consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use strom_format::Compression;
use strom_producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// A producer and a consumer in this process: latency from a record's send to its receipt
    /// by the consumer (the send instant travels in the first 8 bytes of the value).
    E2e(ProduceArgs),
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
    /// The broker's Prometheus endpoint, e.g. http://127.0.0.1:9096/metrics: its
    /// `process_cpu_seconds_total` is read before and after the run to report the broker's CPU
    /// seconds per GB.
    #[arg(long, value_name = "URL")]
    broker_metrics: Option<String>,
    /// Result format: `text` (one line) or `json` (one object, snake_case fields).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
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
    /// Send at this fixed rate instead of as fast as possible: records per second (`50000`)
    /// or bytes of values per second (`50MB/s`, `512KB/s`; MB = 2^20 bytes as in the MB/sec
    /// this tool prints). Latency is then measured for every record.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<Rate>,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Give up when no record arrives for this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

/// A `--rate`: records or value bytes per second.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    Records(f64),
    Bytes(f64),
}

impl Rate {
    /// Records per second for records of `record_size` value bytes.
    fn records_per_sec(self, record_size: usize) -> f64 {
        match self {
            Rate::Records(r) => r,
            Rate::Bytes(b) => b / record_size.max(1) as f64,
        }
    }
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (number, unit) = match lower.strip_suffix("/s") {
        Some(rest) => {
            let split = rest.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(rest.len());
            (rest.get(..split).unwrap_or_default(), rest.get(split..).unwrap_or_default())
        }
        None => (lower.as_str(), ""),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("bad rate {s:?}"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("rate must be positive, got {s:?}"));
    }
    match unit {
        "" => Ok(Rate::Records(value)),
        "b" => Ok(Rate::Bytes(value)),
        "kb" | "kib" => Ok(Rate::Bytes(value * 1024.0)),
        "mb" | "mib" => Ok(Rate::Bytes(value * 1024.0 * 1024.0)),
        "gb" | "gib" => Ok(Rate::Bytes(value * 1024.0 * 1024.0 * 1024.0)),
        _ => Err(format!("unknown rate unit in {s:?}: use records/s, B/s, KB/s, MB/s or GB/s")),
    }
}

/// When each record of a paced run may be sent: record `n` at `n / rate` seconds after the
/// start. The sender asks the clock only when it has used up what was due at its last look,
/// so a 50,000 records/s run reads the clock about once per timer tick, not per record.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    per_sec: f64,
}

impl Pacer {
    fn new(per_sec: f64) -> Self {
        Pacer { per_sec: per_sec.max(f64::MIN_POSITIVE) }
    }

    /// How many records may have been sent `elapsed` after the start.
    fn allowed(&self, elapsed: Duration) -> u64 {
        // The epsilon absorbs float rounding, so a record is allowed at its own `due` instant.
        let n = elapsed.as_secs_f64() * self.per_sec + 1e-6;
        if n >= u64::MAX as f64 { u64::MAX } else { n as u64 + 1 }
    }

    /// How long after the start record `n` (counting from 0) is due.
    fn due(&self, n: u64) -> Duration {
        Duration::try_from_secs_f64(n as f64 / self.per_sec).unwrap_or(Duration::MAX)
    }
}

/// Bound of the queue between sending and awaiting acknowledgements, in chunks of
/// [`ACK_CHUNK`] records; the producer's own buffer memory limits what is really in flight.
const ACK_QUEUE: usize = 1024;
/// Records handed to the acknowledgement collector at once: a channel message per record
/// cost more than the producer's own work per record (two threads touching the channel's
/// cache lines for every record). Paced runs hand over what they have before every wait, so
/// no record waits in a chunk while the sender sleeps.
const ACK_CHUNK: usize = 256;
/// Largest latency the histograms track, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How long --create-topic waits for every partition to get a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// Unpaced runs time one record in this many (two clock reads per timed record).
const LATENCY_SAMPLE: u64 = 64;
/// The divisor of "CPU seconds per GB" (GB = 2^30 bytes, like the MB/sec printed).
const GB: f64 = 1024.0 * 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    let result = match Cli::parse().command {
        Command::Produce(args) => produce(args, false).await,
        Command::E2e(args) => produce(args, true).await,
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

/// CPU time of this process and (when `--broker-metrics` is given) of the broker.
struct CpuMeter {
    own: f64,
    broker: Option<(String, f64)>,
}

impl CpuMeter {
    async fn start(common: &Common) -> anyhow::Result<Self> {
        let broker = match &common.broker_metrics {
            Some(url) => Some((url.clone(), broker_cpu_seconds(url).await?)),
            None => None,
        };
        Ok(CpuMeter { own: own_cpu_seconds(), broker })
    }

    /// CPU seconds spent since `start`: (this process, the broker).
    async fn stop(self) -> anyhow::Result<(f64, Option<f64>)> {
        let own = own_cpu_seconds() - self.own;
        let broker = match self.broker {
            Some((url, before)) => Some(broker_cpu_seconds(&url).await? - before),
            None => None,
        };
        Ok((own, broker))
    }
}

/// User plus system CPU seconds of this process (all threads), from getrusage.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a properly sized rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `process_cpu_seconds_total` of the broker, scraped over plain HTTP/1.0.
async fn broker_cpu_seconds(url: &str) -> anyhow::Result<f64> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/metrics"),
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        // A metrics page is a few KiB; the bound keeps a wrong URL from eating memory.
        stream.take(16 << 20).read_to_end(&mut body).await?;
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("{url}: timed out"))?
        .with_context(|| format!("cannot read {url}"))?;
    parse_cpu_seconds(&String::from_utf8_lossy(&body))
        .with_context(|| format!("{url} has no process_cpu_seconds_total"))
}

fn parse_cpu_seconds(page: &str) -> Option<f64> {
    page.lines()
        .filter_map(|l| l.strip_prefix("process_cpu_seconds_total"))
        .find_map(|rest| rest.split_whitespace().next().filter(|_| rest.starts_with(' ')))
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            // With labels: `process_cpu_seconds_total{...} 1.5`.
            page.lines()
                .filter(|l| l.starts_with("process_cpu_seconds_total{"))
                .find_map(|l| l.rsplit_once('}').and_then(|(_, v)| v.split_whitespace().next()))
                .and_then(|v| v.parse().ok())
        })
}

/// What a run measured, printed as text or JSON.
struct Report {
    mode: &'static str,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency_name: &'static str,
    latency: Histogram<u64>,
    e2e: Option<Histogram<u64>>,
    cpu: (f64, Option<f64>),
    rate: Option<Rate>,
}

impl Report {
    fn print(&self, output: &str) {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let gb = self.bytes as f64 / GB;
        let per_gb = |cpu: f64| if gb > 0.0 { cpu / gb } else { 0.0 };
        if output == "json" {
            let mut v = json!({
                "mode": self.mode,
                "records": self.records,
                "bytes": self.bytes,
                "seconds": secs,
                "records_per_sec": self.records as f64 / secs,
                "mb_per_sec": self.bytes as f64 / secs / (1024.0 * 1024.0),
                "latency_ms": latency_json(&self.latency),
                "client_cpu_seconds": self.cpu.0,
                "client_cpu_seconds_per_gb": per_gb(self.cpu.0),
            });
            if let Some(obj) = v.as_object_mut() {
                obj.insert("latency_kind".into(), json!(self.latency_name));
                if let Some(e2e) = &self.e2e {
                    obj.insert("e2e_latency_ms".into(), latency_json(e2e));
                }
                if let Some(broker) = self.cpu.1 {
                    obj.insert("broker_cpu_seconds".into(), json!(broker));
                    obj.insert("broker_cpu_seconds_per_gb".into(), json!(per_gb(broker)));
                }
                if let Some(rate) = self.rate {
                    let target = match rate {
                        Rate::Records(r) => json!({ "records_per_sec": r }),
                        Rate::Bytes(b) => json!({ "mb_per_sec": b / (1024.0 * 1024.0) }),
                    };
                    obj.insert("target_rate".into(), target);
                }
            }
            println!("{v}");
            return;
        }
        let mut line = format!(
            "{}: {} records, {}, {} ms: {}",
            self.mode,
            self.records,
            rates(self.records, self.bytes, self.elapsed),
            self.latency_name,
            percentiles(&self.latency)
        );
        if let Some(e2e) = &self.e2e {
            line.push_str(&format!(", end-to-end ms: {}", percentiles(e2e)));
        }
        line.push_str(&format!(
            ", client CPU {:.2} s ({:.2} s/GB)",
            self.cpu.0,
            per_gb(self.cpu.0)
        ));
        if let Some(broker) = self.cpu.1 {
            line.push_str(&format!(", broker CPU {broker:.2} s ({:.2} s/GB)", per_gb(broker)));
        }
        println!("{line}");
    }
}

fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "samples": h.len(),
        "avg": h.mean() / 1000.0,
        "p50": ms(h.value_at_quantile(0.50)),
        "p95": ms(h.value_at_quantile(0.95)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

async fn produce(args: ProduceArgs, e2e: bool) -> anyhow::Result<()> {
    let common = &args.common;
    let acks: Acks = args.acks.parse().context("--acks")?;
    let compression: Compression =
        args.compression.parse().map_err(|e| anyhow::anyhow!("--compression: {e}"))?;
    if e2e && args.record_size < 8 {
        bail!("e2e needs --record-size of at least 8 (the send instant travels in the value)");
    }
    let config = ProducerConfig::builder(common.bootstrap.clone())
        .acks(acks)
        .enable_idempotence(args.enable_idempotence)
        .compression(compression)
        .batch_size(args.batch_size)
        .linger(Duration::from_millis(args.linger_ms))
        .build()
        .context("invalid producer settings")?;
    let producer = Producer::new(config)
        .await
        .with_context(|| format!("cannot connect to {}", common.bootstrap))?;
    if common.create_topic {
        create_topic(producer.client(), common).await?;
    }
    // The instant e2e send stamps count from, shared with the consumer task.
    let origin = Instant::now();
    let receiver = if e2e { Some(start_receiver(common, origin).await?) } else { None };
    // One shared payload: the benchmark measures Strom, not the allocator (e2e stamps a copy).
    let payload = Bytes::from(payload(args.record_size));
    let progress = progress_bar(common.num_records);
    let (tx, rx) = mpsc::channel::<Vec<(Option<Instant>, DeliveryFuture)>>(ACK_QUEUE);
    let collector = tokio::spawn(collect_acks(rx, progress.clone()));
    let pacer = args.rate.map(|r| Pacer::new(r.records_per_sec(args.record_size)));
    let sample_every = if pacer.is_some() || e2e { 1 } else { LATENCY_SAMPLE };
    let topic: std::sync::Arc<str> = std::sync::Arc::from(common.topic.as_str());

    let cpu = CpuMeter::start(common).await?;
    let start = Instant::now();
    let mut allowed = 0u64;
    let mut chunk = Vec::with_capacity(ACK_CHUNK);
    for i in 0..common.num_records {
        if let Some(pacer) = &pacer
            && i >= allowed
        {
            allowed = pacer.allowed(start.elapsed());
            if i >= allowed {
                if !chunk.is_empty() {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(ACK_CHUNK));
                    if tx.send(full).await.is_err() {
                        break; // the collector stopped on an error; it reports it below
                    }
                }
                tokio::time::sleep_until(start + pacer.due(i)).await;
                allowed = pacer.allowed(start.elapsed());
            }
        }
        let sent = i.is_multiple_of(sample_every).then(Instant::now);
        let value = match (e2e, sent) {
            (true, Some(sent)) => stamped(&payload, sent.duration_since(origin)),
            _ => payload.clone(),
        };
        let record = ProducerRecord::new(&*topic).value(value);
        let pending = producer.send(record).await.context("send failed")?;
        chunk.push((sent, pending));
        if chunk.len() >= ACK_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(ACK_CHUNK));
            if tx.send(full).await.is_err() {
                break; // the collector stopped on an error; it reports it below
            }
        }
    }
    if !chunk.is_empty() {
        // An error here means the collector stopped on one; it reports it below.
        let _ = tx.send(chunk).await;
    }
    drop(tx);
    producer.flush().await;
    let acked = collector.await.context("acknowledgement collector failed")??;
    let e2e_latency = match receiver {
        Some(receiver) => Some(receiver.await.context("consumer task failed")??),
        None => None,
    };
    let elapsed = start.elapsed();
    let cpu = cpu.stop().await?;
    progress.finish_and_clear();
    producer.close().await;

    let bytes = acked.count.saturating_mul(args.record_size as u64);
    Report {
        mode: if e2e { "e2e" } else { "produce" },
        records: acked.count,
        bytes,
        elapsed,
        latency_name: "send-to-ack latency",
        latency: acked.latency,
        e2e: e2e_latency,
        cpu,
        rate: args.rate,
    }
    .print(&common.output);
    if acked.count < common.num_records {
        bail!("only {} of {} records were acknowledged", acked.count, common.num_records);
    }
    Ok(())
}

/// A copy of `payload` whose first 8 bytes are `since_start` in nanoseconds (little endian).
fn stamped(payload: &Bytes, since_start: Duration) -> Bytes {
    let mut value = payload.to_vec();
    let nanos = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX);
    if let Some(head) = value.get_mut(..8) {
        head.copy_from_slice(&nanos.to_le_bytes());
    }
    Bytes::from(value)
}

/// The send instant `stamped` put into a value, as time since the start.
fn stamp_of(value: &[u8]) -> Option<Duration> {
    let head: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(head)))
}

/// Starts the e2e consumer at the current end of every partition, so it sees exactly the
/// records sent from now on; resolves to the histogram of send-to-receipt latencies.
async fn start_receiver(
    common: &Common,
    origin: Instant,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>> {
    let config = ConsumerConfig::builder(common.bootstrap.clone())
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .context("invalid consumer settings")?;
    let mut consumer = Consumer::new(config)
        .await
        .with_context(|| format!("cannot connect to {}", common.bootstrap))?;
    let partitions = consumer
        .partitions_for(&common.topic)
        .await
        .with_context(|| format!("cannot read topic {:?}", common.topic))?;
    consumer.assign(partitions.clone());
    for tp in &partitions {
        let end = consumer
            .client()
            .list_offset(&tp.topic, tp.partition, OffsetSpec::Latest)
            .await
            .with_context(|| format!("cannot read the end offset of {tp}"))?;
        let to = end.map_or(SeekTo::Beginning, SeekTo::Offset);
        consumer.seek(tp, to).context("seek")?;
    }
    let expected = common.num_records;
    Ok(tokio::spawn(async move {
        let mut latency = histogram()?;
        let idle = Duration::from_secs(30);
        let mut last = Instant::now();
        let mut count = 0u64;
        while count < expected {
            if last.elapsed() > idle {
                bail!("e2e consumer: only {count} of {expected} records arrived");
            }
            let records = consumer.poll(Duration::from_millis(100)).await?;
            if records.is_empty() {
                continue;
            }
            let now = Instant::now().duration_since(origin);
            last = Instant::now();
            for r in &records {
                if let Some(sent) = r.value.as_deref().and_then(stamp_of) {
                    latency.saturating_record(micros(now.saturating_sub(sent)));
                }
            }
            count += records.len() as u64;
        }
        consumer.close().await.ok();
        Ok(latency)
    }))
}

struct Acked {
    count: u64,
    latency: Histogram<u64>,
}

/// Awaits acknowledgements in send order and records the latency of the timed ones.
async fn collect_acks(
    mut rx: mpsc::Receiver<Vec<(Option<Instant>, DeliveryFuture)>>,
    progress: ProgressBar,
) -> anyhow::Result<Acked> {
    let mut latency = histogram()?;
    let mut count = 0u64;
    while let Some(chunk) = rx.recv().await {
        for (sent, pending) in chunk {
            pending.await.context("record not stored")?;
            if let Some(sent) = sent {
                latency.saturating_record(micros(sent.elapsed()));
            }
            count += 1;
            if count.is_multiple_of(1024) {
                progress.set_position(count);
            }
        }
    }
    progress.set_position(count);
    Ok(Acked { count, latency })
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let config = ConsumerConfig::builder(common.bootstrap.clone())
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .context("invalid consumer settings")?;
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
    let cpu = CpuMeter::start(common).await?;
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
    let cpu = cpu.stop().await?;
    progress.finish_and_clear();
    Report {
        mode: "consume",
        records: count,
        bytes,
        elapsed,
        latency_name: "poll latency",
        latency,
        e2e: None,
        cpu,
        rate: None,
    }
    .print(&common.output);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_records_or_bytes() {
        assert_eq!(parse_rate("50000"), Ok(Rate::Records(50_000.0)));
        assert_eq!(parse_rate("50000/s"), Ok(Rate::Records(50_000.0)));
        assert_eq!(parse_rate("50MB/s"), Ok(Rate::Bytes(50.0 * 1024.0 * 1024.0)));
        assert_eq!(parse_rate("1.5 kb/s"), Ok(Rate::Bytes(1536.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5TB/s").is_err());
        assert!(parse_rate("NaN").is_err());
        let r = Rate::Bytes(50.0 * 1024.0 * 1024.0).records_per_sec(1024);
        assert!((r - 51_200.0).abs() < 1e-6);
    }

    #[test]
    fn pacer_spreads_records_evenly() {
        let p = Pacer::new(1000.0);
        // Record 0 goes at once; record n is due n ms after the start.
        assert_eq!(p.allowed(Duration::ZERO), 1);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(250), Duration::from_millis(250));
        assert_eq!(p.allowed(Duration::from_millis(250)), 251);
        // A sender that waits until record n is due may then send exactly up to n.
        for n in [1u64, 7, 999, 123_456] {
            assert!(p.allowed(p.due(n)) > n, "record {n} is allowed when due");
            assert!(p.allowed(p.due(n).saturating_sub(Duration::from_micros(10))) <= n);
        }
        // A whole second allows the rate's worth (plus the first record).
        assert_eq!(Pacer::new(51_200.0).allowed(Duration::from_secs(1)), 51_201);
        assert_eq!(p.allowed(Duration::MAX), u64::MAX);
    }

    #[test]
    fn e2e_stamp_round_trips() {
        let payload = Bytes::from(payload(32));
        let v = stamped(&payload, Duration::from_nanos(123_456_789));
        assert_eq!(v.len(), 32);
        assert_eq!(&v[8..], &payload[8..]);
        assert_eq!(stamp_of(&v), Some(Duration::from_nanos(123_456_789)));
        assert_eq!(stamp_of(b"short"), None);
    }

    #[test]
    fn broker_cpu_is_read_from_the_metrics_page() {
        let page = "# HELP process_cpu_seconds_total CPU.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\nprocess_cpu_seconds_totalx 3\n";
        assert_eq!(parse_cpu_seconds(page), Some(12.5));
        assert_eq!(parse_cpu_seconds("process_cpu_seconds_total{node=\"1\"} 2.25\n"), Some(2.25));
        assert_eq!(parse_cpu_seconds("other 1\n"), None);
    }
}
