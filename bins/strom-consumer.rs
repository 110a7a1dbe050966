//! `strom-consumer`: prints the records of a topic to stdout, one value per line, like Kafka's
//! console consumer. With `--group` it reads as a member of a consumer group: the group's
//! partitions are shared with the other members, and what was printed is committed.

mod cli;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use strom_consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset, PartitionId, SeekTo,
    TopicPartition,
};
use tokio::time::Instant;

/// Reads records from a Strom topic and prints them to stdout.
#[derive(Debug, Parser)]
#[command(name = "strom-consumer", version)]
struct Args {
    /// Broker address(es) to bootstrap from, `host:port[,host:port...]`.
    #[arg(long, default_value = "127.0.0.1:9095", env = "STROM_BOOTSTRAP")]
    bootstrap: String,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Read as a member of this consumer group: partitions are shared with its other members,
    /// reading resumes at the group's committed offsets, and the offsets of printed records
    /// are committed (periodically and on exit).
    #[arg(long, conflicts_with = "partition")]
    group: Option<String>,
    /// Start from the earliest record instead of only new ones (with --group: where the group
    /// has no committed offset).
    #[arg(long)]
    from_beginning: bool,
    /// Exit after printing this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Print each record's key before its value.
    #[arg(long)]
    print_key: bool,
    /// What separates key and value with --print-key.
    #[arg(long, default_value = "\t")]
    key_separator: String,
    /// `text`: the value (with --print-key, key first), one per line. `json`: one JSON object
    /// per line with topic, partition, offset, timestamp, key, value and headers; keys and
    /// values that are not UTF-8 are base64, flagged by `key_encoding` / `value_encoding`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Read only this partition (default: all partitions of the topic).
    #[arg(long)]
    partition: Option<i32>,
    /// Exit when no record arrives for this many milliseconds (with --group, counted from
    /// when the consumer has joined its group).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// With --group: how long the coordinator waits for a silent member before it moves the
    /// member's partitions to the others.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// With --group: a static member name (Kafka's `group.instance.id`, KIP-345), unique per
    /// running consumer. Restarting within --session-timeout-ms gets the same partitions back
    /// without rebalancing the group; exiting does not leave the group.
    #[arg(long, requires = "group")]
    group_instance_id: Option<String>,
    /// Give up (exit non-zero, naming the partition and offset) when a partition keeps
    /// failing with a storage error (corrupt data on the broker) for this long. Default 10 s,
    /// or half of --timeout-ms if that is shorter, so a stuck partition is never mistaken
    /// for the end of the topic.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    storage_error_timeout_ms: Option<u64>,
}

/// Longest single wait in the poll loop, so the idle timeout is noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(500);
/// How long --timeout-ms waits for the first join of the group before it starts counting:
/// the coordinator may hold a new group's first rebalance for a few seconds.
const JOIN_GRACE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom-consumer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let session_timeout = Duration::from_millis(args.session_timeout_ms);
    let config = ConsumerConfig::builder(args.bootstrap.clone())
        .client_id("strom-consumer")
        .auto_offset_reset(if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        })
        .group(args.group.clone())
        .group_instance_id(args.group_instance_id.clone())
        .session_timeout(session_timeout)
        .heartbeat_interval(session_timeout / 3)
        .storage_error_timeout(storage_error_timeout(&args))
        .build()
        .context("invalid settings")?;
    let mut consumer = Consumer::new(config)
        .await
        .with_context(|| format!("cannot connect to {}", args.bootstrap))?;
    if args.group.is_some() {
        // Fail early on a missing topic, as without a group.
        consumer
            .partitions_for(&args.topic)
            .await
            .with_context(|| format!("cannot read topic {:?}", args.topic))?;
        consumer.subscribe(vec![args.topic.clone()], None)?;
    } else {
        let partitions = assigned_partitions(&consumer, &args).await?;
        consumer.assign(partitions);
    }

    let mut out = Output::new(&args);
    let result = consume(&mut consumer, &args, &mut out).await;
    let flushed = out.flush();
    if args.group.is_some() {
        // Close commits the positions (auto-commit): after `consume` they stop at the last
        // record printed and flushed.
        let closed = consumer.close().await.context("closing the group membership");
        if let Err(e) = &closed {
            eprintln!("strom-consumer: warning: {e:#}");
        }
    }
    match flushed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(anyhow::Error::new(e).context("writing to stdout")),
    }
    eprintln!("Processed a total of {} messages", out.count);
    result
}

/// See `--storage-error-timeout-ms`.
fn storage_error_timeout(args: &Args) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(10);
    match (args.storage_error_timeout_ms, args.timeout_ms) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, Some(idle)) => DEFAULT.min(Duration::from_millis(idle / 2).max(POLL_SLICE / 5)),
        (None, None) => DEFAULT,
    }
}

/// Polls and prints until --max-messages, --timeout-ms, Ctrl-C/SIGTERM, a closed stdout, or an
/// error. Every batch is flushed before the next poll (whose auto-commit may cover it), and on the way out positions are moved back to the first record not printed, so
/// the commit on close covers exactly what reached stdout.
async fn consume(consumer: &mut Consumer, args: &Args, out: &mut Output) -> anyhow::Result<()> {
    let group_mode = args.group.is_some();
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let started = Instant::now();
    let mut joined = !group_mode;
    let mut last_record = Instant::now();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        if args.max_messages.is_some_and(|max| out.count >= max) {
            return Ok(());
        }
        if !joined && consumer.group_metadata().is_some_and(|m| m.generation_id >= 0) {
            joined = true;
            last_record = Instant::now();
        }
        let wait = match idle_timeout {
            Some(t) if joined || started.elapsed() >= JOIN_GRACE => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                left.min(POLL_SLICE)
            }
            _ => POLL_SLICE,
        };
        // Cancelling a poll loses no records (they are handed out after its last await).
        let records = tokio::select! {
            records = consumer.poll(wait) => records,
            () = &mut stop => return Ok(()),
        };
        let records = records.context("consuming failed")?;
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        // Flushed after every poll, so a tail of the topic shows each record as it arrives
        // (in a pipe too), and in group mode before the next poll's auto-commit covers it.
        let flushed = out.write(&records, args.max_messages).and_then(|n| out.flush().map(|()| n));
        match flushed {
            Ok(n) if n == records.len() => {}
            Ok(n) => {
                rewind(consumer, records.get(n..).unwrap_or_default())?;
                return Ok(());
            }
            Err(e) => {
                // Nothing of this batch is known to have reached the reader.
                rewind(consumer, &records)?;
                if e.kind() == io::ErrorKind::BrokenPipe {
                    // The reader went away (`| head`): a normal way to stop.
                    return Ok(());
                }
                return Err(anyhow::Error::new(e).context("writing to stdout"));
            }
        }
    }
}

/// Moves each partition's position back to its first record in `unprinted`, so the commit on
/// close does not cover them. `unprinted` is the tail of one poll's records.
fn rewind(consumer: &mut Consumer, unprinted: &[ConsumerRecord]) -> anyhow::Result<()> {
    let mut first: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
    for record in unprinted {
        first.entry(TopicPartition::new(&*record.topic, record.partition)).or_insert(record.offset);
    }
    for (tp, offset) in first {
        // A partition revoked meanwhile is no longer ours to commit: nothing to undo.
        if consumer.assignment().contains(&tp) {
            consumer.seek(&tp, SeekTo::Offset(offset))?;
        }
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The partitions to read: the one named, or every partition of the topic. Fails if the topic
/// (or the partition) does not exist.
async fn assigned_partitions(
    consumer: &Consumer,
    args: &Args,
) -> anyhow::Result<Vec<TopicPartition>> {
    let all = consumer
        .partitions_for(&args.topic)
        .await
        .with_context(|| format!("cannot read topic {:?}", args.topic))?;
    match args.partition {
        None => Ok(all),
        Some(p) => {
            let tp = TopicPartition::new(args.topic.clone(), PartitionId::new(p));
            if !all.contains(&tp) {
                bail!("topic {:?} has no partition {p} ({} partitions)", args.topic, all.len());
            }
            Ok(vec![tp])
        }
    }
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// One record as a single-line JSON object; field names are stable (scripts depend on them).
fn record_json(record: &ConsumerRecord) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::{Map, Value};
    let mut object = Map::new();
    let bytes_field = |object: &mut Map<String, Value>, name: &str, b: Option<&[u8]>| {
        let value = match b {
            None => Value::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_owned()),
                Err(_) => {
                    object.insert(format!("{name}_encoding"), Value::from("base64"));
                    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
                }
            },
        };
        object.insert(name.to_owned(), value);
    };
    object.insert("topic".into(), Value::from(&*record.topic));
    object.insert("partition".into(), Value::from(record.partition.get()));
    object.insert("offset".into(), Value::from(record.offset.get()));
    object.insert("timestamp".into(), Value::from(record.timestamp));
    bytes_field(&mut object, "key", record.key.as_deref());
    bytes_field(&mut object, "value", record.value.as_deref());
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|h| {
            let mut header = Map::new();
            header.insert("key".into(), Value::from(h.key.as_str()));
            bytes_field(&mut header, "value", h.value.as_deref());
            Value::Object(header)
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    Value::Object(object)
}

/// Buffered stdout and the count of records printed.
struct Output {
    writer: BufWriter<io::Stdout>,
    format: Format,
    print_key: bool,
    separator: Vec<u8>,
    count: u64,
}

impl Output {
    fn new(args: &Args) -> Self {
        Output {
            writer: BufWriter::with_capacity(256 * 1024, io::stdout()),
            format: args.output,
            print_key: args.print_key,
            separator: args.key_separator.as_bytes().to_vec(),
            count: 0,
        }
    }

    /// Prints records, stopping at `max` in total; returns how many of `records` it printed.
    fn write(&mut self, records: &[ConsumerRecord], max: Option<u64>) -> io::Result<usize> {
        let mut printed = 0;
        for record in records {
            if max.is_some_and(|max| self.count >= max) {
                break;
            }
            if self.format == Format::Json {
                serde_json::to_writer(&mut self.writer, &record_json(record))?;
                self.writer.write_all(b"\n")?;
                self.count += 1;
                printed += 1;
                continue;
            }
            if self.print_key {
                self.writer.write_all(record.key.as_deref().unwrap_or(b"null"))?;
                self.writer.write_all(&self.separator)?;
            }
            self.writer.write_all(record.value.as_deref().unwrap_or(b"null"))?;
            self.writer.write_all(b"\n")?;
            self.count += 1;
            printed += 1;
        }
        Ok(printed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}
