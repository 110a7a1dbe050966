//! Consumer groups against a real broker process: partitions are shared out by the group
//! protocol, a SIGKILLed member's partitions move to the others with no record skipped, a
//! restarted consumer resumes after its last committed offset, and committed offsets survive a
//! broker restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BrokerProcess, bin, run_ok};
use strom_consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};

/// Upper bound on waiting for a group to settle; a bound against hangs, not a performance claim.
const SETTLE: Duration = Duration::from_secs(90);
const SESSION_TIMEOUT_MS: &str = "6000";

fn create_topic(addr: &str, topic: &str, partitions: u32) {
    run_ok(
        "strom-admin",
        &["--bootstrap", addr, "topics", "create", topic, "--partitions", &partitions.to_string()],
        None,
    );
}

fn produce(addr: &str, topic: &str, values: std::ops::Range<usize>) {
    let input: String = values.map(|i| format!("k{i}:{i}\n")).collect();
    run_ok(
        "strom-producer",
        &["--bootstrap", addr, "--topic", topic, "--key-separator", ":"],
        Some(input.as_bytes()),
    );
}

/// A member's generation and assignment, as last seen after one of its polls.
type MemberView = (i32, Vec<TopicPartition>);

/// Runs `members` SDK consumers of one group until their generation agrees and their
/// assignments cover the topic, and returns how many partitions each member holds, sorted.
fn settled_assignments(
    addr: &str,
    topic: &str,
    group: &str,
    members: usize,
    partitions: usize,
) -> Vec<usize> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let views: Arc<Mutex<Vec<MemberView>>> =
            Arc::new(Mutex::new(vec![(-1, Vec::new()); members]));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for m in 0..members {
            let (views, stop) = (views.clone(), stop.clone());
            let (addr, topic, group) = (addr.to_string(), topic.to_string(), group.to_string());
            tasks.push(tokio::spawn(async move {
                let config = ConsumerConfig::builder(addr)
                    .group_id(group)
                    .auto_offset_reset(OffsetReset::Earliest)
                    .build()
                    .unwrap();
                let mut consumer = Consumer::new(config).await.unwrap();
                consumer.subscribe(vec![topic], None).unwrap();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    consumer.poll(Duration::from_millis(100)).await.unwrap();
                    let generation = consumer.group_metadata().map_or(-1, |g| g.generation_id);
                    views.lock().unwrap()[m] = (generation, consumer.assignment().to_vec());
                }
                consumer.close().await.unwrap();
            }));
        }
        let deadline = Instant::now() + SETTLE;
        let settled = loop {
            {
                let views = views.lock().unwrap();
                let generations: HashSet<i32> = views.iter().map(|v| v.0).collect();
                let all: Vec<&TopicPartition> = views.iter().flat_map(|v| &v.1).collect();
                let distinct: HashSet<&TopicPartition> = all.iter().copied().collect();
                if generations.len() == 1
                    && !generations.contains(&-1)
                    && all.len() == partitions
                    && distinct.len() == partitions
                {
                    break views.iter().map(|v| v.1.len()).collect::<Vec<_>>();
                }
            }
            assert!(Instant::now() < deadline, "group never settled: {:?}", views.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        settled
    });
    let mut counts = result;
    counts.sort_unstable();
    assert_eq!(counts.iter().sum::<usize>(), partitions);
    assert_eq!(counts.len(), members);
    counts
}

#[test]
fn partitions_are_shared_out_and_surplus_members_idle() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker.addr, "six", 6);
    create_topic(&broker.addr, "two", 2);

    let counts = settled_assignments(&broker.addr, "six", "g6", 2, 6);
    assert_eq!(counts, [3, 3], "6 partitions over 2 members");

    let counts = settled_assignments(&broker.addr, "two", "g2", 3, 2);
    assert_eq!(counts, [0, 1, 1], "2 partitions over 3 members: one idle");
}

/// A `strom-consumer --group` process whose printed values are collected as they arrive.
struct GroupConsumer {
    child: Child,
    seen: Arc<Mutex<Vec<usize>>>,
}

impl GroupConsumer {
    fn start(addr: &str, topic: &str, group: &str) -> GroupConsumer {
        let mut child = Command::new(bin("strom-consumer"))
            .args(["--bootstrap", addr, "--topic", topic, "--group", group, "--from-beginning"])
            .args(["--session-timeout-ms", SESSION_TIMEOUT_MS])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.parse::<usize>().expect("numeric value"));
            }
        });
        GroupConsumer { child, seen }
    }

    fn seen(&self) -> Vec<usize> {
        self.seen.lock().unwrap().clone()
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&[usize]) -> bool) {
        let deadline = Instant::now() + SETTLE;
        while !done(&self.seen()) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_killed_members_partitions_move_and_nothing_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.as_str();
    create_topic(addr, "moves", 4);
    produce(addr, "moves", 0..2_000);

    let mut a = GroupConsumer::start(addr, "moves", "movers");
    let b = GroupConsumer::start(addr, "moves", "movers");
    // Keep producing small rounds until both members have read some of them: then both hold
    // partitions (a member that joins after everything was read has nothing to print).
    let mut next = 2_000;
    let deadline = Instant::now() + SETTLE;
    while !(a.seen().iter().any(|&i| i >= 2_000) && b.seen().iter().any(|&i| i >= 2_000)) {
        assert!(Instant::now() < deadline, "the two members never both read");
        produce(addr, "moves", next..next + 20);
        next += 20;
        std::thread::sleep(Duration::from_millis(300));
    }

    a.kill();
    let end = next + 2_000;
    produce(addr, "moves", next..end);

    // The survivor takes over the dead member's partitions once its session expires, and
    // reads every record produced after the kill: none is skipped.
    b.wait_until("the survivor reads everything produced after the kill", |s| {
        let s: HashSet<usize> = s.iter().copied().collect();
        (next..end).all(|i| s.contains(&i))
    });
    // Records the dead member printed but had not committed are read again by the survivor
    // (at-least-once); none is lost.
    let all: BTreeSet<usize> = a.seen().into_iter().chain(b.seen()).collect();
    assert_eq!(all.len(), end, "records skipped");
    assert_eq!(all.iter().next_back(), Some(&(end - 1)));
}

#[test]
fn committed_offsets_resume_a_consumer_and_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    create_topic(&broker.addr, "resume", 1);
    produce(&broker.addr, "resume", 0..300);

    let read_100 = |addr: &str| -> Vec<usize> {
        run_ok(
            "strom-consumer",
            &[
                "--bootstrap",
                addr,
                "--topic",
                "resume",
                "--group",
                "resumers",
                "--from-beginning",
                "--max-messages",
                "100",
                "--timeout-ms",
                "30000",
            ],
            None,
        )
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
    };

    assert_eq!(read_100(&broker.addr), (0..100).collect::<Vec<_>>());
    // A restarted consumer resumes right after the last committed offset.
    assert_eq!(read_100(&broker.addr), (100..200).collect::<Vec<_>>());

    // The committed offset is durable across a broker restart.
    broker.stop();
    broker.restart();
    assert_eq!(read_100(&broker.addr), (200..300).collect::<Vec<_>>());

    let described = run_ok(
        "strom-admin",
        &["--bootstrap", &broker.addr, "groups", "describe", "resumers"],
        None,
    );
    assert!(described.contains("resume"), "describe output: {described}");
    assert!(described.contains("300"), "committed offset 300 in: {described}");
    let listed = run_ok("strom-admin", &["--bootstrap", &broker.addr, "groups", "list"], None);
    assert!(listed.contains("resumers"), "groups list: {listed}");
}
