//! Testing without a broker: [`TopologyTestDriver`] runs a topology with real RocksDB stores, a
//! controllable wall clock, and an in-memory transactional log, through the same task and commit
//! code the runtime uses, and can crash the "process" at any step of the commit protocol.

mod driver;
pub(crate) mod memory_log;

pub use driver::{DriverConfig, Fault, FaultPlan, TopologyTestDriver};
pub use memory_log::{MemoryBroker, StoredRecord};
