//! The Fetch RPC served without copying record bytes. tonic's encoder writes every response
//! into its own buffer, which for Fetch means one full copy of the records read from the log.
//! This route takes `/strom.v1.Broker/Fetch` in front of the generated server and writes the
//! response itself: the gRPC frame header and the protobuf field headers go out as small
//! buffers, the records as the very `Bytes` the log returned (h2 hands large data chunks to
//! the socket without copying them either).
//!
//! The bytes on the wire are exactly prost's encoding of the same `FetchResponse` (a property
//! test checks it): fields in tag order, defaults left out, `records` (tag 6) last in each
//! partition, so it can follow the other fields as a separate chunk. Everything else the
//! generated server does for this method is kept: the request size limit, the refusal of
//! compressed requests (no compression is enabled on the broker's services), the response
//! size limit, errors as gRPC statuses. Every other method goes to the generated server.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use strom_proto::v1 as pb;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::service::broker::BrokerService;

/// The method this route serves.
pub(crate) const FETCH_PATH: &str = "/strom.v1.Broker/Fetch";
/// gRPC's message prefix: a compression flag and a big-endian length.
const GRPC_HEADER_LEN: usize = 5;
/// Records smaller than this are copied next to their field headers instead of going out as
/// a chunk of their own: a tiny chunk costs more (an HTTP/2 frame, a write entry) than the
/// copy, and h2 copies chunks under 256 bytes into its buffer anyway.
const INLINE_RECORDS: usize = 4096;

/// The generated Broker server, with Fetch served by this module (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct FetchRoute<S> {
    inner: S,
    service: BrokerService,
    /// The generated server's `max_decoding_message_size` for this service.
    max_request: usize,
    /// Its `max_encoding_message_size`.
    max_response: usize,
}

impl<S> FetchRoute<S> {
    pub(crate) fn new(
        inner: S,
        service: BrokerService,
        max_request: usize,
        max_response: usize,
    ) -> Self {
        FetchRoute { inner, service, max_request, max_response }
    }
}

impl<S: NamedService> NamedService for FetchRoute<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for FetchRoute<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != FETCH_PATH {
            return Box::pin(self.inner.call(request));
        }
        let (service, max_request, max_response) =
            (self.service.clone(), self.max_request, self.max_response);
        Box::pin(async move {
            let response = match serve(&service, request, max_request, max_response).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            };
            Ok(response)
        })
    }
}

async fn serve(
    service: &BrokerService,
    request: http::Request<Body>,
    max_request: usize,
    max_response: usize,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = request.into_parts();
    if let Some(encoding) = parts.headers.get("grpc-encoding")
        && encoding.as_bytes() != b"identity"
    {
        let name = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
        let mut status = Status::unimplemented(format!(
            "Content is compressed with `{name}` which isn't supported"
        ));
        status.metadata_mut().insert(
            "grpc-accept-encoding",
            tonic::metadata::MetadataValue::from_static("identity"),
        );
        return Err(status);
    }
    let message = read_message(body, max_request).await?;
    let fetch = pb::FetchRequest::decode(message)
        .map_err(|e| Status::internal(format!("failed to decode FetchRequest: {e}")))?;
    let response = service.fetch_response(fetch).await;
    let chunks = encode_response(&response, max_response)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Chunks { chunks, trailers: Some(trailers) };
    let mut out = http::Response::new(Body::new(body));
    out.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    Ok(out)
}

/// Reads the request's one gRPC message (unary), refusing what the generated server would.
async fn read_message(mut body: Body, limit: usize) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    let mut header: Option<(u8, usize)> = None;
    loop {
        if header.is_none() && buf.len() >= GRPC_HEADER_LEN {
            let head = buf.split_to(GRPC_HEADER_LEN);
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > limit {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: \
                     {limit} bytes"
                )));
            }
            header = Some((head[0], len));
        }
        if let Some((flag, len)) = header
            && buf.len() >= len
        {
            if flag != 0 {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding \
                     was specified",
                ));
            }
            return Ok(buf.split_to(len).freeze());
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    // Bounded: never more than the limit plus one frame past the header.
                    if buf.len().saturating_add(data.len()) > limit.saturating_add(GRPC_HEADER_LEN)
                    {
                        return Err(Status::out_of_range(format!(
                            "Error, decoded message length too large: the limit is: {limit} bytes"
                        )));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(status)) => return Err(status),
            None => return Err(Status::internal("Missing request message.")),
        }
    }
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

fn records_len(records: &Bytes) -> usize {
    if records.is_empty() {
        0
    } else {
        1 + encoded_len_varint(records.len() as u64) + records.len()
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
    if total > limit {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {total} bytes, the limit is: {limit} \
             bytes"
        )));
    }
    let prefix = u32::try_from(total).map_err(|_| {
        Status::out_of_range(format!("Error, encoded message length too large: {total} bytes"))
    })?;
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
            if p.records.is_empty() {
                continue;
            }
            encode_key(6, WireType::LengthDelimited, &mut head);
            encode_varint(p.records.len() as u64, &mut head);
            if p.records.len() < INLINE_RECORDS {
                head.extend_from_slice(&p.records);
            } else {
                chunks.push_back(head.split().freeze());
                chunks.push_back(p.records.clone());
            }
        }
    }
    if !head.is_empty() {
        chunks.push_back(head.freeze());
    }
    Ok(chunks)
}

/// A response body of ready chunks, then the gRPC trailers.
struct Chunks {
    chunks: VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Trailers follow, so the hint stays open-ended above the data.
        let data: usize = self.chunks.iter().map(Bytes::len).sum();
        let mut hint = SizeHint::new();
        hint.set_lower(data as u64);
        hint
    }
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
