//! The compression codecs of a batch's records section, in the framings real Kafka clients
//! (Java, librdkafka, kafka-python, franz-go) write and read.
//!
//! Decompression is always bounded: every decoder stops at a caller-given output limit, so a
//! small hostile payload (a "zip bomb") yields [`FormatError::TooLarge`] instead of exhausting
//! memory.

use std::fmt;
#[cfg(any(feature = "gzip", feature = "lz4"))]
use std::io::Write;
use std::io::{self, Read};
use std::str::FromStr;

use crate::FormatError;

/// The codec of a batch's records section: bits 0-2 of the batch attributes.
///
/// ```
/// use strom_format::Compression;
/// let c: Compression = "lz4".parse().unwrap();
/// assert_eq!(c, Compression::Lz4);
/// assert_eq!(c.id(), 3);
/// assert_eq!(Compression::from_id(3).unwrap(), c);
/// assert_eq!(c.name(), "lz4");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// gzip (RFC 1952), as `java.util.zip.GZIPOutputStream` writes it.
    Gzip,
    /// Snappy in snappy-java's ("xerial") stream framing; raw snappy is accepted on read.
    Snappy,
    /// The LZ4 frame format with independent 64 KiB blocks.
    Lz4,
    /// Zstandard frames.
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec's id in the batch attributes (0 to 4).
    pub const fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec with attribute id `id`.
    pub fn from_id(id: u8) -> Result<Compression, FormatError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(FormatError::UnknownCompression(other)),
        }
    }

    /// The codec's name as Kafka's `compression.type` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Whether this build can compress and decompress with the codec: `None` always, the
    /// others when strom-format's cargo feature of the same name is on (all are by default).
    ///
    /// ```
    /// use strom_format::Compression;
    /// assert!(Compression::None.is_built());
    /// assert_eq!(Compression::Zstd.is_built(), cfg!(feature = "zstd"));
    /// ```
    pub const fn is_built(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown codec name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression type {0:?} (expected none, gzip, snappy, lz4 or zstd)")]
pub struct UnknownCompressionName(String);

impl FromStr for Compression {
    type Err = UnknownCompressionName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCompressionName(s.to_owned()))
    }
}

/// zstd level of Kafka's Java client (`ZSTD_CLEVEL_DEFAULT`).
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window we allocate for a frame. A hostile frame header can announce a window of
/// up to 2 GiB; levels 1 to 19 never need more than 2^23 bytes, so 2^24 leaves headroom without
/// letting one batch reserve hundreds of MiB.
#[cfg(feature = "zstd")]
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// snappy-java's stream header: magic, then format version 1 and minimum compatible version 1.
#[cfg(feature = "snappy")]
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
#[cfg(feature = "snappy")]
const XERIAL_MAGIC_LEN: usize = 8;
/// snappy-java's default block size, which Kafka's Java producer uses.
#[cfg(feature = "snappy")]
const XERIAL_BLOCK: usize = 32 * 1024;
/// No snappy block expands more than this: its densest element, a 3-byte copy, yields 64 bytes.
/// Checking a block's announced size against it keeps a few hostile bytes from making us
/// allocate up to the whole decompression limit.
#[cfg(feature = "snappy")]
const SNAPPY_MAX_RATIO: usize = 22;

/// The error for a codec whose cargo feature is off; `None` is always built.
#[allow(dead_code, reason = "unused when every codec feature is on")]
fn not_built(codec: Compression) -> FormatError {
    FormatError::CodecNotBuilt(codec.name())
}

fn codec_error(codec: Compression, e: impl fmt::Display) -> FormatError {
    FormatError::Codec { codec: codec.name(), message: e.to_string() }
}

/// Appends `input` compressed with `codec` to `out`.
pub(crate) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    match codec {
        Compression::None => out.extend_from_slice(input),
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
        #[cfg(feature = "snappy")]
        Compression::Snappy => {
            // Kafka's Java client writes snappy-java's framing and so does the kafka-protocol
            // crate; every Kafka client reads it, while raw snappy is only a read-side fallback.
            out.extend_from_slice(XERIAL_HEADER);
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, out.get_mut(start..).unwrap_or_default())
                    .map_err(|e| codec_error(codec, e))?;
                out.truncate(start + n);
                let n = u32::try_from(n).map_err(|e| codec_error(codec, e))?;
                if let Some(len) = out.get_mut(len_at..start) {
                    len.copy_from_slice(&n.to_be_bytes());
                }
            }
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            // Kafka's KafkaLZ4BlockInputStream reads only independent blocks; 64 KiB is the
            // block size its output stream uses.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd_compress(input, out)?,
        #[allow(unreachable_patterns, reason = "reachable when a codec feature is off")]
        left_out => return Err(not_built(left_out)),
    }
    Ok(())
}

#[cfg(feature = "zstd")]
thread_local! {
    /// A zstd compression context per thread, and the buffer it writes into, both reused:
    /// creating a context (and its tables) cost more than compressing a 16 KiB batch with it,
    /// and a fresh output buffer per batch meant an allocation and page faults per batch.
    static ZSTD_COMPRESS: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends `input` as one zstd frame (level [`ZSTD_LEVEL`]) to `out`.
#[cfg(feature = "zstd")]
fn zstd_compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
    let codec = Compression::Zstd;
    ZSTD_COMPRESS.with(|cell| {
        // Not re-entered: nothing below calls back into this module.
        let Ok(mut slot) = cell.try_borrow_mut() else {
            let compressed =
                zstd::bulk::compress(input, ZSTD_LEVEL).map_err(|e| codec_error(codec, e))?;
            out.extend_from_slice(&compressed);
            return Ok(());
        };
        let (compressor, scratch) = match &mut *slot {
            Some(pair) => pair,
            None => slot.insert((
                zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| codec_error(codec, e))?,
                Vec::new(),
            )),
        };
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(input.len()));
        compressor.compress_to_buffer(input, scratch).map_err(|e| codec_error(codec, e))?;
        out.extend_from_slice(scratch);
        // A huge batch does not pin its buffer in every thread that compressed one.
        if scratch.capacity() > ZSTD_SCRATCH_KEEP {
            *scratch = Vec::new();
        }
        Ok(())
    })
}

#[cfg(feature = "zstd")]
thread_local! {
    /// A zstd decompression context per thread, reused for the same reason as the compression
    /// one: a context per batch cost more than decoding the batch.
    static ZSTD_DECOMPRESS: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses zstd frames that record their size (what Strom, librdkafka and the Java
/// client write) into one buffer of exactly that size with a reused context. `Ok(None)` when
/// the size is not recorded: the caller then streams.
#[cfg(feature = "zstd")]
fn zstd_decompress(input: &[u8], limit: usize) -> Result<Option<Vec<u8>>, FormatError> {
    let codec = Compression::Zstd;
    let Some(size) = zstd::bulk::Decompressor::upper_bound(input) else {
        return Ok(None);
    };
    if size > limit {
        return Err(FormatError::TooLarge { size, limit });
    }
    ZSTD_DECOMPRESS.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return Ok(None);
        };
        let decompressor = match &mut *slot {
            Some(d) => d,
            None => {
                let mut d = zstd::bulk::Decompressor::new().map_err(|e| codec_error(codec, e))?;
                d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(|e| codec_error(codec, e))?;
                slot.insert(d)
            }
        };
        let mut out = Vec::with_capacity(size);
        decompressor.decompress_to_buffer(input, &mut out).map_err(|e| codec_error(codec, e))?;
        Ok(Some(out))
    })
}

/// The largest zstd output buffer a thread keeps between batches.
#[cfg(feature = "zstd")]
const ZSTD_SCRATCH_KEEP: usize = 4 << 20;

/// Decompresses `input`, failing with [`FormatError::TooLarge`] once the output would exceed
/// `limit` bytes. `Compression::None` is not handled here: callers slice it without copying.
pub(crate) fn decompress(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, FormatError> {
    #[cfg(feature = "zstd")]
    if codec == Compression::Zstd
        && let Some(out) = zstd_decompress(input, limit)?
    {
        return Ok(out);
    }
    // Room for a typical ratio up front: growing from nothing doubled (and copied) the
    // buffer several times per batch.
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).max(4096).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decompressor(codec, input)?
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e: io::Error| codec_error(codec, e))?;
    if out.len() > limit {
        return Err(FormatError::TooLarge { size: out.len(), limit });
    }
    Ok(out)
}

/// A streaming decoder of `input`: what it buffers is bounded by the codec's block or window
/// size, never by the total output, so callers can validate a batch that expands far beyond
/// what they would hold in memory. Errors surface as `io::Error`s carrying the codec's message.
pub(crate) fn decompressor<'a>(
    codec: Compression,
    input: &'a [u8],
) -> Result<Box<dyn Read + 'a>, FormatError> {
    Ok(match codec {
        Compression::None => Box::new(input),
        #[cfg(feature = "gzip")]
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        #[cfg(feature = "snappy")]
        Compression::Snappy => Box::new(SnappyReader::new(input)),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| codec_error(codec, e))?;
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| codec_error(codec, e))?;
            Box::new(dec)
        }
        #[allow(unreachable_patterns, reason = "reachable when a codec feature is off")]
        left_out => return Err(not_built(left_out)),
    })
}

/// Reads snappy-java's framing (what Kafka's Java client writes) block by block or, without its
/// magic, one raw snappy block (what librdkafka writes), as snappy-java's own input stream does.
/// Holds one decoded block at a time: at most [`SNAPPY_MAX_RATIO`] times its input.
#[cfg(feature = "snappy")]
struct SnappyReader<'a> {
    input: SnappyInput<'a>,
    block: Vec<u8>,
    pos: usize,
    dec: snap::raw::Decoder,
}

#[cfg(feature = "snappy")]
/// What of a snappy stream is left to decode.
enum SnappyInput<'a> {
    /// snappy-java blocks after the stream header.
    Framed(&'a [u8]),
    /// One raw block.
    Raw(&'a [u8]),
    /// snappy-java's magic without the rest of its header.
    TruncatedHeader,
    Done,
}

#[cfg(feature = "snappy")]
impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        let input = if input.get(..XERIAL_MAGIC_LEN) == Some(&XERIAL_HEADER[..XERIAL_MAGIC_LEN]) {
            input
                .get(XERIAL_HEADER.len()..)
                .map_or(SnappyInput::TruncatedHeader, SnappyInput::Framed)
        } else {
            SnappyInput::Raw(input)
        };
        SnappyReader { input, block: Vec::new(), pos: 0, dec: snap::raw::Decoder::new() }
    }

    /// Decodes the next block into `self.block`; `Ok(false)` at the end of the stream.
    fn next_block(&mut self) -> Result<bool, FormatError> {
        let codec = Compression::Snappy;
        let block = match std::mem::replace(&mut self.input, SnappyInput::Done) {
            SnappyInput::Done | SnappyInput::Framed([]) => return Ok(false),
            SnappyInput::TruncatedHeader => {
                return Err(codec_error(codec, "truncated snappy-java stream header"));
            }
            SnappyInput::Raw(block) => block,
            SnappyInput::Framed(rest) => {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    return Err(codec_error(codec, "truncated snappy-java block length"));
                };
                let len = u32::from_be_bytes(*len) as usize;
                let (Some(block), Some(after)) = (tail.get(..len), tail.get(len..)) else {
                    return Err(codec_error(codec, "truncated snappy-java block"));
                };
                self.input = SnappyInput::Framed(after);
                block
            }
        };
        let n = snappy_len(block)?;
        self.block.resize(n, 0);
        let written =
            self.dec.decompress(block, &mut self.block).map_err(|e| codec_error(codec, e))?;
        self.block.truncate(written);
        self.pos = 0;
        Ok(true)
    }
}

#[cfg(feature = "snappy")]
impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.block.len() {
            match self.next_block() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
        let available = self.block.get(self.pos..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(feature = "snappy")]
/// The uncompressed length a raw snappy block announces, if the block could produce it.
fn snappy_len(block: &[u8]) -> Result<usize, FormatError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| codec_error(codec, e))?;
    if len > block.len().saturating_mul(SNAPPY_MAX_RATIO) {
        return Err(codec_error(codec, "block announces more than it can hold"));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_names_and_parsing_agree() {
        for (i, c) in Compression::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(c.id()), i);
            assert_eq!(Compression::from_id(c.id()), Ok(c));
            assert_eq!(c.name().parse::<Compression>(), Ok(c));
            assert_eq!(c.name().to_uppercase().parse::<Compression>(), Ok(c));
            assert_eq!(c.to_string(), c.name());
        }
        for id in 5..=255 {
            assert_eq!(Compression::from_id(id), Err(FormatError::UnknownCompression(id)));
        }
        assert!("lzma".parse::<Compression>().is_err());
    }

    /// Bytes from kafka-protocol's snappy tests: what the Java client writes for one record.
    #[cfg(feature = "snappy")]
    #[test]
    fn snappy_known_vectors() {
        let framed: &[u8] = b"\x82\x53\x4e\x41\x50\x50\x59\x00\x00\x00\x00\x01\x00\x00\x00\x01\
            \x00\x00\x00\x0f\x0d\x30\x18\x00\x00\x00\x01\x0csdfdsf\x00";
        let raw: &[u8] = b"\r0\x18\0\0\0\x01\x0csdfdsf\0";
        let want = decompress(Compression::Snappy, raw, 1024).unwrap();
        assert_eq!(want.len(), 0x0d);
        assert_eq!(decompress(Compression::Snappy, framed, 1024).unwrap(), want);
        let mut ours = Vec::new();
        compress(Compression::Snappy, &want, &mut ours).unwrap();
        assert_eq!(ours, framed);
    }

    #[cfg(all(feature = "gzip", feature = "snappy", feature = "lz4", feature = "zstd"))]
    #[test]
    fn bombs_hit_the_limit() {
        let big = vec![0u8; 1 << 20];
        for c in Compression::ALL {
            let mut z = Vec::new();
            compress(c, &big, &mut z).unwrap();
            assert!(matches!(decompress(c, &z, 1000), Err(FormatError::TooLarge { .. })), "{c}");
            assert_eq!(decompress(c, &z, big.len()).unwrap(), big, "{c}");
        }
        // Raw and framed snappy blocks whose headers announce far more than they hold.
        let bomb = [0xff, 0xff, 0xff, 0x1f, 0x00];
        let err = decompress(Compression::Snappy, &bomb, 1 << 30).unwrap_err();
        assert!(matches!(err, FormatError::Codec { .. }), "{err}");
        let mut framed = XERIAL_HEADER.to_vec();
        framed.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
        framed.extend_from_slice(&bomb);
        let err = decompress(Compression::Snappy, &framed, 1 << 30).unwrap_err();
        assert!(matches!(err, FormatError::Codec { .. }), "{err}");
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_frames_with_and_without_a_recorded_size_decode() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut sized = Vec::new();
        compress(Compression::Zstd, &data, &mut sized).unwrap();
        assert_eq!(zstd::bulk::Decompressor::upper_bound(&sized), Some(data.len()));
        // A streaming encoder records no size: the streaming decoder takes over.
        let streamed = zstd::stream::encode_all(data.as_slice(), 3).unwrap();
        for frame in [&sized, &streamed] {
            for _ in 0..3 {
                assert_eq!(decompress(Compression::Zstd, frame, data.len()).unwrap(), data);
            }
            assert!(matches!(
                decompress(Compression::Zstd, frame, data.len() - 1),
                Err(FormatError::TooLarge { .. })
            ));
        }
        // A frame that lies about its size fails cleanly, and the context still works after.
        let mut lying = sized.clone();
        if let Some(b) = lying.last_mut() {
            *b ^= 0xff;
        }
        let _ = decompress(Compression::Zstd, &lying, data.len());
        assert_eq!(decompress(Compression::Zstd, &sized, data.len()).unwrap(), data);
    }

    #[test]
    fn a_codec_left_out_of_the_build_is_refused_by_name() {
        for c in Compression::ALL.into_iter().filter(|c| !c.is_built()) {
            assert_eq!(
                compress(c, b"x", &mut Vec::new()),
                Err(FormatError::CodecNotBuilt(c.name()))
            );
            let err = decompress(c, b"x", 10).unwrap_err();
            assert_eq!(err, FormatError::CodecNotBuilt(c.name()));
            assert!(err.to_string().contains("cargo feature"), "{err}");
        }
        assert!(Compression::None.is_built());
    }

    proptest! {
        #[test]
        fn codecs_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100_000usize)) {
            for c in Compression::ALL.into_iter().filter(|c| c.is_built()) {
                let mut z = vec![7u8; 3];
                compress(c, &data, &mut z).unwrap();
                prop_assert_eq!(&z[..3], &[7u8; 3][..]);
                prop_assert_eq!(&decompress(c, &z[3..], data.len()).unwrap(), &data);
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for c in Compression::ALL {
                let _ = decompress(c, &data, 1 << 16);
            }
            let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            framed.extend_from_slice(&data);
            let _ = decompress(Compression::Snappy, &framed, 1 << 16);
        }
    }
}
