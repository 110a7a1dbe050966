//! Idempotent producer ids (InitProducerId of both front ends), unique across the cluster and
//! across restarts without a round trip to the controller: an id is `node_id << 40 | n`, where
//! `n` counts up per node and is reserved in blocks of [`BLOCK`] in `<data_dir>/producer-id-block`
//! (fsynced before an id of a new block is handed out), so a restart continues above every id
//! the node ever gave. Node ids are unique in a cluster, so two nodes never share a range.
//! Limits: node ids in `0..2^22`, 2^40 ids per node. Kafka allocates blocks through the
//! controller instead (KIP-730); this scheme needs no metadata record and keeps the data dir
//! as the only state (a wiped data dir restarts the counter, as a wiped node's logs are gone too).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use strom_proto::v1::ErrorCode;

use crate::error::{ApiError, BrokerError};

/// Ids reserved per write of the block file.
pub const BLOCK: u64 = 1000;
/// Bits of the per-node counter.
const COUNTER_BITS: u32 = 40;
/// Node ids that fit above the counter in a positive i64.
const MAX_NODE_ID: i64 = (1 << (63 - COUNTER_BITS)) - 1;
const FILE: &str = "producer-id-block";
const TMP: &str = "producer-id-block.tmp";

/// Hands out producer ids; see the module docs.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    dir: PathBuf,
    node_id: i32,
    /// `(next, end)`: ids `next..end` are reserved on disk and not yet given out. Held across
    /// the block file's write (once per [`BLOCK`] ids, on the blocking pool): an id must not be
    /// handed out before its block is durable.
    block: Mutex<(u64, u64)>,
}

impl ProducerIdAllocator {
    /// Reads the reservation in `dir` (none yet: counting starts at 0). Blocking.
    pub fn open(dir: &Path, node_id: i32) -> Result<Self, BrokerError> {
        let path = dir.join(FILE);
        let reserved = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                BrokerError::Metadata(format!("{} does not hold a number", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(BrokerError::Io {
                    context: format!("read {}", path.display()),
                    source,
                });
            }
        };
        Ok(ProducerIdAllocator {
            dir: dir.to_path_buf(),
            node_id,
            block: Mutex::new((reserved, reserved)),
        })
    }

    /// The next id. Blocking (writes the block file once per [`BLOCK`] ids).
    pub fn allocate(&self) -> Result<i64, ApiError> {
        let node = i64::from(self.node_id);
        if !(0..=MAX_NODE_ID).contains(&node) {
            return Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!("node id {node} is outside 0..={MAX_NODE_ID}: no producer ids"),
            ));
        }
        let mut block = self.block.lock();
        if block.0 >= block.1 {
            let end = block.1 + BLOCK;
            if end >= 1 << COUNTER_BITS {
                return Err(ApiError::new(ErrorCode::UnknownServerError, "producer ids exhausted"));
            }
            self.reserve(end).map_err(|e| {
                tracing::error!(error = %e, "could not reserve producer ids");
                ApiError::storage(format!("reserving producer ids: {e}"))
            })?;
            block.1 = end;
        }
        let n = block.0;
        block.0 += 1;
        Ok(node << COUNTER_BITS | n as i64)
    }

    fn reserve(&self, end: u64) -> std::io::Result<()> {
        let tmp = self.dir.join(TMP);
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{end}\n").as_bytes())?;
        file.sync_data()?;
        fs::rename(&tmp, self.dir.join(FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_per_node_and_continue_above_every_given_id_after_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = ProducerIdAllocator::open(dir.path(), 1).expect("open");
        let first: Vec<i64> = (0..1500).map(|_| a.allocate().expect("id")).collect();
        assert_eq!(first[0], 1 << COUNTER_BITS);
        drop(a);
        let a = ProducerIdAllocator::open(dir.path(), 1).expect("reopen");
        let next = a.allocate().expect("id");
        assert!(first.iter().all(|id| *id < next), "a restart reuses no id");
        let other = tempfile::tempdir().expect("temp dir");
        let b = ProducerIdAllocator::open(other.path(), 2).expect("open");
        let id = b.allocate().expect("id");
        assert!(!first.contains(&id) && id > 0);
        assert!(ProducerIdAllocator::open(other.path(), -1).expect("open").allocate().is_err());
    }
}
