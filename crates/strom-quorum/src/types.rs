//! The openraft type configuration of the metadata quorum and the conversions at its boundary:
//! our [`NodeId`] is an `i32 >= 0` (Kafka's broker id), openraft's is a `u64`.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::error::QuorumError;
use crate::metadata::{MetadataError, MetadataRecord, NodeId};

/// What applying one committed entry returned: `MetadataState::apply`'s result for a normal
/// entry, `Ok(())` for blank and membership entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// The state machine's verdict on the record.
    pub result: Result<(), MetadataError>,
}

openraft::declare_raft_types!(
    /// The quorum's Raft types: metadata records in, apply results out.
    pub TypeConfig:
        D = MetadataRecord,
        R = ApplyResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's id of the Raft log, per entry.
pub type LogId = openraft::LogId<u64>;
/// An entry of the metadata log.
pub type Entry = openraft::Entry<TypeConfig>;
/// openraft's storage error for this config.
pub type StorageError = openraft::StorageError<u64>;
/// The Raft instance type.
pub type Raft = openraft::Raft<TypeConfig>;

/// Our node id to openraft's. Negative ids are refused at configuration time.
pub fn raft_id(id: NodeId) -> Result<u64, QuorumError> {
    u64::try_from(id).map_err(|_| QuorumError::Config(format!("node id {id} must be >= 0")))
}

/// openraft's node id back to ours; ids come from our own configuration, so this only fails
/// for a peer that sends nonsense.
pub fn node_id(id: u64) -> Option<NodeId> {
    NodeId::try_from(id).ok()
}
