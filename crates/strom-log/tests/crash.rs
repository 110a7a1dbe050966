//! Crash test: a child process (this test binary, re-executed) appends and flushes in a loop
//! until the parent SIGKILLs it at a random moment; the parent reopens the log and checks that
//! every flushed record survived intact, offsets are dense, every batch is CRC-valid, and
//! appends continue at the log end. Many rounds on the same directory.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_pattern, pattern_batch, read_all};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strom_log::{FlushPolicy, Log, LogConfig};

const WRITER_DIR: &str = "STROM_LOG_CRASH_WRITER_DIR";
const WRITER_SIDE_FILE: &str = "STROM_LOG_CRASH_SIDE_FILE";
const WRITER_SEED: &str = "STROM_LOG_CRASH_SEED";
const TEST_NAME: &str = "sigkill_during_appends_keeps_every_flushed_record";
const ROUNDS: u64 = 30;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        flush: FlushPolicy::EveryMessages(97),
        ..LogConfig::default()
    }
}

fn timestamp(offset: i64) -> i64 {
    1_700_000_000_000 + offset
}

/// Appends one pattern batch at the log end; its shape depends only on `step`.
fn append_step(log: &Log, step: u64) {
    let first = log.log_end_offset().get();
    let count = 1 + (step % 9) as usize;
    let len = 20 + (step % 17) as usize * 25;
    let info = log.append(pattern_batch(first, count, len, timestamp)).expect("append");
    assert_eq!(info.first_offset.get(), first);
}

/// Records `offset` in the side file atomically and durably.
fn report_flushed(side: &Path, offset: i64) {
    let tmp = side.with_extension("tmp");
    let mut file = fs::File::create(&tmp).expect("create side file");
    file.write_all(offset.to_string().as_bytes()).expect("write side file");
    file.sync_all().expect("fsync side file");
    fs::rename(&tmp, side).expect("rename side file");
}

fn read_reported(side: &Path) -> i64 {
    fs::read_to_string(side).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// The child: append, flush now and then, report; until killed.
fn run_writer(dir: PathBuf, side: PathBuf, seed: u64) -> ! {
    let log = Log::open(&dir, config()).expect("writer open");
    let mut step = seed * 1_000_003;
    loop {
        for _ in 0..5 {
            append_step(&log, step);
            step += 1;
        }
        if step.is_multiple_of(3) {
            log.flush().expect("flush");
            report_flushed(&side, log.flushed_offset().get());
        }
    }
}

/// Simulates power loss after the kill: the newest segment loses a random part of the bytes
/// after the last flushed record, possibly cutting a batch in two.
fn lose_unflushed_tail(dir: &Path, flushed: i64, rng: &mut StdRng) {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let Some(newest) = logs.last() else { return };
    let data = bytes::Bytes::from(fs::read(newest).unwrap());
    let mut walk = strom_format::Batches::new(data.clone());
    let mut keep = data.len();
    loop {
        let pos = walk.position();
        match walk.next() {
            Some(Ok(b)) if b.base_offset().get() >= flushed => {
                keep = pos;
                break;
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let keep = keep.min(data.len());
    let cut = rng.random_range(keep..=data.len());
    fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(cut as u64).unwrap();
}

#[test]
fn sigkill_during_appends_keeps_every_flushed_record() {
    if let (Ok(dir), Ok(side), Ok(seed)) =
        (std::env::var(WRITER_DIR), std::env::var(WRITER_SIDE_FILE), std::env::var(WRITER_SEED))
    {
        run_writer(dir.into(), side.into(), seed.parse().unwrap_or(0));
    }

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("log");
    let side = root.path().join("flushed");
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut max_reported = 0;
    for round in 0..ROUNDS {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(WRITER_DIR, &dir)
            .env(WRITER_SIDE_FILE, &side)
            .env(WRITER_SEED, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(5..400)));
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's,
        // which is not reaped yet, so it cannot name another process.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill failed");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the writer only ends by being killed");

        let reported = read_reported(&side);
        assert!(reported >= max_reported, "reported flushed offsets only grow");
        max_reported = reported;

        if round % 3 == 1 {
            lose_unflushed_tail(&dir, reported, &mut rng);
        }

        let log = Log::open(&dir, config()).unwrap();
        let end = log.log_end_offset().get();
        assert_eq!(log.log_start_offset().get(), 0);
        assert!(end >= reported, "round {round}: end {end} below flushed offset {reported}");
        assert_eq!(log.flushed_offset().get(), end, "recovery leaves everything durable");
        let batches = read_all(&log, 256 * 1024).unwrap();
        assert_pattern(&batches);
        assert_eq!(batches.iter().map(|b| i64::from(b.records_count())).sum::<i64>(), end);

        append_step(&log, round);
        assert!(log.log_end_offset().get() > end);
        if round % 2 == 0 {
            log.close().unwrap();
        } else {
            drop(log); // the next writer recovers from a crash of the verifier too
        }
        eprintln!("round {round}: end {end}, flushed {reported}, {:?}", started.elapsed());
    }
    assert!(max_reported > 0, "the writers flushed something");
}
