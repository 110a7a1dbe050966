//! Record generators shared by the integration tests.

#![allow(dead_code)]

use bytes::Bytes;
use proptest::prelude::*;
use strom_format::{BatchBuilder, Compression, FormatError, Header};

/// A record as a producer hands it to the builder.
#[derive(Debug, Clone)]
pub struct Input {
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

pub fn compression() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

/// Null, empty and non-empty byte strings.
pub fn field(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => proptest::collection::vec(any::<u8>(), 1..max).prop_map(Some),
    ]
}

pub fn header() -> impl Strategy<Value = Header> {
    ("\\PC{0,12}", field(24)).prop_map(|(key, value)| Header { key, value: value.map(Bytes::from) })
}

/// Records whose timestamps move both ways around a realistic base.
pub fn inputs(max_records: usize) -> impl Strategy<Value = Vec<Input>> {
    let record =
        (-100_000i64..100_000, field(64), field(300), proptest::collection::vec(header(), 0..4));
    (any::<i64>(), proptest::collection::vec(record, 1..max_records)).prop_map(|(base, recs)| {
        let base = base / 4; // room for the deltas without overflow
        recs.into_iter()
            .map(|(delta, key, value, headers)| Input {
                timestamp: base + delta,
                key,
                value,
                headers,
            })
            .collect()
    })
}

pub fn build(inputs: &[Input], compression: Compression) -> Result<Bytes, FormatError> {
    let mut b = BatchBuilder::new(compression);
    for r in inputs {
        b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.headers);
    }
    b.build()
}
