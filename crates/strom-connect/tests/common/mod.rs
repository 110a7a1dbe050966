//! Harness of the PostgreSQL sink tests: a real PostgreSQL server in a temporary directory on
//! a free port (the Debian `postgresql` package, installed when missing), a real in-process
//! broker on port 0, and `strom-connect` processes that can be SIGKILLed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strom_broker::{BrokerConfig, BrokerServer};
use strom_client::{Client, ClientConfig};
use strom_producer::{Producer, ProducerConfig, ProducerRecord, RecordMetadata};

/// Bound on waiting for something that should happen; a guard against hangs, not a claim.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// Debian's `nobody`: PostgreSQL refuses to run as root.
const NOBODY: u32 = 65534;
/// Debian's `nogroup`.
const NOGROUP: u32 = 65534;

/// The directory holding `initdb`, `pg_ctl` and `postgres`, installing the package if needed.
fn pg_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = find_pg_bin() {
            return dir;
        }
        eprintln!("PostgreSQL not found: apt-get install -y postgresql");
        let _ = Command::new("apt-get").arg("update").status();
        let status = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("run apt-get");
        assert!(status.success(), "apt-get install postgresql failed");
        find_pg_bin().expect("postgresql installed but no /usr/lib/postgresql/*/bin/initdb")
    })
}

fn find_pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A free TCP port (bound to 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("addr").port()
}

/// A PostgreSQL server of its own; stopped (immediate) on drop.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    sockets: PathBuf,
    pub port: u16,
    running: bool,
}

impl Postgres {
    /// initdb in a temporary directory and start on a free port, user `strom`, trust auth.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sockets).unwrap();
        if is_root() {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            for d in [&data, &sockets] {
                std::os::unix::fs::chown(d, Some(NOBODY), Some(NOGROUP)).unwrap();
            }
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "strom", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { _dir: dir, data, sockets, port: free_port(), running: false };
        pg.start_again();
        pg
    }

    /// The DSN of database `postgres`.
    pub fn dsn(&self) -> String {
        format!("postgres://strom@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
            self.port,
            self.sockets.display()
        );
        let log = self.data.join("server.log");
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server: `fast` (clients disconnected, clean shutdown) or `immediate`.
    pub fn stop(&mut self, mode: &str) {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }

    /// A client connection (its driver runs on the current runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// A command from PostgreSQL's bin directory, as `nobody` when we are root.
fn pg_command(name: &str) -> Command {
    let mut command = Command::new(pg_bin().join(name));
    if is_root() {
        command.uid(NOBODY).gid(NOGROUP).env("HOME", "/tmp");
    }
    command.stdin(Stdio::null()).env("LC_ALL", "C");
    command
}

/// A real broker in this process, on port 0.
pub struct Broker {
    pub server: BrokerServer,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub async fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            kafka_listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        let server = BrokerServer::start(config).await.expect("start broker");
        let client =
            Client::connect(ClientConfig::new(server.local_addr().to_string())).await.unwrap();
        Broker { server, client, _dir: dir }
    }

    pub fn addr(&self) -> String {
        self.server.local_addr().to_string()
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.client.create_topic(name, partitions, 1, HashMap::new()).await.unwrap();
    }

    /// Produces the records, waiting until all are stored; returns where each went.
    pub async fn produce(&self, records: Vec<ProducerRecord>) -> Vec<RecordMetadata> {
        let producer = Producer::new(ProducerConfig::new(self.addr())).await.unwrap();
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            pending.push(producer.send(r).await.unwrap());
        }
        let mut stored = Vec::with_capacity(pending.len());
        for p in pending {
            stored.push(p.await.unwrap());
        }
        producer.close().await;
        stored
    }
}

/// A `strom-connect` process; SIGKILLed on drop. Its stderr lines are kept.
pub struct SinkProcess {
    child: Option<Child>,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl SinkProcess {
    pub fn start(args: &[String]) -> SinkProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strom-connect"))
            .args(args)
            .env("RUST_LOG", "strom_connect=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strom-connect");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("STROM_TEST_VERBOSE").is_some() {
                    eprintln!("[connect] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        SinkProcess { child: Some(child), lines }
    }

    /// SIGKILL: the crash path.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "strom-connect did not exit:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait_exit(PATIENCE).await
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn saw(&self, needle: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The partitions of the last "owning partitions" line.
    pub fn owned(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        let Some(line) = lines.iter().rev().find(|l| l.contains("owning partitions")) else {
            return Vec::new();
        };
        let Some(rest) = line.split("owned=").nth(1) else { return Vec::new() };
        let list = rest.split_whitespace().next().unwrap_or("");
        list.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The flags of `strom-connect postgres` for a test sink.
pub fn sink_args(
    bootstrap: &str,
    pg: &Postgres,
    topic: &str,
    group: &str,
    table: &str,
) -> Vec<String> {
    [
        "postgres",
        "--bootstrap",
        bootstrap,
        "--topics",
        topic,
        "--group",
        group,
        "--dsn",
        &pg.dsn(),
        "--table",
        table,
        "--session-timeout-ms",
        "6000",
        "--flush-interval-ms",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Polls `sql` (one bigint) until it equals `want`; panics with `context()` after PATIENCE.
pub async fn wait_for_count(
    pg: &Postgres,
    sql: &str,
    want: i64,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = tokio_postgres::connect(&pg.dsn(), tokio_postgres::NoTls).await.ok().map(
                |(c, conn)| {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    c
                },
            );
        }
        let got = match &client {
            Some(c) => c.query_one(sql, &[]).await.ok().map(|r| r.get::<_, i64>(0)),
            None => None,
        };
        if got == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{sql}: got {got:?}, want {want} after {PATIENCE:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
