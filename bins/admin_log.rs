//! `strom-admin log dump FILE` and `strom-admin log verify DATA_DIR`: offline inspection of
//! segment files, like Kafka's kafka-dump-log. Reads the files directly (no broker, no
//! network), never writes them.
//!
//! A segment is walked batch by batch. A batch whose header is impossible or whose CRC fails
//! starts a corrupt range; the walk then looks for the next byte position where a well-formed
//! batch with a valid CRC begins, so every corrupt range of a file is reported, not only the
//! first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use strom_format::{LOG_OVERHEAD, RecordBatch, peek_batch_size};

/// Largest batch the walk accepts as plausible when resynchronising (the log's own limit is
/// far below this); anything larger is treated as a corrupt length.
const MAX_PLAUSIBLE_BATCH: usize = 256 * 1024 * 1024;

/// Offline commands on segment files.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Prints every batch of one segment file (position, offsets, size, CRC, compression,
    /// timestamps) and every corrupt byte range in it.
    Dump {
        /// A segment file, e.g. DATA_DIR/orders-0/00000000000000000000.log.
        file: PathBuf,
        /// Also print each record's offset, key and value (lossy UTF-8).
        #[arg(long)]
        print_records: bool,
    },
    /// Checks every segment of every partition under a broker's data directory: CRCs, batch
    /// shapes, dense offsets within and across segments. Lists every corrupt range and exits
    /// non-zero if there is one. Run it on a stopped broker's directory.
    Verify {
        /// The broker's --data-dir.
        data_dir: PathBuf,
    },
}

/// Runs a `log` subcommand; `Ok(false)` when problems were found (already printed).
pub fn run(cmd: LogCommand) -> anyhow::Result<bool> {
    match cmd {
        LogCommand::Dump { file, print_records } => dump(&file, print_records),
        LogCommand::Verify { data_dir } => verify(&data_dir),
    }
}

/// One step of the walk through a segment.
enum Item {
    Batch { position: usize, batch: RecordBatch },
    Corrupt { start: usize, end: usize, reason: String },
}

/// Walks `data`: whole valid batches, and corrupt ranges between them.
fn walk(data: &Bytes) -> Vec<Item> {
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match batch_at(data, pos) {
            Ok(batch) => {
                let size = batch.size();
                items.push(Item::Batch { position: pos, batch });
                pos += size;
            }
            Err(reason) => {
                let end = resync(data, pos + 1);
                items.push(Item::Corrupt { start: pos, end, reason });
                pos = end;
            }
        }
    }
    items
}

/// The well-formed, CRC-valid batch starting at `pos`, or why there is none.
fn batch_at(data: &Bytes, pos: usize) -> Result<RecordBatch, String> {
    let rest = data.get(pos..).unwrap_or_default();
    let size = match peek_batch_size(rest) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(format!("{} trailing bytes, less than a batch header", rest.len())),
        Err(e) => return Err(e.to_string()),
    };
    if size > MAX_PLAUSIBLE_BATCH {
        return Err(format!("implausible batch length {size}"));
    }
    if size > rest.len() {
        return Err(format!("torn batch: {size} bytes announced, {} present", rest.len()));
    }
    let batch = RecordBatch::new(data.slice(pos..pos + size)).map_err(|e| e.to_string())?;
    batch.validate_crc().map_err(|e| e.to_string())?;
    Ok(batch)
}

/// The first position at or after `from` where a valid batch starts; the end if none.
fn resync(data: &Bytes, from: usize) -> usize {
    (from..data.len().saturating_sub(LOG_OVERHEAD - 1))
        .find(|&p| batch_at(data, p).is_ok())
        .unwrap_or(data.len())
}

fn read(file: &Path) -> anyhow::Result<Bytes> {
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(Bytes::from(data))
}

fn dump(file: &Path, print_records: bool) -> anyhow::Result<bool> {
    let data = read(file)?;
    println!("Dumping {} ({} bytes)", file.display(), data.len());
    let mut corrupt = 0usize;
    for item in walk(&data) {
        match item {
            Item::Batch { position, batch } => {
                println!(
                    "baseOffset: {} lastOffset: {} count: {} position: {position} size: {} \
                     crc: {:#010x} valid: true compression: {:?} leaderEpoch: {} \
                     baseTimestamp: {} maxTimestamp: {}",
                    batch.base_offset(),
                    batch.last_offset(),
                    batch.records_count(),
                    batch.size(),
                    batch.crc(),
                    batch.compression(),
                    batch.partition_leader_epoch().get(),
                    batch.base_timestamp(),
                    batch.max_timestamp(),
                );
                if print_records {
                    print_batch_records(&batch);
                }
            }
            Item::Corrupt { start, end, reason } => {
                corrupt += 1;
                println!("CORRUPT bytes {start}..{end} ({} bytes): {reason}", end - start);
            }
        }
    }
    if corrupt > 0 {
        eprintln!("{}: {corrupt} corrupt range(s)", file.display());
    }
    Ok(corrupt == 0)
}

fn print_batch_records(batch: &RecordBatch) {
    let records = match batch.records() {
        Ok(records) => records,
        Err(e) => {
            println!("  | records do not decode: {e}");
            return;
        }
    };
    for record in records {
        match record {
            Ok(r) => {
                let text = |b: Option<&[u8]>| {
                    b.map_or_else(|| "null".to_owned(), |b| String::from_utf8_lossy(b).into_owned())
                };
                println!(
                    "  | offset: {} timestamp: {} key: {} value: {}",
                    r.offset,
                    r.timestamp,
                    text(r.key.as_deref()),
                    text(r.value.as_deref())
                );
            }
            Err(e) => {
                println!("  | record does not decode: {e}");
                return;
            }
        }
    }
}

/// A problem found by `verify`, already phrased for the user.
type Problem = String;

fn verify(data_dir: &Path) -> anyhow::Result<bool> {
    if !data_dir.is_dir() {
        bail!("{} is not a directory", data_dir.display());
    }
    let mut partitions: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot list {}", data_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    partitions.sort();
    let mut problems: Vec<Problem> = Vec::new();
    let (mut segments, mut batches) = (0usize, 0usize);
    for dir in &partitions {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut expected: Option<i64> = None;
        for file in files {
            segments += 1;
            let seg =
                file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let base: Option<i64> = seg.strip_suffix(".log").and_then(|s| s.parse().ok());
            let data = read(&file)?;
            let mut first = true;
            // The batches of a corrupt range are missing from the walk: the gap in offsets
            // right after one is part of that problem, not another.
            let mut after_corrupt = false;
            for item in walk(&data) {
                match item {
                    Item::Batch { position, batch } => {
                        batches += 1;
                        let at = batch.base_offset().get();
                        if first && base.is_some_and(|b| b > at) {
                            problems.push(format!(
                                "{name}/{seg}: first batch at offset {at} is below the file's base"
                            ));
                        }
                        if let Some(want) = expected.filter(|w| *w != at && !after_corrupt) {
                            problems.push(format!(
                                "{name}/{seg}: byte {position}: batch starts at offset {at}, \
                                 expected {want} (offsets not dense)"
                            ));
                        }
                        first = false;
                        after_corrupt = false;
                        expected = Some(batch.next_offset().get());
                    }
                    Item::Corrupt { start, end, reason } => {
                        let mut line = format!(
                            "{name}/{seg}: bytes {start}..{end} ({} bytes) corrupt: {reason}",
                            end - start
                        );
                        if let Some(next) = expected {
                            let _ = write!(line, "; records from offset {next} are affected");
                        }
                        problems.push(line);
                        after_corrupt = true;
                    }
                }
            }
        }
    }
    for p in &problems {
        println!("CORRUPT {p}");
    }
    println!(
        "verified {} partition(s), {segments} segment(s), {batches} batch(es): {} problem(s)",
        partitions.len(),
        problems.len()
    );
    Ok(problems.is_empty())
}
