//! The durable Raft log and vote (openraft's `RaftLogStorage`, storage-v2).
//!
//! Layout, in the quorum directory (through the [`Disk`] seam):
//! - `vote`: the last saved vote as JSON, replaced atomically; `save_vote` returns only after it
//!   is fsynced.
//! - `log`: an append-only file of frames `[len: u32 LE][crc32c(payload): u32 LE][payload]`,
//!   payload = JSON of a `LogOp`: an entry, a truncation or a purge. Appended entries are
//!   fsynced before openraft's `LogFlushed` callback runs; truncations and purges are fsynced
//!   before their call returns. Every operation is one frame, so a crash anywhere leaves a
//!   prefix of the operations, and replaying a prefix is a consistent log.
//!
//! On open, frames are replayed in order. A torn tail (an incomplete frame, or a bad CRC on the
//! very last frame) is cut off: it can only be a write that was never acknowledged. A bad frame
//! followed by more data is damage, not a torn write: open fails with [`QuorumError::Corrupt`].
//! When dead frames (purged or truncated entries) outnumber live ones by [`REWRITE_SLACK`], the
//! file is rewritten with only the live state, atomically (`Disk::replace`).
//!
//! Purges wait for the snapshot: openraft 0.9.25, installing a snapshot from the leader, issues
//! the purge of the log behind it without waiting for the state machine to persist the snapshot
//! (the simulation found this: a crash in between left a purged log and no snapshot, and the
//! node could not restart). With a snapshot gate ([`LogStore::with_snapshot_gate`]), a purge
//! beyond the last durable snapshot is applied in memory at once but written to disk only once
//! the snapshot covering it is durable. Until then the file keeps more entries than memory,
//! which is safe: they are committed entries the snapshot also covers.
//!
//! The entries also live in memory (the metadata log is small and compacted behind snapshots),
//! shared with the log reader under a short lock that is never held across an await.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, Vote};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::error::QuorumError;
use crate::types::{Entry, LogId, StorageError, TypeConfig};

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const FRAME_HEADER: usize = 8;
/// The largest frame accepted on open: a length above this is damage, not an entry.
pub const MAX_FRAME: usize = 64 << 20;
/// How many dead frames the log file may carry beyond the live ones before it is rewritten.
pub const REWRITE_SLACK: usize = 1_000;

/// One durable operation on the log.
#[derive(Debug, Serialize, Deserialize)]
enum LogOp {
    /// An appended entry.
    Entry(Entry),
    /// Every entry at or after this index is gone.
    Truncate(u64),
    /// Every entry at or before this log id is gone (behind a snapshot).
    Purge(LogId),
}

#[derive(Debug, Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
}

/// The log and vote store of one node.
#[derive(Debug)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
    inner: Arc<Mutex<LogInner>>,
    vote: Option<Vote<u64>>,
    /// Frames in the log file, live or dead.
    frames: usize,
    /// The last log id covered by a durable snapshot, when gated.
    snapshot_gate: Option<tokio::sync::watch::Receiver<Option<LogId>>>,
    /// A purge applied in memory, not yet written (its snapshot is not durable yet).
    deferred_purge: Option<LogId>,
}

/// Reads entries for replication while the store appends.
#[derive(Debug, Clone)]
pub struct LogReader {
    inner: Arc<Mutex<LogInner>>,
}

fn frame(op: &LogOp, out: &mut BytesMut) -> io::Result<()> {
    let payload = serde_json::to_vec(op).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    out.put_u32_le(len);
    out.put_u32_le(crc32c::crc32c(&payload));
    out.put_slice(&payload);
    Ok(())
}

/// Result of scanning a log file.
struct Scan {
    ops: Vec<LogOp>,
    /// Bytes of whole, valid frames; anything after is a torn tail.
    valid_len: usize,
}

fn scan(data: &[u8]) -> Result<Scan, QuorumError> {
    let mut ops = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < FRAME_HEADER {
            break; // torn header
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_FRAME {
            // A torn write leaves a prefix of a real header, never a wrong length.
            return Err(QuorumError::Corrupt(format!("log frame at {pos}: length {len}")));
        }
        if rest.len() < FRAME_HEADER + len {
            break; // torn payload
        }
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        let end = pos + FRAME_HEADER + len;
        if crc32c::crc32c(payload) != crc {
            if end == data.len() {
                break; // the last frame, half written
            }
            return Err(QuorumError::Corrupt(format!("log frame at {pos}: crc mismatch")));
        }
        let op: LogOp = serde_json::from_slice(payload)
            .map_err(|e| QuorumError::Corrupt(format!("log frame at {pos}: {e}")))?;
        ops.push(op);
        pos = end;
    }
    Ok(Scan { ops, valid_len: pos })
}

impl LogInner {
    fn apply(&mut self, op: LogOp) {
        match op {
            LogOp::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            LogOp::Truncate(since) => {
                self.entries.split_off(&since);
            }
            LogOp::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                if self.last_purged.is_none_or(|p| p < log_id) {
                    self.last_purged = Some(log_id);
                }
            }
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries.values().next_back().map(|e| e.log_id).or(self.last_purged)
    }
}

fn io_err(e: impl Into<io::Error>) -> StorageError {
    openraft::StorageIOError::write_logs(openraft::AnyError::new(&e.into())).into()
}

impl LogStore {
    /// Opens the store on `disk`: reads the vote, replays the log and cuts a torn tail.
    pub async fn open(disk: Arc<dyn Disk>) -> Result<LogStore, QuorumError> {
        let vote = match disk.read(VOTE_FILE).await? {
            None => None,
            Some(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| QuorumError::Corrupt(format!("vote file: {e}")))?,
            ),
        };
        let data = disk.read(LOG_FILE).await?.unwrap_or_default();
        let scan = scan(&data)?;
        if scan.valid_len < data.len() {
            tracing::warn!(
                valid = scan.valid_len,
                len = data.len(),
                "quorum log: dropping a torn tail"
            );
            disk.truncate(LOG_FILE, scan.valid_len as u64).await?;
        }
        let mut inner = LogInner::default();
        let frames = scan.ops.len();
        for op in scan.ops {
            inner.apply(op);
        }
        Ok(LogStore {
            disk,
            inner: Arc::new(Mutex::new(inner)),
            vote,
            frames,
            snapshot_gate: None,
            deferred_purge: None,
        })
    }

    /// Makes purges wait (on disk, not in memory) until a durable snapshot covers them.
    pub fn with_snapshot_gate(
        mut self,
        gate: tokio::sync::watch::Receiver<Option<LogId>>,
    ) -> LogStore {
        self.snapshot_gate = Some(gate);
        self
    }

    fn snapshot_covers(&self, upto: LogId) -> bool {
        self.snapshot_gate.as_ref().is_none_or(|g| *g.borrow() >= Some(upto))
    }

    /// Writes a deferred purge once its snapshot is durable.
    async fn flush_deferred_purge(&mut self) -> io::Result<()> {
        if let Some(upto) = self.deferred_purge
            && self.snapshot_covers(upto)
        {
            self.write_ops(&[LogOp::Purge(upto)]).await?;
            self.deferred_purge = None;
        }
        Ok(())
    }

    /// Appends `ops` as frames to the log file and fsyncs it.
    async fn write_ops(&mut self, ops: &[LogOp]) -> io::Result<()> {
        let mut buf = BytesMut::new();
        for op in ops {
            frame(op, &mut buf)?;
        }
        self.disk.append(LOG_FILE, buf.freeze()).await?;
        self.frames += ops.len();
        Ok(())
    }

    /// Rewrites the log file with only the live state when it carries too many dead frames.
    async fn maybe_rewrite(&mut self) -> io::Result<()> {
        if self.deferred_purge.is_some() {
            return Ok(()); // the rewrite would persist the deferred purge
        }
        let (live, content) = {
            let inner = self.inner.lock();
            let live = inner.entries.len() + 1;
            if self.frames <= live + REWRITE_SLACK {
                return Ok(());
            }
            let mut buf = BytesMut::new();
            if let Some(p) = inner.last_purged {
                frame(&LogOp::Purge(p), &mut buf)?;
            }
            for e in inner.entries.values() {
                frame(&LogOp::Entry(e.clone()), &mut buf)?;
            }
            (live, buf.freeze())
        };
        self.disk.replace(LOG_FILE, content).await?;
        self.frames = live;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock();
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: inner.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { inner: Arc::clone(&self.inner) }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let data = serde_json::to_vec(vote).map_err(|e| {
            StorageError::from(openraft::StorageIOError::write_vote(openraft::AnyError::new(&e)))
        })?;
        self.disk.replace(VOTE_FILE, Bytes::from(data)).await.map_err(|e| {
            StorageError::from(openraft::StorageIOError::write_vote(openraft::AnyError::new(&e)))
        })?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let ops: Vec<LogOp> = entries.into_iter().map(LogOp::Entry).collect();
        self.flush_deferred_purge().await.map_err(io_err)?;
        {
            let mut inner = self.inner.lock();
            for op in &ops {
                if let LogOp::Entry(e) = op {
                    inner.entries.insert(e.log_id.index, e.clone());
                }
            }
        }
        match self.write_ops(&ops).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(e));
                Err(io_err(io::Error::other(msg)))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.flush_deferred_purge().await.map_err(io_err)?;
        self.inner.lock().apply(LogOp::Truncate(log_id.index));
        self.write_ops(&[LogOp::Truncate(log_id.index)]).await.map_err(io_err)?;
        self.maybe_rewrite().await.map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner.lock().apply(LogOp::Purge(log_id));
        if self.snapshot_covers(log_id) {
            self.write_ops(&[LogOp::Purge(log_id)]).await.map_err(io_err)?;
            self.deferred_purge = None;
        } else {
            tracing::debug!(%log_id, "purge deferred until the snapshot covering it is durable");
            self.deferred_purge = Some(log_id);
        }
        self.maybe_rewrite().await.map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::disk::{FsDisk, MemDisk};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store.try_get_log_entries(..).await.expect("read").iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn append_truncate_purge_survive_reopen() {
        let disk = MemDisk::new(1);
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("open");
        store.blocking_append((0..10).map(|i| entry(1, i))).await.expect("append");
        store.truncate(log_id(1, 7)).await.expect("truncate");
        store.blocking_append([entry(2, 7)]).await.expect("append");
        store.purge(log_id(1, 3)).await.expect("purge");
        assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
        drop(store);

        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 7)));
    }

    #[tokio::test(start_paused = true)]
    async fn torn_tail_is_cut_on_open() {
        let disk = MemDisk::new(2);
        let handle = disk.handle();
        let mut store = LogStore::open(Arc::new(handle.clone())).await.expect("open");
        store.blocking_append((0..5).map(|i| entry(1, i))).await.expect("append");
        let good = disk.durable(LOG_FILE).expect("log").len();
        let mut buf = BytesMut::new();
        frame(&LogOp::Entry(entry(1, 5)), &mut buf).expect("frame");
        handle.append(LOG_FILE, buf.freeze().slice(..20)).await.expect("torn write");
        drop(store);

        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(disk.durable(LOG_FILE).expect("log").len(), good, "torn tail truncated");
        // And the log appends cleanly after the cut.
        store.blocking_append([entry(1, 5)]).await.expect("append");
        drop(store);
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_crc_on_the_last_frame_is_a_torn_write() {
        let disk = MemDisk::new(3);
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("open");
        store.blocking_append((0..5).map(|i| entry(1, i))).await.expect("append");
        let len = disk.durable(LOG_FILE).expect("log").len();
        assert!(disk.corrupt(LOG_FILE, len - 2));
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn corrupt_frame_in_the_middle_refuses_to_open() {
        let disk = MemDisk::new(4);
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("open");
        store.blocking_append((0..5).map(|i| entry(1, i))).await.expect("append");
        assert!(disk.corrupt(LOG_FILE, FRAME_HEADER + 3));
        let err = LogStore::open(Arc::new(disk.handle())).await.expect_err("corrupt");
        assert!(matches!(err, QuorumError::Corrupt(_)), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn saved_vote_survives_a_crash() {
        let disk = MemDisk::new(5);
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("open");
        let vote = Vote::new(7, 2);
        store.save_vote(&vote).await.expect("save");
        disk.crash();
        let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("reopen");
        assert_eq!(store.read_vote().await.expect("read"), Some(vote));
    }

    #[tokio::test(start_paused = true)]
    async fn unsynced_append_is_lost_or_cut_on_crash_and_dead_handle_fails() {
        for seed in 0..20 {
            let disk = MemDisk::new(seed);
            let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("open");
            store.blocking_append((0..3).map(|i| entry(1, i))).await.expect("append");
            let task = tokio::spawn(async move {
                let r = store.blocking_append((3..6).map(|i| entry(1, i))).await;
                (store, r)
            });
            tokio::task::yield_now().await;
            disk.crash();
            let (_, r) = task.await.expect("join");
            assert!(r.is_err(), "a write through a crashed handle must fail");
            let mut store = LogStore::open(Arc::new(disk.handle())).await.expect("reopen");
            // The acknowledged entries stay; of the unacknowledged batch, whole frames of a
            // torn prefix may survive (Raft allows that), never a partial one.
            let got = indexes(&mut store).await;
            assert!(
                got.len() >= 3 && got == (0..got.len() as u64).collect::<Vec<_>>(),
                "seed {seed}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn fs_store_reopens_and_rewrites_behind_purges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Arc::new(FsDisk::open(dir.path()).expect("disk"));
        let mut store = LogStore::open(disk.clone()).await.expect("open");
        let n = REWRITE_SLACK as u64 + 200;
        store.blocking_append((0..n).map(|i| entry(1, i))).await.expect("append");
        store.purge(log_id(1, n - 11)).await.expect("purge");
        assert!(store.frames <= 11 + 1, "rewritten: {} frames", store.frames);
        store.save_vote(&Vote::new(3, 1)).await.expect("vote");
        drop(store);
        let mut store = LogStore::open(disk).await.expect("reopen");
        assert_eq!(indexes(&mut store).await, (n - 10..n).collect::<Vec<_>>());
        assert_eq!(
            store.get_log_state().await.expect("state").last_purged_log_id,
            Some(log_id(1, n - 11))
        );
        assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
    }
}
