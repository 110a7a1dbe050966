//! Bounds on what one client request may cost the broker: how many partition entries it may
//! name (and that it names each once), and how many bytes of appends may wait for the disk at
//! once across every connection and front end.

use std::collections::HashSet;
use std::sync::Arc;

use strom_proto::v1::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Most partition entries one Produce or ListOffsets request may name, as for Fetch
/// ([`crate::MAX_FETCH_PARTITIONS`]): more is a malformed request, answered without work.
pub const MAX_REQUEST_PARTITIONS: usize = 10_000;

/// The least an append is charged against the in-flight budget, so many tiny appends cannot
/// queue millions of blocking tasks within it.
const MIN_APPEND_COST: usize = 16 * 1024;

/// Checks the `(topic, partition)` entries of a `what` request (Produce, ListOffsets): at most
/// [`MAX_REQUEST_PARTITIONS`], none named twice. Kafka refuses a partition listed twice with
/// `INVALID_REQUEST` for the whole request, because the two entries would race each other.
///
/// ```
/// use strom_broker::check_partition_entries;
/// assert!(check_partition_entries("produce", [("a", 0), ("a", 1), ("b", 0)]).is_ok());
/// let twice = check_partition_entries("produce", [("a", 0), ("b", 0), ("a", 0)]).unwrap_err();
/// assert!(twice.message.contains("a-0"));
/// ```
pub fn check_partition_entries<'a>(
    what: &str,
    entries: impl IntoIterator<Item = (&'a str, i32)>,
) -> Result<(), ApiError> {
    let mut entries = entries.into_iter();
    // The common request names one partition: no set to build.
    let Some(first) = entries.next() else { return Ok(()) };
    let mut entries = entries.peekable();
    if entries.peek().is_none() {
        return Ok(());
    }
    let mut seen = HashSet::new();
    for (topic, partition) in std::iter::once(first).chain(entries) {
        if seen.len() == MAX_REQUEST_PARTITIONS {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a {what} request may name at most {MAX_REQUEST_PARTITIONS} partitions"),
            ));
        }
        if !seen.insert((topic, partition)) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{what} request names partition {topic}-{partition} more than once"),
            ));
        }
    }
    Ok(())
}

/// Bytes of appends allowed to wait for or run on the blocking pool at once, broker-wide
/// (Kafka's `queued.max.request.bytes`). An append waits for its share before it is handed to
/// a blocking thread, so a flood of produce requests queues in the network layer (which has
/// its own per-connection bounds) instead of as unbounded blocking tasks.
#[derive(Debug, Clone)]
pub(crate) struct AppendBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl AppendBudget {
    pub(crate) fn new(total: usize) -> Self {
        let total = total.clamp(MIN_APPEND_COST, Semaphore::MAX_PERMITS);
        AppendBudget { bytes: Arc::new(Semaphore::new(total)), total }
    }

    /// Waits until `len` bytes (at least [`MIN_APPEND_COST`], at most the whole budget, so a
    /// large batch still goes through alone) may be in flight.
    pub(crate) async fn reserve(&self, len: usize) -> OwnedSemaphorePermit {
        let cost = len.clamp(MIN_APPEND_COST, self.total);
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        self.bytes
            .clone()
            .acquire_many_owned(cost)
            .await
            .expect("invariant: the append budget's semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_over_the_cap_are_refused() {
        let names: Vec<String> = (0..=MAX_REQUEST_PARTITIONS).map(|i| format!("t{i}")).collect();
        let many = names.iter().map(|n| (n.as_str(), 0));
        let err = check_partition_entries("produce", many).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let ok = names.iter().take(MAX_REQUEST_PARTITIONS).map(|n| (n.as_str(), 0));
        check_partition_entries("produce", ok).unwrap();
    }

    #[test]
    fn a_partition_named_twice_is_refused_wherever_it_repeats() {
        check_partition_entries("produce", []).unwrap();
        check_partition_entries("produce", [("t", 0)]).unwrap();
        check_partition_entries("produce", [("t", 0), ("t", 1), ("u", 0)]).unwrap();
        for twice in [vec![("t", 0), ("t", 0)], vec![("t", 0), ("t", 1), ("t", 0)]] {
            let err = check_partition_entries("produce", twice).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err.message.contains("t-0 more than once"), "{}", err.message);
        }
    }

    #[tokio::test]
    async fn the_budget_holds_appends_back_until_bytes_are_released() {
        let budget = AppendBudget::new(64 * 1024);
        let big = budget.reserve(1 << 30).await; // clamped to the whole budget
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(big);
        let _small = waiting.await.unwrap();
    }
}
