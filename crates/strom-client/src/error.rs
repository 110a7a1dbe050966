//! The SDKs' error vocabulary: [`ErrorCode`] (Kafka's error codes, the SDKs' own type rather
//! than the generated protobuf enum), [`ClientError`] and the opaque wrappers that keep tonic's
//! errors out of public signatures while keeping them in the `source()` chain.
//!
//! Invariant: no public item of this module names a tonic or prost type; whether an error is a
//! timeout or a lost connection is decided here, by type, never by matching message text.

use std::error::Error as StdError;
use std::fmt;

/// Declares [`ErrorCode`] with Kafka's number and name of each code, in one table, so the
/// number, the name and the variant cannot drift apart.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// A Kafka error code as Strom's brokers answer it (Kafka's numbers and names).
        ///
        /// The SDKs' own type: the generated protobuf enum stays internal. Codes this version
        /// does not know arrive as [`ErrorCode::Unknown`] with their number, so a newer broker
        /// never makes a response undecodable.
        ///
        /// ```
        /// use strom_client::ErrorCode;
        /// let code = ErrorCode::from_i32(6);
        /// assert_eq!(code, ErrorCode::NotLeaderOrFollower);
        /// assert_eq!(code.name(), "NOT_LEADER_OR_FOLLOWER");
        /// assert!(code.is_retriable());
        /// assert_eq!(ErrorCode::from_i32(9999), ErrorCode::Unknown(9999));
        /// assert_eq!(ErrorCode::Unknown(9999).code(), 9999);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code this version of the SDK does not know; the number as received.
            Unknown(i32),
        }

        impl ErrorCode {
            /// The code with Kafka's number `code`; [`ErrorCode::Unknown`] for numbers this
            /// version does not know.
            ///
            /// ```
            /// assert_eq!(strom_client::ErrorCode::from_i32(0), strom_client::ErrorCode::None);
            /// ```
            pub const fn from_i32(code: i32) -> ErrorCode {
                match code {
                    $( $num => ErrorCode::$variant, )*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// Kafka's number for this code.
            ///
            /// ```
            /// assert_eq!(strom_client::ErrorCode::RequestTimedOut.code(), 7);
            /// ```
            pub const fn code(self) -> i32 {
                match self {
                    $( ErrorCode::$variant => $num, )*
                    ErrorCode::Unknown(other) => other,
                }
            }

            /// Kafka's name for this code (`NOT_LEADER_OR_FOLLOWER`, ...); `UNKNOWN` for a
            /// code this version does not know.
            ///
            /// ```
            /// assert_eq!(strom_client::ErrorCode::MessageTooLarge.name(), "MESSAGE_TOO_LARGE");
            /// ```
            pub const fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $name, )*
                    ErrorCode::Unknown(_) => "UNKNOWN",
                }
            }
        }

        #[cfg(test)]
        const ALL_KNOWN: &[ErrorCode] = &[$( ErrorCode::$variant, )*];
    };
}

error_codes! {
    /// No error (Kafka's `NONE`): what a successful response carries.
    None = 0, "NONE";
    /// Something unexpected on the broker; the message says what.
    UnknownServerError = -1, "UNKNOWN_SERVER_ERROR";
    /// The requested offset is not in the partition's log.
    OffsetOutOfRange = 1, "OFFSET_OUT_OF_RANGE";
    /// A batch failed its CRC or did not decode.
    CorruptMessage = 2, "CORRUPT_MESSAGE";
    /// The topic or partition does not exist (or is not known to this broker yet).
    UnknownTopicOrPartition = 3, "UNKNOWN_TOPIC_OR_PARTITION";
    /// A fetch size is out of range.
    InvalidFetchSize = 4, "INVALID_FETCH_SIZE";
    /// The partition has no leader right now (an election is in progress).
    LeaderNotAvailable = 5, "LEADER_NOT_AVAILABLE";
    /// This broker does not lead the partition: refresh metadata and retry.
    NotLeaderOrFollower = 6, "NOT_LEADER_OR_FOLLOWER";
    /// The broker gave up waiting (for replicas, for the quorum).
    RequestTimedOut = 7, "REQUEST_TIMED_OUT";
    /// A record or batch is larger than the topic allows.
    MessageTooLarge = 10, "MESSAGE_TOO_LARGE";
    /// A commit's metadata string is too long.
    OffsetMetadataTooLarge = 12, "OFFSET_METADATA_TOO_LARGE";
    /// The group coordinator is loading or moving.
    CoordinatorNotAvailable = 15, "COORDINATOR_NOT_AVAILABLE";
    /// This broker is not the group's coordinator.
    NotCoordinator = 16, "NOT_COORDINATOR";
    /// The topic name is not valid.
    InvalidTopicException = 17, "INVALID_TOPIC_EXCEPTION";
    /// A produce request is larger than the broker accepts.
    RecordListTooLarge = 18, "RECORD_LIST_TOO_LARGE";
    /// Fewer in-sync replicas than `min.insync.replicas`: the batch was not written.
    NotEnoughReplicas = 19, "NOT_ENOUGH_REPLICAS";
    /// The batch was written but the ISR shrank below `min.insync.replicas` meanwhile.
    NotEnoughReplicasAfterAppend = 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND";
    /// `acks` is not 0, 1 or -1.
    InvalidRequiredAcks = 21, "INVALID_REQUIRED_ACKS";
    /// The request names a group generation that is not the current one.
    IllegalGeneration = 22, "ILLEGAL_GENERATION";
    /// No assignment strategy in common with the group's members.
    InconsistentGroupProtocol = 23, "INCONSISTENT_GROUP_PROTOCOL";
    /// The group id is empty or too long.
    InvalidGroupId = 24, "INVALID_GROUP_ID";
    /// The member id is not in the group.
    UnknownMemberId = 25, "UNKNOWN_MEMBER_ID";
    /// The session timeout is outside the coordinator's bounds.
    InvalidSessionTimeout = 26, "INVALID_SESSION_TIMEOUT";
    /// The group is rebalancing: rejoin.
    RebalanceInProgress = 27, "REBALANCE_IN_PROGRESS";
    /// A commit's size is invalid.
    InvalidCommitOffsetSize = 28, "INVALID_COMMIT_OFFSET_SIZE";
    /// A record timestamp is out of the accepted range.
    InvalidTimestamp = 32, "INVALID_TIMESTAMP";
    /// CreateTopics of a topic that exists.
    TopicAlreadyExists = 36, "TOPIC_ALREADY_EXISTS";
    /// A partition count is invalid.
    InvalidPartitions = 37, "INVALID_PARTITIONS";
    /// A replication factor is invalid.
    InvalidReplicationFactor = 38, "INVALID_REPLICATION_FACTOR";
    /// A manual replica assignment is invalid.
    InvalidReplicaAssignment = 39, "INVALID_REPLICA_ASSIGNMENT";
    /// A topic or broker config is invalid.
    InvalidConfig = 40, "INVALID_CONFIG";
    /// This node is not the active controller.
    NotController = 41, "NOT_CONTROLLER";
    /// The request is malformed or breaks a limit.
    InvalidRequest = 42, "INVALID_REQUEST";
    /// An idempotent producer's batch skipped a sequence number.
    OutOfOrderSequenceNumber = 45, "OUT_OF_ORDER_SEQUENCE_NUMBER";
    /// An idempotent producer's batch was already written (a resend).
    DuplicateSequenceNumber = 46, "DUPLICATE_SEQUENCE_NUMBER";
    /// An idempotent producer's epoch is older than the broker's.
    InvalidProducerEpoch = 47, "INVALID_PRODUCER_EPOCH";
    /// The broker's storage failed for the partition (corrupt data, a failed disk).
    KafkaStorageError = 56, "KAFKA_STORAGE_ERROR";
    /// The broker no longer knows this producer id.
    UnknownProducerId = 59, "UNKNOWN_PRODUCER_ID";
    /// The group does not exist.
    GroupIdNotFound = 69, "GROUP_ID_NOT_FOUND";
    /// The request's leader epoch is older than the partition's.
    FencedLeaderEpoch = 74, "FENCED_LEADER_EPOCH";
    /// The request's leader epoch is newer than this broker knows.
    UnknownLeaderEpoch = 75, "UNKNOWN_LEADER_EPOCH";
    /// KIP-394: rejoin with the member id in the response.
    MemberIdRequired = 79, "MEMBER_ID_REQUIRED";
    /// ElectLeaders: the preferred replica is not in sync (or not alive).
    PreferredLeaderNotAvailable = 80, "PREFERRED_LEADER_NOT_AVAILABLE";
    /// The group has the maximum number of members.
    GroupMaxSizeReached = 81, "GROUP_MAX_SIZE_REACHED";
    /// KIP-345: another consumer took this one's `group.instance.id`.
    FencedInstanceId = 82, "FENCED_INSTANCE_ID";
    /// ElectLeaders: no live replica may lead the partition.
    EligibleLeadersNotAvailable = 83, "ELIGIBLE_LEADERS_NOT_AVAILABLE";
    /// ElectLeaders: the partition already has the leader asked for.
    ElectionNotNeeded = 84, "ELECTION_NOT_NEEDED";
    /// A record in the batch is invalid.
    InvalidRecord = 87, "INVALID_RECORD";
    /// A metadata update's version is stale.
    InvalidUpdateVersion = 95, "INVALID_UPDATE_VERSION";
    /// A broker id registered twice.
    DuplicateBrokerRegistration = 101, "DUPLICATE_BROKER_REGISTRATION";
    /// The node belongs to another cluster.
    InconsistentClusterId = 104, "INCONSISTENT_CLUSTER_ID";
    /// The replica cannot be added to the ISR.
    IneligibleReplica = 107, "INELIGIBLE_REPLICA";
}

impl ErrorCode {
    /// Whether the code names a transient condition: the same request may succeed later,
    /// after a metadata refresh or a backoff.
    ///
    /// ```
    /// use strom_client::ErrorCode;
    /// assert!(ErrorCode::LeaderNotAvailable.is_retriable());
    /// assert!(!ErrorCode::MessageTooLarge.is_retriable());
    /// assert!(!ErrorCode::Unknown(9999).is_retriable());
    /// ```
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::LeaderNotAvailable
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::KafkaStorageError
                | ErrorCode::NotController
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
        )
    }

    /// True for [`ErrorCode::None`].
    ///
    /// ```
    /// assert!(strom_client::ErrorCode::None.is_none());
    /// ```
    pub const fn is_none(self) -> bool {
        matches!(self, ErrorCode::None)
    }
}

impl From<i32> for ErrorCode {
    fn from(code: i32) -> Self {
        ErrorCode::from_i32(code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(code) => write!(f, "UNKNOWN({code})"),
            known => f.write_str(known.name()),
        }
    }
}

/// A failed gRPC call: transport, deadline, or a status the server sent.
///
/// Opaque so that tonic's types stay out of the SDKs' signatures; the original error is
/// reachable through [`std::error::Error::source`].
///
/// ```no_run
/// # fn demo(e: &strom_client::RpcError) {
/// if e.is_transport_failure() {
///     eprintln!("connection lost: {e}");
/// }
/// # }
/// ```
pub struct RpcError(tonic::Status);

impl RpcError {
    /// The message of the status (the server's, or tonic's description of a local failure).
    ///
    /// ```no_run
    /// # fn demo(e: &strom_client::RpcError) { println!("{}", e.message()); }
    /// ```
    pub fn message(&self) -> &str {
        self.0.message()
    }

    /// The gRPC status code's name (`UNAVAILABLE`, `INVALID_ARGUMENT`, ...).
    ///
    /// ```no_run
    /// # fn demo(e: &strom_client::RpcError) { println!("{}", e.status_name()); }
    /// ```
    pub fn status_name(&self) -> &'static str {
        grpc_code_name(self.0.code())
    }

    /// Whether the call ran out of time: tonic's client-side deadline (a `TimeoutExpired` in
    /// the source chain) or the server's `DEADLINE_EXCEEDED`.
    ///
    /// ```no_run
    /// # fn demo(e: &strom_client::RpcError) { assert!(!e.is_timeout() || e.is_retriable()); }
    /// ```
    pub fn is_timeout(&self) -> bool {
        is_timeout_status(&self.0)
    }

    /// Whether the call failed because the connection broke or was refused, rather than with
    /// an answer from the server.
    ///
    /// tonic turns a connection reset, a refused dial or an HTTP/2 `GOAWAY` mid-call into a
    /// status with code `Unknown` ("transport error") or `Internal` ("h2 protocol error") and
    /// keeps the local error as its source. A status the server sent is parsed from response
    /// headers and never carries a source, so "has a source" separates the two without
    /// matching on message text. The request may or may not have reached the broker: callers
    /// retry only what is safe to repeat.
    ///
    /// ```no_run
    /// # fn demo(e: &strom_client::RpcError) { println!("{}", e.is_transport_failure()); }
    /// ```
    pub fn is_transport_failure(&self) -> bool {
        matches!(
            self.0.code(),
            tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::Cancelled
        ) && self.0.source().is_some()
    }

    /// Whether retrying the call later may succeed (unavailable, deadline, cancelled, or a
    /// lost connection).
    ///
    /// ```no_run
    /// # fn demo(e: &strom_client::RpcError) { println!("{}", e.is_retriable()); }
    /// ```
    pub fn is_retriable(&self) -> bool {
        matches!(
            self.0.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) || self.is_transport_failure()
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcError")
            .field("status", &self.status_name())
            .field("message", &self.message())
            .finish()
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc failed ({}): {}", self.status_name(), self.0.message())
    }
}

impl StdError for RpcError {
    // The status's own source (the local transport error), not the status: a `Status` as
    // source would print its message once more in every error chain.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Why a connection to a broker could not be established. Opaque: the transport's error is
/// its [`source`](std::error::Error::source).
///
/// ```no_run
/// # fn demo(e: &strom_client::ConnectError) { eprintln!("{e}"); }
/// ```
pub struct ConnectError(tonic::transport::Error);

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectError").field(&self.0.to_string()).finish()
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Every way a client operation can fail.
///
/// ```
/// use strom_client::{ClientError, ErrorCode};
/// let e = ClientError::Broker { code: ErrorCode::RequestTimedOut, message: String::new() };
/// assert!(e.is_timeout() && e.is_retriable());
/// ```
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection could be established to `addr`.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        #[source]
        source: ConnectError,
    },
    /// The RPC itself failed (transport, or a gRPC status from the server).
    #[error(transparent)]
    Rpc(RpcError),
    /// The broker answered with a topic or partition error code.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The code, with Kafka's number.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The caller passed something unusable (bad address, bad partition count...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation did not complete within its deadline.
    #[error("request timed out")]
    Timeout,
    /// The client (or the component using it) has shut down.
    #[error("client closed")]
    Closed,
    /// Record data could not be encoded or decoded.
    #[error("record format error: {0}")]
    Format(#[from] strom_format::FormatError),
}

// Every gRPC failure enters through here, so a deadline becomes `Timeout` in one place.
impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::from_status(status)
    }
}

impl ClientError {
    /// Whether retrying the same operation later (after a metadata refresh) may succeed.
    ///
    /// ```
    /// use strom_client::{ClientError, ErrorCode};
    /// let e = ClientError::Broker { code: ErrorCode::NotLeaderOrFollower, message: String::new() };
    /// assert!(e.is_retriable());
    /// assert!(!ClientError::UnknownTopic("t".into()).is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout => true,
            ClientError::Rpc(rpc) => rpc.is_retriable(),
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::UnknownTopic(_)
            | ClientError::InvalidArgument(_)
            | ClientError::Closed
            | ClientError::Format(_) => false,
        }
    }

    /// Whether the operation ran out of time: the client's deadline
    /// ([`ClientError::Timeout`]), a gRPC deadline, or the broker's `REQUEST_TIMED_OUT`.
    ///
    /// ```
    /// use strom_client::ClientError;
    /// assert!(ClientError::Timeout.is_timeout());
    /// assert!(!ClientError::Closed.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        match self {
            ClientError::Timeout => true,
            ClientError::Rpc(rpc) => rpc.is_timeout(),
            ClientError::Broker { code, .. } => *code == ErrorCode::RequestTimedOut,
            _ => false,
        }
    }

    /// The broker error code, if this error carries one.
    ///
    /// ```
    /// use strom_client::{ClientError, ErrorCode};
    /// let e = ClientError::UnknownTopic("t".into());
    /// assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::UnknownTopic(_) => Some(ErrorCode::UnknownTopicOrPartition),
            ClientError::Timeout => Some(ErrorCode::RequestTimedOut),
            _ => None,
        }
    }

    /// Maps a gRPC status, turning a deadline (detected by type) into
    /// [`ClientError::Timeout`].
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        if is_timeout_status(&status) {
            ClientError::Timeout
        } else {
            ClientError::Rpc(RpcError(status))
        }
    }

    pub(crate) fn connect(addr: String, source: tonic::transport::Error) -> Self {
        ClientError::Connect { addr, source: ConnectError(source) }
    }
}

/// Whether a status reports a deadline: tonic puts its `TimeoutExpired` in the source chain of
/// the status a client-side deadline produces; a server that gave up says DEADLINE_EXCEEDED.
fn is_timeout_status(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::DeadlineExceeded {
        return true;
    }
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Turns a wire error code into `Ok(())` for `NONE` and [`ClientError::Broker`] otherwise.
/// Codes this client does not know stay [`ErrorCode::Unknown`] with their number.
///
/// ```
/// use strom_client::{check_code, ErrorCode};
/// assert!(check_code(0, "").is_ok());
/// let err = check_code(ErrorCode::TopicAlreadyExists.code(), "exists").unwrap_err();
/// assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists));
/// ```
pub fn check_code(code: i32, message: &str) -> Result<(), ClientError> {
    match ErrorCode::from_i32(code) {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::Broker { code, message: message.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_proto::v1::ErrorCode as ProtoCode;

    #[test]
    fn every_proto_code_has_the_same_number_and_name() {
        for &code in ALL_KNOWN {
            let proto = ProtoCode::try_from(code.code())
                .unwrap_or_else(|_| panic!("{code} missing from the proto"));
            assert_eq!(proto.as_str_name(), code.name());
            assert_eq!(ErrorCode::from_i32(proto as i32), code);
        }
        // And the other way round: nothing in the proto is Unknown here.
        for n in -1..200 {
            if let Ok(proto) = ProtoCode::try_from(n) {
                assert_ne!(ErrorCode::from_i32(n), ErrorCode::Unknown(n), "{proto:?}");
            }
        }
    }

    #[test]
    fn check_code_maps_codes() {
        assert!(check_code(0, "").is_ok());
        let e = check_code(ErrorCode::NotLeaderOrFollower.code(), "moved").unwrap_err();
        assert!(e.is_retriable());
        assert_eq!(e.code(), Some(ErrorCode::NotLeaderOrFollower));
        let e = check_code(9999, "weird").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unknown(9999)));
        assert_eq!(e.to_string(), "broker error UNKNOWN(9999): weird");
        assert!(!e.is_retriable());
    }

    #[test]
    fn retriable_classification() {
        let retriable = [
            ErrorCode::LeaderNotAvailable,
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::RequestTimedOut,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NotCoordinator,
            ErrorCode::KafkaStorageError,
        ];
        for code in retriable {
            assert!(ClientError::Broker { code, message: String::new() }.is_retriable());
        }
        for code in [ErrorCode::MessageTooLarge, ErrorCode::CorruptMessage, ErrorCode::None] {
            assert!(!ClientError::Broker { code, message: String::new() }.is_retriable());
        }
        let rpc = |s| ClientError::from_status(s);
        assert!(rpc(tonic::Status::unavailable("down")).is_retriable());
        assert!(!rpc(tonic::Status::invalid_argument("bad")).is_retriable());
        // A server-sent UNKNOWN is an answer; a local transport error is a lost connection.
        assert!(!rpc(tonic::Status::unknown("server bug")).is_retriable());
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let lost = tonic::Status::from_error(Box::new(reset));
        assert_eq!(lost.code(), tonic::Code::Unknown);
        let lost = rpc(lost);
        assert!(lost.is_retriable() && !lost.is_timeout());
        // The source chain survives the wrapping: the io::Error is reachable.
        let mut source = StdError::source(&lost);
        while let Some(s) = source.filter(|s| !s.is::<std::io::Error>()) {
            source = s.source();
        }
        assert!(source.is_some(), "no io::Error in the chain of {lost:?}");
        assert!(ClientError::Timeout.is_retriable());
    }

    #[test]
    fn timeouts_are_detected_by_type_not_by_message() {
        // tonic's client-side deadline: a TimeoutExpired in the source chain.
        let expired = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(matches!(ClientError::from(expired), ClientError::Timeout));
        // The same words from a server are only words.
        let words = tonic::Status::cancelled("Timeout expired");
        let e = ClientError::from(words);
        assert!(matches!(e, ClientError::Rpc(_)) && !e.is_timeout());
        // A server that gave up says so by code.
        let e = ClientError::from(tonic::Status::deadline_exceeded("slow"));
        assert!(e.is_timeout() && e.is_retriable());
        let e = ClientError::Broker { code: ErrorCode::RequestTimedOut, message: String::new() };
        assert!(e.is_timeout());
    }
}
