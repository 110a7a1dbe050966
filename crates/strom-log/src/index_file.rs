//! The machinery both sparse indexes share: fixed-size big-endian entries in an append-only file,
//! mirrored in memory so lookups never touch the disk.
//!
//! Only the log's writer (holding the writer lock) appends or truncates; readers look entries up
//! under a short `RwLock` read that never spans I/O.

use std::io::IoSlice;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::LogError;
use crate::error::IoContext;
use crate::storage::{OpenMode, Storage, StorageFile};

/// Largest index file loaded; anything larger is treated as corrupt and rebuilt from the
/// segment. Kafka caps an index at 10 MiB by default; the log rolls long before this.
const MAX_INDEX_FILE_BYTES: u64 = 64 << 20;

/// One fixed-size index entry.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug {
    /// Bytes per entry on disk.
    const LEN: usize;
    /// Writes the entry into `out` (exactly `LEN` bytes).
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads an entry from exactly `LEN` bytes.
    fn decode(buf: &[u8]) -> Self;
    /// Whether `next` may follow `prev` in a well-formed index.
    fn follows(prev: &Self, next: &Self) -> bool;
}

/// An index file and its in-memory copy.
#[derive(Debug)]
pub(crate) struct IndexFile<E: IndexEntry> {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    entries: RwLock<Vec<E>>,
}

/// What loading an index file found.
#[derive(Debug)]
pub(crate) enum Loaded<E: IndexEntry> {
    /// Entries that are well-formed by themselves (the segment checks them further).
    Ok(IndexFile<E>),
    /// The file is unusable; the index is empty and must be rebuilt from the segment.
    NeedsRebuild(IndexFile<E>, String),
}

impl<E: IndexEntry> IndexFile<E> {
    /// Creates an empty index, truncating whatever file was at `path`.
    pub(crate) fn create(storage: &dyn Storage, path: &Path) -> Result<Self, LogError> {
        let file = open_append(storage, path, true)?;
        Ok(IndexFile { path: path.to_path_buf(), file, entries: RwLock::new(Vec::new()) })
    }

    /// Opens (or creates) the index at `path` and loads it, checking its shape: length a
    /// multiple of the entry size and entries in order. Never fails on content, only on I/O.
    pub(crate) fn load(storage: &dyn Storage, path: &Path) -> Result<Loaded<E>, LogError> {
        let file = open_append(storage, path, false)?;
        let len = file.size().ctx(|| format!("stat {}", path.display()))?;
        let empty =
            |file| IndexFile { path: path.to_path_buf(), file, entries: RwLock::new(vec![]) };
        if len > MAX_INDEX_FILE_BYTES {
            return Ok(Loaded::NeedsRebuild(empty(file), format!("index file of {len} bytes")));
        }
        if len % E::LEN as u64 != 0 {
            let why = format!("length {len} is not a multiple of {}", E::LEN);
            return Ok(Loaded::NeedsRebuild(empty(file), why));
        }
        let buf = file.read_prefix(len).ctx(|| format!("read {}", path.display()))?;
        let mut entries = Vec::with_capacity(buf.len() / E::LEN);
        for chunk in buf.chunks_exact(E::LEN) {
            let entry = E::decode(chunk);
            if let Some(prev) = entries.last()
                && !E::follows(prev, &entry)
            {
                let why = format!("entry {entry:?} does not follow {prev:?}");
                return Ok(Loaded::NeedsRebuild(empty(file), why));
            }
            entries.push(entry);
        }
        Ok(Loaded::Ok(IndexFile { path: path.to_path_buf(), file, entries: RwLock::new(entries) }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Entry `i`.
    pub(crate) fn get(&self, i: usize) -> Option<E> {
        self.entries.read().get(i).copied()
    }

    /// A copy of every entry (for consistency checks on open).
    pub(crate) fn entries(&self) -> Vec<E> {
        self.entries.read().clone()
    }

    /// The last entry for which `before` holds, given that `before` is true for a prefix.
    pub(crate) fn last_where(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        let entries = self.entries.read();
        let n = entries.partition_point(before);
        n.checked_sub(1).and_then(|i| entries.get(i).copied())
    }

    /// How many entries satisfy `before`, a predicate true for a prefix.
    pub(crate) fn count_where(&self, before: impl Fn(&E) -> bool) -> usize {
        self.entries.read().partition_point(before)
    }

    /// Appends one entry: to the file first, then to memory, so memory never holds an entry
    /// the file lacks. Writer only.
    pub(crate) fn append(&self, entry: E) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(E::LEN);
        entry.encode(&mut buf);
        self.file
            .append_all(&mut [IoSlice::new(&buf)])
            .ctx(|| format!("append to {}", self.path.display()))?;
        let mut entries = self.entries.write();
        debug_assert!(entries.last().is_none_or(|prev| E::follows(prev, &entry)));
        entries.push(entry);
        Ok(())
    }

    /// Keeps the first `n` entries. Writer only.
    pub(crate) fn truncate(&self, n: usize) -> Result<(), LogError> {
        // Memory first: a reader must not find an entry whose bytes are about to go.
        self.entries.write().truncate(n);
        self.file.set_len((n * E::LEN) as u64).ctx(|| format!("truncate {}", self.path.display()))
    }

    /// Cuts the file back to the entries in memory: drops the bytes of an append that failed
    /// part-way (a full disk), so the next append lands on an entry boundary. Writer only.
    pub(crate) fn discard_unlisted(&self) -> Result<(), LogError> {
        let n = self.entries.read().len();
        self.file.set_len((n * E::LEN) as u64).ctx(|| format!("truncate {}", self.path.display()))
    }

    /// Replaces the whole index (after a rebuild). Writer or recovery only.
    pub(crate) fn replace(&self, new: Vec<E>) -> Result<(), LogError> {
        self.truncate(0)?;
        let mut buf = Vec::with_capacity(new.len() * E::LEN);
        for entry in &new {
            entry.encode(&mut buf);
        }
        self.file
            .append_all(&mut [IoSlice::new(&buf)])
            .ctx(|| format!("rewrite {}", self.path.display()))?;
        *self.entries.write() = new;
        Ok(())
    }

    /// fsyncs the file.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().ctx(|| format!("fsync {}", self.path.display()))
    }
}

/// Opens a file for appending (creating it), optionally truncating it.
fn open_append(
    storage: &dyn Storage,
    path: &Path,
    truncate: bool,
) -> Result<Box<dyn StorageFile>, LogError> {
    let mode = if truncate { OpenMode::Truncate } else { OpenMode::AppendOrCreate };
    storage.open(path, mode).ctx(|| format!("open {}", path.display()))
}
