//! The PostgreSQL sink end to end: a real PostgreSQL server, a real broker, `strom-connect`
//! processes. Exactly one row per record through crashes (SIGKILL), rebalances and a
//! PostgreSQL restart; upserts and tombstones; bad records dead-lettered or stopping the sink.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Broker, PATIENCE, Postgres, SinkProcess, sink_args, wait_for_count};
use rand::{Rng, SeedableRng};
use strom_consumer::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
use strom_format::PartitionId;
use strom_producer::{ProducerRecord, RecordMetadata};

const RECORDS: usize = 100_000;

/// Record `i` of the big tests: a key, a value of about 100 bytes and one header.
fn record(topic: &str, i: usize) -> ProducerRecord {
    ProducerRecord::new(topic)
        .key(format!("key-{i}"))
        .value(format!("value-{i:08}-{}", "x".repeat(80)))
        .header("seq", Some(i.to_string().as_bytes()))
}

/// Checks the raw table holds exactly one row per produced record, equal to it.
async fn assert_rows_equal_records(pg: &Postgres, table: &str, stored: &[RecordMetadata]) {
    let client = pg.client().await;
    let rows = client
        .query(
            &format!("SELECT partition, \"offset\", key, value, headers->0->>'value' FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), stored.len(), "one row per record");
    let mut by_position: HashMap<(i32, i64), usize> = HashMap::new();
    for (i, m) in stored.iter().enumerate() {
        by_position.insert((m.partition.get(), m.offset.unwrap().get()), i);
    }
    for row in rows {
        let position = (row.get::<_, i32>(0), row.get::<_, i64>(1));
        let i = by_position.remove(&position).expect("a row for a produced record, once");
        assert_eq!(row.get::<_, Vec<u8>>(2), format!("key-{i}").into_bytes());
        assert_eq!(
            row.get::<_, Vec<u8>>(3),
            format!("value-{i:08}-{}", "x".repeat(80)).into_bytes()
        );
        assert_eq!(row.get::<_, String>(4), i.to_string());
    }
    assert!(by_position.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_become_exactly_as_many_rows() {
    let pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("orders", 3).await;
    let stored = broker.produce((0..RECORDS).map(|i| record("orders", i)).collect()).await;

    let started = Instant::now();
    let mut sink =
        SinkProcess::start(&sink_args(&broker.addr(), &pg, "orders", "pg-orders", "orders"));
    wait_for_count(&pg, "SELECT count(*) FROM orders", RECORDS as i64, || sink.log()).await;
    let elapsed = started.elapsed();
    println!(
        "{RECORDS} records -> {RECORDS} rows in {:.2} s including start and group join ({:.0} rows/s)",
        elapsed.as_secs_f64(),
        RECORDS as f64 / elapsed.as_secs_f64()
    );
    assert_rows_equal_records(&pg, "orders", &stored).await;
    let client = pg.client().await;
    let next: i64 = client
        .query_one("SELECT sum(next_offset)::bigint FROM strom_connect_offsets WHERE group_id = 'pg-orders'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, RECORDS as i64, "stored offsets are one past each partition's last record");
    assert!(sink.terminate().await.success(), "{}", sink.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_at_random_points_leave_exactly_one_row_per_record() {
    let seed: u64 = std::env::var("STROM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("STROM_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("orders", 3).await;
    let stored = broker.produce((0..RECORDS).map(|i| record("orders", i)).collect()).await;
    let client = pg.client().await;
    let mut args = sink_args(&broker.addr(), &pg, "orders", "pg-kill", "orders");
    // Small transactions: more of them to be killed in the middle of.
    args.extend(["--batch-rows".to_string(), "2000".to_string()]);

    let started = Instant::now();
    let mut counts = Vec::new();
    for kill in 0..5 {
        let mut sink = SinkProcess::start(&args);
        // Kill this life once it has stored past a random point of its own fifth of the first
        // 80% of the records: where the kill lands follows the sink's progress, not the clock,
        // so a faster sink cannot finish before the last kill.
        let before = counts.last().copied().unwrap_or(0);
        let fifth = RECORDS as i64 * 16 / 100;
        let target = rng.random_range(fifth * kill..fifth * (kill + 1)).max(before + 1);
        let deadline = Instant::now() + PATIENCE;
        loop {
            // The table may not exist yet: count it as empty.
            let rows: i64 = client
                .query_one("SELECT count(*) FROM orders", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            if rows >= target {
                break;
            }
            assert!(Instant::now() < deadline, "life {kill} stored nothing:\n{}", sink.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sink.kill();
        let rows: i64 = client.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
        println!("kill {} at {rows} rows", kill + 1);
        assert!(
            rows < RECORDS as i64,
            "the sink finished before kill {}: make it slower",
            kill + 1
        );
        counts.push(rows);
    }
    let mut sink = SinkProcess::start(&args);
    wait_for_count(&pg, "SELECT count(*) FROM orders", RECORDS as i64, || sink.log()).await;
    println!("5 kills, {RECORDS} rows in {:.1} s", started.elapsed().as_secs_f64());
    assert_rows_equal_records(&pg, "orders", &stored).await;
    assert!(sink.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_split_six_partitions() {
    const N: usize = 30_000;
    let pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("events", 6).await;
    let stored = broker.produce((0..N).map(|i| record("events", i)).collect()).await;
    let args = sink_args(&broker.addr(), &pg, "events", "pg-events", "events");
    let mut a = SinkProcess::start(&args);
    let mut b = SinkProcess::start(&args);
    wait_for_count(&pg, "SELECT count(*) FROM events", N as i64, || {
        format!("{}\n---\n{}", a.log(), b.log())
    })
    .await;
    assert_rows_equal_records(&pg, "events", &stored).await;
    // The group settles with both members holding three partitions each.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (owned_a, owned_b) = (a.owned(), b.owned());
        if owned_a.len() == 3 && owned_b.len() == 3 {
            let mut all: Vec<String> = owned_a.iter().chain(&owned_b).cloned().collect();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 6, "a: {owned_a:?} b: {owned_b:?}");
            println!("instance a owns {owned_a:?}, b owns {owned_b:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a: {owned_a:?} b: {owned_b:?}\n{}\n---\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_recovers_from_a_postgres_restart() {
    const HALF: usize = 20_000;
    let mut pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("orders", 2).await;
    let mut stored = broker.produce((0..HALF).map(|i| record("orders", i)).collect()).await;
    let mut sink =
        SinkProcess::start(&sink_args(&broker.addr(), &pg, "orders", "pg-restart", "orders"));
    wait_for_count(&pg, "SELECT count(*) FROM orders", HALF as i64, || sink.log()).await;

    pg.stop("fast");
    stored.extend(broker.produce((HALF..2 * HALF).map(|i| record("orders", i)).collect()).await);
    // The sink notices (its write fails) and keeps retrying while the server is down.
    let deadline = Instant::now() + PATIENCE;
    while !sink.saw("retrying") {
        assert!(Instant::now() < deadline, "no retry logged:\n{}", sink.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = Instant::now();
    pg.start_again();
    let took =
        wait_for_count(&pg, "SELECT count(*) FROM orders", 2 * HALF as i64, || sink.log()).await;
    println!(
        "caught up {:.2} s after PostgreSQL came back ({:.2} s down)",
        took.as_secs_f64(),
        down.elapsed().as_secs_f64() - took.as_secs_f64()
    );
    assert_rows_equal_records(&pg, "orders", &stored).await;

    // Told to stop while PostgreSQL is down, it stops (with an error) instead of retrying on.
    pg.stop("fast");
    let retries = sink.lines.lock().unwrap().iter().filter(|l| l.contains("retrying")).count();
    broker.produce((0..10).map(|i| record("orders", 2 * HALF + i)).collect()).await;
    let deadline = Instant::now() + PATIENCE;
    while sink.lines.lock().unwrap().iter().filter(|l| l.contains("retrying")).count() == retries {
        assert!(Instant::now() < deadline, "no retry logged:\n{}", sink.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = sink.terminate().await;
    assert!(!status.success() && sink.saw("stopped while retrying"), "{status}\n{}", sink.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_replace_rows_and_tombstones_delete_them() {
    let pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("users", 1).await;
    let client = pg.client().await;
    client
        .batch_execute("CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, age int, note text DEFAULT 'none')")
        .await
        .unwrap();
    let put = |id: i64, value: &str| {
        ProducerRecord::new("users").key(id.to_string()).value(value.to_string())
    };
    broker
        .produce(vec![
            put(1, r#"{"id": 1, "name": "ada", "age": 36}"#),
            put(2, r#"{"id": 2, "name": "bob", "age": 40}"#),
            put(3, r#"{"id": 3, "name": "cy", "age": 1}"#),
            put(1, r#"{"id": 1, "name": "ada lovelace"}"#), // age left as it was
            ProducerRecord::new("users").key("2"),          // tombstone: delete bob
            put(3, r#"{"name": "cyril", "age": 2}"#),       // id from the record key
            ProducerRecord::new("users").key("4"),          // tombstone of a row never written
            put(2, r#"{"id": 2, "name": "bob again"}"#),    // after its delete: a new row
        ])
        .await;
    let mut args = sink_args(&broker.addr(), &pg, "users", "pg-users", "users");
    args.extend(["--format", "json", "--mode", "upsert", "--key-columns", "id"].map(String::from));
    let mut sink = SinkProcess::start(&args);
    wait_for_count(
        &pg,
        "SELECT next_offset FROM strom_connect_offsets WHERE group_id = 'pg-users'",
        8,
        || sink.log(),
    )
    .await;
    let rows: Vec<(i32, String, Option<i32>, String)> = client
        .query("SELECT id, name, age, note FROM users ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, "ada lovelace".to_string(), Some(36), "none".to_string()),
            (2, "bob again".to_string(), None, "none".to_string()),
            (3, "cyril".to_string(), Some(2), "none".to_string()),
        ]
    );

    // A table the sink creates for JSON documents: the key columns and the value as jsonb.
    broker.create_topic("docs", 1).await;
    broker
        .produce(vec![
            ProducerRecord::new("docs").key("a").value(r#"{"n": 1}"#),
            ProducerRecord::new("docs").key("b").value(r#"{"n": 2}"#),
            ProducerRecord::new("docs").key("a").value(r#"{"n": 3}"#),
            ProducerRecord::new("docs").key("b"),
        ])
        .await;
    // This one from a --config file, as several sinks would be described.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sinks.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [[postgres]]
            name = "docs"
            bootstrap = "{}"
            topics = ["docs"]
            group = "pg-docs"
            dsn = "{}"
            table = "docs"
            format = "json"
            mode = "upsert"
            key_columns = ["sku"]
            session_timeout_ms = 6000
            batch = {{ flush_interval_ms = 100 }}
            "#,
            broker.addr(),
            pg.dsn()
        ),
    )
    .unwrap();
    let args = vec!["--config".to_string(), config.display().to_string()];
    let mut docs = SinkProcess::start(&args);
    wait_for_count(
        &pg,
        "SELECT next_offset FROM strom_connect_offsets WHERE group_id = 'pg-docs'",
        4,
        || docs.log(),
    )
    .await;
    let rows: Vec<(String, serde_json::Value)> = client
        .query("SELECT sku, value FROM docs ORDER BY sku", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("a".to_string(), serde_json::json!({"n": 3}))]);
    assert!(sink.terminate().await.success());
    assert!(docs.terminate().await.success());
}

/// Ten JSON records on one partition; 3 is not JSON, 6 has an age that is not a number.
async fn produce_with_bad_records(broker: &Broker) {
    broker.create_topic("people", 1).await;
    let records = (0..10)
        .map(|i| {
            let value = match i {
                3 => "{not json".to_string(),
                6 => format!(r#"{{"id": {i}, "age": "old"}}"#),
                _ => format!(r#"{{"id": {i}, "age": {i}}}"#),
            };
            ProducerRecord::new("people").key(i.to_string()).value(value)
        })
        .collect();
    broker.produce(records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_dead_letter_topic_with_their_origin() {
    let pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("people-dlq", 1).await;
    produce_with_bad_records(&broker).await;
    let client = pg.client().await;
    client.batch_execute("CREATE TABLE people (id int PRIMARY KEY, age int)").await.unwrap();
    let mut args = sink_args(&broker.addr(), &pg, "people", "pg-people", "people");
    args.extend(
        ["--format", "json", "--errors", "tolerate", "--dlq-topic", "people-dlq"].map(String::from),
    );
    let mut sink = SinkProcess::start(&args);
    wait_for_count(
        &pg,
        "SELECT next_offset FROM strom_connect_offsets WHERE group_id = 'pg-people'",
        10,
        || sink.log(),
    )
    .await;
    let ids: Vec<i32> = client
        .query("SELECT id FROM people ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 4, 5, 7, 8, 9]);

    let mut consumer = Consumer::new(ConsumerConfig::new(broker.addr())).await.unwrap();
    let tp = TopicPartition::new("people-dlq", PartitionId::new(0));
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, SeekTo::Beginning).unwrap();
    let mut dead = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while dead.len() < 2 {
        assert!(Instant::now() < deadline, "dead letters: {dead:?}");
        dead.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    let header = |r: &strom_consumer::ConsumerRecord, k: &str| -> String {
        let h = r.headers.iter().find(|h| h.key == k).unwrap_or_else(|| panic!("header {k}"));
        String::from_utf8(h.value.clone().unwrap().to_vec()).unwrap()
    };
    for (r, offset) in dead.iter().zip(["3", "6"]) {
        assert_eq!(header(r, strom_connect::DLQ_TOPIC_HEADER), "people");
        assert_eq!(header(r, strom_connect::DLQ_PARTITION_HEADER), "0");
        assert_eq!(header(r, strom_connect::DLQ_OFFSET_HEADER), offset);
        assert_eq!(r.key.as_deref(), Some(offset.as_bytes()));
    }
    assert!(header(&dead[0], strom_connect::DLQ_ERROR_HEADER).contains("invalid JSON"));
    assert!(
        header(&dead[1], strom_connect::DLQ_ERROR_HEADER).contains("22P02"),
        "{}",
        header(&dead[1], strom_connect::DLQ_ERROR_HEADER)
    );
    assert!(sink.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_record_stops_the_sink_with_nothing_committed_past_it() {
    let pg = Postgres::start();
    let broker = Broker::start().await;
    produce_with_bad_records(&broker).await;
    let client = pg.client().await;
    client.batch_execute("CREATE TABLE people (id int PRIMARY KEY, age int)").await.unwrap();
    let mut args = sink_args(&broker.addr(), &pg, "people", "pg-people", "people");
    args.extend(["--format", "json"].map(String::from));
    let mut sink = SinkProcess::start(&args);
    let status = sink.wait_exit(PATIENCE).await;
    assert!(!status.success(), "the sink must stop on a bad record:\n{}", sink.log());
    assert!(sink.saw("people/0@3") && sink.saw("invalid JSON"), "{}", sink.log());
    let ids: Vec<i32> = client
        .query("SELECT id FROM people ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![0, 1, 2]);
    let next: i64 = client
        .query_one(
            "SELECT next_offset FROM strom_connect_offsets WHERE group_id = 'pg-people'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 3, "the stored offset stops at the bad record");
}

/// BENCHMARKS.md's numbers: the sink's rows/s next to `psql \copy` of the same rows into a
/// table of the same shape on the same server. Run with
/// `STROM_BENCH_RECORDS=1000000 cargo test --release -p strom-connect --test postgres_sink -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand"]
async fn bench_sink_against_psql_copy() {
    let n: usize =
        std::env::var("STROM_BENCH_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(RECORDS);
    let pg = Postgres::start();
    let broker = Broker::start().await;
    broker.create_topic("orders", 3).await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100_000) {
        broker.produce(chunk.iter().map(|&i| record("orders", i)).collect()).await;
    }
    let client = pg.client().await;

    let started = Instant::now();
    let mut sink =
        SinkProcess::start(&sink_args(&broker.addr(), &pg, "orders", "pg-bench", "orders"));
    // From the first stored batch on: the group join is not the sink's throughput.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if rows > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", sink.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_batch = Instant::now();
    let first: i64 = client.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
    wait_for_count(&pg, "SELECT count(*) FROM orders", n as i64, || sink.log()).await;
    let steady = first_batch.elapsed().as_secs_f64();
    let total = started.elapsed().as_secs_f64();
    assert!(sink.terminate().await.success());

    // The same rows as a text COPY file, loaded with psql's \copy into an empty twin table.
    let file =
        std::env::temp_dir().join(format!("strom-connect-bench-{}.copy", std::process::id()));
    let psql = |command: &str| {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &pg.dsn(), "-c", command])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {command}: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("\\copy orders TO '{}'", file.display()));
    psql("CREATE TABLE orders_copy (LIKE orders INCLUDING ALL)");
    let copy_started = Instant::now();
    psql(&format!("\\copy orders_copy FROM '{}'", file.display()));
    let copy = copy_started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    println!(
        "strom-connect: {n} rows in {total:.2} s from start ({:.0} rows/s), {:.0} rows/s after the first batch",
        n as f64 / total,
        (n as f64 - first as f64) / steady
    );
    println!(
        "psql \\copy:    {n} rows ({:.0} MB text) in {copy:.2} s ({:.0} rows/s)",
        bytes as f64 / 1e6,
        n as f64 / copy
    );
}
