//! The TCP side: accept connections, cut the byte stream into frames, and answer each
//! connection's requests in the order they came, while the client may keep sending
//! (pipelining). One task reads and decodes frames ahead into a bounded queue; a second runs
//! them one at a time and writes the answers, as Kafka processes one request per connection at
//! a time (so a producer's pipelined batches for one partition are appended in order).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use strom_broker::{Broker, Listener, RequestKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::KafkaConfig;
use crate::codec::header_prefix;
use crate::error::KafkaError;
use crate::fetch_session::FetchSessionCache;
use crate::handlers::{Context, Decoded, Shared};

/// Requests read ahead of the one being answered, per connection. Beyond this the reader stops
/// reading the socket, and TCP flow control slows the client down.
const MAX_QUEUED_REQUESTS: usize = 64;
/// Bytes of requests read ahead per connection (at least one largest frame), so 64 queued
/// frames cannot each be 100 MiB.
const MIN_QUEUED_BYTES: usize = 16 << 20;
/// Open connections at most; more are closed as they arrive, with a log line.
const MAX_CONNECTIONS: usize = 10_000;

/// A running Kafka listener. Dropping it without [`KafkaListener::shutdown`] stops accepting
/// but leaves open connections to end with the broker.
#[derive(Debug)]
pub struct KafkaListener {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl KafkaListener {
    /// Binds `config.listen` and starts serving `broker`'s topics and groups over Kafka's
    /// protocol. Returns once the port is bound; with port 0, [`KafkaListener::local_addr`]
    /// tells which.
    pub async fn start(broker: Arc<Broker>, config: KafkaConfig) -> Result<Self, KafkaError> {
        let listener = TcpListener::bind(config.listen).await.map_err(|source| KafkaError::Io {
            context: format!("binding the Kafka listener to {}", config.listen),
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| KafkaError::Io {
            context: "reading the Kafka listener's address".into(),
            source,
        })?;
        let advertised = config.advertised(local_addr)?;
        let max_frame = config.max_request_bytes;
        broker.set_kafka_address(format!("{}:{}", advertised.0, advertised.1));
        // Metadata, DescribeCluster and FindCoordinator read it back from the broker, with
        // every other node's.
        let sessions = FetchSessionCache::new(
            config.fetch_session_cache_slots,
            config.fetch_session_eviction_ms,
            rand_seed(),
        );
        let shared = Arc::new(Shared::new(broker, sessions));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), max_frame, stopped));
        tracing::info!(addr = %local_addr, "Kafka protocol listener bound");
        Ok(KafkaListener { local_addr, stop, task: Some(task), shared })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Incremental fetch sessions (KIP-227) held now.
    pub fn fetch_sessions(&self) -> usize {
        self.shared.fetch_sessions.lock().len()
    }

    /// Stops accepting and closes every connection (requests being answered are abandoned;
    /// the broker's own shutdown answers parked fetches first when it runs before this).
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for KafkaListener {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// A seed for session ids that differs between runs and listeners (ids need not be secret,
/// only hard to collide with another client's by accident).
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_frame: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut broker_stopping = shared.broker.shutdown_signal();
    // A node that has not caught up with the metadata quorum since it started would answer
    // from a stale image: like a Kafka broker in RECOVERY it accepts nobody yet, and clients
    // wait in the backlog or use another node (strom-broker's `recovery.rs`).
    let mut serving = shared.broker.serving_signal();
    tokio::select! {
        () = turned_true(&mut serving) => {}
        () = turned_true(&mut stopped) => return,
        () = turned_true(&mut broker_stopping) => return,
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= MAX_CONNECTIONS => {
                    tracing::warn!(%peer, "refusing Kafka connection: {MAX_CONNECTIONS} already open");
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    connections.spawn(serve_connection(stream, peer, shared, max_frame));
                }
                Err(e) => {
                    // Out of descriptors and the like: log, breathe, keep serving.
                    tracing::warn!(error = %e, "accepting a Kafka connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set stays as large as the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = turned_true(&mut stopped) => break,
            () = turned_true(&mut broker_stopping) => break,
        }
    }
    connections.shutdown().await;
    tracing::info!("Kafka protocol listener stopped");
}

/// Completes when the flag turns `true` (or its sender is gone).
async fn turned_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, before the task yields again.
    let _ = flag.wait_for(|on| *on).await.is_ok();
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    max_frame: usize,
) {
    let _counted = shared.broker.metrics().kafka_connection();
    let (read, write) = stream.into_split();
    let (queue, queued) = mpsc::channel(MAX_QUEUED_REQUESTS);
    let reader = read_frames(read, peer, max_frame, queue);
    let writer = answer_frames(write, Context::new(shared, peer), queued);
    // Either side ending ends the connection: a bad frame stops the reader, after which the
    // writer answers what was queued before it; a write failure drops the reader.
    let (read_result, ()) = tokio::join!(reader, writer);
    match read_result {
        Ok(()) => tracing::debug!(%peer, "Kafka connection closed"),
        Err(e) => tracing::warn!(%peer, error = %e, "closing Kafka connection"),
    }
}

/// Reads length-prefixed frames and queues them, in order, until EOF or a bad frame.
async fn read_frames(
    mut read: OwnedReadHalf,
    peer: SocketAddr,
    max_frame: usize,
    queue: mpsc::Sender<(Decoded, OwnedSemaphorePermit)>,
) -> Result<(), KafkaError> {
    let io = |source| KafkaError::Io { context: format!("reading from {peer}"), source };
    let budget_bytes = max_frame.max(MIN_QUEUED_BYTES);
    let budget = Arc::new(Semaphore::new(budget_bytes));
    loop {
        let mut len = [0u8; 4];
        match read.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        let size = i32::from_be_bytes(len);
        let size = match usize::try_from(size) {
            Ok(n) if n <= max_frame => n,
            _ => return Err(KafkaError::FrameTooLarge { size: i64::from(size), limit: max_frame }),
        };
        // Held until the request is answered: the bytes read ahead stay within the budget.
        let permits = u32::try_from(size.min(budget_bytes)).unwrap_or(u32::MAX);
        let Ok(permit) = budget.clone().acquire_many_owned(permits).await else {
            return Ok(());
        };
        let mut frame = BytesMut::zeroed(size);
        read.read_exact(&mut frame).await.map_err(io)?;
        let frame: Bytes = frame.freeze();
        let prefix = header_prefix(&frame)?;
        let decoded = Decoded::parse(prefix, frame)?;
        if queue.send((decoded, permit)).await.is_err() {
            // The writer is gone (its socket failed): nothing more to do.
            return Ok(());
        }
    }
}

/// Runs queued requests one at a time and writes each answer before starting the next.
async fn answer_frames(
    write: OwnedWriteHalf,
    ctx: Context,
    mut queued: mpsc::Receiver<(Decoded, OwnedSemaphorePermit)>,
) {
    let mut write = BufWriter::new(write);
    while let Some((request, _permit)) = queued.recv().await {
        let (kind, started) = (request_kind(request.api()), std::time::Instant::now());
        let handled = crate::handlers::handle(&ctx, request).await;
        ctx.shared.broker.metrics().observe_request(Listener::Kafka, kind, started.elapsed());
        let bytes = match handled {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(peer = %ctx.peer, error = %e, "closing Kafka connection");
                break;
            }
        };
        let written = async {
            write.write_all(&bytes).await?;
            // Flush unless more requests wait: their answers can share the syscall.
            if queued.is_empty() {
                write.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        if let Err(e) = written.await {
            tracing::debug!(peer = %ctx.peer, error = %e, "writing a Kafka response failed");
            return;
        }
    }
    let _ = write.flush().await;
    let _ = write.into_inner().shutdown().await;
}

/// The metrics family of a Kafka API.
fn request_kind(api: ApiKey) -> RequestKind {
    match api {
        ApiKey::Produce => RequestKind::Produce,
        ApiKey::Fetch => RequestKind::Fetch,
        ApiKey::ListOffsets => RequestKind::ListOffsets,
        ApiKey::Metadata
        | ApiKey::ApiVersions
        | ApiKey::DescribeCluster
        | ApiKey::DescribeConfigs
        | ApiKey::OffsetForLeaderEpoch => RequestKind::Metadata,
        ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::SyncGroup
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete => RequestKind::Group,
        ApiKey::CreateTopics
        | ApiKey::DeleteTopics
        | ApiKey::CreatePartitions
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::AlterConfigs
        | ApiKey::InitProducerId => RequestKind::Admin,
        _ => RequestKind::Other,
    }
}
