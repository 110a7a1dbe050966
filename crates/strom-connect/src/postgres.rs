//! The PostgreSQL sink: writes a batch and the group's offsets (table
//! `strom_connect_offsets`) in one transaction, so a row is in the table exactly when its
//! offset is behind the stored next offset.
//!
//! Raw records go in with binary COPY; JSON records with one multi-row statement per run of
//! inserts/upserts or deletes (`json_populate_recordset` turns the batch's JSON array into
//! typed rows, so PostgreSQL converts each field to its column's type). The offsets row of each
//! partition is locked (`SELECT ... FOR UPDATE`) and compared with what this instance expects
//! before anything is written: a stale instance that lost the partition in a rebalance cannot
//! write behind the new owner's back.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::pin_mut;
use serde_json::{Map, Value};
use strom_consumer::{ConsumerRecord, TopicPartition};
use strom_format::{Offset, PartitionId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, NoTls, Transaction};
use tracing::{debug, info, warn};

use crate::ConnectError;
use crate::config::{Format, Mode, SinkConfig};
use crate::sink::{NOTHING_STORED, OffsetUpdate, Sink};

/// The table of stored offsets, shared by every sink writing to the database.
pub const OFFSETS_TABLE: &str = "strom_connect_offsets";
/// Advisory lock key taken around the sink's DDL ("strom" in ASCII).
const DDL_LOCK: i64 = 0x73_7472_6f6d;
/// How long a connection attempt may take before it counts as "unavailable".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the destination table looks like, learnt once in [`Sink::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// The raw layout (created by the sink if missing).
    Raw,
    /// JSON fields map to these columns by name (an existing table).
    Columns(Vec<String>),
    /// A table the sink created: topic, partition, offset, the key columns (text) and the
    /// whole value in a jsonb column `value`.
    Document,
}

/// One PostgreSQL destination. Reconnects on the next call after a connection failure.
#[derive(Debug)]
pub struct PostgresSink {
    dsn: String,
    client: Option<Client>,
    target: Target,
}

/// The destination table and how records map onto it.
#[derive(Debug)]
struct Target {
    table: String,
    format: Format,
    mode: Mode,
    key_columns: Vec<String>,
    shape: Option<Shape>,
}

/// How a failed statement is classified.
enum Failure {
    /// Connection lost, server restarting, ...: retry.
    Unavailable(String),
    /// Something about the data (class 22 data exception, class 23 constraint violation).
    Data(String),
    /// Anything else: give up.
    Other(String),
}

impl Failure {
    fn into_error(self) -> ConnectError {
        match self {
            Failure::Unavailable(m) => ConnectError::Unavailable(m),
            Failure::Data(m) | Failure::Other(m) => ConnectError::Sink(m),
        }
    }
}

fn classify(e: &tokio_postgres::Error) -> Failure {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    };
    match e.code().map(|c| c.code()) {
        // Connection exceptions, operator intervention (shutdown, crash recovery),
        // insufficient resources, serialization failure, deadlock: all pass.
        Some(code)
            if code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01" =>
        {
            Failure::Unavailable(message)
        }
        Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::Data(message),
        Some(_) => Failure::Other(message),
        // No SQLSTATE: a closed connection, the socket, a connect timeout pass; a parameter
        // that does not serialize does not.
        None if e.is_closed()
            || io_source(e)
            || message.contains("timeout")
            || message.contains("connect") =>
        {
            Failure::Unavailable(message)
        }
        None => Failure::Other(message),
    }
}

/// Whether an I/O error is behind `e`.
fn io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn pg_err(e: tokio_postgres::Error) -> ConnectError {
    classify(&e).into_error()
}

/// The open connection in `slot`, connecting first if there is none.
async fn connect<'a>(
    slot: &'a mut Option<Client>,
    dsn: &str,
) -> Result<&'a mut Client, ConnectError> {
    if slot.as_ref().is_some_and(Client::is_closed) {
        *slot = None;
    }
    if slot.is_none() {
        let mut config = tokio_postgres::Config::from_str(dsn)
            .map_err(|e| ConnectError::Config(format!("dsn: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("strom-connect");
        let (client, connection) = config.connect(NoTls).await.map_err(pg_err)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "postgres connection ended");
            }
        });
        *slot = Some(client);
    }
    slot.as_mut().ok_or_else(|| ConnectError::Unavailable("no connection".into()))
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table` or `schema.table`, each part quoted.
fn qualified(table: &str) -> String {
    table.split('.').map(ident).collect::<Vec<_>>().join(".")
}

/// One thing a JSON batch does to the table, in record order.
enum Op {
    /// Insert (or upsert) this row object; `key` identifies it for de-duplication.
    Put { index: usize, row: Map<String, Value>, key: String },
    /// Delete the row whose key columns are in this object.
    Delete { index: usize, row: Map<String, Value>, key: String },
}

impl Op {
    fn index(&self) -> usize {
        match self {
            Op::Put { index, .. } | Op::Delete { index, .. } => *index,
        }
    }
}

impl PostgresSink {
    /// A sink for `config`'s DSN and table; connects in [`Sink::prepare`].
    pub fn new(config: &SinkConfig) -> PostgresSink {
        PostgresSink {
            dsn: config.dsn.clone(),
            client: None,
            target: Target {
                table: config.table.clone(),
                format: config.format,
                mode: config.mode,
                key_columns: config.key_columns.clone(),
                shape: None,
            },
        }
    }

    /// Forgets the connection after a failure that may have broken it.
    fn reset_on(&mut self, e: &ConnectError) {
        if e.is_retriable() {
            self.client = None;
        }
    }

    async fn prepare_inner(&mut self) -> Result<(), ConnectError> {
        let table = qualified(&self.target.table);
        let format = self.target.format;
        let key_columns = self.target.key_columns.clone();
        let mode = self.target.mode;
        let table_name = self.target.table.clone();
        let client = connect(&mut self.client, &self.dsn).await?;
        // Instances starting together would race on CREATE TABLE IF NOT EXISTS (it is not
        // atomic in PostgreSQL): one lock per database serializes the DDL.
        let client = client.transaction().await.map_err(pg_err)?;
        client.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK]).await.map_err(pg_err)?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (
                    group_id text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    next_offset bigint NOT NULL,
                    PRIMARY KEY (group_id, topic, partition))"
            ))
            .await
            .map_err(pg_err)?;
        let shape = match format {
            Format::Raw => {
                client
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {table} (
                            topic text NOT NULL,
                            partition integer NOT NULL,
                            \"offset\" bigint NOT NULL,
                            \"timestamp\" timestamptz,
                            key bytea,
                            value bytea,
                            headers jsonb,
                            PRIMARY KEY (topic, partition, \"offset\"))"
                    ))
                    .await
                    .map_err(pg_err)?;
                Shape::Raw
            }
            Format::Json => {
                let columns = table_columns(&client, &table).await?;
                if columns.is_empty() {
                    let keys: String = key_columns
                        .iter()
                        .map(|k| format!("{} text NOT NULL, ", ident(k)))
                        .collect();
                    let primary = if key_columns.is_empty() {
                        "topic, partition, \"offset\"".to_string()
                    } else {
                        key_columns.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ")
                    };
                    client
                        .batch_execute(&format!(
                            "CREATE TABLE IF NOT EXISTS {table} (
                                topic text NOT NULL,
                                partition integer NOT NULL,
                                \"offset\" bigint NOT NULL,
                                {keys}
                                value jsonb,
                                PRIMARY KEY ({primary}))"
                        ))
                        .await
                        .map_err(pg_err)?;
                    info!(table = %table_name, "created table for JSON documents");
                    Shape::Document
                } else if ["topic", "partition", "offset", "value"]
                    .iter()
                    .all(|c| columns.iter().any(|(name, _)| name == c))
                    && columns.iter().any(|(name, ty)| name == "value" && ty == "jsonb")
                {
                    Shape::Document
                } else {
                    Shape::Columns(columns.into_iter().map(|(name, _)| name).collect())
                }
            }
        };
        if let Shape::Columns(columns) = &shape {
            if let Some(missing) = key_columns.iter().find(|k| !columns.contains(k)) {
                return Err(ConnectError::Config(format!(
                    "table {table_name} has no key column {missing:?}"
                )));
            }
        }
        if mode == Mode::Upsert && shape == Shape::Raw {
            return Err(ConnectError::Config("raw tables take no upserts".into()));
        }
        client.commit().await.map_err(pg_err)?;
        self.target.shape = Some(shape);
        Ok(())
    }

    async fn stored_inner(
        &mut self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Offset>, ConnectError> {
        let client = connect(&mut self.client, &self.dsn).await?;
        let topics: Vec<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        let ids: Vec<i32> = partitions.iter().map(|tp| tp.partition.get()).collect();
        // Rows for partitions never written, so the write's fence can lock an existing row
        // (two instances inserting the same missing row would not fence each other).
        client
            .execute(
                &format!(
                    "INSERT INTO {OFFSETS_TABLE} (group_id, topic, partition, next_offset)
                     SELECT $1, t, p, $4 FROM unnest($2::text[], $3::int[]) AS u(t, p)
                     ON CONFLICT DO NOTHING"
                ),
                &[&group, &topics, &ids, &NOTHING_STORED.get()],
            )
            .await
            .map_err(pg_err)?;
        let rows = client
            .query(
                &format!(
                    "SELECT topic, partition, next_offset FROM {OFFSETS_TABLE}
                     WHERE group_id = $1 AND topic = ANY($2)"
                ),
                &[&group, &topics],
            )
            .await
            .map_err(pg_err)?;
        let mut stored = HashMap::new();
        for row in rows {
            let tp = TopicPartition::new(
                row.try_get::<_, String>(0).map_err(pg_err)?,
                PartitionId::new(row.try_get(1).map_err(pg_err)?),
            );
            if partitions.contains(&tp) {
                stored.insert(tp, Offset::new(row.try_get(2).map_err(pg_err)?));
            }
        }
        Ok(stored)
    }

    /// Locks the offsets rows and compares them with the expected ones. `Ok(true)`: go on;
    /// `Ok(false)`: the batch is already stored (a retried commit).
    async fn fence(
        tx: &Transaction<'_>,
        group: &str,
        offsets: &[OffsetUpdate],
    ) -> Result<bool, ConnectError> {
        let topics: Vec<&str> = offsets.iter().map(|u| u.tp.topic.as_str()).collect();
        let ids: Vec<i32> = offsets.iter().map(|u| u.tp.partition.get()).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT o.topic, o.partition, o.next_offset FROM {OFFSETS_TABLE} o
                     JOIN unnest($2::text[], $3::int[]) AS u(t, p) ON o.topic = u.t AND o.partition = u.p
                     WHERE o.group_id = $1 ORDER BY o.topic, o.partition FOR UPDATE OF o"
                ),
                &[&group, &topics, &ids],
            )
            .await
            .map_err(pg_err)?;
        let mut stored = HashMap::new();
        for row in rows {
            let topic: String = row.try_get(0).map_err(pg_err)?;
            let partition: i32 = row.try_get(1).map_err(pg_err)?;
            let next: i64 = row.try_get(2).map_err(pg_err)?;
            stored.insert((topic, partition), next);
        }
        let at =
            |u: &OffsetUpdate| stored.get(&(u.tp.topic.clone(), u.tp.partition.get())).copied();
        if offsets.iter().all(|u| at(u) == Some(u.expected.get())) {
            return Ok(true);
        }
        if offsets.iter().all(|u| at(u) == Some(u.next.get())) {
            return Ok(false);
        }
        let moved: Vec<String> = offsets
            .iter()
            .filter(|u| at(u) != Some(u.expected.get()))
            .map(|u| format!("{} stored {:?}, expected {}", u.tp, at(u), u.expected))
            .collect();
        Err(ConnectError::Fenced(moved.join("; ")))
    }

    async fn write_inner(
        &mut self,
        group: &str,
        records: &[ConsumerRecord],
        offsets: &[OffsetUpdate],
    ) -> Result<(), ConnectError> {
        let target = &self.target;
        let shape =
            target.shape.clone().ok_or_else(|| ConnectError::Sink("not prepared".into()))?;
        // Bad JSON is found before any round trip.
        let ops = if shape == Shape::Raw { Vec::new() } else { target.json_ops(records)? };
        let table = qualified(&target.table);
        let client = connect(&mut self.client, &self.dsn).await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if !Self::fence(&tx, group, offsets).await? {
            debug!("batch already stored by an earlier attempt");
            return Ok(());
        }
        if shape == Shape::Raw {
            copy_raw(&tx, &table, records).await?;
        } else if let Err(failure) = target.apply_ops(&tx, &ops).await {
            return match failure {
                Failure::Data(message) => {
                    drop(tx);
                    Err(self.locate_bad_op(&ops, message).await)
                }
                other => Err(other.into_error()),
            };
        }
        for u in offsets {
            tx.execute(
                &format!(
                    "UPDATE {OFFSETS_TABLE} SET next_offset = $4
                     WHERE group_id = $1 AND topic = $2 AND partition = $3"
                ),
                &[&group, &u.tp.topic, &u.tp.partition.get(), &u.next.get()],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(())
    }

    /// After a batch statement failed on its data: replays the operations one by one, in order
    /// and each under a savepoint (the whole replay is rolled back), to find the first that
    /// fails, and names it.
    async fn locate_bad_op(&mut self, ops: &[Op], batch_message: String) -> ConnectError {
        let target = &self.target;
        let result = async {
            let client = connect(&mut self.client, &self.dsn).await?;
            let mut tx = client.transaction().await.map_err(pg_err)?;
            for (i, op) in ops.iter().enumerate() {
                let sp = tx.savepoint("one_row").await.map_err(pg_err)?;
                let outcome = target.apply_ops(&sp, std::slice::from_ref(op)).await;
                match outcome {
                    Ok(()) => sp.commit().await.map_err(pg_err)?,
                    Err(Failure::Data(reason)) => {
                        drop(sp);
                        let index = ops[i].index();
                        return Ok(ConnectError::BadRecord { index, reason });
                    }
                    Err(other) => return Err(other.into_error()),
                }
            }
            // Replayed one by one, in order, every operation succeeds: only the batch as a
            // whole failed, which no single record can be blamed for.
            Ok(ConnectError::Sink(batch_message))
        };
        // The transaction is rolled back when dropped: nothing of the search is kept.
        match result.await {
            Ok(e) | Err(e) => e,
        }
    }
}

impl Target {
    /// Turns the JSON batch into operations, or names the first record that cannot be one.
    fn json_ops(&self, records: &[ConsumerRecord]) -> Result<Vec<Op>, ConnectError> {
        let document = self.shape == Some(Shape::Document);
        let mut ops = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let bad = |reason: String| ConnectError::BadRecord { index, reason };
            let key_object = record_key(record, &self.key_columns).map_err(bad)?;
            match &record.value {
                None => {
                    let Some(key) = key_object else {
                        return Err(bad(
                            "a tombstone (null value) needs key columns to delete by".into()
                        ));
                    };
                    let identity = Value::Object(key.clone()).to_string();
                    ops.push(Op::Delete { index, row: key, key: identity });
                }
                Some(bytes) => {
                    let value: Value = serde_json::from_slice(bytes)
                        .map_err(|e| bad(format!("invalid JSON: {e}")))?;
                    let Value::Object(object) = value else {
                        return Err(bad("the value is not a JSON object".into()));
                    };
                    let mut row = if document {
                        let mut row = Map::new();
                        row.insert("topic".into(), Value::from(&*record.topic));
                        row.insert("partition".into(), Value::from(record.partition.get()));
                        row.insert("offset".into(), Value::from(record.offset.get()));
                        for k in &self.key_columns {
                            if let Some(v) = object.get(k) {
                                row.insert(k.clone(), v.clone());
                            }
                        }
                        row.insert("value".into(), Value::Object(object));
                        row
                    } else {
                        object
                    };
                    // Key fields absent from the value come from the record's key.
                    if let Some(key) = &key_object {
                        for (k, v) in key {
                            row.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    let mut identity = Map::new();
                    for k in &self.key_columns {
                        match row.get(k) {
                            Some(v) if !v.is_null() => {
                                identity.insert(k.clone(), v.clone());
                            }
                            _ if self.mode == Mode::Upsert => {
                                return Err(bad(format!("key column {k:?} is missing")));
                            }
                            _ => {}
                        }
                    }
                    let key = if self.mode == Mode::Upsert {
                        Value::Object(identity).to_string()
                    } else {
                        // Plain inserts are never merged.
                        format!("#{index}")
                    };
                    ops.push(Op::Put { index, row, key });
                }
            }
        }
        Ok(ops)
    }

    /// The statement for a run of puts or deletes, taking one JSON array parameter.
    fn statement(&self, delete: bool, columns: &[String]) -> String {
        let table = qualified(&self.table);
        if delete {
            let on: Vec<String> = self
                .key_columns
                .iter()
                .map(|k| format!("dst.{c} = src.{c}", c = ident(k)))
                .collect();
            return format!(
                "DELETE FROM {table} AS dst USING json_populate_recordset(NULL::{table}, $1::text::json) AS src WHERE {}",
                on.join(" AND ")
            );
        }
        let list = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let mut sql = format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::text::json)"
        );
        if self.mode == Mode::Upsert {
            let keys = self.key_columns.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !self.key_columns.contains(c))
                .map(|c| format!("{c} = EXCLUDED.{c}", c = ident(c)))
                .collect();
            if updates.is_empty() {
                let _ = write!(sql, " ON CONFLICT ({keys}) DO NOTHING");
            } else {
                let _ = write!(sql, " ON CONFLICT ({keys}) DO UPDATE SET {}", updates.join(", "));
            }
        }
        sql
    }

    /// The table columns a run of rows sets: those present in at least one row.
    fn run_columns(&self, rows: &[&Map<String, Value>]) -> Vec<String> {
        match &self.shape {
            Some(Shape::Columns(columns)) => columns
                .iter()
                .filter(|c| rows.iter().any(|r| r.contains_key(*c)))
                .cloned()
                .collect(),
            _ => {
                let mut columns: Vec<String> =
                    ["topic", "partition", "offset"].iter().map(|s| s.to_string()).collect();
                columns.extend(self.key_columns.iter().cloned());
                columns.push("value".into());
                columns
            }
        }
    }

    /// The columns one operation sets: empty for a delete.
    fn op_columns(&self, op: &Op) -> Vec<String> {
        match op {
            Op::Put { row, .. } => self.run_columns(&[row]),
            Op::Delete { .. } => Vec::new(),
        }
    }

    /// Executes `ops` in order, as runs of consecutive puts that set the same columns, or of
    /// deletes: one statement per run. A record sets exactly the fields it has (an insert
    /// leaves the others to their defaults, an upsert leaves them unchanged). Within a run of
    /// upserts the last record of a key wins (one statement must not touch a row twice).
    async fn apply_ops(&self, tx: &Transaction<'_>, ops: &[Op]) -> Result<(), Failure> {
        let mut start = 0;
        while start < ops.len() {
            let delete = matches!(ops[start], Op::Delete { .. });
            let columns = self.op_columns(&ops[start]);
            let mut end = start + 1;
            while end < ops.len()
                && matches!(ops[end], Op::Delete { .. }) == delete
                && (delete || self.op_columns(&ops[end]) == columns)
            {
                end += 1;
            }
            let mut last: HashMap<&str, usize> = HashMap::new();
            for (i, op) in ops[start..end].iter().enumerate() {
                let (Op::Put { key, .. } | Op::Delete { key, .. }) = op;
                last.insert(key.as_str(), start + i);
            }
            let rows: Vec<Value> = (start..end)
                .filter(|i| {
                    let (Op::Put { key, .. } | Op::Delete { key, .. }) = &ops[*i];
                    last.get(key.as_str()) == Some(i)
                })
                .map(|i| match &ops[i] {
                    Op::Put { row, .. } | Op::Delete { row, .. } => Value::Object(row.clone()),
                })
                .collect();
            if !delete && columns.is_empty() {
                return Err(Failure::Data("no field of the value names a column".into()));
            }
            let json = Value::Array(rows).to_string();
            tx.execute(&self.statement(delete, &columns), &[&json])
                .await
                .map_err(|e| classify(&e))?;
            start = end;
        }
        Ok(())
    }
}

/// Column names and type names of `table`; empty if it does not exist.
async fn table_columns(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>, ConnectError> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1::text)::text", &[&table])
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?)))
        .collect()
}

/// The key columns' values from the record key: a JSON object's fields by name, or (with one
/// key column) the whole key as a JSON scalar or, failing that, as text.
fn record_key(
    record: &ConsumerRecord,
    key_columns: &[String],
) -> Result<Option<Map<String, Value>>, String> {
    if key_columns.is_empty() {
        return Ok(None);
    }
    let Some(bytes) = &record.key else { return Ok(None) };
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let mut key = Map::new();
    match parsed {
        Some(Value::Object(object)) => {
            for k in key_columns {
                if let Some(v) = object.get(k) {
                    key.insert(k.clone(), v.clone());
                }
            }
        }
        Some(scalar) if key_columns.len() == 1 && !scalar.is_array() => {
            key.insert(key_columns[0].clone(), scalar);
        }
        _ if key_columns.len() == 1 => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| "the key is not UTF-8".to_string())?;
            key.insert(key_columns[0].clone(), Value::from(text));
        }
        _ => return Err("the key is not a JSON object with the key columns".into()),
    }
    Ok(if key.len() == key_columns.len() { Some(key) } else { None })
}

/// A record's headers as jsonb: `[{"key": k, "value": text}]`, with `value_hex` instead for a
/// value that is not UTF-8, and `null` for a null value.
fn headers_json(record: &ConsumerRecord) -> Value {
    Value::Array(
        record
            .headers
            .iter()
            .map(|h| {
                let mut o = Map::new();
                o.insert("key".into(), Value::from(h.key.as_str()));
                match &h.value {
                    None => {
                        o.insert("value".into(), Value::Null);
                    }
                    Some(v) => match std::str::from_utf8(v) {
                        Ok(text) => {
                            o.insert("value".into(), Value::from(text));
                        }
                        Err(_) => {
                            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                            o.insert("value_hex".into(), Value::from(hex));
                        }
                    },
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// Binary COPY of raw records into `table` inside `tx`.
async fn copy_raw(
    tx: &Transaction<'_>,
    table: &str,
    records: &[ConsumerRecord],
) -> Result<(), ConnectError> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} (topic, partition, \"offset\", \"timestamp\", key, value, headers) FROM STDIN BINARY"
        ))
        .await
        .map_err(pg_err)?;
    let types = [
        Type::TEXT,
        Type::INT4,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::BYTEA,
        Type::BYTEA,
        Type::JSONB,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for r in records {
        let ts = timestamp(r.timestamp);
        let headers = headers_json(r);
        let key: Option<&[u8]> = r.key.as_deref();
        let value: Option<&[u8]> = r.value.as_deref();
        let row: [&(dyn ToSql + Sync); 7] =
            [&&*r.topic, &r.partition.get(), &r.offset.get(), &ts, &key, &value, &headers];
        writer.as_mut().write(&row).await.map_err(pg_err)?;
    }
    let n = writer.finish().await.map_err(pg_err)?;
    if n != records.len() as u64 {
        warn!(copied = n, expected = records.len(), "COPY stored an unexpected row count");
        return Err(ConnectError::Sink(format!("COPY stored {n} rows of {}", records.len())));
    }
    Ok(())
}

/// A record timestamp (ms since the epoch, possibly negative) as a point in time.
fn timestamp(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

impl Sink for PostgresSink {
    async fn prepare(&mut self) -> Result<(), ConnectError> {
        let result = self.prepare_inner().await;
        if let Err(e) = &result {
            self.reset_on(e);
        }
        result
    }

    async fn stored_offsets(
        &mut self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Offset>, ConnectError> {
        let result = self.stored_inner(group, partitions).await;
        if let Err(e) = &result {
            self.reset_on(e);
        }
        result
    }

    async fn write(
        &mut self,
        group: &str,
        records: &[ConsumerRecord],
        offsets: &[OffsetUpdate],
    ) -> Result<(), ConnectError> {
        let result = self.write_inner(group, records, offsets).await;
        if let Err(e) = &result {
            self.reset_on(e);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("s.t"), "\"s\".\"t\"");
    }

    fn target(mode: Mode, shape: Shape) -> Target {
        Target {
            table: "users".into(),
            format: Format::Json,
            mode,
            key_columns: vec!["id".into()],
            shape: Some(shape),
        }
    }

    fn record(key: Option<&'static str>, value: Option<&'static str>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "users".into(),
            partition: PartitionId::new(0),
            offset: Offset::new(7),
            timestamp: 0,
            key: key.map(|k| bytes::Bytes::from_static(k.as_bytes())),
            value: value.map(|v| bytes::Bytes::from_static(v.as_bytes())),
            headers: Vec::new(),
        }
    }

    #[test]
    fn invalid_json_names_its_record() {
        let t = target(Mode::Upsert, Shape::Columns(vec!["id".into(), "name".into()]));
        let records = [record(Some("1"), Some(r#"{"id": 1}"#)), record(Some("2"), Some("{oops"))];
        match t.json_ops(&records) {
            Err(ConnectError::BadRecord { index: 1, reason }) => {
                assert!(reason.contains("invalid JSON"), "{reason}")
            }
            other => panic!("{:?}", other.map(|ops| ops.len())),
        }
    }

    #[test]
    fn key_fields_missing_from_the_value_come_from_the_record_key() {
        let t = target(Mode::Upsert, Shape::Columns(vec!["id".into(), "name".into()]));
        let ops = t.json_ops(&[record(Some("5"), Some(r#"{"name": "e"}"#))]).expect("ops");
        let Op::Put { row, key, .. } = &ops[0] else { panic!("not a put") };
        assert_eq!(row.get("id"), Some(&Value::from(5)));
        assert_eq!(key, r#"{"id":5}"#);
    }

    #[test]
    fn tombstone_deletes_by_key_and_needs_one() {
        let t = target(Mode::Upsert, Shape::Columns(vec!["id".into()]));
        let ops = t.json_ops(&[record(Some(r#"{"id": 3}"#), None)]).expect("ops");
        assert!(
            matches!(&ops[0], Op::Delete { row, .. } if row.get("id") == Some(&Value::from(3)))
        );
        assert!(matches!(
            t.json_ops(&[record(None, None)]),
            Err(ConnectError::BadRecord { index: 0, .. })
        ));
    }

    #[test]
    fn upsert_sets_only_the_fields_a_record_has() {
        let t =
            target(Mode::Upsert, Shape::Columns(vec!["id".into(), "name".into(), "age".into()]));
        let ops = t.json_ops(&[record(Some("1"), Some(r#"{"id": 1, "name": "a"}"#))]).expect("ops");
        assert_eq!(t.op_columns(&ops[0]), vec!["id".to_string(), "name".to_string()]);
        let sql = t.statement(false, &t.op_columns(&ops[0]));
        assert!(
            sql.contains(r#"ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name""#),
            "{sql}"
        );
        assert!(!sql.contains("age"), "{sql}");
    }

    #[test]
    fn negative_timestamps_are_before_the_epoch() {
        assert!(timestamp(-1000) < UNIX_EPOCH);
        assert_eq!(timestamp(1000), UNIX_EPOCH + Duration::from_secs(1));
    }
}
