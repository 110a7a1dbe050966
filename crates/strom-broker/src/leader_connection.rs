//! A follower's own HTTP/2 connection to one leader, for ReplicaFetch only. tonic's channels
//! cannot raise the HTTP/2 `max_frame_size` they advertise (h2's 16 KiB), so a leader's
//! answer of megabytes came in 16 KiB frames that tonic's decoder copied, all of them, into
//! one buffer before prost sliced the records out. This connection advertises 16 MiB frames
//! and the peers' large windows; the leader sends each partition's records as a chunk of its
//! own (`service/replica_fetch_route.rs`), which then arrives as one DATA frame, and the answer
//! is decoded from the frames in place (`service/grpc_body.rs`): the records the follower
//! appends are the bytes hyper read off the socket, not a copy.
//!
//! One per fetcher task (one per leader node), connected on first use and again after any
//! failure or a change of the leader's address. Every other peer call keeps using the shared
//! tonic channels of `peers.rs`.

use std::time::Duration;

use http_body::Body as _;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use strom_proto::v1 as pb;
use tokio::net::TcpStream;
use tonic::body::Body;

use crate::peers::{PEER_CONNECTION_WINDOW, PEER_STREAM_WINDOW};
use crate::server::MAX_FRAME_SIZE;
use crate::service::grpc_body::{self, Chunks};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const REPLICA_FETCH_PATH: &str = "/strom.v1.Replication/ReplicaFetch";

/// The connection to one leader (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct LeaderConnection {
    /// The address connected to and the request half of its connection.
    open: Option<(String, SendRequest<Body>)>,
}

impl LeaderConnection {
    /// One ReplicaFetch to the leader at `address`, its answer limited to `max_response`
    /// bytes. Any failure closes the connection; the next call connects again.
    pub(crate) async fn replica_fetch(
        &mut self,
        address: &str,
        request: &pb::ReplicaFetchRequest,
        max_response: usize,
    ) -> Result<pb::ReplicaFetchResponse, String> {
        let result = self.call(address, request, max_response).await;
        if result.is_err() {
            self.close();
        }
        result
    }

    /// Drops the connection (a call that took too long: the leader may be frozen).
    pub(crate) fn close(&mut self) {
        self.open = None;
    }

    async fn call(
        &mut self,
        address: &str,
        request: &pb::ReplicaFetchRequest,
        max_response: usize,
    ) -> Result<pb::ReplicaFetchResponse, String> {
        let reusable = matches!(&self.open, Some((a, send)) if a == address && !send.is_closed());
        if !reusable {
            self.open = Some((address.to_string(), connect(address).await?));
        }
        let Some((_, send)) = self.open.as_mut() else {
            return Err(format!("no connection to {address}"));
        };
        send.ready().await.map_err(|e| format!("connection to {address}: {e}"))?;
        let chunks = grpc_body::encode_message(request, usize::MAX).map_err(|s| s.to_string())?;
        let http_request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{address}{REPLICA_FETCH_PATH}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Body::new(Chunks { chunks, trailers: None }))
            .map_err(|e| format!("building a replica fetch to {address}: {e}"))?;
        let response = send
            .send_request(http_request)
            .await
            .map_err(|e| format!("replica fetch to {address}: {e}"))?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!("replica fetch to {address}: HTTP status {}", parts.status));
        }
        // A trailers-only answer: the status is in the headers and no message follows.
        grpc_status(&parts.headers).map_err(|e| format!("replica fetch to {address}: {e}"))?;
        let message = grpc_body::read_message(&mut body, max_response)
            .await
            .map_err(|s| format!("replica fetch to {address}: {}", s.message()))?;
        // The trailers after the message must say OK too.
        while !body.is_end_stream() {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            match frame.await {
                Some(Ok(frame)) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        grpc_status(&trailers)
                            .map_err(|e| format!("replica fetch to {address}: {e}"))?;
                    }
                }
                Some(Err(e)) => return Err(format!("replica fetch to {address}: {e}")),
                None => break,
            }
        }
        pb::ReplicaFetchResponse::decode(message)
            .map_err(|e| format!("replica fetch answer from {address}: {e}"))
    }
}

/// `Err` with the message when `headers` carry a gRPC status other than OK.
fn grpc_status(headers: &http::HeaderMap) -> Result<(), String> {
    match headers.get("grpc-status") {
        None => Ok(()),
        Some(code) if code.as_bytes() == b"0" => Ok(()),
        Some(code) => {
            let message = headers
                .get("grpc-message")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default();
            Err(format!(
                "gRPC status {}: {}",
                String::from_utf8_lossy(code.as_bytes()),
                percent_decoded(&message)
            ))
        }
    }
}

/// gRPC percent-encodes `grpc-message`; enough of a decoder for a log line.
fn percent_decoded(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(h)), Some(Some(l))) =
                (bytes.get(i + 1).map(|&b| hex(b)), bytes.get(i + 2).map(|&b| hex(b)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn connect(address: &str) -> Result<SendRequest<Body>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address}: no answer in {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("connecting to {address}: {e}"))?;
    let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(PEER_STREAM_WINDOW)
        .initial_connection_window_size(PEER_CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 handshake with {address}: {e}"))?;
    let peer = address.to_string();
    // Drives the connection; ends when the connection closes or its `SendRequest` is dropped.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(leader = %peer, error = %e, "replica fetch connection closed");
        }
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_reads_codes_and_messages() {
        let mut h = http::HeaderMap::new();
        assert!(grpc_status(&h).is_ok());
        h.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert!(grpc_status(&h).is_ok());
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        h.insert("grpc-message", http::HeaderValue::from_static("too%20large%2"));
        assert_eq!(grpc_status(&h).expect_err("not ok"), "gRPC status 11: too large%2");
    }
}
