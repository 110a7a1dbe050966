//! A `__consumer_offsets` partition that fails or stalls on demand, for testing the group
//! coordinator's all-or-nothing commits and its group commit.
//!
//! One double with every fault, rather than one per test: the copies that existed before
//! (a flaky, a failing and two gated logs) each forwarded the same five methods and differed
//! only in which call they broke.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_coordinator::{MemoryOffsetsLog, OffsetsLog, OffsetsLogError};
use strom_format::Offset;

/// Where the hold on appends stands.
#[derive(Debug, Default)]
struct Hold {
    /// Set by [`FaultyOffsetsLog::hold_appends`]; cleared by [`FaultyOffsetsLog::release`].
    armed: bool,
    /// How many appends are waiting inside the hold right now.
    waiting: usize,
}

/// An in-memory offsets log ([`MemoryOffsetsLog`]) whose appends and flushes can be made to
/// fail (like a full or failing disk) or to stall (like a commit stuck behind a slow replica),
/// and which counts the calls that reached it.
///
/// ```
/// use std::sync::Arc;
/// use strom_coordinator::{OffsetStore, OffsetsLog};
/// use strom_testkit::offsets_log::FaultyOffsetsLog;
///
/// let log = FaultyOffsetsLog::new();
/// let store = OffsetStore::load(vec![log.clone() as Arc<dyn OffsetsLog>]).unwrap();
/// log.fail_appends(true);
/// assert_eq!(store.groups(), Vec::<String>::new());
/// assert_eq!(log.appends(), 0);
/// ```
#[derive(Debug, Default)]
pub struct FaultyOffsetsLog {
    inner: MemoryOffsetsLog,
    fail_append: AtomicBool,
    fail_flush: AtomicBool,
    hold: Mutex<Hold>,
    changed: Condvar,
    appends: AtomicUsize,
    flushes: AtomicUsize,
}

impl FaultyOffsetsLog {
    /// A log that works until told otherwise.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// From now on appends fail (`true`) or work again (`false`); a failed append writes nothing.
    pub fn fail_appends(&self, fail: bool) {
        self.fail_append.store(fail, Ordering::SeqCst);
    }

    /// From now on flushes fail (`true`) or work again (`false`). The appended data stays in
    /// the log, as it would in the page cache after a failed fsync.
    pub fn fail_flushes(&self, fail: bool) {
        self.fail_flush.store(fail, Ordering::SeqCst);
    }

    /// From now on every append waits, before it writes, until [`release`](Self::release).
    pub fn hold_appends(&self) {
        self.lock().armed = true;
    }

    /// Lets every held append (and every later one) through.
    pub fn release(&self) {
        self.lock().armed = false;
        self.changed.notify_all();
    }

    /// Waits until an append is held. Panics after `timeout`: the test's event never came.
    pub fn wait_until_held(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut hold = self.lock();
        while hold.waiting == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no append reached the held log within {timeout:?}");
            hold = self.changed.wait_timeout(hold, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Appends that wrote (held or failed ones do not count until they write).
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }

    /// Flushes that succeeded.
    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }

    /// A poisoned lock only means another test thread panicked; its state is still valid.
    fn lock(&self) -> MutexGuard<'_, Hold> {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OffsetsLog for FaultyOffsetsLog {
    fn append(&self, batch: Bytes) -> Result<Offset, OffsetsLogError> {
        let mut hold = self.lock();
        if hold.armed {
            hold.waiting += 1;
            self.changed.notify_all();
            while hold.armed {
                hold = self.changed.wait(hold).unwrap_or_else(PoisonError::into_inner);
            }
            hold.waiting -= 1;
        }
        drop(hold);
        if self.fail_append.load(Ordering::SeqCst) {
            return Err(OffsetsLogError::new("no space left on device"));
        }
        let offset = self.inner.append(batch)?;
        self.appends.fetch_add(1, Ordering::SeqCst);
        Ok(offset)
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, OffsetsLogError> {
        self.inner.read(from, max_bytes)
    }

    fn log_start_offset(&self) -> Offset {
        self.inner.log_start_offset()
    }

    fn log_end_offset(&self) -> Offset {
        self.inner.log_end_offset()
    }

    fn flush(&self) -> Result<(), OffsetsLogError> {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(OffsetsLogError::new("fsync failed"));
        }
        self.inner.flush()?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
