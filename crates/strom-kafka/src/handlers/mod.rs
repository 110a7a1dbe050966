//! Request dispatch: the typed request of every supported API, decoded from a frame, and the
//! handler that maps it onto the broker core or the group coordinator. Handlers never fail a
//! whole connection for a bad topic or partition: those get error codes in the answer.

mod admin;
mod api_versions;
mod cluster;
mod elect;
mod fetch;
mod groups;
mod log_dirs;
mod metadata;
mod produce;
mod records;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strom_broker::{ApiError, Broker};

use crate::codec::{HeaderPrefix, decode, decode_header, encode_response, encode_with_header};
use crate::error::KafkaError;
use crate::fetch_session::FetchSessionCache;
use crate::versions::is_supported;

/// Bitmask of every topic operation (Kafka's AclOperation codes 3..=11 without 9, IDEMPOTENT_WRITE
/// being a cluster operation): Strom has no ACLs, so a client may do all of them.
const ALL_TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Bitmask of every cluster operation (CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE, ALTER, DESCRIBE).
const ALL_CLUSTER_OPERATIONS: i32 =
    (1 << 4) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// Bitmask of every group operation (READ, DELETE, DESCRIBE).
const ALL_GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// What Kafka sends in an `authorized_operations` field nobody asked for.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// State every connection of one listener shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) broker: Arc<Broker>,
    /// KIP-227 fetch sessions of every connection (a client may move a session between
    /// connections). Locked for bookkeeping only, never across a fetch.
    pub(crate) fetch_sessions: parking_lot::Mutex<FetchSessionCache>,
    /// The session cache's clock.
    started: std::time::Instant,
}

impl Shared {
    pub(crate) fn new(broker: Arc<Broker>, sessions: FetchSessionCache) -> Self {
        Shared {
            broker,
            fetch_sessions: parking_lot::Mutex::new(sessions),
            started: std::time::Instant::now(),
        }
    }

    /// Milliseconds since the listener started: the fetch session cache's time.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One connection's view: the shared state and who is on the other end.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        Context { shared, peer }
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.shared.broker
    }

    pub(crate) fn node_id(&self) -> i32 {
        self.shared.broker.config().node_id
    }
}

/// A request read off the wire, decoded and ready to run.
#[derive(Debug)]
pub(crate) struct Decoded {
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: String,
    request: Request,
}

macro_rules! requests {
    ($($api:ident => $ty:ty),* $(,)?) => {
        /// The typed body of every request the listener serves.
        #[derive(Debug)]
        enum Request {
            /// ApiVersions at a version above ours: answered in the v0 format.
            UnsupportedApiVersions,
            $($api(Box<$ty>),)*
        }

        fn decode_body(api: ApiKey, body: &mut Bytes, version: i16) -> Result<Request, KafkaError> {
            match api {
                $(ApiKey::$api => Ok(Request::$api(Box::new(decode(body, version)?))),)*
                other => Err(KafkaError::Unsupported { api_key: other as i16, version }),
            }
        }
    };
}

requests! {
    Produce => ProduceRequest,
    Fetch => FetchRequest,
    ListOffsets => ListOffsetsRequest,
    Metadata => MetadataRequest,
    OffsetCommit => OffsetCommitRequest,
    OffsetFetch => OffsetFetchRequest,
    FindCoordinator => FindCoordinatorRequest,
    JoinGroup => JoinGroupRequest,
    Heartbeat => HeartbeatRequest,
    LeaveGroup => LeaveGroupRequest,
    SyncGroup => SyncGroupRequest,
    DescribeGroups => DescribeGroupsRequest,
    ListGroups => ListGroupsRequest,
    ApiVersions => ApiVersionsRequest,
    CreateTopics => CreateTopicsRequest,
    DeleteTopics => DeleteTopicsRequest,
    InitProducerId => InitProducerIdRequest,
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
    DescribeConfigs => DescribeConfigsRequest,
    CreatePartitions => CreatePartitionsRequest,
    DeleteGroups => DeleteGroupsRequest,
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
    DescribeCluster => DescribeClusterRequest,
    OffsetDelete => OffsetDeleteRequest,
    AlterConfigs => AlterConfigsRequest,
    DeleteRecords => DeleteRecordsRequest,
    DescribeLogDirs => DescribeLogDirsRequest,
    ElectLeaders => ElectLeadersRequest,
}

impl Decoded {
    /// The request's API, for metrics.
    pub(crate) fn api(&self) -> ApiKey {
        self.api
    }

    /// Decodes a whole frame. ApiVersions at an unknown version is not an error (the client
    /// learns our range from the v0 answer); any other unknown API or version, or a body that
    /// does not decode, is, and closes the connection as Kafka does.
    pub(crate) fn parse(prefix: HeaderPrefix, mut frame: Bytes) -> Result<Decoded, KafkaError> {
        let HeaderPrefix { api_key, api_version: version, correlation_id } = prefix;
        let unsupported = KafkaError::Unsupported { api_key, version };
        let api = ApiKey::try_from(api_key).map_err(|()| unsupported)?;
        if api == ApiKey::ApiVersions && !is_supported(api, version) {
            return Ok(Decoded {
                api,
                version: 0,
                correlation_id,
                client_id: String::new(),
                request: Request::UnsupportedApiVersions,
            });
        }
        if !is_supported(api, version) {
            return Err(KafkaError::Unsupported { api_key, version });
        }
        let header = decode_header(&mut frame, api, version)?;
        let client_id = header.client_id.as_deref().unwrap_or_default().to_string();
        let request = decode_body(api, &mut frame, version)?;
        Ok(Decoded { api, version, correlation_id, client_id, request })
    }
}

/// Runs one request; `Ok(None)` when Kafka sends no answer (produce with acks=0). An error
/// closes the connection.
pub(crate) async fn handle(ctx: &Context, d: Decoded) -> Result<Option<Bytes>, KafkaError> {
    let Decoded { api, version, correlation_id, client_id, request } = d;
    tracing::trace!(peer = %ctx.peer, ?api, version, correlation_id, %client_id, "Kafka request");
    macro_rules! answer {
        ($response:expr) => {
            encode_response(api, version, correlation_id, &$response).map(Some)
        };
    }
    match request {
        Request::UnsupportedApiVersions => {
            encode_with_header(0, 0, correlation_id, &api_versions::unsupported()).map(Some)
        }
        Request::ApiVersions(r) => {
            tracing::debug!(
                peer = %ctx.peer,
                software = %r.client_software_name.as_str(),
                software_version = %r.client_software_version.as_str(),
                "Kafka client connected"
            );
            answer!(api_versions::handle())
        }
        Request::Produce(r) => match produce::handle(ctx, *r, version).await {
            Some(response) => answer!(response),
            None => Ok(None),
        },
        Request::Fetch(r) => answer!(fetch::handle(ctx, *r, version).await),
        Request::ListOffsets(r) => answer!(fetch::list_offsets(ctx, *r).await),
        Request::Metadata(r) => answer!(metadata::handle(ctx, *r, version).await),
        Request::CreateTopics(r) => answer!(admin::create_topics(ctx, *r, version).await),
        Request::DeleteTopics(r) => answer!(admin::delete_topics(ctx, *r, version).await),
        Request::CreatePartitions(r) => answer!(admin::create_partitions(ctx, *r).await),
        Request::DescribeConfigs(r) => answer!(admin::describe_configs(ctx, *r, version)),
        Request::AlterConfigs(r) => answer!(admin::alter_configs(ctx, *r).await),
        Request::IncrementalAlterConfigs(r) => {
            answer!(admin::incremental_alter_configs(ctx, *r).await)
        }
        Request::DescribeCluster(r) => answer!(cluster::describe_cluster(ctx, *r).await),
        Request::OffsetForLeaderEpoch(r) => answer!(cluster::offset_for_leader_epoch(ctx, *r)),
        Request::InitProducerId(r) => answer!(cluster::init_producer_id(ctx, *r).await),
        Request::FindCoordinator(r) => answer!(groups::find_coordinator(ctx, *r, version)),
        Request::JoinGroup(r) => answer!(groups::join_group(ctx, *r, version, client_id).await),
        Request::SyncGroup(r) => answer!(groups::sync_group(ctx, *r).await),
        Request::Heartbeat(r) => answer!(groups::heartbeat(ctx, *r)),
        Request::LeaveGroup(r) => answer!(groups::leave_group(ctx, *r, version)),
        Request::OffsetCommit(r) => answer!(groups::offset_commit(ctx, *r).await),
        Request::OffsetFetch(r) => answer!(groups::offset_fetch(ctx, *r, version)),
        Request::ListGroups(r) => answer!(groups::list_groups(ctx, *r)),
        Request::DescribeGroups(r) => answer!(groups::describe_groups(ctx, *r)),
        Request::DeleteGroups(r) => answer!(groups::delete_groups(ctx, *r).await),
        Request::OffsetDelete(r) => answer!(groups::offset_delete(ctx, *r).await),
        Request::DeleteRecords(r) => answer!(records::delete_records(ctx, *r).await),
        Request::DescribeLogDirs(r) => answer!(log_dirs::describe_log_dirs(ctx, *r).await),
        Request::ElectLeaders(r) => answer!(elect::elect_leaders(ctx, *r, version).await),
    }
}

/// Kafka's number for a broker error.
pub(crate) fn code(e: &ApiError) -> i16 {
    e.code as i16
}

/// The error code of a result: 0 for success.
pub(crate) fn result_code<T>(r: &Result<T, ApiError>) -> i16 {
    r.as_ref().err().map_or(0, code)
}

/// The message of a failed result, for the `error_message` fields.
pub(crate) fn result_message<T>(r: &Result<T, ApiError>) -> Option<StrBytes> {
    r.as_ref().err().map(|e| str_bytes(&e.message))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Kafka's error codes the listener uses that the broker core does not produce.
pub(crate) mod codes {
    use kafka_protocol::error::ResponseError;

    pub(crate) const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
    pub(crate) const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
    pub(crate) const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
    pub(crate) const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();
    pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 =
        ResponseError::UnknownTopicOrPartition.code();
    pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
    pub(crate) const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
    pub(crate) const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 =
        ResponseError::TransactionalIdAuthorizationFailed.code();
    pub(crate) const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
    pub(crate) const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();
}
