//! State stores: a RocksDB key-value store per (store, partition), every committed write also on a
//! compacted changelog topic, and the durable timers built on the same store.
//!
//! Writes are layered so that a record's effects, and a commit's, are all-or-nothing:
//!
//! ```text
//!   put/delete --> record layer --(record ok)--> commit layer --(Kafka commit ok)--> RocksDB
//!                       |                           |
//!                 (record failed: dropped)    (commit aborted: dropped = committed contents)
//! ```
//!
//! The commit layer is also the write cache in front of the changelog: a key written many times
//! between two commits is sent to the changelog once.

mod changelog;
mod directory;
mod memory;
mod store;
mod timers;

pub use changelog::Position;
pub(crate) use changelog::{ChangelogEntry, COMMIT_HEADER, MARKER_FORMAT, MARKER_HEADER, MARKER_KEY, RESET_FORMAT, RESET_KEY};
pub use directory::{claim, ClaimError, StateDirLock};
pub use memory::StoreMemory;
pub use store::{Entries, Store};
pub(crate) use timers::TimerStore;
pub use timers::TIMER_STORE;
pub use timers::{pending_due, pending_key, TimeKind, Timer};

/// Errors of the state layer. All of them mean the task's local state cannot be trusted or
/// reached: the runtime treats them as task-corrupted (wipe the task's state, restore).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RocksDB error in store `{store}`: {source}")]
    Rocks { store: String, source: rocksdb::Error },
    #[error("cannot prepare state directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("store `{store}` holds data of unknown format version {found} (this keyflow writes {expected})")]
    Format { store: String, found: String, expected: &'static str },
    #[error("keys starting with byte 0xFF are reserved for keyflow's own records (store `{store}`)")]
    ReservedKey { store: String },
    #[error("corrupt {what} in store `{store}`: {detail}")]
    Corrupt { store: String, what: &'static str, detail: String },
}

/// The declaration of a store in a topology. The changelog topic is
/// `<application.id>-<name>-changelog`, partitioned like the source topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSpec {
    pub name: String,
}

impl StoreSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// The changelog topic of a store, named as Kafka Streams names it.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}
