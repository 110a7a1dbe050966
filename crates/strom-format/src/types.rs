//! Newtypes for the integers that name positions in a partition, so an offset can never be
//! passed where a leader epoch or a partition number is expected.

use std::fmt;

/// The position of a record in a partition: dense, strictly increasing, starting at 0.
///
/// ```
/// use strom_format::Offset;
/// let o = Offset::new(41);
/// assert_eq!(o.next(), Offset::new(42));
/// assert_eq!(o.get(), 41);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(i64);

impl Offset {
    /// The first offset of every partition.
    pub const ZERO: Offset = Offset(0);

    /// Wraps a raw offset.
    pub const fn new(raw: i64) -> Self {
        Offset(raw)
    }

    /// The raw offset, as Kafka's wire protocol carries it.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The offset right after this one.
    ///
    /// Wraps at `i64::MAX` rather than panicking: offsets read from hostile input can be
    /// anything, and real partitions never get near the end of the range.
    pub const fn next(self) -> Self {
        Offset(self.0.wrapping_add(1))
    }

    /// This offset moved by `delta` records (wrapping, as [`Offset::next`]).
    pub const fn add(self, delta: i64) -> Self {
        Offset(self.0.wrapping_add(delta))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The epoch of a partition's leadership; it only grows (KIP-101).
///
/// ```
/// use strom_format::LeaderEpoch;
/// assert!(LeaderEpoch::new(3) > LeaderEpoch::new(2));
/// assert_eq!(LeaderEpoch::UNKNOWN.get(), -1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(i32);

impl LeaderEpoch {
    /// What a producer writes into `partitionLeaderEpoch` before the leader stamps it.
    pub const UNKNOWN: LeaderEpoch = LeaderEpoch(-1);

    /// Wraps a raw epoch.
    pub const fn new(raw: i32) -> Self {
        LeaderEpoch(raw)
    }

    /// The raw epoch.
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The number of a partition within its topic.
///
/// ```
/// use strom_format::PartitionId;
/// assert_eq!(PartitionId::new(5).get(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(i32);

impl PartitionId {
    /// Wraps a raw partition number.
    pub const fn new(raw: i32) -> Self {
        PartitionId(raw)
    }

    /// The raw partition number.
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
