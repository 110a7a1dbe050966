//! The gRPC server around a [`Broker`]: binding, serving, and the graceful shutdown that
//! drains requests before the logs are closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strom_proto::v1::admin_server::AdminServer;
use strom_proto::v1::broker_server::BrokerServer as BrokerGrpcServer;
use strom_proto::v1::group_server::GroupServer;
use strom_proto::v1::quorum_server::QuorumServer;
use strom_proto::v1::replication_server::ReplicationServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::connection::{self, Limits};
use crate::error::BrokerError;
use crate::service::admin::AdminService;
use crate::service::broker::BrokerService;
use crate::service::group::GroupService;
use crate::service::quorum::QuorumService;
use crate::service::recovery_gate::RecoveryGateLayer;
use crate::service::replication::ReplicationService;
use crate::service::routes::{BrokerRoutes, ReplicationRoutes, Routes};

/// HTTP/2 streams (concurrent requests) one connection may have open.
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Requests one connection may have in the broker at once; more wait in the connection.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 512;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest HTTP/2 frame this server accepts (SETTINGS_MAX_FRAME_SIZE; h2's default is
/// 16 KiB, HTTP/2's maximum 16 MiB - 1). Clients send each request in frames of at most this,
/// and the Produce route copies a record field only when it straddles two frames: at 16 KiB
/// every batch of 16 KiB or more did. A frame is only ever as large as the flow-control
/// window lets it be, so the windows below are what bound memory per connection, not this.
pub(crate) const MAX_FRAME_SIZE: u32 = (16 << 20) - 1;
/// HTTP/2 receive windows (hyper's server default: 1 MiB each). A client may have this much
/// request data in flight on one stream / one connection before the broker has read it; the
/// routes read every frame as it arrives, so a window is rarely full, but a 1 MiB window cut
/// every large request into window-sized frames and stalled it on window updates.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;

/// Runs a broker with the given settings until `shutdown` completes, then shuts down
/// gracefully (drain requests, flush and close every log).
///
/// ```no_run
/// # async fn demo() -> Result<(), strom_broker::BrokerError> {
/// let config = strom_broker::BrokerConfig::default();
/// strom_broker::serve(config, async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub async fn serve(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    BrokerServer::start(config).await?.run_until(shutdown).await
}

async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| BrokerError::Io { context: format!("binding {listen}"), source })?;
    let local_addr = listener.local_addr().map_err(|source| BrokerError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    Ok((listener, local_addr))
}

/// A running broker: its bound address and the handle to stop it.
///
/// Dropping it without [`BrokerServer::shutdown`] also begins a graceful shutdown, but nobody
/// waits for it to finish.
///
/// ```no_run
/// # async fn demo() -> Result<(), strom_broker::BrokerError> {
/// let mut config = strom_broker::BrokerConfig::default();
/// config.listen = "127.0.0.1:0".parse().expect("address");
/// let server = strom_broker::BrokerServer::start(config).await?;
/// println!("listening on {}", server.local_addr());
/// server.shutdown().await
/// # }
/// ```
#[derive(Debug)]
pub struct BrokerServer {
    local_addr: SocketAddr,
    broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BrokerError>>,
}

impl BrokerServer {
    /// Opens the broker (data directory, topics, logs), binds the listener and starts serving.
    /// Returns once the port is bound; with port 0, [`BrokerServer::local_addr`] tells which.
    pub async fn start(mut config: BrokerConfig) -> Result<BrokerServer, BrokerError> {
        // Bound first, so the node registers with the port it really has (port 0 in tests).
        let (listener, local_addr) = bind(config.listen).await?;
        config.listen = local_addr;
        let broker = Broker::open(config).await?;
        Ok(Self::serve_on(broker, listener, local_addr))
    }

    /// Serves an already opened broker.
    pub async fn start_with(broker: Arc<Broker>) -> Result<BrokerServer, BrokerError> {
        let (listener, local_addr) = bind(broker.config().listen).await?;
        broker.set_listen_address(local_addr);
        Ok(Self::serve_on(broker, listener, local_addr))
    }

    fn serve_on(
        broker: Arc<Broker>,
        listener: TcpListener,
        local_addr: SocketAddr,
    ) -> BrokerServer {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(broker.clone(), listener, stopped));
        tracing::info!("listening on {local_addr}");
        BrokerServer { local_addr, broker, stop: Some(stop), task }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker being served.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting connections, lets in-flight requests finish (up to
    /// `shutdown_timeout_ms`), then flushes and closes every log.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        joined(self.task.await)
    }

    /// Serves until `shutdown` completes, then shuts down as [`BrokerServer::shutdown`] does.
    /// Returns early with the error if the server fails on its own.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BrokerError> {
        let failed = tokio::select! {
            () = shutdown => None,
            result = &mut self.task => Some(result),
        };
        match failed {
            None => self.shutdown().await,
            Some(result) => joined(result),
        }
    }
}

fn joined(
    result: Result<Result<(), BrokerError>, tokio::task::JoinError>,
) -> Result<(), BrokerError> {
    result.map_err(|e| BrokerError::Internal(format!("server task: {e}")))?
}

async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    stopped: oneshot::Receiver<()>,
) -> Result<(), BrokerError> {
    let config = broker.config();
    let grace = Duration::from_millis(config.shutdown_timeout_ms);
    let (draining, drain_started) = oneshot::channel::<()>();
    let signal = {
        let broker = broker.clone();
        async move {
            // A dropped handle stops the server too.
            let _ = stopped.await;
            tracing::info!("shutting down: moving leadership away, then draining requests");
            broker.controlled_shutdown().await;
            // Parked fetches answer now instead of holding the drain for their max wait.
            broker.begin_shutdown();
            let _ = draining.send(());
        }
    };
    let max_fetch_response = config.fetch_max_bytes.saturating_add(config.max_request_bytes);
    // Produce, Fetch and ReplicaFetch are served by hand in front of the generated servers
    // (`service/routes.rs`): record bytes are neither copied out of the request frames nor
    // into the response buffer.
    let broker_service = Routes::new(
        BrokerGrpcServer::new(BrokerService::new(broker.clone()))
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(max_fetch_response),
        BrokerRoutes {
            service: BrokerService::new(broker.clone()),
            max_request: config.max_request_bytes,
            max_response: max_fetch_response,
        },
    );
    let admin_service = AdminServer::new(AdminService::new(broker.clone()))
        .max_decoding_message_size(config.max_request_bytes);
    let group_service = GroupServer::new(GroupService::new(broker.clone()))
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(config.max_request_bytes);
    let quorum_service = QuorumServer::new(QuorumService::new(broker.clone()))
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(config.max_request_bytes);
    let max_replica_fetch_response = config.replica_fetch_max_bytes.saturating_mul(2).max(64 << 20);
    let replication_service = Routes::new(
        ReplicationServer::new(ReplicationService::new(broker.clone()))
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(max_replica_fetch_response),
        ReplicationRoutes {
            service: ReplicationService::new(broker.clone()),
            max_request: config.max_request_bytes,
            max_response: max_replica_fetch_response,
        },
    );
    let limits = Limits {
        max_connections: config.max_connections,
        max_idle: Duration::from_millis(config.connections_max_idle_ms),
    };
    let incoming = connection::limit(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        limits,
        broker.metrics().grpc_connection_counter(),
    );
    let serving = Server::builder()
        .layer(crate::metrics::MetricsLayer(broker.metrics().clone()))
        .layer(RecoveryGateLayer(broker.clone()))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .concurrency_limit_per_connection(MAX_IN_FLIGHT_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_frame_size(MAX_FRAME_SIZE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_service(broker_service)
        .add_service(admin_service)
        .add_service(group_service)
        .add_service(quorum_service)
        .add_service(replication_service)
        .serve_with_incoming_shutdown(incoming, signal);
    let drain_deadline = async {
        if drain_started.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        result = serving => result.map_err(BrokerError::from),
        () = drain_deadline => {
            tracing::warn!("requests still running after {grace:?}; closing anyway");
            Ok(())
        }
    };
    let closed = broker.shutdown().await;
    served.and(closed)
}
