//! The broker half of the commit protocol: what the runtime needs from Kafka's producer and the
//! group's offset store. Production uses rdkafka (`kafka_log`); the test driver uses an in-memory
//! transactional log with crash injection (`testing::memory_log`). Both run the same protocol.

use std::collections::HashMap;

use crate::record::OutputRecord;

use super::Error;

/// The next offset to consume (last processed + 1) of one source partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// Highest offset delivered per (topic, partition).
pub type Delivered = HashMap<(String, i32), i64>;

pub(crate) trait Log {
    /// Opens a transaction (exactly-once only). Blocks for a broker round trip at most.
    fn begin_transaction(&mut self) -> Result<(), Error>;
    /// Queues a record; delivery is confirmed by `flush`.
    fn send(&mut self, record: &OutputRecord) -> Result<(), Error>;
    /// Blocks until every queued record is acknowledged.
    ///
    /// # Errors
    /// The first delivery failure since the previous flush.
    fn flush(&mut self) -> Result<(), Error>;
    /// The highest offsets delivered since the previous call.
    fn take_delivered(&mut self) -> Delivered;
    /// Adds the consumed offsets to the open transaction, with the group's metadata.
    fn send_offsets_to_transaction(&mut self, offsets: &[SourceOffset]) -> Result<(), Error>;
    fn commit_transaction(&mut self) -> Result<(), Error>;
    fn abort_transaction(&mut self) -> Result<(), Error>;
    /// Commits consumed offsets outside any transaction (at-least-once).
    fn commit_offsets(&mut self, offsets: &[SourceOffset]) -> Result<(), Error>;
}
