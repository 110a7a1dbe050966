//! Shared client core of Strom's SDKs: bootstrap, a cluster metadata cache, one gRPC channel per
//! broker, per-RPC timeouts and the mapping of broker error codes onto [`ClientError`].
//!
//! The producer and consumer SDKs and the admin tool build on [`Client`]; it hands out the
//! generated tonic clients ([`BrokerClient`], [`AdminClient`], [`GroupClient`]) already pointed
//! at the right broker and sized for large record batches.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strom_client::ClientError> {
//! use strom_client::{Client, ClientConfig, OffsetSpec};
//! use strom_format::PartitionId;
//!
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9095")).await?;
//! let topic = client.topic_metadata("orders").await?;
//! let end = client.list_offset("orders", PartitionId::new(0), OffsetSpec::Latest).await?;
//! println!("{} has {} partitions, partition 0 ends at {end:?}", topic.name,
//!     topic.partitions.len());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use strom_format::{LeaderEpoch, Offset, PartitionId};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

pub use strom_proto as proto;

use proto::v1::BrokerInfo;
use proto::v1::admin_client::AdminClient;
use proto::v1::broker_client::BrokerClient;
use proto::v1::group_client::GroupClient;

mod error;

mod config;

pub use config::{ClientConfig, ClientConfigBuilder, DEFAULT_BOOTSTRAP};
pub use error::{ClientError, ConnectError, ErrorCode, RpcError, check_code};

/// How long one broker gets to answer a Metadata request before the next one is asked.
const METADATA_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bound on the number of bootstrap addresses tried, so a pathological string cannot make
/// `connect` dial forever.
const MAX_BOOTSTRAP_ADDRS: usize = 64;

/// What the client knows of one topic: its partitions and their leaders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Partitions sorted by id; ids are dense from 0.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// The partition with `id`, if the topic has it.
    pub fn partition(&self, id: PartitionId) -> Option<&PartitionInfo> {
        // Ids are dense from 0 in practice, so the index is the fast path.
        let direct = usize::try_from(id.get()).ok().and_then(|i| self.partitions.get(i));
        match direct {
            Some(p) if p.id == id => Some(p),
            _ => self
                .partitions
                .binary_search_by_key(&id, |p| p.id)
                .ok()
                .and_then(|i| self.partitions.get(i)),
        }
    }

    /// Number of partitions.
    pub fn num_partitions(&self) -> usize {
        self.partitions.len()
    }
}

/// One partition's leadership as last seen in metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition.
    pub id: PartitionId,
    /// Node id of the leader; negative when the partition has no leader right now.
    pub leader: i32,
    /// Epoch of that leadership.
    pub leader_epoch: LeaderEpoch,
}

/// Which offset [`Client::list_offset`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: the offset the next record will get, as consumers see it.
    Latest,
    /// The first offset whose record timestamp (ms) is at or after this one.
    Timestamp(i64),
}

/// A handle on a Strom cluster. Cheap to clone: all clones share connections and metadata.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// Channel to the bootstrap address that answered; the fallback for cluster-wide RPCs.
    bootstrap: Channel,
    /// Known brokers and a lazily connecting channel to each. Locks are never held across
    /// `.await`: readers clone the channel (an `Arc` inside) and drop the guard.
    brokers: RwLock<HashMap<i32, BrokerConn>>,
    /// Topic metadata and when it was fetched.
    topics: RwLock<HashMap<String, (Arc<TopicInfo>, std::time::Instant)>>,
}

#[derive(Debug, Clone)]
struct BrokerConn {
    host: String,
    port: i32,
    channel: Channel,
}

impl Client {
    /// Dials the bootstrap addresses in order and fetches the cluster metadata from the first
    /// that answers.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), strom_client::ClientError> {
    /// let client = strom_client::Client::connect(Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let addrs: Vec<String> = config
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .take(MAX_BOOTSTRAP_ADDRS)
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::InvalidArgument("empty bootstrap address list".into()));
        }
        let mut last_err = None;
        for addr in addrs {
            let endpoint = endpoint(&addr, &config)?;
            let channel =
                match tokio::time::timeout(config.connect_timeout, endpoint.connect()).await {
                    Ok(Ok(channel)) => channel,
                    Ok(Err(source)) => {
                        debug!(%addr, error = %source, "bootstrap address unreachable");
                        last_err = Some(ClientError::connect(addr, source));
                        continue;
                    }
                    Err(_) => {
                        debug!(%addr, "bootstrap connect timed out");
                        last_err = Some(ClientError::Timeout);
                        continue;
                    }
                };
            let client = Client {
                inner: Arc::new(Inner {
                    config: config.clone(),
                    bootstrap: channel,
                    brokers: RwLock::new(HashMap::new()),
                    topics: RwLock::new(HashMap::new()),
                }),
            };
            match client.fetch_metadata(Vec::new()).await {
                Ok(_) => return Ok(client),
                Err(e) => {
                    debug!(%addr, error = %e, "bootstrap metadata failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(ClientError::Closed))
    }

    /// The configuration this client was built with.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) {
    /// println!("{:?}", client.config().request_timeout);
    /// # }
    /// ```
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Wraps a message into a request carrying the configured per-RPC deadline.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// use strom_client::proto::v1::ListTopicsRequest;
    /// let req = client.request(ListTopicsRequest { include_internal: false });
    /// let topics = client.admin().list_topics(req).await?;
    /// # Ok(()) }
    /// ```
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_with_extra(message, Duration::ZERO)
    }

    /// Like [`Client::request`], with `extra` added to the deadline: for long polls (fetch
    /// `max_wait`, group joins) that legitimately park on the server.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) {
    /// use std::time::Duration;
    /// use strom_client::proto::v1::FetchRequest;
    /// let req = client.request_with_extra(FetchRequest::default(), Duration::from_millis(500));
    /// # }
    /// ```
    pub fn request_with_extra<T>(&self, message: T, extra: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.inner.config.request_timeout.saturating_add(extra));
        req
    }

    /// The topic's partitions and leaders, from the cache or fetched once if not cached.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// let info = client.topic_metadata("orders").await?;
    /// assert!(!info.partitions.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn topic_metadata(&self, topic: &str) -> Result<Arc<TopicInfo>, ClientError> {
        if let Some(info) = self.cached_topic(topic) {
            return Ok(info);
        }
        self.refresh_metadata(topic).await
    }

    /// The cached metadata of `topic`, without any RPC.
    pub fn cached_topic(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        let max_age = self.inner.config.metadata_max_age;
        let (info, fetched) = self.inner.topics.read().get(topic).cloned()?;
        if fetched.elapsed() >= max_age {
            // Stale: keep serving it (the hot path must not stall) and refresh it in the
            // background, once: the timestamp moves so later callers do not spawn again.
            if let Some(entry) = self.inner.topics.write().get_mut(topic) {
                entry.1 = std::time::Instant::now();
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (client, topic) = (self.clone(), topic.to_owned());
                runtime.spawn(async move {
                    if let Err(e) = client.refresh_metadata(&topic).await {
                        tracing::debug!(%topic, error = %e, "periodic metadata refresh failed");
                    }
                });
            }
        }
        Some(info)
    }

    /// The cached metadata of `topic` like [`Client::cached_topic`], but without its age check
    /// (a clock read): for per-record paths, such as the producer's `send`, whose caller also
    /// calls [`Client::cached_topic`] regularly so that old metadata is still refreshed.
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) {
    /// if let Some(info) = client.cached_topic_unaged("orders") {
    ///     println!("{} partitions", info.num_partitions());
    /// }
    /// # }
    /// ```
    pub fn cached_topic_unaged(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        self.inner.topics.read().get(topic).map(|(info, _)| Arc::clone(info))
    }

    /// Fetches the topic's metadata from the cluster, replacing the cached copy.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// // After NOT_LEADER_OR_FOLLOWER, learn the new leader:
    /// let info = client.refresh_metadata("orders").await?;
    /// # Ok(()) }
    /// ```
    pub async fn refresh_metadata(&self, topic: &str) -> Result<Arc<TopicInfo>, ClientError> {
        if topic.is_empty() {
            return Err(ClientError::InvalidArgument("empty topic name".into()));
        }
        let topics = self.fetch_metadata(vec![topic.to_owned()]).await?;
        let meta = topics.into_iter().find(|t| t.name == topic);
        // An "unknown topic" answer leaves a cached copy in place: it may come from a broker
        // that has just restarted and not yet caught up with the metadata (a rolling restart),
        // and dropping the copy would fail every send until another broker answers. The
        // partition leaders decide instead: a deleted topic's produce and fetch fail there
        // with UNKNOWN_TOPIC_OR_PARTITION, retried until the delivery timeout, as in Kafka.
        // `delete_topic` and `invalidate` still drop it.
        let Some(meta) = meta else {
            return Err(ClientError::UnknownTopic(topic.to_owned()));
        };
        if let Err(e) = check_code(meta.error_code, &meta.error_message) {
            return Err(match e.code() {
                Some(ErrorCode::UnknownTopicOrPartition) => {
                    ClientError::UnknownTopic(topic.to_owned())
                }
                _ => e,
            });
        }
        let info = Arc::new(topic_info(meta));
        let now = std::time::Instant::now();
        self.inner.topics.write().insert(topic.to_owned(), (Arc::clone(&info), now));
        Ok(info)
    }

    /// Drops the cached metadata of `topic`, so the next lookup asks the cluster.
    pub fn invalidate(&self, topic: &str) {
        self.inner.topics.write().remove(topic);
    }

    /// Node id of the partition's current leader (from the cache, fetched if absent).
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// let node = client.leader_for("orders", strom_format::PartitionId::new(0)).await?;
    /// let broker = client.broker_by_id(node)?;
    /// # Ok(()) }
    /// ```
    pub async fn leader_for(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<i32, ClientError> {
        let info = self.topic_metadata(topic).await?;
        let Some(p) = info.partition(partition) else {
            return Err(ClientError::Broker {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic {topic:?} has no partition {partition}"),
            });
        };
        if p.leader < 0 {
            return Err(ClientError::Broker {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("{topic}-{partition} has no leader"),
            });
        }
        Ok(p.leader)
    }

    /// The data-plane client of the partition's leader.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// let broker = client.broker_for("orders", strom_format::PartitionId::new(0)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn broker_for(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<BrokerClient<Channel>, ClientError> {
        let node = self.leader_for(topic, partition).await?;
        self.broker_by_id(node)
    }

    /// The data-plane client of broker `node`, as last seen in metadata.
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// let broker = client.broker_by_id(1)?;
    /// # Ok(()) }
    /// ```
    pub fn broker_by_id(&self, node: i32) -> Result<BrokerClient<Channel>, ClientError> {
        Ok(self.sized_broker(self.channel_for(node)?))
    }

    /// The gRPC channel of broker `node`, for callers that issue calls with their own codec
    /// (the producer's Produce encoder); limit their messages to
    /// [`ClientConfig::max_message_bytes`] as [`Client::broker_by_id`] does.
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// let channel = client.broker_channel(1)?;
    /// # Ok(()) }
    /// ```
    pub fn broker_channel(&self, node: i32) -> Result<Channel, ClientError> {
        self.channel_for(node)
    }

    /// A data-plane client of the bootstrap broker, for requests any broker can answer.
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) {
    /// let broker = client.any_broker();
    /// # }
    /// ```
    pub fn any_broker(&self) -> BrokerClient<Channel> {
        self.sized_broker(self.inner.bootstrap.clone())
    }

    /// The admin client of the bootstrap broker.
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) {
    /// let admin = client.admin();
    /// # }
    /// ```
    pub fn admin(&self) -> AdminClient<Channel> {
        let limit = self.inner.config.max_message_bytes;
        AdminClient::new(self.inner.bootstrap.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// The group client of the bootstrap broker (for `FindCoordinator`, listing groups).
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) {
    /// let groups = client.group();
    /// # }
    /// ```
    pub fn group(&self) -> GroupClient<Channel> {
        self.sized_group(self.inner.bootstrap.clone())
    }

    /// The group client of a specific broker, e.g. the coordinator `FindCoordinator` named.
    /// Registers the broker's address if it was not known yet.
    ///
    /// ```no_run
    /// # fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// use strom_client::proto::v1::BrokerInfo;
    /// let info = BrokerInfo { node_id: 1, host: "127.0.0.1".into(), port: 9095 };
    /// let coordinator = client.group_at(&info)?;
    /// # Ok(()) }
    /// ```
    pub fn group_at(&self, broker: &BrokerInfo) -> Result<GroupClient<Channel>, ClientError> {
        self.update_brokers(std::slice::from_ref(broker))?;
        Ok(self.sized_group(self.channel_for(broker.node_id)?))
    }

    /// Creates a topic. `partitions` -1 and `replication_factor` 0 mean the broker's defaults.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// client.create_topic("orders", 6, 1, Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: HashMap<String, String>,
    ) -> Result<(), ClientError> {
        if partitions <= 0 && partitions != -1 {
            return Err(ClientError::InvalidArgument(format!(
                "partition count must be positive (or -1 for the broker default), got {partitions}"
            )));
        }
        let req = proto::v1::CreateTopicsRequest {
            topics: vec![proto::v1::NewTopic {
                name: name.to_owned(),
                num_partitions: partitions,
                replication_factor,
                configs,
            }],
            validate_only: false,
        };
        let resp = self
            .admin()
            .create_topics(self.request(req))
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        self.invalidate(name);
        topic_result(resp.topics, name)
    }

    /// Deletes a topic; [`ClientError::UnknownTopic`] if it does not exist.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// client.delete_topic("orders").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = proto::v1::DeleteTopicsRequest { names: vec![name.to_owned()] };
        let resp = self
            .admin()
            .delete_topics(self.request(req))
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        self.invalidate(name);
        topic_result(resp.topics, name).map_err(|e| match e.code() {
            Some(ErrorCode::UnknownTopicOrPartition) => ClientError::UnknownTopic(name.to_owned()),
            _ => e,
        })
    }

    /// Lists topics, optionally with internal ones (`__consumer_offsets`).
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// for t in client.list_topics(false).await? {
    ///     println!("{} ({} partitions)", t.name, t.num_partitions);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_topics(
        &self,
        include_internal: bool,
    ) -> Result<Vec<proto::v1::TopicListing>, ClientError> {
        let req = proto::v1::ListTopicsRequest { include_internal };
        let resp = self
            .admin()
            .list_topics(self.request(req))
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        Ok(resp.topics)
    }

    /// Describes topics (all when `names` is empty). Per-topic failures stay in each
    /// description's `error_code`; check them with [`check_code`].
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// for d in client.describe_topics(&["orders".to_string()]).await? {
    ///     strom_client::check_code(d.error_code, &d.error_message)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn describe_topics(
        &self,
        names: &[String],
    ) -> Result<Vec<proto::v1::TopicDescription>, ClientError> {
        let req = proto::v1::DescribeTopicsRequest { names: names.to_vec() };
        let resp = self
            .admin()
            .describe_topics(self.request(req))
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        Ok(resp.topics)
    }

    /// Resolves an offset of a partition on its leader. `None`: no record at or after the
    /// requested timestamp.
    ///
    /// ```no_run
    /// # async fn demo(client: strom_client::Client) -> Result<(), strom_client::ClientError> {
    /// use strom_client::OffsetSpec;
    /// use strom_format::PartitionId;
    /// let start = client.list_offset("orders", PartitionId::new(0), OffsetSpec::Earliest).await?;
    /// # Ok(()) }
    /// ```
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: PartitionId,
        spec: OffsetSpec,
    ) -> Result<Option<Offset>, ClientError> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ts) if ts >= 0 => ts,
            OffsetSpec::Timestamp(ts) => {
                return Err(ClientError::InvalidArgument(format!("negative timestamp {ts}")));
            }
        };
        let req = proto::v1::ListOffsetsRequest {
            topics: vec![proto::v1::ListOffsetsTopic {
                name: topic.to_owned(),
                partitions: vec![proto::v1::ListOffsetsPartition {
                    partition: partition.get(),
                    timestamp,
                }],
            }],
        };
        let mut broker = self.broker_for(topic, partition).await?;
        let resp = broker
            .list_offsets(self.request(req))
            .await
            .map_err(ClientError::from_status)?
            .into_inner();
        let p = resp
            .topics
            .into_iter()
            .filter(|t| t.name == topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition == partition.get())
            .ok_or_else(|| ClientError::Broker {
                code: ErrorCode::UnknownServerError,
                message: format!("ListOffsets response lacks {topic}-{partition}"),
            })?;
        if let Err(e) = check_code(p.error_code, &p.error_message) {
            if e.is_retriable() {
                self.invalidate(topic);
            }
            return Err(e);
        }
        Ok((p.offset >= 0).then_some(Offset::new(p.offset)))
    }

    /// Sends a Metadata RPC (bootstrap first, then every known broker until one answers),
    /// records the brokers it lists, and returns its topics.
    async fn fetch_metadata(
        &self,
        topics: Vec<String>,
    ) -> Result<Vec<proto::v1::TopicMetadata>, ClientError> {
        let mut candidates = vec![self.inner.bootstrap.clone()];
        candidates.extend(self.inner.brokers.read().values().map(|b| b.channel.clone()));
        let limit = self.inner.config.max_message_bytes;
        let mut last_err = ClientError::Closed;
        for channel in candidates {
            let mut admin = AdminClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            let mut req = self.request(proto::v1::MetadataRequest { topics: topics.clone() });
            // Metadata is answered from memory: a node silent this long is frozen or gone, and
            // the next one is asked rather than waiting out the full request timeout.
            req.set_timeout(self.inner.config.request_timeout.min(METADATA_ATTEMPT_TIMEOUT));
            match admin.metadata(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    self.update_brokers(&resp.brokers)?;
                    return Ok(resp.topics);
                }
                Err(status) => {
                    let e = ClientError::from_status(status);
                    if !e.is_retriable() {
                        return Err(e);
                    }
                    debug!(error = %e, "metadata request failed, trying next broker");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    /// Adds or updates broker addresses; a moved broker gets a new channel.
    fn update_brokers(&self, infos: &[BrokerInfo]) -> Result<(), ClientError> {
        // Build endpoints outside the lock; only cheap map edits happen under it.
        let mut fresh = Vec::new();
        {
            let brokers = self.inner.brokers.read();
            for info in infos {
                let known = brokers.get(&info.node_id);
                if known.is_some_and(|b| b.host == info.host && b.port == info.port) {
                    continue;
                }
                fresh.push(info.clone());
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut conns = Vec::with_capacity(fresh.len());
        for info in fresh {
            if !(1..=i32::from(u16::MAX)).contains(&info.port) || info.host.is_empty() {
                warn!(node = info.node_id, host = %info.host, port = info.port,
                    "ignoring broker with an invalid address");
                continue;
            }
            let addr = format!("{}:{}", info.host, info.port);
            let channel = endpoint(&addr, &self.inner.config)?.connect_lazy();
            conns.push((info.node_id, BrokerConn { host: info.host, port: info.port, channel }));
        }
        let mut brokers = self.inner.brokers.write();
        for (id, conn) in conns {
            debug!(node = id, host = %conn.host, port = conn.port, "broker address");
            brokers.insert(id, conn);
        }
        Ok(())
    }

    fn channel_for(&self, node: i32) -> Result<Channel, ClientError> {
        self.inner.brokers.read().get(&node).map(|b| b.channel.clone()).ok_or_else(|| {
            ClientError::Broker {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("broker {node} is not in the cluster metadata"),
            }
        })
    }

    fn sized_broker(&self, channel: Channel) -> BrokerClient<Channel> {
        let limit = self.inner.config.max_message_bytes;
        BrokerClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }

    fn sized_group(&self, channel: Channel) -> GroupClient<Channel> {
        let limit = self.inner.config.max_message_bytes;
        GroupClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }
}

/// HTTP/2 receive window of one call: how much of a response (a fetch of many partitions,
/// megabytes) the broker may send before the client acknowledges it. hyper's default (2 MiB)
/// made a large fetch response wait for WINDOW_UPDATE round trips; a window is an allowance,
/// not an allocation, and the consumer bounds what it buffers itself.
const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 receive window of the whole connection, shared by its calls (hyper's default: 5 MiB).
const CONNECTION_WINDOW: u32 = 32 << 20;
// tonic's `Endpoint` has no setting for the largest frame the client accepts (16 KiB, HTTP/2's
// default); the frames the client *sends* are sized by the broker's SETTINGS.

fn endpoint(addr: &str, config: &ClientConfig) -> Result<Endpoint, ClientError> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| ClientError::InvalidArgument(format!("bad address {addr:?}: {e}")))?;
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

fn topic_info(meta: proto::v1::TopicMetadata) -> TopicInfo {
    let mut partitions: Vec<PartitionInfo> = meta
        .partitions
        .into_iter()
        .map(|p| PartitionInfo {
            id: PartitionId::new(p.partition),
            // A partition-level error (e.g. LEADER_NOT_AVAILABLE) means no usable leader.
            leader: if p.error_code == ErrorCode::None.code() { p.leader_id } else { -1 },
            leader_epoch: LeaderEpoch::new(p.leader_epoch),
        })
        .collect();
    partitions.sort_by_key(|p| p.id);
    partitions.dedup_by_key(|p| p.id);
    TopicInfo { name: meta.name, partitions }
}

fn topic_result(results: Vec<proto::v1::TopicResult>, name: &str) -> Result<(), ClientError> {
    let r = results.into_iter().find(|r| r.name == name).ok_or_else(|| ClientError::Broker {
        code: ErrorCode::UnknownServerError,
        message: format!("response lacks topic {name:?}"),
    })?;
    check_code(r.error_code, &r.error_message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_info_sorts_and_hides_errored_leaders() {
        let meta = proto::v1::TopicMetadata {
            name: "t".into(),
            error_code: 0,
            error_message: String::new(),
            partitions: vec![
                proto::v1::PartitionMetadata {
                    partition: 1,
                    error_code: ErrorCode::LeaderNotAvailable.code(),
                    leader_id: 3,
                    leader_epoch: 2,
                    replicas: vec![],
                    isr: vec![],
                },
                proto::v1::PartitionMetadata {
                    partition: 0,
                    error_code: 0,
                    leader_id: 1,
                    leader_epoch: 5,
                    replicas: vec![1],
                    isr: vec![1],
                },
            ],
        };
        let info = topic_info(meta);
        assert_eq!(info.num_partitions(), 2);
        assert_eq!(info.partitions[0].id, PartitionId::new(0));
        assert_eq!(info.partitions[0].leader, 1);
        assert_eq!(info.partitions[1].leader, -1);
    }

    #[tokio::test]
    async fn connect_to_nothing_fails_cleanly() {
        // Port 1 on localhost: nothing listens there, so the dial fails fast.
        let mut config = ClientConfig::new("127.0.0.1:1");
        config.connect_timeout = Duration::from_secs(2);
        let err = Client::connect(config).await.unwrap_err();
        assert!(err.is_retriable(), "{err}");
        let err = Client::connect(ClientConfig::new(" , ")).await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidArgument(_)));
    }
}
