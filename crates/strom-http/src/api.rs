//! The console's JSON API under `/api/`: cluster, topics (list, detail, create), consumer
//! groups with lag and its recent history, and the records of one partition by offset or
//! timestamp. Field names are snake_case and stable. Errors are `{"error": "..."}` with a
//! status that says whose fault it is (400 bad input, 404 unknown, 409 exists, 503 not here
//! or not now).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strom_broker::{ApiError, FetchParams, FetchPartitionParams, NewTopic};
use strom_format::{Batches, Offset, TimestampType};
use strom_proto::v1::ErrorCode;

use crate::server::AppState;

/// Most records one message-browser page returns.
pub(crate) const MAX_RECORDS_PER_PAGE: usize = 200;
/// Records a page returns unless asked for another count.
const DEFAULT_RECORDS_PER_PAGE: usize = 20;
/// Most bytes read from the log for one page.
const MAX_PAGE_BYTES: usize = 4 << 20;
/// Longest key, value or header value shown; longer ones are cut (and flagged).
const MAX_SHOWN_BYTES: usize = 64 * 1024;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/cluster", get(cluster))
        .route("/api/topics", get(topics).post(create_topic))
        .route("/api/topics/{name}", get(topic))
        .route("/api/groups", get(groups))
        .route("/api/groups/{id}", get(group))
        .route("/api/messages", get(messages))
}

/// An error answer: `{"error": message}` with a status.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let status = match e.code {
            ErrorCode::UnknownTopicOrPartition => StatusCode::NOT_FOUND,
            ErrorCode::TopicAlreadyExists => StatusCode::CONFLICT,
            ErrorCode::InvalidTopicException
            | ErrorCode::InvalidPartitions
            | ErrorCode::InvalidReplicationFactor
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidConfig
            | ErrorCode::OffsetOutOfRange => StatusCode::BAD_REQUEST,
            ErrorCode::NotLeaderOrFollower
            | ErrorCode::NotController
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, format!("{}: {}", e.code.as_str_name(), e.message))
    }
}

#[derive(Serialize)]
struct Node {
    node_id: i32,
    address: String,
    fenced: bool,
    voter: bool,
    controller: bool,
    leader_partitions: usize,
    under_replicated_partitions: usize,
    offline_partitions: usize,
}

async fn cluster(State(state): State<Arc<AppState>>) -> Response {
    let broker = &state.broker;
    let quorum = broker.quorum_status();
    let controller = quorum.controller.unwrap_or(-1);
    let nodes: Vec<Node> = broker
        .describe_nodes()
        .into_iter()
        .map(|n| Node {
            controller: n.node_id == controller,
            node_id: n.node_id,
            address: n.address,
            fenced: n.fenced,
            voter: n.voter,
            leader_partitions: n.leader_partitions,
            under_replicated_partitions: n.under_replicated_partitions,
            offline_partitions: n.offline_partitions,
        })
        .collect();
    let ready = broker.readiness();
    Json(json!({
        "cluster_id": broker.cluster_id(),
        "node_id": broker.config().node_id,
        "controller_id": controller,
        "raft_term": quorum.term,
        "raft_applied_index": quorum.applied_index,
        "ready": ready.is_ok(),
        "not_ready_reason": ready.err(),
        "nodes": nodes,
    }))
    .into_response()
}

#[derive(Serialize)]
struct TopicRow {
    name: String,
    internal: bool,
    partitions: i32,
    /// Bytes of this node's replicas of the topic.
    size_bytes: u64,
    records_per_sec: f64,
    bytes_per_sec: f64,
}

async fn topics(State(state): State<Arc<AppState>>) -> Response {
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for p in state.broker.partition_stats() {
        *sizes.entry(p.topic).or_default() += p.size_bytes;
    }
    let rows: Vec<TopicRow> = state
        .broker
        .list_topics(true)
        .into_iter()
        .map(|t| {
            let rate = state.history.throughput(&t.name);
            TopicRow {
                size_bytes: sizes.get(&t.name).copied().unwrap_or(0),
                records_per_sec: rate.records_per_sec,
                bytes_per_sec: rate.bytes_per_sec,
                name: t.name,
                internal: t.internal,
                partitions: t.num_partitions,
            }
        })
        .collect();
    Json(rows).into_response()
}

#[derive(Serialize)]
struct PartitionRow {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start_offset: i64,
    high_watermark: i64,
    /// Log end and size where this node holds a replica, else `null`.
    log_end_offset: Option<i64>,
    size_bytes: Option<u64>,
    segments: Option<u64>,
    records_in: Option<u64>,
    storage_error: Option<String>,
}

async fn topic(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let description = match state.broker.describe_topic(&name) {
        Ok(d) => d,
        Err(e) => return Failure::from(e).into_response(),
    };
    let local: HashMap<i32, strom_broker::PartitionStats> = state
        .broker
        .partition_stats()
        .into_iter()
        .filter(|p| p.topic == name)
        .map(|p| (p.partition, p))
        .collect();
    let partitions: Vec<PartitionRow> = description
        .partitions
        .into_iter()
        .map(|p| {
            let here = local.get(&p.partition);
            PartitionRow {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                isr: p.isr,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                log_end_offset: here.map(|s| s.log_end_offset),
                size_bytes: here.map(|s| s.size_bytes),
                segments: here.map(|s| s.segments),
                records_in: here.map(|s| s.records_in),
                storage_error: p.storage_error,
            }
        })
        .collect();
    let rate = state.history.throughput(&name);
    Json(json!({
        "name": description.name,
        "internal": description.internal,
        "records_per_sec": rate.records_per_sec,
        "bytes_per_sec": rate.bytes_per_sec,
        "partitions": partitions,
        "configs": description.configs,
    }))
    .into_response()
}

/// The body of `POST /api/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    /// Absent: the broker's default.
    partitions: Option<i32>,
    /// Absent: the broker's default.
    replication_factor: Option<i32>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

async fn create_topic(
    State(state): State<Arc<AppState>>,
    Json(body): Json<CreateTopic>,
) -> Response {
    let new = NewTopic {
        name: body.name.clone(),
        num_partitions: body.partitions.unwrap_or(-1),
        replication_factor: body.replication_factor.unwrap_or(-1),
        configs: body.configs,
    };
    match state.broker.create_topic(new, false).await {
        Ok(()) => {
            tracing::info!(topic = %body.name, "topic created from the console");
            (StatusCode::CREATED, Json(json!({ "name": body.name }))).into_response()
        }
        Err(e) => Failure::from(e).into_response(),
    }
}

#[derive(Serialize)]
struct GroupRow {
    group_id: String,
    state: String,
    protocol_type: String,
    members: usize,
    partitions: usize,
    total_lag: i64,
}

async fn groups(State(state): State<Arc<AppState>>) -> Response {
    state.leader_ends.refresh(&state.broker).await;
    let (broker, ends) = (state.broker.clone(), state.leader_ends.clone());
    let lags = tokio::task::spawn_blocking(move || crate::groups::group_lags(&broker, &ends)).await;
    let rows: Vec<GroupRow> = lags
        .unwrap_or_default()
        .into_iter()
        .map(|g| GroupRow {
            members: g.members.len(),
            partitions: g.partitions.len(),
            group_id: g.group_id,
            state: g.state,
            protocol_type: g.protocol_type,
            total_lag: g.total_lag,
        })
        .collect();
    Json(rows).into_response()
}

async fn group(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    state.leader_ends.refresh(&state.broker).await;
    let (broker, ends) = (state.broker.clone(), state.leader_ends.clone());
    let wanted = id.clone();
    let found =
        tokio::task::spawn_blocking(move || crate::groups::group_lag(&broker, &ends, &wanted))
            .await
            .ok()
            .flatten();
    match found {
        Some(g) => {
            // The sampled history, ending with the lag just computed, so the chart is current.
            let mut history = state.history.lag(&id);
            history
                .push(crate::history::LagSample { t: crate::history::now_ms(), lag: g.total_lag });
            Json(json!({
                "group_id": g.group_id,
                "state": g.state,
                "protocol_type": g.protocol_type,
                "members": g.members,
                "partitions": g.partitions,
                "total_lag": g.total_lag,
                "lag_history": history,
            }))
            .into_response()
        }
        None => Failure(
            StatusCode::NOT_FOUND,
            format!("group {id:?} is unknown to this node's coordinator"),
        )
        .into_response(),
    }
}

/// The query of `GET /api/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    topic: String,
    partition: i32,
    /// First offset wanted.
    offset: Option<i64>,
    /// Or: the first record at or after this time (ms since the epoch).
    timestamp: Option<i64>,
    /// Records wanted (at most [`MAX_RECORDS_PER_PAGE`]).
    limit: Option<usize>,
}

/// Bytes as the console shows them: text when UTF-8, else base64.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Shown {
    encoding: &'static str,
    data: String,
    /// Set when the bytes were longer than shown.
    truncated: bool,
}

pub(crate) fn show(bytes: &[u8]) -> Shown {
    let truncated = bytes.len() > MAX_SHOWN_BYTES;
    let bytes = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
    match std::str::from_utf8(bytes) {
        Ok(text) => Shown { encoding: "utf8", data: text.to_string(), truncated },
        Err(e) if truncated && e.error_len().is_none() => {
            // A multi-byte character cut by the limit: still text.
            let text = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            Shown { encoding: "utf8", data: text.to_string(), truncated }
        }
        Err(_) => Shown {
            encoding: "base64",
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            truncated,
        },
    }
}

#[derive(Serialize)]
struct HeaderRow {
    key: String,
    value: Option<Shown>,
}

#[derive(Serialize)]
struct RecordRow {
    offset: i64,
    timestamp: i64,
    key: Option<Shown>,
    value: Option<Shown>,
    headers: Vec<HeaderRow>,
}

async fn messages(State(state): State<Arc<AppState>>, Query(q): Query<MessagesQuery>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_RECORDS_PER_PAGE);
    if limit == 0 || limit > MAX_RECORDS_PER_PAGE {
        return Failure(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1..={MAX_RECORDS_PER_PAGE}"),
        )
        .into_response();
    }
    match read_page(&state, &q, limit).await {
        Ok(page) => Json(page).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn read_page(
    state: &AppState,
    q: &MessagesQuery,
    limit: usize,
) -> Result<serde_json::Value, Failure> {
    let broker = &state.broker;
    let earliest = broker.list_offsets(&q.topic, q.partition, -2).await?.offset;
    let latest = broker.list_offsets(&q.topic, q.partition, -1).await?.offset;
    let start = match (q.offset, q.timestamp) {
        (Some(_), Some(_)) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "give offset or timestamp, not both".into(),
            ));
        }
        (Some(offset), None) if offset < 0 => {
            return Err(Failure(StatusCode::BAD_REQUEST, "offset must be >= 0".into()));
        }
        (Some(offset), None) => offset.clamp(earliest, latest),
        (None, Some(ts)) if ts < 0 => {
            return Err(Failure(StatusCode::BAD_REQUEST, "timestamp must be >= 0".into()));
        }
        (None, Some(ts)) => match broker.list_offsets(&q.topic, q.partition, ts).await?.offset {
            -1 => latest,
            found => found,
        },
        // The newest page.
        (None, None) => (latest - limit as i64).max(earliest),
    };
    let mut records = Vec::new();
    if start < latest {
        let params = FetchParams {
            max_wait: Duration::ZERO,
            min_bytes: 0,
            max_bytes: MAX_PAGE_BYTES,
            partitions: vec![FetchPartitionParams {
                topic: q.topic.clone(),
                partition: q.partition,
                fetch_offset: start,
                max_bytes: MAX_PAGE_BYTES,
                current_leader_epoch: None,
            }],
        };
        let fetched = broker.fetch(params).await.into_iter().next();
        let bytes = match fetched.map(|f| f.records) {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return Err(e.into()),
            None => Bytes::new(),
        };
        decode(bytes, Offset::new(start), limit, &mut records)
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    let next = records.last().map_or(start, |r: &RecordRow| r.offset + 1);
    Ok(json!({
        "topic": q.topic,
        "partition": q.partition,
        "log_start_offset": earliest,
        "high_watermark": latest,
        "start_offset": start,
        "next_offset": next,
        "records": records,
    }))
}

/// Decodes up to `limit` records at or above `from`.
fn decode(
    bytes: Bytes,
    from: Offset,
    limit: usize,
    out: &mut Vec<RecordRow>,
) -> Result<(), String> {
    for batch in Batches::new(bytes) {
        let batch = batch.map_err(|e| format!("corrupt batch: {e}"))?;
        if batch.next_offset() <= from || batch.attributes().is_control() {
            continue;
        }
        batch.validate_crc().map_err(|e| format!("corrupt batch: {e}"))?;
        let log_append_time = batch.attributes().timestamp_type() == TimestampType::LogAppendTime;
        for record in batch.records().map_err(|e| format!("corrupt batch: {e}"))? {
            let record = record.map_err(|e| format!("corrupt record: {e}"))?;
            if record.offset < from {
                continue;
            }
            if out.len() >= limit {
                return Ok(());
            }
            out.push(RecordRow {
                offset: record.offset.get(),
                timestamp: if log_append_time { batch.max_timestamp() } else { record.timestamp },
                key: record.key.as_deref().map(show),
                value: record.value.as_deref().map(show),
                headers: record
                    .headers
                    .iter()
                    .map(|h| HeaderRow { key: h.key.clone(), value: h.value.as_deref().map(show) })
                    .collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_when_utf8_else_base64() {
        assert_eq!(show(b"hello").encoding, "utf8");
        let binary = show(&[0xff, 0x00, 0x01]);
        assert_eq!((binary.encoding, binary.data.as_str()), ("base64", "/wAB"));
        let long = "é".repeat(MAX_SHOWN_BYTES);
        let shown = show(long.as_bytes());
        assert_eq!(shown.encoding, "utf8");
        assert!(shown.truncated);
        assert!(shown.data.len() <= MAX_SHOWN_BYTES);
    }
}
