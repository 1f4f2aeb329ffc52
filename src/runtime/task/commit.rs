//! A task's part in the commit protocol (see `runtime::commit`): what it sends to its changelogs,
//! which offsets it commits, and how it persists or drops a commit locally.

use std::collections::BTreeMap;

use crate::record::OutputRecord;
use crate::state::{self, Position};

use super::super::collector::Collector;
use super::super::{Delivered, Error, SourceOffset};
use super::{store_mut, Task};

impl Task {
    /// Commit step: sends every dirty store's uncommitted writes to its changelog, preceded by
    /// any repair marker a restore asked for and the repair records of void attempts.
    pub fn send_changelog(&self, out: &mut Collector<'_>) -> Result<(), Error> {
        for (name, topic) in &self.changelogs {
            if let Some(&vouched) = self.repair_markers.get(name) {
                out.send(&state_marker(topic, self.partition, &self.committed, vouched))?;
            }
            let store = self.store(name).expect("changelogs name existing stores");
            let repairs = store.repair_writes().map_err(|source| Error::corrupted(self.partition, &source))?;
            for (key, value) in repairs {
                out.send(&OutputRecord {
                    topic: topic.clone(),
                    partition: Some(self.partition),
                    key: Some(key),
                    value,
                    timestamp: None,
                    headers: commit_headers(self.commit_id),
                })?;
            }
            for (key, value) in store.pending_writes() {
                out.send(&OutputRecord {
                    topic: topic.clone(),
                    partition: Some(self.partition),
                    key: Some(key.to_vec()),
                    value: value.map(<[u8]>::to_vec),
                    timestamp: None,
                    headers: commit_headers(self.commit_id),
                })?;
            }
        }
        Ok(())
    }

    /// The commit begins: its markers will carry one more commit than the last commit's, so a
    /// restore tells them apart even when nothing else moved (a commit of wall-clock timers).
    pub fn begin_commit(&mut self) {
        self.last_attempt = self.last_attempt.max(self.committed.commits) + 1;
        self.position.commits = self.last_attempt;
    }

    /// Commit step: sends the position marker to every store's changelog, so every store's last
    /// marker is the task's position and a restore can tell completed commits from broken ones.
    pub fn send_markers(&self, out: &mut Collector<'_>) -> Result<(), Error> {
        for topic in self.changelogs.values() {
            out.send(&state_marker(topic, self.partition, &self.position, Some(self.commit_id)))?;
        }
        Ok(())
    }

    /// Where each source starts for this task (the group's committed offset when it was
    /// assigned): committed again until the task has consumed, so every transaction of the
    /// instance carries this task's offsets and the broker checks the group generation.
    pub fn set_start_offsets(&mut self, offsets: BTreeMap<String, i64>) {
        for (topic, offset) in offsets {
            self.next_offsets.entry(topic.clone()).or_insert(offset);
            self.committed_next_offsets.entry(topic).or_insert(offset);
        }
    }

    /// The consumed offsets to commit: next offset per source topic processed since ever.
    pub fn offsets_to_commit(&self) -> Vec<SourceOffset> {
        self.next_offsets
            .iter()
            .map(|(topic, &next)| SourceOffset { topic: topic.clone(), partition: self.partition, next_offset: next })
            .collect()
    }

    /// Commit step, as soon as Kafka holds the commit: the positions it covers become the
    /// committed ones, so no later failure can rewind this task to before it.
    pub fn mark_committed(&mut self) {
        self.committed = self.position.clone();
        self.committed_next_offsets = self.next_offsets.clone();
        self.commit_needed = false;
    }

    /// Commit step: persists state, checkpoint and the committed position, per store in one
    /// `WriteBatch`.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`]: local state may now lag the changelog and must be restored.
    pub fn persist_local(&mut self, delivered: &Delivered) -> Result<(), Error> {
        let partition = self.partition;
        for (name, topic) in &self.changelogs {
            let next = delivered.get(&(topic.clone(), partition)).map(|o| o + 1);
            let store = store_mut(&mut self.timers, &mut self.stores, name).expect("changelogs name existing stores");
            store.persist_commit(next, &self.committed, self.commit_id).map_err(|source| Error::corrupted(partition, &source))?;
        }
        self.repair_markers.clear();
        self.commit_id = rand::random();
        Ok(())
    }
}

pub(super) fn commit_headers(commit: u64) -> crate::record::Headers {
    let mut headers = crate::record::Headers::new();
    headers.insert(state::COMMIT_HEADER, commit.to_be_bytes().to_vec());
    headers
}

fn state_marker(topic: &str, partition: i32, position: &Position, commit: Option<u64>) -> OutputRecord {
    let mut headers = commit.map(commit_headers).unwrap_or_default();
    headers.insert(state::MARKER_HEADER, state::MARKER_FORMAT);
    OutputRecord {
        topic: topic.to_owned(),
        partition: Some(partition),
        key: Some(state::MARKER_KEY.to_vec()),
        value: Some(position.encode()),
        timestamp: None,
        headers,
    }
}
