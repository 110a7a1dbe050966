//! How JSON records become rows: the shape of the destination table, the operations a batch
//! does to it (put or delete, in record order, keyed for upserts), and the multi-row statements
//! that carry them, each taking the rows as one JSON array parameter that
//! `json_populate_recordset` turns into typed rows, so PostgreSQL converts each field to its
//! column's type and names the offending value when one does not fit.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};
use strom_consumer::ConsumerRecord;
use tokio_postgres::Transaction;

use crate::ConnectError;
use crate::config::{Format, Mode};
use crate::postgres::{Failure, classify, ident, qualified};

/// What the destination table looks like, learnt once in [`Sink::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The raw layout (created by the sink if missing).
    Raw,
    /// JSON fields map to these columns by name (an existing table).
    Columns(Vec<String>),
    /// A table the sink created: topic, partition, offset, the key columns (text) and the
    /// whole value in a jsonb column `value`.
    Document,
}

/// The destination table and how records map onto it.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) table: String,
    pub(crate) format: Format,
    pub(crate) mode: Mode,
    pub(crate) key_columns: Vec<String>,
    pub(crate) shape: Option<Shape>,
}

/// One thing a JSON batch does to the table, in record order.
pub(crate) enum Op {
    /// Insert (or upsert) this row object; `key` identifies it for de-duplication.
    Put { index: usize, row: Map<String, Value>, key: String },
    /// Delete the row whose key columns are in this object.
    Delete { index: usize, row: Map<String, Value>, key: String },
}

impl Op {
    pub(crate) fn index(&self) -> usize {
        match self {
            Op::Put { index, .. } | Op::Delete { index, .. } => *index,
        }
    }
}

impl Target {
    /// Turns the JSON batch into operations, or names the first record that cannot be one.
    pub(crate) fn json_ops(&self, records: &[ConsumerRecord]) -> Result<Vec<Op>, ConnectError> {
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
    pub(crate) async fn apply_ops(&self, tx: &Transaction<'_>, ops: &[Op]) -> Result<(), Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use strom_format::{Offset, PartitionId};

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
}
