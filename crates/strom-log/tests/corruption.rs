//! Corruption test: damage the files of a closed (or crashed) log in many ways, reopen, and
//! check that nothing panics, that records before the damage are intact, and that the log
//! either truncates at the damaged batch or refuses to serve it (`LogError::Corrupt`); never
//! does it serve bytes that differ from what was appended.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::pattern_batch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strom_format::{Batches, Offset, RecordBatch};
use strom_log::{Log, LogConfig, LogError};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 4_000, index_interval_bytes: 400, ..LogConfig::default() }
}

/// One batch as stored: where it is and its bytes.
#[derive(Debug, Clone)]
struct Stored {
    file: PathBuf,
    pos: u64,
    batch: RecordBatch,
}

/// Writes the same log every time (deterministic bytes) and returns its batches.
fn build(dir: &Path, clean: bool) -> Vec<Stored> {
    let log = Log::open(dir, config()).unwrap();
    for step in 0..90i64 {
        let first = log.log_end_offset().get();
        let count = 1 + (step % 4) as usize;
        log.append(pattern_batch(first, count, 30 + (step % 5) as usize * 20, |o| 5_000 + o * 3))
            .unwrap();
    }
    if clean {
        log.close().unwrap();
    } else {
        log.flush().unwrap();
        drop(log);
    }
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut stored = Vec::new();
    for file in logs {
        let mut walk = Batches::new(Bytes::from(fs::read(&file).unwrap()));
        loop {
            let pos = walk.position() as u64;
            match walk.next() {
                Some(batch) => {
                    stored.push(Stored { file: file.clone(), pos, batch: batch.unwrap() })
                }
                None => break,
            }
        }
        assert_eq!(walk.remaining(), 0);
    }
    assert!(stored.iter().map(|s| &s.file).collect::<std::collections::HashSet<_>>().len() > 4);
    stored
}

/// Equal except for `partitionLeaderEpoch` (bytes 12..16), which lies outside the CRC and which
/// Kafka's format does not protect.
fn same_batch(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.get(..12) == b.get(..12) && a.get(16..) == b.get(16..)
}

/// Opens the damaged log and checks every guarantee; `keep_below` is the offset below which
/// no record may be lost. Returns how many reads reported corruption.
fn verify(dir: &Path, model: &[Stored], keep_below: Offset) -> usize {
    let log = Log::open(dir, config()).expect("a damaged log still opens");
    let end = log.log_end_offset();
    let model_end = model.last().map_or(Offset::ZERO, |s| s.batch.next_offset());
    assert_eq!(log.log_start_offset(), Offset::ZERO);
    assert!(end >= keep_below, "lost records: end {end} < {keep_below}");
    assert!(end <= model_end);
    assert!(
        end == model_end || model.iter().any(|s| s.batch.base_offset() == end),
        "the log ends on a batch boundary"
    );
    let mut corrupt = 0;
    for (i, s) in model.iter().enumerate().filter(|(_, s)| s.batch.base_offset() < end) {
        for max_bytes in [1, 1 << 20] {
            match log.read(s.batch.base_offset(), max_bytes) {
                Ok(read) => {
                    let served: Vec<_> = Batches::new(read.records).map(Result::unwrap).collect();
                    assert!(!served.is_empty(), "an offset below the end reads something");
                    for (k, b) in served.iter().enumerate() {
                        let expected = &model[i + k].batch;
                        assert!(same_batch(b.as_bytes(), expected.as_bytes()), "served damage");
                    }
                }
                Err(LogError::Corrupt { .. }) => corrupt += 1,
                Err(e) => panic!("unexpected error reading {}: {e}", s.batch.base_offset()),
            }
        }
    }
    for ts in (4_990..5_000 + 3 * model_end.get() + 10).step_by(7) {
        match log.offset_for_timestamp(ts) {
            Ok(Some((o, t))) => {
                assert!(o < end && t >= ts, "ts {ts} -> ({o}, {t}), end {end}");
                assert_eq!(t, 5_000 + o.get() * 3, "the timestamp of the record found");
            }
            Ok(None) | Err(LogError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error for timestamp {ts}: {e}"),
        }
    }
    // The log keeps working: appends continue at the end, and a reopen changes nothing.
    let info = log.append(pattern_batch(end.get(), 2, 10, |o| o)).unwrap();
    assert_eq!(info.first_offset, end);
    log.close().unwrap();
    let log = Log::open(dir, config()).unwrap();
    assert_eq!(log.log_end_offset(), end.add(2));
    log.close().unwrap();
    corrupt
}

fn flip(file: &Path, pos: u64, mask: u8) {
    let mut data = fs::read(file).unwrap();
    let byte = data.get_mut(pos as usize).expect("position inside the file");
    *byte ^= mask;
    fs::write(file, data).unwrap();
}

fn set_len(file: &Path, len: u64) {
    fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
}

fn index_of(log_file: &Path, ext: &str) -> PathBuf {
    log_file.with_extension(ext)
}

/// Runs `damage` on fresh copies of the log (closed cleanly, and crashed after a flush).
/// `damage` returns the offset below which nothing may be lost.
fn scenario(name: &str, damage: impl Fn(&[Stored]) -> Offset) {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let model = build(dir.path(), clean);
        let keep_below = damage(&model);
        let corrupt = verify(dir.path(), &model, keep_below);
        eprintln!("{name} (clean: {clean}): {corrupt} corrupt reads");
    }
}

fn active(model: &[Stored]) -> Vec<&Stored> {
    let last = &model.last().unwrap().file;
    model.iter().filter(|s| &s.file == last).collect()
}

/// Header positions worth flipping: base offset, length, magic, CRC, attributes,
/// lastOffsetDelta, maxTimestamp, recordsCount.
const HEADER_BYTES: [u64; 8] = [0, 10, 16, 19, 22, 26, 40, 60];

#[test]
fn flipped_header_bytes_of_the_last_batch() {
    for at in HEADER_BYTES {
        scenario(&format!("last batch header byte {at}"), |model| {
            let last = model.last().unwrap();
            flip(&last.file, last.pos + at, 0x01);
            last.batch.base_offset()
        });
    }
}

#[test]
fn flipped_record_bytes_of_the_last_batch() {
    scenario("last batch body", |model| {
        let last = model.last().unwrap();
        flip(&last.file, last.pos + last.batch.size() as u64 - 3, 0x80);
        last.batch.base_offset()
    });
}

#[test]
fn flipped_bytes_of_a_middle_batch_of_the_active_segment() {
    for at in [HEADER_BYTES.to_vec(), vec![61, 70]].concat() {
        scenario(&format!("active middle batch byte {at}"), |model| {
            let batches = active(model);
            let middle = batches[batches.len() / 2];
            flip(&middle.file, middle.pos + at, 0x10);
            middle.batch.base_offset()
        });
    }
}

#[test]
fn flipped_bytes_of_an_old_segment() {
    for at in [9, 19, 64] {
        scenario(&format!("old segment byte {at}"), |model| {
            let victim = &model[model.len() / 4];
            flip(&victim.file, victim.pos + at, 0x04);
            victim.batch.base_offset()
        });
    }
}

#[test]
fn damaged_index_files_lose_nothing() {
    for (ext, which) in [("index", 0usize), ("index", 1), ("timeindex", 0), ("timeindex", 1)] {
        for at in [0u64, 3, 5, 9] {
            scenario(&format!("{ext} of segment {which} byte {at}"), |model| {
                let files: Vec<&PathBuf> = {
                    let mut f: Vec<_> = model.iter().map(|s| &s.file).collect();
                    f.dedup();
                    f
                };
                // `which` 0: the first segment; 1: the active one.
                let file = if which == 0 { files[0] } else { files[files.len() - 1] };
                let index = index_of(file, ext);
                let len = fs::metadata(&index).unwrap().len();
                if at < len {
                    flip(&index, at, 0x40);
                }
                model.last().unwrap().batch.next_offset()
            });
        }
    }
    scenario("index files truncated and emptied", |model| {
        let first = &model[0].file;
        let last = &model.last().unwrap().file;
        set_len(&index_of(first, "index"), 5);
        set_len(&index_of(first, "timeindex"), 0);
        set_len(&index_of(last, "index"), 0);
        fs::write(index_of(last, "timeindex"), [0xffu8; 48]).unwrap();
        model.last().unwrap().batch.next_offset()
    });
}

#[test]
fn a_log_cut_in_the_middle_of_a_batch_is_truncated_there() {
    scenario("active segment cut in the last batch", |model| {
        let last = model.last().unwrap();
        set_len(&last.file, last.pos + last.batch.size() as u64 / 2);
        last.batch.base_offset()
    });
    scenario("active segment cut in a middle batch", |model| {
        let batches = active(model);
        let middle = batches[batches.len() / 2];
        set_len(&middle.file, middle.pos + 30);
        middle.batch.base_offset()
    });
    scenario("old segment cut in a batch", |model| {
        let victim = &model[model.len() / 3];
        set_len(&victim.file, victim.pos + 70);
        victim.batch.base_offset()
    });
    scenario("old segment emptied", |model| {
        let victim = &model[model.len() / 3];
        set_len(&victim.file, 0);
        model.iter().find(|s| s.file == victim.file).unwrap().batch.base_offset()
    });
}

#[test]
fn garbage_after_the_last_batch_is_dropped() {
    let tails: [Vec<u8>; 4] = [
        vec![0xab; 100],
        vec![0; 4096],
        vec![1, 2, 3],
        // A plausible header announcing a huge batch.
        {
            let mut h = vec![0u8; 61];
            h[8..12].copy_from_slice(&0x7fff_0000i32.to_be_bytes());
            h[16] = 2;
            h
        },
    ];
    for (i, tail) in tails.iter().enumerate() {
        scenario(&format!("garbage tail {i}"), |model| {
            let last = model.last().unwrap();
            let mut data = fs::read(&last.file).unwrap();
            data.extend_from_slice(tail);
            fs::write(&last.file, data).unwrap();
            last.batch.next_offset()
        });
    }
}

#[test]
fn random_damage_never_serves_corrupt_data() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let model = build(dir.path(), seed % 2 == 0);
        let mut files: Vec<PathBuf> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.retain(|p| {
            p.extension().is_some_and(|e| e == "log" || e == "index" || e == "timeindex")
        });
        files.sort();
        for _ in 0..rng.random_range(1..4) {
            let file = &files[rng.random_range(0..files.len())];
            let len = fs::metadata(file).unwrap().len();
            match rng.random_range(0..4) {
                0 | 1 if len > 0 => {
                    flip(file, rng.random_range(0..len), 1 << rng.random_range(0..8))
                }
                2 if len > 0 => set_len(file, rng.random_range(0..len)),
                _ => {
                    let garbage: Vec<u8> =
                        (0..rng.random_range(1..200)).map(|_| rng.random()).collect();
                    let mut data = fs::read(file).unwrap();
                    data.extend_from_slice(&garbage);
                    fs::write(file, data).unwrap();
                }
            }
        }
        eprintln!("seed {seed}");
        verify(dir.path(), &model, Offset::ZERO);
    }
}

#[test]
fn random_files_in_place_of_a_log_never_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        for base in [0i64, 17, 400] {
            let name = format!("{base:020}");
            for ext in ["log", "index", "timeindex"] {
                let len = [0usize, 3, 61, 500][rng.random_range(0..4)];
                let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                fs::write(dir.path().join(format!("{name}.{ext}")), data).unwrap();
            }
        }
        if round % 2 == 0 {
            fs::write(dir.path().join(".clean-shutdown"), b"").unwrap();
            fs::write(dir.path().join("recovery-point"), b"strom-recovery-point v1 99999\n")
                .unwrap();
        }
        let log = Log::open(dir.path(), config()).unwrap();
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        for o in start.get()..=end.get() {
            match log.read(Offset::new(o), 1 << 20) {
                Ok(read) => {
                    for b in Batches::new(read.records) {
                        b.unwrap().validate_crc().unwrap();
                    }
                }
                Err(LogError::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let _ = log.offset_for_timestamp(0);
        let info = log.append(pattern_batch(end.get(), 1, 5, |o| o)).unwrap();
        assert_eq!(info.first_offset, end);
    }
}
