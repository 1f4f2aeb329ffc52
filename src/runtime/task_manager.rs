//! The task manager: turns the group's assignment into tasks, restores them before they run,
//! commits, and recovers from errors by class (see `runtime::error`).
//!
//! Rebalance callbacks run inside `consumer.poll()` on the stream thread. Revocation is handled
//! *inside* the callback on purpose: the tasks being revoked must commit before librdkafka gives
//! their partitions away, or the next owner would re-read from an older offset. Restoration (see
//! `runtime::restorer`), punctuation and commits run from the stream loop.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::record::{Headers, InputRecord};

use super::commit::NoFaults;
use super::kafka_log::{DeliveryTracker, KafkaLog, KafkaProducer};
use super::partitions::{pause, resume, start_offsets};
use super::restorer::Restorer;
use super::status::Status;
use super::task::TaskState;
use super::tasks::Tasks;
use super::{Error, Guarantee};

pub(crate) struct TaskManager {
    tasks: Tasks,
    producer: KafkaProducer,
    producer_config: ClientConfig,
    restorer: Restorer,
    /// Source topics assigned, per partition.
    assigned: BTreeMap<i32, BTreeSet<String>>,
    timeout: Duration,
    status: Arc<Status>,
    /// Partitions paused after a transient input failure: when to resume, failures in a row, and
    /// why (shown on `/ready`).
    backoff: BTreeMap<(String, i32), (Instant, u32, String)>,
    /// A failure found inside a rebalance callback that must stop the instance; the stream loop
    /// raises it (see [`TaskManager::take_fatal`]).
    fatal: Option<Error>,
    /// Tasks that wait for where their sources start (the group's offsets could not be read
    /// when they were assigned), since when: a task never runs without them, or a transaction
    /// of its timer outputs alone could carry no offsets and escape the group-generation check.
    awaiting_offsets: BTreeMap<i32, Instant>,
    /// When the start offsets of waiting tasks are asked for again.
    offsets_retry_at: Instant,
}

/// How often, and how long at most, the start offsets of a waiting task are asked for again;
/// after [`OFFSETS_GIVE_UP`] the instance stops (its partitions go to another member).
const OFFSETS_RETRY: Duration = Duration::from_secs(1);
const OFFSETS_RETRY_TIMEOUT: Duration = Duration::from_secs(1);
const OFFSETS_GIVE_UP: Duration = Duration::from_secs(300);

impl TaskManager {
    /// Creates the producer (initialising transactions under exactly-once, which fences any
    /// older producer with the same transactional.id) and the restore consumers.
    ///
    /// # Errors
    /// [`Error::Fatal`] when a client cannot be created, classified errors from `init_transactions`.
    pub fn new(
        tasks: Tasks,
        producer_config: ClientConfig,
        restore_config: &ClientConfig,
        timeout: Duration,
        max_checkpoint_age: Duration,
        status: Arc<Status>,
    ) -> Result<Self, Error> {
        let producer = create_producer(&producer_config, tasks.guarantee(), timeout)?;
        let stores = tasks.topology().stores().iter().map(|s| s.name.clone()).chain([crate::state::TIMER_STORE.to_owned()]);
        let restorer = Restorer::new(stores, restore_config, tasks.application_id(), timeout, max_checkpoint_age)?;
        Ok(Self {
            tasks,
            producer,
            producer_config,
            restorer,
            assigned: BTreeMap::new(),
            timeout,
            status,
            backoff: BTreeMap::new(),
            fatal: None,
            awaiting_offsets: BTreeMap::new(),
            offsets_retry_at: Instant::now(),
        })
    }

    /// A fatal failure found in a rebalance callback, once.
    pub fn take_fatal(&mut self) -> Option<Error> {
        self.fatal.take()
    }

    /// Whether a task is still being restored or waits for its start offsets.
    pub fn is_restoring(&self) -> bool {
        self.restorer.is_restoring() || !self.awaiting_offsets.is_empty()
    }

    /// Whether changelogs are being read: the stream loop then polls without waiting.
    pub fn is_reading_changelogs(&self) -> bool {
        self.restorer.is_restoring()
    }

    /// Serves delivery reports.
    pub fn poll_producer(&self) {
        super::kafka_log::serve_delivery_reports(&self.producer);
        self.status.set_task_stats(self.tasks.stats());
    }

    /// Processes one record from the group consumer. Returns `false` when it failed and was
    /// recovered from (rolled back, or its partition backed off): the records the consumer
    /// fetched after it are stale, and the stream loop ends its turn.
    ///
    /// # Errors
    /// Only [`Error::Fatal`]: every other class is recovered here.
    pub fn process<C: ConsumerContext + 'static>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &BorrowedMessage<'_>,
        now: i64,
    ) -> Result<bool, Error> {
        let input = input_record(msg);
        self.status.input_seen();
        if self.tasks.get(input.partition).is_none_or(|t| t.state() != TaskState::Running) {
            // Fetched before the partition was paused or revoked; it is read again later.
            return Ok(true);
        }
        let mut log = KafkaLog { producer: &self.producer, consumer, timeout: self.timeout };
        let result = self.tasks.process(&input, now, &mut log);
        match result {
            Ok(_) => {
                if !self.backoff.is_empty() && self.backoff.remove(&(input.topic.clone(), input.partition)).is_some() {
                    self.publish_waiting();
                }
                Ok(true)
            }
            Err(e) => self.recover(consumer, e).map(|()| false),
        }
    }

    /// Punctuation: fires due timers, a bounded number per task. Returns whether more are due
    /// (the stream loop then commits and punctuates again at once).
    ///
    /// # Errors
    /// Only [`Error::Fatal`].
    pub fn punctuate<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, now: i64) -> Result<bool, Error> {
        let mut log = KafkaLog { producer: &self.producer, consumer, timeout: self.timeout };
        match self.tasks.punctuate(now, &mut log) {
            Ok((_, more)) => Ok(more),
            Err(e) => self.recover(consumer, e).map(|()| false),
        }
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// A key of a user store, from whichever task holds it.
    pub fn query(&self, store: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.tasks.partitions().into_iter().find_map(|p| self.tasks.get(p).and_then(|t| t.get(store, key).ok().flatten()))
    }

    /// Up to `limit` entries of a user store after `after`, in key order, over every task; an
    /// error while a task restores (its store is partial) or fails to read, so a list is never
    /// silently short.
    pub fn range(&self, store: &str, after: &[u8], limit: usize) -> Result<crate::state::Entries, String> {
        if self.is_restoring() {
            return Err("restoring state: ask again shortly".into());
        }
        let from: Vec<u8> = if after.is_empty() { Vec::new() } else { after.iter().copied().chain([0]).collect() };
        let mut all = crate::state::Entries::new();
        for p in self.tasks.partitions() {
            let Some(t) = self.tasks.get(p) else { continue };
            all.extend(t.range_from(store, &from, limit).map_err(|e| format!("partition {p}: {e}"))?);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.truncate(limit);
        Ok(all)
    }

    pub fn commit_needed(&self) -> bool {
        self.tasks.commit_needed()
    }

    /// Resumes the partitions whose backoff is over (unless their task is still restoring).
    pub fn resume_backed_off<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) {
        let now = Instant::now();
        for ((topic, partition), (at, _, _)) in &mut self.backoff {
            if *at <= now
                && !self.restorer.is_restoring_partition(*partition)
                && !self.awaiting_offsets.contains_key(partition)
                && self.assigned.get(partition).is_some_and(|t| t.contains(topic))
            {
                resume(consumer, *partition, &BTreeSet::from([topic.clone()]));
                *at = now + Duration::from_secs(3600); // resumed; the next failure or success updates it
            }
        }
    }

    /// The owned partitions waiting after a transient failure, and why, for `/ready` and
    /// `/metrics`.
    fn publish_waiting(&self) {
        let owned = self.tasks.partitions();
        self.status.set_waiting(
            self.backoff.iter().filter(|((_, p), _)| owned.contains(p)).map(|(k, (_, _, why))| (k.clone(), why.clone())).collect(),
        );
    }

    /// The assignment, restoring flag and instance counts the status shows, after the tasks
    /// changed (a count of a partition given up must go with it).
    fn publish_assignment(&self) {
        self.publish_waiting();
        self.status.set_assignment(self.tasks.partitions(), self.is_restoring());
        self.status.set_instance_counts(self.tasks.instance_counts());
    }

    /// Runs the commit protocol.
    ///
    /// # Errors
    /// Only [`Error::Fatal`].
    pub fn commit<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let mut log = KafkaLog { producer: &self.producer, consumer, timeout: self.timeout };
        let result = self.tasks.commit(&mut log, &mut NoFaults);
        tracing::debug!(?result, took = ?started.elapsed(), "commit");
        match result {
            Ok(n) => {
                self.status.committed(n, started.elapsed());
                if n > 0 {
                    self.status.set_store_keys(self.tasks.store_sizes());
                    self.status.set_instance_counts(self.tasks.instance_counts());
                }
                Ok(())
            }
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Recovers from a classified error; returns only fatal ones.
    fn recover<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, e: Error) -> Result<(), Error> {
        match e {
            Error::Abortable(m) | Error::Retriable(m) => {
                // A retriable step was already called again (`runtime::commit`); what is still
                // failing leaves this attempt unusable, never a transaction open.
                tracing::warn!(error = %m, "aborting: tasks roll back to their last commit and reprocess");
                self.status.aborted();
                self.rollback_and_rewind(consumer)
            }
            Error::InputRetriable { topic, partition, offset, reason, after } => {
                let entry = self.backoff.entry((topic.clone(), partition)).or_insert((Instant::now(), 0, String::new()));
                entry.2.clone_from(&reason);
                entry.1 += 1;
                // The processor's own delay if it named one (a retry policy, a circuit breaker);
                // else 100 ms, doubling, at most 10 s. Either way only this partition waits.
                let delay = after.unwrap_or_else(|| {
                    Duration::from_millis(100u64.saturating_mul(1 << (entry.1 - 1).min(7))).min(Duration::from_secs(10))
                });
                entry.0 = Instant::now() + delay;
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    attempt = entry.1,
                    ?delay,
                    reason,
                    "input failed for a transient reason; retrying after a backoff"
                );
                self.publish_waiting();
                pause(consumer, partition, &BTreeSet::from([topic.clone()]));
                if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), self.timeout) {
                    tracing::warn!(topic, partition, error = %e, "seek back for a retry failed");
                }
                Ok(())
            }
            Error::TaskCorrupted { partitions, reason } => {
                tracing::error!(?partitions, reason, "tasks corrupted: wiping their state and restoring from the changelogs");
                self.rollback_and_rewind(consumer)?;
                for partition in partitions {
                    self.reinit(consumer, partition)?;
                }
                Ok(())
            }
            Error::CommitUnknown { partitions, reason } => {
                // The abort is refused after a commit that timed out: the producer is replaced,
                // and its initialisation has the coordinator finish or abort that transaction
                // before the tasks read their changelogs (restores read up to the log end).
                tracing::error!(?partitions, reason, "the outcome of a commit is unknown: restoring its tasks from their checkpoints");
                self.status.aborted();
                self.rollback_and_rewind(consumer)?;
                for partition in partitions {
                    self.close_task(partition);
                    if self.assigned.contains_key(&partition) {
                        self.open_and_restore(consumer, partition, false)?;
                        // From where the group's offsets say now, so they never move backwards.
                        for o in self.tasks.get(partition).map(super::task::Task::offsets_to_commit).unwrap_or_default() {
                            if let Err(e) = consumer.seek(&o.topic, o.partition, Offset::Offset(o.next_offset), self.timeout) {
                                tracing::warn!(topic = %o.topic, partition, error = %e, "seek to the group's offset failed");
                            }
                        }
                    }
                }
                Ok(())
            }
            Error::TaskMigrated(m) => {
                // Our commit was refused for a stale generation or a fenced producer. Nothing of it
                // is in local state: roll back and rewind to the last commit. The tasks stay: the
                // group's own rebalance callbacks revoke whatever really moved (closing every task
                // here would strand partitions that cooperative-sticky lets this member keep).
                tracing::warn!(error = %m, "task migrated: rolling back to the last commit");
                self.status.migrated();
                self.rollback_and_rewind(consumer)?;
                if self.tasks.guarantee() == Guarantee::ExactlyOnceV2 {
                    self.replace_producer()?;
                }
                Ok(())
            }
            e @ (Error::Fatal(_) | Error::Crash(_)) => Err(e),
        }
    }

    /// A fenced or broken transactional producer is unusable; a new one with the same
    /// transactional id fences any zombie and has the broker abort whatever the old one left open.
    ///
    /// # Errors
    /// [`Error::Fatal`] when not even a new producer can be made: the instance stops.
    fn replace_producer(&mut self) -> Result<(), Error> {
        self.producer = create_producer(&self.producer_config, self.tasks.guarantee(), self.timeout)
            .map_err(|e| Error::Fatal(format!("cannot replace the producer: {e}")))?;
        self.tasks.reset_transaction();
        Ok(())
    }

    /// Aborts the open transaction, rolls every task back to its last commit and rewinds the
    /// consumer there. If the abort itself fails, the producer is replaced, which aborts it on
    /// the broker: no task's writes are ever left in a transaction that might commit later.
    ///
    /// # Errors
    /// [`Error::Fatal`] when no new producer can be made.
    fn rollback_and_rewind<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Error> {
        let rollback = self.tasks.rollback(&mut KafkaLog { producer: &self.producer, consumer, timeout: self.timeout });
        for o in rollback.rewind {
            if let Err(e) = consumer.seek(&o.topic, o.partition, Offset::Offset(o.next_offset), self.timeout) {
                // The partition may have been revoked meanwhile; its next owner starts from the
                // committed offset anyway.
                tracing::warn!(topic = %o.topic, partition = o.partition, error = %e, "seek after rollback failed");
            }
        }
        if let Err(e) = rollback.aborted {
            tracing::warn!(error = %e, "abort_transaction failed: replacing the producer, which aborts the transaction");
            self.replace_producer()?;
        }
        Ok(())
    }

    /// Rebalance: partitions were assigned. Opens their tasks, pauses them, starts restoring.
    pub fn on_assigned<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, tpl: &TopicPartitionList) {
        tracing::info!(partitions = ?tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect::<Vec<_>>(), "assigned");
        let mut new = BTreeSet::new();
        for e in tpl.elements() {
            self.assigned.entry(e.partition()).or_default().insert(e.topic().to_owned());
            if self.tasks.get(e.partition()).is_none() {
                new.insert(e.partition());
            }
        }
        for p in self.restorer.partitions().into_iter().chain(self.awaiting_offsets.keys().copied()) {
            // Newly assigned topics of a task still restoring or waiting must wait too.
            if let Some(topics) = self.assigned.get(&p) {
                pause(consumer, p, topics);
            }
        }
        for p in new {
            if let Err(e) = self.open_and_restore(consumer, p, false) {
                self.fatal.get_or_insert(e);
            }
        }
        self.publish_assignment();
    }

    /// Opens the task of `partition` with its source partitions paused, and starts restoring it.
    /// A task that cannot be opened, or whose restore cannot start, is wiped and tried once more
    /// (task-corrupted); its partitions stay paused meanwhile, so no record is read without a task.
    ///
    /// # Errors
    /// [`Error::Fatal`] when even a wiped task cannot be opened and restored: this instance
    /// stops and the group gives the partition to another.
    fn open_and_restore<C: ConsumerContext + 'static>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partition: i32,
        wipe: bool,
    ) -> Result<(), Error> {
        let topics = self.assigned.get(&partition).cloned().unwrap_or_default();
        pause(consumer, partition, &topics);
        let attempt = |tm: &mut Self, wipe: bool| -> Result<(), Error> {
            if wipe {
                tm.tasks.wipe_dir(partition)?; // closes the task first
            }
            let task = tm.tasks.open(partition)?;
            match start_offsets(consumer, partition, &topics, tm.timeout) {
                Ok(offsets) => {
                    task.set_start_offsets(offsets);
                    tm.awaiting_offsets.remove(&partition);
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cannot read where the task's sources start; it runs once they are known");
                    tm.awaiting_offsets.entry(partition).or_insert_with(Instant::now);
                }
            }
            tm.restorer.start(task)
        };
        let result = match attempt(self, wipe) {
            Err(e @ Error::TaskCorrupted { .. }) if !wipe => {
                tracing::error!(partition, error = %e, "task cannot be opened or restored: wiping its state and trying again");
                attempt(self, true)
            }
            other => other,
        };
        match result {
            Ok(()) => {
                self.status.restore_started();
                Ok(())
            }
            Err(e) => Err(Error::Fatal(format!("task {partition} cannot be opened or restored even from a wiped state: {e}"))),
        }
    }

    /// Task-corrupted: closes the task, wipes its state and restores it from the beginning of
    /// its changelogs.
    fn reinit<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, partition: i32) -> Result<(), Error> {
        self.close_task(partition);
        if self.assigned.contains_key(&partition) {
            self.open_and_restore(consumer, partition, true)?;
        }
        Ok(())
    }

    /// Drives restoration: applies a batch of changelog records per store, finishes tasks whose
    /// changelogs all reached their end and resumes their source partitions; a task found
    /// corrupted is wiped and restored again.
    ///
    /// # Errors
    /// [`Error::Fatal`] when a corrupted task cannot even be restored from a wiped state.
    pub fn restore_step<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Error> {
        if !self.is_restoring() {
            return Ok(());
        }
        self.read_awaited_offsets(consumer)?;
        if !self.restorer.is_restoring() {
            self.publish_assignment();
            return Ok(());
        }
        let progress = self.restorer.step(&mut self.tasks);
        if progress.records > 0 {
            self.status.restored(progress.records);
        }
        let mut corrupted = progress.corrupted;
        for p in progress.done {
            let Some(task) = self.tasks.get_mut(p) else { continue };
            match task.finish_restore() {
                Ok(()) if self.awaiting_offsets.contains_key(&p) => {
                    task.hold();
                    tracing::info!(partition = p, "task restored; it runs once its start offsets are known");
                }
                Ok(()) => {
                    tracing::info!(partition = p, "task restored and running");
                    if let Some(topics) = self.assigned.get(&p) {
                        resume(consumer, p, topics);
                    }
                }
                Err(e) => corrupted.push((p, e.to_string())),
            }
        }
        for (p, reason) in corrupted {
            tracing::error!(partition = p, reason, "restoring a task failed: wiping its state and restoring it again");
            self.reinit(consumer, p)?;
        }
        self.publish_assignment();
        Ok(())
    }

    /// Reads the start offsets of the tasks still waiting for them (once a second, briefly),
    /// and lets the restored ones run.
    ///
    /// # Errors
    /// [`Error::Fatal`] when a task has waited [`OFFSETS_GIVE_UP`]: the group gives its partitions
    /// to a member that can read them.
    fn read_awaited_offsets<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Error> {
        if self.awaiting_offsets.is_empty() || Instant::now() < self.offsets_retry_at {
            return Ok(());
        }
        self.offsets_retry_at = Instant::now() + OFFSETS_RETRY;
        for (p, since) in self.awaiting_offsets.clone() {
            let topics = self.assigned.get(&p).cloned().unwrap_or_default();
            let offsets = match start_offsets(consumer, p, &topics, OFFSETS_RETRY_TIMEOUT.min(self.timeout)) {
                Ok(offsets) => offsets,
                Err(e) if since.elapsed() >= OFFSETS_GIVE_UP => {
                    return Err(Error::Fatal(format!("task {p} waited {OFFSETS_GIVE_UP:?} for its start offsets: {e}")));
                }
                Err(_) => continue,
            };
            self.awaiting_offsets.remove(&p);
            let Some(task) = self.tasks.get_mut(p) else { continue };
            task.set_start_offsets(offsets);
            if task.state() == TaskState::Held {
                task.release();
                tracing::info!(partition = p, "start offsets known: task running");
                resume(consumer, p, &topics);
            }
        }
        Ok(())
    }

    /// Rebalance: partitions are being revoked (`lost` = taken without a chance to commit).
    ///
    /// Whatever happens, no revoked task's writes stay in an open transaction: the commit either
    /// succeeds or is aborted (`recover`) before the tasks are closed.
    pub fn on_revoked<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, tpl: &TopicPartitionList, lost: bool) {
        tracing::info!(partitions = ?tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect::<Vec<_>>(), lost, "revoked");
        let settled = if lost {
            // Our transaction can no longer commit for these partitions: abort it, roll back.
            self.rollback_and_rewind(consumer)
        } else {
            self.commit(consumer)
        };
        if let Err(e) = settled {
            tracing::error!(error = %e, "settling the revoked tasks failed");
            self.fatal.get_or_insert(e);
        }
        for e in tpl.elements() {
            // A partition assigned again starts unpaused, with nothing to wait for yet.
            self.backoff.remove(&(e.topic().to_owned(), e.partition()));
            if let Some(topics) = self.assigned.get_mut(&e.partition()) {
                topics.remove(e.topic());
                if topics.is_empty() {
                    self.assigned.remove(&e.partition());
                    self.close_task(e.partition());
                }
            }
        }
        self.publish_assignment();
    }

    fn close_task(&mut self, partition: i32) {
        self.restorer.stop(partition);
        self.awaiting_offsets.remove(&partition);
        self.tasks.close(partition);
    }

    /// Clean shutdown: commit, then close every task (RocksDB holds the last checkpoint).
    ///
    /// # Errors
    /// Only [`Error::Fatal`].
    pub fn shutdown<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Error> {
        self.commit(consumer)?;
        if self.tasks.commit_needed() {
            // The final commit failed and was rolled back: abort whatever is still open.
            self.rollback_and_rewind(consumer)?;
        }
        for p in self.tasks.partitions() {
            self.close_task(p);
        }
        self.status.set_task_stats(self.tasks.stats());
        super::kafka_log::flush(&self.producer, self.timeout)
    }
}

fn create_producer(config: &ClientConfig, guarantee: Guarantee, timeout: Duration) -> Result<KafkaProducer, Error> {
    let producer: KafkaProducer =
        config.create_with_context(DeliveryTracker::default()).map_err(|e| Error::Fatal(format!("producer: {e}")))?;
    if guarantee == Guarantee::ExactlyOnceV2 {
        producer.init_transactions(timeout).map_err(|e| Error::from_kafka("init_transactions", e))?;
    }
    Ok(producer)
}

/// Copies a consumed message into an [`InputRecord`].
pub(crate) fn input_record(m: &BorrowedMessage<'_>) -> InputRecord {
    let mut headers = Headers::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            headers.insert(h.key, h.value.unwrap_or_default());
        }
    }
    InputRecord {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis().unwrap_or(0),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}
