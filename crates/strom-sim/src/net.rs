//! The simulated network: an in-memory [`Transport`] between node instances, with a seeded RNG
//! that delays (and so reorders), drops and duplicates messages, and cuts the cluster in two.
//! Messages from or to a crashed instance (an older epoch of a node) are never delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strom_quorum::{NodeId, Quorum, RpcKind, Transport, TransportError};

/// Message statistics of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// RPCs handed to a live target.
    pub delivered: u64,
    /// Requests or replies dropped (faults or partitions).
    pub dropped: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
}

#[derive(Debug)]
struct NetState {
    rng: StdRng,
    /// The live instance of each node: (epoch, handle once started).
    nodes: BTreeMap<NodeId, (u64, Option<Quorum>)>,
    /// When partitioned: one side; every other node is on the other side.
    side: Option<BTreeSet<NodeId>>,
    faults: bool,
    stats: NetStats,
}

impl NetState {
    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.side.as_ref().is_some_and(|s| s.contains(&a) != s.contains(&b))
    }

    fn alive(&self, id: NodeId, epoch: u64) -> bool {
        self.nodes.get(&id).is_some_and(|(e, _)| *e == epoch)
    }
}

/// The simulated network of one run.
#[derive(Debug, Clone)]
pub struct Net {
    state: Arc<Mutex<NetState>>,
}

impl Net {
    /// A network drawing its faults from `seed`.
    pub fn new(seed: u64) -> Net {
        Net {
            state: Arc::new(Mutex::new(NetState {
                rng: StdRng::seed_from_u64(seed),
                nodes: BTreeMap::new(),
                side: None,
                faults: true,
                stats: NetStats::default(),
            })),
        }
    }

    /// The transport of instance `epoch` of node `id`.
    pub fn transport(&self, id: NodeId, epoch: u64) -> SimTransport {
        SimTransport { state: Arc::clone(&self.state), from: id, epoch }
    }

    /// Instance `epoch` of `id` is starting: it may send (its first election starts inside
    /// `Quorum::start`), but cannot receive yet.
    pub fn starting(&self, id: NodeId, epoch: u64) {
        self.state.lock().nodes.insert(id, (epoch, None));
    }

    /// Routes messages for `id` to this instance from now on.
    pub fn register(&self, id: NodeId, epoch: u64, node: Quorum) {
        self.state.lock().nodes.insert(id, (epoch, Some(node)));
    }

    /// Stops routing to and from `id` (it crashed).
    pub fn unregister(&self, id: NodeId) {
        self.state.lock().nodes.remove(&id);
    }

    /// The live instance of `id`.
    pub fn node(&self, id: NodeId) -> Option<Quorum> {
        self.state.lock().nodes.get(&id).and_then(|(_, q)| q.clone())
    }

    /// Cuts the network between `side` and everyone else.
    pub fn partition(&self, side: BTreeSet<NodeId>) {
        self.state.lock().side = Some(side);
    }

    /// Removes the partition.
    pub fn heal(&self) {
        self.state.lock().side = None;
    }

    /// Turns random drops, duplicates and long delays on or off.
    pub fn set_faults(&self, on: bool) {
        self.state.lock().faults = on;
    }

    /// Message statistics so far.
    pub fn stats(&self) -> NetStats {
        self.state.lock().stats
    }
}

/// One node instance's end of the network.
#[derive(Debug)]
pub struct SimTransport {
    state: Arc<Mutex<NetState>>,
    from: NodeId,
    epoch: u64,
}

/// What the RNG decided for one message.
struct Plan {
    drop_request: bool,
    silent: bool,
    delay: Duration,
    duplicate: Option<Duration>,
    reply_delay: Duration,
    drop_reply: bool,
}

fn unreachable(why: &str) -> TransportError {
    TransportError(why.to_string())
}

impl Transport for SimTransport {
    fn call(
        &self,
        target: NodeId,
        _address: &str,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let state = Arc::clone(&self.state);
        let (from, epoch) = (self.from, self.epoch);
        let plan = {
            let mut st = self.state.lock();
            if !st.alive(from, epoch) {
                return Box::pin(async { Err(unreachable("sender crashed")) });
            }
            let faults = st.faults;
            let cut = st.cut(from, target);
            let rng = &mut st.rng;
            Plan {
                drop_request: cut || (faults && rng.random_bool(0.05)),
                silent: rng.random_bool(0.5),
                delay: Duration::from_millis(if faults && rng.random_bool(0.1) {
                    rng.random_range(50..400)
                } else {
                    rng.random_range(1..15)
                }),
                duplicate: (faults && rng.random_bool(0.03))
                    .then(|| Duration::from_millis(rng.random_range(1..200))),
                reply_delay: Duration::from_millis(rng.random_range(1..15)),
                drop_reply: faults && rng.random_bool(0.03),
            }
        };
        Box::pin(async move {
            tokio::time::sleep(plan.delay).await;
            if plan.drop_request {
                state.lock().stats.dropped += 1;
                if plan.silent {
                    // Lost without a trace: the caller's RPC timeout fires.
                    futures::future::pending::<()>().await;
                }
                return Err(unreachable("request lost"));
            }
            let node = {
                let mut st = state.lock();
                if st.cut(from, target) || !st.alive(from, epoch) {
                    st.stats.dropped += 1;
                    return Err(unreachable("request lost"));
                }
                let node = st.nodes.get(&target).and_then(|(_, q)| q.clone());
                if node.is_some() {
                    st.stats.delivered += 1;
                    if plan.duplicate.is_some() {
                        st.stats.duplicated += 1;
                    }
                }
                node
            };
            let node = node.ok_or_else(|| unreachable("target down"))?;
            if let Some(after) = plan.duplicate {
                let (node, payload, state) = (node.clone(), payload.clone(), Arc::clone(&state));
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if !state.lock().cut(from, target) {
                        let _ = node.handle_rpc(kind, payload).await;
                    }
                });
            }
            let reply =
                node.handle_rpc(kind, payload).await.map_err(|e| TransportError(e.to_string()))?;
            tokio::time::sleep(plan.reply_delay).await;
            let mut st = state.lock();
            if plan.drop_reply || st.cut(from, target) || !st.alive(from, epoch) {
                st.stats.dropped += 1;
                return Err(unreachable("reply lost"));
            }
            Ok(reply)
        })
    }
}
