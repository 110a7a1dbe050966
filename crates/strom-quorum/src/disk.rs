//! The storage seam of the quorum: every byte the log store and the state machine persist goes
//! through [`Disk`], a tiny flat file API with explicit durability. [`FsDisk`] is the real one
//! (std::fs on a blocking thread, never on the runtime), [`MemDisk`] the simulated one: it
//! remembers what was fsynced and, on [`MemDisk::crash`], loses everything that was not (and may
//! keep a torn prefix of the last unsynced write), so the simulation tests recovery for real.
//!
//! Durability contract: when a returned future resolves `Ok`, the operation is on stable storage
//! (data fsynced; for `replace` and `remove` the directory too). A crash while a future is
//! pending leaves the file either as before, or (for `append` only) with a prefix of the new
//! bytes appended.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A flat directory of named files with durable operations. Names are plain file names (no
/// separators).
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// The whole content of `name`, or `None` if it does not exist.
    fn read(&self, name: &str) -> BoxFuture<'static, io::Result<Option<Vec<u8>>>>;
    /// Appends `data` to `name` (created if missing) and fsyncs it.
    fn append(&self, name: &str, data: Bytes) -> BoxFuture<'static, io::Result<()>>;
    /// Cuts `name` to `len` bytes and fsyncs it.
    fn truncate(&self, name: &str, len: u64) -> BoxFuture<'static, io::Result<()>>;
    /// Atomically replaces `name` with `data` (write a temporary, fsync, rename, fsync the
    /// directory): after a crash the file holds either the old or the new content.
    fn replace(&self, name: &str, data: Bytes) -> BoxFuture<'static, io::Result<()>>;
}

/// The real disk: files in one directory, blocking I/O on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FsDisk {
    dir: Arc<PathBuf>,
}

impl FsDisk {
    /// Opens (creating it if needed) the directory `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<FsDisk> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(FsDisk { dir: Arc::new(dir) })
    }

    /// The directory this disk writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn run<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Path, PathBuf) -> io::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, io::Result<T>> {
        let dir = Arc::clone(&self.dir);
        let path = dir.join(name);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || f(&dir, path)).await {
                Ok(r) => r,
                Err(e) => Err(io::Error::other(format!("disk task failed: {e}"))),
            }
        })
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Disk for FsDisk {
    fn read(&self, name: &str) -> BoxFuture<'static, io::Result<Option<Vec<u8>>>> {
        self.run(name, |_, path| match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
    }

    fn append(&self, name: &str, data: Bytes) -> BoxFuture<'static, io::Result<()>> {
        self.run(name, move |dir, path| {
            use std::io::Write;
            let existed = path.exists();
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(&data)?;
            f.sync_data()?;
            if !existed {
                sync_dir(dir)?;
            }
            Ok(())
        })
    }

    fn truncate(&self, name: &str, len: u64) -> BoxFuture<'static, io::Result<()>> {
        self.run(name, move |_, path| {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(len)?;
            f.sync_all()
        })
    }

    fn replace(&self, name: &str, data: Bytes) -> BoxFuture<'static, io::Result<()>> {
        self.run(name, move |dir, path| {
            use std::io::Write;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)
        })
    }
}

/// One write that has been issued but not yet fsynced.
#[derive(Debug, Clone)]
enum Pending {
    Append(Bytes),
    Truncate(u64),
    Replace(Bytes),
}

#[derive(Debug)]
struct MemState {
    /// What survives a crash.
    durable: BTreeMap<String, Vec<u8>>,
    /// Issued, not yet synced writes, by file, in issue order.
    pending: BTreeMap<String, Vec<(u64, Pending)>>,
    /// Bumped by every crash: handles of an older generation are dead (their writes fail).
    generation: u64,
    next_op: u64,
    rng: StdRng,
    /// Simulated latency of one fsync, in microseconds (inclusive range).
    latency_us: (u64, u64),
}

/// The simulated disk of one node. Clone it to keep the "hardware" across a crash; hand
/// [`MemDisk::handle`] to a node instance.
#[derive(Debug, Clone)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
}

/// A node instance's view of a [`MemDisk`]; dead after the disk crashes.
#[derive(Debug, Clone)]
pub struct MemDiskHandle {
    state: Arc<Mutex<MemState>>,
    generation: u64,
}

impl MemDisk {
    /// An empty disk whose latencies and torn writes are drawn from `seed`.
    pub fn new(seed: u64) -> MemDisk {
        MemDisk {
            state: Arc::new(Mutex::new(MemState {
                durable: BTreeMap::new(),
                pending: BTreeMap::new(),
                generation: 0,
                next_op: 0,
                rng: StdRng::seed_from_u64(seed),
                latency_us: (50, 2_000),
            })),
        }
    }

    /// A handle for a (new) node instance.
    pub fn handle(&self) -> MemDiskHandle {
        MemDiskHandle { state: Arc::clone(&self.state), generation: self.state.lock().generation }
    }

    /// Power loss: every unsynced write is lost, except that the first unsynced append of a
    /// file may leave a random prefix of its bytes (a torn write). Handles issued before the
    /// crash stop working.
    pub fn crash(&self) {
        let mut st = self.state.lock();
        st.generation += 1;
        let pending = std::mem::take(&mut st.pending);
        for (name, ops) in pending {
            if let Some((_, Pending::Append(data))) = ops.first() {
                let keep = st.rng.random_range(0..=data.len());
                if keep > 0 {
                    st.durable.entry(name).or_default().extend_from_slice(&data[..keep]);
                }
            }
        }
    }

    /// Flips one byte of a durable file (for corruption tests).
    pub fn corrupt(&self, name: &str, offset: usize) -> bool {
        let mut st = self.state.lock();
        match st.durable.get_mut(name).and_then(|f| f.get_mut(offset)) {
            Some(b) => {
                *b ^= 0xff;
                true
            }
            None => false,
        }
    }

    /// The durable content of a file.
    pub fn durable(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().durable.get(name).cloned()
    }
}

impl MemDiskHandle {
    /// Issues `op` (pending, lost on crash), waits a simulated fsync latency, then makes it
    /// durable, unless the disk crashed meanwhile.
    fn write(&self, name: &str, op: Pending) -> BoxFuture<'static, io::Result<()>> {
        let state = Arc::clone(&self.state);
        let generation = self.generation;
        let name = name.to_string();
        Box::pin(async move {
            let (id, latency) = {
                let mut st = state.lock();
                if st.generation != generation {
                    return Err(crashed());
                }
                let id = st.next_op;
                st.next_op += 1;
                st.pending.entry(name.clone()).or_default().push((id, op));
                let (lo, hi) = st.latency_us;
                (id, st.rng.random_range(lo..=hi))
            };
            tokio::time::sleep(Duration::from_micros(latency)).await;
            let mut st = state.lock();
            if st.generation != generation {
                return Err(crashed());
            }
            // Sync in issue order: this op and every earlier pending op of the file.
            let ops = st.pending.remove(&name).unwrap_or_default();
            let (done, rest): (Vec<_>, Vec<_>) = ops.into_iter().partition(|(i, _)| *i <= id);
            if !rest.is_empty() {
                st.pending.insert(name.clone(), rest);
            }
            for (_, op) in done {
                let file = st.durable.entry(name.clone()).or_default();
                match op {
                    Pending::Append(d) => file.extend_from_slice(&d),
                    Pending::Truncate(len) => file.truncate(len as usize),
                    Pending::Replace(d) => *file = d.to_vec(),
                }
            }
            Ok(())
        })
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated disk crashed")
}

impl Disk for MemDiskHandle {
    fn read(&self, name: &str) -> BoxFuture<'static, io::Result<Option<Vec<u8>>>> {
        let st = self.state.lock();
        let r = if st.generation != self.generation {
            Err(crashed())
        } else {
            // A reader sees its own unsynced writes, like a page cache does.
            let mut file = st.durable.get(name).cloned();
            for (_, op) in st.pending.get(name).into_iter().flatten() {
                let f = file.get_or_insert_with(Vec::new);
                match op {
                    Pending::Append(d) => f.extend_from_slice(d),
                    Pending::Truncate(len) => f.truncate(*len as usize),
                    Pending::Replace(d) => *f = d.to_vec(),
                }
            }
            Ok(file)
        };
        Box::pin(async move { r })
    }

    fn append(&self, name: &str, data: Bytes) -> BoxFuture<'static, io::Result<()>> {
        self.write(name, Pending::Append(data))
    }

    fn truncate(&self, name: &str, len: u64) -> BoxFuture<'static, io::Result<()>> {
        self.write(name, Pending::Truncate(len))
    }

    fn replace(&self, name: &str, data: Bytes) -> BoxFuture<'static, io::Result<()>> {
        self.write(name, Pending::Replace(data))
    }
}
