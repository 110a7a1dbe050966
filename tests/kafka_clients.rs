//! Real Kafka clients against Strom's Kafka listener: kcat (librdkafka), and in a virtualenv
//! under `target/` confluent-kafka, kafka-python and aiokafka, plus the cross-front-end path
//! (a Kafka client writes, `strom-consumer` reads over gRPC, and the reverse).
//!
//! The broker runs in-process (gRPC and Kafka listeners on port 0, a temporary data
//! directory). Missing clients are installed (`apt-get install -y kcat`; `python3 -m venv
//! target/kafka-venv` + `pip install confluent-kafka kafka-python aiokafka`); if an install
//! fails the test fails with the reason rather than passing without having run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use strom_broker::{BrokerConfig, BrokerServer};
use strom_kafka::{KafkaConfig, KafkaListener};

/// Python packages the client scenarios import.
const PIP_PACKAGES: &[&str] = &["confluent-kafka", "kafka-python", "aiokafka"];
/// Installs run one at a time: tests of this file run in parallel.
static INSTALL: Mutex<()> = Mutex::new(());

/// A broker serving gRPC and Kafka on port 0 in a temporary directory, stopped on drop.
struct Node {
    rt: tokio::runtime::Runtime,
    server: Option<BrokerServer>,
    kafka: Option<KafkaListener>,
    grpc: String,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            offsets_topic_num_partitions: 4,
            message_max_bytes: 2 << 20,
            ..BrokerConfig::default()
        };
        let (server, kafka) = rt.block_on(async {
            let server = BrokerServer::start(config).await.unwrap();
            let kafka = KafkaListener::start(
                server.broker().clone(),
                KafkaConfig::new("127.0.0.1:0".parse().unwrap()),
            )
            .await
            .unwrap();
            (server, kafka)
        });
        Node {
            grpc: server.local_addr().to_string(),
            bootstrap: kafka.local_addr().to_string(),
            server: Some(server),
            kafka: Some(kafka),
            rt,
            _dir: dir,
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let broker = self.server.as_ref().unwrap().broker().clone();
        let topic = strom_broker::NewTopic {
            name: name.into(),
            num_partitions: partitions,
            ..Default::default()
        };
        self.rt.block_on(broker.create_topic(topic, false)).unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let (kafka, server) = (self.kafka.take(), self.server.take());
        self.rt.block_on(async {
            if let Some(k) = kafka {
                k.shutdown().await;
            }
            if let Some(s) = server {
                let _ = s.shutdown().await;
            }
        });
    }
}

fn succeeded(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn shell(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// kcat, installed with apt-get when missing.
fn kcat() -> &'static str {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if succeeded(Command::new("kcat").arg("-V")) {
        return "kcat";
    }
    let install = "DEBIAN_FRONTEND=noninteractive apt-get install -y kcat";
    let result = shell(install).or_else(|_| shell(&format!("apt-get update && {install}")));
    if let Err(e) = result {
        panic!("kcat is not installed and installing it failed (needs root and network): {e}");
    }
    assert!(succeeded(Command::new("kcat").arg("-V")), "kcat still missing after apt-get install");
    "kcat"
}

/// The python of `target/kafka-venv`, created and filled with the client packages if missing.
fn venv_python() -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("kafka-venv");
    let python = venv.join("bin").join("python");
    let imports = "import confluent_kafka, kafka, aiokafka";
    if succeeded(Command::new(&python).args(["-c", imports])) {
        return python;
    }
    let created = shell(&format!("python3 -m venv {}", venv.display())).and_then(|()| {
        shell(&format!("{} -m pip install -q {}", python.display(), PIP_PACKAGES.join(" ")))
    });
    if let Err(e) = created {
        panic!(
            "could not set up the Kafka client virtualenv at {} (needs network): {e}",
            venv.display()
        );
    }
    assert!(
        succeeded(Command::new(&python).args(["-c", imports])),
        "Kafka client packages still not importable from {}",
        python.display()
    );
    python
}

/// Runs `cmd` with `input` on stdin, written from a thread so a full stdout cannot deadlock.
fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    child.wait_with_output().expect("wait for client")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn python_scenario(scenario: &str) {
    python_scenario_on(&Node::start(), scenario);
}

fn python_scenario_on(node: &Node, scenario: &str) {
    let python = venv_python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates/strom-kafka/tests/clients/python_clients.py");
    let out = Command::new(python)
        .arg(script)
        .args([node.bootstrap.as_str(), scenario])
        .output()
        .expect("run python");
    println!("{}", text(&out));
    assert!(out.status.success(), "scenario {scenario} failed:\n{}", text(&out));
}

#[test]
fn confluent_kafka_admin_codecs_large_record_commit_and_resume() {
    python_scenario("confluent");
}

#[test]
fn confluent_kafka_group_of_two_splits_six_partitions_three_three() {
    python_scenario("group-split");
}

#[test]
fn confluent_kafka_static_member_restarts_without_a_rebalance() {
    python_scenario("static-membership");
}

#[test]
fn kafka_python_admin_murmur2_produce_and_group_consume() {
    python_scenario("kafka-python");
}

#[test]
fn confluent_kafka_adds_partitions_and_a_group_member_takes_them_up() {
    python_scenario("confluent-create-partitions");
}

#[test]
fn kafka_python_adds_partitions_and_fetches_them_in_a_fetch_session() {
    let node = Node::start();
    python_scenario_on(&node, "kafka-python-create-partitions");
    // kafka-python fetches with KIP-227 sessions (librdkafka does not): its sessions stay in
    // the cache after it closes, until evicted.
    let sessions = node.kafka.as_ref().unwrap().fetch_sessions();
    println!("fetch sessions held after kafka-python: {sessions}");
    assert!(sessions >= 1, "kafka-python used no fetch session");
}

#[test]
fn confluent_kafka_deletes_records_and_a_consumer_from_earliest_starts_there() {
    python_scenario("delete-records");
}

#[test]
fn aiokafka_produces_and_consumes_in_a_group() {
    python_scenario("aiokafka");
}

#[test]
fn kcat_lists_metadata_and_round_trips_every_codec_with_keys_and_headers() {
    let kcat = kcat();
    let node = Node::start();
    node.create_topic("kc", 3);
    let out = Command::new(kcat).args(["-b", &node.bootstrap, "-L", "-t", "kc"]).output().unwrap();
    let listing = text(&out);
    assert!(out.status.success() && listing.contains("3 partitions"), "{listing}");
    assert!(listing.contains(&format!("at {}", node.bootstrap)), "{listing}");
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let input: String = (0..10).map(|i| format!("key-{codec}-{i}:value-{i}\n")).collect();
        let out = run_with_stdin(
            Command::new(kcat).args([
                "-b",
                &node.bootstrap,
                "-P",
                "-t",
                "kc",
                "-K:",
                "-z",
                codec,
                "-H",
                "hdr=x",
                "-X",
                "partitioner=murmur2_random",
            ]),
            input.as_bytes(),
        );
        assert!(out.status.success(), "kcat -P -z {codec}: {}", text(&out));
    }
    let out = Command::new(kcat)
        .args(["-b", &node.bootstrap, "-C", "-t", "kc", "-o", "beginning", "-e", "-q"])
        .args(["-f", "%p|%k|%s|%h\\n"])
        .output()
        .unwrap();
    let consumed = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), 50, "{}", text(&out));
    for line in lines {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 4, "{line}");
        let expected = strom_producer::partition_for_key(fields[1].as_bytes(), 3).get();
        assert_eq!(fields[0], expected.to_string(), "{line}: not on its murmur2 partition");
        assert_eq!(fields[3], "hdr=x", "{line}");
    }
    println!("kcat: 50 records over 5 codecs, every key on its murmur2 partition");
}

#[test]
fn kafka_and_grpc_front_ends_share_records() {
    let kcat = kcat();
    let node = Node::start();
    node.create_topic("both", 1);
    let input: String = (0..5).map(|i| format!("k{i}:from-kafka-{i}\n")).collect();
    let out = run_with_stdin(
        Command::new(kcat).args(["-b", &node.bootstrap, "-P", "-t", "both", "-K:"]),
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let grpc = node.grpc.as_str();
    let out = common::run(
        "strom-consumer",
        &["--bootstrap", grpc, "--topic", "both", "--from-beginning", "--max-messages", "5"],
        None,
    );
    let read = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        read.lines().collect::<Vec<_>>(),
        (0..5).map(|i| format!("from-kafka-{i}")).collect::<Vec<_>>()
    );
    let out = common::run(
        "strom-producer",
        &["--bootstrap", grpc, "--topic", "both", "--key-separator", ":"],
        Some(b"g1:from-grpc-1\ng2:from-grpc-2\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(kcat)
        .args(["-b", &node.bootstrap, "-C", "-t", "both", "-o", "5", "-e", "-q", "-f", "%k=%s\\n"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "g1=from-grpc-1\ng2=from-grpc-2\n",
        "{}",
        text(&out)
    );
    println!("cross front end: 5 records Kafka -> gRPC, 2 records gRPC -> Kafka");
}

#[test]
fn a_group_mixes_kafka_and_grpc_members() {
    let python = venv_python();
    let node = Node::start();
    node.create_topic("mixed", 6);
    let mut grpc_member = Command::new(common::bin("strom-consumer"))
        .args(["--bootstrap", &node.grpc, "--topic", "mixed", "--group", "mixed"])
        .args(["--timeout-ms", "60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strom-consumer");
    let script = r#"
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "mixed",
              "partition.assignment.strategy": "range"})
c.subscribe(["mixed"])
end, got = time.time() + 40, []
while time.time() < end and len(got) != 3:
    c.poll(0.2)
    got = sorted(tp.partition for tp in c.assignment())
c.close()
print("kafka member owns", got)
sys.exit(0 if len(got) == 3 else 1)
"#;
    let out = Command::new(python).args(["-c", script, &node.bootstrap]).output().unwrap();
    let _ = grpc_member.kill();
    let _ = grpc_member.wait();
    println!("{}", text(&out));
    assert!(
        out.status.success(),
        "the Kafka member did not get half the partitions: {}",
        text(&out)
    );
}

/// confluent-kafka with `enable.idempotence=True` while the broker (a process here, on a fixed
/// Kafka port) is SIGKILLed and restarted mid-stream: librdkafka resends the unanswered
/// batches with their sequences, the restarted broker recognises the stored ones, and every
/// record is in the topic exactly once.
#[test]
fn confluent_kafka_idempotent_produce_across_a_broker_kill_stores_each_record_once() {
    use std::io::{BufRead, BufReader, Write};
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let kafka_port = common::free_port();
    let kafka_listen = format!("127.0.0.1:{kafka_port}");
    let mut broker = common::BrokerProcess::start(
        dir.path(),
        &["--kafka-listen", &kafka_listen, "--segment-bytes", "262144", "--flush-messages", "1"],
    );
    let kafka = broker.kafka_addr();
    let create = ["--bootstrap", &broker.addr, "topics", "create", "idem", "--partitions", "3"];
    common::run_ok("strom-admin", &create, None);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates/strom-kafka/tests/clients/python_clients.py");
    let mut child = Command::new(python)
        .arg(script)
        .args([kafka.as_str(), "idempotent-restart", "idem"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut output = String::new();
    for line in stdout.lines().map_while(Result::ok) {
        println!("{line}");
        output.push_str(&line);
        output.push('\n');
        if line == "kill-now" {
            broker.kill();
            broker.restart();
            broker.kafka_addr();
            writeln!(stdin, "restarted").expect("tell the client");
        }
    }
    let out = child.wait_with_output().expect("wait for python");
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "idempotent scenario failed:\n{output}");
}

/// A 3-node cluster seen through Kafka's protocol: every node's Metadata lists all three
/// brokers (their Kafka listeners) and the controller; records produced through one node to an
/// RF-3 topic are read through another; a kcat group consumes and commits through the group's
/// coordinator, wherever it is.
#[test]
fn kcat_against_a_three_node_cluster() {
    use common::cluster::{Cluster, all_active, wait_for};
    let kcat = kcat();
    let mut cluster = Cluster::start(3);
    wait_for("3 nodes active", || all_active(&cluster.node(1).addr, &[1, 2, 3]));
    let kafka: Vec<String> = (1..=3).map(|id| cluster.node_mut(id).kafka_addr()).collect();
    // Registrations carry the Kafka address once each listener is bound.
    let (listing, _) = wait_for("every node's Kafka listener in Metadata", || {
        let out = Command::new(kcat).args(["-b", &kafka[0], "-L"]).output().ok()?;
        let listing = text(&out);
        kafka.iter().all(|k| listing.contains(k.as_str())).then_some(listing)
    });
    assert!(listing.contains(" 3 brokers:"), "{listing}");
    assert!(listing.contains("(controller)"), "{listing}");
    common::run_ok(
        "strom-admin",
        &[
            "--bootstrap",
            &cluster.node(1).addr,
            "topics",
            "create",
            "kt",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    );
    let input: String = (0..300).map(|i| format!("k{i}:v{i}\n")).collect();
    let out = run_with_stdin(
        Command::new(kcat).args(["-b", &kafka[1], "-P", "-t", "kt", "-K:"]),
        input.as_bytes(),
    );
    assert!(out.status.success(), "kcat produce: {}", text(&out));
    let out = Command::new(kcat)
        .args(["-b", &kafka[2], "-C", "-t", "kt", "-o", "beginning", "-e", "-q"])
        .output()
        .unwrap();
    assert_eq!(text(&out).lines().filter(|l| l.starts_with('v')).count(), 300, "{}", text(&out));
    let out = Command::new(kcat)
        .args(["-b", &kafka[0], "-C", "-G", "kgroup", "-o", "beginning", "-e", "-q", "kt"])
        .output()
        .unwrap();
    assert_eq!(text(&out).lines().filter(|l| l.starts_with('v')).count(), 300, "{}", text(&out));
    let described = common::run_ok(
        "strom-admin",
        &["--bootstrap", &cluster.node(3).addr, "--output", "json", "groups", "describe", "kgroup"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&described).unwrap();
    let committed: i64 = v[0]["offsets"]
        .as_array()
        .map(|o| o.iter().filter_map(|p| p["committed"].as_i64()).sum())
        .unwrap_or(-1);
    assert_eq!(committed, 300, "the group committed every record: {described}");
}
