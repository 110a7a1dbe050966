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
use crate::json_rows::{Op, Shape, Target};
use crate::sink::{NOTHING_STORED, OffsetUpdate, Sink};

/// The table of stored offsets, shared by every sink writing to the database.
pub const OFFSETS_TABLE: &str = "strom_connect_offsets";
/// Advisory lock key taken around the sink's DDL ("strom" in ASCII).
const DDL_LOCK: i64 = 0x73_7472_6f6d;
/// How long a connection attempt may take before it counts as "unavailable".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One PostgreSQL destination. Reconnects on the next call after a connection failure.
#[derive(Debug)]
pub struct PostgresSink {
    dsn: String,
    client: Option<Client>,
    target: Target,
}

/// How a failed statement is classified.
pub(crate) enum Failure {
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

pub(crate) fn classify(e: &tokio_postgres::Error) -> Failure {
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
        // that does not serialize does not. Decided by type, not by the message: every
        // connect failure and connect timeout of tokio-postgres carries an io::Error.
        None if e.is_closed() || io_source(e) => Failure::Unavailable(message),
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
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table` or `schema.table`, each part quoted.
pub(crate) fn qualified(table: &str) -> String {
    table.split('.').map(ident).collect::<Vec<_>>().join(".")
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
        if let Shape::Columns(columns) = &shape
            && let Some(missing) = key_columns.iter().find(|k| !columns.contains(k))
        {
            return Err(ConnectError::Config(format!(
                "table {table_name} has no key column {missing:?}"
            )));
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

    #[test]
    fn negative_timestamps_are_before_the_epoch() {
        assert!(timestamp(-1000) < UNIX_EPOCH);
        assert_eq!(timestamp(1000), UNIX_EPOCH + Duration::from_secs(1));
    }
}
