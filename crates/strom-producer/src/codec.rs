//! The Produce call's request body: a `ProduceRequest` whose `records` fields are the batches
//! the accumulator already built, handed to HTTP/2 as they are.
//!
//! With prost's generated encoder the producer had to concatenate a partition's batches into
//! one `Bytes` first (a copy of every record), and prost then wrote the message into a buffer
//! that grew by doubling (more copies, and page faults on the fresh memory). A tonic codec
//! still copied every batch once into tonic's encode buffer. Here the gRPC frame is a list of
//! chunks: the length prefix and protobuf field headers in one small buffer, then each batch's
//! own `Bytes`, which h2 writes to the socket without copying them. The bytes on the wire are
//! exactly what prost would write for the same message (fields in order, proto3 defaults
//! omitted; a property test checks it), so the broker decodes them with its generated types.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use strom_client::proto::v1::ProduceResponse;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder};

/// gRPC's message prefix: a compressed flag (0) and the message length (u32, big endian).
const GRPC_PREFIX_LEN: usize = 5;

/// The gRPC method of the request.
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
}

impl TopicBody {
    fn encoded_len(&self) -> usize {
        bytes_len(1, self.name.len())
            + self.partitions.iter().map(|p| message_len(2, p.encoded_len())).sum::<usize>()
    }
}

impl ProduceBody {
    /// Bytes of the encoded message.
    pub(crate) fn encoded_len(&self) -> usize {
        int32_len(1, self.acks)
            + uint32_len(2, self.timeout_ms)
            + self.topics.iter().map(|t| message_len(3, t.encoded_len())).sum::<usize>()
    }

    /// The request as one gRPC message frame, in chunks: the length prefix and the protobuf
    /// field headers go into one small buffer, and every batch follows as the `Bytes` it
    /// already is. Concatenated, the chunks are exactly what tonic sends for the same
    /// message encoded by prost; unlike that, no record byte is copied on the way to the
    /// socket (h2 writes DATA payloads of 256 bytes and more straight from these buffers).
    ///
    /// `encoded_len` is [`ProduceBody::encoded_len`]; it must fit gRPC's u32 length prefix.
    pub(crate) fn into_frame(self, encoded_len: usize) -> Result<Vec<Bytes>, Status> {
        let len = u32::try_from(encoded_len)
            .map_err(|_| Status::out_of_range(format!("produce request of {encoded_len} bytes")))?;
        let partitions: usize = self.topics.iter().map(|t| t.partitions.len()).sum();
        let batches: usize =
            self.topics.iter().flat_map(|t| &t.partitions).map(|p| p.batches.len()).sum();
        // Field headers: a few bytes per field, plus the topic names.
        let names: usize = self.topics.iter().map(|t| t.name.len() + 16).sum();
        let mut head = BytesMut::with_capacity(GRPC_PREFIX_LEN + 16 + names + 32 * partitions);
        // One header chunk before each partition's batches, and one at the end at most.
        let mut chunks = Vec::with_capacity(batches + partitions + 1);
        head.put_u8(0);
        head.put_u32(len);
        if self.acks != 0 {
            encode_key(1, WireType::Varint, &mut head);
            encode_varint(i64::from(self.acks) as u64, &mut head);
        }
        if self.timeout_ms != 0 {
            encode_key(2, WireType::Varint, &mut head);
            encode_varint(u64::from(self.timeout_ms), &mut head);
        }
        for t in self.topics {
            encode_key(3, WireType::LengthDelimited, &mut head);
            encode_varint(t.encoded_len() as u64, &mut head);
            if !t.name.is_empty() {
                encode_key(1, WireType::LengthDelimited, &mut head);
                encode_varint(t.name.len() as u64, &mut head);
                head.put_slice(t.name.as_bytes());
            }
            for p in t.partitions {
                encode_key(2, WireType::LengthDelimited, &mut head);
                encode_varint(p.encoded_len() as u64, &mut head);
                if p.partition != 0 {
                    encode_key(1, WireType::Varint, &mut head);
                    encode_varint(i64::from(p.partition) as u64, &mut head);
                }
                let records = p.records_len();
                if records != 0 {
                    encode_key(2, WireType::LengthDelimited, &mut head);
                    encode_varint(records as u64, &mut head);
                    chunks.push(head.split().freeze());
                    chunks.extend(p.batches.into_iter().filter(|b| !b.is_empty()));
                }
            }
        }
        if !head.is_empty() {
            chunks.push(head.freeze());
        }
        Ok(chunks)
    }
}

/// The HTTP/2 request body of one Produce call: the chunks of [`ProduceBody::into_frame`],
/// handed to hyper one by one without copying.
#[derive(Debug)]
pub(crate) struct FrameBody {
    chunks: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl FrameBody {
    pub(crate) fn new(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        FrameBody { chunks: chunks.into_iter(), remaining }
    }
}

impl http_body::Body for FrameBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        Poll::Ready(this.chunks.next().map(|chunk| {
            this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
            Ok(http_body::Frame::data(chunk))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Decodes the `ProduceResponse` with prost.
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

    /// What reaches the broker: the chunks back to back.
    fn frame_bytes(body: ProduceBody) -> Vec<u8> {
        let len = body.encoded_len();
        body.into_frame(len).expect("fits").concat()
    }

    proptest! {
        #[test]
        fn prost_decodes_the_same_request(body in body()) {
            let expected = to_prost(&body);
            let len = body.encoded_len();
            let frame = frame_bytes(body);
            prop_assert_eq!(frame.len(), 5 + len);
            prop_assert_eq!(frame[0], 0, "uncompressed");
            prop_assert_eq!(&frame[1..5], &u32::try_from(len).unwrap().to_be_bytes());
            let decoded = ProduceRequest::decode(&frame[5..]);
            prop_assert_eq!(decoded.as_ref().ok(), Some(&expected));
            // Byte for byte what prost itself writes, so nothing on the broker can tell.
            prop_assert_eq!(&frame[5..], &expected.encode_to_vec()[..]);
        }
    }

    #[test]
    fn batches_of_a_partition_arrive_as_one_records_field() {
        let batch = Bytes::from(vec![7u8; 300]);
        let body = ProduceBody {
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![TopicBody {
                name: Arc::from("t"),
                partitions: vec![PartitionBody {
                    partition: 3,
                    batches: vec![Bytes::from_static(b"abc"), batch.clone()],
                }],
            }],
        };
        let len = body.encoded_len();
        let chunks = body.clone().into_frame(len).expect("fits");
        // The batches are the chunks themselves, not copies.
        assert!(chunks.iter().any(|c| c.as_ptr() == batch.as_ptr() && c.len() == 300));
        let frame = chunks.concat();
        let decoded = ProduceRequest::decode(&frame[5..]).expect("decodes");
        assert_eq!(decoded.acks, -1);
        let records = &decoded.topics[0].partitions[0].records;
        assert_eq!(&records[..3], b"abc");
        assert_eq!(records.len(), 303);
    }

    #[tokio::test]
    async fn the_body_yields_every_chunk_then_ends() {
        use http_body::Body as _;
        let chunks = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")];
        let mut body = FrameBody::new(chunks);
        assert_eq!(body.size_hint().exact(), Some(5));
        let mut got = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(frame) = frame;
            got.extend_from_slice(&frame.into_data().expect("data frame"));
        }
        assert_eq!(got, b"abcde");
        assert!(body.is_end_stream());
    }
}
