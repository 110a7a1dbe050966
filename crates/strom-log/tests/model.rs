//! Property test: random sequences of appends, truncations, flushes and reopens (clean and
//! crashed) against a model (the list of batches the log should hold); every read must equal
//! the model, and the leader-epoch cache must list where the batches' epochs change.

// Tests may unwrap: a panic is a failed assertion (helpers outside #[test] included).
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::pattern_batch;
use proptest::prelude::*;
use strom_format::{Batches, LeaderEpoch, Offset, set_base_offset, set_partition_leader_epoch};
use strom_log::{EpochEntry, Log, LogConfig, LogError};

#[derive(Debug, Clone)]
enum Op {
    /// One append of several batches, with these record counts.
    Append(Vec<usize>),
    /// One batch, stamped with an epoch.
    AppendWithEpoch(usize, i32),
    /// Truncate at this fraction (per mille) of the log end offset.
    Truncate(u16),
    Flush,
    Reopen {
        clean: bool,
    },
    /// Read at this fraction (per mille) of the end, with this `max_bytes`.
    Read(u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(1usize..6, 1..4).prop_map(Op::Append),
        1 => (1usize..4, 0i32..100).prop_map(|(n, e)| Op::AppendWithEpoch(n, e)),
        2 => (0u16..=1000).prop_map(Op::Truncate),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        3 => (0u16..=1000, 1u16..2000).prop_map(|(at, max)| Op::Read(at, max)),
    ]
}

/// The batches the log should hold, as stored.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<Bytes>,
}

impl Model {
    fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| last_offset(b) + 1)
    }

    /// What a leader append of `raw` (one batch) stores.
    fn push(&mut self, raw: &Bytes, epoch: Option<i32>) {
        let mut v = raw.to_vec();
        set_base_offset(&mut v, Offset::new(self.end()));
        if let Some(e) = epoch {
            set_partition_leader_epoch(&mut v, LeaderEpoch::new(e));
        }
        self.batches.push(v.into());
    }

    fn truncate(&mut self, offset: i64) {
        self.batches.retain(|b| last_offset(b) < offset);
    }

    /// Where each newer epoch (>= 0) starts among the batches.
    fn epochs(&self) -> Vec<EpochEntry> {
        let mut out: Vec<EpochEntry> = Vec::new();
        for raw in &self.batches {
            let b = Batches::new(raw.clone()).next().unwrap().unwrap();
            let epoch = b.partition_leader_epoch();
            if epoch.get() >= 0 && out.last().is_none_or(|l| l.epoch < epoch) {
                out.push(EpochEntry { epoch, start_offset: b.base_offset() });
            }
        }
        out
    }

    /// Index of the batch holding `offset`.
    fn holding(&self, offset: i64) -> Option<usize> {
        self.batches.iter().position(|b| last_offset(b) >= offset)
    }
}

fn last_offset(batch: &Bytes) -> i64 {
    let b = Batches::new(batch.clone()).next().unwrap().unwrap();
    b.last_offset().get()
}

fn check_everything(log: &Log, model: &Model) {
    assert_eq!(log.log_end_offset().get(), model.end());
    assert_eq!(log.log_start_offset().get(), 0);
    let mut got = Vec::new();
    let mut next = 0;
    while next < model.end() {
        let read = log.read(Offset::new(next), 1 << 20).unwrap();
        for b in Batches::new(read.records) {
            let b = b.unwrap();
            next = b.next_offset().get();
            got.push(b.into_bytes());
        }
    }
    assert_eq!(got, model.batches);
    assert_eq!(log.epoch_entries(), model.epochs());
}

fn run(ops: Vec<Op>, config: LogConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Some(Log::open(dir.path(), config.clone()).unwrap());
    let mut model = Model::default();
    for op in ops {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append(counts) => {
                let mut all = Vec::new();
                let mut next = model.end();
                for n in counts {
                    let raw = pattern_batch(next, n, 37, |o| o * 11 % 97);
                    all.extend_from_slice(&raw);
                    model.push(&raw, None);
                    next += n as i64;
                }
                let info = l.append(all.into()).unwrap();
                assert_eq!(info.last_offset.get(), model.end() - 1);
            }
            Op::AppendWithEpoch(n, epoch) => {
                let raw = pattern_batch(model.end(), n, 11, |o| o);
                let result = l.append_with_leader_epoch(raw.clone(), LeaderEpoch::new(epoch));
                match model.epochs().last() {
                    Some(latest) if latest.epoch.get() > epoch => {
                        assert!(matches!(result, Err(LogError::EpochRegression { .. })));
                    }
                    _ => {
                        result.unwrap();
                        model.push(&raw, Some(epoch));
                    }
                }
            }
            Op::Truncate(per_mille) => {
                let offset = model.end() * i64::from(per_mille) / 1000;
                l.truncate_to(Offset::new(offset)).unwrap();
                model.truncate(offset);
            }
            Op::Flush => {
                l.flush().unwrap();
                assert_eq!(l.flushed_offset().get(), model.end());
            }
            Op::Reopen { clean } => {
                let old = log.take().unwrap();
                if clean {
                    old.close().unwrap();
                } else {
                    drop(old);
                }
                log = Some(Log::open(dir.path(), config.clone()).unwrap());
            }
            Op::Read(per_mille, max) => {
                let offset = model.end() * i64::from(per_mille) / 1000;
                let read = l.read(Offset::new(offset), usize::from(max)).unwrap();
                let got: Vec<Bytes> =
                    Batches::new(read.records).map(|b| b.unwrap().into_bytes()).collect();
                match model.holding(offset) {
                    None => assert!(got.is_empty()),
                    Some(i) => {
                        assert!(!got.is_empty(), "at least one batch");
                        assert_eq!(&got[..], &model.batches[i..i + got.len()]);
                        let total: usize = got.iter().map(Bytes::len).sum();
                        assert!(got.len() == 1 || total <= usize::from(max), "max_bytes");
                        if got.len() + i < model.batches.len() && total < usize::from(max) {
                            let next = model.batches[i + got.len()].len();
                            // Stopped early: the next batch did not fit, or is in another segment.
                            assert!(
                                total + next > usize::from(max) || config.segment_bytes < 4000,
                                "total {total} next {next} max {max} got {} sizes {:?}",
                                got.len(),
                                model.batches.iter().map(Bytes::len).collect::<Vec<_>>()
                            );
                        }
                    }
                }
            }
        }
        check_everything(log.as_ref().unwrap(), &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..60),
        segment_bytes in prop_oneof![100u64..1500, Just(1u64 << 20)],
        index_interval_bytes in 0u32..600,
    ) {
        let config = LogConfig { segment_bytes, index_interval_bytes, ..LogConfig::default() };
        run(ops, config);
    }
}
