//! The crate's error type: one enum, variants named for what the caller can do about them
//! (find the leader, retry, fix the configuration, give up on a corrupt store).

use crate::metadata::NodeId;

/// Errors of the quorum layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// This node is not the Raft leader; `leader` is the current leader and its address when
    /// this node knows it. The caller retries there.
    #[error("not the quorum leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's node id and address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// A file of the quorum store could not be read or written.
    #[error("quorum storage i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A file of the quorum store holds data that does not decode (not a torn tail, which is
    /// dropped on open, but damage in the middle).
    #[error("quorum storage corrupt: {0}")]
    Corrupt(String),
    /// The configuration is invalid or disagrees with what this data directory was created
    /// with (node id, voters).
    #[error("quorum configuration: {0}")]
    Config(String),
    /// The node is shutting down or has shut down.
    #[error("quorum node is shut down")]
    Shutdown,
    /// A peer RPC payload could not be decoded.
    #[error("bad quorum rpc payload: {0}")]
    BadRequest(String),
    /// Any other error reported by the Raft implementation.
    #[error("raft: {0}")]
    Raft(String),
}
