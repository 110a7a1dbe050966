//! Cross-checks against the `kafka-protocol` crate, an independent RecordBatch v2
//! implementation: each side decodes what the other encodes, and for the codecs both sides
//! implement with the same library and settings the bytes are identical.

mod common;

use bytes::{Bytes, BytesMut};
use common::{Input, build, inputs};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KpCompression, Record as KpRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;
use strom_format::{Compression, Header, RecordBatch};

fn kp_compression(c: Compression) -> KpCompression {
    match c {
        Compression::None => KpCompression::None,
        Compression::Gzip => KpCompression::Gzip,
        Compression::Snappy => KpCompression::Snappy,
        Compression::Lz4 => KpCompression::Lz4,
        Compression::Zstd => KpCompression::Zstd,
    }
}

/// kafka-protocol keeps headers in a map, so the compared inputs have unique header keys.
fn unique_headers(inputs: &mut [Input]) {
    for r in inputs {
        let mut seen = std::collections::HashSet::new();
        r.headers.retain(|h| seen.insert(h.key.clone()));
    }
}

/// kafka-protocol uses the smallest timestamp as `baseTimestamp`, Java and Strom the first one;
/// they agree when timestamps do not go back.
fn sorted_timestamps(inputs: &mut [Input]) {
    let mut ts: Vec<i64> = inputs.iter().map(|r| r.timestamp).collect();
    ts.sort_unstable();
    for (r, t) in inputs.iter_mut().zip(ts) {
        r.timestamp = t;
    }
}

fn to_kp(inputs: &[Input]) -> Vec<KpRecord> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, r)| KpRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // `baseSequence` -1 as Strom's non-idempotent batches; kafka-protocol derives it
            // from the first record and splits batches where offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: r.timestamp,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|h| (StrBytes::from_string(h.key.clone()), h.value.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect()
}

fn kp_encode(inputs: &[Input], c: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: kp_compression(c) };
    RecordBatchEncoder::encode(&mut buf, to_kp(inputs).iter(), &options)
        .expect("kafka-protocol encodes the batch");
    buf.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// (a) Batches written by kafka-protocol decode with Strom to the same records.
    #[test]
    fn we_decode_kafka_protocol_batches(mut inputs in inputs(30)) {
        unique_headers(&mut inputs);
        for c in Compression::ALL {
            let batch = RecordBatch::new(kp_encode(&inputs, c)).unwrap();
            batch.validate_records().unwrap();
            prop_assert_eq!(batch.compression(), c);
            prop_assert_eq!(batch.records_count(), inputs.len() as i32);
            let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(records.len(), inputs.len());
            for (i, (got, want)) in records.iter().zip(&inputs).enumerate() {
                prop_assert_eq!(got.offset.get(), i as i64);
                prop_assert_eq!(got.timestamp, want.timestamp);
                prop_assert_eq!(got.key.as_deref(), want.key.as_deref());
                prop_assert_eq!(got.value.as_deref(), want.value.as_deref());
                prop_assert_eq!(&got.headers, &want.headers);
            }
        }
    }

    /// (b) Strom's batches decode with kafka-protocol to the same records.
    #[test]
    fn kafka_protocol_decodes_our_batches(mut inputs in inputs(30)) {
        unique_headers(&mut inputs);
        for c in Compression::ALL {
            let mut bytes = build(&inputs, c).unwrap();
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            prop_assert!(bytes.is_empty());
            prop_assert_eq!(set.compression, kp_compression(c));
            prop_assert_eq!(set.records.len(), inputs.len());
            for (i, (got, want)) in set.records.iter().zip(&inputs).enumerate() {
                prop_assert_eq!(got.offset, i as i64);
                prop_assert_eq!(got.timestamp, want.timestamp);
                prop_assert_eq!(got.producer_id, -1);
                prop_assert_eq!(got.key.as_deref(), want.key.as_deref());
                prop_assert_eq!(got.value.as_deref(), want.value.as_deref());
                let headers: Vec<Header> = got
                    .headers
                    .iter()
                    .map(|(k, v)| Header { key: k.to_string(), value: v.clone() })
                    .collect();
                prop_assert_eq!(&headers, &want.headers);
            }
        }
    }

    /// (c) Byte for byte the same batch, CRC included, where both sides use the same codec
    /// library with the same settings (LZ4 and zstd use other libraries or framings there).
    #[test]
    fn identical_bytes_to_kafka_protocol(mut inputs in inputs(30)) {
        unique_headers(&mut inputs);
        sorted_timestamps(&mut inputs);
        for c in [Compression::None, Compression::Gzip, Compression::Snappy] {
            prop_assert_eq!(build(&inputs, c).unwrap(), kp_encode(&inputs, c), "{}", c);
        }
    }
}

/// Snappy framing over several 32 KiB blocks, as the Java client writes large batches.
#[test]
fn multi_block_snappy_matches() {
    let inputs: Vec<Input> = (0..40)
        .map(|i| Input {
            timestamp: 1_700_000_000_000 + i,
            key: Some(format!("key-{i}").into_bytes()),
            value: Some((0..4000).map(|j| ((i * 7 + j) % 251) as u8).collect()),
            headers: vec![Header::new("h", Some(b"v".as_slice()))],
        })
        .collect();
    for c in [Compression::None, Compression::Gzip, Compression::Snappy] {
        assert_eq!(build(&inputs, c).unwrap(), kp_encode(&inputs, c), "{c}");
    }
    for c in Compression::ALL {
        let batch = RecordBatch::new(kp_encode(&inputs, c)).unwrap();
        batch.validate_records().unwrap();
        assert_eq!(batch.records().unwrap().count(), inputs.len());
    }
}
