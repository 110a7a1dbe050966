//! KIP-227 incremental fetch sessions over the wire: a full fetch creates a session, an
//! incremental one names only what changed and is answered only with partitions that have news,
//! forgotten partitions leave the session, a wrong epoch or id is refused, epoch -1 stays
//! sessionless, and a full cache evicts a stale session for a new one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::*;
use strom_kafka::KafkaConfig;
use strom_kafka::fetch_session::{FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH};
use support::{Client, Node, topic};

const V: i16 = 12;

fn request(session_id: i32, epoch: i32, changed: &[(i32, i64)]) -> FetchRequest {
    let partitions = changed
        .iter()
        .map(|&(p, offset)| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let topics = if changed.is_empty() {
        vec![]
    } else {
        vec![FetchTopic::default().with_topic(topic("s")).with_partitions(partitions)]
    };
    FetchRequest::default()
        .with_max_wait_ms(20)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

fn fetch(c: &mut Client, r: &FetchRequest) -> FetchResponse {
    c.call(ApiKey::Fetch, V, r)
}

/// (partition, bytes of records) of every partition in the answer.
fn answered(r: &FetchResponse) -> Vec<(i32, usize)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.records.as_ref().map_or(0, |b| b.len())))
        })
        .collect()
}

#[test]
fn sessions_create_update_forget_and_refuse_bad_epochs() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("s", 3);
    node.produce("s", 0, "a");
    let mut c = node.client();

    // Full request, epoch 0: every partition answered, a session handed out.
    let full = fetch(&mut c, &request(0, 0, &[(0, 0), (1, 0), (2, 0)]));
    assert_eq!(full.error_code, 0);
    let id = full.session_id;
    assert_ne!(id, 0, "a full fetch with epoch 0 creates a session");
    let parts = answered(&full);
    assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(parts[0].1 > 0, "partition 0 has a record");

    // Incremental, epoch 1: partition 0 moved past its record; nothing changed anywhere.
    let quiet = fetch(&mut c, &request(id, 1, &[(0, 1)]));
    assert_eq!((quiet.error_code, quiet.session_id), (0, id));
    assert!(answered(&quiet).is_empty(), "unchanged partitions are left out: {quiet:?}");

    // A record on partition 1: only it is answered, though the request names nothing.
    node.produce("s", 1, "b");
    let news = fetch(&mut c, &request(id, 2, &[]));
    let parts = answered(&news);
    assert_eq!(parts.len(), 1, "{news:?}");
    assert_eq!(parts[0].0, 1);
    assert!(parts[0].1 > 0);

    // Forget partition 2: a record there is no longer answered. Partition 1 is fetched from
    // offset 1 now, so it has nothing new either.
    let mut forget = request(id, 3, &[(1, 1)]);
    forget.forgotten_topics_data =
        vec![ForgottenTopic::default().with_topic(topic("s")).with_partitions(vec![2])];
    assert!(answered(&fetch(&mut c, &forget)).is_empty());
    node.produce("s", 2, "c");
    let after = fetch(&mut c, &request(id, 4, &[]));
    assert!(answered(&after).is_empty(), "a forgotten partition is not fetched: {after:?}");

    // A stale or future epoch, and an unknown id: refused at the top level with session 0,
    // and the session survives the bad epoch.
    for bad in [4, 9] {
        let r = fetch(&mut c, &request(id, bad, &[]));
        assert_eq!((r.error_code, r.session_id), (INVALID_FETCH_SESSION_EPOCH, 0));
        assert!(r.responses.is_empty());
    }
    let r = fetch(&mut c, &request(id.wrapping_add(1).max(1), 5, &[]));
    assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND);
    assert_eq!(fetch(&mut c, &request(id, 5, &[])).error_code, 0);

    // The session works from another connection too (it belongs to the listener).
    let mut other = node.client();
    node.produce("s", 0, "d");
    let moved = fetch(&mut other, &request(id, 6, &[]));
    assert_eq!(answered(&moved).iter().map(|p| p.0).collect::<Vec<_>>(), vec![0]);

    // Epoch -1 with the id closes the session and is answered in full, sessionless.
    let last = fetch(&mut c, &request(id, -1, &[(0, 0), (1, 0)]));
    assert_eq!((last.error_code, last.session_id), (0, 0));
    assert_eq!(answered(&last).len(), 2);
    assert_eq!(fetch(&mut c, &request(id, 7, &[])).error_code, FETCH_SESSION_ID_NOT_FOUND);
}

#[test]
fn sessionless_clients_and_old_versions_get_session_zero() {
    let node = Node::start(KafkaConfig::new("127.0.0.1:0".parse().unwrap()));
    node.create_topic("s", 1);
    let mut c = node.client();
    let r = fetch(&mut c, &request(0, -1, &[(0, 0)]));
    assert_eq!((r.error_code, r.session_id), (0, 0));
    // v4..v6 have no session fields at all.
    let r: FetchResponse = c.call(ApiKey::Fetch, 6, &request(0, -1, &[(0, 0)]));
    assert_eq!((r.error_code, answered(&r).len()), (0, 1));
}

#[test]
fn a_full_cache_declines_new_sessions_until_one_goes_stale() {
    let eviction_ms = 300;
    let node = Node::start(KafkaConfig {
        fetch_session_cache_slots: 1,
        fetch_session_eviction_ms: eviction_ms,
        ..KafkaConfig::new("127.0.0.1:0".parse().unwrap())
    });
    node.create_topic("s", 2);
    let mut c = node.client();
    let first = fetch(&mut c, &request(0, 0, &[(0, 0)])).session_id;
    assert_ne!(first, 0);
    // The only slot is taken by a session in use: the newcomer stays sessionless.
    let declined = fetch(&mut c, &request(0, 0, &[(0, 0), (1, 0)]));
    assert_eq!((declined.error_code, declined.session_id), (0, 0));
    assert_eq!(answered(&declined).len(), 2, "a declined full fetch is still answered");
    // Unused for longer than the eviction time, the first session loses its slot.
    let idle_since = std::time::Instant::now();
    while idle_since.elapsed() <= std::time::Duration::from_millis(eviction_ms + 50) {
        std::thread::sleep(std::time::Duration::from_millis(eviction_ms / 3));
    }
    let second = fetch(&mut c, &request(0, 0, &[(0, 0), (1, 0)])).session_id;
    assert_ne!(second, 0, "a stale session is evicted for a new one");
    assert_eq!(fetch(&mut c, &request(first, 1, &[])).error_code, FETCH_SESSION_ID_NOT_FOUND);
    assert_eq!(fetch(&mut c, &request(second, 1, &[])).error_code, 0);
}
