//! A cluster of real `strom-broker` processes for the multi-process tests, and the
//! `strom-admin --output json` views of it they poll.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{BrokerProcess, free_port, run};

/// Longest any awaited cluster event may take before the test fails. Generous on purpose: the
/// measured times are printed, and the bound only catches a cluster that never gets there.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub nodes: Vec<BrokerProcess>,
    _dirs: Vec<tempfile::TempDir>,
    pub voters: String,
}

impl Cluster {
    /// `n` voters, node ids 1..=n, on fixed free ports.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// [`Cluster::start`] with more broker flags for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let nodes = ports
            .iter()
            .zip(&dirs)
            .enumerate()
            .map(|(i, (port, dir))| {
                let mut args = vec![
                    "--node-id".to_string(),
                    (i + 1).to_string(),
                    "--voters".to_string(),
                    voters.clone(),
                ];
                args.extend(extra.iter().map(|s| s.to_string()));
                BrokerProcess::start_at(dir.path(), &format!("127.0.0.1:{port}"), &args)
            })
            .collect();
        Cluster { nodes, _dirs: dirs, voters }
    }

    pub fn node(&self, id: i64) -> &BrokerProcess {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: i64) -> &mut BrokerProcess {
        &mut self.nodes[(id - 1) as usize]
    }
}

/// `strom-admin --output json ...` through `node`, parsed; `None` if the command failed.
pub fn admin_json(addr: &str, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["--bootstrap", addr, "--timeout-ms", "3000", "--output", "json"];
    all.extend_from_slice(args);
    let out = run("strom-admin", &all, None);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `check` until it returns `Some` or [`PATIENCE`] runs out; returns the value and the
/// time it took.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < PATIENCE, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// node id -> "active" / "fenced", and the controller id, as `addr` sees the cluster.
pub fn cluster_view(addr: &str) -> Option<(BTreeMap<i64, String>, i64)> {
    let v = admin_json(addr, &["cluster", "describe"])?;
    let nodes = v["nodes"]
        .as_array()?
        .iter()
        .map(|n| (n["node_id"].as_i64().unwrap_or(-1), n["state"].as_str().unwrap_or("").into()))
        .collect();
    Some((nodes, v["controller_id"].as_i64()?))
}

pub fn all_active(addr: &str, ids: &[i64]) -> Option<i64> {
    let (nodes, controller) = cluster_view(addr)?;
    let ok = controller > 0 && ids.iter().all(|id| nodes.get(id).is_some_and(|s| s == "active"));
    ok.then_some(controller)
}

/// partition -> leader of `topic`, as `addr` describes it.
pub fn leaders(addr: &str, topic: &str) -> Option<BTreeMap<i64, i64>> {
    let v = admin_json(addr, &["topics", "describe", topic])?;
    let partitions = v[0]["partitions"].as_array()?;
    Some(
        partitions
            .iter()
            .map(|p| (p["partition"].as_i64().unwrap_or(-1), p["leader"].as_i64().unwrap_or(-1)))
            .collect(),
    )
}
