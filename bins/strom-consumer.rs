//! `strom-consumer`: prints the records of a topic to stdout, one value per line, like Kafka's
//! console consumer.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use strom_consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, PartitionId, TopicPartition,
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
    /// Start from the earliest record instead of only new ones.
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
    /// Read only this partition (default: all partitions of the topic).
    #[arg(long)]
    partition: Option<i32>,
    /// Exit when no record arrives for this many milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

/// Longest single wait in the poll loop, so Ctrl-C and the idle timeout are noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
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
    let config = ConsumerConfig {
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..ConsumerConfig::new(args.bootstrap.clone())
    };
    let mut consumer = Consumer::new(config)
        .await
        .with_context(|| format!("cannot connect to {}", args.bootstrap))?;
    // Where the partitions come from; a `--group` subscription will be the other source.
    let partitions = assigned_partitions(&consumer, &args).await?;
    consumer.assign(partitions);

    let mut out = Output::new(&args);
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        if args.max_messages.is_some_and(|max| out.count >= max) {
            break Ok(());
        }
        let wait = match idle_timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break Ok(());
                }
                left.min(POLL_SLICE)
            }
            None => POLL_SLICE,
        };
        let records = tokio::select! {
            records = consumer.poll(wait) => records,
            _ = &mut ctrl_c => break Ok(()),
        };
        let records = match records {
            Ok(records) => records,
            Err(e) => break Err(anyhow::Error::new(e).context("consuming failed")),
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        match out.write(&records, args.max_messages) {
            Ok(()) => {}
            // The reader went away (`| head`): a normal way to stop.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context("writing to stdout")),
        }
    };
    match out.flush() {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(anyhow::Error::new(e).context("writing to stdout")),
    }
    eprintln!("Processed a total of {} messages", out.count);
    result
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

/// Buffered stdout and the count of records printed.
struct Output {
    writer: BufWriter<io::Stdout>,
    print_key: bool,
    separator: Vec<u8>,
    count: u64,
}

impl Output {
    fn new(args: &Args) -> Self {
        Output {
            writer: BufWriter::with_capacity(256 * 1024, io::stdout()),
            print_key: args.print_key,
            separator: args.key_separator.as_bytes().to_vec(),
            count: 0,
        }
    }

    /// Prints records, stopping at `max` in total.
    fn write(&mut self, records: &[ConsumerRecord], max: Option<u64>) -> io::Result<()> {
        for record in records {
            if max.is_some_and(|max| self.count >= max) {
                break;
            }
            if self.print_key {
                self.writer.write_all(record.key.as_deref().unwrap_or(b"null"))?;
                self.writer.write_all(&self.separator)?;
            }
            self.writer.write_all(record.value.as_deref().unwrap_or(b"null"))?;
            self.writer.write_all(b"\n")?;
            self.count += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}
