//! What an instance is doing, readable from any thread (for the CLI, the demo and metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use super::task::TaskStats;

#[derive(Debug, Default)]
pub struct Status {
    processed: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    timers_fired: AtomicU64,
    commits: AtomicU64,
    commit_micros: AtomicU64,
    aborts: AtomicU64,
    migrations: AtomicU64,
    restores: AtomicU64,
    restored_records: AtomicU64,
    restoring: AtomicBool,
    running: AtomicBool,
    /// Why the stream thread died, if it did.
    failure: Mutex<Option<String>>,
    assignment: Mutex<Vec<i32>>,
    first_input: std::sync::OnceLock<std::time::Instant>,
    /// Consumer lag per (topic, partition), from librdkafka's statistics.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Estimated keys per (store, partition), refreshed at each commit.
    store_keys: Mutex<BTreeMap<(String, i32), u64>>,
    /// Workflow transitions per (workflow, from, to) this instance's stream thread made.
    transitions: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Workflow instances per (workflow, version, state) in this instance's tasks, refreshed at
    /// each commit.
    instance_counts: Mutex<BTreeMap<(String, u32, String), i64>>,
    /// Interactive queries waiting for the stream thread (it owns the stores).
    queries: Mutex<Vec<Query>>,
    /// Range reads waiting for the stream thread.
    ranges: Mutex<Vec<RangeQuery>>,
    /// Owned input partitions waiting after a transient failure (a service down, an instance of
    /// a workflow version this member lacks), and why.
    waiting: Mutex<BTreeMap<(String, i32), String>>,
}

/// A read of one key of a store, answered by the stream thread between polls.
#[derive(Debug)]
pub struct Query {
    pub store: String,
    pub key: Vec<u8>,
    pub reply: std::sync::mpsc::Sender<Option<Vec<u8>>>,
}

/// A read of up to `limit` entries of a store after `after`, over the instance's tasks.
#[derive(Debug)]
pub struct RangeQuery {
    pub store: String,
    pub after: Vec<u8>,
    pub limit: usize,
    pub reply: std::sync::mpsc::Sender<Result<crate::state::Entries, String>>,
}

/// A consistent-enough copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub processed: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub timers_fired: u64,
    pub commits: u64,
    /// Mean commit latency in microseconds.
    pub mean_commit_micros: u64,
    pub aborts: u64,
    pub migrations: u64,
    pub restores: u64,
    pub restored_records: u64,
    pub restoring: bool,
    pub running: bool,
    /// Why the stream thread died, if it did (then `running` is false).
    pub failure: Option<String>,
    pub assignment: Vec<i32>,
}

impl Status {
    /// Totals of the instance's tasks, open and closed.
    pub(crate) fn set_task_stats(&self, s: TaskStats) {
        self.processed.store(s.processed, Relaxed);
        self.skipped.store(s.skipped, Relaxed);
        self.dead_lettered.store(s.dead_lettered, Relaxed);
        self.timers_fired.store(s.timers_fired, Relaxed);
    }

    pub(crate) fn committed(&self, tasks: usize, took: Duration) {
        if tasks > 0 {
            self.commits.fetch_add(1, Relaxed);
            self.commit_micros.fetch_add(took.as_micros() as u64, Relaxed);
        }
    }

    pub(crate) fn aborted(&self) {
        self.aborts.fetch_add(1, Relaxed);
    }

    pub(crate) fn migrated(&self) {
        self.migrations.fetch_add(1, Relaxed);
    }

    pub(crate) fn restore_started(&self) {
        self.restores.fetch_add(1, Relaxed);
    }

    pub(crate) fn restored(&self, n: u64) {
        self.restored_records.fetch_add(n, Relaxed);
    }

    pub(crate) fn set_assignment(&self, partitions: Vec<i32>, restoring: bool) {
        *self.assignment.lock().expect("status lock") = partitions;
        self.restoring.store(restoring, Relaxed);
    }

    /// Notes when the instance handled its first input (for throughput figures).
    pub(crate) fn input_seen(&self) {
        self.first_input.get_or_init(std::time::Instant::now);
    }

    /// When the instance handled its first input, if it has.
    pub fn first_input_at(&self) -> Option<std::time::Instant> {
        self.first_input.get().copied()
    }

    pub(crate) fn set_lag(&self, lag: BTreeMap<(String, i32), i64>) {
        *self.lag.lock().expect("status lock") = lag;
    }

    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().expect("status lock").clone()
    }

    pub(crate) fn set_store_keys(&self, keys: BTreeMap<(String, i32), u64>) {
        *self.store_keys.lock().expect("status lock") = keys;
    }

    pub fn store_keys(&self) -> BTreeMap<(String, i32), u64> {
        self.store_keys.lock().expect("status lock").clone()
    }

    pub(crate) fn transitioned(&self, workflow: &str, from: &str, to: &str) {
        *self.transitions.lock().expect("status lock").entry((workflow.to_owned(), from.to_owned(), to.to_owned())).or_default() += 1;
    }

    /// Workflow transitions so far per (workflow, from, to).
    pub fn transitions(&self) -> BTreeMap<(String, String, String), u64> {
        self.transitions.lock().expect("status lock").clone()
    }

    pub(crate) fn set_instance_counts(&self, counts: BTreeMap<(String, u32, String), i64>) {
        *self.instance_counts.lock().expect("status lock") = counts;
    }

    pub(crate) fn set_waiting(&self, waiting: BTreeMap<(String, i32), String>) {
        *self.waiting.lock().expect("status lock") = waiting;
    }

    /// Owned input partitions waiting after a transient failure, and why.
    pub fn waiting(&self) -> BTreeMap<(String, i32), String> {
        self.waiting.lock().expect("status lock").clone()
    }

    /// Workflow instances per (workflow, version, state) in the partitions this instance owns,
    /// as of its last commit.
    pub fn instance_counts(&self) -> BTreeMap<(String, u32, String), i64> {
        self.instance_counts.lock().expect("status lock").clone()
    }

    /// Reads `key` of `store` from whichever of this instance's tasks holds it: `Ok(None)` when
    /// none does (another instance owns its partition), `Err` when the stream thread did not
    /// answer within `timeout`.
    ///
    /// # Errors
    /// The stream thread is not running or busy for longer than `timeout`.
    pub fn query(&self, store: &str, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        if !self.running.load(Relaxed) {
            return Err("the instance is not running".into());
        }
        let (reply, answer) = std::sync::mpsc::channel();
        self.queries.lock().expect("status lock").push(Query { store: store.to_owned(), key: key.to_vec(), reply });
        answer.recv_timeout(timeout).map_err(|_| format!("no answer within {timeout:?}"))
    }

    /// Up to `limit` entries of `store` after the key `after` (from the start if empty), in key
    /// order, over this instance's tasks.
    ///
    /// # Errors
    /// As [`Status::query`].
    pub fn range(&self, store: &str, after: &[u8], limit: usize, timeout: Duration) -> Result<crate::state::Entries, String> {
        if !self.running.load(Relaxed) {
            return Err("the instance is not running".into());
        }
        let (reply, answer) = std::sync::mpsc::channel();
        self.ranges.lock().expect("status lock").push(RangeQuery { store: store.to_owned(), after: after.to_vec(), limit, reply });
        answer.recv_timeout(timeout).map_err(|_| format!("no answer within {timeout:?}"))?
    }

    pub(crate) fn take_ranges(&self) -> Vec<RangeQuery> {
        std::mem::take(&mut *self.ranges.lock().expect("status lock"))
    }

    pub(crate) fn take_queries(&self) -> Vec<Query> {
        std::mem::take(&mut *self.queries.lock().expect("status lock"))
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Relaxed);
    }

    /// The stream thread died of `reason`: it is not running, and says why.
    pub(crate) fn set_failed(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
        self.running.store(false, Relaxed);
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let commits = self.commits.load(Relaxed);
        StatusSnapshot {
            processed: self.processed.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            timers_fired: self.timers_fired.load(Relaxed),
            commits,
            mean_commit_micros: self.commit_micros.load(Relaxed).checked_div(commits).unwrap_or(0),
            aborts: self.aborts.load(Relaxed),
            migrations: self.migrations.load(Relaxed),
            restores: self.restores.load(Relaxed),
            restored_records: self.restored_records.load(Relaxed),
            restoring: self.restoring.load(Relaxed),
            running: self.running.load(Relaxed),
            failure: self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            assignment: self.assignment.lock().expect("status lock").clone(),
        }
    }
}
