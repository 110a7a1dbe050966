//! The Produce call's own gRPC codec: writes a `ProduceRequest` whose `records` fields are the
//! batches the accumulator already built, straight into tonic's frame buffer.
//!
//! With prost's generated encoder the producer had to concatenate a partition's batches into
//! one `Bytes` first (a copy of every record), and prost then wrote the message into a buffer
//! that grew by doubling (more copies, and page faults on the fresh memory). Here the body's
//! exact size is computed first, the buffer is reserved once, and each batch is copied once.
//! The bytes on the wire are exactly what prost would write for the same message (fields in
//! order, proto3 defaults omitted), so the broker decodes them with its generated types.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use strom_client::proto::v1::ProduceResponse;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The gRPC method the codec is used for.
pub(crate) const PRODUCE_PATH: &str = "/strom.v1.Broker/Produce";

/// A `ProduceRequest` whose partitions carry their batches as separate buffers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProduceBody {
    /// `ProduceRequest.acks`.
    pub acks: i32,
    /// `ProduceRequest.timeout_ms`.
    pub timeout_ms: u32,
    /// `ProduceRequest.topics`.
    pub topics: Vec<TopicBody>,
}

/// One `TopicProduceData`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopicBody {
    /// The topic's name.
    pub name: Arc<str>,
    /// Its partitions, in request order.
    pub partitions: Vec<PartitionBody>,
}

/// One `PartitionProduceData`: `records` is the concatenation of `batches`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartitionBody {
    /// The partition number.
    pub partition: i32,
    /// Encoded RecordBatch v2s, sent back to back as the `records` field.
    pub batches: Vec<Bytes>,
}

/// `int32` fields are varints of the sign-extended 64-bit value, as prost writes them.
fn int32_len(tag: u32, v: i32) -> usize {
    if v == 0 { 0 } else { key_len(tag) + encoded_len_varint(i64::from(v) as u64) }
}

fn uint32_len(tag: u32, v: u32) -> usize {
    if v == 0 { 0 } else { key_len(tag) + encoded_len_varint(u64::from(v)) }
}

/// A length-delimited field of `len` bytes (omitted when empty, as proto3 does for scalars).
fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { key_len(tag) + encoded_len_varint(len as u64) + len }
}

/// An embedded message of `len` bytes (always written, even empty, as prost does).
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

impl PartitionBody {
    fn records_len(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }

    fn encoded_len(&self) -> usize {
        int32_len(1, self.partition) + bytes_len(2, self.records_len())
    }

    fn encode(&self, buf: &mut impl BufMut) {
        if self.partition != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(i64::from(self.partition) as u64, buf);
        }
        let records = self.records_len();
        if records != 0 {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(records as u64, buf);
            for b in &self.batches {
                buf.put_slice(b);
            }
        }
    }
}

impl TopicBody {
    fn encoded_len(&self) -> usize {
        bytes_len(1, self.name.len())
            + self.partitions.iter().map(|p| message_len(2, p.encoded_len())).sum::<usize>()
    }

    fn encode(&self, buf: &mut impl BufMut) {
        if !self.name.is_empty() {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(self.name.len() as u64, buf);
            buf.put_slice(self.name.as_bytes());
        }
        for p in &self.partitions {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(p.encoded_len() as u64, buf);
            p.encode(buf);
        }
    }
}

impl ProduceBody {
    /// Bytes of the encoded message.
    pub(crate) fn encoded_len(&self) -> usize {
        int32_len(1, self.acks)
            + uint32_len(2, self.timeout_ms)
            + self.topics.iter().map(|t| message_len(3, t.encoded_len())).sum::<usize>()
    }

    /// Writes the message as protobuf (`ProduceRequest`).
    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        if self.acks != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(i64::from(self.acks) as u64, buf);
        }
        if self.timeout_ms != 0 {
            encode_key(2, WireType::Varint, buf);
            encode_varint(u64::from(self.timeout_ms), buf);
        }
        for t in &self.topics {
            encode_key(3, WireType::LengthDelimited, buf);
            encode_varint(t.encoded_len() as u64, buf);
            t.encode(buf);
        }
    }
}

/// Encodes [`ProduceBody`], decodes `ProduceResponse` with prost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProduceCodec;

impl Codec for ProduceCodec {
    type Encode = ProduceBody;
    type Decode = ProduceResponse;
    type Encoder = ProduceEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProduceEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

/// See [`ProduceCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProduceEncoder;

impl Encoder for ProduceEncoder {
    type Item = ProduceBody;
    type Error = Status;

    fn encode(&mut self, item: ProduceBody, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One reservation for the whole body: the buffer never grows (and copies) mid-write.
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

/// See [`ProduceCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ProduceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ProduceResponse>, Status> {
        // The buffer holds exactly one message.
        ProduceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable produce response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strom_client::proto::v1::{PartitionProduceData, ProduceRequest, TopicProduceData};

    fn to_prost(body: &ProduceBody) -> ProduceRequest {
        ProduceRequest {
            acks: body.acks,
            timeout_ms: body.timeout_ms,
            topics: body
                .topics
                .iter()
                .map(|t| TopicProduceData {
                    name: t.name.to_string(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| PartitionProduceData {
                            partition: p.partition,
                            records: p.batches.concat().into(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn body() -> impl Strategy<Value = ProduceBody> {
        let partition = (
            prop_oneof![Just(0i32), any::<i32>()],
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4),
        )
            .prop_map(|(partition, batches)| PartitionBody {
                partition,
                batches: batches.into_iter().map(Bytes::from).collect(),
            });
        let topic = ("[a-z._-]{0,20}", prop::collection::vec(partition, 0..4))
            .prop_map(|(name, partitions)| TopicBody { name: Arc::from(name), partitions });
        (
            prop_oneof![Just(0i32), Just(1), Just(-1), any::<i32>()],
            prop_oneof![Just(0u32), any::<u32>()],
            prop::collection::vec(topic, 0..4),
        )
            .prop_map(|(acks, timeout_ms, topics)| ProduceBody {
                acks,
                timeout_ms,
                topics,
            })
    }

    proptest! {
        #[test]
        fn prost_decodes_the_same_request(body in body()) {
            let mut buf = Vec::new();
            body.encode(&mut buf);
            prop_assert_eq!(buf.len(), body.encoded_len());
            let expected = to_prost(&body);
            let decoded = ProduceRequest::decode(buf.as_slice());
            prop_assert_eq!(decoded.as_ref().ok(), Some(&expected));
            // Byte for byte what prost itself writes, so nothing on the broker can tell.
            prop_assert_eq!(buf, expected.encode_to_vec());
        }
    }

    #[test]
    fn batches_of_a_partition_arrive_as_one_records_field() {
        let body = ProduceBody {
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![TopicBody {
                name: Arc::from("t"),
                partitions: vec![PartitionBody {
                    partition: 3,
                    batches: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")],
                }],
            }],
        };
        let mut buf = Vec::new();
        body.encode(&mut buf);
        let decoded = ProduceRequest::decode(buf.as_slice()).expect("decodes");
        assert_eq!(decoded.acks, -1);
        assert_eq!(&decoded.topics[0].partitions[0].records[..], b"abcde");
    }
}
