//! `strom-producer`: sends each line of stdin as a record, like `kafka-console-producer`.
//!
//! Lines are read in large chunks on a separate thread and handed to the producer as slices of
//! those chunks (no copy per line); sends are pipelined, keeping a bounded window of pending
//! acknowledgements. At EOF everything is flushed; the exit code is non-zero if any record
//! failed.
//!
//! Failures: every line that was not stored is reported with its line number and the error,
//! on stderr or in `--failed-output FILE` (one `line N: error` per line), so a user can tell
//! exactly which records were delivered; a record is reported failed only when it is known not
//! to be stored (the broker cuts its log back on a failed write).
//!
//! Key separator: with `--key-separator C`, a line is split at the first `C` into key and
//! value. A line without the separator is an error, as in kafka-console-producer
//! (`parse.key=true`): it is reported with its line number and not sent, and the exit code is
//! non-zero. `--ignore-missing-separator` sends such lines with a null key instead.
//!
//! Tombstones: with `--null-marker S` (Kafka's `null.marker`), a value equal to `S` is sent as
//! null, so `k1:<null>` with `--key-separator : --null-marker '<null>'` deletes `k1` from a
//! compacted topic.

mod cli;

use std::collections::VecDeque;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use strom_format::Compression;
use strom_producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerError, ProducerRecord,
};
use tokio::sync::mpsc;

/// Sends stdin lines to a Strom topic.
#[derive(Debug, Parser)]
#[command(name = "strom-producer", version, about)]
struct Args {
    /// host:port of one or more brokers, comma-separated.
    #[arg(long, default_value = "127.0.0.1:9095", value_name = "ADDR")]
    bootstrap: String,
    /// Topic to write to.
    #[arg(long)]
    topic: String,
    /// Split each line at the first occurrence of this string into key and value.
    #[arg(long, value_name = "C")]
    key_separator: Option<String>,
    /// Send lines without the key separator with a null key instead of rejecting them.
    #[arg(long, requires = "key_separator")]
    ignore_missing_separator: bool,
    /// A value equal to this string is sent as null (a tombstone on a compacted topic).
    #[arg(long, value_name = "S")]
    null_marker: Option<String>,
    /// Acknowledgement level: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Kafka's enable.idempotence: retries never store a record twice (acks=all only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    enable_idempotence: bool,
    /// How long a batch waits for more records, in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 16 * 1024, value_parser = positive_usize)]
    batch_size: usize,
    /// Largest request (and so record) in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = positive_usize)]
    max_request_size: usize,
    /// Upper bound from reading a line to its success or failure, retries included (Kafka's
    /// delivery.timeout.ms). A broker restart or a full disk within it costs no record.
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    delivery_timeout_ms: u64,
    /// Deadline of one produce request, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Write the failed lines' reports (`line N: error`) to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    failed_output: Option<PathBuf>,
    /// Most records awaiting acknowledgement at once.
    #[arg(long, default_value_t = 100_000, hide = true)]
    window: usize,
}

fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be positive".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse::<Acks>().map_err(|e| e.to_string())
}

/// Bytes read from stdin per call; lines are cut out of these chunks.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks of lines queued between the reader thread and the sender.
const CHANNEL_CHUNKS: usize = 16;

fn main() -> ExitCode {
    cli::init_logging();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("error: {failed} record(s) were not stored");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends every line; returns how many records failed.
async fn run(args: Args) -> anyhow::Result<u64> {
    if args.window == 0 {
        bail!("--window must be positive");
    }
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    // Settings first: a bad value is the user's to fix, not a cluster that cannot be reached.
    let config = ProducerConfig::builder(args.bootstrap.clone())
        .client_id("strom-producer")
        .acks(args.acks)
        .compression(args.compression)
        .enable_idempotence(args.enable_idempotence)
        .linger(Duration::from_millis(args.linger_ms))
        .batch_size(args.batch_size)
        .max_request_size(args.max_request_size)
        .delivery_timeout(Duration::from_millis(args.delivery_timeout_ms))
        .request_timeout(Duration::from_millis(args.request_timeout_ms))
        .build()
        .context("invalid settings")?;
    let mut failures = Failures::open(args.failed_output.as_deref())?;
    let producer = Producer::new(config)
        .await
        .with_context(|| format!("cannot reach the cluster at {}", args.bootstrap))?;
    // Fail fast on a missing topic instead of once per line.
    producer
        .client()
        .topic_metadata(&args.topic)
        .await
        .map_err(|e| anyhow::anyhow!("{}", ProducerError::from(e)))?;

    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(CHANNEL_CHUNKS);
    let reader = std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || read_lines(tx))
        .context("cannot start the stdin reader")?;

    let mut window: VecDeque<(u64, DeliveryFuture)> = VecDeque::with_capacity(args.window);
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut line_no = 0u64;
    while let Some(lines) = rx.recv().await {
        for line in lines {
            line_no += 1;
            let mut record = ProducerRecord::new(args.topic.clone());
            match separator {
                None => record.value = Some(line),
                Some(sep) => match find(&line, sep) {
                    Some(i) => {
                        record.key = Some(line.slice(..i));
                        record.value = Some(line.slice(i + sep.len()..));
                    }
                    None if args.ignore_missing_separator => record.value = Some(line),
                    None => {
                        failures.report(line_no, &"no key separator found on this line");
                        continue;
                    }
                },
            }
            if let Some(marker) = args.null_marker.as_deref()
                && record.value.as_deref() == Some(marker.as_bytes())
            {
                record.value = None;
            }
            match producer.send(record).await {
                Ok(pending) => window.push_back((line_no, pending)),
                Err(
                    e @ (ProducerError::RecordTooLarge { .. }
                    | ProducerError::InvalidPartition { .. }),
                ) => {
                    failures.report(line_no, &e);
                }
                Err(e) => {
                    // Not about this line: the cluster or the producer is unusable.
                    drop(rx);
                    await_all(&mut window, &mut failures).await;
                    producer.close().await;
                    let _ = failures.finish();
                    return Err(anyhow::Error::new(e).context(format!("sending line {line_no}")));
                }
            }
            if window.len() >= args.window
                && let Some((n, pending)) = window.pop_front()
                && let Err(e) = pending.await
            {
                failures.report(n, &e);
            }
        }
    }
    producer.flush().await;
    await_all(&mut window, &mut failures).await;
    producer.close().await;
    match reader.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).context("reading stdin"),
        Err(_) => bail!("the stdin reader panicked"),
    }
    failures.finish()?;
    if failures.count > 0
        && let Some(path) = &args.failed_output
    {
        eprintln!("the failed lines are listed in {}", path.display());
    }
    Ok(failures.count)
}

async fn await_all(window: &mut VecDeque<(u64, DeliveryFuture)>, failures: &mut Failures) {
    while let Some((n, pending)) = window.pop_front() {
        if let Err(e) = pending.await {
            failures.report(n, &e);
        }
    }
}

/// Where failed lines are reported: every one, as `line N: error`.
struct Failures {
    count: u64,
    out: BufWriter<Box<dyn Write + Send>>,
    /// The first error writing the report; the report is then incomplete, which `finish` says.
    broken: Option<std::io::Error>,
}

impl Failures {
    fn open(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            ),
            None => Box::new(std::io::stderr()),
        };
        Ok(Failures { count: 0, out: BufWriter::new(out), broken: None })
    }

    fn report(&mut self, line: u64, error: &dyn std::fmt::Display) {
        self.count += 1;
        if self.broken.is_none()
            && let Err(e) = writeln!(self.out, "line {line}: {error}")
        {
            self.broken = Some(e);
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let flushed = self.out.flush();
        match self.broken.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("writing the failed-line report")),
        }
    }
}

/// Position of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => haystack.iter().position(|c| c == b),
        _ => haystack.windows(needle.len()).position(|w| w == needle),
    }
}

/// Reads stdin in large chunks and sends its lines (without `\n` / `\r\n`) as slices of those
/// chunks. Stops early if the receiver is gone.
fn read_lines(tx: mpsc::Sender<Vec<Bytes>>) -> std::io::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut pending = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let n = match stdin.read(&mut scratch) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let Some(read) = scratch.get(..n) else { continue };
        if n == 0 {
            // A last line without a trailing newline is still a line.
            if !pending.is_empty() {
                let last = pending.split().freeze();
                let _ = tx.blocking_send(vec![trim_cr(last)]);
            }
            return Ok(());
        }
        pending.extend_from_slice(read);
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else { continue };
        let chunk = pending.split_to(end + 1).freeze();
        let mut lines = Vec::with_capacity(chunk.len() / 16 + 1);
        let mut start = 0;
        while let Some(i) =
            chunk.get(start..).and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            lines.push(trim_cr(chunk.slice(start..start + i)));
            start += i + 1;
        }
        if tx.blocking_send(lines).is_err() {
            return Ok(());
        }
    }
}

fn trim_cr(line: Bytes) -> Bytes {
    match line.last() {
        Some(b'\r') => line.slice(..line.len() - 1),
        _ => line,
    }
}
