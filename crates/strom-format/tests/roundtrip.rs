//! Property tests of the whole codec: what the builder writes decodes to what went in, under
//! every codec, and hostile bytes produce errors, never panics.

mod common;

use bytes::Bytes;
use common::{Input, build, compression, inputs};
use proptest::prelude::*;
use strom_format::{
    Batches, CRC_START, Compression, FormatError, LeaderEpoch, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
    NO_SEQUENCE, Offset, RecordBatch, set_base_offset, set_partition_leader_epoch,
};

fn check_decodes_to(batch: &RecordBatch, inputs: &[Input], base_offset: i64) {
    let records: Vec<_> =
        batch.records().expect("records").collect::<Result<_, _>>().expect("decode");
    assert_eq!(records.len(), inputs.len());
    for (i, (got, want)) in records.iter().zip(inputs).enumerate() {
        assert_eq!(got.offset, Offset::new(base_offset + i as i64));
        assert_eq!(got.timestamp, want.timestamp);
        assert_eq!(got.key.as_deref(), want.key.as_deref());
        assert_eq!(got.value.as_deref(), want.value.as_deref());
        assert_eq!(got.headers, want.headers);
    }
}

/// Every byte of a valid batch, corrupted or cut, across codecs.
fn no_panic_on(bytes: Bytes) {
    if let Ok(batch) = RecordBatch::new(bytes.clone()) {
        let _ = batch.validate_crc();
        let _ = batch.validate_records();
        let _ = batch.last_offset();
        if let Ok(records) = batch.records_with_limit(1 << 20) {
            for r in records {
                let _ = r;
            }
        }
    }
    for b in Batches::new(bytes).flatten() {
        let _ = b.records().map(|rs| rs.count());
    }
}

/// Recomputes the CRC so that corruption reaches the codecs and the record decoder.
fn fix_crc(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[CRC_START - 4..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn build_then_decode_round_trips(inputs in inputs(40), c in compression()) {
        let bytes = build(&inputs, c).unwrap();
        let batch = RecordBatch::new(bytes).unwrap();
        batch.validate_crc().unwrap();
        batch.validate_records().unwrap();
        let n = inputs.len() as i32;
        prop_assert_eq!(batch.compression(), c);
        prop_assert_eq!(batch.base_offset(), Offset::ZERO);
        prop_assert_eq!(batch.partition_leader_epoch(), LeaderEpoch::UNKNOWN);
        prop_assert_eq!(batch.records_count(), n);
        prop_assert_eq!(batch.last_offset_delta(), n - 1);
        prop_assert_eq!(batch.base_timestamp(), inputs[0].timestamp);
        prop_assert_eq!(batch.max_timestamp(), inputs.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!(batch.producer_id(), NO_PRODUCER_ID);
        prop_assert_eq!(batch.producer_epoch(), NO_PRODUCER_EPOCH);
        prop_assert_eq!(batch.base_sequence(), NO_SEQUENCE);
        prop_assert!(!batch.attributes().is_transactional() && !batch.attributes().is_control());
        check_decodes_to(&batch, &inputs, 0);
    }

    #[test]
    fn estimated_size_is_the_uncompressed_size(inputs in inputs(20)) {
        let mut b = strom_format::BatchBuilder::new(Compression::None);
        for r in &inputs {
            b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.headers);
        }
        let estimate = b.estimated_size();
        prop_assert_eq!(b.len(), inputs.len());
        prop_assert_eq!(build(&inputs, Compression::None).unwrap().len(), estimate);
    }

    #[test]
    fn leader_rewrites_keep_the_crc(
        inputs in inputs(10), c in compression(), base in 0i64..i64::MAX / 2, epoch in any::<i32>(),
    ) {
        let mut buf = build(&inputs, c).unwrap().to_vec();
        set_base_offset(&mut buf, Offset::new(base));
        set_partition_leader_epoch(&mut buf, LeaderEpoch::new(epoch));
        let batch = RecordBatch::new(buf.into()).unwrap();
        batch.validate_records().unwrap();
        prop_assert_eq!(batch.partition_leader_epoch(), LeaderEpoch::new(epoch));
        prop_assert_eq!(batch.last_offset(), Offset::new(base + inputs.len() as i64 - 1));
        check_decodes_to(&batch, &inputs, base);
    }

    #[test]
    fn producer_fields_are_written(pid in any::<i64>(), epoch in any::<i16>(), seq in any::<i32>()) {
        let mut b = strom_format::BatchBuilder::new(Compression::None).with_producer(pid, epoch, seq);
        b.append(5, None, None, &[]);
        let batch = RecordBatch::new(b.build().unwrap()).unwrap();
        batch.validate_records().unwrap();
        prop_assert_eq!((batch.producer_id(), batch.producer_epoch(), batch.base_sequence()),
            (pid, epoch, seq));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        no_panic_on(bytes.clone().into());
        // The same bytes behind a plausible header, so the record decoder sees them.
        for c in Compression::ALL {
            let mut b = strom_format::BatchBuilder::new(c);
            b.append(0, None, None, &[]);
            let mut buf = b.build().unwrap().to_vec();
            buf.truncate(61);
            buf.extend_from_slice(&bytes);
            let len = (buf.len() - 12) as i32;
            buf[8..12].copy_from_slice(&len.to_be_bytes());
            fix_crc(&mut buf);
            no_panic_on(buf.into());
        }
    }

    #[test]
    fn truncation_is_an_error(inputs in inputs(10), c in compression(), cut in any::<prop::sample::Index>()) {
        let bytes = build(&inputs, c).unwrap();
        let cut = cut.index(bytes.len());
        let prefix = bytes.slice(..cut);
        prop_assert!(RecordBatch::new(prefix.clone()).is_err());
        // A partial trailing batch ends the walk without an error.
        let mut walk = Batches::new(prefix);
        prop_assert!(walk.next().is_none());
        prop_assert_eq!(walk.remaining(), cut);
        no_panic_on(bytes.slice(..cut));
    }

    #[test]
    fn corruption_is_caught(
        inputs in inputs(10), c in compression(), at in any::<prop::sample::Index>(), flip in 1u8..,
    ) {
        let bytes = build(&inputs, c).unwrap();
        let at = at.index(bytes.len());
        let mut buf = bytes.to_vec();
        buf[at] ^= flip;
        // From the CRC field on, every byte is covered by the CRC.
        if at >= CRC_START - 4
            && let Ok(batch) = RecordBatch::new(buf.clone().into()) {
                let crc_caught =
                    matches!(batch.validate_crc(), Err(FormatError::CrcMismatch { .. }));
                prop_assert!(crc_caught);
                prop_assert!(batch.validate_records().is_err());
            }
        no_panic_on(buf.clone().into());
        // With the CRC fixed up the corruption reaches the codecs and the record decoder.
        if at >= CRC_START {
            fix_crc(&mut buf);
            no_panic_on(buf.into());
        }
    }
}

#[test]
fn batches_walks_back_to_back_batches() {
    let mut buf = Vec::new();
    let mut next = 0i64;
    for (i, c) in Compression::ALL.into_iter().enumerate() {
        let mut b = strom_format::BatchBuilder::new(c);
        for j in 0..=i {
            b.append(j as i64, None, Some(format!("{i}-{j}").as_bytes()), &[]);
        }
        let mut bytes = b.build().unwrap().to_vec();
        set_base_offset(&mut bytes, Offset::new(next));
        next += i as i64 + 1;
        buf.extend_from_slice(&bytes);
    }
    let whole = buf.len();
    buf.extend_from_slice(&[0, 0, 0]); // a partial header, as at the end of a fetch
    let mut walk = Batches::new(buf.into());
    let mut offsets = Vec::new();
    for batch in walk.by_ref() {
        let batch = batch.unwrap();
        batch.validate_records().unwrap();
        offsets.extend(batch.records().unwrap().map(|r| r.unwrap().offset.get()));
    }
    assert_eq!(offsets, (0..next).collect::<Vec<_>>());
    assert_eq!(walk.position(), whole);
    assert_eq!(walk.remaining(), 3);
}

#[test]
fn empty_builder_is_an_error() {
    for c in Compression::ALL {
        assert_eq!(strom_format::BatchBuilder::new(c).build(), Err(FormatError::Empty));
    }
}

#[test]
fn decompression_is_bounded() {
    let value = vec![b'x'; 1 << 20];
    for c in Compression::ALL {
        let mut b = strom_format::BatchBuilder::new(c);
        b.append(0, None, Some(&value), &[]);
        let batch = RecordBatch::new(b.build().unwrap()).unwrap();
        if c != Compression::None {
            assert!(batch.size() < value.len() / 10, "{c} should compress");
            assert!(
                matches!(batch.records_with_limit(64 << 10), Err(FormatError::TooLarge { .. })),
                "{c}"
            );
        }
        assert_eq!(batch.records().unwrap().next().unwrap().unwrap().value.unwrap().len(), 1 << 20);
    }
}

/// A zstd frame of 80 MiB of zeros, about 3 KiB compressed, stays below the default limit.
#[test]
fn zip_bomb_is_rejected_by_default() {
    let zeros = vec![0u8; 80 << 20];
    let bomb = zstd::bulk::compress(&zeros, 1).unwrap();
    drop(zeros);
    let mut b = strom_format::BatchBuilder::new(Compression::Zstd);
    b.append(0, None, None, &[]);
    let mut buf = b.build().unwrap().to_vec();
    buf.truncate(61);
    buf.extend_from_slice(&bomb);
    let len = (buf.len() - 12) as i32;
    buf[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut buf);
    let batch = RecordBatch::new(buf.into()).unwrap();
    batch.validate_crc().unwrap();
    assert!(matches!(batch.records(), Err(FormatError::TooLarge { .. })));
    // Validation streams: zeros are no valid record, so it stops at the first one.
    assert!(batch.validate_records().is_err());
}
