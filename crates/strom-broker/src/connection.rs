//! Limits on client connections, applied to every accepted TCP stream before the gRPC server
//! sees it: at most `max_connections` open at once (more are closed on accept), and a
//! connection that sends nothing for `connections_max_idle_ms` is closed (Kafka's
//! `connections.max.idle.ms`).
//!
//! Idle means no byte read: a client that never speaks (not even the HTTP/2 preface) is
//! reaped, while a live client's HTTP/2 keep-alive answers count as activity. Writes do not,
//! so a peer that stopped reading cannot keep its connection by being written to.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The connection limits in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time without a byte read after which a connection is closed.
    pub max_idle: Duration,
}

/// Wraps accepted streams: counts them against the limit and arms their idle timer.
pub(crate) fn limit(
    incoming: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    limits: Limits,
    open: Arc<AtomicUsize>,
) -> impl Stream<Item = io::Result<LimitedStream>> + Send + 'static {
    incoming.filter_map(move |accepted| {
        let open = Arc::clone(&open);
        async move {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            let previous = open.fetch_add(1, Ordering::AcqRel);
            let slot = Slot(open);
            if previous >= limits.max_connections {
                tracing::warn!(peer = ?stream.peer_addr().ok(), limit = limits.max_connections,
                    "connection limit reached; closing the new connection");
                // Dropping the stream and the slot closes and uncounts it.
                return None;
            }
            Some(Ok(LimitedStream {
                inner: stream,
                max_idle: limits.max_idle,
                idle: Box::pin(tokio::time::sleep(limits.max_idle)),
                _slot: slot,
            }))
        }
    })
}

/// One counted place in the connection limit; freed on drop.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client connection with an idle deadline.
#[derive(Debug)]
pub(crate) struct LimitedStream {
    inner: TcpStream,
    max_idle: Duration,
    /// Fires `max_idle` after the last byte read.
    idle: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + this.max_idle;
                    this.idle.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // The server always keeps a read pending, so this is where idleness shows.
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::debug!(peer = ?this.inner.peer_addr().ok(),
                        "closing a connection idle for {:?}", this.max_idle);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for longer than connections.max.idle.ms",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn accept_limited(
        limits: Limits,
    ) -> (std::net::SocketAddr, impl Stream<Item = io::Result<LimitedStream>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream_from(listener);
        (addr, Box::pin(limit(incoming, limits, Arc::default())))
    }

    fn tokio_stream_from(
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
        futures::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await.map(|(s, _)| s);
            Some((accepted, l))
        })
    }

    #[tokio::test]
    async fn silent_connection_is_closed_after_max_idle() {
        let limits = Limits { max_connections: 10, max_idle: Duration::from_millis(300) };
        let (addr, mut incoming) = accept_limited(limits).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut server = incoming.next().await.unwrap().unwrap();
        let mut buf = [0u8; 16];
        let started = Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_slots_freed() {
        let limits = Limits { max_connections: 1, max_idle: Duration::from_secs(600) };
        let (addr, mut incoming) = accept_limited(limits).await;
        let _first = TcpStream::connect(addr).await.unwrap();
        let held = incoming.next().await.unwrap().unwrap();
        // The second is accepted and dropped: its client reads EOF.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let next = incoming.next();
        tokio::pin!(next);
        tokio::select! {
            _ = &mut next => panic!("a connection over the limit was handed out"),
            read = second.read(&mut buf) => assert_eq!(read.unwrap(), 0),
        }
        drop(held);
        let _third = TcpStream::connect(addr).await.unwrap();
        assert!(next.await.unwrap().is_ok(), "a freed slot takes a new connection");
    }
}
