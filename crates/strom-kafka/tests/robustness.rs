//! Network input never panics the broker: truncated, oversized and random frames of every API
//! key get an error response or a closed connection, and other connections keep working. Also
//! the ApiVersions compatibility rules (v0 fallback, no tagged fields in v3+).
//!
//! Deterministic: a fixed seed drives the random frames; a panic hook counts panics anywhere in
//! the process (a panic in a connection task would otherwise vanish inside tokio).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strom_kafka::{KafkaConfig, SUPPORTED_APIS};

mod support;
use support::Node;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

fn count_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// A node whose Kafka listener refuses requests above `max_request_bytes`.
fn start_node(max_request_bytes: usize) -> Node {
    let kafka =
        KafkaConfig { max_request_bytes, ..KafkaConfig::new("127.0.0.1:0".parse().unwrap()) };
    // Random Fetch frames must not park a connection for long.
    Node::start_with(kafka, |b| b.fetch_max_wait_ms = 50)
}

fn frame<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("probe")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, api.request_header_version(version)).ok()?;
    body.encode(&mut buf, version).ok()?;
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    Some(out)
}

/// Reads one response frame; `None` on EOF or reset (the connection was closed).
fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn correlation(response: &Bytes) -> i32 {
    i32::from_be_bytes([response[0], response[1], response[2], response[3]])
}

/// A default request of `api` at `version`, encoded as a full frame (None when the default
/// value cannot be encoded at that version).
fn default_frame(api: ApiKey, version: i16, cid: i32) -> Option<Vec<u8>> {
    macro_rules! f {
        ($t:ty) => {
            frame(api, version, cid, &<$t>::default())
        };
    }
    match api {
        ApiKey::Produce => f!(ProduceRequest),
        ApiKey::Fetch => f!(FetchRequest),
        ApiKey::ListOffsets => f!(ListOffsetsRequest),
        ApiKey::Metadata => f!(MetadataRequest),
        ApiKey::OffsetCommit => f!(OffsetCommitRequest),
        ApiKey::OffsetFetch => f!(OffsetFetchRequest),
        ApiKey::FindCoordinator => f!(FindCoordinatorRequest),
        ApiKey::JoinGroup => f!(JoinGroupRequest),
        ApiKey::Heartbeat => f!(HeartbeatRequest),
        ApiKey::LeaveGroup => f!(LeaveGroupRequest),
        ApiKey::SyncGroup => f!(SyncGroupRequest),
        ApiKey::DescribeGroups => f!(DescribeGroupsRequest),
        ApiKey::ListGroups => f!(ListGroupsRequest),
        ApiKey::ApiVersions => f!(ApiVersionsRequest),
        ApiKey::CreateTopics => f!(CreateTopicsRequest),
        ApiKey::DeleteTopics => f!(DeleteTopicsRequest),
        ApiKey::InitProducerId => f!(InitProducerIdRequest),
        ApiKey::OffsetForLeaderEpoch => f!(OffsetForLeaderEpochRequest),
        ApiKey::DescribeConfigs => f!(DescribeConfigsRequest),
        ApiKey::CreatePartitions => f!(CreatePartitionsRequest),
        ApiKey::DeleteGroups => f!(DeleteGroupsRequest),
        ApiKey::IncrementalAlterConfigs => f!(IncrementalAlterConfigsRequest),
        ApiKey::AlterConfigs => f!(AlterConfigsRequest),
        ApiKey::DescribeCluster => f!(DescribeClusterRequest),
        ApiKey::OffsetDelete => f!(OffsetDeleteRequest),
        ApiKey::DeleteRecords => f!(DeleteRecordsRequest),
        ApiKey::DescribeLogDirs => f!(DescribeLogDirsRequest),
        ApiKey::ElectLeaders => f!(ElectLeadersRequest),
        _ => None,
    }
}

/// Requests with content where the defaults are empty (arrays of topics, assignments,
/// forgotten partitions), so truncation also cuts inside nested structures.
fn rich_frames(cid: i32) -> Vec<(ApiKey, i16, Vec<u8>)> {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    let name = TopicName(StrBytes::from_static_str("rich"));
    let create = CreatePartitionsRequest::default().with_topics(vec![
        CreatePartitionsTopic::default().with_name(name.clone()).with_count(3).with_assignments(
            Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)]),
            ]),
        ),
    ]);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_session_id(12345)
        .with_session_epoch(3)
        .with_topics(vec![FetchTopic::default().with_topic(name.clone()).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_partition_max_bytes(1024),
        ])])
        .with_forgotten_topics_data(vec![
            ForgottenTopic::default().with_topic(name).with_partitions(vec![1, 2]),
        ]);
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let delete = DeleteRecordsRequest::default().with_timeout_ms(100).with_topics(vec![
        DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("rich")))
            .with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(0).with_offset(-1),
                DeleteRecordsPartition::default().with_partition_index(1).with_offset(i64::MAX),
            ]),
    ]);
    let log_dirs = DescribeLogDirsRequest::default().with_topics(Some(vec![
        describe_log_dirs_request::DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("rich")))
            .with_partitions(vec![0, 1, -1]),
    ]));
    let elect =
        ElectLeadersRequest::default().with_timeout_ms(100).with_topic_partitions(Some(vec![
            elect_leaders_request::TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("rich")))
                .with_partitions(vec![0, -1, 7]),
        ]));
    let mut out = Vec::new();
    for version in 0..=2 {
        // v0 has no election type (preferred only); v1+ asks for an unclean one.
        let elect = elect.clone().with_election_type(i8::from(version > 0));
        out.push((
            ApiKey::ElectLeaders,
            version,
            frame(ApiKey::ElectLeaders, version, cid, &elect),
        ));
    }
    for version in 1..=4 {
        out.push((
            ApiKey::DescribeLogDirs,
            version,
            frame(ApiKey::DescribeLogDirs, version, cid, &log_dirs),
        ));
    }
    for version in 0..=2 {
        out.push((
            ApiKey::DeleteRecords,
            version,
            frame(ApiKey::DeleteRecords, version, cid, &delete),
        ));
    }
    for version in 0..=3 {
        out.push((
            ApiKey::CreatePartitions,
            version,
            frame(ApiKey::CreatePartitions, version, cid, &create),
        ));
    }
    for version in 7..=12 {
        out.push((ApiKey::Fetch, version, frame(ApiKey::Fetch, version, cid, &fetch)));
    }
    out.into_iter().map(|(a, v, f)| (a, v, f.expect("encodes"))).collect()
}

#[test]
fn every_supported_api_is_probed() {
    for &(api, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            assert!(default_frame(api, version, 1).is_some(), "{api:?} v{version} is never probed");
        }
    }
}

/// The broker still answers a well-formed request on a fresh connection.
fn assert_serving(node: &Node) {
    let mut s = node.connect();
    s.write_all(&frame(ApiKey::Metadata, 12, 4242, &MetadataRequest::default()).unwrap()).unwrap();
    let mut response = read_response(&mut s).expect("a fresh connection is answered");
    assert_eq!(correlation(&response), 4242);
    let _ = bytes::Buf::copy_to_bytes(&mut response, 4);
    // Metadata v12 has a flexible response header: one empty tagged-field byte.
    let _ = bytes::Buf::copy_to_bytes(&mut response, 1);
    let decoded = MetadataResponse::decode(&mut response, 12).expect("metadata decodes");
    assert_eq!(decoded.brokers.len(), 1);
}

#[test]
fn truncated_frames_of_every_api_get_an_answer_or_a_closed_connection() {
    count_panics();
    let node = start_node(1 << 20);
    let mut probes = 0;
    let (mut answered, mut closed) = (0, 0);
    let defaults = SUPPORTED_APIS.iter().flat_map(|&(api, min, max)| {
        (min..=max).filter_map(move |v| default_frame(api, v, 7).map(|f| (api, v, f)))
    });
    for (api, version, full) in defaults.chain(rich_frames(7)) {
        let body_len = full.len() - 4;
        // Every cut of the body after the fixed 8-byte header prefix, and the whole frame.
        let cuts: Vec<usize> = (8..=body_len).step_by(((body_len - 8) / 12).max(1)).collect();
        for cut in cuts {
            let mut truncated = (cut as i32).to_be_bytes().to_vec();
            truncated.extend_from_slice(&full[4..4 + cut]);
            let mut s = node.connect();
            s.write_all(&truncated).unwrap();
            // End of input: the broker answers what it read (Produce with acks=0 answers
            // nothing) and then closes, so no probe waits on a timeout.
            s.shutdown(std::net::Shutdown::Write).unwrap();
            match read_response(&mut s) {
                Some(r) => {
                    assert_eq!(correlation(&r), 7, "{api:?} v{version} cut at {cut}");
                    answered += 1;
                }
                None => closed += 1,
            }
            probes += 1;
        }
    }
    assert_serving(&node);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a decoder or handler panicked");
    println!("{probes} truncated frames: {answered} answered, {closed} closed the connection");
}

#[test]
fn random_and_oversized_frames_never_panic_and_other_connections_keep_working() {
    count_panics();
    let node = start_node(1 << 20);
    let mut rng = StdRng::seed_from_u64(0x5717_0a1f);
    // A healthy connection open through the whole barrage.
    let mut healthy = node.connect();
    let mut sent = 0;
    for &(api, min, max) in SUPPORTED_APIS {
        for version in (min - 1)..=(max + 1) {
            let mut s = node.connect();
            for _ in 0..16 {
                let len = rng.random_range(0..256usize);
                let mut body = vec![0u8; 8 + len];
                rng.fill(&mut body[..]);
                body[0..2].copy_from_slice(&(api as i16).to_be_bytes());
                body[2..4].copy_from_slice(&version.to_be_bytes());
                // Now and then a huge array count right after the header: the allocation guard.
                if len >= 16 && rng.random_bool(0.3) {
                    body[8..10].copy_from_slice(&5i16.to_be_bytes());
                    body[10..15].copy_from_slice(b"probe");
                    body[15..].iter_mut().take(4).for_each(|b| *b = 0x7f);
                }
                let mut out = (body.len() as i32).to_be_bytes().to_vec();
                out.extend_from_slice(&body);
                if s.write_all(&out).is_err() {
                    break; // closed on an earlier frame, as it should be
                }
                sent += 1;
            }
        }
    }
    // Frames above the limit, and negative lengths, close the connection at once.
    for len in [(1i32 << 20) + 1, i32::MAX, -1, i32::MIN] {
        let mut s = node.connect();
        s.write_all(&len.to_be_bytes()).unwrap();
        let _ = s.write_all(&[0u8; 64]);
        assert!(
            read_response(&mut s).is_none(),
            "a frame of {len} bytes must close the connection"
        );
    }
    // Random garbage of unknown API keys.
    for _ in 0..64 {
        let mut s = node.connect();
        let mut body = vec![0u8; rng.random_range(0..64usize)];
        rng.fill(&mut body[..]);
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        let _ = s.write_all(&out);
    }
    healthy
        .write_all(&frame(ApiKey::ApiVersions, 3, 99, &ApiVersionsRequest::default()).unwrap())
        .unwrap();
    let r = read_response(&mut healthy).expect("the healthy connection is still answered");
    assert_eq!(correlation(&r), 99);
    assert_serving(&node);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a decoder or handler panicked");
    println!("{sent} random frames over every API key and version (±1): no panic, broker serving");
}

#[test]
fn api_versions_above_our_range_answers_unsupported_version_in_v0_format() {
    count_panics();
    let node = start_node(1 << 20);
    let mut s = node.connect();
    // A client from the future: version 99, a body we cannot know.
    let mut body = Vec::new();
    body.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    body.extend_from_slice(&99i16.to_be_bytes());
    body.extend_from_slice(&5i32.to_be_bytes());
    body.extend_from_slice(&[0, 0, 1, 2, 3]);
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    s.write_all(&out).unwrap();
    let mut r = read_response(&mut s).expect("answered");
    assert_eq!(correlation(&r), 5);
    let _ = bytes::Buf::copy_to_bytes(&mut r, 4);
    let decoded = ApiVersionsResponse::decode(&mut r, 0).expect("v0 format");
    assert_eq!(decoded.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(
        decoded
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4)
    );
    assert!(bytes::Buf::remaining(&r) == 0, "nothing after the v0 body");
}

#[test]
fn api_versions_v3_answer_has_no_top_level_tagged_fields() {
    count_panics();
    let node = start_node(1 << 20);
    let mut s = node.connect();
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("librdkafka"))
        .with_client_software_version(StrBytes::from_static_str("2.0.2"));
    s.write_all(&frame(ApiKey::ApiVersions, 3, 11, &request).unwrap()).unwrap();
    let r = read_response(&mut s).expect("answered");
    assert_eq!(correlation(&r), 11);
    // Header v0 (no tagged fields), then the v3 body ending in an empty tagged-field section.
    assert_eq!(r.last(), Some(&0u8), "tagged-field count must be 0");
    let mut body = r.slice(4..);
    let decoded = ApiVersionsResponse::decode(&mut body, 3).expect("v3 body");
    assert_eq!(decoded.error_code, 0);
    assert!(decoded.supported_features.is_empty() && decoded.finalized_features.is_empty());
    assert_eq!(bytes::Buf::remaining(&body), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    count_panics();
    let node = start_node(1 << 20);
    let mut s = node.connect();
    let mut batch = Vec::new();
    for cid in 0..50 {
        let f = if cid % 2 == 0 {
            frame(ApiKey::Metadata, 9, cid, &MetadataRequest::default())
        } else {
            frame(ApiKey::ApiVersions, 3, cid, &ApiVersionsRequest::default())
        };
        batch.extend_from_slice(&f.unwrap());
    }
    s.write_all(&batch).unwrap();
    for cid in 0..50 {
        let r = read_response(&mut s).expect("answered");
        assert_eq!(correlation(&r), cid);
    }
}
