//! strom-log embedded in a program: a durable append-only log with no broker and no network.
//!
//! ```text
//! cargo run --example embedded_log               # in a temporary directory
//! cargo run --example embedded_log -- ./my-log   # in ./my-log (run it twice: data persists)
//! ```

use std::path::PathBuf;

use anyhow::Context;
use strom_format::{BatchBuilder, Batches, Compression, Header, Offset};
use strom_log::{FlushPolicy, Log, LogConfig};

fn main() -> anyhow::Result<()> {
    // A directory from the command line, or a temporary one removed at the end.
    let temp;
    let dir: PathBuf = match std::env::args_os().nth(1) {
        Some(path) => path.into(),
        None => {
            temp = TempDir::new()?;
            temp.path.clone()
        }
    };

    let config = LogConfig {
        segment_bytes: 4 * 1024, // small segments, to show rolling
        flush: FlushPolicy::EveryMessages(100),
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config).with_context(|| format!("open {}", dir.display()))?;
    println!(
        "opened {} with offsets [{}, {}) in {} segment(s)",
        dir.display(),
        log.log_start_offset(),
        log.log_end_offset(),
        log.segment_count()
    );

    // Append 20 batches of 10 records each; timestamps 1 s apart.
    let base_ts = 1_700_000_000_000i64;
    let first = log.log_end_offset().get();
    for b in 0..20i64 {
        let mut batch = BatchBuilder::new(Compression::Lz4);
        for r in 0..10i64 {
            let n = first + b * 10 + r;
            let key = format!("user-{}", n % 7);
            let value = format!("event number {n}");
            batch.append(
                base_ts + n * 1_000,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[Header::new("source", Some(b"embedded_log".as_slice()))],
            );
        }
        let info = log.append(batch.build()?)?;
        if b % 5 == 0 {
            println!("appended offsets {}..={}", info.first_offset, info.last_offset);
        }
    }
    log.flush()?;
    println!(
        "log end offset {}, flushed offset {}, {} bytes in {} segment(s)",
        log.log_end_offset(),
        log.flushed_offset(),
        log.size_bytes(),
        log.segment_count()
    );

    // Read the first records back: whole batches, CRC-checked by the log.
    let read = log.read(Offset::new(first), 4096)?;
    for batch in Batches::new(read.records).take(2) {
        let batch = batch?;
        for record in batch.records()?.take(3) {
            let record = record?;
            println!(
                "  offset {:>4}  ts {}  key {:?}  value {:?}",
                record.offset,
                record.timestamp,
                record.key.as_deref().map(String::from_utf8_lossy),
                record.value.as_deref().map(String::from_utf8_lossy),
            );
        }
    }

    // Find the first record at or after a point in time.
    let ts = base_ts + (first + 42) * 1_000 + 500;
    match log.offset_for_timestamp(ts)? {
        Some((offset, found)) => {
            println!("first record at or after {ts}: offset {offset} ({found})")
        }
        None => println!("no record at or after {ts}"),
    }

    log.close()?;
    println!("closed cleanly");
    Ok(())
}

/// A temporary directory removed on drop (the example avoids extra dependencies).
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let path =
            std::env::temp_dir().join(format!("strom-embedded-log-{}-{nanos}", std::process::id()));
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
