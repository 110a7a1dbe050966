//! The high-watermark checkpoint of a partition replica (Kafka's
//! `replication-offset-checkpoint`, one small file per partition directory here).
//!
//! Why: the high watermark lives in memory. Without a checkpoint a restarted replica starts it
//! at the log start, and until its followers fetch again a leader answers ListOffsets
//! "latest" with that (a new consumer with `auto.offset.reset=latest` would read the whole
//! log) and serves nothing. With it, the replica starts at the last checkpointed value, clamped
//! to its log: never above the log end (a crash may have lost an unflushed tail), never below
//! the log start.
//!
//! The flush scheduler writes the file at most every [`INTERVAL`] when the value moved (and
//! shutdown writes it last), through a temporary file and a rename but without fsync: a lost
//! or torn file reads as missing (start at the log start, as before), and an older value is
//! only a lower, still committed, high watermark.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use strom_format::Offset;

/// How often the flush scheduler writes a moved high watermark (Kafka's default 5 s).
pub(crate) const INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The checkpoint's file name in the partition directory.
pub(crate) const HIGH_WATERMARK: &str = "high-watermark";
const HIGH_WATERMARK_TMP: &str = "high-watermark.tmp";
const PREFIX: &str = "strom-high-watermark v1 ";

/// The checkpointed value; `None` when missing or unreadable.
pub(crate) fn read(dir: &Path) -> Option<Offset> {
    let mut text = String::new();
    File::open(dir.join(HIGH_WATERMARK)).ok()?.take(256).read_to_string(&mut text).ok()?;
    let value = text.strip_prefix(PREFIX)?.strip_suffix('\n')?;
    value.parse::<i64>().ok().filter(|v| *v >= 0).map(Offset::new)
}

/// Replaces the checkpoint with `value` (atomically: readers see the old or the new file).
pub(crate) fn write(dir: &Path, value: Offset) -> std::io::Result<()> {
    let tmp = dir.join(HIGH_WATERMARK_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{PREFIX}{value}\n").as_bytes())?;
    drop(file);
    fs::rename(&tmp, dir.join(HIGH_WATERMARK))
}

/// Where a replica whose log spans `[start, end]` starts its high watermark.
pub(crate) fn initial(dir: &Path, start: Offset, end: Offset) -> Offset {
    read(dir).map_or(start, |hw| hw.clamp(start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_round_trips_and_is_clamped_to_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (start, end) = (Offset::new(10), Offset::new(100));
        assert_eq!(initial(dir.path(), start, end), start, "no checkpoint: the log start");
        write(dir.path(), Offset::new(60)).expect("write");
        assert_eq!(read(dir.path()), Some(Offset::new(60)));
        assert_eq!(initial(dir.path(), start, end), Offset::new(60));
        write(dir.path(), Offset::new(500)).expect("write");
        assert_eq!(initial(dir.path(), start, end), end, "never above the log end");
        write(dir.path(), Offset::new(3)).expect("write");
        assert_eq!(initial(dir.path(), start, end), start, "never below the log start");
        fs::write(dir.path().join(HIGH_WATERMARK), b"strom-high-watermark v1 4").expect("torn");
        assert_eq!(read(dir.path()), None, "a torn file reads as missing");
    }
}
