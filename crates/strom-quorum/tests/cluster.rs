//! A real 3-voter quorum in one process: real directories (FsDisk), an in-memory transport,
//! real time (short timeouts). Leader election, commit on all, fail-over, restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use strom_quorum::{
    BrokerRegistration, MetadataImage, MetadataRecord, NodeId, Quorum, QuorumConfig, QuorumError,
    RpcKind, Transport, TransportError,
};
use tokio::sync::watch;

/// Routes RPCs to the live nodes; a node not in the map is down.
#[derive(Debug, Default)]
struct Net {
    nodes: Mutex<BTreeMap<NodeId, Quorum>>,
}

#[derive(Debug)]
struct NetTransport(Arc<Net>);

impl Transport for NetTransport {
    fn call(
        &self,
        target: NodeId,
        _address: &str,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let node = self.0.nodes.lock().get(&target).cloned();
        Box::pin(async move {
            let node = node.ok_or_else(|| TransportError(format!("node {target} is down")))?;
            node.handle_rpc(kind, payload).await.map_err(|e| TransportError(e.to_string()))
        })
    }
}

fn voters() -> BTreeMap<NodeId, String> {
    (1..=3).map(|id| (id, format!("node-{id}:9095"))).collect()
}

fn config(id: NodeId, dir: &std::path::Path) -> QuorumConfig {
    let mut c = QuorumConfig::new(
        id,
        dir.join(format!("n{id}/quorum")),
        voters(),
        format!("node-{id}:9095"),
    );
    c.election_timeout_ms = (150, 300);
    c.heartbeat_interval_ms = 50;
    c.snapshot_after_entries = 5; // exercise snapshots and purges
    c.logs_kept_after_snapshot = 2;
    c
}

async fn start(net: &Arc<Net>, id: NodeId, dir: &std::path::Path) -> Quorum {
    let q = Quorum::start(config(id, dir), None, Arc::new(NetTransport(net.clone())))
        .await
        .expect("start");
    net.nodes.lock().insert(id, q.clone());
    q
}

fn broker(id: NodeId) -> MetadataRecord {
    MetadataRecord::RegisterBroker(BrokerRegistration {
        node_id: id,
        address: format!("b{id}:9095"),
        kafka_address: None,
        incarnation: 1,
    })
}

/// The live nodes (the lock must not be held across an await: RPCs take it).
fn nodes(net: &Net) -> Vec<Quorum> {
    net.nodes.lock().values().cloned().collect()
}

/// Waits until some node among `ids` says it is the leader; returns it.
async fn leader(net: &Arc<Net>, ids: &[NodeId]) -> Quorum {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: Vec<Quorum> =
            ids.iter().filter_map(|id| net.nodes.lock().get(id).cloned()).collect();
        if let Some(q) = nodes.iter().find(|q| q.leader().borrow().is_self) {
            return q.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader among {ids:?} within 10 s");
        // Wake on any leadership change.
        let mut rxs: Vec<watch::Receiver<_>> = nodes.iter().map(|q| q.leader()).collect();
        let changed = futures::future::select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
        let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
    }
}

/// Proposes through whichever node leads, following leadership changes (Raft does not promise
/// a stable leader: a node that timed out just before the winner's first heartbeat may depose it).
async fn propose(
    net: &Arc<Net>,
    ids: &[NodeId],
    record: MetadataRecord,
) -> Result<(), strom_quorum::MetadataError> {
    for _ in 0..50 {
        let l = leader(net, ids).await;
        match l.propose(record.clone()).await {
            Ok(r) => return r,
            Err(QuorumError::NotLeader { .. }) => continue,
            Err(e) => panic!("propose: {e}"),
        }
    }
    panic!("no stable leader for 50 attempts");
}

async fn wait_image(q: &Quorum, want: &MetadataImage) {
    let mut rx = q.image();
    let r =
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|img| img.state == want.state))
            .await;
    assert!(r.is_ok(), "node {} did not converge", q.node_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_commit_fail_over_and_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Arc::new(Net::default());
    for id in 1..=3 {
        start(&net, id, dir.path()).await;
    }
    for b in 0..8 {
        assert_eq!(propose(&net, &[1, 2, 3], broker(100 + b)).await, Ok(()));
    }
    // A non-leader refuses and names the leader and its address.
    let mut named = None;
    for _ in 0..50 {
        let l = leader(&net, &[1, 2, 3]).await;
        let follower =
            nodes(&net).into_iter().find(|q| q.node_id() != l.node_id()).expect("a follower");
        match follower.propose(broker(1)).await {
            Err(QuorumError::NotLeader { leader: Some(found) }) => {
                named = Some(found);
                break;
            }
            Err(QuorumError::NotLeader { leader: None }) => {} // mid-election: ask again
            other => panic!("expected NotLeader, got {other:?}"),
        }
    }
    let (id, addr) = named.expect("a follower named the leader");
    assert_eq!(addr, format!("node-{id}:9095"));
    let first = leader(&net, &[1, 2, 3]).await;
    let image = first.image().borrow().clone();
    assert_eq!(image.state.brokers().len(), 8);
    for q in nodes(&net) {
        wait_image(&q, &image).await;
    }

    // Kill the leader: the other two elect a new one and proposals continue.
    let dead = first.node_id();
    net.nodes.lock().remove(&dead);
    first.shutdown().await.expect("shutdown");
    let killed_at = std::time::Instant::now();
    let rest: Vec<NodeId> = (1..=3).filter(|id| *id != dead).collect();
    let second = leader(&net, &rest).await;
    println!(
        "fail-over: new leader {} {:?} after the leader stopped (election timeout 150-300 ms)",
        second.node_id(),
        killed_at.elapsed()
    );
    assert_ne!(second.node_id(), dead);
    for b in 0..4 {
        assert_eq!(propose(&net, &rest, broker(200 + b)).await, Ok(()));
    }
    let image = leader(&net, &rest).await.image().borrow().clone();
    assert_eq!(image.state.brokers().len(), 12);

    // The dead node comes back from its directory and catches up.
    let back = start(&net, dead, dir.path()).await;
    wait_image(&back, &image).await;

    // Stop everything, start again: the same image.
    let all = nodes(&net);
    net.nodes.lock().clear();
    for q in all {
        q.shutdown().await.expect("shutdown");
    }
    for id in 1..=3 {
        start(&net, id, dir.path()).await;
    }
    let third = leader(&net, &[1, 2, 3]).await;
    wait_image(&third, &image).await;
    for q in nodes(&net) {
        wait_image(&q, &image).await;
    }

    // A restart under another identity is refused.
    let mut wrong = config(1, dir.path());
    wrong.dir = dir.path().join("n2/quorum");
    let err = Quorum::start(wrong, None, Arc::new(NetTransport(net.clone())))
        .await
        .expect_err("identity");
    assert!(matches!(err, QuorumError::Config(_)), "{err}");
    for q in nodes(&net) {
        q.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_only_node_joins_as_learner_and_follows_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Arc::new(Net::default());
    for id in 1..=3 {
        start(&net, id, dir.path()).await;
    }
    assert_eq!(propose(&net, &[1, 2, 3], broker(1)).await, Ok(()));
    // Node 4 is not a voter: it starts, does not initialize, and waits.
    let learner = start(&net, 4, dir.path()).await;
    assert!(!learner.is_voter());
    let mut added = false;
    for _ in 0..50 {
        match leader(&net, &[1, 2, 3]).await.add_learner(4, "node-4:9095".into()).await {
            Ok(()) => {
                added = true;
                break;
            }
            Err(QuorumError::NotLeader { .. }) => continue,
            Err(e) => panic!("add_learner: {e}"),
        }
    }
    assert!(added, "learner added");
    assert_eq!(propose(&net, &[1, 2, 3], broker(2)).await, Ok(()));
    let image = leader(&net, &[1, 2, 3]).await.image().borrow().clone();
    wait_image(&learner, &image).await;
    assert!(!learner.is_voter(), "a learner never votes");
    // A learner refuses proposals and names the leader.
    match learner.propose(broker(3)).await {
        Err(QuorumError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader from a learner, got {other:?}"),
    }
    for q in nodes(&net) {
        q.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn garbage_rpc_payload_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Arc::new(Net::default());
    let q = start(&net, 1, dir.path()).await;
    for kind in [RpcKind::AppendEntries, RpcKind::Vote, RpcKind::InstallSnapshot] {
        let err =
            q.handle_rpc(kind, Bytes::from_static(b"\xff not json")).await.expect_err("garbage");
        assert!(matches!(err, QuorumError::BadRequest(_)), "{err}");
    }
    q.shutdown().await.expect("shutdown");
    assert!(matches!(q.propose(broker(1)).await, Err(QuorumError::Shutdown)));
}

#[tokio::test]
async fn single_node_quorum_leads_at_once_and_keeps_its_image_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let voters: BTreeMap<NodeId, String> = [(1, "solo:9095".to_string())].into();
    let config = || QuorumConfig::new(1, dir.path().join("quorum"), voters.clone(), "solo:9095");
    let transport = || Arc::new(NetTransport(Arc::new(Net::default())));
    let q = Quorum::start(config(), None, transport()).await.expect("start");
    for b in 0..3 {
        assert_eq!(propose_solo(&q, broker(b)).await, Ok(()));
    }
    let image = q.image().borrow().clone();
    q.shutdown().await.expect("shutdown");

    let q = Quorum::start(config(), None, transport()).await.expect("restart");
    assert_eq!(propose_solo(&q, broker(10)).await, Ok(()));
    let after = q.image().borrow().clone();
    assert_eq!(after.state.brokers().len(), image.state.brokers().len() + 1);
    q.shutdown().await.expect("shutdown");
}

async fn propose_solo(
    q: &Quorum,
    record: MetadataRecord,
) -> Result<(), strom_quorum::MetadataError> {
    let mut rx = q.leader();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| l.is_self))
        .await
        .expect("leads")
        .expect("leader watch");
    q.propose(record).await.expect("propose")
}
