//! The broker's DeleteRecords (Kafka API 21 and gRPC `Admin.DeleteRecords`): one partition at
//! a time, on its leader. The partition moves its log start (`partition/delete_records.rs`),
//! then the answer waits for the low watermark, as Kafka's `DelayedDeleteRecords` does.

use std::time::Duration;

use strom_format::Offset;
use strom_proto::v1::ErrorCode;

use crate::broker::{Broker, run_blocking};
use crate::error::ApiError;

/// The wait for the in-sync replicas when a request names none (Kafka's clients send 30 s).
pub const DEFAULT_DELETE_RECORDS_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a DeleteRecords answer waits for the in-sync replicas, whatever the request
/// asks: a request parked longer holds its connection's slot for nothing a retry would not
/// give (the leader's records are deleted before the wait).
pub const MAX_DELETE_RECORDS_WAIT: Duration = Duration::from_secs(300);

impl Broker {
    /// Deletes the records of `topic`-`partition` below `offset` (-1: the high watermark) and
    /// returns the low watermark once every in-sync replica's log start reached the offset.
    ///
    /// Errors: UNKNOWN_TOPIC_OR_PARTITION; INVALID_TOPIC_EXCEPTION for an internal topic (as
    /// Kafka: deleting `__consumer_offsets` records would lose committed offsets);
    /// NOT_LEADER_OR_FOLLOWER on a node that does not lead
    /// the partition (or when leadership moves during the wait); OFFSET_OUT_OF_RANGE for an
    /// offset above the high watermark; REQUEST_TIMED_OUT when the followers did not follow
    /// within `timeout`, at most [`MAX_DELETE_RECORDS_WAIT`] (the leader's records are deleted
    /// already: a retry answers at once when they have).
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<Offset, ApiError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_DELETE_RECORDS_WAIT);
        if crate::is_internal_topic(topic) {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!("cannot delete records of the internal topic {topic}"),
            ));
        }
        let p = self.registry().partition(topic, partition)?;
        let moving = p.clone();
        let (target, epoch) = run_blocking(move || moving.delete_records(offset)).await?;
        p.wait_low_watermark(target, epoch, deadline).await
    }
}
