//! The active tasks of one instance and the transaction they share: routing inputs, firing
//! wall-clock timers, committing and rolling back. The production task manager and the test
//! driver both drive an instance through this type, so they run the same code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::record::InputRecord;
use crate::state::StoreMemory;
use crate::topology::Topology;

use super::collector::{Collector, Transaction};
use super::commit::{self, Probe};
use super::limits::RecordLimits;
use super::log::{Log, SourceOffset};
use super::task::{Outcome, Task, TaskState, TaskStats};
use super::{Error, Guarantee};

/// What a rollback left to do: rewind the consumer, and replace the producer if the abort failed.
#[must_use]
pub(crate) struct Rollback {
    pub rewind: Vec<SourceOffset>,
    pub aborted: Result<(), Error>,
}

pub(crate) struct Tasks {
    topology: Topology,
    application_id: String,
    state_dir: PathBuf,
    dlq_topic: String,
    tasks: BTreeMap<i32, Task>,
    txn: Transaction,
    /// Counters of tasks that were closed, so totals survive rebalances.
    closed_stats: TaskStats,
    /// The RocksDB memory budget every task's stores share.
    memory: StoreMemory,
    /// The largest record each topic takes.
    limits: RecordLimits,
}

impl Tasks {
    pub fn new(topology: Topology, application_id: &str, state_dir: PathBuf, dlq_topic: &str, guarantee: Guarantee) -> Self {
        Self {
            topology,
            application_id: application_id.to_owned(),
            state_dir,
            dlq_topic: dlq_topic.to_owned(),
            tasks: BTreeMap::new(),
            txn: Transaction::new(guarantee),
            closed_stats: TaskStats::default(),
            memory: StoreMemory::default(),
            limits: RecordLimits::default(),
        }
    }

    /// Checks records against `limits` instead of librdkafka's default `message.max.bytes`.
    pub fn with_limits(mut self, limits: RecordLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Opens every store within `memory` (`state.rocksdb.memory.bytes`) instead of the default budget.
    pub fn with_memory(mut self, memory: StoreMemory) -> Self {
        self.memory = memory;
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    pub fn guarantee(&self) -> Guarantee {
        self.txn.guarantee()
    }

    /// Opens the task for `partition` in the Restoring state (if not open yet).
    ///
    /// # Errors
    /// [`Error::TaskCorrupted`] when its stores cannot be opened.
    pub fn open(&mut self, partition: i32) -> Result<&mut Task, Error> {
        if !self.tasks.contains_key(&partition) {
            let dir = self.state_dir.join(format!("0_{partition}"));
            let task = Task::open(partition, &self.topology, &self.application_id, &dir, &self.dlq_topic, &self.memory, &self.limits)?;
            self.tasks.insert(partition, task);
        }
        Ok(self.tasks.get_mut(&partition).expect("just inserted"))
    }

    /// Estimated keys per (store, partition), timer stores included.
    pub fn store_sizes(&self) -> std::collections::BTreeMap<(String, i32), u64> {
        self.tasks.iter().flat_map(|(&p, t)| t.store_sizes().into_iter().map(move |(s, n)| ((s, p), n))).collect()
    }

    /// Workflow instances per (workflow, version, state), summed over this instance's tasks, from each
    /// task's [`crate::workflow::COUNTS`] store (a handful of keys per task, not a scan of the
    /// instances). Read after a commit, it is the committed count.
    pub fn instance_counts(&self) -> std::collections::BTreeMap<(String, u32, String), i64> {
        let mut counts = std::collections::BTreeMap::new();
        for t in self.tasks.values() {
            for (k, v) in t.scan(crate::workflow::COUNTS, usize::MAX).unwrap_or_default() {
                let (Some(key), Ok(n)) = (crate::workflow::parse_count_key(&k), serde_json::from_slice::<i64>(&v)) else { continue };
                *counts.entry(key).or_default() += n;
            }
        }
        counts
    }

    pub fn get(&self, partition: i32) -> Option<&Task> {
        self.tasks.get(&partition)
    }

    pub fn get_mut(&mut self, partition: i32) -> Option<&mut Task> {
        self.tasks.get_mut(&partition)
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.tasks.keys().copied().collect()
    }

    /// Closes and forgets a task (after it was committed, or dirty when it was lost).
    pub fn close(&mut self, partition: i32) {
        if let Some(mut t) = self.tasks.remove(&partition) {
            t.rollback();
            t.close();
            self.closed_stats += t.stats();
        }
    }

    /// Totals over open and closed tasks.
    pub fn stats(&self) -> TaskStats {
        let mut s = self.closed_stats;
        for t in self.tasks.values() {
            s += t.stats();
        }
        s
    }

    /// Routes one input to its task.
    ///
    /// # Errors
    /// [`Error::Fatal`] for an input of a partition this instance has no task for; task errors.
    pub fn process(&mut self, input: &InputRecord, wall_clock: i64, log: &mut dyn Log) -> Result<Outcome, Error> {
        let Some(task) = self.tasks.get_mut(&input.partition) else {
            return Err(Error::Fatal(format!("no task for {}-{}", input.topic, input.partition)));
        };
        task.process(input, wall_clock, &mut Collector::new(log, &mut self.txn))
    }

    /// Punctuation: fires the timers due at wall-clock time `now` (and stream-time timers left
    /// over) in every running task, a bounded number per task. Returns how many fired and whether
    /// more are due: then the caller commits and punctuates again soon.
    ///
    /// # Errors
    /// Task errors.
    pub fn punctuate(&mut self, now: i64, log: &mut dyn Log) -> Result<(usize, bool), Error> {
        let (mut fired, mut more) = (0, false);
        for task in self.tasks.values_mut().filter(|t| t.state() == TaskState::Running) {
            let (n, left) = task.punctuate(now, &mut Collector::new(log, &mut self.txn))?;
            fired += n;
            more |= left;
        }
        Ok((fired, more))
    }

    /// Runs the commit protocol over all running tasks.
    ///
    /// # Errors
    /// See [`commit::commit`].
    pub fn commit(&mut self, log: &mut dyn Log, probe: &mut dyn Probe) -> Result<usize, Error> {
        commit::commit(&mut self.tasks, log, &mut self.txn, probe)
    }

    pub fn commit_needed(&self) -> bool {
        self.txn.is_open() || self.tasks.values().any(Task::commit_needed)
    }

    /// Aborts the open transaction (if any) and rolls every task back to its last commit.
    /// Returns where the consumer must rewind to, and whether the abort succeeded: if it did
    /// not, the caller must replace the producer (which has the broker abort the transaction).
    pub fn rollback(&mut self, log: &mut dyn Log) -> Rollback {
        let mut aborted = Ok(());
        if self.txn.is_open() {
            aborted = log.abort_transaction();
            self.txn.closed();
        }
        log.take_delivered();
        Rollback { rewind: self.tasks.values_mut().flat_map(Task::rollback).collect(), aborted }
    }

    /// Deletes the state directory of `partition`'s task (closed first): task-corrupted.
    ///
    /// # Errors
    /// [`Error::Fatal`] when the directory cannot be removed.
    pub fn wipe_dir(&mut self, partition: i32) -> Result<(), Error> {
        self.close(partition);
        let dir = self.state_dir.join(format!("0_{partition}"));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Fatal(format!("cannot wipe {}: {e}", dir.display()))),
        }
    }

    /// Forgets the transaction state after the producer was replaced.
    pub fn reset_transaction(&mut self) {
        self.txn.closed();
    }
}
