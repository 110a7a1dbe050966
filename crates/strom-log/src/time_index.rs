//! The sparse time index of a segment (`.timeindex`): finds where to start scanning for the
//! first record at or after a timestamp.
//!
//! Entry: timestamp `i64` and relative offset `u32`, big-endian, 12 bytes. An entry `(t, o)`
//! promises that every record of the segment at an offset up to `base + o` has a timestamp of at
//! most `t` (`t` is the largest timestamp so far). The log writes one beside every offset index
//! entry: entry `i` of the time index has `o` one below entry `i` of the offset index, which
//! lets recovery check the two files against each other and find a segment's largest timestamp
//! by scanning only the batches after the last entry.

use std::path::Path;

use crate::LogError;
use crate::index_file::{IndexEntry, IndexFile, Loaded};
use crate::storage::Storage;

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// Largest record timestamp at or before `rel`.
    pub(crate) ts: i64,
    /// An offset relative to the segment's base.
    pub(crate) rel: u32,
}

impl IndexEntry for TimeEntry {
    const LEN: usize = 12;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.rel.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(buf.get(0..8).unwrap_or(&[0; 8]));
        let mut rel = [0u8; 4];
        rel.copy_from_slice(buf.get(8..12).unwrap_or(&[0; 4]));
        TimeEntry { ts: i64::from_be_bytes(ts), rel: u32::from_be_bytes(rel) }
    }

    fn follows(prev: &Self, next: &Self) -> bool {
        next.ts >= prev.ts && next.rel > prev.rel
    }
}

/// The time index of one segment.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: IndexFile<TimeEntry>,
}

impl TimeIndex {
    /// An empty index at `path` (truncating any file there).
    pub(crate) fn create(storage: &dyn Storage, path: &Path) -> Result<Self, LogError> {
        Ok(TimeIndex { file: IndexFile::create(storage, path)? })
    }

    /// Loads the index at `path`; `Err(reason)` in the second field when it must be rebuilt.
    pub(crate) fn load(
        storage: &dyn Storage,
        path: &Path,
    ) -> Result<(Self, Option<String>), LogError> {
        Ok(match IndexFile::load(storage, path)? {
            Loaded::Ok(file) => (TimeIndex { file }, None),
            Loaded::NeedsRebuild(file, why) => (TimeIndex { file }, Some(why)),
        })
    }

    /// The last entry whose timestamp is below `ts`: every record up to its offset is older
    /// than `ts`, so a search for `ts` may start after it.
    pub(crate) fn last_before(&self, ts: i64) -> Option<TimeEntry> {
        self.file.last_where(|e| e.ts < ts)
    }

    pub(crate) fn file(&self) -> &IndexFile<TimeEntry> {
        &self.file
    }
}
