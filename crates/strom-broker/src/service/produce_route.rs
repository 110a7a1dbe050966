//! The Produce RPC served without tonic's copy of the request. The generated server appends
//! every HTTP/2 DATA frame to one buffer before prost decodes the message, a full copy of
//! every record the broker receives. This route (taken in front of the generated server by
//! `routes.rs`) keeps the frames as hyper delivered them and decodes the request from them
//! in place (`grpc_body::FrameRope`): each partition's `records` is a slice of the frame it
//! lies in, and only a `records` field that runs across a frame boundary is copied, once, on
//! its own. The server advertises a large HTTP/2 `max_frame_size` and windows (`server.rs`),
//! so a request of up to a few MiB normally arrives as one frame and nothing is copied.
//!
//! The decoded request is the one prost decodes from the contiguous message (a property
//! test checks it for arbitrary requests cut into arbitrary frames), and the answer is the
//! generated server's: the same size limits, a malformed message is INTERNAL with prost's
//! reason, never a panic.

use prost::Message;
use strom_proto::v1 as pb;
use tonic::Status;
use tonic::body::Body;

use crate::service::broker::BrokerService;
use crate::service::grpc_body::{self, FrameRope};

/// The method this route serves.
pub(crate) const PRODUCE_PATH: &str = "/strom.v1.Broker/Produce";

pub(crate) async fn serve(
    service: &BrokerService,
    request: http::Request<Body>,
    max_request: usize,
    max_response: usize,
) -> Result<http::Response<Body>, Status> {
    let message = grpc_body::request_message(request, max_request).await?;
    let produce = decode_request(message)?;
    let response = service.produce_response(produce).await;
    let chunks = grpc_body::encode_message(&response, max_response)?;
    Ok(grpc_body::ok_response(chunks))
}

/// Decodes a ProduceRequest from its frames: prost walks the fields, and every `records`
/// (a protobuf `bytes`, read with `Buf::copy_to_bytes`) comes out as a slice of its frame
/// unless it straddles two.
pub(crate) fn decode_request(message: FrameRope) -> Result<pb::ProduceRequest, Status> {
    pb::ProduceRequest::decode(message).map_err(|e| grpc_body::decode_error(&e))
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, Bytes};
    use proptest::prelude::*;

    use super::*;
    use crate::service::grpc_body::{
        GRPC_HEADER_LEN, body_of, cut, framed, prefixed, read_message,
    };

    fn partition() -> impl Strategy<Value = pb::PartitionProduceData> {
        (
            prop_oneof![Just(0), any::<i32>()],
            prop_oneof![Just(0usize), 1usize..200, 16_000usize..17_000, 60_000usize..70_000],
            any::<u8>(),
        )
            .prop_map(|(partition, len, fill)| pb::PartitionProduceData {
                partition,
                records: Bytes::from((0..len).map(|i| fill ^ (i as u8)).collect::<Vec<u8>>()),
            })
    }

    fn request() -> impl Strategy<Value = pb::ProduceRequest> {
        (
            prop_oneof![Just(-1), Just(0), Just(1), any::<i32>()],
            prop_oneof![Just(0u32), any::<u32>()],
            prop::collection::vec(
                (".{0,12}", prop::collection::vec(partition(), 0..4))
                    .prop_map(|(name, partitions)| pb::TopicProduceData { name, partitions }),
                0..4,
            ),
        )
            .prop_map(|(acks, timeout_ms, topics)| pb::ProduceRequest {
                acks,
                timeout_ms,
                topics,
            })
    }

    fn read(frames: Vec<Bytes>, limit: usize) -> Result<FrameRope, Status> {
        futures::executor::block_on(read_message(&mut body_of(frames), limit))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn decodes_as_prost_does_whatever_the_frames(
            request in request(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let wire = prefixed(&request.encode_to_vec());
            let cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            let frames = cut(&wire, &cuts);
            let message = read(frames.clone(), usize::MAX).expect("reads");
            prop_assert_eq!(message.remaining(), wire.len() - GRPC_HEADER_LEN);
            let decoded = decode_request(message).expect("decodes");
            // prost on the contiguous message: the reference, and (its `Bytes` fields being
            // slices of `wire`) where each records field lies.
            let reference = pb::ProduceRequest::decode(wire.slice(GRPC_HEADER_LEN..)).expect("prost");
            prop_assert_eq!(&decoded, &reference);
            let mut bounds = Vec::new();
            let mut at = 0;
            for f in &frames {
                bounds.push((at, at + f.len()));
                at += f.len();
            }
            let records = |r: &pb::ProduceRequest| -> Vec<Bytes> {
                r.topics.iter().flat_map(|t| &t.partitions).map(|p| p.records.clone()).collect()
            };
            for (got, want) in records(&decoded).iter().zip(records(&reference)) {
                if want.is_empty() {
                    continue;
                }
                let start = want.as_ptr() as usize - wire.as_ptr() as usize;
                let end = start + want.len();
                let inside = bounds.iter().any(|&(s, e)| s <= start && end <= e);
                // Frames are slices of `wire`: a field not copied has the reference's address.
                prop_assert_eq!(got.as_ptr() == want.as_ptr(), inside,
                    "records at {}..{} (frames {:?}): sliced iff inside one frame", start, end, bounds);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..300),
            cuts in prop::collection::vec(0usize..310, 0..5),
        ) {
            let frames = framed(&body, &cuts);
            if let Ok(message) = read(frames, 1 << 20)
                && let Err(status) = decode_request(message)
            {
                prop_assert_eq!(status.code(), tonic::Code::Internal);
            }
        }
    }

    #[test]
    fn one_frame_decodes_without_copying_records() {
        let records = Bytes::from(vec![9u8; 64 * 1024]);
        let request = pb::ProduceRequest {
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![pb::TopicProduceData {
                name: "orders".into(),
                partitions: vec![pb::PartitionProduceData {
                    partition: 3,
                    records: records.clone(),
                }],
            }],
        };
        let frames = framed(&request.encode_to_vec(), &[]);
        let frame = frames[0].clone();
        let decoded = decode_request(read(frames, 1 << 20).expect("reads")).expect("decodes");
        let got = &decoded.topics[0].partitions[0].records;
        assert_eq!(got, &records);
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(range.contains(&(got.as_ptr() as usize)), "records were copied");
    }

    #[test]
    fn a_malformed_request_is_internal_with_prosts_reason() {
        // Field 3 (topics), length 100, but only 2 bytes follow.
        let frames = framed(&[0x1a, 100, 1, 2], &[]);
        let status = decode_request(read(frames, 1 << 20).expect("reads")).expect_err("bad");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("buffer underflow"), "{}", status.message());
    }
}
