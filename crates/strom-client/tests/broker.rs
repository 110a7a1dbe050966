//! The client against a real in-process broker on port 0: bootstrap, metadata cache, admin
//! operations and their error mapping, list offsets.

use std::collections::HashMap;

use strom_client::{Client, ClientConfig, ClientError, ErrorCode, OffsetSpec};
use strom_format::{Offset, PartitionId};
use strom_testkit::broker::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_round_trip_and_error_mapping() {
    let broker = TestBroker::start().await;
    // The first address is dead: bootstrap moves on to the next.
    let bootstrap = format!("127.0.0.1:1,{}", broker.local_addr());
    let client = Client::connect(ClientConfig::new(bootstrap)).await.unwrap();

    let configs = HashMap::from([("retention.ms".to_owned(), "3600000".to_owned())]);
    client.create_topic("orders", 3, 1, configs).await.unwrap();
    let err = client.create_topic("orders", 3, 1, HashMap::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");
    assert!(!err.is_retriable());
    let err = client.create_topic("bad", 0, 1, HashMap::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidArgument(_)));

    let listed = client.list_topics(false).await.unwrap();
    assert!(listed.iter().any(|t| t.name == "orders" && t.num_partitions == 3));

    let described = client.describe_topics(&["orders".to_owned()]).await.unwrap();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].partitions.len(), 3);
    assert_eq!(described[0].configs.get("retention.ms").map(String::as_str), Some("3600000"));

    let info = client.topic_metadata("orders").await.unwrap();
    assert_eq!(info.num_partitions(), 3);
    assert!(info.partitions.iter().all(|p| p.leader >= 0));
    assert_eq!(client.cached_topic("orders").as_deref(), Some(&*info));
    client.broker_for("orders", PartitionId::new(2)).await.unwrap();
    let err = client.broker_for("orders", PartitionId::new(3)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopicOrPartition));

    let p0 = PartitionId::new(0);
    assert_eq!(
        client.list_offset("orders", p0, OffsetSpec::Earliest).await.unwrap(),
        Some(Offset::ZERO)
    );
    assert_eq!(
        client.list_offset("orders", p0, OffsetSpec::Latest).await.unwrap(),
        Some(Offset::ZERO)
    );

    assert!(matches!(
        client.topic_metadata("missing").await,
        Err(ClientError::UnknownTopic(t)) if t == "missing"
    ));
    client.delete_topic("orders").await.unwrap();
    assert!(matches!(client.delete_topic("orders").await, Err(ClientError::UnknownTopic(_))));
    assert!(matches!(client.refresh_metadata("orders").await, Err(ClientError::UnknownTopic(_))));

    broker.server.shutdown().await.unwrap();
}
