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
    let mut c = QuorumConfig::new(id, dir.join(format!("n{id}/quorum")), voters(), format!("node-{id}:9095"));
    c.election_timeout_ms = (150, 300);
    c.heartbeat_interval_ms = 50;
    c.snapshot_after_entries = 5; // exercise snapshots and purges
    c.logs_kept_after_snapshot = 2;
    c
}

async fn start(net: &Arc<Net>, id: NodeId, dir: &std::path::Path) -> Quorum {
    let q = Quorum::start(config(id, dir), None, Arc::new(NetTransport(net.clone()))).await.expect("start");
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

/// Waits until some node among `ids` says it is the leader; returns it.
async fn leader(net: &Arc<Net>, ids: &[NodeId]) -> Quorum {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: Vec<Quorum> = ids.iter().filter_map(|id| net.nodes.lock().get(id).cloned()).collect();
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

async fn wait_image(q: &Quorum, want: &MetadataImage) {
    let mut rx = q.image();
    let r = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|img| img.state == want.state)).await;
    assert!(r.is_ok(), "node {} did not converge", q.node_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_commit_fail_over_and_restart() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let net = Arc::new(Net::default());
    for id in 1..=3 {
        start(&net, id, dir.path()).await;
    }
    let first = leader(&net, &[1, 2, 3]).await;
    for b in 0..8 {
        assert_eq!(first.propose(broker(100 + b)).await.expect("propose"), Ok(()));
    }
    // A non-leader refuses and names the leader and its address.
    let follower = (1..=3).find(|id| *id != first.node_id()).expect("a follower");
    let follower = net.nodes.lock().get(&follower).cloned().expect("follower");
    match follower.propose(broker(1)).await {
        Err(QuorumError::NotLeader { leader: Some((id, addr)) }) => {
            assert_eq!(id, first.node_id());
            assert_eq!(addr, format!("node-{id}:9095"));
        }
        other => panic!("expected NotLeader with the leader, got {other:?}"),
    }
    let image = first.image().borrow().clone();
    assert_eq!(image.state.brokers().len(), 8);
    for q in net.nodes.lock().values().cloned().collect::<Vec<_>>() {
        wait_image(&q, &image).await;
    }

    // Kill the leader: the other two elect a new one and proposals continue.
    let dead = first.node_id();
    net.nodes.lock().remove(&dead);
    first.shutdown().await.expect("shutdown");
    let rest: Vec<NodeId> = (1..=3).filter(|id| *id != dead).collect();
    let second = leader(&net, &rest).await;
    assert_ne!(second.node_id(), dead);
    for b in 0..4 {
        assert_eq!(second.propose(broker(200 + b)).await.expect("propose after fail-over"), Ok(()));
    }
    let image = second.image().borrow().clone();
    assert_eq!(image.state.brokers().len(), 12);

    // The dead node comes back from its directory and catches up.
    let back = start(&net, dead, dir.path()).await;
    wait_image(&back, &image).await;

    // Stop everything, start again: the same image.
    let all: Vec<Quorum> = net.nodes.lock().values().cloned().collect();
    net.nodes.lock().clear();
    for q in all {
        q.shutdown().await.expect("shutdown");
    }
    for id in 1..=3 {
        start(&net, id, dir.path()).await;
    }
    let third = leader(&net, &[1, 2, 3]).await;
    wait_image(&third, &image).await;
    for q in net.nodes.lock().values().cloned().collect::<Vec<_>>() {
        wait_image(&q, &image).await;
    }

    // A restart under another identity is refused.
    let mut wrong = config(1, dir.path());
    wrong.dir = dir.path().join("n2/quorum");
    let err = Quorum::start(wrong, None, Arc::new(NetTransport(net.clone()))).await.expect_err("identity");
    assert!(matches!(err, QuorumError::Config(_)), "{err}");
    for q in net.nodes.lock().values().cloned().collect::<Vec<_>>() {
        q.shutdown().await.expect("shutdown");
    }
}
