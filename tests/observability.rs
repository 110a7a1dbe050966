//! The HTTP listener of a real broker process: `/metrics` after a known workload (records in =
//! records produced, bytes in = the log's size, lag = high watermark - committed offset, per
//! partition), `/health` and `/ready`, the JSON API the console uses, and bad input (unknown
//! paths 404, malformed or huge query strings 400, oversized bodies 413).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, admin_json, all_active, leaders, wait_for};
use common::{BrokerProcess, run_ok};
use strom_format::PartitionId;
use strom_producer::{Producer, ProducerConfig, ProducerRecord};

/// One HTTP/1.0 exchange (no chunking, the server closes): `(status, body)`.
fn http(addr: &str, method: &str, target: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {target} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn get(addr: &str, target: &str) -> (u16, String) {
    http(addr, "GET", target, None)
}

/// The samples of a Prometheus text page: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sample(all: &BTreeMap<String, f64>, key: &str) -> f64 {
    *all.get(key).unwrap_or_else(|| panic!("no sample {key}"))
}

fn wait_ready(http_addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(http_addr, "/ready");
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "/ready: {body}");
        assert!(Instant::now() < deadline, "not ready after 30 s: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const RECORDS: usize = 1000;

/// Produces [`RECORDS`] records (`k{i}` / `value {i}`) to `topic`, record `i` to partition
/// `i % partitions`, and waits for every acknowledgement.
fn produce_round_robin(addr: &str, topic: &str, partitions: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = Producer::new(ProducerConfig::new(addr)).await.unwrap();
        let mut acks = Vec::new();
        for i in 0..RECORDS {
            let record = ProducerRecord::new(topic)
                .partition(PartitionId::new((i % partitions) as i32))
                .key(format!("k{i}"))
                .value(format!("value {i}"));
            acks.push(producer.send(record).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
        producer.close().await;
    });
}
const CONSUMED: usize = 300;

#[test]
fn metrics_match_a_known_workload_and_lag_is_end_minus_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.clone();
    let http_addr = broker.http_addr();
    assert!(http_addr.starts_with("127.0.0.1:"), "bound to loopback: {http_addr}");
    assert_eq!(get(&http_addr, "/health").0, 200);
    wait_ready(&http_addr);

    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", "metered", "--partitions", "2"],
        None,
    );
    produce_round_robin(&addr, "metered", 2);
    consume_in_group(&addr, "metered", "meters", CONSUMED);

    let started = Instant::now();
    let (status, text) = get(&http_addr, "/metrics");
    let scrape_ms = started.elapsed().as_millis();
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    let all = samples(&text);

    let records_in = sample(&all, "strom_topic_records_in_total{topic=\"metered\"}");
    assert_eq!(records_in, RECORDS as f64, "records in = records produced");
    let bytes_in = sample(&all, "strom_topic_in_bytes_total{topic=\"metered\"}");
    let mut log_bytes = 0.0;
    let mut lag_sum = 0.0;
    for p in 0..2 {
        let labels = format!("topic=\"metered\",partition=\"{p}\"");
        log_bytes += sample(&all, &format!("strom_partition_log_size_bytes{{{labels}}}"));
        let hw = sample(&all, &format!("strom_partition_high_watermark{{{labels}}}"));
        assert_eq!(hw, (RECORDS / 2) as f64);
        let group = format!("group=\"meters\",{labels}");
        let committed = sample(&all, &format!("strom_group_committed_offset{{{group}}}"));
        let lag = sample(&all, &format!("strom_group_lag{{{group}}}"));
        assert_eq!(lag, hw - committed, "lag = end - committed on partition {p}");
        lag_sum += lag;
    }
    assert_eq!(bytes_in, log_bytes, "bytes in = bytes in the logs");
    assert_eq!(lag_sum, (RECORDS - CONSUMED) as f64);
    assert_eq!(sample(&all, "strom_group_lag_sum{group=\"meters\"}"), lag_sum);
    let records_out = sample(&all, "strom_topic_records_out_total{topic=\"metered\"}");
    assert!(records_out >= CONSUMED as f64, "records out {records_out} < {CONSUMED} consumed");
    let produces =
        sample(&all, "strom_request_duration_seconds_count{listener=\"grpc\",api=\"produce\"}");
    assert!(produces >= 1.0);
    assert_eq!(sample(&all, "strom_active_controller"), 1.0);
    assert_eq!(sample(&all, "strom_controller_id"), 1.0);
    assert!(sample(&all, "strom_raft_term") >= 1.0);
    assert!(sample(&all, "strom_raft_applied_index") >= 1.0);
    assert_eq!(sample(&all, "strom_ready"), 1.0);
    assert!(sample(&all, "process_resident_memory_bytes") > 0.0);
    assert!(all.contains_key("process_cpu_seconds_total"));
    // __consumer_offsets is compacted, so the cleaner runs; nothing here may fail it.
    assert!(all.contains_key("strom_log_cleaner_passes_total"));
    assert!(all.contains_key("strom_log_cleaner_freed_bytes_total"));
    assert!(all.contains_key("strom_log_cleaner_last_pass_duration_milliseconds"));
    assert_eq!(sample(&all, "strom_log_cleaner_failures_total"), 0.0);
    println!(
        "scraped {} samples in {scrape_ms} ms: records in {records_in}, bytes in {bytes_in}, \
         records out {records_out}, lag {lag_sum}",
        all.len()
    );

    // The console's JSON views of the same state.
    let (status, topics) = get(&http_addr, "/api/topics");
    assert_eq!(status, 200);
    assert!(topics.contains("\"name\":\"metered\""), "{topics}");
    let (status, group) = get(&http_addr, "/api/groups/meters");
    assert_eq!(status, 200);
    assert!(group.contains(&format!("\"total_lag\":{}", RECORDS - CONSUMED)), "{group}");
    let (status, page) =
        get(&http_addr, "/api/messages?topic=metered&partition=1&offset=0&limit=2");
    assert_eq!(status, 200);
    assert!(page.contains("\"data\":\"k1\"") && page.contains("\"data\":\"value 3\""), "{page}");
    watch_redraws_the_group_until_interrupted(&addr, RECORDS - CONSUMED);

    let (status, created) =
        http(&http_addr, "POST", "/api/topics", Some(r#"{"name":"from-console","partitions":3}"#));
    assert_eq!(status, 201, "{created}");
    let (status, detail) = get(&http_addr, "/api/topics/from-console");
    assert_eq!(status, 200);
    assert_eq!(detail.matches("\"partition\":").count(), 3, "{detail}");
    broker.stop();
}

/// `strom-admin groups describe --watch` prints the description again every interval (with
/// the lag), and exits 0 on SIGINT.
fn watch_redraws_the_group_until_interrupted(addr: &str, lag: usize) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(common::bin("strom-admin"))
        .args(["--bootstrap", addr, "groups", "describe", "meters", "--watch", "--interval", "0.2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut refreshes, mut lags) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while refreshes < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("--watch kept refreshing");
        if line.starts_with("Every 0.2s: groups describe meters") {
            refreshes += 1;
        }
        // Partition rows: TOPIC PARTITION COMMITTED LOG-END LAG OWNER.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"metered") && fields.len() >= 5 {
            lags += fields[4].parse::<usize>().unwrap();
        }
    }
    // Two complete redraws (the third header started one more): each shows the whole lag.
    assert!(lags >= 2 * lag, "lag rows summed to {lags} over 2+ redraws of lag {lag}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "--watch exits 0 on Ctrl-C, got {status}");
}

#[test]
fn bad_http_input_gets_4xx_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let http_addr = broker.http_addr();
    wait_ready(&http_addr);
    // Above MAX_QUERY_BYTES (2 KiB), below what hyper itself refuses.
    let huge = "x".repeat(10_000);
    let cases: Vec<(String, &str, Option<String>, u16)> = vec![
        ("/nope".into(), "GET", None, 404),
        ("/api/nope".into(), "GET", None, 404),
        ("/metrics/extra".into(), "GET", None, 404),
        ("/api/topics/unknown-topic".into(), "GET", None, 404),
        ("/api/groups/unknown-group".into(), "GET", None, 404),
        ("/api/messages?topic=t&partition=x".into(), "GET", None, 400),
        ("/api/messages?topic=t".into(), "GET", None, 400),
        ("/api/messages?topic=t&partition=0&bogus=1".into(), "GET", None, 400),
        ("/api/messages?topic=t&partition=0&limit=100000".into(), "GET", None, 400),
        ("/api/messages?topic=t&partition=%ZZ".into(), "GET", None, 400),
        (format!("/api/messages?topic={huge}&partition=0"), "GET", None, 400),
        (format!("/metrics?{huge}"), "GET", None, 400),
        ("/api/topics".into(), "POST", Some("{not json".into()), 400),
        ("/api/topics".into(), "POST", Some(r#"{"name":"bad name!"}"#.into()), 400),
        (
            "/api/topics".into(),
            "POST",
            Some(format!(r#"{{"name":"{}"}}"#, "y".repeat(200_000))),
            413,
        ),
        ("/metrics".into(), "DELETE", None, 405),
    ];
    for (target, method, body, expected) in &cases {
        let (status, answer) = http(&http_addr, method, target, body.as_deref());
        let shown: String = target.chars().take(60).collect();
        assert_eq!(status, *expected, "{method} {shown}: {answer}");
    }
    assert_eq!(get(&http_addr, "/health").0, 200);
    assert_eq!(get(&http_addr, "/metrics").0, 200);
    println!("{} bad requests answered 4xx; broker still serving", cases.len());
    broker.stop();
}

/// Reads `count` records of `topic` from the beginning with the `strom-consumer` CLI as a
/// member of `group`, which commits them when it exits.
fn consume_in_group(addr: &str, topic: &str, group: &str, count: usize) {
    let args = [
        "--bootstrap",
        addr,
        "--topic",
        topic,
        "--group",
        group,
        "--from-beginning",
        "--max-messages",
        &count.to_string(),
        "--timeout-ms",
        "30000",
    ];
    assert_eq!(run_ok("strom-consumer", &args, None).lines().count(), count);
}

/// More than two partitions' worth of the 1000 records: the group commits on all three.
const SPREAD_CONSUMED: usize = 900;

/// In a cluster a group's coordinator reports lag for every partition the group reads, also
/// those led by (and only stored on) other nodes: it asks their leaders for the high
/// watermark. And the ISR counters count committed changes, on the leader.
#[test]
fn group_lag_covers_partitions_led_by_other_nodes_and_isr_shrinks_are_counted() {
    let mut cluster = Cluster::start_with(3, &["--replica-lag-time-max-ms", "2000"]);
    let addr = cluster.node(1).addr.clone();
    wait_for("three active nodes and a controller", || all_active(&addr, &[1, 2, 3]));
    // One replica per partition: a partition led elsewhere has no replica on the coordinator.
    run_ok(
        "strom-admin",
        &[
            "--bootstrap",
            &addr,
            "topics",
            "create",
            "spread",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        None,
    );
    let placed = wait_for("a leader for each partition", || {
        let l = leaders(&addr, "spread")?;
        (l.len() == 3 && l.values().all(|&n| n > 0)).then_some(l)
    })
    .0;
    produce_round_robin(&addr, "spread", 3);
    consume_in_group(&addr, "spread", "spread-readers", SPREAD_CONSUMED);
    // The coordinator is the one node that reports the group.
    let scrapes: Vec<(i64, String, BTreeMap<String, f64>)> = (1..=3)
        .map(|n| {
            let http = cluster.node_mut(n).http_addr();
            let all = samples(&get(&http, "/metrics").1);
            (n, http, all)
        })
        .collect();
    let mut reporting =
        scrapes.into_iter().filter(|(_, _, all)| all.keys().any(|k| k.contains("spread-readers")));
    let (coordinator, http, all) = reporting.next().expect("the coordinator reports the group");
    assert!(reporting.next().is_none(), "only the coordinator reports the group");
    let ends: Vec<f64> =
        (0..3).map(|p| (RECORDS / 3 + usize::from(p < RECORDS % 3)) as f64).collect();
    let mut lag_sum = 0.0;
    for (p, end) in ends.iter().enumerate() {
        let group = format!("group=\"spread-readers\",topic=\"spread\",partition=\"{p}\"");
        let committed = sample(&all, &format!("strom_group_committed_offset{{{group}}}"));
        let lag = sample(&all, &format!("strom_group_lag{{{group}}}"));
        assert_eq!(
            lag,
            end - committed,
            "lag = leader's end - committed on partition {p} \
            (led by node {}, coordinator {coordinator})",
            placed[&(p as i64)]
        );
        lag_sum += lag;
    }
    assert_eq!(lag_sum, (RECORDS - SPREAD_CONSUMED) as f64);
    assert_eq!(sample(&all, "strom_group_lag_sum{group=\"spread-readers\"}"), lag_sum);
    let (status, group) = get(&http, "/api/groups/spread-readers");
    assert_eq!(status, 200);
    assert!(group.contains(&format!("\"total_lag\":{}", RECORDS - SPREAD_CONSUMED)), "{group}");
    assert!(
        placed.values().any(|&leader| leader != coordinator),
        "the placement put some partition away from the coordinator: {placed:?}"
    );

    // A follower stops: the leader's committed ISR shrinks once, and its counter says so.
    run_ok(
        "strom-admin",
        &[
            "--bootstrap",
            &addr,
            "topics",
            "create",
            "replicated",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ],
        None,
    );
    let isr_of = |addr: &str| {
        let v = admin_json(addr, &["topics", "describe", "replicated"])?;
        let p = &v[0]["partitions"][0];
        let isr: Vec<i64> = p["isr"].as_array()?.iter().filter_map(|n| n.as_i64()).collect();
        Some((p["leader"].as_i64()?, isr))
    };
    let (leader, _) =
        wait_for("a full ISR", || isr_of(&addr).filter(|(l, i)| *l > 0 && i.len() == 3)).0;
    let leader_http = cluster.node_mut(leader).http_addr();
    // The counter is per node: every partition this node leads whose ISR loses the follower
    // (the offsets topic's too) shrinks once, and only those.
    let led_isr = |all: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        all.iter()
            .filter(|(k, v)| k.starts_with("strom_partition_leader{") && **v == 1.0)
            .filter_map(|(k, _)| {
                let labels = k.trim_start_matches("strom_partition_leader");
                let isr = all.get(&format!("strom_partition_in_sync_replicas{labels}"))?;
                Some((labels.to_string(), *isr))
            })
            .collect()
    };
    let first = samples(&get(&leader_http, "/metrics").1);
    let before = sample(&first, "strom_isr_shrinks_total");
    let isr_before = led_isr(&first);
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    cluster.node_mut(follower).kill();
    let leader_addr = cluster.node(leader).addr.clone();
    wait_for("the ISR without the stopped follower", || {
        isr_of(&leader_addr).filter(|(_, isr)| !isr.contains(&follower))
    });
    let (shrunk, _) = wait_for("each committed shrink counted once on the leader", || {
        let now = samples(&get(&leader_http, "/metrics").1);
        let shrunk = led_isr(&now)
            .iter()
            .filter(|(labels, isr)| isr_before.get(*labels).is_some_and(|b| **isr < *b))
            .count() as f64;
        let counted = sample(&now, "strom_isr_shrinks_total") - before;
        (shrunk >= 1.0 && counted == shrunk).then_some(shrunk)
    });
    println!("{shrunk} committed ISR shrinks counted on node {leader}");
}
