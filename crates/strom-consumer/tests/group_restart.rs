//! A consumer group against a real in-process broker that restarts: the coordinator forgets
//! every member, members learn it from their next heartbeat (UNKNOWN_MEMBER_ID) and rejoin at
//! once, so the group consumes again well within one session timeout. The test waits on the
//! group's events (a new assignment after the restart, records produced after it) and prints
//! how long the recovery took.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use strom_broker::{BrokerConfig, BrokerServer};
use strom_client::{Client, ClientConfig};
use strom_consumer::{Consumer, ConsumerConfig, OffsetReset};
use strom_format::{BatchBuilder, Compression, PartitionId};
use strom_proto::v1::{PartitionProduceData, ProduceRequest, TopicProduceData};
use tokio::time::Instant;

const TOPIC: &str = "restart";
const SESSION: Duration = Duration::from_secs(10);

async fn produce(addr: &str, partition: i32, value: &str) {
    let client = Client::connect(ClientConfig::new(addr)).await.unwrap();
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    let request = ProduceRequest {
        acks: -1,
        timeout_ms: 10_000,
        topics: vec![TopicProduceData {
            name: TOPIC.into(),
            partitions: vec![PartitionProduceData { partition, records: b.build().unwrap() }],
        }],
    };
    let mut broker = client.broker_for(TOPIC, PartitionId::new(partition)).await.unwrap();
    let response = broker.produce(request).await.unwrap().into_inner();
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_member_group_consumes_again_soon_after_its_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let server = BrokerServer::start(config.clone()).await.unwrap();
    let addr = server.local_addr();
    let client = Client::connect(ClientConfig::new(addr.to_string())).await.unwrap();
    client.create_topic(TOPIC, 2, 1, HashMap::new()).await.unwrap();
    let consumer_config = ConsumerConfig::builder(addr.to_string())
        .group_id("survivors")
        .auto_offset_reset(OffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(50))
        .retry_backoff(Duration::from_millis(20))
        .session_timeout(SESSION)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let a = Running::subscribe(Consumer::new(consumer_config.clone()).await.unwrap(), &[TOPIC]);
    let b = Running::subscribe(Consumer::new(consumer_config).await.unwrap(), &[TOPIC]);
    let all = [tp(TOPIC, 0), tp(TOPIC, 1)];
    wait_for(&[&a, &b], "a balanced group", |s| {
        balanced(s, &all) && s.iter().all(|s| s.assignment.len() == 1)
    })
    .await;
    let events_before: Vec<usize> = [&a, &b].iter().map(|r| r.seen().events.len()).collect();

    // Restart the broker on the same address and data: group membership is gone with it.
    server.shutdown().await.unwrap();
    let server = BrokerServer::start(BrokerConfig { listen: addr, ..config }).await.unwrap();
    let restarted = Instant::now();
    for p in 0..2 {
        produce(&addr.to_string(), p, &format!("after-restart-{p}")).await;
    }
    wait_for(
        &[&a, &b],
        "the group to rebalance and read records produced after the restart",
        |s| {
            // The group, not each member, must read both: the member that rejoins first may
            // hold both partitions for a moment and read both records before the other joins.
            let read = |value: &str| s.iter().any(|s| s.records.iter().any(|r| r.2 == value));
            balanced(s, &all)
                && s.iter().zip(&events_before).all(|(s, before)| s.events.len() > *before)
                && read("after-restart-0")
                && read("after-restart-1")
        },
    )
    .await;
    let took = restarted.elapsed();
    println!(
        "group consuming again {:.2} s after the broker restart (session timeout {} s)",
        took.as_secs_f64(),
        SESSION.as_secs()
    );
    for s in [a.seen(), b.seen()] {
        assert!(s.events.iter().any(|e| matches!(e, Event::Assigned(tps) if !tps.is_empty())));
    }
    a.stop().await;
    b.stop().await;
    server.shutdown().await.unwrap();
}
