//! The replication invariants, as functions over the whole cluster checked after every step
//! (and on the events nodes report as they happen):
//!
//! 1. No acknowledged record is lost: every (offset, payload) the producer was told is written
//!    is at that offset in the log of the current leader (the image's leader, once it acts as
//!    leader of the image's epoch); no two different records are acknowledged at one offset.
//! 2. Replicas agree up to the high watermark: every node's log below its own high watermark
//!    is the one committed sequence (the first record seen below any high watermark at an
//!    offset is the committed one), and a high watermark never passes its log end; every
//!    member of the ISR the current leader knows holds the leader's log below the leader's
//!    high watermark.
//! 3. A consumer never sees a record that later disappears: whatever was exposed (below some
//!    high watermark) stays at its offset in every later leader's log, and no follower
//!    truncates below its own high watermark.
//! 4. Offsets are dense (the model log is indexed by offset) and epochs never decrease along
//!    a log.
//! 5. At most one node acknowledges in any leader epoch, and the epochs a node leads grow.

use std::collections::BTreeMap;

use strom_format::Offset;
use strom_quorum::{MetadataState, NodeId};

use super::node::{Event, Node, Record, TOPIC};

/// The invariants' memory of the run.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Records exposed below some high watermark, offset = index.
    committed: Vec<Record>,
    /// Acknowledged to the producer, in the order it heard: (offset, payload).
    acked: Vec<(Offset, u64)>,
    acked_at: BTreeMap<Offset, u64>,
    /// Which node acknowledged in each leader epoch.
    ack_epochs: BTreeMap<i32, NodeId>,
    /// The newest epoch each node led.
    led: BTreeMap<NodeId, i32>,
    /// The leader last checked and how far: (node, epoch, acked checked, committed checked).
    cursor: Option<(NodeId, i32, usize, usize)>,
    /// What broke.
    pub violations: Vec<String>,
}

impl Invariants {
    /// Acknowledgements the producer received.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// Records exposed to consumers.
    pub fn committed(&self) -> usize {
        self.committed.len()
    }

    fn violate(&mut self, what: String) {
        self.violations.push(what);
    }

    /// An event a node reported.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Acked { node, epoch, .. } => {
                let first = *self.ack_epochs.entry(*epoch).or_insert(*node);
                if first != *node {
                    self.violate(format!(
                        "n{node} and n{first} both acknowledged in leader epoch {epoch}"
                    ));
                }
            }
            Event::Leads { node, epoch } => {
                if let Some(prev) = self.led.insert(*node, *epoch)
                    && prev >= *epoch
                {
                    self.violate(format!("n{node} leads epoch {epoch} after epoch {prev}"));
                }
                // A new leadership starts its own scan.
                self.cursor = None;
            }
            Event::Violation(v) => self.violate(v.clone()),
            Event::Trace(_) => {}
        }
    }

    /// The producer heard that `payload` is at `offset`.
    pub fn on_producer_ack(&mut self, offset: Offset, payload: u64) {
        if let Some(prev) = self.acked_at.insert(offset, payload)
            && prev != payload
        {
            self.violate(format!(
                "offset {offset} acknowledged twice, for payload {prev} and {payload}"
            ));
        }
        self.acked.push((offset, payload));
    }

    /// The checks over the whole cluster, after a step.
    pub fn check(&mut self, nodes: &mut [Node], image: &MetadataState) {
        for node in nodes.iter_mut().filter(|n| n.up) {
            let end = node.log.end();
            if node.hw > end {
                self.violate(format!(
                    "n{}: high watermark {} past log end {end}",
                    node.id, node.hw
                ));
                continue;
            }
            let hw = usize::try_from(node.hw.get()).unwrap_or(0);
            for o in node.log.verified..hw {
                let r = node.log.records()[o];
                match self.committed.get(o) {
                    Some(c) if *c != r => {
                        let id = node.id;
                        self.violate(format!(
                            "n{id} has {r:?} at offset {o} below its high watermark {hw}; \
                             {c:?} was exposed there"
                        ));
                        break;
                    }
                    Some(_) => {}
                    None => self.committed.push(r),
                }
            }
            node.log.verified = node.log.verified.max(hw);
        }
        self.check_leader(nodes, image);
    }

    fn check_leader(&mut self, nodes: &[Node], image: &MetadataState) {
        let Some(p) = image.partition(TOPIC, 0) else { return };
        let Some(leader) = nodes.iter().find(|n| n.id == p.leader) else { return };
        if !leader.up || leader.leading_epoch() != Some(p.leader_epoch) {
            return;
        }
        let (mut acked_from, mut committed_from) = match self.cursor {
            Some((n, e, a, c)) if n == leader.id && e == p.leader_epoch => (a, c),
            _ => (0, 0),
        };
        let log = leader.log.records();
        let mut broken = Vec::new();
        for &(offset, payload) in &self.acked[acked_from..] {
            let at = usize::try_from(offset.get()).ok().and_then(|o| log.get(o));
            if at.map(|r| r.payload) != Some(payload) {
                broken.push(format!(
                    "acknowledged record lost: payload {payload} at offset {offset}; leader n{} \
                     (epoch {}) has {at:?}",
                    leader.id, p.leader_epoch
                ));
            }
        }
        acked_from = self.acked.len();
        for (o, c) in self.committed.iter().enumerate().skip(committed_from) {
            if log.get(o) != Some(c) {
                broken.push(format!(
                    "exposed record {c:?} at offset {o} is gone: leader n{} (epoch {}) has {:?}",
                    leader.id,
                    p.leader_epoch,
                    log.get(o)
                ));
                break;
            }
        }
        committed_from = self.committed.len();
        // (A high watermark past the log end is reported by `check`.)
        let hw = usize::try_from(leader.hw.get()).unwrap_or(0).min(log.len());
        for &m in leader.leader_isr().unwrap_or(&[]) {
            let Some(member) = nodes.iter().find(|n| n.id == m && n.id != leader.id && n.up) else {
                continue;
            };
            let theirs = member.log.records();
            // Below its own high watermark the member was checked against the committed
            // records already; the rest up to the leader's is compared here.
            let from = usize::try_from(member.hw.get()).unwrap_or(0).min(hw);
            if theirs.len() < hw || theirs[from..hw] != log[from..hw] {
                broken.push(format!(
                    "ISR member n{m} (end {}) does not hold leader n{}'s log below its high \
                     watermark {hw}",
                    member.log.end(),
                    leader.id
                ));
            }
        }
        self.cursor = Some((leader.id, p.leader_epoch, acked_from, committed_from));
        for b in broken {
            self.violate(b);
        }
    }
}
