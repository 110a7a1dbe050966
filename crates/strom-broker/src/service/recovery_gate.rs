//! The gRPC side of recovery (`recovery.rs`): until this node has caught up with the metadata
//! quorum, a client request waits a little for it and is then answered `UNAVAILABLE`, so the
//! client asks another node or retries, instead of being served from a stale image.
//!
//! Node-to-node traffic the catch-up itself needs passes at once: Raft and broker heartbeats
//! (`strom.v1.Quorum`), and the requests a controller answers (`AlterPartition`,
//! `ControlledShutdown`). So does `DescribeCluster`, which an operator uses to see why a node
//! does not serve (no controller known, say). A follower's `ReplicaFetch` is a client request
//! here: a recovering node may still believe it leads partitions it no longer does.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;

use crate::broker::Broker;
use crate::recovery::RECOVERY_PATIENCE;

/// Methods served while recovering: what catching up needs, the controller's own work, and
/// the operator's view of the cluster.
const ALWAYS_SERVED: [&str; 4] = [
    "/strom.v1.Quorum/",
    "/strom.v1.Replication/AlterPartition",
    "/strom.v1.Replication/ControlledShutdown",
    "/strom.v1.Admin/DescribeCluster",
];

/// A request waits at most this share of its own deadline, so its answer reaches the client
/// before the client gives up on it and the client can still try another node.
const DEADLINE_SHARE: f64 = 0.5;

/// Holds client requests back while the node recovers (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct RecoveryGateLayer(pub(crate) Arc<Broker>);

impl<S> tower::Layer<S> for RecoveryGateLayer {
    type Service = RecoveryGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecoveryGate { inner, broker: Arc::clone(&self.0) }
    }
}

/// See [`RecoveryGateLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RecoveryGate<S> {
    inner: S,
    broker: Arc<Broker>,
}

impl<S, B> tower::Service<http::Request<B>> for RecoveryGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if self.broker.is_serving() || ALWAYS_SERVED.iter().any(|p| path.starts_with(p)) {
            let answer = self.inner.call(request);
            return Box::pin(answer);
        }
        // The inner service was readied for this call; a clone takes the request after the
        // wait (tower's documented pattern for services called from a future).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let broker = Arc::clone(&self.broker);
        let patience = patience(request.headers());
        Box::pin(async move {
            if broker.wait_serving(patience).await {
                return inner.call(request).await;
            }
            let node = broker.config().node_id;
            tracing::debug!(path = %request.uri().path(), "refused: still recovering");
            Ok(Status::unavailable(format!(
                "broker {node} is recovering: it has not caught up with the metadata quorum yet"
            ))
            .into_http())
        })
    }
}

/// How long a request may wait for recovery: a share of its `grpc-timeout`, at most
/// [`RECOVERY_PATIENCE`].
fn patience(headers: &http::HeaderMap) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(RECOVERY_PATIENCE, |t| t.mul_f64(DEADLINE_SHARE).min(RECOVERY_PATIENCE))
}

/// gRPC's `grpc-timeout` header: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_bound_the_wait() {
        assert_eq!(parse_grpc_timeout("2000m"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "12", "123456789S", "-1S", "1x"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let mut headers = http::HeaderMap::new();
        assert_eq!(patience(&headers), RECOVERY_PATIENCE);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("2000m"));
        assert_eq!(patience(&headers), Duration::from_secs(1));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("60S"));
        assert_eq!(patience(&headers), RECOVERY_PATIENCE);
    }
}
