//! Leader/follower replication of partition logs, as pure state machines (Kafka's ISR model
//! with leader epochs, KIP-101 / KIP-279 / KIP-320).
//!
//! Nothing here does I/O or reads a clock: time is an input, decisions are return values. The
//! broker's shell (`strom-broker`: `partition.rs`, `fetcher.rs`, `service/replication.rs`)
//! holds one [`LeaderState`] per partition it leads, calls it on every append, follower fetch
//! and tick, and carries out what it answers (publish a high watermark, send an ISR change to
//! the controller). Followers ask [`divergence::truncation_point`] where to cut their log
//! when the leader reports a diverging epoch. The simulation in `strom-sim` drives the same
//! code.
//!
//! # Invariants kept here
//! - The high watermark of a leader never moves backwards and never passes the log end offset
//!   of any replica in the ISR it acknowledges with (the committed ISR plus any member a pending
//!   change adds): a record below it is on every one of them.
//! - Only the committed ISR (the one in the metadata image) counts for `min.insync.replicas`;
//!   a pending shrink never lets acks=all complete with fewer replicas than it names.
//! - At most one ISR change is in flight per partition, and it names the leader and partition
//!   epoch it was computed on, so the controller refuses it once either moved on.

pub mod divergence;
pub mod leader;

pub use divergence::{EpochEndOffset, diverging_epoch, truncation_point};
pub use leader::{
    Assignment, FetchUpdate, IsrChange, LeaderConfig, LeaderState, NotEnoughReplicas,
};

/// A broker's id, as in the metadata.
pub type NodeId = i32;
