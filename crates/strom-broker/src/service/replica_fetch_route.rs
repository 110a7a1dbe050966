//! The ReplicaFetch RPC (followers of RF > 1 topics fetching from this node's leaders) served
//! without copying record bytes, as `fetch_route.rs` serves consumers: the gRPC prefix and the
//! protobuf field headers go out as small buffers, each partition's records as the `Bytes`
//! the log read, not copied into tonic's encode buffer.
//!
//! The bytes on the wire are exactly prost's encoding of the same `ReplicaFetchResponse` (a
//! property test checks it): `records` (tag 9) is the last field of each partition, so it can
//! follow the partition's other fields as a separate chunk.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use strom_proto::v1 as pb;
use tonic::Status;
use tonic::body::Body;

use crate::service::fetch_route::{push_records, records_len};
use crate::service::grpc_body;
use crate::service::replication::ReplicationService;

/// The method this route serves.
pub(crate) const REPLICA_FETCH_PATH: &str = "/strom.v1.Replication/ReplicaFetch";

pub(crate) async fn serve(
    service: &ReplicationService,
    request: http::Request<Body>,
    max_request: usize,
    max_response: usize,
) -> Result<http::Response<Body>, Status> {
    let message = grpc_body::request_message(request, max_request).await?;
    let fetch =
        pb::ReplicaFetchRequest::decode(message).map_err(|e| grpc_body::decode_error(&e))?;
    let response = service.replica_fetch_response(fetch).await;
    let chunks = encode_response(&response, max_response)?;
    Ok(grpc_body::ok_response(chunks))
}

/// A partition's fields but `records`: what goes in front of its records.
fn partition_head(p: &pb::ReplicaFetchPartitionResponse) -> pb::ReplicaFetchPartitionResponse {
    pb::ReplicaFetchPartitionResponse {
        topic: p.topic.clone(),
        partition: p.partition,
        error_code: p.error_code,
        error_message: p.error_message.clone(),
        high_watermark: p.high_watermark,
        log_start_offset: p.log_start_offset,
        log_end_offset: p.log_end_offset,
        diverging_epoch: p.diverging_epoch,
        records: Bytes::new(),
    }
}

/// Tag of `ReplicaFetchPartitionResponse.records`, its last field.
const RECORDS_TAG: u32 = 9;
/// Tag of `ReplicaFetchResponse.partitions`.
const PARTITIONS_TAG: u32 = 3;

/// Encodes `response` as one gRPC message: the prefix and field headers in small buffers,
/// every large `records` as its own chunk (not copied). The concatenation of the chunks is
/// byte for byte prost's encoding behind gRPC's 5-byte prefix.
pub(crate) fn encode_response(
    response: &pb::ReplicaFetchResponse,
    limit: usize,
) -> Result<VecDeque<Bytes>, Status> {
    let top = pb::ReplicaFetchResponse {
        error_code: response.error_code,
        error_message: response.error_message.clone(),
        partitions: Vec::new(),
    };
    let heads: Vec<_> = response.partitions.iter().map(partition_head).collect();
    let partition_lens: Vec<usize> = response
        .partitions
        .iter()
        .zip(&heads)
        .map(|(p, head)| head.encoded_len() + records_len(&p.records))
        .collect();
    let total = top.encoded_len()
        + partition_lens.iter().map(|&len| 1 + encoded_len_varint(len as u64) + len).sum::<usize>();
    let prefix = grpc_body::message_prefix(total, limit)?;
    let mut chunks = VecDeque::new();
    let mut head = BytesMut::with_capacity(256);
    head.put_u8(0);
    head.put_u32(prefix);
    top.encode_raw(&mut head);
    for ((p, p_head), len) in response.partitions.iter().zip(&heads).zip(partition_lens) {
        encode_key(PARTITIONS_TAG, WireType::LengthDelimited, &mut head);
        encode_varint(len as u64, &mut head);
        p_head.encode_raw(&mut head);
        push_records(RECORDS_TAG, &p.records, &mut head, &mut chunks);
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
    use crate::service::fetch_route::INLINE_RECORDS;

    fn partition() -> impl Strategy<Value = pb::ReplicaFetchPartitionResponse> {
        (
            (".{0,12}", any::<i32>(), prop_oneof![Just(0), any::<i32>()]),
            prop_oneof![Just(String::new()), ".{0,20}"],
            (any::<i64>(), prop_oneof![Just(0i64), any::<i64>()], any::<i64>()),
            prop::option::of((any::<i32>(), any::<i64>())),
            prop_oneof![
                Just(0usize),
                1usize..64,
                INLINE_RECORDS - 2..INLINE_RECORDS + 2,
                20_000usize..70_000
            ],
            any::<u8>(),
        )
            .prop_map(
                |(
                    (topic, partition, error_code),
                    error_message,
                    (hw, lso, leo),
                    div,
                    len,
                    fill,
                )| {
                    pb::ReplicaFetchPartitionResponse {
                        topic,
                        partition,
                        error_code,
                        error_message,
                        high_watermark: hw,
                        log_start_offset: lso,
                        log_end_offset: leo,
                        diverging_epoch: div
                            .map(|(epoch, end_offset)| pb::EpochEndOffset { epoch, end_offset }),
                        records: Bytes::from((0..len).map(|i| fill ^ i as u8).collect::<Vec<u8>>()),
                    }
                },
            )
    }

    fn response() -> impl Strategy<Value = pb::ReplicaFetchResponse> {
        (
            prop_oneof![Just(0), any::<i32>()],
            prop_oneof![Just(String::new()), ".{0,20}"],
            prop::collection::vec(partition(), 0..5),
        )
            .prop_map(|(error_code, error_message, partitions)| pb::ReplicaFetchResponse {
                error_code,
                error_message,
                partitions,
            })
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
            let decoded = pb::ReplicaFetchResponse::decode(&wire[5..]).expect("prost decodes it");
            prop_assert_eq!(decoded, response.clone());
            let shared = response
                .partitions
                .iter()
                .filter(|p| p.records.len() >= INLINE_RECORDS)
                .all(|p| chunks.iter().any(|c| c.as_ptr() == p.records.as_ptr()));
            prop_assert!(shared, "a large records field was copied");
        }
    }

    #[test]
    fn a_response_over_the_limit_is_refused() {
        let response = pb::ReplicaFetchResponse {
            partitions: vec![pb::ReplicaFetchPartitionResponse {
                records: Bytes::from(vec![1u8; 100]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = encode_response(&response, 50).expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
    }
}
