//! An instance: one member of the application's consumer group, running its tasks on a dedicated
//! stream thread (all rdkafka calls block, so none of them runs on tokio's workers).
//!
//! ```text
//!   start ──> Running ──stop()──> commit, close tasks, leave group ──> Stopped
//!                │
//!                ├──fatal error or panic──> Failed (status says why; `run` exits non-zero)
//!                └──kill()──> thread ends without committing (a crash, for tests)
//! ```
//!
//! A stream thread that dies is never left behind a process that looks alive: whatever ends it,
//! a returned error or a panic, the status stops saying running (so `/health` and `/ready` fail)
//! and records why, and [`Instance::join`] returns the error (Kafka Streams' uncaught exception
//! handler answering SHUTDOWN_CLIENT, the client state ERROR).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use crate::config::Config;
use crate::kafka;
use crate::state::StoreMemory;
use crate::topology::Topology;

use super::limits::RecordLimits;
use super::status::Status;
use super::task_manager::TaskManager;
use super::tasks::Tasks;
use super::Error;

/// Records handled per loop turn before the periodic work (restore, timers, commit) runs.
const MAX_POLL_RECORDS: usize = 1_000;
/// The longest a loop turn processes records before the periodic work runs, whatever the
/// commit interval: a stop, a query or a due commit never waits behind a slow backlog.
const MAX_TURN: Duration = Duration::from_secs(1);

const RUN: u8 = 0;
const STOP: u8 = 1;
const KILL: u8 = 2;

/// The consumer's context: the task manager, reachable from rebalance callbacks.
///
/// The mutex is never contended: librdkafka runs the callbacks inside `poll()` on the stream
/// thread, and the loop holds the lock only between polls. It exists because a consumer context
/// must be `Sync`.
struct GroupContext {
    tm: Mutex<TaskManager>,
    killed: AtomicBool,
}

impl ClientContext for GroupContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): keeps each partition's consumer
    /// lag for the metrics.
    ///
    /// The lag is measured from what the instance has consumed (`app_offset`) to the last stable
    /// offset, as Kafka Streams' `records-lag` is from its position. librdkafka's own
    /// `consumer_lag` counts from the consumer's committed offset, which an exactly-once
    /// instance never commits itself (its offsets go through the producer's transaction), so
    /// under exactly-once it stayed -1 and the lag was missing. It is the fallback before the
    /// first record of a partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = std::collections::BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                let behind = if p.app_offset >= 0 && p.ls_offset >= 0 { (p.ls_offset - p.app_offset).max(0) } else { p.consumer_lag };
                if partition >= 0 && behind >= 0 {
                    lag.insert((topic.clone(), partition), behind);
                }
            }
        }
        // Never a panic here (inside librdkafka's callback): a lock poisoned by a failed thread
        // only means no lag is published any more.
        if let Ok(tm) = self.tm.lock() {
            tm.status().set_lag(lag);
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if self.killed.load(Ordering::Relaxed) {
            return; // a crashed process does nothing more
        }
        match rebalance {
            Rebalance::Revoke(tpl) => match self.tm.try_lock() {
                Ok(mut tm) => tm.on_revoked(consumer, tpl, consumer.assignment_lost()),
                Err(_) => tracing::error!("revocation while the task manager is busy: skipped (a bug)"),
            },
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if self.killed.load(Ordering::Relaxed) {
            return;
        }
        if let Rebalance::Assign(tpl) = rebalance {
            match self.tm.try_lock() {
                Ok(mut tm) => tm.on_assigned(consumer, tpl),
                Err(_) => tracing::error!("assignment while the task manager is busy: skipped (a bug)"),
            }
        }
    }
}

/// A running instance.
pub struct Instance {
    thread: Option<JoinHandle<Result<(), Error>>>,
    control: Arc<AtomicU8>,
    status: Arc<Status>,
}

impl Instance {
    /// Starts the stream thread: creates the clients, joins the group `application.id` and runs
    /// `topology` on the partitions it is given. Returns once the thread is started.
    ///
    /// Records are checked against the producer's `message.max.bytes`; see
    /// [`Instance::start_with_limits`] for the topics' own limits.
    ///
    /// # Errors
    /// [`Error::Fatal`] if the thread cannot be spawned; client errors surface from [`Instance::join`].
    pub fn start(config: Config, topology: Topology) -> Result<Instance, Error> {
        let limits = RecordLimits::new(config.producer_max_bytes());
        Self::start_with_limits(config, topology, limits)
    }

    /// [`Instance::start`], checking every output, state write and dead letter against `limits`
    /// (the broker's per-topic `max.message.bytes`, as `keyflow run` reads them).
    ///
    /// # Errors
    /// As [`Instance::start`].
    pub fn start_with_limits(config: Config, topology: Topology, limits: RecordLimits) -> Result<Instance, Error> {
        let control = Arc::new(AtomicU8::new(RUN));
        let status = Arc::new(Status::default());
        let (c, s) = (control.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name(format!("keyflow-{}", config.application_id))
            .spawn(move || {
                // Transitions this thread's processors make count for this instance (the console
                // sums instances; two in one process must not count each other's).
                crate::metrics::bind_instance(s.clone());
                // A panic must end the thread as visibly as an error does: caught here, it is
                // one (the stores and clients it held are dropped on the way out).
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream_thread(&config, &topology, limits, &c, &s)))
                    .unwrap_or_else(|panic| Err(Error::Fatal(format!("the stream thread panicked: {}", panic_message(&*panic)))));
                match &r {
                    Ok(()) => s.set_running(false),
                    Err(e) => {
                        tracing::error!(error = %e, "stream thread stopped");
                        s.set_failed(e.to_string());
                    }
                }
                r
            })
            .map_err(|e| Error::Fatal(format!("cannot spawn the stream thread: {e}")))?;
        Ok(Instance { thread: Some(thread), control, status })
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Asks for a clean stop (commit, close tasks, leave the group); see [`Instance::join`].
    pub fn stop(&self) {
        let _ = self.control.compare_exchange(RUN, STOP, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// A handle that can ask for a stop from elsewhere (a signal handler).
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let c = self.control.clone();
        move || {
            let _ = c.compare_exchange(RUN, STOP, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Simulates a crash: the thread ends at once, committing nothing. For tests.
    pub fn kill(&self) {
        self.control.store(KILL, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the stream thread to end.
    ///
    /// # Errors
    /// The fatal error that stopped it.
    pub fn join(mut self) -> Result<(), Error> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Fatal("the stream thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop();
            let _ = t.join();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The wall clock in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn stream_thread(
    config: &Config,
    topology: &Topology,
    limits: RecordLimits,
    control: &AtomicU8,
    status: &Arc<Status>,
) -> Result<(), Error> {
    let fatal = |what: &str, e: rdkafka::error::KafkaError| Error::Fatal(format!("{what}: {e}"));
    let tasks =
        Tasks::new(topology.clone(), &config.application_id, config.app_state_dir(), &config.dlq_topic(), config.processing_guarantee)
            .with_memory(StoreMemory::new(config.rocksdb_memory_bytes))
            .with_limits(limits.clone());
    // Held until the thread ends: no second instance runs on this directory meanwhile.
    let dir = crate::state::claim(&config.app_state_dir()).map_err(|e| Error::Fatal(e.to_string()))?;
    let process_id = config.instance_id.as_deref().unwrap_or(&dir.process_id);
    let mut producer_config = kafka::producer_config(config, process_id);
    // A batch never larger than the smallest topic takes (librdkafka's batch.size is 1,000,000
    // bytes whatever the topic): the broker would refuse the batch, every record of it.
    let batch = producer_config.get("batch.size").and_then(|b| b.parse::<usize>().ok()).unwrap_or(1_000_000);
    if limits.smallest() < batch {
        producer_config.set("batch.size", limits.smallest().to_string());
    }
    let tm = TaskManager::new(
        tasks,
        producer_config,
        &kafka::restore_consumer_config(config),
        config.call_timeout(),
        config.checkpoint_max_age(),
        status.clone(),
    )?;
    let context = GroupContext { tm: Mutex::new(tm), killed: AtomicBool::new(false) };
    let consumer: BaseConsumer<GroupContext> =
        kafka::group_consumer_config(config, topology).create_with_context(context).map_err(|e| fatal("consumer", e))?;
    let topics = topology.source_topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs).map_err(|e| fatal("subscribe", e))?;
    status.set_running(true);
    tracing::info!(application = %config.application_id, guarantee = config.processing_guarantee.as_str(), topics = ?topics, "instance started");

    let lock = || consumer.context().tm.lock().expect("task manager lock");
    let punctuate_every = config.punctuation_interval();
    // Commits come at the commit interval, and always well inside the transaction timeout: an
    // older transaction is aborted by the coordinator, fencing this instance for nothing.
    let commit_every = match config.processing_guarantee {
        super::Guarantee::ExactlyOnceV2 => config.commit_interval().min(config.transaction_timeout() / 2),
        super::Guarantee::AtLeastOnce => config.commit_interval(),
    };
    let turn = commit_every.min(MAX_TURN);
    let (mut last_commit, mut last_punctuation) = (Instant::now(), Instant::now());
    let mut punctuate_now = false;
    loop {
        match control.load(Ordering::SeqCst) {
            RUN => {}
            KILL => {
                consumer.context().killed.store(true, Ordering::SeqCst);
                tracing::warn!("killed: exiting without committing");
                return Ok(());
            }
            _ => break,
        }
        let restoring = lock().is_reading_changelogs();
        let mut wait = if restoring { Duration::ZERO } else { Duration::from_millis(20) };
        let turn_started = Instant::now();
        for _ in 0..MAX_POLL_RECORDS {
            match consumer.poll(wait) {
                None => break,
                // A record that failed and was recovered from ends the turn: the records fetched
                // after it are stale, and a stop must not wait behind a loop of failures.
                Some(Ok(m)) => {
                    if !lock().process(&consumer, &m, now_ms())? {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
            }
            if turn_started.elapsed() >= turn || control.load(Ordering::SeqCst) != RUN {
                break;
            }
            wait = Duration::ZERO;
        }
        let mut tm = lock();
        for q in status.take_queries() {
            let _ = q.reply.send(tm.query(&q.store, &q.key));
        }
        for q in status.take_ranges() {
            let _ = q.reply.send(tm.range(&q.store, &q.after, q.limit));
        }
        tm.poll_producer();
        if let Some(e) = tm.take_fatal() {
            return Err(e);
        }
        tm.restore_step(&consumer)?;
        tm.resume_backed_off(&consumer);
        if punctuate_now || last_punctuation.elapsed() >= punctuate_every {
            // More timers due than one punctuation fires: commit them and go on next turn.
            punctuate_now = tm.punctuate(&consumer, now_ms())?;
            last_punctuation = Instant::now();
        }
        if punctuate_now || last_commit.elapsed() >= commit_every {
            if tm.commit_needed() {
                tm.commit(&consumer)?;
            }
            last_commit = Instant::now();
        }
    }
    tracing::info!("stopping: committing and closing tasks");
    lock().shutdown(&consumer)?;
    consumer.unsubscribe();
    Ok(())
}
