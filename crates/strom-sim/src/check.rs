//! The invariants, checked continuously: every applied entry and every leadership change is
//! reported here as it happens, and a violation is recorded at once.
//!
//! - At most one leader per term (over the whole run, across crashes).
//! - No committed entry is lost or changed: the first entry ever applied at an index is the
//!   committed one; every later application at that index, by any node, must be identical.
//! - Every node applies a contiguous sequence (after a snapshot, from the snapshot's index),
//!   so every node's applied sequence is a prefix of the one committed sequence.
//! - Every acknowledged proposal is in the committed log, at the index it was acknowledged at.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use strom_quorum::{AppliedEvent, ApplyObserver, MetadataRecord, NodeId};
use tokio::time::Instant;

#[derive(Debug)]
struct State {
    start: Instant,
    verbose: bool,
    leaders: BTreeMap<u64, NodeId>,
    committed: BTreeMap<u64, (u64, Option<MetadataRecord>)>,
    /// Last applied index per node instance (node, epoch).
    cursors: BTreeMap<(NodeId, u64), u64>,
    acked: Vec<(u64, u64, MetadataRecord)>,
    violations: Vec<String>,
    trace: Vec<String>,
}

/// The run's invariant checker and event trace.
#[derive(Debug, Clone)]
pub struct Checker {
    state: Arc<Mutex<State>>,
}

impl State {
    fn log(&mut self, line: String) {
        let line = format!("{:>8}ms {line}", self.start.elapsed().as_millis());
        if self.verbose {
            println!("{line}");
        }
        self.trace.push(line);
    }

    fn violate(&mut self, what: String) {
        self.log(format!("VIOLATION {what}"));
        self.violations.push(what);
    }
}

impl Checker {
    /// A checker whose trace times are relative to now; `verbose` prints the trace live.
    pub fn new(verbose: bool) -> Checker {
        Checker {
            state: Arc::new(Mutex::new(State {
                start: Instant::now(),
                verbose,
                leaders: BTreeMap::new(),
                committed: BTreeMap::new(),
                cursors: BTreeMap::new(),
                acked: Vec::new(),
                violations: Vec::new(),
                trace: Vec::new(),
            })),
        }
    }

    /// Adds a line to the trace.
    pub fn log(&self, line: String) {
        self.state.lock().log(line);
    }

    /// The observer for instance `epoch` of node `id`.
    pub fn observer(&self, id: NodeId, epoch: u64) -> ApplyObserver {
        let this = self.clone();
        ApplyObserver(Arc::new(move |ev| this.applied(id, epoch, ev)))
    }

    fn applied(&self, id: NodeId, epoch: u64, ev: &AppliedEvent) {
        let mut st = self.state.lock();
        match ev {
            AppliedEvent::Snapshot { last_log_id } => match last_log_id {
                Some(l) => {
                    st.cursors.insert((id, epoch), l.index);
                    if let Some((term, _)) = st.committed.get(&l.index)
                        && *term != l.leader_id.term
                    {
                        let t = *term;
                        st.violate(format!(
                                "node {id} installed a snapshot up to {} in term {}, but index {} was committed in term {t}",
                                l.index, l.leader_id.term, l.index
                            ));
                    }
                }
                None => {
                    st.cursors.remove(&(id, epoch));
                }
            },
            AppliedEvent::Entry { log_id, record } => {
                let (index, term) = (log_id.index, log_id.leader_id.term);
                let expected = st.cursors.get(&(id, epoch)).map_or(0, |c| c + 1);
                if index != expected {
                    st.violate(format!("node {id} applied index {index}, expected {expected}"));
                }
                st.cursors.insert((id, epoch), index);
                match st.committed.get(&index) {
                    Some((t, r)) if *t != term || r != record => {
                        let was = format!("term {t} {r:?}");
                        st.violate(format!(
                            "committed entry {index} changed: was {was}, node {id} applied term {term} {record:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        st.committed.insert(index, (term, record.clone()));
                        let what = record.as_ref().map_or("-".to_string(), short);
                        st.log(format!(
                            "commit {index} term {term} {what} (first applied by {id})"
                        ));
                    }
                }
            }
        }
    }

    /// Node `id` says it leads `term`.
    pub fn leader(&self, id: NodeId, term: u64) {
        let mut st = self.state.lock();
        match st.leaders.get(&term) {
            Some(other) if *other != id => {
                let other = *other;
                st.violate(format!("two leaders in term {term}: {other} and {id}"));
            }
            Some(_) => {}
            None => {
                st.leaders.insert(term, id);
                st.log(format!("leader {id} term {term}"));
            }
        }
    }

    /// A proposal was acknowledged as committed at (`index`, `term`).
    pub fn acked(&self, index: u64, term: u64, record: MetadataRecord) {
        let mut st = self.state.lock();
        match st.committed.get(&index) {
            Some((t, Some(r))) if *t == term && *r == record => {}
            other => {
                let other = format!("{other:?}");
                st.violate(format!("acknowledged proposal at {index} term {term} is not the committed entry ({other})"));
            }
        }
        st.log(format!("ack {index} term {term} {}", short(&record)));
        st.acked.push((index, term, record));
    }

    /// Re-checks every acknowledged proposal against the committed log.
    pub fn check_acked(&self) {
        let mut st = self.state.lock();
        let missing: Vec<u64> = st
            .acked
            .iter()
            .filter(|(i, t, r)| st.committed.get(i) != Some(&(*t, Some(r.clone()))))
            .map(|(i, _, _)| *i)
            .collect();
        for i in missing {
            st.violate(format!("acknowledged proposal at {i} missing from the committed log"));
        }
    }

    /// Violations so far.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().violations.clone()
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<String> {
        self.state.lock().trace.clone()
    }

    /// (acknowledged proposals, committed entries seen, highest term with a leader).
    pub fn counts(&self) -> (usize, usize, u64) {
        let st = self.state.lock();
        (st.acked.len(), st.committed.len(), st.leaders.keys().next_back().copied().unwrap_or(0))
    }
}

/// A short description of a record for the trace.
pub fn short(r: &MetadataRecord) -> String {
    match r {
        MetadataRecord::RegisterBroker(b) => {
            format!("register-broker {} inc {}", b.node_id, b.incarnation)
        }
        MetadataRecord::CreateTopic(t) => format!("create-topic {}", t.name),
        other => format!("{other:?}"),
    }
}
