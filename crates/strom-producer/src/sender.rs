//! The background sender task: drains ready batches from the accumulator, groups them per
//! leader into Produce requests, and completes, retries or fails them from the responses.
//! One task does all of it, its Produce calls included (polled as a set, not spawned).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use rand::Rng;
use strom_client::proto::v1::{InitProducerIdRequest, ProduceResponse};
use strom_client::{Client, ClientError, ErrorCode};
use strom_format::{BatchBuilder, Compression, Offset, RecordBatch, set_producer};
use tokio::sync::Notify;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::accumulator::{Accumulator, Batch, Drained, Payload};
use crate::codec::{
    FrameBody, PRODUCE_PATH, PartitionBody, ProduceBody, ResponseDecoder, TopicBody,
};
use crate::delivery::{BatchAck, Tracker};
use crate::idempotence::Idempotence;
use crate::{Acks, ProducerConfig, ProducerError};

/// Margin of the RPC deadline over the broker-side timeout, so a broker that waited the full
/// timeout for replicas can still deliver its REQUEST_TIMED_OUT answer.
const RPC_GRACE: Duration = Duration::from_secs(1);

/// State shared by the producer handles, the sender task and its request tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: ProducerConfig,
    pub client: Client,
    pub accum: Mutex<Accumulator>,
    pub tracker: Arc<Tracker>,
    /// Wakes the sender: a batch opened or closed, a request finished, flush or close.
    pub wake: Notify,
    pub sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set with the accumulator's closing mark, for `send` to check without the lock.
    pub closed: AtomicBool,
    /// Producer id and sequences when idempotence is on (`enable_idempotence`, acks=all).
    pub idempotence: Option<Idempotence>,
}

impl Inner {
    /// Stops accepting records and lets the sender drain what is buffered.
    pub(crate) fn close(&self) {
        self.accum.lock().close();
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The leader refused the batch's producer id, epoch or sequence: re-stamp and resend it.
fn is_sequence_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::OutOfOrderSequenceNumber
            | ErrorCode::UnknownProducerId
            | ErrorCode::InvalidProducerEpoch
    )
}

/// The producer id a built batch carries (-1: none).
fn stamped_id(payload: &Payload) -> i64 {
    match payload {
        Payload::Built(bytes) => RecordBatch::new(bytes.clone()).map_or(-1, |b| b.producer_id()),
        Payload::Open(_) => -1,
    }
}

/// Asks any broker for a producer id; on failure the batches wait (retriable) and the next
/// round asks again.
async fn init_producer_id(inner: &Inner, idem: &Idempotence) {
    let mut request = tonic::Request::new(InitProducerIdRequest {});
    request.set_timeout(inner.config.request_timeout);
    let result = inner.client.any_broker().init_producer_id(request).await;
    match result.map(tonic::Response::into_inner) {
        Ok(r) if ErrorCode::from_i32(r.error_code).is_none() => {
            idem.set_id(r.producer_id, i16::try_from(r.producer_epoch).unwrap_or(0));
        }
        Ok(r) => warn!(code = r.error_code, message = %r.error_message,
            "InitProducerId refused; retrying"),
        Err(status) => warn!(%status, "InitProducerId failed; retrying"),
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone)]
enum Failure {
    Broker(ErrorCode, String),
    Client(Arc<ClientError>),
}

impl Failure {
    fn retriable(&self) -> bool {
        match self {
            // Sent again under a new producer id (see `handle_failure`).
            Failure::Broker(code, _) if is_sequence_error(*code) => true,
            // A stale leader may not know a topic created a moment ago; the metadata refresh
            // decides whether it really is unknown.
            Failure::Broker(code, _) => {
                code.is_retriable() || *code == ErrorCode::UnknownTopicOrPartition
            }
            Failure::Client(e) => e.is_retriable(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Failure::Broker(code, message) => format!("{code}: {message}"),
            Failure::Client(e) => e.to_string(),
        }
    }

    fn to_error(&self, d_topic: &str, partition: strom_format::PartitionId) -> ProducerError {
        match self {
            Failure::Broker(ErrorCode::UnknownTopicOrPartition, _) => {
                ProducerError::UnknownTopic(d_topic.to_owned())
            }
            Failure::Broker(code, message) => ProducerError::Broker {
                topic: d_topic.to_owned(),
                partition,
                code: *code,
                message: message.clone(),
            },
            Failure::Client(e) => ProducerError::Client(Arc::clone(e)),
        }
    }
}

/// Produce calls in flight, polled by the sender task itself.
type Requests = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// The sender loop; returns once the producer is closing and everything has been answered.
///
/// The loop polls its Produce calls itself instead of spawning a task per call: an answer
/// wakes this task, which completes the batches and sends the partition's next ones in the
/// same turn, where a spawned call had to wake it through `wake` (one task hop less each way,
/// on a path that decides the latency of every record).
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut requests = Requests::new();
    loop {
        let drain = inner.accum.lock().drain(Instant::now());
        if drain.ready.is_empty() {
            if drain.closing && drain.idle && requests.is_empty() {
                debug!("producer sender finished");
                return;
            }
            let notified = inner.wake.notified();
            let linger = async {
                match drain.next_wakeup {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                () = linger => {}
                Some(()) = requests.next(), if !requests.is_empty() => {}
            }
            continue;
        }
        if let Some(idem) = &inner.idempotence
            && idem.needs_id()
        {
            // The calls in flight go on meanwhile (their answers may be what is waiting).
            let init = init_producer_id(&inner, idem);
            tokio::pin!(init);
            loop {
                tokio::select! {
                    () = &mut init => break,
                    Some(()) = requests.next(), if !requests.is_empty() => {}
                }
            }
        }
        dispatch(&inner, drain.ready, &mut requests);
    }
}

/// Encodes the drained batches, finds each partition's leader, and adds one Produce call per
/// leader (split at `max_request_size`) to `requests`.
fn dispatch(inner: &Arc<Inner>, ready: Vec<Drained>, requests: &mut Requests) {
    let now = Instant::now();
    let cfg = &inner.config;
    let mut by_leader: HashMap<i32, Vec<(Drained, usize)>> = HashMap::new();
    for mut d in ready {
        let batches = std::mem::take(&mut d.batches);
        // Batches that cannot be stamped yet, and every batch after one of them (order).
        let mut waiting = Vec::new();
        for mut b in batches {
            if !waiting.is_empty() {
                waiting.push(b);
                continue;
            }
            if now.saturating_duration_since(b.created) >= cfg.delivery_timeout {
                let err = ProducerError::DeliveryTimeout {
                    topic: d.topic.to_string(),
                    partition: d.partition,
                    timeout: cfg.delivery_timeout,
                    last_error: b.last_error.take(),
                };
                abandon(inner, &b);
                b.completer.fail(err);
                continue;
            }
            let fresh = matches!(b.payload, Payload::Open(_));
            let stamp = match &inner.idempotence {
                Some(idem) if fresh || b.restamp => {
                    match idem.stamp(&d.topic, d.partition, b.records) {
                        Some(stamp) => Some(stamp),
                        None => {
                            // No producer id yet: keep the batch unstamped and retry later.
                            waiting.push(b);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let payload = std::mem::replace(&mut b.payload, Payload::Built(Bytes::new()));
            match payload {
                Payload::Built(bytes) => {
                    b.payload = Payload::Built(match stamp {
                        Some((id, epoch, seq)) => {
                            let mut buf = bytes.to_vec();
                            set_producer(&mut buf, id, epoch, seq);
                            Bytes::from(buf)
                        }
                        None => bytes,
                    });
                    b.restamp = false;
                }
                Payload::Open(builder) => match build(inner, builder, stamp) {
                    Ok(bytes) => b.payload = Payload::Built(bytes),
                    Err(e) => {
                        // Its sequence numbers are now a gap.
                        if let (Some(idem), Some((id, _, _))) = (&inner.idempotence, stamp) {
                            idem.invalidate(id);
                        }
                        b.completer.fail(ProducerError::Format(e));
                        continue;
                    }
                },
            }
            d.batches.push(b);
        }
        if !waiting.is_empty() {
            // Not sent at all: the stamped ones wait with them so the order holds.
            let mut all = std::mem::take(&mut d.batches);
            all.append(&mut waiting);
            d.batches = all;
            let failure = Failure::Broker(
                ErrorCode::CoordinatorNotAvailable,
                "no producer id yet (InitProducerId failed)".into(),
            );
            handle_failure(inner, d, Retriable(failure));
            continue;
        }
        if d.batches.is_empty() {
            inner.accum.lock().done(&d.topic, d.partition);
            continue;
        }
        let info = inner.client.cached_topic(&d.topic);
        let leader = info.as_ref().and_then(|t| t.partition(d.partition)).map(|p| p.leader);
        match leader {
            Some(leader) if leader >= 0 => {
                let size = d.batches.iter().map(|b| built_len(&b.payload)).sum();
                by_leader.entry(leader).or_default().push((d, size));
            }
            _ => {
                let unknown = inner.accum.lock().is_unknown(&d.topic);
                let failure = if unknown {
                    Failure::Broker(ErrorCode::UnknownTopicOrPartition, "unknown topic".into())
                } else if let Some(info) = info.filter(|t| t.partition(d.partition).is_none()) {
                    let err = ProducerError::InvalidPartition {
                        topic: d.topic.to_string(),
                        partition: d.partition,
                        num_partitions: info.num_partitions(),
                    };
                    for b in d.batches {
                        b.completer.fail(err.clone());
                    }
                    inner.accum.lock().done(&d.topic, d.partition);
                    continue;
                } else {
                    Failure::Broker(
                        ErrorCode::LeaderNotAvailable,
                        format!("no leader known for {}-{}", d.topic, d.partition),
                    )
                };
                // An unknown topic is final only after the refresh that said so.
                let failure = if unknown { NonRetriable(failure) } else { Retriable(failure) };
                handle_failure(inner, d, failure);
            }
        }
    }
    for (leader, parts) in by_leader {
        let mut request: Vec<Drained> = Vec::new();
        let mut request_bytes = 0usize;
        for (d, size) in parts {
            if !request.is_empty() && request_bytes.saturating_add(size) > cfg.max_request_size {
                requests.push(Box::pin(send_request(
                    Arc::clone(inner),
                    leader,
                    std::mem::take(&mut request),
                )));
                request_bytes = 0;
            }
            request_bytes = request_bytes.saturating_add(size);
            request.push(d);
        }
        if !request.is_empty() {
            requests.push(Box::pin(send_request(Arc::clone(inner), leader, request)));
        }
    }
}

/// Builds a batch (stamped for idempotence when `stamp` is given). A compressed batch is
/// written into a pooled buffer and its uncompressed records' buffer goes back to the pool, so
/// compression allocates nothing per batch either.
fn build(
    inner: &Inner,
    builder: BatchBuilder,
    stamp: Option<(i64, i16, i32)>,
) -> Result<Bytes, strom_format::FormatError> {
    let builder = match stamp {
        Some((id, epoch, seq)) => builder.with_producer(id, epoch, seq),
        None => builder,
    };
    if builder.compression() == Compression::None {
        return builder.build();
    }
    let spare = inner.accum.lock().spare_buffer();
    let (bytes, records) = builder.build_pooled(spare)?;
    inner.accum.lock().recycle_vec(records);
    Ok(bytes)
}

/// A failure with its retry decision made by the caller.
enum Decided {
    Retriable(Failure),
    NonRetriable(Failure),
}
use Decided::{NonRetriable, Retriable};

fn built_len(p: &Payload) -> usize {
    match p {
        Payload::Built(b) => b.len(),
        Payload::Open(b) => b.estimated_size(),
    }
}

async fn send_request(inner: Arc<Inner>, leader: i32, parts: Vec<Drained>) {
    let inner = &inner;
    let cfg = &inner.config;
    let mut topics: Vec<TopicBody> = Vec::new();
    for d in &parts {
        let data = PartitionBody { partition: d.partition.get(), batches: batch_bytes(&d.batches) };
        match topics.iter_mut().find(|t| *t.name == *d.topic) {
            Some(t) => t.partitions.push(data),
            None => topics.push(TopicBody { name: Arc::clone(&d.topic), partitions: vec![data] }),
        }
    }
    let timeout_ms = u32::try_from(cfg.request_timeout.as_millis()).unwrap_or(u32::MAX);
    let body = ProduceBody { acks: cfg.acks.as_i32(), timeout_ms, topics };
    let rpc_timeout = cfg.request_timeout.saturating_add(RPC_GRACE);

    let result = match inner.client.broker_channel(leader) {
        Ok(channel) => produce(inner, channel, body, rpc_timeout).await,
        Err(e) => {
            let failure = Failure::Client(Arc::new(e));
            for d in parts {
                handle_failure(inner, d, Retriable(failure.clone()));
            }
            return;
        }
    };
    match result {
        Err(status) => {
            debug!(leader, %status, "produce request failed");
            let failure = Failure::Client(Arc::new(ClientError::from(status)));
            let decided = failure.retriable();
            for d in parts {
                let f = failure.clone();
                handle_failure(inner, d, if decided { Retriable(f) } else { NonRetriable(f) });
            }
        }
        Ok(response) => handle_response(inner, parts, &response),
    }
}

/// One unary Produce call, as tonic's `Grpc::unary` makes it (same headers, limits, status
/// and trailer handling, response decoded by [`ResponseDecoder`]), except that the request body
/// is the batches' own buffers ([`ProduceBody::into_frame`]) rather than a copy of them in
/// tonic's encode buffer: no record byte is copied between the batch and the socket.
async fn produce(
    inner: &Inner,
    mut channel: Channel,
    body: ProduceBody,
    timeout: Duration,
) -> Result<ProduceResponse, tonic::Status> {
    let limit = inner.client.config().max_message_bytes;
    let len = body.encoded_len();
    if len > limit {
        return Err(tonic::Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {limit} bytes"
        )));
    }
    let frame = FrameBody::new(body.into_frame(len)?);
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("broker connection not ready: {e}")))?;
    // tonic's own `grpc-timeout` rendering; the channel's timeout layer enforces it.
    let mut deadline = tonic::Request::new(());
    deadline.set_timeout(timeout);
    let mut request = http::Request::new(tonic::body::Body::new(frame));
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    *request.uri_mut() = http::Uri::from_static(PRODUCE_PATH);
    let headers = request.headers_mut();
    *headers = deadline.into_parts().0.into_headers();
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    let response = channel.call(request).await.map_err(|e| tonic::Status::from_error(e.into()))?;
    // A trailers-only answer carries its status in the headers.
    if let Some(status) = tonic::Status::from_header_map(response.headers())
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    let status_code = response.status();
    let mut stream = tonic::Streaming::new_response(
        ResponseDecoder,
        response.into_body(),
        status_code,
        None,
        Some(limit),
    );
    let message = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("Missing response message."))?;
    // Reads the trailers: a non-OK `grpc-status` there fails the call.
    stream.trailers().await?;
    Ok(message)
}

/// The partition's encoded batches, in order (reference counts, not copies).
fn batch_bytes(batches: &[Batch]) -> Vec<Bytes> {
    batches
        .iter()
        .filter_map(|b| match &b.payload {
            Payload::Built(bytes) => Some(bytes.clone()),
            // Built in `dispatch` before any request is formed.
            Payload::Open(_) => None,
        })
        .collect()
}

fn handle_response(inner: &Arc<Inner>, parts: Vec<Drained>, response: &ProduceResponse) {
    for d in parts {
        if inner.config.acks == Acks::Zero {
            // The broker reports nothing meaningful for acks=0, as in Kafka.
            succeed(inner, d, None, None);
            continue;
        }
        let p = response
            .topics
            .iter()
            .filter(|t| *t.name == *d.topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == d.partition.get());
        let Some(p) = p else {
            let failure = Failure::Broker(
                ErrorCode::UnknownServerError,
                format!("produce response lacks {}-{}", d.topic, d.partition),
            );
            handle_failure(inner, d, Retriable(failure));
            continue;
        };
        match ErrorCode::from_i32(p.error_code) {
            ErrorCode::None => {
                let append_time = (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms);
                succeed(inner, d, Some(Offset::new(p.base_offset)), append_time);
            }
            code => {
                let failure = Failure::Broker(code, p.error_message.clone());
                let decided =
                    if failure.retriable() { Retriable(failure) } else { NonRetriable(failure) };
                handle_failure(inner, d, decided);
            }
        }
    }
}

fn succeed(inner: &Inner, d: Drained, base: Option<Offset>, log_append_time: Option<i64>) {
    let mut next = base;
    let mut spent = Vec::with_capacity(d.batches.len());
    for mut b in d.batches {
        let records = i64::from(b.records);
        if let Payload::Built(bytes) =
            std::mem::replace(&mut b.payload, Payload::Built(Bytes::new()))
        {
            spent.push(bytes);
        }
        b.completer.succeed(BatchAck { base_offset: next, log_append_time });
        // Offsets are dense: the next batch starts right after this one's records.
        next = next.map(|o| o.add(records));
    }
    let mut accum = inner.accum.lock();
    accum.done(&d.topic, d.partition);
    // The request has been written and answered, so the batches' buffers are ours alone
    // again: the next batches are built in them.
    for bytes in spent {
        accum.recycle(bytes);
    }
}

/// Retries the partition's batches after a backoff, or fails those that are out of retries,
/// out of time, or hit a non-retriable error.
fn handle_failure(inner: &Arc<Inner>, d: Drained, decided: Decided) {
    let cfg = &inner.config;
    let now = Instant::now();
    let (failure, retriable) = match decided {
        Retriable(f) => (f, true),
        NonRetriable(f) => (f, false),
    };
    let message = failure.describe();
    // One allocation per failed attempt, shared by its batches' delivery-timeout errors.
    let last = Arc::new(failure.to_error(&d.topic, d.partition));
    let refused = matches!(failure, Failure::Broker(code, _) if is_sequence_error(code));
    let mut keep = Vec::with_capacity(d.batches.len());
    for mut b in d.batches {
        b.attempts = b.attempts.saturating_add(1);
        let backoff = backoff(cfg, b.attempts);
        if refused && let Some(idem) = &inner.idempotence {
            idem.invalidate(stamped_id(&b.payload));
            b.restamp = true;
        }
        if !retriable || b.attempts > cfg.retries {
            warn!(topic = %d.topic, partition = %d.partition, error = %message,
                attempts = b.attempts, "batch failed");
            abandon(inner, &b);
            b.completer.fail(failure.to_error(&d.topic, d.partition));
        } else if now.saturating_duration_since(b.created) + backoff >= cfg.delivery_timeout {
            abandon(inner, &b);
            b.completer.fail(ProducerError::DeliveryTimeout {
                topic: d.topic.to_string(),
                partition: d.partition,
                timeout: cfg.delivery_timeout,
                last_error: Some(Arc::clone(&last)),
            });
        } else {
            b.retry_at = Some(now + backoff);
            b.last_error = Some(Arc::clone(&last));
            keep.push(b);
        }
    }
    if let Some(first) = keep.first() {
        // One line per partition and retry round, so a stuck partition (full disk, broker
        // down) is visible long before the delivery timeout fails its records.
        let left =
            cfg.delivery_timeout.saturating_sub(now.saturating_duration_since(first.created));
        warn!(topic = %d.topic, partition = %d.partition, error = %message,
            attempt = first.attempts, batches = keep.len(), retry_in = ?first.retry_at.map(|t| t - now),
            gives_up_in = ?left, "produce failed; retrying");
    }
    inner.accum.lock().requeue(&d.topic, d.partition, keep);
    if retriable {
        request_refresh(inner, &d.topic);
    }
}

/// A stamped batch given up leaves a gap in its partition's sequence: the producer moves to a
/// new id before it stamps another batch.
fn abandon(inner: &Inner, b: &Batch) {
    if let Some(idem) = &inner.idempotence {
        idem.invalidate(stamped_id(&b.payload));
    }
}

/// `retry_backoff * 2^(attempt-1)`, capped at `retry_backoff_max`, with ±20 % jitter so
/// producers that failed together do not retry in lockstep.
fn backoff(cfg: &ProducerConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let base = cfg.retry_backoff.saturating_mul(1u32 << exp).min(cfg.retry_backoff_max);
    let jitter = rand::rng().random_range(0.8..1.2);
    base.mul_f64(jitter).min(cfg.retry_backoff_max.max(cfg.retry_backoff))
}

/// Starts one metadata refresh of `topic` unless one is running; its batches wait for it.
fn request_refresh(inner: &Arc<Inner>, topic: &Arc<str>) {
    if !inner.accum.lock().start_refresh(topic) {
        return;
    }
    let inner = Arc::clone(inner);
    let topic = Arc::clone(topic);
    tokio::spawn(async move {
        let result = inner.client.refresh_metadata(&topic).await;
        let unknown = matches!(result, Err(ClientError::UnknownTopic(_)));
        if let Err(e) = &result {
            debug!(%topic, error = %e, "metadata refresh failed");
        }
        inner.accum.lock().end_refresh(&topic, unknown);
        inner.wake.notify_one();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let cfg = ProducerConfig {
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(1000),
            ..ProducerConfig::default()
        };
        let first = backoff(&cfg, 1);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let third = backoff(&cfg, 3);
        assert!(third >= Duration::from_millis(320) && third <= Duration::from_millis(480));
        for attempt in [10, 100, u32::MAX] {
            assert!(backoff(&cfg, attempt) <= Duration::from_millis(1000));
        }
    }
}
