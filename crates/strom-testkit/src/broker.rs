//! A real broker in-process: `strom-broker` on `127.0.0.1:0`, data in a temporary directory
//! that lives as long as the [`TestBroker`]. Set-up failures panic: a test that cannot start
//! its broker should fail loudly, not skip.

use std::net::SocketAddr;

use strom_broker::{BrokerConfig, BrokerServer};
use strom_client::{Client, ClientConfig};

/// A started broker and the directory holding its data.
///
/// ```no_run
/// # async fn demo() {
/// let broker = strom_testkit::broker::TestBroker::start().await;
/// let client = broker.client().await;
/// client.create_topic("orders", 3, 1, Default::default()).await.unwrap();
/// # }
/// ```
#[derive(Debug)]
pub struct TestBroker {
    /// The running broker (public so a test can shut it down or reach its internals).
    pub server: BrokerServer,
    /// Where its data lives; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    /// Starts a broker with the default configuration, listening on port 0.
    pub async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    /// Starts a broker after `adjust` changed its configuration; the listen address and data
    /// directory are set before `adjust` runs.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// let broker = strom_testkit::broker::TestBroker::start_with(|config| config.data_dir.push("node-1")).await;
    /// # }
    /// ```
    pub async fn start_with(adjust: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        adjust(&mut config);
        let server = BrokerServer::start(config).await.expect("broker starts");
        TestBroker { server, dir }
    }

    /// The gRPC address clients dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The gRPC address as a bootstrap string (`127.0.0.1:PORT`).
    pub fn addr(&self) -> String {
        self.local_addr().to_string()
    }

    /// A client bootstrapped from this broker.
    pub async fn client(&self) -> Client {
        Client::connect(ClientConfig::new(self.addr())).await.expect("client connects")
    }
}
