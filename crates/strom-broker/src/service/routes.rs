//! Hand-written routes in front of tonic's generated servers, for the methods that carry
//! record bytes: `Broker/Produce` (request frames not copied: `produce_route.rs`),
//! `Broker/Fetch` (records not copied into the response: `fetch_route.rs`) and
//! `Replication/ReplicaFetch` (the same for followers: `replica_fetch_route.rs`). Every other
//! method goes to the generated server untouched.
//!
//! A route keeps what the generated server does for its method: the request size limit, the
//! refusal of compressed requests, the response size limit, errors as gRPC statuses (see
//! `grpc_body.rs`). The tower layers of the server (metrics, concurrency limits, timeouts)
//! wrap the routes as they wrap the generated servers.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::service::broker::BrokerService;
use crate::service::replication::ReplicationService;
use crate::service::{fetch_route, produce_route, replica_fetch_route};

/// A route's answer.
type Answer = BoxFuture<'static, Result<http::Response<Body>, Status>>;

/// The methods one service serves by hand.
pub(crate) trait Handler: Clone + Send + 'static {
    /// Whether the method at `path` is served by this handler.
    fn handles(&self, path: &str) -> bool;
    /// Serves a request of one of its methods.
    fn serve(&self, request: http::Request<Body>) -> Answer;
}

/// A generated server with some of its methods served by `H` (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Routes<S, H> {
    inner: S,
    handler: H,
}

impl<S, H> Routes<S, H> {
    pub(crate) fn new(inner: S, handler: H) -> Self {
        Routes { inner, handler }
    }
}

impl<S: NamedService, H> NamedService for Routes<S, H> {
    const NAME: &'static str = S::NAME;
}

impl<S, H> tower::Service<http::Request<Body>> for Routes<S, H>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    H: Handler,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !self.handler.handles(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let answer = self.handler.serve(request);
        Box::pin(async move { Ok(answer.await.unwrap_or_else(|status| status.into_http())) })
    }
}

/// `strom.v1.Broker`: Produce and Fetch by hand.
#[derive(Debug, Clone)]
pub(crate) struct BrokerRoutes {
    pub(crate) service: BrokerService,
    /// The generated server's `max_decoding_message_size` for this service.
    pub(crate) max_request: usize,
    /// Its `max_encoding_message_size`.
    pub(crate) max_response: usize,
}

impl Handler for BrokerRoutes {
    fn handles(&self, path: &str) -> bool {
        path == produce_route::PRODUCE_PATH || path == fetch_route::FETCH_PATH
    }

    fn serve(&self, request: http::Request<Body>) -> Answer {
        let (service, max_request, max_response) =
            (self.service.clone(), self.max_request, self.max_response);
        Box::pin(async move {
            if request.uri().path() == produce_route::PRODUCE_PATH {
                produce_route::serve(&service, request, max_request, max_response).await
            } else {
                fetch_route::serve(&service, request, max_request, max_response).await
            }
        })
    }
}

/// `strom.v1.Replication`: ReplicaFetch by hand.
#[derive(Debug, Clone)]
pub(crate) struct ReplicationRoutes {
    pub(crate) service: ReplicationService,
    pub(crate) max_request: usize,
    pub(crate) max_response: usize,
}

impl Handler for ReplicationRoutes {
    fn handles(&self, path: &str) -> bool {
        path == replica_fetch_route::REPLICA_FETCH_PATH
    }

    fn serve(&self, request: http::Request<Body>) -> Answer {
        let (service, max_request, max_response) =
            (self.service.clone(), self.max_request, self.max_response);
        Box::pin(async move {
            replica_fetch_route::serve(&service, request, max_request, max_response).await
        })
    }
}
