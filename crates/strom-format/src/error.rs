//! The one error type of strom-format: every malformed input maps to a variant, never a panic.

/// Why bytes are not a valid RecordBatch v2 (or why one could not be built).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The input ends before the structure it announces.
    #[error("truncated input: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes the input has.
        available: usize,
    },
    /// The magic byte is not 2; Strom speaks RecordBatch v2 only.
    #[error("unsupported record batch magic {0} (only magic 2 is supported)")]
    UnsupportedMagic(i8),
    /// The stored CRC-32C does not match the bytes it covers.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC in the batch header.
        stored: u32,
        /// The CRC of the bytes after it.
        computed: u32,
    },
    /// The batch is larger than the limit it is checked against.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the batch.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Attribute bits name a compression codec that does not exist.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// The batch uses a codec this build of strom-format leaves out (its cargo feature is off).
    #[error("{0} compression is not built in (strom-format's `{0}` cargo feature is off)")]
    CodecNotBuilt(&'static str),
    /// A codec failed to compress or decompress.
    #[error("{codec} codec error: {message}")]
    Codec {
        /// The codec's name.
        codec: &'static str,
        /// What it reported.
        message: String,
    },
    /// A field holds a value the format forbids (negative length, bad count, ...).
    #[error("corrupt record batch: {0}")]
    Corrupt(&'static str),
    /// A batch must hold at least one record.
    #[error("record batch has no records")]
    Empty,
}
