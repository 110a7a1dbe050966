//! A disk that refuses writes, simulated with a file-size limit (RLIMIT_FSIZE: a write past it
//! fails with EFBIG after writing what fits, as a full disk does with ENOSPC). A failed append
//! must leave nothing behind (the log is cut back to its last good end, partial bytes
//! included), reads serve only what was acknowledged, and once writes fit again the log takes
//! them without a reopen, offsets continuing densely.
//!
//! Alone in its test binary: the limit applies to the whole process.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_pattern, pattern_batch, read_all};
use strom_log::{FlushPolicy, Log, LogConfig};

fn set_file_size_limit(bytes: libc::rlim_t) {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain libc calls with valid arguments; SIGXFSZ would otherwise kill the test.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn failed_appends_leave_nothing_and_the_log_recovers_without_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for flush in [FlushPolicy::Manual, FlushPolicy::EveryAppend] {
        let path = dir.path().join(format!("{flush:?}"));
        let config = LogConfig { segment_bytes: 1 << 20, flush, ..LogConfig::default() };
        let log = Log::open(&path, config.clone()).unwrap();
        set_file_size_limit(48 * 1024);
        let mut acked = 0i64;
        let mut failures = 0;
        // Appends until the limit refuses a few, each a batch of 5 records of ~1 KiB.
        for _ in 0..200 {
            let first = log.log_end_offset().get();
            match log.append(pattern_batch(first, 5, 1000, |o| 1_000 + o)) {
                Ok(info) => {
                    assert_eq!(info.first_offset.get(), acked, "offsets stay dense");
                    acked = info.last_offset.get() + 1;
                }
                Err(e) => {
                    failures += 1;
                    assert_eq!(log.log_end_offset().get(), acked, "failed append left records");
                    assert_eq!(log.storage_error(), None, "cut back at once: {e}");
                    if failures == 3 {
                        break;
                    }
                }
            }
        }
        assert_eq!(failures, 3, "the limit never refused a write");
        // Nothing half-written: the segment file holds exactly the acknowledged batches.
        let batches = read_all(&log, 1 << 20).unwrap();
        assert_eq!(batches.last().unwrap().next_offset().get(), acked);
        assert_pattern(&batches);
        let on_disk: u64 = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let stored: usize = batches.iter().map(|b| b.size()).sum();
        assert_eq!(on_disk, stored as u64, "bytes of failed appends left in the segment");

        // Space again: the same log takes writes, right after the last good end.
        set_file_size_limit(libc::RLIM_INFINITY);
        let info = log.append(pattern_batch(acked, 5, 1000, |o| 1_000 + o)).unwrap();
        assert_eq!(info.first_offset.get(), acked);
        log.close().unwrap();
        let log = Log::open(&path, config).unwrap();
        assert_eq!(log.log_end_offset().get(), acked + 5);
        assert_pattern(&read_all(&log, 1 << 20).unwrap());
        println!("{flush:?}: {acked} records acknowledged, {failures} appends refused and undone");
    }
}
