//! The gRPC framing the hand-written routes (`routes.rs`) share: reading a unary request's one
//! message out of the HTTP/2 DATA frames without copying them, and writing a response as a
//! list of ready chunks followed by the `grpc-status` trailers.
//!
//! tonic's generated servers copy every DATA frame into one `BytesMut` before prost sees the
//! message; here the frames stay as hyper delivered them (each a slice of h2's read buffer),
//! and [`FrameRope`] hands prost a `bytes` field as a slice of the frame it lies in. Only a
//! field that straddles two frames is copied, once, into a buffer of its own size.
//!
//! Every refusal is the one the generated server gives, with the same status code: a message
//! above the size limit (OUT_OF_RANGE), a compressed request (UNIMPLEMENTED: no compression is
//! enabled on the broker's services), a compressed-flag without an encoding or a body that
//! ends early (INTERNAL).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use tonic::Status;
use tonic::body::Body;

/// gRPC's message prefix: a compression flag and a big-endian length.
pub(crate) const GRPC_HEADER_LEN: usize = 5;

/// Refuses a request whose messages are compressed, as the generated servers do when no
/// compression is enabled.
fn check_request_encoding(parts: &http::request::Parts) -> Result<(), Status> {
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
    Ok(())
}

/// One gRPC message as the DATA frames brought it: the frames' own `Bytes`, in order, none
/// empty. As a [`Buf`], `copy_to_bytes` (which prost uses for every `bytes` and `string`
/// field) returns a slice of the current frame when the field lies inside it, and copies only
/// a field that runs into the next frame.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameRope {
    frames: VecDeque<Bytes>,
    remaining: usize,
}

impl FrameRope {
    /// Appends a frame (empty ones are dropped, so `chunk` is never empty while bytes remain).
    pub(crate) fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.remaining += frame.len();
            self.frames.push_back(frame);
        }
    }

    /// Drops everything past the first `len` bytes.
    fn truncate(&mut self, len: usize) {
        let mut kept = 0;
        let mut frames = 0;
        for frame in &mut self.frames {
            if kept >= len {
                break;
            }
            if kept + frame.len() > len {
                frame.truncate(len - kept);
            }
            kept += frame.len();
            frames += 1;
        }
        self.frames.truncate(frames);
        self.remaining = kept;
    }

    /// How many frames the rest of the message lies in.
    #[cfg(test)]
    pub(crate) fn frames(&self) -> usize {
        self.frames.len()
    }
}

impl Buf for FrameRope {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.frames.front().map_or(&[], |f| f.as_ref())
    }

    fn advance(&mut self, cnt: usize) {
        // prost checks lengths against `remaining` before it skips; clamping keeps a
        // mistaken caller from panicking the broker on network input.
        debug_assert!(cnt <= self.remaining, "advance past the end");
        let mut left = cnt.min(self.remaining);
        self.remaining -= left;
        while left > 0 {
            let Some(front) = self.frames.front_mut() else { break };
            if front.len() > left {
                front.advance(left);
                break;
            }
            left -= front.len();
            self.frames.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        debug_assert!(len <= self.remaining, "copy_to_bytes past the end");
        let len = len.min(self.remaining);
        if let Some(front) = self.frames.front_mut()
            && front.len() >= len
        {
            // The common case with large frames: a slice of the frame, no copy.
            let out = front.split_to(len);
            if front.is_empty() {
                self.frames.pop_front();
            }
            self.remaining -= len;
            return out;
        }
        // The field runs into the next frame: one copy of this field alone.
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let chunk = self.chunk();
            let n = chunk.len().min(len - out.len());
            out.extend_from_slice(&chunk[..n]);
            self.advance(n);
        }
        out.freeze()
    }
}

fn too_large(len: usize, limit: usize) -> Status {
    Status::out_of_range(format!(
        "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
    ))
}

/// A unary request's one message, as the generated servers take it: a compressed request
/// refused before its body is read, then [`read_message`] within `limit`.
pub(crate) async fn request_message(
    request: http::Request<Body>,
    limit: usize,
) -> Result<FrameRope, Status> {
    let (parts, mut body) = request.into_parts();
    check_request_encoding(&parts)?;
    read_message(&mut body, limit).await
}

/// Reads a unary call's one gRPC message without copying its frames, refusing what the
/// generated code would (a request on the server, a response in the follower's client).
/// Whatever follows the message (the trailers of a response) is left in `body`.
pub(crate) async fn read_message<B>(body: &mut B, limit: usize) -> Result<FrameRope, Status>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut rope = FrameRope::default();
    let mut header: Option<(u8, usize)> = None;
    loop {
        if header.is_none() && rope.remaining() >= GRPC_HEADER_LEN {
            let flag = rope.get_u8();
            let len = rope.get_u32() as usize;
            if len > limit {
                return Err(too_large(len, limit));
            }
            header = Some((flag, len));
        }
        if let Some((flag, len)) = header
            && rope.remaining() >= len
        {
            if flag != 0 {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding \
                     was specified",
                ));
            }
            rope.truncate(len);
            return Ok(rope);
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    // Bounded: never more than the limit plus one frame past the header.
                    let held = rope.remaining().saturating_add(data.len());
                    if held > limit.saturating_add(GRPC_HEADER_LEN) {
                        return Err(too_large(held, limit));
                    }
                    rope.push(data);
                }
            }
            // A `Status` (tonic's body) comes back as it was; a transport error gets the code
            // tonic gives it.
            Some(Err(e)) => return Err(Status::from_error(e.into())),
            None if rope.remaining() == 0 && header.is_none() => {
                return Err(Status::internal("Missing request message."));
            }
            None => return Err(Status::internal("Unexpected EOF decoding stream.")),
        }
    }
}

/// A prost decode failure as tonic's prost codec reports it.
pub(crate) fn decode_error(error: &prost::DecodeError) -> Status {
    Status::internal(error.to_string())
}

/// Encodes a small message (no large `bytes` field worth keeping apart) as one chunk:
/// gRPC's prefix, then prost's encoding.
pub(crate) fn encode_message<M: Message>(
    message: &M,
    limit: usize,
) -> Result<VecDeque<Bytes>, Status> {
    let len = message.encoded_len();
    let prefix = message_prefix(len, limit)?;
    let mut buf = BytesMut::with_capacity(GRPC_HEADER_LEN + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    message.encode_raw(&mut buf);
    Ok(VecDeque::from([buf.freeze()]))
}

/// The prefix's length field for an encoded message of `len` bytes, refused over `limit` as
/// the generated server refuses a response too large.
pub(crate) fn message_prefix(len: usize, limit: usize) -> Result<u32, Status> {
    if len > limit {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {limit} \
             bytes"
        )));
    }
    u32::try_from(len).map_err(|_| {
        Status::out_of_range(format!("Error, encoded message length too large: {len} bytes"))
    })
}

/// A successful unary answer: the chunks of its one message, then `grpc-status: 0`.
pub(crate) fn ok_response(chunks: VecDeque<Bytes>) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Chunks { chunks, trailers: Some(trailers) };
    let mut out = http::Response::new(Body::new(body));
    out.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    out
}

/// A body of ready chunks, then (if any) trailers.
pub(crate) struct Chunks {
    pub(crate) chunks: VecDeque<Bytes>,
    pub(crate) trailers: Option<http::HeaderMap>,
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
        let data: usize = self.chunks.iter().map(Bytes::len).sum();
        if self.trailers.is_none() {
            return SizeHint::with_exact(data as u64);
        }
        // Trailers follow, so the hint stays open-ended above the data.
        let mut hint = SizeHint::new();
        hint.set_lower(data as u64);
        hint
    }
}

/// A request body made of the given frames (tests of the routes).
#[cfg(test)]
pub(crate) fn body_of(frames: Vec<Bytes>) -> Body {
    Body::new(Chunks { chunks: frames.into(), trailers: None })
}

/// `message` behind gRPC's prefix, in one buffer (tests of the routes).
#[cfg(test)]
pub(crate) fn prefixed(message: &[u8]) -> Bytes {
    let mut wire = Vec::with_capacity(GRPC_HEADER_LEN + message.len());
    wire.push(0);
    wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
    wire.extend_from_slice(message);
    Bytes::from(wire)
}

/// `wire` cut into frames (slices of it) at `cuts`: positions, any order, out of range ignored.
#[cfg(test)]
pub(crate) fn cut(wire: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < wire.len()).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut frames = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        frames.push(wire.slice(at..cut));
        at = cut;
    }
    frames
}

/// `message` behind gRPC's prefix, cut into frames at `cuts`.
#[cfg(test)]
pub(crate) fn framed(message: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    cut(&prefixed(message), cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(frames: Vec<Bytes>, limit: usize) -> Result<FrameRope, Status> {
        futures::executor::block_on(read_message(&mut body_of(frames), limit))
    }

    #[test]
    fn a_message_split_anywhere_reads_back_whole() {
        let message: Vec<u8> = (0..200u8).collect();
        for cut in 0..210 {
            let mut rope = read(framed(&message, &[cut, cut + 7, 3]), 1 << 20).expect("reads");
            assert_eq!(rope.copy_to_bytes(rope.remaining()), message, "cut at {cut}");
        }
    }

    #[test]
    fn a_field_inside_one_frame_is_not_copied() {
        let frames = framed(&[7u8; 100], &[40]);
        let second = frames[1].clone();
        let mut rope = read(frames, 1 << 20).expect("reads");
        assert_eq!(rope.frames(), 2);
        rope.advance(40 - GRPC_HEADER_LEN);
        let field = rope.copy_to_bytes(50);
        assert_eq!(field.as_ptr(), second.as_ptr(), "sliced out of the frame");
        // Across the end of a frame: copied, same bytes.
        let mut rope = read(framed(&[7u8; 100], &[40]), 1 << 20).expect("reads");
        rope.advance(30);
        assert_eq!(rope.copy_to_bytes(20), vec![7u8; 20]);
        assert_eq!(rope.remaining(), 50);
    }

    #[test]
    fn refusals_match_the_generated_server() {
        let too_big = read(framed(&[0u8; 100], &[]), 99).expect_err("over the limit");
        assert_eq!(too_big.code(), tonic::Code::OutOfRange);
        let mut compressed = framed(&[0u8; 10], &[]);
        let mut first = compressed[0].to_vec();
        first[0] = 1;
        compressed[0] = Bytes::from(first);
        assert_eq!(read(compressed, 100).expect_err("flag").code(), tonic::Code::Internal);
        let mut short = framed(&[0u8; 10], &[8]);
        short.pop();
        assert_eq!(read(short, 100).expect_err("early end").code(), tonic::Code::Internal);
        assert_eq!(read(Vec::new(), 100).expect_err("no message").code(), tonic::Code::Internal);
        assert_eq!(read(vec![Bytes::from_static(&[0, 0])], 100).expect_err("cut").code(), {
            tonic::Code::Internal
        });
    }

    #[test]
    fn an_empty_message_reads_as_empty() {
        let rope = read(framed(&[], &[]), 100).expect("reads");
        assert_eq!(rope.remaining(), 0);
    }
}
