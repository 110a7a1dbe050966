//! The metadata quorum: a Raft-replicated metadata log (openraft) and the state machine it
//! drives, [`MetadataState`]: brokers, topics, partition assignments, leaders, ISR and leader
//! epochs. KRaft's model: every node applies the same committed records in the same order, and
//! only the Raft leader (the active controller) writes.
//!
//! - [`metadata`]: the records and the pure, deterministic state machine.
//! - [`controller`]: the active controller's decisions (placement, fencing, leader election)
//!   as pure functions of the image and the time.
//!
//! No gRPC in here: peers talk through a transport seam, which the broker implements over its
//! internal gRPC service and the simulation implements in memory.

pub mod controller;
pub mod metadata;

pub use controller::{Controller, ControllerConfig, PlacementError};
pub use metadata::{
    BrokerRegistration, BrokerState, MetadataError, MetadataRecord, MetadataState, NO_LEADER,
    NodeId, PartitionChange, PartitionRecord, TopicRecord, TopicState,
};
