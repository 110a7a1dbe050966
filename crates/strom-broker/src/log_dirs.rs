//! DescribeLogDirs (Kafka API 35, `kafka-log-dirs.sh`): this node's data directory, the size
//! of every partition replica it holds, how far each is behind, and the space of the file
//! system under it. Strom keeps every log of a node in one data directory (no JBOD), so there
//! is one entry, and no replica is ever a "future" one (no moves between directories).

use std::path::Path;

use crate::broker::{Broker, run_blocking};

/// One data directory of this node, as DescribeLogDirs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    /// The directory's path, as configured.
    pub path: String,
    /// Size of the file system holding it, in bytes (`None` when it cannot be read).
    pub total_bytes: Option<u64>,
    /// Bytes of that file system an unprivileged writer may still use.
    pub usable_bytes: Option<u64>,
    /// Every partition replica in it, sorted by topic and partition.
    pub partitions: Vec<LogDirPartition>,
}

/// One partition replica in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's index.
    pub partition: i32,
    /// Bytes of its record batches (indexes not counted), like Kafka's `size`.
    pub size_bytes: u64,
    /// 0 on the leader; on a follower, how far its log end is behind the high watermark the
    /// leader last reported (Kafka's `max(highWatermark - logEndOffset, 0)`).
    pub offset_lag: i64,
}

impl Broker {
    /// This node's data directory and the replicas in it (see [`LogDirDescription`]).
    pub async fn describe_log_dirs(&self) -> LogDirDescription {
        let dir = self.config().data_dir.clone();
        let partitions = self.registry().partitions();
        let described = run_blocking(move || {
            let mut out: Vec<LogDirPartition> = partitions
                .iter()
                .filter(|p| !p.is_deleted())
                .map(|p| LogDirPartition {
                    topic: p.topic().to_string(),
                    partition: p.index(),
                    size_bytes: p.log().size_bytes(),
                    offset_lag: p.offset_lag(),
                })
                .collect();
            out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            let space = file_system_space(&dir);
            if let Err(e) = &space {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot read the data directory's file-system space");
            }
            let (total_bytes, usable_bytes) = match space {
                Ok((total, usable)) => (Some(total), Some(usable)),
                Err(_) => (None, None),
            };
            Ok(LogDirDescription {
                path: dir.display().to_string(),
                total_bytes,
                usable_bytes,
                partitions: out,
            })
        })
        .await;
        described.unwrap_or_else(|e| {
            tracing::warn!(error = %e.message, "describing the data directory failed");
            LogDirDescription {
                path: self.config().data_dir.display().to_string(),
                total_bytes: None,
                usable_bytes: None,
                partitions: Vec::new(),
            }
        })
    }
}

/// `(total, usable)` bytes of the file system holding `dir` (statvfs: blocks times fragment
/// size; usable = blocks available to unprivileged users, as Java's `getUsableSpace`).
#[cfg(unix)]
fn file_system_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and outlives the call; statvfs writes only into `stat`,
    // which is large enough for the struct it fills.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct (zeroed before anyway).
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u64 on Linux x86-64).
    #[allow(clippy::useless_conversion)]
    let (fragment, blocks, available) =
        (u64::from(stat.f_frsize), u64::from(stat.f_blocks), u64::from(stat.f_bavail));
    Ok((blocks.saturating_mul(fragment), available.saturating_mul(fragment)))
}

#[cfg(not(unix))]
fn file_system_space(_dir: &Path) -> std::io::Result<(u64, u64)> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no statvfs on this platform"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_of_a_temp_dir_has_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (total, usable) = file_system_space(dir.path()).expect("statvfs");
        assert!(total > 0 && usable <= total, "{total} {usable}");
        assert!(file_system_space(Path::new("/nonexistent/strom")).is_err());
    }
}
