//! Kafka's zig-zag varints (protobuf style), used inside records.
//!
//! Decoders take a cursor and never read past the slice: a truncated varint is an error, and so
//! is one longer than its type allows, so hostile input cannot make them loop or overflow.

use crate::FormatError;

/// Longest encoding of a 32-bit varint.
pub const MAX_VARINT_LEN: usize = 5;
/// Longest encoding of a 64-bit varint.
pub const MAX_VARLONG_LEN: usize = 10;

/// Appends `v` zig-zag encoded.
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_unsigned(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

/// Appends `v` zig-zag encoded.
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_unsigned(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes that `put_varint(v)` writes.
pub fn varint_len(v: i32) -> usize {
    unsigned_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

/// Bytes that `put_varlong(v)` writes.
pub fn varlong_len(v: i64) -> usize {
    unsigned_len(((v << 1) ^ (v >> 63)) as u64)
}

fn unsigned_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a zig-zag varint at `*pos`, advancing it.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, FormatError> {
    let raw = get_unsigned(buf, pos, MAX_VARINT_LEN)?;
    if raw > u32::MAX as u64 {
        return Err(FormatError::Corrupt("varint overflows 32 bits"));
    }
    let raw = raw as u32;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zig-zag varlong at `*pos`, advancing it.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, FormatError> {
    let raw = get_unsigned(buf, pos, MAX_VARLONG_LEN)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn get_unsigned(buf: &[u8], pos: &mut usize, max_len: usize) -> Result<u64, FormatError> {
    let mut value: u64 = 0;
    for i in 0..max_len {
        let Some(&b) = buf.get(*pos + i) else {
            return Err(FormatError::Truncated { needed: *pos + i + 1, available: buf.len() });
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(FormatError::Corrupt("varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varint(&out, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&out, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut pos = 0;
            let _ = get_varint(&bytes, &mut pos);
            let mut pos = 0;
            let _ = get_varlong(&bytes, &mut pos);
        }
    }

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        let cases: [(i32, &[u8]); 5] =
            [(0, &[0x00]), (-1, &[0x01]), (1, &[0x02]), (63, &[0x7e]), (-64, &[0x7f])];
        for (v, want) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, want, "{v}");
        }
        let mut out = Vec::new();
        put_varint(&mut out, i32::MIN);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn truncated_and_overlong_are_errors() {
        let mut pos = 0;
        assert!(matches!(get_varint(&[0x80], &mut pos), Err(FormatError::Truncated { .. })));
        let mut pos = 0;
        assert!(matches!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos),
            Err(FormatError::Corrupt(_))
        ));
    }
}
