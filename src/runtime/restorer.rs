//! The changelog reader: restores a task's stores before the task runs (Kafka Streams'
//! `StoreChangelogReader`).
//!
//! ```text
//!   start ──> reading (per store: from the checkpoint, or the beginning) ──(every store at its end)──> done
//!                │
//!                └── unreadable batch, checkpoint out of range ──> corrupted (the task manager wipes, starts again)
//! ```
//!
//! A store is restored when its reader's position reaches the changelog's *log end* read when the
//! restore started. Not at the first end-of-partition: under exactly-once the coordinator writes
//! a transaction's commit markers after `commit_transaction` returned, so a `read_committed`
//! reader can meet the end of the stable log before the last transaction's changelog records,
//! while the group already hands out that transaction's offsets. The previous owner's last commit
//! returned before this instance was given the partition, so the log end read now covers it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::kafka::QuietEof;
use crate::state::{changelog_topic, ChangelogEntry, COMMIT_HEADER, MARKER_HEADER};

use super::task::Task;
use super::tasks::Tasks;
use super::Error;

/// Most changelog records read per store in one step (and applied in one RocksDB batch).
const RESTORE_BATCH: usize = 10_000;
/// How long a step waits for a store's first record.
const RESTORE_WAIT: Duration = Duration::from_millis(10);

/// What one restore step found.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Partitions whose every store reached its end: finish them and let them run.
    pub done: Vec<i32>,
    /// Partitions whose local state cannot be trusted, with why: wipe them and start again.
    pub corrupted: Vec<(i32, String)>,
    /// Changelog records applied.
    pub records: u64,
}

pub(crate) struct Restorer {
    application_id: String,
    /// One reader per store: librdkafka reports end-of-partition by partition number only, so
    /// each reader reads one changelog topic.
    readers: BTreeMap<String, BaseConsumer<QuietEof>>,
    /// Reads log ends with `read_uncommitted` (the readers are `read_committed` under exactly-once,
    /// and would answer the last stable offset).
    watermarks: BaseConsumer<QuietEof>,
    /// Per restoring partition, per store still reading: the log end to reach (`None` until it
    /// could be read; tried again every step).
    restoring: BTreeMap<i32, BTreeMap<String, Option<i64>>>,
    timeout: Duration,
    /// A checkpoint older than this is not trusted (`state.checkpoint.max.age.ms`).
    max_checkpoint_age: Duration,
}

/// Where a store's restore starts.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Its checkpoint: the local state is good up to there.
    Checkpoint(i64),
    /// The beginning of the changelog, after wiping the local state, and why.
    Wiped(String),
    /// The beginning of the changelog: nothing local.
    Empty,
}

/// Decides where a store with `checkpoint` written `age` ago restores from, given its
/// changelog's `(low, high)` watermarks (`None`: they could not be read; the reader checks).
///
/// A checkpoint outside the log is useless; one older than `max_age` is not trusted: the log
/// cleaner drops a tombstone `delete.retention.ms` after cleaning it, so a restore from before it
/// would miss the delete and bring the key back (a cancelled timer would fire).
fn restore_start(checkpoint: Option<i64>, age: Option<Duration>, watermarks: Option<(i64, i64)>, max_age: Duration) -> Start {
    match (checkpoint, watermarks) {
        (None, _) => Start::Empty,
        (Some(_), _) if age.is_some_and(|a| a > max_age) => Start::Wiped(format!(
            "checkpoint written {:?} ago, longer than state.checkpoint.max.age.ms ({max_age:?})",
            age.unwrap_or_default()
        )),
        (Some(c), Some((low, high))) if c < low || c > high => {
            Start::Wiped(format!("checkpoint {c} outside the changelog ({low}..{high})"))
        }
        (Some(c), _) => Start::Checkpoint(c),
    }
}

impl Restorer {
    /// # Errors
    /// [`Error::Fatal`] when a client cannot be created.
    pub fn new(
        stores: impl IntoIterator<Item = String>,
        config: &ClientConfig,
        application_id: &str,
        timeout: Duration,
        max_checkpoint_age: Duration,
    ) -> Result<Self, Error> {
        let client = |c: &ClientConfig| c.create_with_context(QuietEof).map_err(|e| Error::Fatal(format!("restore consumer: {e}")));
        let mut readers = BTreeMap::new();
        for store in stores {
            readers.insert(store, client(config)?);
        }
        let watermarks = client(config.clone().set("isolation.level", "read_uncommitted"))?;
        Ok(Self { application_id: application_id.to_owned(), readers, watermarks, restoring: BTreeMap::new(), timeout, max_checkpoint_age })
    }

    pub fn is_restoring(&self) -> bool {
        !self.restoring.is_empty()
    }

    pub fn is_restoring_partition(&self, partition: i32) -> bool {
        self.restoring.contains_key(&partition)
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.restoring.keys().copied().collect()
    }

    /// Starts restoring every store of `task`: from its checkpoint when the changelog still holds
    /// it, else (wiped) from the beginning. A store already at the log end needs no reading.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`] when a store cannot be wiped or its changelog cannot be read.
    pub fn start(&mut self, task: &mut Task) -> Result<(), Error> {
        let partition = task.partition();
        // Recorded store by store as it is assigned, so a failure half-way unassigns what was.
        self.restoring.insert(partition, BTreeMap::new());
        let started = self.start_stores(task);
        if started.is_err() {
            self.stop(partition);
        }
        started
    }

    fn start_stores(&mut self, task: &mut Task) -> Result<(), Error> {
        let partition = task.partition();
        for (store, topic, checkpoint) in task.changelogs() {
            let watermarks = self.watermarks.fetch_watermarks(&topic, partition, self.timeout);
            // Unreadable watermarks: the reader checks the checkpoint (it refuses an offset out of range).
            let start =
                match restore_start(checkpoint, task.checkpoint_age(&store), watermarks.as_ref().ok().copied(), self.max_checkpoint_age) {
                    Start::Checkpoint(c) => c,
                    Start::Empty => 0,
                    Start::Wiped(why) => {
                        tracing::warn!(store, partition, why, "restoring from the beginning of the changelog");
                        task.wipe_store(&store)?;
                        0
                    }
                };
            let end = watermarks.ok().map(|(_, high)| high);
            if end.is_some_and(|e| start >= e) {
                continue; // nothing to read: an empty changelog, or the checkpoint is the end
            }
            let mut tpl = TopicPartitionList::new();
            let offset = if start == 0 { Offset::Beginning } else { Offset::Offset(start) };
            tpl.add_partition_offset(&topic, partition, offset).map_err(|e| corrupted(partition, &store, &e))?;
            self.readers[&store].incremental_assign(&tpl).map_err(|e| corrupted(partition, &store, &e))?;
            self.restoring.get_mut(&partition).expect("inserted by start").insert(store, end);
        }
        Ok(())
    }

    /// Reads a batch from every store's changelog into its task, and reports the tasks whose
    /// stores all reached their end, and those found corrupted.
    pub fn step(&mut self, tasks: &mut Tasks) -> Progress {
        let mut progress = Progress::default();
        let stores: Vec<String> = self.readers.keys().cloned().collect();
        for store in stores {
            if !self.restoring.values().any(|s| s.contains_key(&store)) {
                continue;
            }
            let mut batches: BTreeMap<i32, Vec<ChangelogEntry>> = BTreeMap::new();
            let reader = &self.readers[&store];
            for i in 0..RESTORE_BATCH {
                // The first read may wait for a fetch to land, so a drained queue does not keep
                // the stream thread spinning. (The slow restores were the consumer's 1 s
                // fetch.queue.backoff.ms, see `kafka`; this wait alone did not change their time.)
                let wait = if i == 0 { RESTORE_WAIT } else { Duration::ZERO };
                match reader.poll(wait) {
                    None => break,
                    Some(Ok(m)) => batches.entry(m.partition()).or_default().push(entry(&m)),
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                        // A checkpoint no longer in the changelog (deleted records): the reader
                        // does not say which partition, so every task reading this store starts over.
                        for (&p, s) in &self.restoring {
                            if s.contains_key(&store) {
                                progress.corrupted.push((p, format!("store {store}: checkpoint out of the changelog's range")));
                            }
                        }
                        break;
                    }
                    Some(Err(e)) => tracing::warn!(store, error = %e, "restore consumer error"),
                }
            }
            for (p, entries) in batches {
                progress.records += entries.len() as u64;
                // Only into a task still restoring this store: never underneath a running one.
                if !self.restoring.get(&p).is_some_and(|s| s.contains_key(&store)) {
                    continue;
                }
                let Some(t) = tasks.get_mut(p) else { continue };
                if let Err(e) = t.restore(&store, entries) {
                    progress.corrupted.push((p, e.to_string()));
                }
            }
            self.check_ends(&store);
        }
        progress.corrupted.sort();
        progress.corrupted.dedup_by_key(|(p, _)| *p);
        for (p, _) in &progress.corrupted {
            self.stop(*p);
        }
        progress.done = self.restoring.iter().filter(|(_, s)| s.is_empty()).map(|(&p, _)| p).collect();
        for p in &progress.done {
            self.restoring.remove(p);
        }
        progress
    }

    /// Marks the stores whose reader has reached the log end as restored.
    fn check_ends(&mut self, store: &str) {
        let topic = changelog_topic(&self.application_id, store);
        let reader = &self.readers[store];
        let positions = reader.position().ok();
        let mut reached = Vec::new();
        for (&p, stores) in &mut self.restoring {
            let Some(end) = stores.get_mut(store) else { continue };
            if end.is_none() {
                *end = self.watermarks.fetch_watermarks(&topic, p, self.timeout).ok().map(|(_, high)| high);
            }
            let position = positions.as_ref().and_then(|tpl| tpl.find_partition(&topic, p)).and_then(|e| e.offset().to_raw());
            if let (Some(end), Some(position)) = (*end, position) {
                if position >= end {
                    reached.push(p);
                }
            }
        }
        for p in reached {
            self.restoring.get_mut(&p).expect("found above").remove(store);
            unassign(reader, &topic, p);
        }
    }

    /// Stops restoring `partition` (revoked, closed or corrupted).
    pub fn stop(&mut self, partition: i32) {
        if let Some(stores) = self.restoring.remove(&partition) {
            for store in stores.keys() {
                unassign(&self.readers[store], &changelog_topic(&self.application_id, store), partition);
            }
        }
    }
}

fn unassign(reader: &BaseConsumer<QuietEof>, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = reader.incremental_unassign(&tpl) {
        tracing::warn!(topic, partition, error = %e, "cannot unassign a changelog partition");
    }
}

fn corrupted(partition: i32, store: &str, e: &KafkaError) -> Error {
    Error::TaskCorrupted { partitions: vec![partition], reason: format!("cannot read the changelog of store {store}: {e}") }
}

fn entry(m: &rdkafka::message::BorrowedMessage<'_>) -> ChangelogEntry {
    let headers = m.headers();
    ChangelogEntry {
        offset: m.offset(),
        key: m.key().unwrap_or_default().to_vec(),
        value: m.payload().map(<[u8]>::to_vec),
        is_marker: headers.is_some_and(|h| h.iter().any(|h| h.key == MARKER_HEADER)),
        commit: ChangelogEntry::decode_commit(headers.and_then(|h| h.iter().find(|h| h.key == COMMIT_HEADER)).and_then(|h| h.value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_checkpoint_is_used_only_inside_the_log_and_younger_than_the_tombstones_it_may_have_missed() {
        let max = DAY / 2;
        let fresh = Some(Duration::from_secs(60));
        assert_eq!(restore_start(None, None, Some((0, 10)), max), Start::Empty);
        assert_eq!(restore_start(Some(5), fresh, Some((0, 10)), max), Start::Checkpoint(5));
        assert_eq!(restore_start(Some(5), fresh, None, max), Start::Checkpoint(5), "the reader checks it");
        assert_eq!(restore_start(Some(5), None, Some((0, 10)), max), Start::Checkpoint(5), "written before its age was recorded");
        assert!(matches!(restore_start(Some(5), fresh, Some((6, 10)), max), Start::Wiped(why) if why.contains("outside")));
        // Down for two days: the cleaner may have dropped tombstones written after the checkpoint.
        assert!(matches!(restore_start(Some(5), Some(2 * DAY), Some((0, 10)), max), Start::Wiped(why) if why.contains("max.age")));
    }
}
