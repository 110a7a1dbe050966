//! Which old segments retention may delete: by size (`retention_bytes`) and by age of their
//! newest record (`retention_ms`), oldest first, never the active segment.

use std::sync::Arc;

use crate::LogConfig;
use crate::segment::LogSegment;

/// How many segments, from the oldest, retention deletes now.
///
/// Like Kafka, deletion stops at the first segment that may stay, so the log keeps a dense
/// suffix. By size, a segment goes when the log still holds at least `retention_bytes` without
/// it; by time, when `now_ms` is more than `retention_ms` past its newest timestamp.
pub(crate) fn deletable_prefix(
    segments: &[Arc<LogSegment>],
    config: &LogConfig,
    now_ms: i64,
) -> usize {
    let Some((_active, old)) = segments.split_last() else { return 0 };
    let mut total: u64 = segments.iter().map(|s| s.size()).sum();
    let retention_ms =
        config.retention_ms.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut count = 0;
    for segment in old {
        let expired =
            retention_ms.is_some_and(|r| now_ms.saturating_sub(segment.max_timestamp()) > r);
        let too_big =
            config.retention_bytes.is_some_and(|r| total.saturating_sub(segment.size()) >= r);
        if !(expired || too_big) {
            break;
        }
        total = total.saturating_sub(segment.size());
        count += 1;
    }
    count
}
