//! Binding, routing and shutdown of the HTTP listener, and the limits every request meets
//! before a handler sees it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strom_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::HttpError;
use crate::groups::LeaderEnds;
use crate::history::History;

/// Longest query string accepted; longer ones get 400 before any handler runs.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Largest request body accepted (topic creation is the only one with a body).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How often the lag and throughput history is sampled unless configured otherwise.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Settings of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often consumer-group lag and topic throughput are sampled for the console's
    /// charts (the history keeps the last ten minutes, at most the history's bound).
    pub sample_interval: Duration,
}

impl HttpConfig {
    /// The listener on `listen` with the default sampling.
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig { listen, sample_interval: DEFAULT_SAMPLE_INTERVAL }
    }
}

/// What every handler reads.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) registry: prometheus_client::registry::Registry,
    pub(crate) history: Arc<History>,
    /// Partition ends as their leaders report them, for group lag.
    pub(crate) leader_ends: Arc<LeaderEnds>,
}

/// A running HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    serving: JoinHandle<()>,
    sampling: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `config.listen` and starts serving; returns once the port is bound.
    pub async fn start(broker: Arc<Broker>, config: HttpConfig) -> Result<HttpServer, HttpError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| HttpError::Bind { addr: config.listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr: config.listen, source })?;
        let history = Arc::new(History::new(config.sample_interval));
        let leader_ends = Arc::new(LeaderEnds::default());
        let state = Arc::new(AppState {
            registry: crate::metrics::registry(broker.clone(), leader_ends.clone()),
            broker,
            history: history.clone(),
            leader_ends,
        });
        let (stop, stopped) = watch::channel(false);
        let sampling = tokio::spawn(crate::history::sample_loop(
            state.broker.clone(),
            history,
            state.leader_ends.clone(),
            config.sample_interval,
            stopped.clone(),
        ));
        let app = router(state);
        let serving = tokio::spawn(async move {
            let mut stopped = stopped;
            let shutdown = async move { crate::history::turned_true(&mut stopped).await };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        tracing::info!(%local_addr, "HTTP listener (metrics, health, console) started");
        Ok(HttpServer { local_addr, stop, serving, sampling })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open requests finish, and stops sampling.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.serving.await;
        let _ = self.sampling.await;
    }
}

/// Every route. Unknown paths get 404; long query strings 400; bodies above
/// [`MAX_BODY_BYTES`] 413.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .merge(crate::api::routes())
        .merge(crate::console::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn(limit_query))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn limit_query(request: Request, next: Next) -> Response {
    if request.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return (StatusCode::BAD_REQUEST, format!("query string above {MAX_QUERY_BYTES} bytes\n"))
            .into_response();
    }
    next.run(request).await
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.leader_ends.refresh(&state.broker).await;
    // Encoding reads atomics and in-memory state only; still, keep it off the async workers'
    // critical path when there are thousands of partitions.
    let encoded = tokio::task::spawn_blocking(move || {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &state.registry).map(|()| text)
    })
    .await;
    match encoded {
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics task failed\n").into_response()
        }
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.broker.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response()
        }
    }
}
