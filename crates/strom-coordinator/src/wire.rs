//! The big-endian primitives shared by Kafka's ConsumerProtocol messages and the
//! `__consumer_offsets` record schemas: one bounds-checked reader and the string writer, so
//! both codecs reject short or hostile input the same way.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a primitive could not be read or written; each codec maps it onto its own error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The input ends inside `field`.
    Truncated(&'static str),
    /// A length or count that cannot be right.
    InvalidLength { field: &'static str, length: i64 },
    /// A string that is not UTF-8.
    InvalidUtf8(&'static str),
    /// A value too large for its wire field.
    TooLarge(&'static str),
}

/// Writes a Kafka `STRING`: an `i16` length and UTF-8 bytes.
pub(crate) fn put_string(
    buf: &mut BytesMut,
    s: &str,
    field: &'static str,
) -> Result<(), WireError> {
    let len = i16::try_from(s.len()).map_err(|_| WireError::TooLarge(field))?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// A bounds-checked big-endian cursor: every read is a typed error on short input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, WireError> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// Reads an array count; `min_elem` bytes per element caps it by the bytes left, so a
    /// hostile count cannot make us allocate more than the input could hold.
    pub(crate) fn array_len(
        &mut self,
        field: &'static str,
        min_elem: usize,
    ) -> Result<usize, WireError> {
        let n = self.i32(field)?;
        let n = usize::try_from(n)
            .map_err(|_| WireError::InvalidLength { field, length: i64::from(n) })?;
        if n.saturating_mul(min_elem) > self.buf.len() {
            return Err(WireError::Truncated(field));
        }
        Ok(n)
    }

    /// A non-null Kafka `STRING`.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        self.nullable_string(field)?.ok_or(WireError::InvalidLength { field, length: -1 })
    }

    pub(crate) fn nullable_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, WireError> {
        let len = self.i16(field)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len)
            .map_err(|_| WireError::InvalidLength { field, length: i64::from(len) })?;
        self.utf8(len, field).map(Some)
    }

    pub(crate) fn nullable_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Bytes>, WireError> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len)
            .map_err(|_| WireError::InvalidLength { field, length: i64::from(len) })?;
        Ok(Some(Bytes::copy_from_slice(self.take(len, field)?)))
    }

    /// A flexible-version `COMPACT_STRING`: unsigned varint of length + 1 (0 would be null,
    /// which the callers' fields do not allow).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn compact_string(&mut self, field: &'static str) -> Result<String, WireError> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1, field)?[0];
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                let len = usize::try_from(value)
                    .ok()
                    .and_then(|v| v.checked_sub(1))
                    .ok_or(WireError::InvalidLength { field, length: value as i64 })?;
                return self.utf8(len, field);
            }
        }
        Err(WireError::InvalidLength { field, length: -1 })
    }

    fn utf8(&mut self, len: usize, field: &'static str) -> Result<String, WireError> {
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| WireError::InvalidUtf8(field))
    }
}
