//! The changelog's record format.
//!
//! Data records are the store's key and value (a `null` value is a delete, so compaction drops it).
//! Once per commit every store of a task also gets a *position marker*: the last source offset the
//! committed state has applied, per source topic, and the task's stream time. Restoring a marker
//! restores the applied-offset guard, so an input at or below it is never applied twice even when
//! the input is delivered again (at-least-once, or a replay). The marker's key starts with 0xFF,
//! which user keys may not; the header names the format version. Neither is ever reused.
//!
//! Every record of a commit, data and markers alike, carries the commit's id (a random u64 per
//! commit attempt, header `keyflow.commit`). Under at-least-once a crash can leave a commit's
//! data half-written with no marker, followed later by a complete commit; restoring applies, at
//! each marker, only the data of that marker's commit, so a broken attempt's data never leaks into
//! state. (Under exactly-once the broker hides aborted data; the ids make restores correct even on
//! brokers that do not.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Key of the position marker in every changelog. Never reuse or change.
pub(crate) const MARKER_KEY: &[u8] = b"\xffkeyflow.position";
/// Key of the reset marker `keyflow replay --wipe-state` writes to every changelog partition:
/// everything before it is void, so every instance, whatever its local state, restores an empty
/// store and rebuilds it from the replayed source. Never reuse or change.
pub const RESET_KEY: &[u8] = b"\xffkeyflow.reset";
pub const RESET_FORMAT: &str = "reset-v1";
/// Header on the position marker naming its format.
pub const MARKER_HEADER: &str = "keyflow.marker";
pub(crate) const MARKER_FORMAT: &str = "position-v1";
/// Header on every changelog record: the id of the commit it belongs to (8 bytes, big-endian).
pub(crate) const COMMIT_HEADER: &str = "keyflow.commit";

/// How far the committed state of a task has come: the last source offset applied per source
/// topic (for the task's partition), the stream time (largest record timestamp seen), and how
/// many commits the state has been through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub applied: BTreeMap<String, i64>,
    pub stream_time: i64,
    /// The task's commit count: one more with every commit. A commit that only fired wall-clock
    /// timers moves neither the offsets nor the stream time, and a restore still has to tell its
    /// marker from the one before it (`Task::finish_restore`). Absent in markers written before
    /// it existed (0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub commits: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Position {
    /// Merges another store's position into this one, keeping the furthest of each.
    ///
    /// The commit protocol writes markers only after all of a commit's data records are durable,
    /// so a marker in any store vouches for the data of every store of the task: the furthest
    /// position is the true one.
    pub fn merge(&mut self, other: &Position) {
        for (topic, &offset) in &other.applied {
            let e = self.applied.entry(topic.clone()).or_insert(offset);
            *e = (*e).max(offset);
        }
        self.stream_time = self.stream_time.max(other.stream_time);
        self.commits = self.commits.max(other.commits);
    }

    /// Whether the input at `offset` of `topic` is already part of the state.
    pub fn has_applied(&self, topic: &str, offset: i64) -> bool {
        self.applied.get(topic).is_some_and(|&a| offset <= a)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position always serializes")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One changelog record as the restorer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChangelogEntry {
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    /// Whether the record carried the position-marker header.
    pub is_marker: bool,
    /// The commit the record belongs to, from its `keyflow.commit` header.
    pub commit: Option<u64>,
}

impl ChangelogEntry {
    pub(crate) fn decode_commit(header: Option<&[u8]>) -> Option<u64> {
        header.and_then(|h| h.try_into().ok()).map(u64::from_be_bytes)
    }
}
