//! An instance: one member of the application's consumer group, running its tasks on a dedicated
//! stream thread (all rdkafka calls block, so none of them runs on tokio's workers).
//!
//! ```text
//!   start ──> Running ──stop()──> commit, close tasks, leave group ──> Stopped
//!                │
//!                └──kill()──> thread ends without committing (a crash, for tests)
//! ```

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

use super::status::Status;
use super::task_manager::TaskManager;
use super::tasks::Tasks;
use super::Error;

/// Records handled per loop turn before the periodic work (restore, timers, commit) runs.
const MAX_POLL_RECORDS: usize = 1_000;

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
        self.tm.lock().expect("task manager lock").status().set_lag(lag);
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
    /// # Errors
    /// [`Error::Fatal`] if the thread cannot be spawned; client errors surface from [`Instance::join`].
    pub fn start(config: Config, topology: Topology) -> Result<Instance, Error> {
        let control = Arc::new(AtomicU8::new(RUN));
        let status = Arc::new(Status::default());
        let (c, s) = (control.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name(format!("keyflow-{}", config.application_id))
            .spawn(move || {
                // Transitions this thread's processors make count for this instance (the console
                // sums instances; two in one process must not count each other's).
                crate::metrics::bind_instance(s.clone());
                let r = stream_thread(&config, &topology, &c, &s);
                s.set_running(false);
                if let Err(e) = &r {
                    tracing::error!(error = %e, "stream thread stopped");
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

/// The wall clock in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn stream_thread(config: &Config, topology: &Topology, control: &AtomicU8, status: &Arc<Status>) -> Result<(), Error> {
    let fatal = |what: &str, e: rdkafka::error::KafkaError| Error::Fatal(format!("{what}: {e}"));
    let tasks =
        Tasks::new(topology.clone(), &config.application_id, config.app_state_dir(), &config.dlq_topic(), config.processing_guarantee)
            .with_memory(StoreMemory::new(config.rocksdb_memory_bytes));
    // Held until the thread ends: no second instance runs on this directory meanwhile.
    let dir = crate::state::claim(&config.app_state_dir()).map_err(|e| Error::Fatal(e.to_string()))?;
    let process_id = config.instance_id.as_deref().unwrap_or(&dir.process_id);
    let tm = TaskManager::new(
        tasks,
        kafka::producer_config(config, process_id),
        &kafka::restore_consumer_config(config),
        config.call_timeout(),
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
    let (commit_every, punctuate_every) = (config.commit_interval(), config.punctuation_interval());
    let (mut last_commit, mut last_punctuation) = (Instant::now(), Instant::now());
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
        let restoring = lock().is_restoring();
        let mut wait = if restoring { Duration::ZERO } else { Duration::from_millis(20) };
        for _ in 0..MAX_POLL_RECORDS {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => lock().process(&consumer, &m, now_ms())?,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        let mut tm = lock();
        for q in status.take_queries() {
            let _ = q.reply.send(tm.query(&q.store, &q.key));
        }
        tm.poll_producer();
        if let Some(e) = tm.take_fatal() {
            return Err(e);
        }
        tm.restore_step(&consumer)?;
        tm.resume_backed_off(&consumer);
        if last_punctuation.elapsed() >= punctuate_every {
            tm.fire_wall_clock_timers(&consumer, now_ms())?;
            last_punctuation = Instant::now();
        }
        if last_commit.elapsed() >= commit_every {
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
