//! The record schemas of committed offsets in `__consumer_offsets`, byte for byte as Kafka
//! writes them (so Kafka's tooling can read a Strom offsets topic), and Kafka's mapping of a
//! group id to its partition of that topic.
//!
//! Key: `OffsetCommitKey` v1 = `i16 version, string group, string topic, i32 partition`.
//! Value: `OffsetCommitValue` v3 = `i16 version, i64 offset, i32 leader_epoch, string metadata,
//! i64 commit_timestamp`. A null value (tombstone) deletes the key. Older value versions and
//! the flexible v4 are read too; other key versions (group metadata, the new consumer
//! protocol's records) are not offsets and are skipped by the loader.

use bytes::{BufMut, Bytes, BytesMut};
use strom_format::{LeaderEpoch, Offset, PartitionId};

use crate::wire::{Reader, WireError, put_string};

/// The version of `OffsetCommitKey` written.
pub const OFFSET_KEY_VERSION: i16 = 1;
/// The version of `OffsetCommitValue` written.
pub const OFFSET_VALUE_VERSION: i16 = 3;

/// The key of a committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetKey {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
}

/// A committed offset, as stored and as the cache holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: Offset,
    /// Leader epoch of the last consumed record, or unknown.
    pub leader_epoch: LeaderEpoch,
    /// Client metadata.
    pub metadata: String,
    /// When the coordinator wrote it, in milliseconds since the epoch.
    pub commit_timestamp: i64,
}

/// Why a record of the offsets topic could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The bytes end inside a field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length that cannot be right.
    #[error("invalid length in {0}")]
    InvalidLength(&'static str),
    /// A string is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A key of another record type (group metadata, ...): not an offset.
    #[error("not an offset commit key (version {0})")]
    NotAnOffsetKey(i16),
    /// A value version this code does not know.
    #[error("unsupported offset commit value version {0}")]
    UnsupportedValueVersion(i16),
    /// A string longer than the schema's `i16` length allows.
    #[error("{0} is longer than 32767 bytes")]
    TooLong(&'static str),
}

impl From<WireError> for SchemaError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated(field) => SchemaError::Truncated(field),
            WireError::InvalidLength { field, .. } => SchemaError::InvalidLength(field),
            WireError::InvalidUtf8(field) => SchemaError::InvalidUtf8(field),
            WireError::TooLarge(field) => SchemaError::TooLong(field),
        }
    }
}

/// Encodes an `OffsetCommitKey` v1.
pub fn encode_key(group: &str, topic: &str, partition: PartitionId) -> Result<Bytes, SchemaError> {
    let mut buf = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    buf.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut buf, group, "group")?;
    put_string(&mut buf, topic, "topic")?;
    buf.put_i32(partition.get());
    Ok(buf.freeze())
}

/// Encodes an `OffsetCommitValue` v3.
pub fn encode_value(value: &CommittedOffset) -> Result<Bytes, SchemaError> {
    let mut buf = BytesMut::with_capacity(2 + 8 + 4 + 2 + value.metadata.len() + 8);
    buf.put_i16(OFFSET_VALUE_VERSION);
    buf.put_i64(value.offset.get());
    buf.put_i32(value.leader_epoch.get());
    put_string(&mut buf, &value.metadata, "metadata")?;
    buf.put_i64(value.commit_timestamp);
    Ok(buf.freeze())
}

/// Decodes a key; keys of other record types are [`SchemaError::NotAnOffsetKey`].
pub fn decode_key(buf: &[u8]) -> Result<OffsetKey, SchemaError> {
    let mut r = Reader::new(buf);
    let version = r.i16("key version")?;
    if !(0..=1).contains(&version) {
        return Err(SchemaError::NotAnOffsetKey(version));
    }
    let group = r.string("group")?;
    let topic = r.string("topic")?;
    let partition = PartitionId::new(r.i32("partition")?);
    Ok(OffsetKey { group, topic, partition })
}

/// Decodes a value of versions 0 to 4.
pub fn decode_value(buf: &[u8]) -> Result<CommittedOffset, SchemaError> {
    let mut r = Reader::new(buf);
    let version = r.i16("value version")?;
    let (offset, leader_epoch, metadata, commit_timestamp) = match version {
        0..=2 => {
            let offset = r.i64("offset")?;
            let metadata = r.string("metadata")?;
            let ts = r.i64("commit timestamp")?;
            // v1 also carries an expire timestamp, which Strom does not use.
            (offset, -1, metadata, ts)
        }
        3 => {
            let offset = r.i64("offset")?;
            let epoch = r.i32("leader epoch")?;
            let metadata = r.string("metadata")?;
            (offset, epoch, metadata, r.i64("commit timestamp")?)
        }
        4 => {
            // The flexible version: compact string, tagged fields after (ignored).
            let offset = r.i64("offset")?;
            let epoch = r.i32("leader epoch")?;
            let metadata = r.compact_string("metadata")?;
            (offset, epoch, metadata, r.i64("commit timestamp")?)
        }
        v => return Err(SchemaError::UnsupportedValueVersion(v)),
    };
    Ok(CommittedOffset {
        offset: Offset::new(offset),
        leader_epoch: LeaderEpoch::new(leader_epoch),
        metadata,
        commit_timestamp,
    })
}

/// Java's `String.hashCode`: `h = 31 * h + c` over the UTF-16 code units, in wrapping `int`.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group: Kafka's `Utils.abs(groupId.hashCode) %
/// partitions`, where `Utils.abs(Integer.MIN_VALUE)` is 0. Returns 0 when `partitions` is 0.
///
/// ```
/// use strom_coordinator::partition_for_group;
/// assert_eq!(partition_for_group("hello", 50), 22);
/// ```
pub fn partition_for_group(group_id: &str, partitions: usize) -> usize {
    if partitions == 0 {
        return 0;
    }
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.unsigned_abs() };
    abs as usize % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn java_hash_code_matches_known_values() {
        // Values computed with Java's String.hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("billing"), -109_829_509);
        // Outside the BMP: hashed as its two UTF-16 surrogates.
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
        assert_eq!(java_string_hash("groupé"), -1_237_460_406);
    }

    #[test]
    fn partition_for_group_is_kafkas_abs_modulo() {
        assert_eq!(partition_for_group("hello", 50), 22);
        // Negative hash: abs, not a sign-bit mask (which would give 36).
        assert_eq!(partition_for_group("my-group", 50), 12);
        assert_eq!(partition_for_group("billing", 50), 9);
        assert_eq!(partition_for_group("console-consumer-12345", 50), 6);
        assert_eq!(partition_for_group("abcdefghijklmnop", 50), 32);
        // Integer.MIN_VALUE: Utils.abs gives 0.
        assert_eq!(partition_for_group("polygenelubricants", 50), 0);
        assert_eq!(partition_for_group("anything", 1), 0);
        assert_eq!(partition_for_group("anything", 0), 0);
    }

    #[test]
    fn key_and_value_bytes_are_kafkas_layout() {
        let key = encode_key("g", "t", PartitionId::new(3)).unwrap();
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let value = encode_value(&CommittedOffset {
            offset: Offset::new(42),
            leader_epoch: LeaderEpoch::new(-1),
            metadata: "m".into(),
            commit_timestamp: 7,
        })
        .unwrap();
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&[0, 1, b'm']);
        expected.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(&value[..], &expected[..]);
    }

    #[test]
    fn older_and_flexible_value_versions_decode() {
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&[0, 2, b'h', b'i']);
        v1.extend_from_slice(&100i64.to_be_bytes());
        v1.extend_from_slice(&200i64.to_be_bytes()); // expire timestamp
        let d = decode_value(&v1).unwrap();
        assert_eq!((d.offset.get(), d.leader_epoch.get(), d.metadata.as_str()), (5, -1, "hi"));
        assert_eq!(d.commit_timestamp, 100);

        let mut v4 = vec![0, 4];
        v4.extend_from_slice(&9i64.to_be_bytes());
        v4.extend_from_slice(&3i32.to_be_bytes());
        v4.extend_from_slice(&[3, b'a', b'b']); // compact string "ab"
        v4.extend_from_slice(&11i64.to_be_bytes());
        v4.push(0); // no tagged fields
        let d = decode_value(&v4).unwrap();
        assert_eq!((d.offset.get(), d.leader_epoch.get(), d.metadata.as_str()), (9, 3, "ab"));
    }

    #[test]
    fn group_metadata_keys_are_not_offsets() {
        let mut key = vec![0, 2];
        key.extend_from_slice(&[0, 1, b'g']);
        assert_eq!(decode_key(&key), Err(SchemaError::NotAnOffsetKey(2)));
    }

    proptest! {
        #[test]
        fn key_and_value_round_trip(
            group in "\\PC{0,30}",
            topic in "[a-zA-Z0-9._-]{1,40}",
            partition in any::<i32>(),
            offset in any::<i64>(),
            epoch in any::<i32>(),
            metadata in "\\PC{0,50}",
            ts in any::<i64>(),
        ) {
            let key = encode_key(&group, &topic, PartitionId::new(partition)).unwrap();
            let decoded = decode_key(&key).unwrap();
            prop_assert_eq!(decoded, OffsetKey {
                group, topic, partition: PartitionId::new(partition)
            });
            let value = CommittedOffset {
                offset: Offset::new(offset),
                leader_epoch: LeaderEpoch::new(epoch),
                metadata,
                commit_timestamp: ts,
            };
            prop_assert_eq!(decode_value(&encode_value(&value).unwrap()).unwrap(), value);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_key(&bytes);
            let _ = decode_value(&bytes);
        }
    }
}
