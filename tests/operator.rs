//! The broker and CLI as an operator meets them: `--listen localhost:0` works, silent
//! connections are reaped after `--connections-max-idle-ms` and a connection limit holds, a
//! broker that cannot write its stderr says so instead of dying silently, logs in pipes and
//! files carry no colour codes, and bad flag values are named as such (not as an unreachable
//! cluster).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BrokerProcess, bin, run};

#[test]
fn listen_accepts_host_names_and_idle_connections_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("strom-broker"))
        .args(["--listen", "localhost:0", "--connections-max-idle-ms", "500"])
        .args(["--kafka-listen", "none", "--http-listen", "none"])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--log-file")
        .arg(dir.path().join("broker.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("listening line");
    let addr = line.split("listening on ").nth(1).expect(&line).trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // A connection that never sends a byte is closed by the broker.
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match silent.read(&mut buf) {
            Ok(0) => break,
            // Whatever the server wrote first (its HTTP/2 settings); keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("silent connection not closed: {e}"),
        }
    }
    let reaped = start.elapsed();
    assert!(reaped >= Duration::from_millis(400), "closed after {reaped:?}");
    // Clients still work (and reconnect after their own idle connections are reaped).
    let out = run("strom-admin", &["--bootstrap", &addr, "topics", "list"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap();
    assert!(log.contains("listening on"), "log file: {log}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log file");
    let _ = child.kill();
    let _ = child.wait();
    println!("operator: silent connection closed after {:.2}s", reaped.as_secs_f64());
}

#[test]
fn connection_limit_closes_extra_connections() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--max-connections", "2"]);
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&broker.addr).unwrap()).collect();
    let mut extra = TcpStream::connect(&broker.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    let closed = matches!(extra.read(&mut buf), Ok(0))
        || matches!(extra.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed, "a connection over the limit was kept");
    drop(held);
}

#[test]
fn unwritable_stderr_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(bin("strom-broker"))
        .args(["--listen", "127.0.0.1:0", "--kafka-listen", "none", "--http-listen", "none"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(full)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cannot write to stderr"), "{stdout}");
}

#[test]
fn bad_flag_values_are_named() {
    let out = run(
        "strom-producer",
        &["--bootstrap", "127.0.0.1:1", "--topic", "t", "--batch-size", "0"],
        Some(b""),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--batch-size") && !stderr.contains("cannot reach"), "{stderr}");
    let out = run("strom-producer", &["--topic", "t", "--delivery-timeout-ms", "0"], Some(b""));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--delivery-timeout-ms"));
    let out = run("strom-consumer", &["--topic", "t", "--output", "xml"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));
}
