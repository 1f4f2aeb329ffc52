//! A task: one partition of the topology (partition `p` of every source topic), with its own
//! processors, stores and timers.
//!
//! ```text
//!   open ──> Restoring ──(changelogs caught up)──> Running ──close──> Closed
//!               ^          │                    ^     │
//!               │          └──> Held ──release──┘     │
//!               └──────(corrupted: wipe stores)───────┘
//! ```
//!
//! Held: restored, but where its sources start is not known yet; it neither processes nor fires
//! timers until it is.
//!
//! A task never talks to Kafka itself: inputs are handed to it, and everything it emits goes
//! through the [`Collector`] it is handed, so it is the same code under the runtime and the test
//! driver.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::dlq::{self, ErrorClass};
use crate::processor::{self, Context, Processor};
use crate::record::{InputRecord, OutputRecord, Record, RecordMetadata};
use crate::serde::Serde;
use crate::state::{self, changelog_topic, ChangelogEntry, Position, Store, StoreMemory, Timer, TimerStore, TIMER_STORE};
use crate::topology::{NodeKind, Topology};

use super::collector::Collector;
use super::limits::RecordLimits;
use super::Error;

mod commit;
mod limits;
mod timers;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Restoring,
    Running,
    Held,
    Closed,
}

/// What became of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    /// At or below the applied-offset guard: already part of the state.
    Skipped,
    DeadLettered,
}

/// Counters a task keeps for metrics and the demo's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStats {
    pub processed: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub timers_fired: u64,
}

impl std::ops::AddAssign for TaskStats {
    fn add_assign(&mut self, o: TaskStats) {
        self.processed += o.processed;
        self.skipped += o.skipped;
        self.dead_lettered += o.dead_lettered;
        self.timers_fired += o.timers_fired;
    }
}

enum Input {
    Record(Record),
    Timer(Timer),
}

pub(crate) struct Task {
    partition: i32,
    state: TaskState,
    topology: Topology,
    /// By node index; `None` for sources and sinks.
    processors: Vec<Option<Box<dyn Processor>>>,
    stores: HashMap<String, Store>,
    timers: TimerStore,
    /// Store name -> changelog topic, the timer store included.
    changelogs: BTreeMap<String, String>,
    /// Position including uncommitted work; `committed` as of the last commit or restore.
    position: Position,
    committed: Position,
    /// Next offset to consume per source topic (last processed + 1); `None` until first input.
    next_offsets: BTreeMap<String, i64>,
    committed_next_offsets: BTreeMap<String, i64>,
    commit_needed: bool,
    /// At-least-once: state is committed but the consumed offsets are not yet (their commit
    /// failed, e.g. during a rebalance). Survives rollback, so the next commit retries them.
    offsets_pending: bool,
    /// Id of the commit being prepared; every changelog record of it carries this id.
    commit_id: u64,
    /// The commit count the last commit attempt's markers carried. Never rolled back: a retried
    /// attempt counts on, so its markers are never mistaken for those of the attempt it retries.
    last_attempt: u64,
    /// More stream-time timers were due than one call fires: they fire before the next record.
    stream_timers_left: bool,
    /// Stores whose restored marker lagged the task's position, with the commit that vouched for
    /// their data: the next commit first writes them that marker, so a later restore finds it.
    repair_markers: BTreeMap<String, Option<u64>>,
    dlq_topic: String,
    /// The application (consumer group) this task belongs to: processors read it from their
    /// context.
    application_id: String,
    /// The largest record each topic takes: outputs, state writes and dead letters are checked
    /// against it before they are kept (see `runtime::limits`).
    limits: RecordLimits,
    stats: TaskStats,
}

impl Task {
    /// Opens the task's stores under `<state_dir>/0_<partition>/` and instantiates its processors.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`] if a store cannot be opened.
    pub fn open(
        partition: i32,
        topology: &Topology,
        application_id: &str,
        task_dir: &Path,
        dlq_topic: &str,
        memory: &StoreMemory,
        limits: &RecordLimits,
    ) -> Result<Task, Error> {
        let corrupted = |source: state::Error| Error::corrupted(partition, &source);
        let mut stores = HashMap::new();
        let mut changelogs = BTreeMap::new();
        for spec in topology.stores() {
            stores.insert(spec.name.clone(), Store::open(&spec.name, &task_dir.join(&spec.name), memory).map_err(corrupted)?);
            changelogs.insert(spec.name.clone(), changelog_topic(application_id, &spec.name));
        }
        let timers = TimerStore::new(Store::open(TIMER_STORE, &task_dir.join(TIMER_STORE), memory).map_err(corrupted)?);
        changelogs.insert(TIMER_STORE.to_owned(), changelog_topic(application_id, TIMER_STORE));
        let processors = topology
            .nodes()
            .iter()
            .map(|n| match &n.kind {
                NodeKind::Processor { supplier, .. } => Some(supplier()),
                _ => None,
            })
            .collect();
        let mut task = Task {
            partition,
            state: TaskState::Restoring,
            topology: topology.clone(),
            processors,
            stores,
            timers,
            changelogs,
            position: Position::default(),
            committed: Position::default(),
            next_offsets: BTreeMap::new(),
            committed_next_offsets: BTreeMap::new(),
            commit_needed: false,
            offsets_pending: false,
            commit_id: rand::random(),
            last_attempt: 0,
            stream_timers_left: false,
            repair_markers: BTreeMap::new(),
            dlq_topic: dlq_topic.to_owned(),
            application_id: application_id.to_owned(),
            limits: limits.clone(),
            stats: TaskStats::default(),
        };
        task.reload_position();
        Ok(task)
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn state(&self) -> TaskState {
        self.state
    }

    pub fn stats(&self) -> TaskStats {
        self.stats
    }

    pub fn commit_needed(&self) -> bool {
        self.commit_needed || self.offsets_pending
    }

    /// At-least-once: the state of the last commit is durable; its offsets are about to be sent.
    pub fn set_offsets_pending(&mut self, pending: bool) {
        self.offsets_pending = pending;
    }

    /// `(store, changelog topic, checkpoint)` for each store, the timer store included.
    pub fn changelogs(&self) -> Vec<(String, String, Option<i64>)> {
        self.changelogs.iter().map(|(store, topic)| (store.clone(), topic.clone(), self.store(store).and_then(Store::checkpoint))).collect()
    }

    /// How old `store`'s checkpoint is (see `Store::checkpoint_age`).
    pub fn checkpoint_age(&self, store: &str) -> Option<std::time::Duration> {
        self.store(store).and_then(Store::checkpoint_age)
    }

    /// Estimated keys of each store.
    pub fn store_sizes(&self) -> Vec<(String, u64)> {
        self.changelogs.keys().filter_map(|name| self.store(name).map(|s| (name.clone(), s.estimated_keys()))).collect()
    }

    fn store(&self, name: &str) -> Option<&Store> {
        if name == TIMER_STORE {
            Some(self.timers.store())
        } else {
            self.stores.get(name)
        }
    }

    /// Reads a committed-or-pending value from a store, the timer store included (for queries
    /// and tests).
    ///
    /// # Errors
    /// State errors.
    pub fn get(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, state::Error> {
        match self.store(store) {
            Some(s) => s.get(key),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of a user store, in key order.
    ///
    /// # Errors
    /// State errors.
    pub fn scan(&self, store: &str, limit: usize) -> Result<state::Entries, state::Error> {
        self.range_from(store, b"", limit)
    }

    /// Up to `limit` entries of a user store from `from` on, in key order.
    ///
    /// # Errors
    /// State errors.
    pub fn range_from(&self, store: &str, from: &[u8], limit: usize) -> Result<state::Entries, state::Error> {
        match self.stores.get(store) {
            Some(s) => s.range(from, b"\xff", limit),
            None => Ok(Vec::new()),
        }
    }

    /// Applies restored changelog records to `store`.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`].
    pub fn restore(&mut self, store: &str, entries: Vec<ChangelogEntry>) -> Result<(), Error> {
        let partition = self.partition;
        match store_mut(&mut self.timers, &mut self.stores, store) {
            Some(s) => s.restore(entries).map_err(|source| Error::corrupted(partition, &source)),
            None => Ok(()),
        }
    }

    /// Deletes a store's local data so it is restored from the beginning of its changelog.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`] if even that fails.
    pub fn wipe_store(&mut self, store: &str) -> Result<(), Error> {
        let partition = self.partition;
        let corrupted = |source: state::Error| Error::corrupted(partition, &source);
        if let Some(s) = store_mut(&mut self.timers, &mut self.stores, store) {
            s.wipe().map_err(corrupted)?;
        }
        self.reload_position();
        Ok(())
    }

    /// Restoration is complete: decides, per store, about the data after its last marker (see
    /// `Store::finish_restore`), and the task may process.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`].
    pub fn finish_restore(&mut self) -> Result<(), Error> {
        let all = || self.stores.values().chain([self.timers.store()]);
        // The newest marker is the one with the most commits: its position is the task's, and
        // its commit vouches for the data the other stores hold after their own last marker.
        // (Field by field, an attempt that was rolled back after its markers landed in one store
        // would mix with the next attempt's in another.) Markers written before commits were
        // counted all count 0: then the furthest position, field by field.
        let newest = all().map(|s| s.position().commits).max().unwrap_or(0);
        let mut furthest = Position::default();
        for s in all().filter(|s| s.position().commits == newest) {
            furthest.merge(s.position());
        }
        let vouched = all().find(|s| s.position() == &furthest).and_then(Store::last_commit);
        let partition = self.partition;
        for name in self.changelogs.keys() {
            let store = store_mut(&mut self.timers, &mut self.stores, name).expect("changelogs name existing stores");
            let lagging = store.position() != &furthest;
            store.finish_restore(if lagging { vouched } else { None }).map_err(|source| Error::corrupted(partition, &source))?;
            if lagging {
                self.repair_markers.insert(name.clone(), vouched);
            }
        }
        for s in self.stores.values_mut().chain([self.timers.store_mut()]) {
            // Caught up with the changelog as of now: every tombstone up to here is applied.
            s.caught_up().map_err(|source| Error::corrupted(partition, &source))?;
        }
        self.position = furthest.clone();
        self.committed = furthest;
        self.state = TaskState::Running;
        Ok(())
    }

    /// Restored, but must not run yet (see [`TaskState::Held`]).
    pub fn hold(&mut self) {
        self.state = TaskState::Held;
    }

    /// A held task runs.
    pub fn release(&mut self) {
        if self.state == TaskState::Held {
            self.state = TaskState::Running;
        }
    }

    fn reload_position(&mut self) {
        let mut p = self.timers.store().position().clone();
        for s in self.stores.values() {
            p.merge(s.position());
        }
        self.position = p.clone();
        self.committed = p;
    }

    /// Processes one input. Its state writes, outputs and timers all happen, or (when a processor
    /// rejects it) none do and the input becomes a dead letter.
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`] for state failures, [`Error::Fatal`] for topology bugs, and
    /// whatever the collector raises.
    pub fn process(&mut self, input: &InputRecord, wall_clock: i64, out: &mut Collector<'_>) -> Result<Outcome, Error> {
        debug_assert_eq!(self.state, TaskState::Running, "a task processes only once restored");
        if self.position.has_applied(&input.topic, input.offset) {
            self.advance(input);
            self.stats.skipped += 1;
            return Ok(Outcome::Skipped);
        }
        let retry = |reason: String, after: Option<std::time::Duration>| Error::InputRetriable {
            topic: input.topic.clone(),
            partition: input.partition,
            offset: input.offset,
            reason,
            after,
        };
        if self.stream_timers_left {
            // Timers due before this record fire before it, however many (a bounded number per
            // call: the record waits for the next punctuation while more are left).
            self.fire_stream_timers(wall_clock, out)?;
            if self.stream_timers_left {
                return Err(retry("stream-time timers due before it are still firing".into(), Some(std::time::Duration::ZERO)));
            }
        }
        let topology = self.topology.clone();
        let Some(source) = topology.source_for(&input.topic) else {
            return Err(Error::Fatal(format!("task {} got a record from `{}`, which no source reads", self.partition, input.topic)));
        };
        let NodeKind::Source { key_serde, value_serde, .. } = &topology.nodes()[source].kind else {
            unreachable!("source_for returns source nodes")
        };
        // A control record (a migration command) is JSON on any topic.
        let value_serde = if input.headers.last(crate::record::CONTROL_HEADER).is_some() { &Serde::Json } else { value_serde };
        let decoded = key_serde
            .deserialize("key", input.key.as_deref())
            .and_then(|key| Ok((key, value_serde.deserialize("value", input.value.as_deref())?)));
        let (key, value) = match decoded {
            Ok(kv) => kv,
            Err(e) if e.is_transient() => return Err(retry(e.to_string(), None)),
            Err(e) => {
                let stage = format!("source:{}", topology.nodes()[source].name);
                self.send_dead_letter(
                    out,
                    dlq::dead_letter(&self.dlq_topic, input, ErrorClass::Deserialization, &e.to_string(), &stage, 1, wall_clock),
                )?;
                self.advance(input);
                self.stats.dead_lettered += 1;
                return Ok(Outcome::DeadLettered);
            }
        };
        let stream_time_before = self.position.stream_time;
        self.position.stream_time = self.position.stream_time.max(input.timestamp);
        let record = Record { key, value, timestamp: input.timestamp, headers: input.headers.clone() };
        let metadata = RecordMetadata {
            topic: input.topic.clone(),
            partition: input.partition,
            offset: Some(input.offset),
            timestamp: input.timestamp,
        };

        let outcome = match self.run(source, Input::Record(record), &metadata, wall_clock) {
            Ok(outputs) => {
                for o in &outputs {
                    out.send(o)?;
                }
                self.stats.processed += 1;
                Outcome::Processed
            }
            Err((_, processor::Error::Retry(reason))) => {
                self.position.stream_time = stream_time_before;
                return Err(retry(reason, None));
            }
            Err((_, processor::Error::Backoff { reason, after })) => {
                self.position.stream_time = stream_time_before;
                return Err(retry(reason, Some(after)));
            }
            Err((stage, processor::Error::BadRecord(msg))) => {
                self.stats.dead_lettered += 1;
                self.send_dead_letter(out, dlq::dead_letter(&self.dlq_topic, input, ErrorClass::Processing, &msg, &stage, 1, wall_clock))?;
                Outcome::DeadLettered
            }
            Err((_, e)) => return Err(self.escalate(e)),
        };
        self.advance(input);
        self.fire_stream_timers(wall_clock, out)?;
        Ok(outcome)
    }

    /// The input is done with (processed, dead-lettered or skipped): the position moves past it.
    fn advance(&mut self, input: &InputRecord) {
        self.committed_next_offsets.entry(input.topic.clone()).or_insert(input.offset);
        self.next_offsets.insert(input.topic.clone(), input.offset + 1);
        // Never backwards: a re-delivered input below the guard must not lower it.
        let applied = self.position.applied.entry(input.topic.clone()).or_insert(input.offset);
        *applied = (*applied).max(input.offset);
        self.commit_needed = true;
    }

    fn escalate(&self, e: processor::Error) -> Error {
        match e {
            processor::Error::State(source) => Error::corrupted(self.partition, &source),
            other => Error::Fatal(other.to_string()),
        }
    }

    /// Runs `input` into node `start` and everything downstream, depth first. On success the
    /// record layers join the commit layer; on failure they are dropped. Returns the serialized
    /// sink outputs, or the failing stage with its error.
    fn run(
        &mut self,
        start: usize,
        input: Input,
        metadata: &RecordMetadata,
        wall_clock: i64,
    ) -> Result<Vec<OutputRecord>, (String, processor::Error)> {
        let result = self.run_inner(start, input, metadata, wall_clock).and_then(|outputs| {
            self.check_limits(&outputs)?;
            Ok(outputs)
        });
        self.end_record(result.is_ok());
        result
    }

    fn end_record(&mut self, ok: bool) {
        for s in self.stores.values_mut() {
            s.end_record(ok);
        }
        self.timers.end_record(ok);
    }

    fn run_inner(
        &mut self,
        start: usize,
        input: Input,
        metadata: &RecordMetadata,
        wall_clock: i64,
    ) -> Result<Vec<OutputRecord>, (String, processor::Error)> {
        let topology = self.topology.clone();
        let nodes = topology.nodes();
        let mut outputs = Vec::new();
        let mut stack: Vec<(usize, Input)> = vec![(start, input)];
        while let Some((idx, input)) = stack.pop() {
            let node = &nodes[idx];
            let fail = |e| (node.name.clone(), e);
            match &node.kind {
                NodeKind::Source { .. } => {
                    let Input::Record(r) = input else { unreachable!("timers belong to processors") };
                    for &c in node.children.iter().rev() {
                        stack.push((c, Input::Record(r.clone())));
                    }
                }
                NodeKind::Processor { stores, .. } => {
                    let mut forwarded = Vec::new();
                    let mut ctx = Context {
                        node: &node.name,
                        metadata,
                        stores: &mut self.stores,
                        connected: stores,
                        timers: &mut self.timers,
                        forwarded: &mut forwarded,
                        wall_clock,
                        stream_time: self.position.stream_time,
                        application_id: &self.application_id,
                    };
                    let p = self.processors[idx].as_mut().expect("processor nodes have processors");
                    match input {
                        Input::Record(r) => p.process(&mut ctx, r),
                        Input::Timer(t) => p.on_timer(&mut ctx, t),
                    }
                    .map_err(fail)?;
                    for (target, r) in forwarded.into_iter().rev() {
                        match target {
                            None => {
                                for &c in node.children.iter().rev() {
                                    stack.push((c, Input::Record(r.clone())));
                                }
                            }
                            Some(child) => {
                                let c = node.children.iter().copied().find(|&c| nodes[c].name == child).ok_or_else(|| {
                                    fail(processor::Error::Topology(format!(
                                        "`{}` forwarded to `{child}`, which is not its child",
                                        node.name
                                    )))
                                })?;
                                stack.push((c, Input::Record(r)));
                            }
                        }
                    }
                }
                NodeKind::Sink { topic, key_serde, value_serde } => {
                    let Input::Record(r) = input else { unreachable!("timers belong to processors") };
                    let bad = |e: crate::serde::Error| {
                        fail(if e.is_transient() {
                            processor::Error::Retry(e.to_string())
                        } else {
                            processor::Error::BadRecord(format!("sink cannot encode: {e}"))
                        })
                    };
                    outputs.push(OutputRecord {
                        topic: topic.clone(),
                        partition: None,
                        key: key_serde.serialize(topic, "key", &r.key).map_err(bad)?,
                        value: value_serde.serialize(topic, "value", &r.value).map_err(bad)?,
                        timestamp: Some(r.timestamp),
                        headers: r.headers,
                    });
                }
            }
        }
        Ok(outputs)
    }

    /// Drops everything since the last commit and returns where each source must be rewound to.
    pub fn rollback(&mut self) -> Vec<super::SourceOffset> {
        for s in self.stores.values_mut() {
            s.rollback();
        }
        self.timers.store_mut().rollback();
        self.position = self.committed.clone();
        self.next_offsets = self.committed_next_offsets.clone();
        self.commit_needed = false;
        // The attempt is over; records it may have left in a changelog keep its id and are
        // dropped by any restore, since no marker of that id will follow.
        self.commit_id = rand::random();
        self.committed_next_offsets
            .iter()
            .map(|(topic, &next)| super::SourceOffset { topic: topic.clone(), partition: self.partition, next_offset: next })
            .collect()
    }

    pub fn close(&mut self) {
        self.state = TaskState::Closed;
    }
}

/// A store by name, the timer store included. A free function over the two fields so callers
/// can hold other parts of the task (e.g. iterate `changelogs`) at the same time.
fn store_mut<'a>(timers: &'a mut TimerStore, stores: &'a mut HashMap<String, Store>, name: &str) -> Option<&'a mut Store> {
    if name == TIMER_STORE {
        Some(timers.store_mut())
    } else {
        stores.get_mut(name)
    }
}
