//! The replicated state machine: applies committed log entries to [`MetadataState`] and
//! publishes the result, as an [`MetadataImage`], on a watch channel after every apply.
//!
//! Snapshots are the JSON of (state, last applied log id, last membership), persisted through
//! the [`Disk`] seam as the file `snapshot` (replaced atomically) before openraft is told about
//! them, so the log may be purged behind them. On open the state machine starts from that file;
//! entries after it are re-applied as the leader re-commits them.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::disk::Disk;
use crate::error::QuorumError;
use crate::metadata::{MetadataRecord, MetadataState};
use crate::types::{ApplyResponse, Entry, LogId, StorageError, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot";

/// The applied metadata, as every reader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The state after applying every entry up to `applied`.
    pub state: MetadataState,
    /// The log index of the last applied entry (0 before anything is applied; index 0 is the
    /// cluster's initial membership entry, which changes no metadata).
    pub applied: u64,
}

/// One step of a node's applied sequence, reported to an [`ApplyObserver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedEvent {
    /// The entry at `log_id` was applied; `record` is `None` for blank and membership entries.
    Entry {
        /// The entry's log id.
        log_id: LogId,
        /// Its metadata record, if it carried one.
        record: Option<MetadataRecord>,
    },
    /// The state was replaced by a snapshot covering everything up to `last_log_id` (on open
    /// or when a snapshot is installed from the leader).
    Snapshot {
        /// The last log id the snapshot covers.
        last_log_id: Option<LogId>,
    },
}

/// A callback that sees every applied entry, in order (the simulation checks invariants with
/// it). It runs inside the state machine: it must be quick and must not block.
#[derive(Clone)]
pub struct ApplyObserver(pub Arc<dyn Fn(&AppliedEvent) + Send + Sync>);

impl fmt::Debug for ApplyObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApplyObserver")
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotBody {
    state: MetadataState,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
}

/// The snapshot file: openraft's metadata plus the body's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The state machine of one node.
#[derive(Debug)]
pub struct StateMachine {
    disk: Arc<dyn Disk>,
    state: MetadataState,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    image: watch::Sender<Arc<MetadataImage>>,
    observer: Option<ApplyObserver>,
    /// The last log id covered by a durable snapshot; the log store purges no further.
    snapshot_durable: Arc<watch::Sender<Option<LogId>>>,
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
#[derive(Debug)]
pub struct SnapshotBuilder {
    disk: Arc<dyn Disk>,
    body: SnapshotBody,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    snapshot_durable: Arc<watch::Sender<Option<LogId>>>,
}

fn advance(gate: &watch::Sender<Option<LogId>>, to: Option<LogId>) {
    gate.send_if_modified(|cur| {
        let newer = to > *cur;
        if newer {
            *cur = to;
        }
        newer
    });
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

impl StateMachine {
    /// Opens the state machine from the last snapshot on `disk`, if any.
    pub async fn open(
        disk: Arc<dyn Disk>,
        observer: Option<ApplyObserver>,
    ) -> Result<StateMachine, QuorumError> {
        let (image, _) = watch::channel(Arc::new(MetadataImage::default()));
        let (snapshot_durable, _) = watch::channel(None);
        let mut sm = StateMachine {
            snapshot_durable: Arc::new(snapshot_durable),
            disk,
            state: MetadataState::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            current: Arc::new(Mutex::new(None)),
            image,
            observer,
        };
        if let Some(raw) = sm.disk.read(SNAPSHOT_FILE).await? {
            let stored: StoredSnapshot = serde_json::from_slice(&raw)
                .map_err(|e| QuorumError::Corrupt(format!("snapshot file: {e}")))?;
            let body: SnapshotBody = serde_json::from_slice(&stored.data)
                .map_err(|e| QuorumError::Corrupt(format!("snapshot body: {e}")))?;
            sm.restore(body);
            advance(&sm.snapshot_durable, stored.meta.last_log_id);
            *sm.current.lock() = Some(stored);
        }
        Ok(sm)
    }

    /// The last log id covered by a durable snapshot. openraft 0.9 may ask the log store to
    /// purge behind a snapshot it is still installing; the log store waits for this before it
    /// makes such a purge durable (see `LogStore::with_snapshot_gate`).
    pub fn snapshot_gate(&self) -> watch::Receiver<Option<LogId>> {
        self.snapshot_durable.subscribe()
    }

    /// The channel the image is published on.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    fn restore(&mut self, body: SnapshotBody) {
        self.state = body.state;
        self.last_applied = body.last_applied;
        self.last_membership = body.last_membership;
        if let Some(o) = &self.observer {
            (o.0)(&AppliedEvent::Snapshot { last_log_id: self.last_applied });
        }
        self.publish();
    }

    fn publish(&self) {
        let image = MetadataImage {
            state: self.state.clone(),
            applied: self.last_applied.map_or(0, |l| l.index),
        };
        self.image.send_replace(Arc::new(image));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = serde_json::to_vec(&self.body).map_err(snap_err)?;
        let snapshot_id = match self.body.last_applied {
            Some(l) => format!("{}-{}", l.leader_id.term, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.body.last_applied,
            last_membership: self.body.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let file = serde_json::to_vec(&stored).map_err(snap_err)?;
        self.disk.replace(SNAPSHOT_FILE, Bytes::from(file)).await.map_err(snap_err)?;
        *self.current.lock() = Some(stored);
        advance(&self.snapshot_durable, meta.last_log_id);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let record = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(record) => Some(record),
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            let result = match &record {
                Some(r) => self.state.apply(r),
                None => Ok(()),
            };
            if let Some(o) = &self.observer {
                (o.0)(&AppliedEvent::Entry { log_id: entry.log_id, record });
            }
            out.push(ApplyResponse { result });
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            disk: Arc::clone(&self.disk),
            body: SnapshotBody {
                state: self.state.clone(),
                last_applied: self.last_applied,
                last_membership: self.last_membership.clone(),
            },
            current: Arc::clone(&self.current),
            snapshot_durable: Arc::clone(&self.snapshot_durable),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data).map_err(sm_err)?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let file = serde_json::to_vec(&stored).map_err(snap_err)?;
        // Durable before the state changes: a crash after this reopens from the snapshot.
        self.disk.replace(SNAPSHOT_FILE, Bytes::from(file)).await.map_err(snap_err)?;
        *self.current.lock() = Some(stored);
        self.restore(SnapshotBody {
            state: body.state,
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
        });
        advance(&self.snapshot_durable, meta.last_log_id);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .current
            .lock()
            .clone()
            .map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
