//! What an instance is doing, readable from any thread (for the CLI, the demo and metrics).

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
    assignment: Mutex<Vec<i32>>,
    first_input: std::sync::OnceLock<std::time::Instant>,
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

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Relaxed);
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
            assignment: self.assignment.lock().expect("status lock").clone(),
        }
    }
}
