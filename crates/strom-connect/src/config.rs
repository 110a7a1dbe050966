//! What one sink is told: where to read (bootstrap, topics, group), where to write (DSN,
//! table), how records become rows (format, mode, key columns), what to do with bad records,
//! and how large a batch may grow. The same struct is filled from command-line flags or from
//! one `[[postgres]]` table of a TOML file, and [`SinkConfig::validate`] checks it once at
//! start.

use std::time::Duration;

use serde::Deserialize;

use crate::ConnectError;

/// Upper bound on rows in one batch, whatever the configuration says: a batch lives in
/// memory and in one PostgreSQL transaction.
pub const MAX_BATCH_ROWS: usize = 1_000_000;
/// Upper bound on the bytes (keys and values) of one batch.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// How a record becomes a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Everything of the record, untouched: topic, partition, offset, timestamp, key bytea,
    /// value bytea, headers jsonb; primary key (topic, partition, offset). Written with COPY.
    #[default]
    Raw,
    /// The value is a JSON object whose fields map to columns by name (an existing table), or
    /// is stored whole in a jsonb column `value` (a table the sink creates).
    Json,
}

/// Whether a record adds a row or replaces the row with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every record adds a row.
    #[default]
    Insert,
    /// A record replaces the row with the same key columns (INSERT ... ON CONFLICT DO UPDATE).
    Upsert,
}

/// What a record that cannot be stored does to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Stop with the record's error; nothing at or past it is committed.
    #[default]
    Fail,
    /// Send the record to the dead-letter topic, with headers naming the error and where it
    /// came from, and go on.
    Tolerate,
}

/// Batch limits: a batch is written when it reaches `max_rows` or `max_bytes`, or when
/// `flush_interval` has passed since its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Rows per batch (one PostgreSQL transaction).
    pub max_rows: usize,
    /// Key and value bytes per batch.
    pub max_bytes: usize,
    /// Longest time a record waits in a batch, in milliseconds.
    pub flush_interval_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_rows: 20_000, max_bytes: 16 * 1024 * 1024, flush_interval_ms: 500 }
    }
}

impl BatchConfig {
    /// [`BatchConfig::flush_interval_ms`] as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
}

/// One PostgreSQL sink: the flags of `strom-connect postgres`, or one `[[postgres]]` table of a
/// `--config` file.
///
/// ```
/// let file = r#"
/// [[postgres]]
/// bootstrap = "127.0.0.1:9095"
/// topics = ["orders"]
/// group = "pg-orders"
/// dsn = "postgres://strom@127.0.0.1:5432/shop"
/// table = "orders"
/// "#;
/// let sinks = strom_connect::ConfigFile::parse(file).unwrap().postgres;
/// assert_eq!(sinks[0].table, "orders");
/// assert_eq!(sinks[0].format, strom_connect::Format::Raw);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// A name for logs; defaults to the table.
    #[serde(default)]
    pub name: Option<String>,
    /// A broker address to start from.
    pub bootstrap: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Consumer group: instances with the same group split the partitions, and the offsets
    /// stored in PostgreSQL are per group.
    pub group: String,
    /// `postgres://user[:password]@host:port/db` (or a key=value connection string).
    pub dsn: String,
    /// Destination table, optionally `schema.table`.
    pub table: String,
    /// How records become rows.
    #[serde(default)]
    pub format: Format,
    /// Columns that identify a row (json format): the upsert conflict target and what a
    /// tombstone deletes by.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Insert or upsert.
    #[serde(default)]
    pub mode: Mode,
    /// Dead-letter topic for records that cannot be stored (required with `tolerate`).
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// What a bad record does.
    #[serde(default)]
    pub errors: ErrorPolicy,
    /// Batch limits.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Consumer-group session timeout in milliseconds: how soon a dead instance's partitions
    /// move to the others.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

impl SinkConfig {
    /// The name logs use.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.table)
    }

    /// Checks the combination of settings once, at start.
    pub fn validate(&self) -> Result<(), ConnectError> {
        let bad = |m: String| Err(ConnectError::Config(format!("sink {}: {m}", self.name())));
        if self.topics.is_empty() || self.topics.iter().any(|t| t.is_empty()) {
            return bad("topics must name at least one topic".into());
        }
        if self.group.is_empty() {
            return bad("group must not be empty".into());
        }
        if self.table.is_empty() || self.table.split('.').count() > 2 {
            return bad(format!("table {:?} must be `table` or `schema.table`", self.table));
        }
        if self.format == Format::Raw && (self.mode == Mode::Upsert || !self.key_columns.is_empty())
        {
            return bad(
                "raw format has a fixed key (topic, partition, offset): no upsert, no key columns"
                    .into(),
            );
        }
        if self.mode == Mode::Upsert && self.key_columns.is_empty() {
            return bad("upsert needs --key-columns".into());
        }
        if self.errors == ErrorPolicy::Tolerate && self.dlq_topic.is_none() {
            return bad("errors = tolerate needs a dead-letter topic (--dlq-topic)".into());
        }
        if self.batch.max_rows == 0 || self.batch.max_rows > MAX_BATCH_ROWS {
            return bad(format!("batch.max_rows must be in 1..={MAX_BATCH_ROWS}"));
        }
        if self.batch.max_bytes == 0 || self.batch.max_bytes > MAX_BATCH_BYTES {
            return bad(format!("batch.max_bytes must be in 1..={MAX_BATCH_BYTES}"));
        }
        if self.batch.flush_interval_ms == 0 {
            return bad("batch.flush_interval_ms must be positive".into());
        }
        Ok(())
    }
}

/// A `--config` file: any number of `[[postgres]]` sinks, run side by side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The PostgreSQL sinks.
    #[serde(default)]
    pub postgres: Vec<SinkConfig>,
}

impl ConfigFile {
    /// Parses and validates a config file's text.
    pub fn parse(text: &str) -> Result<ConfigFile, ConnectError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| ConnectError::Config(e.to_string()))?;
        if file.postgres.is_empty() {
            return Err(ConnectError::Config("the file describes no [[postgres]] sink".into()));
        }
        for sink in &file.postgres {
            sink.validate()?;
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> SinkConfig {
        SinkConfig {
            name: None,
            bootstrap: "b".into(),
            topics: vec!["t".into()],
            group: "g".into(),
            dsn: "postgres://x@y/z".into(),
            table: "t".into(),
            format: Format::Json,
            key_columns: vec![],
            mode: Mode::Insert,
            dlq_topic: None,
            errors: ErrorPolicy::Fail,
            batch: BatchConfig::default(),
            session_timeout_ms: 10_000,
        }
    }

    #[test]
    fn upsert_without_key_columns_is_refused() {
        let config = SinkConfig { mode: Mode::Upsert, ..sink() };
        assert!(matches!(config.validate(), Err(ConnectError::Config(_))));
    }

    #[test]
    fn tolerate_without_dead_letter_topic_is_refused() {
        let config = SinkConfig { errors: ErrorPolicy::Tolerate, ..sink() };
        assert!(matches!(config.validate(), Err(ConnectError::Config(_))));
    }

    #[test]
    fn raw_format_refuses_upsert() {
        let config = SinkConfig {
            format: Format::Raw,
            mode: Mode::Upsert,
            key_columns: vec!["id".into()],
            ..sink()
        };
        assert!(matches!(config.validate(), Err(ConnectError::Config(_))));
    }

    #[test]
    fn config_file_describes_several_sinks() {
        let text = r#"
            [[postgres]]
            bootstrap = "127.0.0.1:9095"
            topics = ["orders"]
            group = "pg-orders"
            dsn = "postgres://strom@127.0.0.1/shop"
            table = "orders"

            [[postgres]]
            bootstrap = "127.0.0.1:9095"
            topics = ["users"]
            group = "pg-users"
            dsn = "postgres://strom@127.0.0.1/shop"
            table = "users"
            format = "json"
            mode = "upsert"
            key_columns = ["id"]
            errors = "tolerate"
            dlq_topic = "users-dlq"
            batch = { max_rows = 500 }
        "#;
        let file = ConfigFile::parse(text).expect("valid file");
        assert_eq!(file.postgres.len(), 2);
        assert_eq!(file.postgres[1].mode, Mode::Upsert);
        assert_eq!(file.postgres[1].batch.max_rows, 500);
        assert_eq!(file.postgres[1].batch.flush_interval_ms, 500);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"
            [[postgres]]
            bootstrap = "b"
            topics = ["t"]
            group = "g"
            dsn = "d"
            table = "t"
            tabel = "typo"
        "#;
        assert!(matches!(ConfigFile::parse(text), Err(ConnectError::Config(_))));
    }
}
