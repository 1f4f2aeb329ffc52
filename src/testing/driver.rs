//! The topology test driver (Kafka Streams' `TopologyTestDriver`, plus crash injection).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::record::{Headers, InputRecord};
use crate::runtime::commit::Probe;
use crate::runtime::tasks::Tasks;
use crate::runtime::{Error, Guarantee, RecordLimits, Step, TaskStats};
use crate::state::{ChangelogEntry, COMMIT_HEADER, MARKER_HEADER};
use crate::topology::Topology;

use super::memory_log::{MemoryBroker, MemoryLog, StoredRecord};

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub application_id: String,
    pub guarantee: Guarantee,
    /// Partitions of every source topic (and so the number of tasks).
    pub partitions: i32,
    /// Commit after this many inputs (1 = after every input, as Kafka's driver does).
    pub commit_every: usize,
    /// Wall clock at start, ms since the epoch.
    pub start_time_ms: i64,
    /// Run the log cleaner over every changelog at each crash, before the restart restores (under
    /// at-least-once with a compaction lag that spares the records since the last marker).
    pub compact_changelogs: bool,
    /// The largest record each topic takes (librdkafka's default for every topic unless set).
    pub record_limits: RecordLimits,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            application_id: "test-app".into(),
            guarantee: Guarantee::ExactlyOnceV2,
            partitions: 1,
            commit_every: 1,
            start_time_ms: 1_700_000_000_000,
            compact_changelogs: false,
            record_limits: RecordLimits::default(),
        }
    }
}

/// A fault to inject at the `nth` (1-based) time the protocol reaches `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The process dies (kill -9); the driver restarts it.
    Crash { step: Step, nth: u32, wipe_local_state: bool },
    /// The step fails with an abortable error; the instance aborts and rewinds.
    Abort { step: Step, nth: u32 },
    /// The step times out (a retriable error, as a `commit_transaction` that ran out of time):
    /// the protocol calls it again.
    Timeout { step: Step, nth: u32 },
    /// The broker carries the step out, but its reply is lost and every retry of it times out
    /// too (a coordinator that became unreachable after it took a `commit_transaction`): the
    /// outcome is unknown to the instance.
    InDoubt { step: Step, nth: u32 },
}

impl Fault {
    /// The step the fault is injected at.
    pub fn step(&self) -> Step {
        match *self {
            Fault::Crash { step, .. } | Fault::Abort { step, .. } | Fault::Timeout { step, .. } | Fault::InDoubt { step, .. } => step,
        }
    }

    fn nth(&self) -> u32 {
        match *self {
            Fault::Crash { nth, .. } | Fault::Abort { nth, .. } | Fault::Timeout { nth, .. } | Fault::InDoubt { nth, .. } => nth,
        }
    }
}

/// Faults to inject, each once.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    faults: Vec<Fault>,
    seen: BTreeMap<Step, u32>,
    /// A step whose reply was lost ([`Fault::InDoubt`]): its retries time out until another step runs.
    unreachable: Option<Step>,
}

impl FaultPlan {
    pub fn new(faults: Vec<Fault>) -> Self {
        Self { faults, seen: BTreeMap::new(), unreachable: None }
    }
}

struct PlanProbe<'a> {
    plan: &'a mut FaultPlan,
    hit: &'a mut Option<Fault>,
}

impl Probe for PlanProbe<'_> {
    fn before(&mut self, step: Step) -> Result<(), Error> {
        match self.plan.unreachable {
            Some(s) if s == step => return Err(Error::Retriable(format!("injected: {step:?} times out again"))),
            Some(_) => self.plan.unreachable = None,
            None => {}
        }
        let n = self.plan.seen.entry(step).or_insert(0);
        *n += 1;
        let n = *n;
        let pos = self.plan.faults.iter().position(|f| !matches!(f, Fault::InDoubt { .. }) && f.step() == step && f.nth() == n);
        match pos.map(|i| self.plan.faults.remove(i)) {
            Some(f @ Fault::Crash { .. }) => {
                *self.hit = Some(f);
                Err(Error::Crash(step))
            }
            Some(f @ Fault::Abort { .. }) => {
                *self.hit = Some(f);
                Err(Error::Abortable(format!("injected before {step:?}")))
            }
            Some(f @ Fault::Timeout { .. }) => {
                *self.hit = Some(f);
                Err(Error::Retriable(format!("injected timeout before {step:?}")))
            }
            Some(Fault::InDoubt { .. }) => unreachable!("in-doubt faults are taken after the call"),
            None => Ok(()),
        }
    }

    fn after(&mut self, step: Step, result: Result<(), Error>) -> Result<(), Error> {
        let n = self.plan.seen.get(&step).copied().unwrap_or(0);
        let pos = self.plan.faults.iter().position(|f| matches!(f, Fault::InDoubt { .. }) && f.step() == step && f.nth() == n);
        match pos.map(|i| self.plan.faults.remove(i)) {
            Some(f) if result.is_ok() => {
                *self.hit = Some(f);
                self.plan.unreachable = Some(step);
                Err(Error::Retriable(format!("injected: the reply to {step:?} was lost")))
            }
            _ => result,
        }
    }
}

/// Runs a topology without a broker. Inputs are processed as soon as they are piped in.
pub struct TopologyTestDriver {
    topology: Topology,
    config: DriverConfig,
    _dir: tempfile::TempDir,
    state_dir: PathBuf,
    broker: Rc<RefCell<MemoryBroker>>,
    tasks: Tasks,
    log: Option<MemoryLog>,
    /// Next offset to read per source (topic, partition).
    positions: BTreeMap<(String, i32), i64>,
    wall_clock: i64,
    since_commit: usize,
    faults: FaultPlan,
    rng: SmallRng,
    crashes: u32,
    aborts: u32,
    /// Per topic and partition, the committed records `read_output` has returned.
    output_cursors: BTreeMap<(String, i32), usize>,
    restarted_stats: TaskStats,
    last_fault: Option<Fault>,
    hits: Vec<Fault>,
    /// An input failed for a transient reason; processing waits for the next call.
    stalled: bool,
    retries: u32,
    migrations: u32,
}

impl TopologyTestDriver {
    /// Starts a driver with a fresh state directory.
    ///
    /// # Panics
    /// If the temporary state directory or a store cannot be created.
    pub fn new(topology: Topology, config: DriverConfig) -> Self {
        let dir = tempfile::tempdir().expect("temporary state dir");
        let state_dir = dir.path().join(&config.application_id);
        let mut broker = MemoryBroker::new(config.partitions);
        for t in topology.source_topics() {
            broker.create_topic(&t, config.partitions);
        }
        let broker = Rc::new(RefCell::new(broker));
        let tasks = Tasks::new(
            topology.clone(),
            &config.application_id,
            state_dir.clone(),
            &format!("{}-dlq", config.application_id),
            config.guarantee,
        )
        .with_limits(config.record_limits.clone());
        let mut d = TopologyTestDriver {
            topology,
            wall_clock: config.start_time_ms,
            config,
            _dir: dir,
            state_dir,
            broker,
            tasks,
            log: None,
            positions: BTreeMap::new(),
            since_commit: 0,
            faults: FaultPlan::default(),
            rng: SmallRng::seed_from_u64(0),
            crashes: 0,
            aborts: 0,
            output_cursors: BTreeMap::new(),
            restarted_stats: TaskStats::default(),
            last_fault: None,
            hits: Vec::new(),
            stalled: false,
            retries: 0,
            migrations: 0,
        };
        d.start();
        d
    }

    /// Injects these faults from now on; `seed` drives what a crash lets through.
    pub fn inject(&mut self, plan: FaultPlan, seed: u64) {
        self.faults = plan;
        self.rng = SmallRng::seed_from_u64(seed);
    }

    /// Opens every task, restores it from the changelogs and resumes from committed offsets.
    fn start(&mut self) {
        self.tasks = Tasks::new(
            self.topology.clone(),
            &self.config.application_id,
            self.state_dir.clone(),
            &format!("{}-dlq", self.config.application_id),
            self.config.guarantee,
        )
        .with_limits(self.config.record_limits.clone());
        self.log = Some(MemoryLog::new(self.broker.clone()));
        self.positions.clear();
        for p in 0..self.config.partitions {
            self.restore_task(p, false);
            for t in self.topology.source_topics() {
                let next = self.broker.borrow().committed_offset(&t, p).unwrap_or(0);
                self.positions.insert((t, p), next);
            }
            self.set_start_offsets(p);
        }
    }

    /// Task `p` starts where the group's committed offsets say, as a newly assigned task does.
    fn set_start_offsets(&mut self, p: i32) {
        let start = self
            .topology
            .source_topics()
            .into_iter()
            .map(|t| (t.clone(), self.broker.borrow().committed_offset(&t, p).unwrap_or(0)))
            .collect();
        self.tasks.get_mut(p).expect("task is open").set_start_offsets(start);
    }

    /// Opens task `p` (wiping its stores first if asked) and restores it from its changelogs,
    /// from each store's checkpoint when it is still inside the changelog.
    fn restore_task(&mut self, p: i32, wipe: bool) {
        let task = self.tasks.open(p).expect("task opens");
        for (store, topic, checkpoint) in task.changelogs() {
            let end = self.broker.borrow().end_offset(&topic, p);
            let from = match checkpoint {
                Some(c) if !wipe && c <= end => c,
                _ => {
                    task.wipe_store(&store).expect("wipe");
                    0
                }
            };
            let entries = changelog_entries(&self.broker.borrow(), &topic, p, from);
            task.restore(&store, entries).expect("restore");
        }
        task.finish_restore().expect("restore");
    }

    /// Simulates kill -9 and a restart: nothing is committed, in-flight records may or may not
    /// arrive, the open transaction is aborted; then the instance restores and resumes.
    pub fn crash_and_restart(&mut self, wipe_local_state: bool) {
        self.crashes += 1;
        let s = self.tasks.stats();
        self.restarted_stats += s;
        // Drop the tasks (closing RocksDB) before the log, as the process would lose both.
        self.tasks =
            Tasks::new(self.topology.clone(), &self.config.application_id, self.state_dir.clone(), "unused", self.config.guarantee);
        if let Some(log) = self.log.take() {
            log.crash(&mut self.rng);
        }
        if wipe_local_state {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
        if self.config.compact_changelogs {
            let mut broker = self.broker.borrow_mut();
            let lagging = self.config.guarantee == Guarantee::AtLeastOnce;
            for topic in broker.topics().into_iter().filter(|t| t.ends_with("-changelog")) {
                broker.compact(&topic, lagging);
            }
        }
        // A restarted process's commit timer starts at a random phase, so batches differ from
        // the ones before the crash.
        self.since_commit = self.rng.random_range(0..self.config.commit_every.max(1));
        self.start();
    }

    /// A clean restart on another topology over the same topics and state, as a rolling deploy
    /// of a new version does: commits, closes the tasks, and opens them again from their stores
    /// and the committed offsets.
    pub fn redeploy(&mut self, topology: Topology) {
        self.commit();
        let s = self.tasks.stats();
        self.restarted_stats += s;
        for p in 0..self.config.partitions {
            self.tasks.close(p);
        }
        for t in topology.source_topics() {
            self.broker.borrow_mut().create_topic(&t, self.config.partitions);
        }
        self.topology = topology;
        self.log = None;
        self.start();
    }

    /// Appends a record with headers (a control record, for example) and processes what is
    /// available.
    pub fn pipe_with_headers(&mut self, topic: &str, partition: Option<i32>, key: &str, value: &[u8], timestamp: i64, headers: Headers) {
        self.broker.borrow_mut().append(topic, partition, Some(key.as_bytes().to_vec()), Some(value.to_vec()), timestamp, headers);
        self.run_until_idle();
    }

    /// Appends an input record to `topic` (partitioned by key) and processes what is available.
    pub fn pipe_input(&mut self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) {
        self.broker.borrow_mut().append(topic, None, key.map(<[u8]>::to_vec), value.map(<[u8]>::to_vec), timestamp, Headers::new());
        self.run_until_idle();
    }

    /// Convenience: a string key and a JSON value.
    pub fn pipe_json(&mut self, topic: &str, key: &str, value: &serde_json::Value, timestamp: i64) {
        let v = serde_json::to_vec(value).expect("JSON serializes");
        self.pipe_input(topic, Some(key.as_bytes()), Some(&v), timestamp);
    }

    /// Moves the wall clock, processes inputs that were waiting (a transient failure stalls them
    /// until time moves on, as a paused partition waits for its backoff), fires the timers now due
    /// and commits.
    pub fn advance_wall_clock(&mut self, ms: i64) {
        self.wall_clock += ms;
        self.run_until_idle();
        let fired = self.with_recovery(Self::punctuate);
        if !fired {
            // Recovered from a fault: a restarted instance fires them (and processes) again.
            self.commit();
        }
    }

    pub fn wall_clock(&self) -> i64 {
        self.wall_clock
    }

    /// Commits now (the driver otherwise commits every `commit_every` inputs). When a fault
    /// interrupts it, the recovered instance processes what is available again and retries, as a
    /// restarted process would, so on return everything piped in is processed and committed.
    pub fn commit(&mut self) {
        loop {
            self.run_until_idle();
            if self.with_recovery(Self::punctuate) {
                return;
            }
        }
    }

    /// Punctuates at the wall clock and commits, again while more timers are due than one
    /// punctuation fires (as the stream loop punctuates again at once).
    fn punctuate(&mut self) -> Result<(), Error> {
        loop {
            let (_, more) = self.tasks.punctuate(self.wall_clock, self.log.as_mut().expect("log"))?;
            self.commit_now()?;
            if !more {
                return Ok(());
            }
        }
    }

    fn commit_now(&mut self) -> Result<(), Error> {
        let mut probe = PlanProbe { plan: &mut self.faults, hit: &mut self.last_fault };
        let r = self.tasks.commit(self.log.as_mut().expect("log"), &mut probe);
        if r.is_ok() {
            self.since_commit = 0;
        }
        r.map(|_| ())
    }

    /// Processes every available input, committing as configured.
    fn run_until_idle(&mut self) {
        self.stalled = false;
        while !self.stalled {
            let Some(input) = self.next_input() else { break };
            self.with_recovery(|d| {
                PlanProbe { plan: &mut d.faults, hit: &mut d.last_fault }.before(Step::Processing)?;
                d.tasks.process(&input, d.wall_clock, d.log.as_mut().expect("log"))?;
                d.positions.insert((input.topic.clone(), input.partition), input.offset + 1);
                d.since_commit += 1;
                if d.since_commit >= d.config.commit_every {
                    d.commit_now()?;
                }
                Ok(())
            });
        }
    }

    /// Runs `f`; on an injected crash restarts, on an abortable error rolls back and rewinds.
    fn with_recovery(&mut self, f: impl FnOnce(&mut Self) -> Result<(), Error>) -> bool {
        match f(self) {
            Ok(()) => true,
            Err(Error::Crash(_)) => {
                self.hits.extend(self.last_fault);
                let wipe = matches!(self.last_fault.take(), Some(Fault::Crash { wipe_local_state: true, .. }));
                self.crash_and_restart(wipe);
                false
            }
            // As the runtime does: a step still retriable after its retries is aborted.
            Err(Error::Abortable(_) | Error::Retriable(_)) => {
                self.abort();
                false
            }
            Err(Error::TaskMigrated(_)) => {
                // Fenced: this instance's transaction is refused and its tasks went elsewhere. The
                // driver plays the rebalance that gives them back: restore and resume.
                self.hits.extend(self.last_fault.take());
                self.migrations += 1;
                self.crash_and_restart(false);
                false
            }
            Err(Error::InputRetriable { .. }) => {
                // The input stays unread; the next pipe, commit or clock advance tries again.
                self.retries += 1;
                self.stalled = true;
                false
            }
            Err(Error::CommitUnknown { partitions, .. }) => {
                // As the runtime does: roll back, then reopen the tasks from their local state
                // and restore from their checkpoints, which brings in the commit if it happened.
                self.abort();
                for p in partitions {
                    self.tasks.close(p);
                    self.restore_task(p, false);
                    self.set_start_offsets(p);
                }
                false
            }
            Err(Error::TaskCorrupted { partitions, .. }) => {
                // As the runtime does: abort, roll back, and rebuild the corrupted tasks' state
                // from their changelogs.
                self.abort();
                for p in partitions {
                    self.restore_task(p, true);
                    self.set_start_offsets(p); // as a reassigned task starts
                }
                false
            }
            Err(e) => panic!("unexpected runtime error in the test driver: {e}"),
        }
    }

    /// Aborts the open transaction, rolls every task back to its last commit and rewinds the
    /// inputs there, as the runtime does for every error it recovers by rolling back.
    fn abort(&mut self) {
        self.hits.extend(self.last_fault.take());
        self.aborts += 1;
        let rewind = self.tasks.rollback(self.log.as_mut().expect("log")).rewind;
        for o in rewind {
            self.positions.insert((o.topic, o.partition), o.next_offset);
        }
        self.since_commit = 0;
    }

    /// The next input in (partition, topic) order: partitions interleave deterministically.
    fn next_input(&self) -> Option<InputRecord> {
        let broker = self.broker.borrow();
        let mut candidates: VecDeque<InputRecord> = VecDeque::new();
        for ((topic, partition), &next) in &self.positions {
            if let Some(r) = broker.read_committed(topic, *partition, next).into_iter().next() {
                candidates.push_back(InputRecord {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
        }
        candidates.into_iter().min_by_key(|r| (r.timestamp, r.partition, r.topic.clone(), r.offset))
    }

    /// Committed records written to `topic` since the previous call, partition by partition
    /// (a cursor per partition: a record committed to one never hides or repeats another's).
    pub fn read_output(&mut self, topic: &str) -> Vec<StoredRecord> {
        let mut new = Vec::new();
        let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
        for (p, r) in self.broker.borrow().committed_records(topic) {
            let n = seen.entry(p).or_insert(0);
            *n += 1;
            if *n > self.output_cursors.get(&(topic.to_owned(), p)).copied().unwrap_or(0) {
                new.push(r);
            }
        }
        for (p, n) in seen {
            self.output_cursors.insert((topic.to_owned(), p), n);
        }
        new
    }

    /// Every committed record of `topic`, with its partition.
    pub fn committed_records(&self, topic: &str) -> Vec<(i32, StoredRecord)> {
        self.broker.borrow().committed_records(topic)
    }

    /// A store's value for `key`, from whichever task holds it.
    pub fn store_get(&self, store: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.tasks.partitions().into_iter().find_map(|p| self.tasks.get(p).and_then(|t| t.get(store, key).ok().flatten()))
    }

    /// All entries of a store over all tasks.
    pub fn store_entries(&self, store: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.tasks
            .partitions()
            .into_iter()
            .flat_map(|p| self.tasks.get(p).map(|t| t.scan(store, usize::MAX).expect("scan")).unwrap_or_default())
            .collect()
    }

    /// The injected faults that fired, in order.
    pub fn faults_hit(&self) -> &[Fault] {
        &self.hits
    }

    /// How many times an input hit a transient failure and was left for later.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Another member takes this instance's partitions (a rebalance while it was paused, say):
    /// the group generation moves on and this instance's next transactional offset commit is
    /// refused, as Kafka refuses a zombie's.
    pub fn fence(&mut self) {
        self.broker.borrow_mut().bump_generation();
    }

    /// How many commits were refused as task-migrated (see [`TopologyTestDriver::fence`]).
    pub fn migrations(&self) -> u32 {
        self.migrations
    }

    pub fn crashes(&self) -> u32 {
        self.crashes
    }

    pub fn aborts(&self) -> u32 {
        self.aborts
    }

    /// Task counters since the driver started, across restarts.
    pub fn stats(&self) -> TaskStats {
        let mut s = self.tasks.stats();
        s += self.restarted_stats;
        s
    }

    pub fn broker(&self) -> std::cell::Ref<'_, MemoryBroker> {
        self.broker.borrow()
    }
}

fn changelog_entries(broker: &MemoryBroker, topic: &str, partition: i32, from: i64) -> Vec<ChangelogEntry> {
    broker
        .read_committed(topic, partition, from)
        .into_iter()
        .map(|r| ChangelogEntry {
            offset: r.offset,
            is_marker: r.headers.last(MARKER_HEADER).is_some(),
            commit: ChangelogEntry::decode_commit(r.headers.last(COMMIT_HEADER)),
            key: r.key.unwrap_or_default(),
            value: r.value,
        })
        .collect()
}
