//! The metadata quorum: a Raft-replicated metadata log (openraft 0.9, storage-v2) and the state
//! machine it drives, [`MetadataState`]: brokers, topics, partition assignments, leaders, ISR
//! and leader epochs. KRaft's model: every node applies the same committed records in the same
//! order, and only the Raft leader (the active controller) writes.
//!
//! - [`metadata`]: the records and the pure, deterministic state machine.
//! - [`controller`]: the active controller's decisions (placement, fencing, leader election)
//!   as pure functions of the image and the time.
//! - [`node`]: [`Quorum`], the running node: propose, follow the image and the leader, serve
//!   peer RPCs, add learners. Bootstrap, identity check and per-election jitter live here.
//! - [`log_store`]: the durable Raft log and vote (CRC-framed append-only file, fsync before
//!   openraft is told, torn tail cut on open).
//! - [`state_machine`]: applies committed entries, publishes [`MetadataImage`]s, snapshots.
//! - [`network`]: the [`Transport`] seam peers talk through, and openraft's network over it.
//! - [`disk`]: the [`Disk`] seam all persistence goes through: [`FsDisk`] for real,
//!   [`MemDisk`] for the simulation (loses unsynced writes on a simulated crash).
//!
//! No gRPC in here: peers talk through the transport seam, which the broker implements over
//! its internal gRPC service and the simulation (`strom-sim`) implements in memory.

pub mod controller;
pub mod disk;
pub mod error;
pub mod log_store;
pub mod metadata;
pub mod network;
pub mod new_partitions;
pub mod node;
pub mod state_machine;
pub mod types;

pub use controller::{AlterPartitionError, Controller, ControllerConfig, PlacementError};
pub use disk::{Disk, FsDisk, MemDisk, MemDiskHandle};
pub use error::QuorumError;
pub use metadata::{
    BrokerRegistration, BrokerState, MetadataError, MetadataRecord, MetadataState, NO_LEADER,
    NodeId, PartitionChange, PartitionRecord, TopicRecord, TopicState,
};
pub use network::{RpcKind, Transport, TransportError};
pub use new_partitions::{NewPartitionsError, new_partitions};
pub use node::{LeaderInfo, Proposed, Quorum, QuorumConfig};
pub use state_machine::{AppliedEvent, ApplyObserver, MetadataImage};
pub use types::{ApplyResponse, TypeConfig};
