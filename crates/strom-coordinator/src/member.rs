//! One member of a group: its identity, timeouts, protocols, assignment, liveness deadline and
//! the channels its blocked JoinGroup / SyncGroup calls wait on.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::api::{JoinGroupProtocol, JoinGroupRequest, JoinGroupResult, SyncGroupResult};
use crate::error::ErrorCode;

/// A member of a group, as the coordinator tracks it.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) id: String,
    /// KIP-345: the static identity this member holds, if any.
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) protocols: Vec<JoinGroupProtocol>,
    /// What the leader assigned it in the current generation.
    pub(crate) assignment: Bytes,
    /// Order of joining: the longest-standing member becomes leader when the leader goes.
    pub(crate) join_seq: u64,
    /// When the member is removed unless it shows signs of life.
    pub(crate) session_deadline: Instant,
    awaiting_join: Option<oneshot::Sender<JoinGroupResult>>,
    awaiting_sync: Option<oneshot::Sender<SyncGroupResult>>,
}

impl Member {
    /// A member joining with `req`; `rebalance_timeout` is the request's, already clamped.
    pub(crate) fn new(
        id: String,
        req: &JoinGroupRequest,
        rebalance_timeout: Duration,
        join_seq: u64,
        now: Instant,
    ) -> Self {
        Member {
            id,
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: req.session_timeout,
            rebalance_timeout,
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_seq,
            session_deadline: now + req.session_timeout,
            awaiting_join: None,
            awaiting_sync: None,
        }
    }

    /// Records a sign of life: the session restarts now.
    pub(crate) fn heartbeat(&mut self, now: Instant) {
        self.session_deadline = now + self.session_timeout;
    }

    pub(crate) fn is_awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }

    /// Parked in JoinGroup, but the caller stopped waiting (disconnected, timed out): the
    /// answer would reach no one, so the member must not be carried into the generation.
    pub(crate) fn join_caller_gone(&self) -> bool {
        self.awaiting_join.as_ref().is_some_and(oneshot::Sender::is_closed)
    }

    /// A member blocked in JoinGroup or SyncGroup is alive as long as its caller still waits;
    /// the join and sync deadlines bound that wait instead of the session timeout.
    pub(crate) fn is_kept_alive(&self) -> bool {
        self.awaiting_join.as_ref().is_some_and(|tx| !tx.is_closed())
            || self.awaiting_sync.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Parks a JoinGroup call; a previous one still parked is told to retry.
    pub(crate) fn await_join(&mut self) -> oneshot::Receiver<JoinGroupResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.awaiting_join.replace(tx) {
            let _ = old.send(JoinGroupResult::error(
                ErrorCode::RebalanceInProgress,
                "superseded by a newer JoinGroup of the same member",
                &self.id,
            ));
        }
        rx
    }

    /// Parks a SyncGroup call; a previous one still parked is told to retry.
    pub(crate) fn await_sync(&mut self) -> oneshot::Receiver<SyncGroupResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.awaiting_sync.replace(tx) {
            let _ = old.send(SyncGroupResult::error(
                ErrorCode::RebalanceInProgress,
                "superseded by a newer SyncGroup of the same member",
            ));
        }
        rx
    }

    /// Answers the parked JoinGroup, if any. A caller that went away is not an error.
    pub(crate) fn complete_join(&mut self, result: JoinGroupResult) {
        if let Some(tx) = self.awaiting_join.take() {
            let _ = tx.send(result);
        }
    }

    /// Answers the parked SyncGroup, if any.
    pub(crate) fn complete_sync(&mut self, result: SyncGroupResult) {
        if let Some(tx) = self.awaiting_sync.take() {
            let _ = tx.send(result);
        }
    }

    /// Answers every parked call with an error (the member is being removed, or the group is).
    pub(crate) fn fail_waiters(&mut self, code: ErrorCode, message: &str) {
        self.complete_join(JoinGroupResult::error(code, message, &self.id));
        self.complete_sync(SyncGroupResult::error(code, message));
    }

    /// The member's metadata for `protocol` (empty if it does not offer it).
    pub(crate) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    pub(crate) fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// True if a rejoin carries exactly the protocols the member already has: then it is a
    /// retransmission and needs no new rebalance.
    pub(crate) fn matches(&self, protocols: &[JoinGroupProtocol]) -> bool {
        self.protocols == protocols
    }
}

/// A new member id: `{client_id}-{uuid-like random}`, as Kafka makes them.
pub(crate) fn new_member_id(client_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // RandomState is seeded from the OS per instance: two of them give 128 unpredictable bits
    // without a dependency on a random number crate.
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (word(1), word(2));
    format!(
        "{client_id}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_prefixed_and_unique() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_member_id("app")).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(id.starts_with("app-"));
            assert_eq!(id.len(), "app-".len() + 36);
        }
    }
}
