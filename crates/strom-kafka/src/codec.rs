//! Request and response framing over the `kafka-protocol` codecs: split a frame into header
//! and body, decode a body without letting bad input panic the broker, encode a response with
//! its header. A frame is the bytes after the 4-byte length prefix.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::error::KafkaError;

/// The fixed start of every request header: api key, api version, correlation id.
pub const HEADER_PREFIX_LEN: usize = 8;

/// The fixed start of a request header, readable even when the rest is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    /// The raw API key.
    pub api_key: i16,
    /// The requested version.
    pub api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
}

/// Reads the api key, version and correlation id of a frame.
pub fn header_prefix(frame: &[u8]) -> Result<HeaderPrefix, KafkaError> {
    let bytes: [u8; HEADER_PREFIX_LEN] = frame
        .get(..HEADER_PREFIX_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KafkaError::Malformed(format!("frame of {} bytes", frame.len())))?;
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([bytes[0], bytes[1]]),
        api_version: i16::from_be_bytes([bytes[2], bytes[3]]),
        correlation_id: i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    })
}

/// Decodes the full request header of `frame` (which must hold a supported `api` version),
/// leaving `frame` at the start of the body.
pub fn decode_header(
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<RequestHeader, KafkaError> {
    let header_version = api.request_header_version(version);
    decode(frame, header_version)
}

/// Decodes one message, turning both a decoding error and a panic inside the codec into
/// [`KafkaError::Malformed`]: network input never takes the broker down.
pub fn decode<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<T, KafkaError> {
    match catch_unwind(AssertUnwindSafe(|| T::decode(buf, version))) {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(e)) => Err(KafkaError::Malformed(format!("{e:#}"))),
        Err(_) => Err(KafkaError::Malformed("the decoder panicked".into())),
    }
}

/// Encodes a response frame: length prefix, response header (of the version `api` uses at
/// `version`), body.
pub fn encode_response<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, KafkaError> {
    // ApiVersions always answers with header v0, so a client that does not know our flexible
    // versions can still read the answer.
    let header_version =
        if api == ApiKey::ApiVersions { 0 } else { api.response_header_version(version) };
    encode_with_header(header_version, version, correlation_id, body)
}

/// Like [`encode_response`] with an explicit response header version.
pub fn encode_with_header<T: Encodable>(
    header_version: i16,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, KafkaError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(encode_err)?
        + body.compute_size(version).map_err(encode_err)?;
    let len = i32::try_from(size)
        .map_err(|_| KafkaError::Encode(format!("response of {size} bytes is too large")))?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(len);
    header.encode(&mut out, header_version).map_err(encode_err)?;
    body.encode(&mut out, version).map_err(encode_err)?;
    Ok(out.freeze())
}

fn encode_err(e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Encode(e.to_string())
}
