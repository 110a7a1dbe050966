//! `strom-admin`: topic administration against a Strom cluster (create, list, describe,
//! delete). Exits non-zero with a one-line reason when the cluster refuses an operation.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use strom_client::proto::v1::{ErrorCode, TopicDescription};
use strom_client::{Client, ClientConfig, ClientError, check_code};
use tracing_subscriber::EnvFilter;

/// Administers a Strom cluster.
#[derive(Debug, Parser)]
#[command(name = "strom-admin", version, about)]
struct Args {
    /// host:port of one or more brokers, comma-separated.
    #[arg(long, default_value = "127.0.0.1:9095", value_name = "ADDR", global = true)]
    bootstrap: String,
    /// Deadline of each request to the cluster, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS", global = true)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(Topics),
}

#[derive(Debug, Subcommand)]
enum Topics {
    /// Creates a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long)]
        partitions: i32,
        /// Replicas per partition [default: the broker's default].
        #[arg(long, default_value_t = 0)]
        replication_factor: i32,
        /// Topic config override with Kafka's names (repeatable), e.g. retention.ms=3600000.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Lists topic names and partition counts.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Describes topics (all when no name is given): partitions, leaders, replicas, offsets.
    Describe {
        /// Topic names.
        names: Vec<String>,
    },
    /// Deletes a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(args.bootstrap.clone());
    config.client_id = "strom-admin".to_owned();
    config.request_timeout = Duration::from_millis(args.timeout_ms);
    let client = Client::connect(config)
        .await
        .with_context(|| format!("cannot reach the cluster at {}", args.bootstrap))?;
    match args.command {
        Command::Topics(cmd) => topics(&client, cmd).await,
    }
}

async fn topics(client: &Client, cmd: Topics) -> anyhow::Result<()> {
    match cmd {
        Topics::Create { name, partitions, replication_factor, configs } => {
            if partitions <= 0 {
                bail!("--partitions must be at least 1");
            }
            if replication_factor < 0 {
                bail!("--replication-factor must not be negative");
            }
            let configs: HashMap<String, String> = configs.into_iter().collect();
            client
                .create_topic(&name, partitions, replication_factor, configs)
                .await
                .map_err(|e| explain(e, &name))?;
            println!("Created topic {name} with {partitions} partition(s).");
        }
        Topics::List { internal } => {
            let mut topics = client.list_topics(internal).await.map_err(|e| explain(e, ""))?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                if t.internal {
                    println!("{}\t{} partition(s)\tinternal", t.name, t.num_partitions);
                } else {
                    println!("{}\t{} partition(s)", t.name, t.num_partitions);
                }
            }
        }
        Topics::Describe { names } => {
            let mut descriptions =
                client.describe_topics(&names).await.map_err(|e| explain(e, ""))?;
            descriptions.sort_by(|a, b| a.name.cmp(&b.name));
            let mut failed = 0usize;
            for d in &descriptions {
                if let Err(e) = check_code(d.error_code, &d.error_message) {
                    eprintln!("error: {:#}", explain(e, &d.name));
                    failed += 1;
                    continue;
                }
                print_description(d);
            }
            if failed > 0 {
                bail!("{failed} topic(s) could not be described");
            }
        }
        Topics::Delete { name } => {
            client.delete_topic(&name).await.map_err(|e| explain(e, &name))?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(())
}

/// Turns the cluster's answer into a sentence a user can act on.
fn explain(e: ClientError, topic: &str) -> anyhow::Error {
    match &e {
        ClientError::UnknownTopic(t) => anyhow::anyhow!("topic {t:?} does not exist"),
        ClientError::Broker { code: ErrorCode::TopicAlreadyExists, .. } => {
            anyhow::anyhow!("topic {topic:?} already exists")
        }
        ClientError::Broker { code: ErrorCode::UnknownTopicOrPartition, .. } => {
            anyhow::anyhow!("topic {topic:?} does not exist")
        }
        ClientError::Broker { code, message } if message.is_empty() => {
            anyhow::anyhow!("{} ({code:?})", code.as_str_name())
        }
        ClientError::Broker { code, message } => {
            anyhow::anyhow!("{message} ({})", code.as_str_name())
        }
        _ => anyhow::Error::new(e),
    }
}

fn print_description(d: &TopicDescription) {
    let mut configs: Vec<String> = d.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    configs.sort();
    println!(
        "Topic: {}\tPartitions: {}{}\tConfigs: {}",
        d.name,
        d.partitions.len(),
        if d.internal { "\tInternal: true" } else { "" },
        if configs.is_empty() { "-".to_owned() } else { configs.join(",") }
    );
    let header =
        ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "START-OFFSET", "HIGH-WATERMARK"];
    let mut rows: Vec<[String; 7]> = Vec::with_capacity(d.partitions.len());
    let mut partitions: Vec<_> = d.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition);
    let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for p in partitions {
        rows.push([
            p.partition.to_string(),
            if p.leader < 0 { "none".to_owned() } else { p.leader.to_string() },
            p.leader_epoch.to_string(),
            list(&p.replicas),
            list(&p.isr),
            p.log_start_offset.to_string(),
            p.high_watermark.to_string(),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> =
            cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
}
