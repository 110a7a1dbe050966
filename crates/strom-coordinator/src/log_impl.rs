//! [`OffsetsLog`] for a local [`strom_log::Log`]: how a single-node broker (or an embedded
//! coordinator) keeps `__consumer_offsets` on disk.

use bytes::Bytes;
use strom_format::Offset;
use strom_log::Log;

use crate::error::OffsetsLogError;
use crate::offset_store::OffsetsLog;

impl OffsetsLog for Log {
    fn append(&self, batch: Bytes) -> Result<Offset, OffsetsLogError> {
        Log::append(self, batch).map(|info| info.first_offset).map_err(OffsetsLogError::new)
    }

    fn read(&self, from: Offset, max_bytes: usize) -> Result<Bytes, OffsetsLogError> {
        Log::read(self, from, max_bytes).map(|r| r.records).map_err(OffsetsLogError::new)
    }

    fn log_start_offset(&self) -> Offset {
        Log::log_start_offset(self)
    }

    fn log_end_offset(&self) -> Offset {
        Log::log_end_offset(self)
    }

    fn flush(&self) -> Result<(), OffsetsLogError> {
        Log::flush(self).map_err(OffsetsLogError::new)
    }
}
