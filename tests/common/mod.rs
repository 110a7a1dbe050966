//! Shared harness of the multi-process tests: starts real `strom-broker` processes on port 0
//! in a temporary data directory and runs the CLI binaries against them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn bin(name: &str) -> PathBuf {
    match name {
        "strom-broker" => env!("CARGO_BIN_EXE_strom-broker").into(),
        "strom-admin" => env!("CARGO_BIN_EXE_strom-admin").into(),
        "strom-producer" => env!("CARGO_BIN_EXE_strom-producer").into(),
        "strom-consumer" => env!("CARGO_BIN_EXE_strom-consumer").into(),
        "strom-bench" => env!("CARGO_BIN_EXE_strom-bench").into(),
        other => panic!("unknown binary {other}"),
    }
}

/// A broker child process; killed (SIGKILL) on drop if still running.
pub struct BrokerProcess {
    child: Option<Child>,
    pub addr: String,
    /// The Kafka listener's address, as the broker printed it (read by `kafka_addr`).
    kafka: Option<mpsc::Receiver<String>>,
    kafka_addr: Option<String>,
    /// The HTTP listener's address, as the broker printed it (read by `http_addr`).
    http: Option<mpsc::Receiver<String>>,
    http_addr: Option<String>,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
}

impl BrokerProcess {
    /// Starts a broker on 127.0.0.1:0 with `data_dir`, waiting until it listens.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> BrokerProcess {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::start_on(data_dir, "127.0.0.1:0", extra_args)
    }

    /// Like [`BrokerProcess::start`], with SIGXFSZ ignored in the broker, so a file-size limit
    /// makes its writes fail (EFBIG) instead of killing it.
    pub fn start_ignoring_sigxfsz(data_dir: &Path, extra_args: &[&str]) -> BrokerProcess {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir, "127.0.0.1:0", extra_args, true)
    }

    /// Starts a broker on a fixed `listen` address (cluster members must know each other's
    /// addresses before they start).
    pub fn start_at(data_dir: &Path, listen: &str, extra_args: &[String]) -> BrokerProcess {
        Self::start_on(data_dir, listen, extra_args.to_vec())
    }

    /// SIGSTOP: a frozen process (a long GC pause, a cut link).
    pub fn freeze(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
    }

    /// SIGCONT after [`BrokerProcess::freeze`].
    pub fn thaw(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
    }

    fn start_on(data_dir: &Path, listen: &str, extra_args: Vec<String>) -> BrokerProcess {
        Self::spawn(data_dir, listen, extra_args, false)
    }

    fn spawn(
        data_dir: &Path,
        listen: &str,
        extra_args: Vec<String>,
        ignore_sigxfsz: bool,
    ) -> BrokerProcess {
        let mut command = Command::new(bin("strom-broker"));
        if ignore_sigxfsz {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec; an ignored signal
            // stays ignored across exec.
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        if !extra_args.iter().any(|a| a == "--kafka-listen") {
            // A fixed Kafka port only where a test needs it to survive a restart.
            command.args(["--kafka-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--listen")
            .arg(listen)
            // Port 0, so brokers of parallel tests never fight over the default 9096; a test
            // may still pass its own `--http-listen` (the last one wins).
            .args(["--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(&extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strom-broker");
        let (tx, rx) = mpsc::channel();
        let (ktx, krx) = mpsc::channel();
        let (htx, hrx) = mpsc::channel();
        // The listening line may come on stdout or stderr; both are drained for the process's
        // whole life so it never blocks on a full pipe.
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let ktx = ktx.clone();
            let htx = htx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("STROM_TEST_VERBOSE").is_some() {
                        eprintln!("[broker] {line}");
                    }
                    if let Some(rest) = line.split("kafka protocol on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = ktx.send(addr);
                    }
                    if let Some(rest) = line.split("strom-broker http on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = htx.send(addr);
                    }
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("strom-broker did not report its address in {START_TIMEOUT:?}");
            }
        };
        BrokerProcess {
            child: Some(child),
            addr,
            kafka: Some(krx),
            kafka_addr: None,
            http: Some(hrx),
            http_addr: None,
            data_dir: data_dir.to_path_buf(),
            extra_args,
        }
    }

    /// The address of its Kafka listener (waits for the broker to have printed it).
    pub fn kafka_addr(&mut self) -> String {
        if let Some(rx) = self.kafka.take() {
            let addr =
                rx.recv_timeout(START_TIMEOUT).expect("the broker printed its Kafka address");
            self.kafka_addr = Some(addr);
        }
        self.kafka_addr.clone().expect("Kafka address known")
    }

    /// The address of its HTTP listener (waits for the broker to have printed it).
    pub fn http_addr(&mut self) -> String {
        if let Some(rx) = self.http.take() {
            let addr = rx.recv_timeout(START_TIMEOUT).expect("the broker printed its HTTP address");
            self.http_addr = Some(addr);
        }
        self.http_addr.clone().expect("HTTP address known")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("broker running")
    }

    /// SIGTERM and wait: the graceful path (flush, clean-shutdown markers).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().expect("wait broker");
            assert!(status.success(), "broker exited with {status} after SIGTERM");
        }
    }

    /// SIGKILL: the crash path.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same address and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running broker");
        let again = Self::start_on(&self.data_dir, &self.addr, self.extra_args.clone());
        *self = again;
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a CLI binary to completion with optional stdin, returning its output.
pub fn run(name: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin(name))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Written from a thread so a child that fills its stdout cannot deadlock us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("wait {name}: {e}"))
}

/// Like [`run`], but fails the test with the child's stderr unless it exits 0.
pub fn run_ok(name: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(name, args, stdin);
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}
