//! Error codes the coordinator answers with (Kafka's numbers, so the broker maps them onto the
//! proto and Kafka wire error codes by value) and the crate's error type for storage failures.

use std::fmt;

/// A Kafka error code as the group APIs return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i16)]
pub enum ErrorCode {
    /// Success.
    #[default]
    None = 0,
    /// Something unexpected; the message says what.
    UnknownServerError = -1,
    /// The commit's metadata string is longer than the limit.
    OffsetMetadataTooLarge = 12,
    /// The coordinator is not serving this group (shutting down, group unloaded).
    CoordinatorNotAvailable = 15,
    /// The request names a generation that is not the group's current one.
    IllegalGeneration = 22,
    /// The member's protocol type or protocols do not match the group's.
    InconsistentGroupProtocol = 23,
    /// The group id is empty or too long.
    InvalidGroupId = 24,
    /// The member id is not in the group.
    UnknownMemberId = 25,
    /// The session timeout is outside the coordinator's allowed range.
    InvalidSessionTimeout = 26,
    /// The group is rebalancing: the member must rejoin.
    RebalanceInProgress = 27,
    /// The request is malformed or over a size limit.
    InvalidRequest = 42,
    /// Writing to `__consumer_offsets` failed; nothing was committed.
    KafkaStorageError = 56,
    /// DeleteGroups of a group that still has members.
    NonEmptyGroup = 68,
    /// The group does not exist.
    GroupIdNotFound = 69,
    /// KIP-394: rejoin with the member id in this response.
    MemberIdRequired = 79,
    /// The group already has the maximum number of members.
    GroupMaxSizeReached = 81,
    /// KIP-345: another member took over this member's `group.instance.id`; this one is
    /// fenced and must stop (it is a zombie of a restarted instance).
    FencedInstanceId = 82,
    /// OffsetDelete of a partition whose topic the group's members are subscribed to.
    GroupSubscribedToTopic = 86,
}

impl ErrorCode {
    /// Kafka's number for this code.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// True for [`ErrorCode::None`].
    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }

    /// Kafka's name for this code (`ILLEGAL_GENERATION`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::UnknownServerError => "UNKNOWN_SERVER_ERROR",
            ErrorCode::OffsetMetadataTooLarge => "OFFSET_METADATA_TOO_LARGE",
            ErrorCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::IllegalGeneration => "ILLEGAL_GENERATION",
            ErrorCode::InconsistentGroupProtocol => "INCONSISTENT_GROUP_PROTOCOL",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
            ErrorCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::KafkaStorageError => "KAFKA_STORAGE_ERROR",
            ErrorCode::NonEmptyGroup => "NON_EMPTY_GROUP",
            ErrorCode::GroupIdNotFound => "GROUP_ID_NOT_FOUND",
            ErrorCode::MemberIdRequired => "MEMBER_ID_REQUIRED",
            ErrorCode::GroupMaxSizeReached => "GROUP_MAX_SIZE_REACHED",
            ErrorCode::FencedInstanceId => "FENCED_INSTANCE_ID",
            ErrorCode::GroupSubscribedToTopic => "GROUP_SUBSCRIBED_TO_TOPIC",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure of the offsets log underneath the store, as an [`crate::OffsetsLog`] reports it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OffsetsLogError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl OffsetsLogError {
    /// Wraps any error of the log implementation.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        OffsetsLogError(e.into())
    }
}

/// Why an offsets operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The offsets log failed to append, read or flush.
    #[error("offsets log: {0}")]
    Log(#[from] OffsetsLogError),
    /// A batch of the offsets log could not be built or parsed.
    #[error("offsets record batch: {0}")]
    Format(#[from] strom_format::FormatError),
    /// A commit record could not be encoded (a string over 32767 bytes).
    #[error("offset commit record: {0}")]
    Encode(&'static str),
    /// The store was configured without partitions.
    #[error("the offsets store needs at least one partition")]
    NoPartitions,
    /// Replaying a partition stopped making progress (a batch larger than the read limit).
    #[error("replay of offsets partition {partition} is stuck at offset {offset}")]
    ReplayStuck {
        /// Index of the `__consumer_offsets` partition.
        partition: usize,
        /// Where the replay stopped.
        offset: i64,
    },
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
}

impl CoordinatorError {
    /// The code a client sees for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoordinatorError::Log(_)
            | CoordinatorError::Format(_)
            | CoordinatorError::ReplayStuck { .. } => ErrorCode::KafkaStorageError,
            CoordinatorError::Encode(_) => ErrorCode::InvalidRequest,
            CoordinatorError::NoPartitions | CoordinatorError::Task(_) => {
                ErrorCode::UnknownServerError
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_kafkas_numbers() {
        let expected = [
            (ErrorCode::None, 0),
            (ErrorCode::UnknownServerError, -1),
            (ErrorCode::OffsetMetadataTooLarge, 12),
            (ErrorCode::CoordinatorNotAvailable, 15),
            (ErrorCode::IllegalGeneration, 22),
            (ErrorCode::InconsistentGroupProtocol, 23),
            (ErrorCode::InvalidGroupId, 24),
            (ErrorCode::UnknownMemberId, 25),
            (ErrorCode::InvalidSessionTimeout, 26),
            (ErrorCode::RebalanceInProgress, 27),
            (ErrorCode::InvalidRequest, 42),
            (ErrorCode::KafkaStorageError, 56),
            (ErrorCode::GroupIdNotFound, 69),
            (ErrorCode::MemberIdRequired, 79),
            (ErrorCode::GroupMaxSizeReached, 81),
            (ErrorCode::FencedInstanceId, 82),
        ];
        for (code, n) in expected {
            assert_eq!(code.code(), n, "{code}");
        }
    }
}
