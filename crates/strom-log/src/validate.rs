//! What a log checks and fixes in the batches of an append before it takes a lock: shape,
//! size, CRC, every record of a producer's batch (Kafka's `LogValidator`), and the timestamps.
//!
//! Runs without the writer lock, so an append is all or nothing: every batch is parsed and
//! checked before any is written. A producer's batch may be rewritten here (and only here):
//! its `maxTimestamp` is set to the log's clock under `LogAppendTime`, or to the true maximum
//! of its records when the producer wrote a wrong one, because time retention and the time
//! index trust that header field.

use bytes::{Bytes, BytesMut};
use strom_format::{
    Batches, FormatError, RecordBatch, TimestampType, peek_batch_size, set_max_timestamp,
};

use crate::{LogConfig, LogError};

/// Decompressed bytes a producer's batch may expand to, per byte of `max_batch_bytes`: far
/// beyond any real compression ratio of a full batch, while a "zip bomb" is refused after a
/// bounded amount of work (records stream through a small buffer, so memory stays flat).
pub(crate) const MAX_EXPANSION: usize = 64;

/// Who is appending.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// The leader: assign offsets, optionally stamp an epoch, validate every record.
    Leader(Option<strom_format::LeaderEpoch>),
    /// A follower copying the leader: keep offsets, which must continue the log.
    Replica,
}

/// Parses and checks every batch of `batches`; `now` is the log's clock in milliseconds.
pub(crate) fn validate(
    batches: Bytes,
    origin: Origin,
    config: &LogConfig,
    now: i64,
) -> Result<Vec<RecordBatch>, LogError> {
    if batches.is_empty() {
        return Err(LogError::EmptyAppend);
    }
    let mut walk = Batches::new(batches.clone());
    let mut parsed: Vec<RecordBatch> = Vec::new();
    for batch in walk.by_ref() {
        let mut batch = batch?;
        if batch.size() > config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                size: batch.size(),
                limit: config.max_batch_bytes,
            });
        }
        match origin {
            Origin::Leader(_) => batch = check_producer_batch(batch, config, now)?,
            Origin::Replica => batch.validate_crc()?,
        }
        if batch.last_offset_delta().checked_add(1) != Some(batch.records_count()) {
            return Err(FormatError::Corrupt("recordsCount is not lastOffsetDelta + 1").into());
        }
        if let Origin::Replica = origin {
            // Checked before any offset arithmetic on the batch's own (untrusted) offsets.
            let base = batch.base_offset().get();
            let records = i64::from(batch.last_offset_delta()) + 1;
            if base < 0 || base.checked_add(records).is_none() {
                return Err(FormatError::Corrupt("base offset out of range").into());
            }
        }
        // Gaps are legal on compacted logs (a cleaned leader's batches), going back never.
        if let (Origin::Replica, Some(prev)) = (origin, parsed.last())
            && batch.base_offset() != prev.next_offset()
            && !(config.compact && batch.base_offset() > prev.next_offset())
        {
            return Err(LogError::NonMonotonicOffset {
                expected: prev.next_offset(),
                got: batch.base_offset(),
            });
        }
        parsed.push(batch);
    }
    if walk.remaining() > 0 {
        let rest = batches.get(walk.position()..).unwrap_or_default();
        let needed = peek_batch_size(rest).ok().flatten().unwrap_or(rest.len() + 1);
        // A partial batch at the end (a bad header would have failed above).
        if needed > config.max_batch_bytes {
            return Err(LogError::BatchTooLarge { size: needed, limit: config.max_batch_bytes });
        }
        return Err(FormatError::Truncated { needed, available: rest.len() }.into());
    }
    Ok(parsed)
}

/// Kafka's checks of a producer's batch: every record, the expansion bound and the timestamp
/// policy. Returns the batch to store, rewritten when its `maxTimestamp` must change.
fn check_producer_batch(
    batch: RecordBatch,
    config: &LogConfig,
    now: i64,
) -> Result<RecordBatch, LogError> {
    let max_decompressed = config.max_batch_bytes.saturating_mul(MAX_EXPANSION);
    let summary = batch.validate_records_bounded(max_decompressed)?;
    if config.compact && !batch.attributes().is_control() {
        // A second decode, only on compacted logs (Kafka's LogValidator does the same walk).
        for record in batch.records_with_limit(max_decompressed)? {
            let record = record?;
            if record.key.is_none() {
                let offset_delta = record.offset.get() - batch.base_offset().get();
                return Err(LogError::MissingKey { offset_delta });
            }
        }
    }
    let max_timestamp = match config.timestamp_type {
        TimestampType::LogAppendTime => now,
        TimestampType::CreateTime => {
            let ms = |d: Option<std::time::Duration>| {
                d.map_or(i64::MAX, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            };
            let min = now.saturating_sub(ms(config.timestamp_before_max));
            let max = now.saturating_add(ms(config.timestamp_after_max));
            for timestamp in [summary.min_timestamp, summary.max_timestamp] {
                if !(min..=max).contains(&timestamp) {
                    return Err(LogError::InvalidTimestamp { timestamp, min, max });
                }
            }
            summary.max_timestamp
        }
    };
    let stamped = batch.attributes().timestamp_type() == config.timestamp_type
        && batch.max_timestamp() == max_timestamp;
    if stamped {
        return Ok(batch);
    }
    // The rare path: a copy of this one batch (Kafka rewrites the header in place).
    let mut buf = BytesMut::from(batch.as_bytes().as_ref());
    set_max_timestamp(&mut buf, config.timestamp_type, max_timestamp);
    Ok(RecordBatch::new(buf.freeze())?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strom_format::{BatchBuilder, Compression};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn batch(timestamps: &[i64]) -> Bytes {
        let mut b = BatchBuilder::new(Compression::Lz4);
        for &ts in timestamps {
            b.append(ts, None, Some(b"v".as_slice()), &[]);
        }
        b.build().unwrap()
    }

    fn leader(batches: Bytes, config: &LogConfig) -> Result<Vec<RecordBatch>, LogError> {
        validate(batches, Origin::Leader(None), config, NOW)
    }

    #[test]
    fn create_time_bounds_are_enforced_on_every_record() {
        let config = LogConfig {
            timestamp_before_max: Some(Duration::from_secs(60)),
            ..LogConfig::default()
        };
        let hour = 3_600_000;
        leader(batch(&[NOW - 60_000, NOW, NOW + hour]), &config).unwrap();
        for bad in [NOW - 60_001, NOW + hour + 1] {
            let err = leader(batch(&[NOW, bad, NOW]), &config).unwrap_err();
            assert!(
                matches!(err, LogError::InvalidTimestamp { timestamp, .. } if timestamp == bad)
            );
        }
        // Without bounds anything goes, as before KIP-937.
        let open = LogConfig { timestamp_after_max: None, ..LogConfig::default() };
        leader(batch(&[0, i64::MAX / 2]), &open).unwrap();
        // A follower copies what its leader accepted.
        let far = batch(&[NOW + 10 * hour]);
        assert!(validate(far, Origin::Replica, &config, NOW).is_ok());
    }

    #[test]
    fn log_append_time_stamps_the_batch() {
        let config =
            LogConfig { timestamp_type: TimestampType::LogAppendTime, ..LogConfig::default() };
        // Out-of-range producer timestamps do not matter: the log's clock replaces them.
        let parsed = leader(batch(&[1, NOW * 2]), &config).unwrap();
        let b = &parsed[0];
        b.validate_crc().unwrap();
        assert_eq!(b.attributes().timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(b.max_timestamp(), NOW);
        assert!(b.records().unwrap().all(|r| r.unwrap().timestamp == NOW));
    }

    #[test]
    fn a_wrong_max_timestamp_is_corrected() {
        let mut buf = BytesMut::from(batch(&[NOW - 5, NOW - 9]).as_ref());
        set_max_timestamp(&mut buf, TimestampType::CreateTime, NOW + 10 * 3_600_000);
        let parsed = leader(buf.freeze(), &LogConfig::default()).unwrap();
        parsed[0].validate_crc().unwrap();
        assert_eq!(parsed[0].max_timestamp(), NOW - 5);
    }

    #[test]
    fn a_zip_bomb_is_refused_by_the_expansion_bound() {
        let config = LogConfig { max_batch_bytes: 4096, ..LogConfig::default() };
        let mut b = BatchBuilder::new(Compression::Zstd);
        b.append(NOW, None, Some(vec![0u8; 4096 * MAX_EXPANSION + 1].as_slice()), &[]);
        let err = leader(b.build().unwrap(), &config).unwrap_err();
        assert!(matches!(err, LogError::Format(FormatError::TooLarge { .. })), "{err}");
    }
}
