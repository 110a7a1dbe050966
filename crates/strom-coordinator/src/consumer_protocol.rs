//! Kafka's ConsumerProtocol (protocol type `"consumer"`): the bytes a consumer puts in its
//! JoinGroup metadata (a [`Subscription`]) and the leader puts in SyncGroup (an [`Assignment`]).
//!
//! The coordinator treats these bytes as opaque; consumers (Strom's SDK and every Kafka client)
//! read and write them with this encoding, so a Strom consumer can share a group with a Java one.
//! Layout, big-endian: an `i16` version, then the fields of that version. Strings are an `i16`
//! length and UTF-8; byte arrays an `i32` length (`-1` = null); arrays an `i32` count.
//!
//! Like Kafka's `ConsumerProtocol`, decoding accepts versions newer than the newest one known
//! here and reads them as that newest version (later versions only append fields); trailing
//! bytes are ignored for the same reason.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{Reader, WireError, put_string};

/// The newest Subscription version this module knows (v3 adds `rack_id`).
pub const SUBSCRIPTION_MAX_VERSION: i16 = 3;
/// The newest Assignment version this module knows (v1..v3 have v0's layout).
pub const ASSIGNMENT_MAX_VERSION: i16 = 3;
/// The protocol type every consumer sends in JoinGroup.
pub const PROTOCOL_TYPE: &str = "consumer";

/// Why bytes are not a valid ConsumerProtocol message, or why a message cannot be encoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The input ends inside a field.
    #[error("truncated consumer protocol message: {0}")]
    Truncated(&'static str),
    /// The version header is negative.
    #[error("unsupported consumer protocol version {0}")]
    UnsupportedVersion(i16),
    /// A length or count is negative where null is not allowed, or impossible.
    #[error("invalid length {length} for {field}")]
    InvalidLength {
        /// Which field.
        field: &'static str,
        /// The length read.
        length: i64,
    },
    /// A string is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A value is too large for its wire field (strings over 32767 bytes, ...).
    #[error("{0} is too large to encode")]
    TooLarge(&'static str),
}

impl From<WireError> for ProtocolError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated(field) => ProtocolError::Truncated(field),
            WireError::InvalidLength { field, length } => {
                ProtocolError::InvalidLength { field, length }
            }
            WireError::InvalidUtf8(field) => ProtocolError::InvalidUtf8(field),
            WireError::TooLarge(field) => ProtocolError::TooLarge(field),
        }
    }
}

/// The partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partition numbers.
    pub partitions: Vec<i32>,
}

/// What a consumer sends as its JoinGroup protocol metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topics the member wants to consume.
    pub topics: Vec<String>,
    /// Opaque data for the assignor.
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+; what cooperative rebalancing is built on).
    pub owned_partitions: Vec<TopicPartitions>,
    /// The generation the owned partitions belong to (v2+; `-1` when unknown).
    pub generation_id: i32,
    /// The member's rack (v3+).
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
            rack_id: None,
        }
    }
}

/// What the leader hands each member in SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The partitions the member is to consume.
    pub partitions: Vec<TopicPartitions>,
    /// Opaque data from the assignor.
    pub user_data: Option<Bytes>,
}

impl Subscription {
    /// Encodes at `version` (clamped to `0..=`[`SUBSCRIPTION_MAX_VERSION`]); fields newer
    /// than the version are left out.
    ///
    /// ```
    /// use strom_coordinator::consumer_protocol::Subscription;
    /// let sub = Subscription { topics: vec!["orders".into()], ..Default::default() };
    /// let bytes = sub.encode(1).unwrap();
    /// assert_eq!(Subscription::decode(&bytes).unwrap(), sub);
    /// ```
    pub fn encode(&self, version: i16) -> Result<Bytes, ProtocolError> {
        let version = version.clamp(0, SUBSCRIPTION_MAX_VERSION);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i16(version);
        put_array_len(&mut buf, self.topics.len(), "topics")?;
        for topic in &self.topics {
            put_string(&mut buf, topic, "topic")?;
        }
        put_nullable_bytes(&mut buf, self.user_data.as_deref(), "user_data")?;
        if version >= 1 {
            put_topic_partitions(&mut buf, &self.owned_partitions, "owned_partitions")?;
        }
        if version >= 2 {
            buf.put_i32(self.generation_id);
        }
        if version >= 3 {
            put_nullable_string(&mut buf, self.rack_id.as_deref(), "rack_id")?;
        }
        Ok(buf.freeze())
    }

    /// Decodes a subscription of any version; versions above the newest known are read as it.
    pub fn decode(buf: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(buf);
        let version = r.i16("version")?;
        if version < 0 {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let version = version.min(SUBSCRIPTION_MAX_VERSION);
        let count = r.array_len("topics", 2)?;
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            topics.push(r.string("topic")?);
        }
        let user_data = r.nullable_bytes("user_data")?;
        let owned_partitions = if version >= 1 {
            read_topic_partitions(&mut r, "owned_partitions")?
        } else {
            Vec::new()
        };
        let generation_id = if version >= 2 { r.i32("generation_id")? } else { -1 };
        let rack_id = if version >= 3 { r.nullable_string("rack_id")? } else { None };
        Ok(Subscription { topics, user_data, owned_partitions, generation_id, rack_id })
    }
}

impl Assignment {
    /// Encodes at `version` (clamped to `0..=`[`ASSIGNMENT_MAX_VERSION`]; all share one layout).
    ///
    /// ```
    /// use strom_coordinator::consumer_protocol::{Assignment, TopicPartitions};
    /// let a = Assignment {
    ///     partitions: vec![TopicPartitions { topic: "orders".into(), partitions: vec![0, 2] }],
    ///     user_data: None,
    /// };
    /// assert_eq!(Assignment::decode(&a.encode(0).unwrap()).unwrap(), a);
    /// ```
    pub fn encode(&self, version: i16) -> Result<Bytes, ProtocolError> {
        let version = version.clamp(0, ASSIGNMENT_MAX_VERSION);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i16(version);
        put_topic_partitions(&mut buf, &self.partitions, "assigned_partitions")?;
        put_nullable_bytes(&mut buf, self.user_data.as_deref(), "user_data")?;
        Ok(buf.freeze())
    }

    /// Decodes an assignment of any version.
    ///
    /// An empty buffer decodes as an empty assignment: that is what the coordinator hands a
    /// member the leader left out, and what Kafka's clients accept as "nothing assigned".
    pub fn decode(buf: &[u8]) -> Result<Self, ProtocolError> {
        if buf.is_empty() {
            return Ok(Assignment::default());
        }
        let mut r = Reader::new(buf);
        let version = r.i16("version")?;
        if version < 0 {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let partitions = read_topic_partitions(&mut r, "assigned_partitions")?;
        let user_data = r.nullable_bytes("user_data")?;
        Ok(Assignment { partitions, user_data })
    }

    /// The assigned partitions as flat `(topic, partition)` pairs.
    pub fn topic_partitions(&self) -> Vec<(String, i32)> {
        flatten(&self.partitions)
    }
}

/// Groups flat `(topic, partition)` pairs by topic, topics and partitions sorted.
pub fn group_by_topic(pairs: &[(String, i32)]) -> Vec<TopicPartitions> {
    let mut map: std::collections::BTreeMap<&str, Vec<i32>> = std::collections::BTreeMap::new();
    for (topic, partition) in pairs {
        map.entry(topic.as_str()).or_default().push(*partition);
    }
    map.into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_unstable();
            partitions.dedup();
            TopicPartitions { topic: topic.to_owned(), partitions }
        })
        .collect()
}

/// Flattens per-topic partition lists into `(topic, partition)` pairs.
pub fn flatten(topics: &[TopicPartitions]) -> Vec<(String, i32)> {
    topics.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p))).collect()
}

fn put_array_len(buf: &mut BytesMut, len: usize, field: &'static str) -> Result<(), ProtocolError> {
    let len = i32::try_from(len).map_err(|_| ProtocolError::TooLarge(field))?;
    buf.put_i32(len);
    Ok(())
}

fn put_nullable_string(
    buf: &mut BytesMut,
    s: Option<&str>,
    field: &'static str,
) -> Result<(), ProtocolError> {
    match s {
        Some(s) => Ok(put_string(buf, s, field)?),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

fn put_nullable_bytes(
    buf: &mut BytesMut,
    b: Option<&[u8]>,
    field: &'static str,
) -> Result<(), ProtocolError> {
    match b {
        Some(b) => {
            put_array_len(buf, b.len(), field)?;
            buf.put_slice(b);
        }
        None => buf.put_i32(-1),
    }
    Ok(())
}

fn put_topic_partitions(
    buf: &mut BytesMut,
    topics: &[TopicPartitions],
    field: &'static str,
) -> Result<(), ProtocolError> {
    put_array_len(buf, topics.len(), field)?;
    for tp in topics {
        put_string(buf, &tp.topic, "topic")?;
        put_array_len(buf, tp.partitions.len(), "partitions")?;
        for p in &tp.partitions {
            buf.put_i32(*p);
        }
    }
    Ok(())
}

fn read_topic_partitions(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<TopicPartitions>, ProtocolError> {
    // A topic entry is at least a 2-byte name length and a 4-byte partition count.
    let count = r.array_len(field, 6)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let topic = r.string("topic")?;
        let n = r.array_len("partitions", 4)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            partitions.push(r.i32("partition")?);
        }
        out.push(TopicPartitions { topic, partitions });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
        proptest::collection::vec(
            ("[a-z0-9._-]{0,20}", proptest::collection::vec(any::<i32>(), 0..8))
                .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
            0..5,
        )
    }

    fn arb_subscription() -> impl Strategy<Value = Subscription> {
        (
            proptest::collection::vec("\\PC{0,12}", 0..6),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            arb_topic_partitions(),
            any::<i32>(),
            proptest::option::of("[a-z0-9]{0,8}"),
        )
            .prop_map(|(topics, user_data, owned_partitions, generation_id, rack_id)| {
                Subscription {
                    topics,
                    user_data: user_data.map(Bytes::from),
                    owned_partitions,
                    generation_id,
                    rack_id,
                }
            })
    }

    /// The subscription as a decoder sees it after encoding at `version`.
    fn truncate_to(mut sub: Subscription, version: i16) -> Subscription {
        if version < 1 {
            sub.owned_partitions.clear();
        }
        if version < 2 {
            sub.generation_id = -1;
        }
        if version < 3 {
            sub.rack_id = None;
        }
        sub
    }

    proptest! {
        #[test]
        fn subscription_round_trips(sub in arb_subscription(), version in 0i16..=3) {
            let bytes = sub.encode(version).unwrap();
            let decoded = Subscription::decode(&bytes).unwrap();
            prop_assert_eq!(decoded, truncate_to(sub, version));
        }

        #[test]
        fn assignment_round_trips(
            partitions in arb_topic_partitions(),
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            version in 0i16..=3,
        ) {
            let a = Assignment { partitions, user_data: user_data.map(Bytes::from) };
            let bytes = a.encode(version).unwrap();
            prop_assert_eq!(Assignment::decode(&bytes).unwrap(), a);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Subscription::decode(&bytes);
            let _ = Assignment::decode(&bytes);
        }

        #[test]
        fn decoding_truncated_valid_input_errors(sub in arb_subscription(), cut in 0usize..64) {
            let bytes = sub.encode(3).unwrap();
            let cut = cut.min(bytes.len());
            if cut < bytes.len() {
                prop_assert!(Subscription::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn group_by_topic_inverts_flatten(
            pairs in proptest::collection::btree_set(("[a-c]", 0i32..5), 0..12),
        ) {
            let pairs: Vec<(String, i32)> = pairs.into_iter().collect();
            prop_assert_eq!(flatten(&group_by_topic(&pairs)), pairs);
        }
    }

    #[test]
    fn newer_versions_decode_as_the_newest_known() {
        let sub = Subscription {
            topics: vec!["t".into()],
            generation_id: 7,
            rack_id: Some("r1".into()),
            ..Default::default()
        };
        let mut bytes = sub.encode(3).unwrap().to_vec();
        bytes[0..2].copy_from_slice(&9i16.to_be_bytes());
        bytes.extend_from_slice(b"future fields");
        assert_eq!(Subscription::decode(&bytes).unwrap(), sub);
    }

    #[test]
    fn hostile_lengths_are_typed_errors() {
        // Version 0, then a topic count of i32::MAX with nothing behind it.
        let bytes = [0u8, 0, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(Subscription::decode(&bytes), Err(ProtocolError::Truncated("topics")));
        let negative = [0u8, 0, 0xff, 0xff, 0xff, 0xfe];
        assert!(matches!(
            Subscription::decode(&negative),
            Err(ProtocolError::InvalidLength { field: "topics", length: -2 })
        ));
        assert_eq!(Subscription::decode(&[0xff, 0xff]), Err(ProtocolError::UnsupportedVersion(-1)));
        // A null topic name is not allowed.
        let null_topic = [0u8, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Subscription::decode(&null_topic),
            Err(ProtocolError::InvalidLength { field: "topic", length: -1 })
        ));
    }

    #[test]
    fn oversized_strings_fail_to_encode() {
        let sub = Subscription { topics: vec!["x".repeat(40_000)], ..Default::default() };
        assert_eq!(sub.encode(0), Err(ProtocolError::TooLarge("topic")));
    }

    #[test]
    fn empty_assignment_bytes_mean_nothing_assigned() {
        assert_eq!(Assignment::decode(&[]).unwrap(), Assignment::default());
    }
}
