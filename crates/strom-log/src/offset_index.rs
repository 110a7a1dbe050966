//! The sparse offset index of a segment (`.index`): from an offset to the file position of a
//! batch at or before it, so a read scans at most about `index_interval_bytes` of headers.
//!
//! Entry: relative offset `u32` (the batch's base offset minus the segment's) and file position
//! `u32`, big-endian, 8 bytes. An entry always names the first byte of a batch, never position
//! 0 (the implicit first entry).

use std::path::Path;

use crate::LogError;
use crate::index_file::{IndexEntry, IndexFile, Loaded};
use crate::storage::Storage;

/// One offset index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub(crate) rel: u32,
    /// File position of the batch.
    pub(crate) pos: u32,
}

impl IndexEntry for OffsetEntry {
    const LEN: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel.to_be_bytes());
        out.extend_from_slice(&self.pos.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(buf.get(at..at + 4).unwrap_or(&[0; 4]));
            u32::from_be_bytes(b)
        };
        OffsetEntry { rel: word(0), pos: word(4) }
    }

    fn follows(prev: &Self, next: &Self) -> bool {
        next.rel > prev.rel && next.pos > prev.pos
    }
}

/// The offset index of one segment.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: IndexFile<OffsetEntry>,
}

impl OffsetIndex {
    /// An empty index at `path` (truncating any file there).
    pub(crate) fn create(storage: &dyn Storage, path: &Path) -> Result<Self, LogError> {
        Ok(OffsetIndex { file: IndexFile::create(storage, path)? })
    }

    /// Loads the index at `path`; `Err(reason)` in the second field when it must be rebuilt.
    pub(crate) fn load(
        storage: &dyn Storage,
        path: &Path,
    ) -> Result<(Self, Option<String>), LogError> {
        Ok(match IndexFile::load(storage, path)? {
            Loaded::Ok(file) => {
                let first: Option<OffsetEntry> = file.get(0);
                let bad = first
                    .filter(|e| e.pos == 0 || e.rel == 0)
                    .map(|e| format!("first entry {e:?} points at the start of the segment"));
                (OffsetIndex { file }, bad)
            }
            Loaded::NeedsRebuild(file, why) => (OffsetIndex { file }, Some(why)),
        })
    }

    /// The entry with the largest offset at or below `rel`, or the segment start.
    pub(crate) fn lookup(&self, rel: u32) -> OffsetEntry {
        self.file.last_where(|e| e.rel <= rel).unwrap_or(OffsetEntry { rel: 0, pos: 0 })
    }

    /// How many entries name batches before `rel`.
    pub(crate) fn count_below(&self, rel: u32) -> usize {
        self.file.count_where(|e| e.rel < rel)
    }

    pub(crate) fn file(&self) -> &IndexFile<OffsetEntry> {
        &self.file
    }
}
