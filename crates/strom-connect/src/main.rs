//! `strom-connect`: runs sinks that move records from Strom topics into other systems, exactly
//! once. One sink from flags (`strom-connect postgres ...`) or several from a TOML file
//! (`strom-connect --config sinks.toml`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use strom_connect::{BatchConfig, ConfigFile, ErrorPolicy, Format, Mode, PostgresSink, SinkConfig};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "strom-connect",
    about = "Move records from Strom topics into other systems, exactly once",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// A TOML file describing any number of sinks (`[[postgres]]` tables).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    sink: Option<SinkCommand>,
}

#[derive(Debug, Subcommand)]
enum SinkCommand {
    /// Write records into a PostgreSQL table.
    Postgres(PostgresArgs),
}

#[derive(Debug, clap::Args)]
struct PostgresArgs {
    /// A broker address to start from.
    #[arg(long, env = "STROM_BOOTSTRAP")]
    bootstrap: String,
    /// Topics to read, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    topics: Vec<String>,
    /// Consumer group; instances with the same group split the partitions.
    #[arg(long)]
    group: String,
    /// postgres://user[:password]@host:port/db
    #[arg(long, env = "STROM_CONNECT_DSN")]
    dsn: String,
    /// Destination table (`table` or `schema.table`).
    #[arg(long)]
    table: String,
    /// raw: all of the record in bytea columns; json: the value's fields to columns.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    format: Format,
    /// Key columns (json): the upsert target and what a tombstone deletes by.
    #[arg(long, value_delimiter = ',')]
    key_columns: Vec<String>,
    /// insert or upsert (json).
    #[arg(long, value_enum, default_value_t = Mode::Insert)]
    mode: Mode,
    /// Dead-letter topic for records that cannot be stored.
    #[arg(long)]
    dlq_topic: Option<String>,
    /// fail: stop at a bad record; tolerate: send it to the dead-letter topic.
    #[arg(long, value_enum, default_value_t = ErrorPolicy::Fail)]
    errors: ErrorPolicy,
    /// Rows per transaction at most.
    #[arg(long, default_value_t = BatchConfig::default().max_rows)]
    batch_rows: usize,
    /// Key and value bytes per transaction at most.
    #[arg(long, default_value_t = BatchConfig::default().max_bytes)]
    batch_bytes: usize,
    /// Longest time a record waits in a batch, in milliseconds.
    #[arg(long, default_value_t = BatchConfig::default().flush_interval_ms)]
    flush_interval_ms: u64,
    /// Group session timeout: how soon a dead instance's partitions move on.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
}

impl PostgresArgs {
    fn into_config(self) -> SinkConfig {
        SinkConfig {
            name: None,
            bootstrap: self.bootstrap,
            topics: self.topics,
            group: self.group,
            dsn: self.dsn,
            table: self.table,
            format: self.format,
            key_columns: self.key_columns,
            mode: self.mode,
            dlq_topic: self.dlq_topic,
            errors: self.errors,
            batch: BatchConfig {
                max_rows: self.batch_rows,
                max_bytes: self.batch_bytes,
                flush_interval_ms: self.flush_interval_ms,
            },
            session_timeout_ms: self.session_timeout_ms,
        }
    }
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let sinks = match (cli.config, cli.sink) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            ConfigFile::parse(&text).with_context(|| format!("in {}", path.display()))?.postgres
        }
        (None, Some(SinkCommand::Postgres(args))) => vec![args.into_config()],
        (None, None) => bail!("name a sink (`strom-connect postgres ...`) or pass --config FILE"),
    };
    for sink in &sinks {
        sink.validate()?;
    }

    // SIGINT or SIGTERM: every sink flushes its batch and leaves its group.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });

    let mut tasks = tokio::task::JoinSet::new();
    for config in sinks {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let name = config.name().to_string();
            let sink = PostgresSink::new(&config);
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            strom_connect::run(config, sink, shutdown).await.map_err(|e| (name, e))
        });
    }
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err((name, e))) => {
                tracing::error!(sink = %name, error = %e, "sink stopped");
                failed.get_or_insert(anyhow::anyhow!("sink {name}: {e}"));
                // One failed sink stops the others cleanly: a half-running process would hide it.
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failed.get_or_insert(anyhow::anyhow!("sink task failed: {e}"));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn postgres_flags_parse_as_the_issue_shows() {
        let cli = Cli::try_parse_from([
            "strom-connect",
            "postgres",
            "--bootstrap",
            "127.0.0.1:9095",
            "--topics",
            "orders,more",
            "--group",
            "pg-orders",
            "--dsn",
            "postgres://u@h:5432/db",
            "--table",
            "orders",
            "--format",
            "json",
            "--key-columns",
            "id",
            "--mode",
            "upsert",
            "--dlq-topic",
            "orders-dlq",
            "--errors",
            "tolerate",
        ])
        .expect("parses");
        let Some(SinkCommand::Postgres(args)) = cli.sink else { panic!("no sink") };
        let config = args.into_config();
        assert_eq!(config.topics, vec!["orders", "more"]);
        assert_eq!(config.mode, Mode::Upsert);
        assert!(config.validate().is_ok());
    }
}
