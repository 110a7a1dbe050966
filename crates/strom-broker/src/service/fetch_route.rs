//! The Fetch RPC served without copying record bytes. tonic's encoder writes every response
//! into its own buffer, which for Fetch means one full copy of the records read from the log.
//! This route (taken in front of the generated server by `routes.rs`) writes the response
//! itself: the gRPC frame header and the protobuf field headers go out as small buffers, the
//! records as the very `Bytes` the log returned (h2 hands large data chunks to the socket
//! without copying them either).
//!
//! The bytes on the wire are exactly prost's encoding of the same `FetchResponse` (a property
//! test checks it): fields in tag order, defaults left out, `records` (tag 6) last in each
//! partition, so it can follow the other fields as a separate chunk.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use strom_proto::v1 as pb;
use tonic::Status;
use tonic::body::Body;

use crate::service::broker::BrokerService;
use crate::service::grpc_body;

/// The method this route serves.
pub(crate) const FETCH_PATH: &str = "/strom.v1.Broker/Fetch";
/// Records smaller than this are copied next to their field headers instead of going out as
/// a chunk of their own: a tiny chunk costs more (an HTTP/2 frame, a write entry) than the
/// copy, and h2 copies chunks under 256 bytes into its buffer anyway.
pub(crate) const INLINE_RECORDS: usize = 4096;

pub(crate) async fn serve(
    service: &BrokerService,
    request: http::Request<Body>,
    max_request: usize,
    max_response: usize,
) -> Result<http::Response<Body>, Status> {
    let message = grpc_body::request_message(request, max_request).await?;
    let fetch = pb::FetchRequest::decode(message).map_err(|e| grpc_body::decode_error(&e))?;
    let response = service.fetch_response(fetch).await;
    let chunks = encode_response(&response, max_response)?;
    Ok(grpc_body::ok_response(chunks))
}

/// A partition's fields but `records`, encoded: what goes in front of its records.
fn partition_head(p: &pb::FetchPartitionResponse) -> pb::FetchPartitionResponse {
    pb::FetchPartitionResponse {
        partition: p.partition,
        error_code: p.error_code,
        error_message: p.error_message.clone(),
        high_watermark: p.high_watermark,
        log_start_offset: p.log_start_offset,
        records: Bytes::new(),
    }
}

/// The encoded length of a `records` field (tag below 16: a one-byte key; empty: left out,
/// as prost leaves out a default). Shared with `replica_fetch_route.rs`.
pub(crate) fn records_len(records: &Bytes) -> usize {
    if records.is_empty() {
        0
    } else {
        1 + encoded_len_varint(records.len() as u64) + records.len()
    }
}

/// Appends a non-empty `records` field with `tag`: its key and length to `head`, then the
/// records themselves, copied into `head` when small, else as a chunk of their own after the
/// headers written so far (the log's `Bytes`, not copied). Shared with `replica_fetch_route.rs`.
pub(crate) fn push_records(
    tag: u32,
    records: &Bytes,
    head: &mut BytesMut,
    chunks: &mut VecDeque<Bytes>,
) {
    if records.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, head);
    encode_varint(records.len() as u64, head);
    if records.len() < INLINE_RECORDS {
        head.extend_from_slice(records);
    } else {
        chunks.push_back(head.split().freeze());
        chunks.push_back(records.clone());
    }
}

/// Encodes `response` as one gRPC message: the frame header and field headers in small
/// buffers, every large `records` as its own chunk (not copied). The concatenation of the
/// chunks is byte for byte prost's encoding behind gRPC's 5-byte prefix.
pub(crate) fn encode_response(
    response: &pb::FetchResponse,
    limit: usize,
) -> Result<VecDeque<Bytes>, Status> {
    // First pass: every message's length, as prost computes it.
    let mut partition_lens = Vec::new();
    let mut topic_lens = Vec::with_capacity(response.topics.len());
    for topic in &response.topics {
        let mut len = pb::FetchTopicResponse { name: topic.name.clone(), partitions: Vec::new() }
            .encoded_len();
        for p in &topic.partitions {
            let plen = partition_head(p).encoded_len() + records_len(&p.records);
            partition_lens.push(plen);
            len += 1 + encoded_len_varint(plen as u64) + plen;
        }
        topic_lens.push(len);
    }
    let total: usize = topic_lens.iter().map(|&len| 1 + encoded_len_varint(len as u64) + len).sum();
    let prefix = grpc_body::message_prefix(total, limit)?;
    // Second pass: the bytes.
    let mut chunks = VecDeque::new();
    let mut head = BytesMut::with_capacity(256);
    head.put_u8(0);
    head.put_u32(prefix);
    let mut partition_lens = partition_lens.into_iter();
    for (topic, topic_len) in response.topics.iter().zip(topic_lens) {
        encode_key(1, WireType::LengthDelimited, &mut head);
        encode_varint(topic_len as u64, &mut head);
        pb::FetchTopicResponse { name: topic.name.clone(), partitions: Vec::new() }
            .encode_raw(&mut head);
        for p in &topic.partitions {
            let plen = partition_lens.next().unwrap_or_default();
            encode_key(2, WireType::LengthDelimited, &mut head);
            encode_varint(plen as u64, &mut head);
            partition_head(p).encode_raw(&mut head);
            push_records(6, &p.records, &mut head, &mut chunks);
        }
    }
    if !head.is_empty() {
        chunks.push_back(head.freeze());
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn partition() -> impl Strategy<Value = pb::FetchPartitionResponse> {
        (
            any::<i32>(),
            prop_oneof![Just(0), any::<i32>()],
            prop_oneof![Just(String::new()), ".{0,20}"],
            any::<i64>(),
            prop_oneof![Just(0i64), any::<i64>()],
            prop_oneof![
                Just(0usize),
                1usize..64,
                INLINE_RECORDS - 2..INLINE_RECORDS + 2,
                20_000usize..70_000
            ],
            any::<u8>(),
        )
            .prop_map(|(partition, error_code, error_message, hw, lso, len, fill)| {
                pb::FetchPartitionResponse {
                    partition,
                    error_code,
                    error_message,
                    high_watermark: hw,
                    log_start_offset: lso,
                    records: Bytes::from((0..len).map(|i| fill ^ i as u8).collect::<Vec<u8>>()),
                }
            })
    }

    fn response() -> impl Strategy<Value = pb::FetchResponse> {
        prop::collection::vec(
            (".{0,12}", prop::collection::vec(partition(), 0..4))
                .prop_map(|(name, partitions)| pb::FetchTopicResponse { name, partitions }),
            0..4,
        )
        .prop_map(|topics| pb::FetchResponse { topics })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunks_are_prosts_encoding_and_decode_back(response in response()) {
            let chunks = encode_response(&response, usize::MAX).expect("within the limit");
            let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let body = response.encode_to_vec();
            prop_assert_eq!(wire[0], 0);
            prop_assert_eq!(&wire[1..5], &(body.len() as u32).to_be_bytes()[..]);
            prop_assert!(wire[5..] == body[..], "the bytes differ from prost's encoding");
            let decoded = pb::FetchResponse::decode(&wire[5..]).expect("prost decodes it");
            prop_assert_eq!(decoded, response.clone());
            // Large records travel as the same allocation, not a copy.
            let shared = response
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.records.len() >= INLINE_RECORDS)
                .all(|p| chunks.iter().any(|c| c.as_ptr() == p.records.as_ptr()));
            prop_assert!(shared, "a large records field was copied");
        }
    }

    #[test]
    fn a_response_over_the_limit_is_refused() {
        let response = pb::FetchResponse {
            topics: vec![pb::FetchTopicResponse {
                name: "t".into(),
                partitions: vec![pb::FetchPartitionResponse {
                    records: Bytes::from(vec![1u8; 100]),
                    ..Default::default()
                }],
            }],
        };
        let err = encode_response(&response, 50).expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
    }
}
