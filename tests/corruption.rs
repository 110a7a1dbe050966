//! A flipped byte in a segment, as a user meets it: the consumer does not retry silently
//! forever but exits non-zero naming the partition and offset, the other partitions are still
//! served, `topics describe` shows the partition's storage error, and the offline tools
//! (`strom-admin log verify` / `log dump`) find the corrupt range.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{BrokerProcess, run, run_ok};
use strom_format::PartitionId;
use strom_producer::{Producer, ProducerConfig, ProducerRecord};

const RECORDS: usize = 300;

fn segment(data_dir: &std::path::Path, partition: i32) -> PathBuf {
    data_dir.join(format!("c-{partition}")).join(format!("{:020}.log", 0))
}

#[test]
fn corruption_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.clone();
    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", "c", "--partitions", "2"],
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Small batches, so the damage sits in the middle of the segment.
        let config = ProducerConfig::builder(addr.clone()).batch_size(1024_usize).build().unwrap();
        let producer = Producer::new(config).await.unwrap();
        let mut pending = Vec::new();
        for i in 0..RECORDS {
            for p in 0..2 {
                let record = ProducerRecord::new("c")
                    .partition(PartitionId::new(p))
                    .value(format!("p{p}-{i}-{}", "x".repeat(100)));
                pending.push(producer.send(record).await.unwrap());
            }
        }
        for f in pending {
            f.await.unwrap();
        }
        producer.close().await;
    });
    broker.stop();

    // Flip one byte in the middle of partition 0's only segment.
    let file = segment(dir.path(), 0);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();

    broker.restart();
    let addr = broker.addr.clone();
    let start = Instant::now();
    let out = run(
        "strom-consumer",
        &[
            "--bootstrap",
            &addr,
            "--topic",
            "c",
            "--from-beginning",
            "--timeout-ms",
            "6000",
            "--storage-error-timeout-ms",
            "2000",
        ],
        None,
    );
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "consumer exited 0 on a corrupt partition:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("c-0") && last.contains("at offset "), "error names no offset: {last}");
    assert!(took < Duration::from_secs(20), "gave up only after {took:?}");
    // The other partition is served in full; partition 0 up to the damage.
    let p1 = stdout.lines().filter(|l| l.starts_with("p1-")).count();
    let p0 = stdout.lines().filter(|l| l.starts_with("p0-")).count();
    assert_eq!(p1, RECORDS, "partition 1 not fully served");
    assert!(p0 < RECORDS, "records past the damage were served");

    let described = run_ok("strom-admin", &["--bootstrap", &addr, "topics", "describe", "c"], None);
    assert!(
        described.contains("partition 0: STORAGE ERROR") && !described.contains("partition 1:"),
        "{described}"
    );
    broker.stop();

    let verify = run("strom-admin", &["log", "verify", dir.path().to_str().unwrap()], None);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "verify passed a corrupt log:\n{report}");
    let corrupt: Vec<&str> = report.lines().filter(|l| l.starts_with("CORRUPT")).collect();
    assert_eq!(corrupt.len(), 1, "{report}");
    assert!(corrupt[0].contains("c-0/"), "{report}");
    let dump = run("strom-admin", &["log", "dump", file.to_str().unwrap()], None);
    let dumped = String::from_utf8_lossy(&dump.stdout);
    assert!(!dump.status.success());
    let range = dumped.lines().find(|l| l.starts_with("CORRUPT bytes")).expect("a corrupt range");
    let (start_byte, end_byte) = range
        .strip_prefix("CORRUPT bytes ")
        .and_then(|r| r.split_once(' '))
        .and_then(|(r, _)| r.split_once(".."))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
        .unwrap();
    assert!(start_byte <= at && at < end_byte, "range {start_byte}..{end_byte} misses byte {at}");
    assert!(dumped.lines().filter(|l| l.starts_with("baseOffset:")).count() > 2);
    println!(
        "corruption: consumer gave up after {:.1}s ({last}), partition 1 served {p1}/{RECORDS}, \
         verify and dump found bytes {start_byte}..{end_byte}",
        took.as_secs_f64()
    );
}
