//! A full disk under a running broker, as a user meets it: writes fail fast with
//! KAFKA_STORAGE_ERROR, `strom-producer` warns on each retry round and, when its delivery
//! timeout runs out, lists every line that was not stored and exits non-zero; once space is
//! free the same broker process takes writes again within seconds, and no record reported as
//! failed is ever readable.
//!
//! The small disk is a 4 MiB tmpfs filled with a ballast file when the test runs as root (and
//! may mount); otherwise the broker runs under a file-size limit (RLIMIT_FSIZE, set on the
//! running process with prlimit), which refuses writes the same way (EFBIG instead of ENOSPC).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BrokerProcess, bin, run_ok};
use strom_consumer::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
use strom_format::PartitionId;
use strom_producer::{ErrorCode, Producer, ProducerConfig, ProducerRecord};

/// How the test takes space away and gives it back.
enum SmallDisk {
    /// A tmpfs mount and the ballast file that fills it.
    Tmpfs { mount: PathBuf, ballast: PathBuf },
    /// A file-size limit on the broker process.
    FileSizeLimit { pid: i32 },
}

impl SmallDisk {
    /// A tmpfs of `bytes` at `mount` when possible.
    fn try_mount(mount: &Path, bytes: u64) -> bool {
        std::fs::create_dir_all(mount).unwrap();
        // STROM_TEST_NO_TMPFS=1 runs the fallback even as root.
        if unsafe { libc::geteuid() } != 0 || std::env::var_os("STROM_TEST_NO_TMPFS").is_some() {
            return false;
        }
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(mount)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn fill(&self) {
        match self {
            SmallDisk::Tmpfs { ballast, .. } => {
                let mut file = std::fs::File::create(ballast).unwrap();
                let chunk = vec![0u8; 4096];
                // To the brim: until the file system refuses another byte.
                while file.write_all(&chunk).is_ok() {}
                while file.write_all(&[0]).is_ok() {}
            }
            SmallDisk::FileSizeLimit { pid } => set_fsize_limit(*pid, 0),
        }
    }

    fn free(&self) {
        match self {
            SmallDisk::Tmpfs { ballast, .. } => std::fs::remove_file(ballast).unwrap(),
            SmallDisk::FileSizeLimit { pid } => set_fsize_limit(*pid, libc::RLIM_INFINITY),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SmallDisk::Tmpfs { .. } => "tmpfs",
            SmallDisk::FileSizeLimit { .. } => "file-size limit",
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let SmallDisk::Tmpfs { mount, .. } = self {
            let _ = Command::new("umount").arg("-l").arg(&*mount).status();
        }
    }
}

/// Sets RLIMIT_FSIZE of a running process; 0 means "no file may grow".
fn set_fsize_limit(pid: i32, bytes: libc::rlim_t) {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn read_values(addr: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut consumer = Consumer::new(ConsumerConfig::new(addr)).await.unwrap();
        let tp = TopicPartition::new("full", PartitionId::new(0));
        consumer.assign(vec![tp.clone()]);
        consumer.seek(&tp, SeekTo::Beginning).unwrap();
        let end = consumer
            .client()
            .list_offset("full", tp.partition, strom_client::OffsetSpec::Latest)
            .await
            .unwrap()
            .map_or(0, |o| o.get());
        let mut values = Vec::new();
        while (values.len() as i64) < end {
            for r in consumer.poll(Duration::from_secs(1)).await.unwrap() {
                values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        values
    })
}

fn lines(prefix: &str, n: usize) -> String {
    sized_lines(prefix, n, 200)
}

fn sized_lines(prefix: &str, n: usize, size: usize) -> String {
    (0..n).map(|i| format!("{prefix}-{i}-{}\n", "x".repeat(size))).collect()
}

#[test]
fn full_disk_fails_fast_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    let mounted = SmallDisk::try_mount(&mount, 4 << 20);
    let data_dir = mount.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // The broker ignores SIGXFSZ only if told to by the shell around it: the fallback needs
    // writes past the limit to fail with EFBIG rather than kill the process.
    let broker = BrokerProcess::start_ignoring_sigxfsz(&data_dir, &[]);
    let addr = broker.addr.clone();
    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", "full", "--partitions", "1"],
        None,
    );
    run_ok("strom-producer", &["--bootstrap", &addr, "--topic", "full"], Some(b"before\n"));
    let disk = if mounted {
        SmallDisk::Tmpfs { ballast: mount.join("ballast"), mount }
    } else {
        SmallDisk::FileSizeLimit { pid: broker.pid() }
    };
    disk.fill();

    // Fast: with no retries, a produce comes back failed at once, not after a timeout.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (fail_ms, err) = rt.block_on(async {
        let config = ProducerConfig::builder(addr.clone()).retries(0_u32).build().unwrap();
        let producer = Producer::new(config).await.unwrap();
        let start = Instant::now();
        // Larger than a page, so it cannot land in the slack of the segment's last page.
        let record = ProducerRecord::new("full").value(format!("probe-{}", "x".repeat(10_000)));
        let err = producer.send(record).await.unwrap().await.unwrap_err();
        (start.elapsed().as_millis(), err)
    });
    assert_eq!(err.code(), Some(ErrorCode::KafkaStorageError), "{err}");
    assert!(fail_ms < 2_000, "a produce to a full disk took {fail_ms} ms to fail");

    // Honest report: everything fails after the delivery timeout, every line is listed.
    let failed_file = dir.path().join("failed.txt");
    let out = common::run(
        "strom-producer",
        &[
            "--bootstrap",
            &addr,
            "--topic",
            "full",
            "--delivery-timeout-ms",
            "2000",
            "--failed-output",
            failed_file.to_str().unwrap(),
        ],
        // Each record larger than a page: a batch must not fit in the slack of the segment's
        // last page (the idempotent producer's first batch can be a small one).
        Some(sized_lines("lost", 300, 5_000).as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "producer exited 0 on a full disk:\n{stderr}");
    assert!(stderr.contains("produce failed; retrying"), "no retry warning:\n{stderr}");
    let report = std::fs::read_to_string(&failed_file).unwrap();
    if std::env::var_os("STROM_TEST_VERBOSE").is_some() {
        eprintln!("{stderr}\n{}", report.lines().take(3).collect::<Vec<_>>().join("\n"));
    }
    let failed_lines: HashSet<u64> = report
        .lines()
        .map(|l| l.strip_prefix("line ").unwrap().split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(failed_lines.len(), 300, "every line reported once:\n{report}");

    // Space again: a producer started while the disk is full gets through once it is freed,
    // without a broker restart.
    let mut producer = Command::new(bin("strom-producer"))
        .args(["--bootstrap", &addr, "--topic", "full", "--delivery-timeout-ms", "60000"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    producer.stdin.take().unwrap().write_all(lines("kept", 300).as_bytes()).unwrap();
    let mut stderr = BufReader::new(producer.stderr.take().unwrap()).lines();
    let first = stderr.next().expect("a retry warning while the disk is full").unwrap();
    assert!(first.contains("produce failed; retrying"), "{first}");
    disk.free();
    let freed = Instant::now();
    let status = producer.wait().unwrap();
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    assert!(status.success(), "producer failed after space was freed:\n{}", rest.join("\n"));
    let recovery = freed.elapsed();
    assert!(recovery < Duration::from_secs(10), "recovery took {recovery:?}");

    let values = read_values(&addr);
    let readable: HashSet<&str> = values.iter().map(|v| v.split('-').next().unwrap()).collect();
    assert!(!readable.contains("lost"), "a record reported failed is readable");
    assert!(!readable.contains("probe"), "the failed probe is readable");
    assert_eq!(values.iter().filter(|v| v.starts_with("kept-")).count(), 300);
    assert_eq!(values.first().map(String::as_str), Some("before"));
    println!(
        "full disk ({}): produce failed in {fail_ms} ms, 300/300 failed lines reported, \
         writes resumed {:.1}s after space was freed, 0 failed records readable",
        disk.name(),
        recovery.as_secs_f64()
    );
    drop(broker);
}
