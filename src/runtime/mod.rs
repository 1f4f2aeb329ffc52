//! The runtime: how an instance (a consumer-group member) runs a topology's tasks.
//!
//! ```text
//! instance (group member, one stream thread)
//!   -> task manager   rebalance: assign / revoke / lost; restores tasks before they run
//!   -> tasks          the active tasks and the transaction they share
//!   -> task           one partition: processors, stores, timers, positions
//!   -> collector      the only way a record leaves, inside the transaction
//!   -> commit         the commit protocol, written out step by step
//! ```

mod collector;
pub(crate) mod commit;
mod error;
mod instance;
mod kafka_log;
mod limits;
mod log;
mod partitions;
mod restorer;
mod status;
pub(crate) mod task;
mod task_manager;
pub(crate) mod tasks;

pub use error::{Error, Step};
pub use instance::{now_ms, Instance};
pub use limits::{wire_size, RecordLimits, TooLarge, DEFAULT_MAX_BYTES};
pub(crate) use log::Log;
pub use log::{Delivered, SourceOffset};
pub use status::{Status, StatusSnapshot};
pub use task::{Outcome, TaskStats};

use serde::{Deserialize, Serialize};

/// `processing.guarantee`, as Kafka Streams names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnceV2,
}

impl Guarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnceV2 => "exactly_once_v2",
        }
    }
}
