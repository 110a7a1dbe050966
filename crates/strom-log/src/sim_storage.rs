//! [`SimStorage`]: an in-memory [`Storage`] for crash and fault tests (cargo feature `sim`),
//! deterministic from one seed.
//!
//! What it models, per the contract of [`crate::storage`]:
//! - **Files** keep a durable content (as of the last `sync_data`) and the writes and
//!   truncations made since, in order. A simulated power cut ([`SimStorage::crash`]) keeps
//!   the durable content plus a random prefix of those operations, the last one possibly torn
//!   at an arbitrary byte (cut short, or with its tail read back as zeros, as a file whose
//!   size reached the disk before its data does).
//! - **Names** (creations, removals, renames, directories) go into one ordered journal, as
//!   ext4's: `sync_dir(d)` makes durable every journal entry up to the last one that touches
//!   `d`; a `sync_data` of a file does not make its name durable. A power cut keeps the
//!   durable names plus a random prefix of the rest of the journal. A file no name keeps is
//!   gone.
//! - **Faults**: from a given operation on, writes fail with ENOSPC or EIO (after writing a
//!   random part of their bytes), or fsyncs fail with EIO ([`SimStorage::fail_from`]); or the
//!   machine halts ([`SimStorage::halt_at`]): every call fails, nothing more reaches the disk.
//! - **Crash points**: [`SimStorage::snapshot_at`] keeps a copy of the whole state just before
//!   chosen operations, so one run of a workload yields many crash points; each copy is an
//!   independent storage to [`SimStorage::crash`] and reopen.
//!
//! Operations are counted ([`SimStorage::ops`]): every call that changes something (a create,
//! write, truncation, fsync, rename, removal, directory creation or directory fsync); reads and
//! opens of existing files are not counted. Handles opened before a crash fail afterwards.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::storage::{DirEntry, OpenMode, Storage, StorageFile};

/// Instance numbers, so two storages never share a canonical directory name.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A fault [`SimStorage::fail_from`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimFault {
    /// The disk is full: appends and file creations fail with ENOSPC (after writing a random
    /// part of their bytes); truncations, removals, renames and fsyncs still work.
    NoSpace,
    /// The disk fails: every write-like call (appends, creations, truncations, renames,
    /// removals) and every fsync fails with EIO; a failed append may have written part of its
    /// bytes.
    WriteIo,
    /// Every fsync (`sync_data`, `sync_dir`) fails with EIO; nothing it covers became durable.
    SyncIo,
}

/// A simulated, seeded, in-memory file system with power cuts and injected faults. Cloning
/// gives another handle to the same file system.
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Clone)]
struct State {
    instance: u64,
    rng: SplitMix64,
    /// Bumped by every crash: handles of an earlier boot fail.
    boot: u64,
    /// Counted operations so far.
    ops: u64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Names as the running system sees them: `durable` with `journal` applied.
    names: BTreeMap<PathBuf, Node>,
    /// Names as a power cut finds them at the least.
    durable: BTreeMap<PathBuf, Node>,
    /// Name operations not yet durable, oldest first.
    journal: Vec<NameOp>,
    fault: Option<(u64, SimFault)>,
    halt_at: Option<u64>,
    /// Operation numbers to copy the state before, ascending, and the copies taken.
    snapshot_at: Vec<u64>,
    snapshots: Vec<(u64, State)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum NameOp {
    Link(PathBuf, Node),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
    RemoveTree(PathBuf),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What a power cut keeps at the least.
    durable: Vec<u8>,
    /// What reads see.
    data: Vec<u8>,
    /// Writes and truncations since the last `sync_data`, oldest first.
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum DataOp {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// Sebastiano Vigna's splitmix64: tiny, seedable, good enough to pick crash outcomes.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        if max == u64::MAX { self.next() } else { self.next() % (max + 1) }
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// Normalises a path: absolute, no `.` or `..`.
fn norm(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

fn under(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

fn apply(names: &mut BTreeMap<PathBuf, Node>, op: &NameOp) {
    match op {
        NameOp::Link(path, node) => {
            names.insert(path.clone(), *node);
        }
        NameOp::Unlink(path) => {
            names.remove(path);
        }
        NameOp::Rename(from, to) => {
            if let Some(node) = names.remove(from) {
                names.insert(to.clone(), node);
            }
        }
        NameOp::RemoveTree(dir) => {
            names.retain(|p, _| p != dir && !under(p, dir));
        }
    }
}

impl NameOp {
    /// Whether the op changes a name in `dir`.
    fn touches(&self, dir: &Path) -> bool {
        match self {
            NameOp::Link(p, _) | NameOp::Unlink(p) | NameOp::RemoveTree(p) => parent(p) == dir,
            NameOp::Rename(from, to) => parent(from) == dir || parent(to) == dir,
        }
    }
}

fn error(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("simulated storage: {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// What kind of counted operation is running, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Needs free space (an append, a creation, a growing truncation, a new directory).
    Grow,
    /// Changes data or names without needing space (a shrinking truncation, a removal, a
    /// rename).
    Change,
    /// An fsync.
    Sync,
}

impl State {
    fn new(seed: u64) -> Self {
        let mut names = BTreeMap::new();
        names.insert(PathBuf::from("/"), Node::Dir);
        State {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            rng: SplitMix64(seed),
            boot: 0,
            ops: 0,
            inodes: BTreeMap::new(),
            next_inode: 1,
            durable: names.clone(),
            names,
            journal: Vec::new(),
            fault: None,
            halt_at: None,
            snapshot_at: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    fn check_halted(&self) -> io::Result<()> {
        match self.halt_at {
            Some(at) if self.ops >= at => {
                Err(error(io::ErrorKind::Other, "the machine lost power"))
            }
            _ => Ok(()),
        }
    }

    /// Counts a mutating operation: takes a requested snapshot first, then applies a halt or
    /// an injected fault. `Some(fault)` when the operation must fail (the caller decides how
    /// much of it happens first).
    fn begin(&mut self, kind: Kind) -> io::Result<Option<io::Error>> {
        self.check_halted()?;
        self.ops += 1;
        while self.snapshot_at.first().is_some_and(|at| *at <= self.ops) {
            let at = self.snapshot_at.remove(0);
            if at == self.ops {
                let mut copy = self.clone();
                copy.instance = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
                copy.snapshot_at.clear();
                copy.snapshots.clear();
                copy.fault = None;
                copy.halt_at = None;
                // The copy is the state *before* this operation.
                copy.ops -= 1;
                self.snapshots.push((at, copy));
            }
        }
        self.check_halted()?;
        let Some((from, fault)) = self.fault else { return Ok(None) };
        if self.ops < from {
            return Ok(None);
        }
        Ok(match (fault, kind) {
            (SimFault::NoSpace, Kind::Grow) => Some(enospc()),
            (SimFault::WriteIo, _) => Some(eio()),
            (SimFault::SyncIo, Kind::Sync) => Some(eio()),
            _ => None,
        })
    }

    fn node(&self, path: &Path) -> Option<Node> {
        self.names.get(path).copied()
    }

    fn name_op(&mut self, op: NameOp) {
        apply(&mut self.names, &op);
        self.journal.push(op);
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(eio)
    }

    fn require_dir(&self, dir: &Path) -> io::Result<()> {
        match self.node(dir) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(error(io::ErrorKind::NotADirectory, "not a directory")),
            None => Err(error(io::ErrorKind::NotFound, "no such directory")),
        }
    }

    /// Power loss: keeps the durable state plus a random prefix of what was not yet durable.
    fn crash(&mut self) {
        let keep = self.rng.upto(self.journal.len() as u64) as usize;
        let mut names = std::mem::take(&mut self.durable);
        for op in self.journal.iter().take(keep) {
            apply(&mut names, op);
        }
        self.journal.clear();
        let live: Vec<u64> = names
            .values()
            .filter_map(|n| match n {
                Node::File(ino) => Some(*ino),
                Node::Dir => None,
            })
            .collect();
        let mut inodes = BTreeMap::new();
        for ino in live {
            let Some(inode) = self.inodes.remove(&ino) else { continue };
            let mut data = inode.durable;
            let applied = self.rng.upto(inode.pending.len() as u64) as usize;
            for op in inode.pending.iter().take(applied) {
                apply_data(&mut data, op);
            }
            // The next operation may have reached the disk in part: a torn write.
            if let Some(DataOp::Write { pos, bytes }) = inode.pending.get(applied)
                && self.rng.coin()
            {
                let cut = self.rng.upto(bytes.len() as u64) as usize;
                let mut torn = bytes.get(..cut).unwrap_or_default().to_vec();
                if self.rng.coin() {
                    // The size reached the disk, the data did not.
                    torn.resize(bytes.len(), 0);
                }
                apply_data(&mut data, &DataOp::Write { pos: *pos, bytes: torn });
            }
            inodes.insert(ino, Inode { durable: data.clone(), data, pending: Vec::new() });
        }
        self.inodes = inodes;
        self.durable = names.clone();
        self.names = names;
        self.boot += 1;
        self.fault = None;
        self.halt_at = None;
    }
}

fn apply_data(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { pos, bytes } => {
            let pos = usize::try_from(*pos).unwrap_or(usize::MAX).min(data.len());
            let end = pos + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            if let Some(dst) = data.get_mut(pos..end) {
                dst.copy_from_slice(bytes);
            }
        }
        DataOp::SetLen(len) => data.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
    }
}

impl SimStorage {
    /// An empty file system (only `/`), its crash outcomes drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        SimStorage { state: Arc::new(Mutex::new(State::new(seed))) }
    }

    /// Counted operations so far (see the module docs).
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// From operation number `op` on (1 is the first), calls of the kind `fault` affects fail.
    /// Replaces an earlier fault; [`SimStorage::clear_faults`] ends it.
    pub fn fail_from(&self, op: u64, fault: SimFault) {
        self.state.lock().fault = Some((op, fault));
    }

    /// Ends injected faults and halts.
    pub fn clear_faults(&self) {
        let mut state = self.state.lock();
        state.fault = None;
        state.halt_at = None;
    }

    /// From operation number `op` on, every call (reads included) fails: the machine lost
    /// power there. Follow with [`SimStorage::crash`] to see what the disk kept.
    pub fn halt_at(&self, op: u64) {
        self.state.lock().halt_at = Some(op);
    }

    /// Copies the whole state just before each of the operations numbered in `ops`; the
    /// copies are collected with [`SimStorage::take_snapshots`].
    pub fn snapshot_at(&self, ops: impl IntoIterator<Item = u64>) {
        let mut state = self.state.lock();
        state.snapshot_at.extend(ops);
        state.snapshot_at.sort_unstable();
        state.snapshot_at.dedup();
    }

    /// The copies taken so far (operation number, storage), each an independent file system
    /// whose random draws continue from the same point as this one's did.
    pub fn take_snapshots(&self) -> Vec<(u64, SimStorage)> {
        std::mem::take(&mut self.state.lock().snapshots)
            .into_iter()
            .map(|(op, state)| (op, SimStorage { state: Arc::new(Mutex::new(state)) }))
            .collect()
    }

    /// A power cut now: what was not made durable is lost, except a random part of it, the
    /// last write of a file possibly torn. Handles opened before fail from now on; faults and
    /// halts end.
    pub fn crash(&self) {
        self.state.lock().crash();
    }

    /// The current content of the file at `path` (for tests that damage or inspect files).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        match state.node(&norm(path))? {
            Node::File(ino) => state.inodes.get(&ino).map(|i| i.data.clone()),
            Node::Dir => None,
        }
    }

    fn file(&self, ino: u64, boot: u64) -> Box<dyn StorageFile> {
        Box::new(SimFile { state: self.state.clone(), ino, boot })
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let path = norm(path);
        let mut state = self.state.lock();
        state.check_halted()?;
        let boot = state.boot;
        let existing = state.node(&path);
        match (mode, existing) {
            (_, Some(Node::Dir)) => Err(error(io::ErrorKind::IsADirectory, "is a directory")),
            (
                OpenMode::Read | OpenMode::Append | OpenMode::AppendOrCreate,
                Some(Node::File(ino)),
            ) => {
                drop(state);
                Ok(self.file(ino, boot))
            }
            (OpenMode::Read | OpenMode::Append, None) => {
                Err(error(io::ErrorKind::NotFound, "no such file"))
            }
            (OpenMode::Truncate, Some(Node::File(ino))) => {
                if let Some(e) = state.begin(Kind::Change)? {
                    return Err(e);
                }
                let inode = state.inode(ino)?;
                inode.data.clear();
                inode.pending.push(DataOp::SetLen(0));
                drop(state);
                Ok(self.file(ino, boot))
            }
            (OpenMode::AppendOrCreate | OpenMode::Truncate, None) => {
                state.require_dir(&parent(&path))?;
                if let Some(e) = state.begin(Kind::Grow)? {
                    return Err(e);
                }
                let ino = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(ino, Inode::default());
                state.name_op(NameOp::Link(path, Node::File(ino)));
                drop(state);
                Ok(self.file(ino, boot))
            }
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut state = self.state.lock();
        state.check_halted()?;
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .map(Path::to_path_buf)
            .take_while(|p| state.node(p).is_none())
            .collect();
        if let Some(Node::File(_)) = path.ancestors().find_map(|p| state.node(p)) {
            return Err(error(io::ErrorKind::NotADirectory, "a file is in the way"));
        }
        missing.reverse();
        for dir in missing {
            if let Some(e) = state.begin(Kind::Grow)? {
                return Err(e);
            }
            state.name_op(NameOp::Link(dir, Node::Dir));
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        let mut state = self.state.lock();
        state.check_halted()?;
        match state.node(&from) {
            Some(Node::File(_)) => {}
            Some(Node::Dir) => {
                return Err(error(io::ErrorKind::Unsupported, "renaming directories"));
            }
            None => return Err(error(io::ErrorKind::NotFound, "no such file")),
        }
        state.require_dir(&parent(&to))?;
        if let Some(Node::Dir) = state.node(&to) {
            return Err(error(io::ErrorKind::IsADirectory, "target is a directory"));
        }
        if let Some(e) = state.begin(Kind::Change)? {
            return Err(e);
        }
        state.name_op(NameOp::Rename(from, to));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut state = self.state.lock();
        state.check_halted()?;
        match state.node(&path) {
            Some(Node::File(_)) => {}
            Some(Node::Dir) => return Err(error(io::ErrorKind::IsADirectory, "is a directory")),
            None => return Err(error(io::ErrorKind::NotFound, "no such file")),
        }
        if let Some(e) = state.begin(Kind::Change)? {
            return Err(e);
        }
        state.name_op(NameOp::Unlink(path));
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut state = self.state.lock();
        state.check_halted()?;
        state.require_dir(&path)?;
        if let Some(e) = state.begin(Kind::Change)? {
            return Err(e);
        }
        state.name_op(NameOp::RemoveTree(path));
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let path = norm(path);
        let state = self.state.lock();
        state.check_halted()?;
        state.require_dir(&path)?;
        Ok(state
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(path.as_path()))
            .filter_map(|(p, node)| {
                let name = p.file_name()?.to_str()?.to_string();
                Some(DirEntry { name, is_file: matches!(node, Node::File(_)) })
            })
            .collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut state = self.state.lock();
        state.check_halted()?;
        state.require_dir(&path)?;
        if let Some(e) = state.begin(Kind::Sync)? {
            return Err(e);
        }
        if let Some(last) = state.journal.iter().rposition(|op| op.touches(&path)) {
            let committed: Vec<NameOp> = state.journal.drain(..=last).collect();
            for op in &committed {
                apply(&mut state.durable, op);
            }
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.check_halted().is_ok() && state.node(&norm(path)).is_some()
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        let path = norm(path);
        let state = self.state.lock();
        state.check_halted()?;
        if state.node(&path).is_none() {
            return Err(error(io::ErrorKind::NotFound, "no such file or directory"));
        }
        let rest = path.strip_prefix("/").unwrap_or(&path);
        Ok(PathBuf::from(format!("/sim-storage-{}", state.instance)).join(rest))
    }
}

/// A handle on a [`SimStorage`] file.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    boot: u64,
}

impl SimFile {
    /// Runs `f` on the inode, if the machine did not crash or halt since the open.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock();
        state.check_halted()?;
        if state.boot != self.boot {
            return Err(error(io::ErrorKind::Other, "handle opened before a crash"));
        }
        f(&mut state)
    }
}

impl StorageFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        self.with(|s| Ok(s.inode(self.ino)?.data.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.with(|s| {
            let data = &s.inode(self.ino)?.data;
            let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
            let n = buf.len().min(data.len() - pos);
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), data.get(pos..pos + n)) {
                dst.copy_from_slice(src);
            }
            Ok(n)
        })
    }

    fn read_into_spare(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> io::Result<()> {
        self.with(|s| {
            let data = &s.inode(self.ino)?.data;
            let pos = usize::try_from(pos).unwrap_or(usize::MAX);
            match pos.checked_add(len).and_then(|end| data.get(pos..end)) {
                Some(src) => {
                    buf.extend_from_slice(src);
                    Ok(())
                }
                None => Err(io::ErrorKind::UnexpectedEof.into()),
            }
        })
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with(|s| {
            let fault = s.begin(Kind::Grow)?;
            let mut bytes: Vec<u8> = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
            for b in bufs {
                bytes.extend_from_slice(b);
            }
            let total = bytes.len();
            if fault.is_some() {
                // A failing write may still have written part of its bytes.
                let part = s.rng.upto(total as u64) as usize;
                bytes.truncate(part);
            }
            let inode = s.inode(self.ino)?;
            let pos = inode.data.len() as u64;
            inode.data.extend_from_slice(&bytes);
            if !bytes.is_empty() {
                inode.pending.push(DataOp::Write { pos, bytes });
            }
            match fault {
                Some(e) => Err(e),
                None => Ok(total),
            }
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s| {
            let shrinks = s.inode(self.ino)?.data.len() as u64 >= len;
            let kind = if shrinks { Kind::Change } else { Kind::Grow };
            if let Some(e) = s.begin(kind)? {
                return Err(e);
            }
            let inode = s.inode(self.ino)?;
            inode.data.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            inode.pending.push(DataOp::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s| {
            if let Some(e) = s.begin(Kind::Sync)? {
                return Err(e);
            }
            let inode = s.inode(self.ino)?;
            for op in std::mem::take(&mut inode.pending) {
                apply_data(&mut inode.durable, &op);
            }
            debug_assert_eq!(inode.durable, inode.data);
            Ok(())
        })
    }

    fn created_ms(&self) -> Option<i64> {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(storage: &SimStorage, path: &str, bytes: &[u8]) -> Box<dyn StorageFile> {
        let file = storage.open(Path::new(path), OpenMode::Truncate).unwrap();
        file.append_all(&mut [IoSlice::new(bytes)]).unwrap();
        file
    }

    #[test]
    fn a_crash_keeps_synced_data_and_names_and_at_most_a_prefix_of_the_rest() {
        for seed in 0..200 {
            let storage = SimStorage::new(seed);
            storage.create_dir_all(Path::new("/d")).unwrap();
            let file = write(&storage, "/d/a", b"durable");
            file.sync_data().unwrap();
            storage.sync_dir(Path::new("/d")).unwrap();
            file.append_all(&mut [IoSlice::new(b"-more")]).unwrap();
            write(&storage, "/d/b", b"unsynced name");
            storage.crash();
            assert!(file.size().is_err(), "old handles fail after a crash");
            let a = storage.read_file(Path::new("/d/a")).unwrap();
            assert!(a.starts_with(b"durable"), "seed {seed}: {a:?}");
            assert!(a.len() <= b"durable-more".len());
            // A prefix of the unsynced bytes, maybe followed by zeros (a torn write).
            let tail = a.get(7..).unwrap();
            let zeros = tail.iter().rev().take_while(|b| **b == 0).count();
            assert!(b"-more".starts_with(&tail[..tail.len() - zeros]), "seed {seed}: {tail:?}");
            let b = storage.read_file(Path::new("/d/b"));
            assert!(b.is_none_or(|b| b"unsynced name".starts_with(&b) || b.contains(&0)));
        }
    }

    #[test]
    fn a_rename_is_durable_only_after_the_directory_sync() {
        let mut kept_old = 0;
        for seed in 0..100 {
            let storage = SimStorage::new(seed);
            storage.create_dir_all(Path::new("/d")).unwrap();
            let f = write(&storage, "/d/cp", b"old");
            f.sync_data().unwrap();
            storage.sync_dir(Path::new("/d")).unwrap();
            let t = write(&storage, "/d/cp.tmp", b"new");
            t.sync_data().unwrap();
            storage.rename(Path::new("/d/cp.tmp"), Path::new("/d/cp")).unwrap();
            storage.crash();
            let cp = storage.read_file(Path::new("/d/cp")).unwrap();
            assert!(cp == b"old" || cp == b"new", "whole old or whole new: {cp:?}");
            kept_old += usize::from(cp == b"old");
            // Synced now: survives every crash.
            let t = write(&storage, "/d/cp.tmp", b"newer");
            t.sync_data().unwrap();
            storage.rename(Path::new("/d/cp.tmp"), Path::new("/d/cp")).unwrap();
            storage.sync_dir(Path::new("/d")).unwrap();
            storage.crash();
            assert_eq!(storage.read_file(Path::new("/d/cp")).unwrap(), b"newer");
        }
        assert!(kept_old > 0 && kept_old < 100, "both outcomes occur: {kept_old}");
    }

    #[test]
    fn faults_start_at_the_given_operation() {
        let storage = SimStorage::new(7);
        storage.create_dir_all(Path::new("/d")).unwrap();
        let f = write(&storage, "/d/a", b"x");
        storage.fail_from(storage.ops() + 1, SimFault::SyncIo);
        assert!(f.sync_data().is_err());
        f.append_all(&mut [IoSlice::new(b"y")]).unwrap();
        storage.fail_from(storage.ops() + 1, SimFault::NoSpace);
        assert_eq!(
            f.append_all(&mut [IoSlice::new(b"zz")]).unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        f.set_len(1).unwrap();
        storage.clear_faults();
        f.sync_data().unwrap();
        assert_eq!(storage.read_file(Path::new("/d/a")).unwrap(), b"x");
    }

    #[test]
    fn snapshots_are_the_state_before_their_operation() {
        let storage = SimStorage::new(1);
        storage.create_dir_all(Path::new("/d")).unwrap();
        // Operations: create, append, fsync.
        let at = storage.ops() + 3;
        storage.snapshot_at([at]);
        let f = write(&storage, "/d/a", b"abc");
        f.sync_data().unwrap();
        let snaps = storage.take_snapshots();
        assert_eq!(snaps.len(), 1);
        let (op, copy) = &snaps[0];
        assert_eq!(*op, at);
        assert_eq!(copy.ops(), at - 1);
        assert_eq!(copy.read_file(Path::new("/d/a")).unwrap(), b"abc", "before the fsync");
        copy.sync_dir(Path::new("/d")).unwrap();
        copy.crash();
        let kept = copy.read_file(Path::new("/d/a")).unwrap();
        assert!(b"abc".starts_with(&kept) || kept.contains(&0), "unsynced data: {kept:?}");
    }
}
