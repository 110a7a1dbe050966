//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! through `fantoccini`) against a real broker process. It creates a topic with the console's
//! form and sees its partitions, finds a produced topic in the list, sees a consumer group's
//! lag, and reads a produced record's key, pretty-printed JSON value and headers in the
//! message browser. A screenshot of every page is saved under `target/console-screenshots/`.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`; they are installed
//! with apt-get when missing (as `.ci/run` does), and the test fails rather than skips if that
//! is impossible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BrokerProcess, run_ok};
use fantoccini::{Client, ClientBuilder, Locator};
use strom_format::PartitionId;
use strom_producer::{Producer, ProducerConfig, ProducerRecord};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest a page may take to show what a step waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

fn ensure_browser() {
    let present =
        || std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if present() {
        return;
    }
    let install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                   chromium chromium-driver";
    let run = |script: &str| {
        Command::new("sh").args(["-c", script]).status().map(|s| s.success()).unwrap_or(false)
    };
    if !run(install) && !run(&format!("apt-get update -qq && {install}")) {
        panic!(
            "chromium/chromium-driver missing and apt-get install failed (needs root and network)"
        );
    }
    assert!(present(), "chromium or chromedriver still missing after apt-get install");
}

/// chromedriver on a free port; killed on drop.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot {}", path.display());
}

/// Opens a console route and waits until the page has rendered it.
async fn open(client: &Client, base: &str, route: &str) {
    client.goto(&format!("{base}/#{route}")).await.expect("goto");
    wait_css(client, &format!("body[data-loaded=\"{route}\"]")).await;
}

async fn wait_css(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

async fn text_of(client: &Client, css: &str) -> String {
    wait_css(client, css).await.text().await.expect("text")
}

#[test]
fn console_shows_topics_groups_lag_and_records_in_chromium() {
    ensure_browser();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.clone();
    let base = format!("http://{}", broker.http_addr());

    run_ok(
        "strom-admin",
        &["--bootstrap", &addr, "topics", "create", "browsed", "--partitions", "2"],
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = Producer::new(ProducerConfig::new(&addr)).await.unwrap();
        let first = ProducerRecord::new("browsed")
            .partition(PartitionId::new(0))
            .key("order-42")
            .value(r#"{"order":42,"items":["tea","scones"]}"#)
            .header("trace", Some(b"abc-123".as_slice()));
        producer.send(first).await.unwrap().await.unwrap();
        for i in 0..9 {
            let r = ProducerRecord::new("browsed")
                .partition(PartitionId::new(0))
                .value(format!("plain {i}"));
            producer.send(r).await.unwrap().await.unwrap();
        }
        producer.close().await;
    });
    // A group that read 4 of the 10 records: lag 6.
    run_ok(
        "strom-consumer",
        &[
            "--bootstrap",
            &addr,
            "--topic",
            "browsed",
            "--group",
            "watchers",
            "--from-beginning",
            "--max-messages",
            "4",
            "--timeout-ms",
            "30000",
        ],
        None,
    );

    let driver = Driver::start();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.1))
            .await
            .expect("WebDriver session");

        open(&client, &base, "/cluster").await;
        let nodes = text_of(&client, "#nodes-table tbody").await;
        assert!(nodes.contains("controller") && nodes.contains("live"), "cluster page: {nodes}");
        screenshot(&client, "cluster").await;

        // Create a topic through the form; the console goes to its page.
        open(&client, &base, "/topics").await;
        wait_css(&client, "tr[data-topic=\"browsed\"]").await;
        client
            .find(Locator::Css("#topic-name"))
            .await
            .unwrap()
            .send_keys("made-in-console")
            .await
            .unwrap();
        client.find(Locator::Css("#topic-partitions")).await.unwrap().send_keys("3").await.unwrap();
        screenshot(&client, "topics").await;
        client.find(Locator::Css("#create-button")).await.unwrap().click().await.unwrap();
        wait_css(&client, "body[data-loaded=\"/topics/made-in-console\"]").await;
        let rows = client.find_all(Locator::Css("#partitions-table tbody tr")).await.unwrap();
        assert_eq!(rows.len(), 3, "partitions of the created topic");
        screenshot(&client, "topic").await;

        open(&client, &base, "/groups/watchers").await;
        let lag = text_of(&client, "#total-lag").await;
        assert_eq!(lag, "6", "group lag");
        let p0 = text_of(&client, "tr[data-partition=\"browsed-0\"] td.lag").await;
        assert_eq!(p0, "6", "lag of browsed-0");
        wait_css(&client, "#lag-chart").await;
        screenshot(&client, "group").await;

        open(&client, &base, "/messages?topic=browsed&partition=0&offset=0&limit=5").await;
        let record = wait_css(&client, "tr.record[data-offset=\"0\"]").await;
        let key = record.find(Locator::Css("td.key")).await.unwrap().text().await.unwrap();
        let value = record.find(Locator::Css("td.value")).await.unwrap().text().await.unwrap();
        let headers = record.find(Locator::Css("td.headers")).await.unwrap().text().await.unwrap();
        assert!(key.contains("order-42"), "key: {key}");
        assert!(value.contains("\"order\": 42") && value.contains("json"), "pretty JSON: {value}");
        assert!(headers.contains("trace") && headers.contains("abc-123"), "headers: {headers}");
        let shown = client.find_all(Locator::Css("tr.record")).await.unwrap().len();
        assert_eq!(shown, 5, "limit 5");
        screenshot(&client, "messages").await;

        client.close().await.unwrap();
    });
    drop(driver);
    broker.stop();
}
