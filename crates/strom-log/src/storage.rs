//! The storage seam: every file-system call strom-log makes goes through [`Storage`] (names:
//! open, rename, remove, list, directory sync) and [`StorageFile`] (one open file: positional
//! reads, appends, truncation, fsync). [`OsStorage`] is the real file system, with the same
//! system calls the log made before the seam existed (positional `pread` into a buffer's spare
//! capacity, one vectored `write` per run of batches, `fdatasync`, `rename`, directory
//! `fsync`). `SimStorage` (feature `sim`) is an in-memory file system that loses unflushed
//! writes on a simulated power cut and fails writes or fsyncs on demand, for crash tests.
//!
//! Contract an implementation keeps (what the log's durability rests on):
//! - bytes appended to a file are visible to reads of any handle of it at once, and survive a
//!   power loss only once [`StorageFile::sync_data`] returned `Ok` after them;
//! - a creation, removal or rename survives a power loss only once [`Storage::sync_dir`] of
//!   the directory holding the name returned `Ok` after it (a file's `sync_data` does not make
//!   its name durable);
//! - an error means the operation may or may not have happened (a failed write may have
//!   written part of its bytes); nothing is ever reported done that was not done.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenMode {
    /// Reads only; the file must exist.
    Read,
    /// Reads and appends; the file must exist.
    Append,
    /// Reads and appends; created empty when missing, kept as it is otherwise.
    AppendOrCreate,
    /// Reads and appends; created when missing, emptied when present (`O_TRUNC`).
    Truncate,
}

/// One name in a directory, as [`Storage::list_dir`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (not the whole path). Names that are not UTF-8 are left out by the listing.
    pub name: String,
    /// Whether it is a regular file (not a directory).
    pub is_file: bool,
}

/// A file system, as the log uses one. Implementations are shared between threads (`Arc`);
/// no call may hold a lock across blocking I/O that another call needs to make progress.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens (or creates, per `mode`) the file at `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Creates `path` and every missing parent directory (not durable until the parent's
    /// [`Storage::sync_dir`]).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to`, atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file; handles open on it stay usable until dropped.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names in a directory, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// Makes every creation, removal and rename of names in `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether anything exists at `path` (errors count as "no").
    fn exists(&self, path: &Path) -> bool;
    /// A name for the directory `path` that is the same however it is spelled, and unique to
    /// this storage: two logs must never have one directory open at once.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
}

/// One open file. Shared between the log's writer and its readers: every method takes
/// `&self`, and reads are positional, so readers never move a shared cursor.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads at most `buf.len()` bytes at `pos`; `Ok(0)` at the end of the file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Appends exactly `len` bytes of the file at `pos` to `buf`, reading into its spare
    /// capacity without zero-filling it first (the read path's buffers); `UnexpectedEof` when
    /// the file ends before. On error `buf` may have grown by part of the bytes.
    fn read_into_spare(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> io::Result<()>;
    /// Appends (part of) `bufs` at the end of the file with one vectored write; returns how
    /// many bytes were written.
    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's content and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// When the file was created, in milliseconds since the epoch, where the storage knows.
    fn created_ms(&self) -> Option<i64>;

    /// Fills `buf` from `pos`; `UnexpectedEof` when the file ends before.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = buf.get_mut(n..).unwrap_or_default();
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appends every byte of `slices`, restarting after short writes.
    fn append_all(&self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut remaining: usize = slices.iter().map(|s| s.len()).sum();
        while remaining > 0 {
            match self.append(slices) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes"));
                }
                Ok(n) => {
                    let n = n.min(remaining);
                    remaining -= n;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The first `limit` bytes of the file at most (small checkpoint files).
    fn read_prefix(&self, limit: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.size()?.min(limit))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        let mut buf = Vec::with_capacity(len);
        self.read_into_spare(&mut buf, len, 0)?;
        Ok(buf)
    }
}

/// The operating system's file system: what the log does without a seam, call for call.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsStorage;

/// A file of [`OsStorage`].
#[derive(Debug)]
struct OsFile {
    file: File,
}

impl Storage for OsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Append => {
                options.append(true);
            }
            OpenMode::AppendOrCreate => {
                options.append(true).create(true);
            }
            OpenMode::Truncate => {
                // O_APPEND (every write at the end, also after a truncation moved the end
                // back) and O_TRUNC do not combine in std's OpenOptions: emptied below.
                options.append(true).create(true);
            }
        }
        let file = options.open(path)?;
        if mode == OpenMode::Truncate {
            file.set_len(0)?;
        }
        Ok(Box::new(OsFile { file }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            out.push(DirEntry { name, is_file });
        }
        Ok(out)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path).and_then(|d| d.sync_all())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        path.canonicalize()
    }
}

impl StorageFile for OsFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }

    fn read_into_spare(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> io::Result<()> {
        read_exact_at_uninit(&self.file, buf, len, pos)
    }

    fn append(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn created_ms(&self) -> Option<i64> {
        let created = self.file.metadata().ok()?.created().ok()?;
        let ms = created.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(ms).ok()
    }
}

/// Appends exactly `len` bytes of `file` at `pos` to `buf`, reading into its spare capacity
/// without initialising it first. Fails with `UnexpectedEof` when the file ends before.
fn read_exact_at_uninit(
    file: &File,
    buf: &mut Vec<u8>,
    len: usize,
    mut pos: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    buf.reserve(len);
    let target = buf.len() + len;
    while buf.len() < target {
        let missing = target - buf.len();
        let spare = buf.spare_capacity_mut();
        let want = missing.min(spare.len()).min(isize::MAX as usize);
        let offset = libc::off_t::try_from(pos).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "file position out of range")
        })?;
        // SAFETY: `spare` is memory owned by `buf`, valid for writes of `spare.len() >= want`
        // bytes and not aliased while this call runs; pread writes at most `want` bytes into
        // it and never reads it, so its being uninitialised does not matter.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, offset) };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let filled = buf.len() + n.min(want);
                // SAFETY: pread initialised the first `n <= want` bytes of the spare capacity,
                // so every byte below `filled` is initialised, and `filled <= capacity`.
                unsafe { buf.set_len(filled) };
                pos += n as u64;
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Removes `path`; a missing file is not an error. Returns whether it existed.
pub(crate) fn remove_if_exists(storage: &dyn Storage, path: &Path) -> io::Result<bool> {
    match storage.remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a small file durably under its final name: a temporary file written and fsynced,
/// renamed over `name`, and (with `sync_dir`) the directory fsynced, so a crash leaves the old
/// or the new content whole.
pub(crate) fn write_atomically(
    storage: &dyn Storage,
    dir: &Path,
    tmp_name: &str,
    name: &str,
    content: &[u8],
    sync_dir: bool,
) -> Result<(), crate::LogError> {
    use crate::error::IoContext;
    let tmp = dir.join(tmp_name);
    let file =
        storage.open(&tmp, OpenMode::Truncate).ctx(|| format!("create {}", tmp.display()))?;
    file.append_all(&mut [IoSlice::new(content)])
        .and_then(|()| file.sync_data())
        .ctx(|| format!("write {}", tmp.display()))?;
    drop(file);
    storage.rename(&tmp, &dir.join(name)).ctx(|| format!("rename {}", tmp.display()))?;
    if sync_dir {
        storage.sync_dir(dir).ctx(|| format!("fsync directory {}", dir.display()))?;
    }
    Ok(())
}

/// Reads a small text file of at most `limit` bytes; `None` when missing or unreadable.
pub(crate) fn read_small(storage: &dyn Storage, path: &Path, limit: u64) -> Option<String> {
    let file = storage.open(path, OpenMode::Read).ok()?;
    String::from_utf8(file.read_prefix(limit).ok()?).ok()
}
