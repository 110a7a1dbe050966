//! A broker with a Kafka listener on port 0 in a temp dir, and a blocking Kafka client that
//! encodes requests and decodes responses with the kafka-protocol crate.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use strom_broker::{Broker, BrokerConfig, NewTopic};
use strom_format::{BatchBuilder, Compression};
use strom_kafka::{KafkaConfig, KafkaListener};

pub struct Node {
    pub rt: tokio::runtime::Runtime,
    pub broker: Arc<Broker>,
    listener: Option<KafkaListener>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A node whose Kafka listener uses `kafka` (its `listen` is replaced by port 0).
    pub fn start(kafka: KafkaConfig) -> Node {
        Node::start_with(kafka, |_| {})
    }

    /// [`Node::start`], with the broker's configuration changed by `tune` first.
    pub fn start_with(kafka: KafkaConfig, tune: impl FnOnce(&mut BrokerConfig)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            offsets_topic_num_partitions: 2,
            fetch_max_wait_ms: 500,
            ..BrokerConfig::default()
        };
        tune(&mut config);
        let (broker, listener) = rt.block_on(async {
            let broker = Broker::open(config).await.unwrap();
            let k = KafkaConfig { listen: "127.0.0.1:0".parse().unwrap(), ..kafka };
            let listener = KafkaListener::start(broker.clone(), k).await.unwrap();
            (broker, listener)
        });
        let addr = listener.local_addr();
        Node { rt, broker, listener: Some(listener), addr, _dir: dir }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let topic = NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: 1,
            configs: Default::default(),
        };
        self.rt.block_on(self.broker.create_topic(topic, false)).unwrap();
    }

    /// Appends one record to a partition; returns its offset.
    pub fn produce(&self, topic: &str, partition: i32, value: &str) -> i64 {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(0, None, Some(value.as_bytes()), &[]);
        let batch = b.build().unwrap();
        let out = self
            .rt
            .block_on(self.broker.produce(topic, partition, batch, 1, Duration::from_secs(5)))
            .unwrap();
        out.base_offset
    }

    /// A raw connection to the Kafka listener; a read waits at most 10 s.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn client(&self) -> Client {
        Client { s: self.connect(), next_id: 1 }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let listener = self.listener.take();
        let broker = self.broker.clone();
        self.rt.block_on(async {
            if let Some(l) = listener {
                l.shutdown().await;
            }
            let _ = broker.shutdown().await;
        });
    }
}

pub struct Client {
    s: TcpStream,
    next_id: i32,
}

impl Client {
    /// Sends `body` as `api` at `version` and decodes the answer.
    pub fn call<Req, Resp>(&mut self, api: ApiKey, version: i16, body: &Req) -> Resp
    where
        Req: Encodable,
        Resp: Decodable + HeaderVersion,
    {
        let cid = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, api.request_header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.s.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).expect("an answer");
        let mut response = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut response).unwrap();
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, Resp::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, cid);
        let decoded = Resp::decode(&mut response, version).unwrap();
        assert_eq!(response.remaining(), 0, "{api:?} v{version}: bytes left after the body");
        decoded
    }
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
