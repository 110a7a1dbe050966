//! The shared parts of the scripted gRPC brokers the SDK suites test against.
//!
//! A fake implements only the service whose answers its tests script (the producer suite's
//! `Broker`, the consumer suite's `Broker` or `Group`); this module supplies the rest: an
//! [`Admin`] that answers Metadata from a closure and refuses everything else
//! ([`MetadataAdmin`]), a [`Forward`] that passes the data and admin planes to a real broker,
//! builders of single-node metadata, and a server on port 0 ([`listen`], [`serve`]).

use std::net::SocketAddr;
use std::sync::Arc;

use strom_proto::v1::admin_client::AdminClient;
use strom_proto::v1::admin_server::Admin;
use strom_proto::v1::broker_client::BrokerClient;
use strom_proto::v1::broker_server::Broker;
use strom_proto::v1::*;
use tonic::transport::Channel;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::{Request, Response, Status};

/// Binds `127.0.0.1:0`; the fake needs its port before it can describe itself in metadata.
pub async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves `router` on `listener` in a background task (for the rest of the test).
///
/// ```no_run
/// # async fn demo(admin: strom_testkit::fake_broker::MetadataAdmin) {
/// use strom_proto::v1::admin_server::AdminServer;
/// let (listener, addr) = strom_testkit::fake_broker::listen().await;
/// let router = tonic::transport::Server::builder().add_service(AdminServer::new(admin));
/// strom_testkit::fake_broker::serve(listener, router);
/// # }
/// ```
pub fn serve(listener: tokio::net::TcpListener, router: Router) {
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))));
}

/// The answer of a fake's Metadata: from the request, the response.
type MetadataFn = dyn Fn(MetadataRequest) -> MetadataResponse + Send + Sync;

/// An `Admin` service that answers Metadata with a closure and every other call with
/// UNIMPLEMENTED: what a fake needs so clients can bootstrap and find leaders.
#[derive(Clone)]
pub struct MetadataAdmin {
    metadata: Arc<MetadataFn>,
}

impl MetadataAdmin {
    /// Answers Metadata with `metadata`.
    pub fn new(
        metadata: impl Fn(MetadataRequest) -> MetadataResponse + Send + Sync + 'static,
    ) -> Self {
        MetadataAdmin { metadata: Arc::new(metadata) }
    }
}

impl std::fmt::Debug for MetadataAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetadataAdmin")
    }
}

fn not_faked<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{what} is not part of this fake")))
}

#[tonic::async_trait]
impl Admin for MetadataAdmin {
    async fn alter_configs(
        &self,
        _: Request<AlterConfigsRequest>,
    ) -> Result<Response<AlterConfigsResponse>, Status> {
        not_faked("AlterConfigs")
    }
    async fn create_partitions(
        &self,
        _: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        not_faked("CreatePartitions")
    }
    async fn delete_records(
        &self,
        _: Request<strom_proto::v1::DeleteRecordsRequest>,
    ) -> Result<Response<strom_proto::v1::DeleteRecordsResponse>, Status> {
        not_faked("DeleteRecords")
    }
    async fn elect_leaders(
        &self,
        _: Request<strom_proto::v1::ElectLeadersRequest>,
    ) -> Result<Response<strom_proto::v1::ElectLeadersResponse>, Status> {
        not_faked("ElectLeaders")
    }
    async fn describe_cluster(
        &self,
        _: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        not_faked("DescribeCluster")
    }
    async fn create_topics(
        &self,
        _: Request<CreateTopicsRequest>,
    ) -> Result<Response<CreateTopicsResponse>, Status> {
        not_faked("CreateTopics")
    }
    async fn delete_topics(
        &self,
        _: Request<DeleteTopicsRequest>,
    ) -> Result<Response<DeleteTopicsResponse>, Status> {
        not_faked("DeleteTopics")
    }
    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        not_faked("ListTopics")
    }
    async fn describe_topics(
        &self,
        _: Request<DescribeTopicsRequest>,
    ) -> Result<Response<DescribeTopicsResponse>, Status> {
        not_faked("DescribeTopics")
    }
    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        Ok(Response::new((self.metadata)(request.into_inner())))
    }
}

/// Metadata of a one-node cluster: node 1 at `127.0.0.1:port`, controller too.
pub fn single_node_metadata(port: u16, topics: Vec<TopicMetadata>) -> MetadataResponse {
    MetadataResponse {
        cluster_id: "fake".into(),
        controller_id: 1,
        brokers: vec![BrokerInfo { node_id: 1, host: "127.0.0.1".into(), port: port.into() }],
        topics,
    }
}

/// A partition led by `leader`, replicated on node 1 only.
pub fn partition_metadata(partition: i32, leader: i32) -> PartitionMetadata {
    PartitionMetadata {
        partition,
        error_code: 0,
        leader_id: leader,
        leader_epoch: 0,
        replicas: vec![1],
        isr: vec![1],
    }
}

/// Forwards every data-plane and admin call to a real broker, so a test can put its own
/// service (a scripted group coordinator) in front of real storage.
#[derive(Clone, Debug)]
pub struct Forward {
    broker: BrokerClient<Channel>,
    admin: AdminClient<Channel>,
}

impl Forward {
    /// Connects to the broker at `addr`.
    pub async fn connect(addr: SocketAddr) -> Forward {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("broker address")
            .connect()
            .await
            .expect("connect to the broker");
        Forward { broker: BrokerClient::new(channel.clone()), admin: AdminClient::new(channel) }
    }
}

#[tonic::async_trait]
impl Admin for Forward {
    async fn alter_configs(
        &self,
        r: Request<AlterConfigsRequest>,
    ) -> Result<Response<AlterConfigsResponse>, Status> {
        self.admin.clone().alter_configs(r.into_inner()).await
    }
    async fn create_partitions(
        &self,
        r: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        self.admin.clone().create_partitions(r.into_inner()).await
    }
    async fn delete_records(
        &self,
        r: Request<strom_proto::v1::DeleteRecordsRequest>,
    ) -> Result<Response<strom_proto::v1::DeleteRecordsResponse>, Status> {
        self.admin.clone().delete_records(r.into_inner()).await
    }
    async fn elect_leaders(
        &self,
        r: Request<strom_proto::v1::ElectLeadersRequest>,
    ) -> Result<Response<strom_proto::v1::ElectLeadersResponse>, Status> {
        self.admin.clone().elect_leaders(r.into_inner()).await
    }
    async fn describe_cluster(
        &self,
        r: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        self.admin.clone().describe_cluster(r.into_inner()).await
    }
    async fn create_topics(
        &self,
        r: Request<CreateTopicsRequest>,
    ) -> Result<Response<CreateTopicsResponse>, Status> {
        self.admin.clone().create_topics(r.into_inner()).await
    }
    async fn delete_topics(
        &self,
        r: Request<DeleteTopicsRequest>,
    ) -> Result<Response<DeleteTopicsResponse>, Status> {
        self.admin.clone().delete_topics(r.into_inner()).await
    }
    async fn list_topics(
        &self,
        r: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        self.admin.clone().list_topics(r.into_inner()).await
    }
    async fn describe_topics(
        &self,
        r: Request<DescribeTopicsRequest>,
    ) -> Result<Response<DescribeTopicsResponse>, Status> {
        self.admin.clone().describe_topics(r.into_inner()).await
    }
    async fn metadata(
        &self,
        r: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        self.admin.clone().metadata(r.into_inner()).await
    }
}

#[tonic::async_trait]
impl Broker for Forward {
    async fn produce(
        &self,
        r: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        self.broker.clone().produce(r.into_inner()).await
    }
    async fn fetch(&self, r: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        self.broker.clone().fetch(r.into_inner()).await
    }
    async fn init_producer_id(
        &self,
        r: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        self.broker.clone().init_producer_id(r.into_inner()).await
    }
    async fn list_offsets(
        &self,
        r: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        self.broker.clone().list_offsets(r.into_inner()).await
    }
}
