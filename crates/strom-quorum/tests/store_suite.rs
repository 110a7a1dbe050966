//! openraft's own storage conformance suite, run against the log store and state machine on a
//! real directory.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use strom_quorum::log_store::LogStore;
use strom_quorum::state_machine::StateMachine;
use strom_quorum::{FsDisk, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Arc::new(FsDisk::open(dir.path()).expect("disk"));
        let log = LogStore::open(disk.clone()).await.expect("log store");
        let sm = StateMachine::open(disk, None).await.expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
