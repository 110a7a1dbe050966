//! The consumer's line to its group coordinator: finding it (FindCoordinator), keeping a client
//! to it, and retrying requests that met a moved or unavailable coordinator after a backoff.
//!
//! Shared by the poll side (commits, committed offsets, leaving) and the membership task
//! (joins, heartbeats); the cached coordinator sits behind a lock that is only ever held to
//! clone or replace it, never across `.await`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strom_client::{Client, ClientError, ErrorCode, check_code};
use strom_proto::v1::group_client::GroupClient;
use strom_proto::v1::{
    FindCoordinatorRequest, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::debug;

/// Slack on top of an RPC's own deadline before the caller gives up on it, in case the
/// transport does not enforce the deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);
/// Ceiling of the backoff between attempts, unless the configured base is larger.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A handle on one group's coordinator; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct GroupRpc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    group_id: String,
    retry_backoff: Duration,
    coordinator: Mutex<Option<GroupClient<Channel>>>,
}

impl GroupRpc {
    pub(crate) fn new(client: Client, group_id: String, retry_backoff: Duration) -> Self {
        GroupRpc {
            inner: Arc::new(Inner {
                client,
                group_id,
                retry_backoff,
                coordinator: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn group_id(&self) -> &str {
        &self.inner.group_id
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Deadline of one ordinary (non-blocking) group RPC.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.client.config().request_timeout
    }

    /// The wait before attempt `failures + 1`: the configured backoff, doubling, capped.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let base = self.inner.retry_backoff;
        let doublings = failures.saturating_sub(1).min(16);
        base.saturating_mul(1 << doublings).min(MAX_BACKOFF.max(base))
    }

    /// Forgets the coordinator, so the next request looks it up again.
    pub(crate) fn mark_unknown(&self) {
        *self.inner.coordinator.lock() = None;
    }

    async fn coordinator(&self) -> Result<GroupClient<Channel>, ClientError> {
        if let Some(c) = self.inner.coordinator.lock().clone() {
            return Ok(c);
        }
        let client = &self.inner.client;
        let request = client.request(FindCoordinatorRequest { group_id: self.group_id().into() });
        let response =
            bounded(client.group().find_coordinator(request), self.request_timeout()).await?;
        check_code(response.error_code, &response.error_message)?;
        let info = response.coordinator.ok_or_else(|| ClientError::Broker {
            code: ErrorCode::CoordinatorNotAvailable,
            message: "FindCoordinator named no coordinator".into(),
        })?;
        debug!(group = %self.group_id(), node = info.node_id, host = %info.host, port = info.port,
            "found the group coordinator");
        let coordinator = client.group_at(&info)?;
        *self.inner.coordinator.lock() = Some(coordinator.clone());
        Ok(coordinator)
    }

    /// Runs `call` against the coordinator. While it fails in a way a coordinator move or
    /// restart explains (a transport error, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR — which
    /// `call` reports as [`ClientError::Broker`]), looks the coordinator up again and retries
    /// after a backoff, until the next attempt would start after `deadline`.
    async fn call<T, F, Fut>(&self, deadline: Instant, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(GroupClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut failures = 0u32;
        loop {
            let result = match self.coordinator().await {
                Ok(coordinator) => call(coordinator).await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            self.mark_unknown();
            failures = failures.saturating_add(1);
            let delay = self.backoff(failures);
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            debug!(group = %self.group_id(), error = %error, "group request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// JoinGroup; parks on the coordinator for up to `rebalance_timeout`.
    pub(crate) async fn join(
        &self,
        request: JoinGroupRequest,
        rebalance_timeout: Duration,
    ) -> Result<JoinGroupResponse, ClientError> {
        let deadline = Instant::now() + self.request_timeout() + rebalance_timeout;
        self.call(deadline, |mut c| {
            let req = self.inner.client.request_with_extra(request.clone(), rebalance_timeout);
            let limit = self.request_timeout() + rebalance_timeout;
            async move {
                let r = bounded(c.join_group(req), limit).await?;
                coordinator_code(r.error_code, &r.error_message)?;
                Ok(r)
            }
        })
        .await
    }

    /// SyncGroup; parks until the leader has sent the assignment.
    pub(crate) async fn sync(
        &self,
        request: SyncGroupRequest,
        rebalance_timeout: Duration,
    ) -> Result<SyncGroupResponse, ClientError> {
        let deadline = Instant::now() + self.request_timeout() + rebalance_timeout;
        self.call(deadline, |mut c| {
            let req = self.inner.client.request_with_extra(request.clone(), rebalance_timeout);
            let limit = self.request_timeout() + rebalance_timeout;
            async move {
                let r = bounded(c.sync_group(req), limit).await?;
                coordinator_code(r.error_code, &r.error_message)?;
                Ok(r)
            }
        })
        .await
    }

    /// One Heartbeat attempt (the heartbeat loop does its own retrying), bounded by `limit`.
    pub(crate) async fn heartbeat(
        &self,
        request: HeartbeatRequest,
        limit: Duration,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.call(Instant::now(), |mut c| {
            let mut req = self.inner.client.request(request.clone());
            req.set_timeout(limit);
            async move {
                let r = bounded(c.heartbeat(req), limit).await?;
                coordinator_code(r.error_code, &r.error_message)?;
                Ok(r)
            }
        })
        .await
    }

    /// LeaveGroup: `Ok` also when the coordinator no longer knows the member.
    pub(crate) async fn leave(&self, member_id: &str) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.request_timeout();
        let request = LeaveGroupRequest {
            group_id: self.group_id().into(),
            member_id: member_id.into(),
            group_instance_id: String::new(),
        };
        let response = self
            .call(deadline, |mut c| {
                let req = self.inner.client.request(request.clone());
                let limit = self.request_timeout();
                async move {
                    let r = bounded(c.leave_group(req), limit).await?;
                    coordinator_code(r.error_code, &r.error_message)?;
                    Ok(r)
                }
            })
            .await?;
        match ErrorCode::from_i32(response.error_code) {
            ErrorCode::None | ErrorCode::UnknownMemberId => Ok(()),
            _ => check_code(response.error_code, &response.error_message),
        }
    }

    /// OffsetCommit. A coordinator error on any partition retries the whole request; other
    /// per-partition errors are the caller's to read.
    pub(crate) async fn commit(
        &self,
        request: OffsetCommitRequest,
    ) -> Result<OffsetCommitResponse, ClientError> {
        let deadline = Instant::now() + self.request_timeout();
        self.call(deadline, |mut c| {
            let req = self.inner.client.request(request.clone());
            let limit = self.request_timeout();
            async move {
                let r = bounded(c.offset_commit(req), limit).await?;
                let moved = r.topics.iter().flat_map(|t| &t.partitions).find(|p| {
                    is_coordinator_code(p.error_code)
                        || p.error_code == ErrorCode::KafkaStorageError.code()
                });
                if let Some(p) = moved {
                    check_code(p.error_code, &p.error_message)?;
                }
                Ok(r)
            }
        })
        .await
    }

    /// OffsetFetch.
    pub(crate) async fn fetch_offsets(
        &self,
        request: OffsetFetchRequest,
    ) -> Result<OffsetFetchResponse, ClientError> {
        let deadline = Instant::now() + self.request_timeout();
        self.call(deadline, |mut c| {
            let req = self.inner.client.request(request.clone());
            let limit = self.request_timeout();
            async move {
                let r = bounded(c.offset_fetch(req), limit).await?;
                check_code(r.error_code, &r.error_message)?;
                Ok(r)
            }
        })
        .await
    }
}

/// Awaits a tonic call for at most `limit` (plus slack).
async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    limit: Duration,
) -> Result<T, ClientError> {
    match tokio::time::timeout(limit.saturating_add(DEADLINE_SLACK), call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ClientError::from(status)),
        Err(_) => Err(ClientError::Timeout),
    }
}

fn is_coordinator_code(code: i32) -> bool {
    matches!(
        ErrorCode::from_i32(code),
        ErrorCode::CoordinatorNotAvailable | ErrorCode::NotCoordinator
    )
}

/// Turns the codes that mean "ask another coordinator" into retriable errors; the rest stay in
/// the response for the caller.
fn coordinator_code(code: i32, message: &str) -> Result<(), ClientError> {
    if is_coordinator_code(code) { check_code(code, message) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_codes_are_retriable_errors_and_others_pass() {
        let e = coordinator_code(ErrorCode::NotCoordinator.code(), "moved").unwrap_err();
        assert!(e.is_retriable());
        let e = coordinator_code(ErrorCode::CoordinatorNotAvailable.code(), "").unwrap_err();
        assert!(e.is_retriable());
        assert!(coordinator_code(ErrorCode::RebalanceInProgress.code(), "").is_ok());
        assert!(coordinator_code(ErrorCode::None.code(), "").is_ok());
    }
}
