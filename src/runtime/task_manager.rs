//! The task manager: turns the group's assignment into tasks, restores them before they run,
//! commits, and recovers from errors by class (see `runtime::error`).
//!
//! Rebalance callbacks run inside `consumer.poll()` on the stream thread. Revocation is handled
//! *inside* the callback on purpose: the tasks being revoked must commit before librdkafka gives
//! their partitions away, or the next owner would re-read from an older offset. Everything else

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::kafka::QuietEof;
use crate::record::{Headers, InputRecord};
use crate::state::{ChangelogEntry, COMMIT_HEADER, MARKER_HEADER};

use super::commit::NoFaults;
use super::kafka_log::{DeliveryTracker, KafkaLog, KafkaProducer};
use super::status::Status;
use super::task::TaskState;
use super::tasks::Tasks;
use super::{Error, Guarantee, SourceOffset};

/// Most changelog records applied per store in one RocksDB batch during restoration.
const RESTORE_BATCH: usize = 2_000;

pub(crate) struct TaskManager {
    tasks: Tasks,
    producer: KafkaProducer,
    producer_config: ClientConfig,
    /// One restore consumer per store: librdkafka reports end-of-partition by partition number
    /// only, so each consumer reads one changelog topic.
    restore: BTreeMap<String, BaseConsumer<QuietEof>>,
    /// Source topics assigned, per partition.
    assigned: BTreeMap<i32, BTreeSet<String>>,
    /// Stores still restoring, per partition.
    restoring: BTreeMap<i32, BTreeSet<String>>,
    timeout: Duration,
    status: Arc<Status>,
    /// Partitions paused after a transient input failure: when to resume, and failures in a row.
    backoff: BTreeMap<(String, i32), (Instant, u32)>,
}

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
        status: Arc<Status>,
    ) -> Result<Self, Error> {
        let producer = create_producer(&producer_config, tasks.guarantee(), timeout)?;
        let mut restore = BTreeMap::new();
        for store in tasks.topology().stores().iter().map(|s| s.name.clone()).chain([crate::state::TIMER_STORE.to_owned()]) {
            let c: BaseConsumer<QuietEof> =
                restore_config.create_with_context(QuietEof).map_err(|e| Error::Fatal(format!("restore consumer: {e}")))?;
            restore.insert(store, c);
        }
        Ok(Self {
            tasks,
            producer,
            producer_config,
            restore,
            assigned: BTreeMap::new(),
            restoring: BTreeMap::new(),
            timeout,
            status,
            backoff: BTreeMap::new(),
        })
    }

    pub fn is_restoring(&self) -> bool {
        !self.restoring.is_empty()
    }

    /// Serves delivery reports.
    pub fn poll_producer(&self) {
        super::kafka_log::serve_delivery_reports(&self.producer);
        self.status.set_task_stats(self.tasks.stats());
    }

    /// Processes one record from the group consumer.
    ///
    /// # Errors
    /// Only [`Error::Fatal`]: every other class is recovered here.
    pub fn process<C: ConsumerContext + 'static>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &BorrowedMessage<'_>,
        now: i64,
    ) -> Result<(), Error> {
        let input = input_record(msg);
        self.status.input_seen();
        if self.tasks.get(input.partition).is_none_or(|t| t.state() != TaskState::Running) {
            // Fetched before the partition was paused or revoked; it is read again later.
            return Ok(());
        }
        let mut log = KafkaLog { producer: &self.producer, consumer, timeout: self.timeout };
        let result = self.tasks.process(&input, now, &mut log);
        match result {
            Ok(_) => {
                if !self.backoff.is_empty() {
                    self.backoff.remove(&(input.topic.clone(), input.partition));
                }
                Ok(())
            }
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Fires due wall-clock timers.
    ///
    /// # Errors
    /// Only [`Error::Fatal`].
    pub fn fire_wall_clock_timers<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, now: i64) -> Result<(), Error> {
        let mut log = KafkaLog { producer: &self.producer, consumer, timeout: self.timeout };
        match self.tasks.fire_wall_clock_timers(now, &mut log) {
            Ok(_) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// A key of a user store, from whichever task holds it.
    pub fn query(&self, store: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.tasks.partitions().into_iter().find_map(|p| self.tasks.get(p).and_then(|t| t.get(store, key).ok().flatten()))
    }

    pub fn commit_needed(&self) -> bool {
        self.tasks.commit_needed()
    }

    /// Resumes the partitions whose backoff is over (unless their task is still restoring).
    pub fn resume_backed_off<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) {
        let now = Instant::now();
        for ((topic, partition), (at, _)) in &mut self.backoff {
            if *at <= now && !self.restoring.contains_key(partition) && self.assigned.get(partition).is_some_and(|t| t.contains(topic)) {
                resume(consumer, *partition, &BTreeSet::from([topic.clone()]));
                *at = now + Duration::from_secs(3600); // resumed; the next failure or success updates it
            }
        }
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
                }
                Ok(())
            }
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Recovers from a classified error; returns only fatal ones.
    fn recover<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, e: Error) -> Result<(), Error> {
        match e {
            Error::Retriable(m) => {
                tracing::warn!(error = %m, "retriable error; the step is retried");
                Ok(())
            }
            Error::InputRetriable { topic, partition, offset, reason, after } => {
                let entry = self.backoff.entry((topic.clone(), partition)).or_insert((Instant::now(), 0));
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
                pause(consumer, partition, &BTreeSet::from([topic.clone()]));
                if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), self.timeout) {
                    tracing::warn!(topic, partition, error = %e, "seek back for a retry failed");
                }
                Ok(())
            }
            Error::Abortable(m) => {
                tracing::warn!(error = %m, "aborting: tasks roll back to their last commit and reprocess");
                self.status.aborted();
                self.rollback_and_rewind(consumer);
                Ok(())
            }
            Error::TaskCorrupted { partitions, reason } => {
                tracing::error!(?partitions, reason, "tasks corrupted: wiping their state and restoring from the changelogs");
                self.rollback_and_rewind(consumer);
                for partition in partitions {
                    let topics = self.assigned.get(&partition).cloned().unwrap_or_default();
                    self.close_task(partition);
                    let task = self.tasks.open(partition)?;
                    for (store, _, _) in task.changelogs() {
                        task.wipe_store(&store)?;
                    }
                    self.start_restore(consumer, partition, &topics);
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
                self.rollback_and_rewind(consumer);
                if self.tasks.guarantee() == Guarantee::ExactlyOnceV2 {
                    // A fenced transactional producer is unusable; a new one fences any zombie.
                    self.producer = create_producer(&self.producer_config, self.tasks.guarantee(), self.timeout)?;
                    self.tasks.reset_transaction();
                }
                Ok(())
            }
            e @ (Error::Fatal(_) | Error::Crash(_)) => Err(e),
        }
    }

    fn rollback_and_rewind<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) {
        let rewind: Vec<SourceOffset> = self.tasks.rollback(&mut KafkaLog { producer: &self.producer, consumer, timeout: self.timeout });
        for o in rewind {
            if let Err(e) = consumer.seek(&o.topic, o.partition, Offset::Offset(o.next_offset), self.timeout) {
                // The partition may have been revoked meanwhile; its next owner starts from the
                // committed offset anyway.
                tracing::warn!(topic = %o.topic, partition = o.partition, error = %e, "seek after rollback failed");
            }
        }
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
        for p in &self.restoring.keys().copied().collect::<Vec<_>>() {
            // Newly assigned topics of a task still restoring must wait too.
            let topics = self.assigned[p].clone();
            pause(consumer, *p, &topics);
        }
        for p in new {
            if let Err(e) = self.tasks.open(p) {
                tracing::error!(partition = p, error = %e, "cannot open task; it stays unassigned here");
                continue;
            }
            let topics = self.assigned[&p].clone();
            self.start_restore(consumer, p, &topics);
        }
        self.status.set_assignment(self.tasks.partitions(), self.is_restoring());
    }

    fn start_restore<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, partition: i32, topics: &BTreeSet<String>) {
        pause(consumer, partition, topics);
        let task = self.tasks.get_mut(partition).expect("task opened before restoring");
        let mut stores = BTreeSet::new();
        for (store, topic, checkpoint) in task.changelogs() {
            let rc = &self.restore[&store];
            let start = match (checkpoint, rc.fetch_watermarks(&topic, partition, self.timeout)) {
                (Some(c), Ok((low, high))) if c >= low && c <= high => Offset::Offset(c),
                (Some(c), Ok((low, high))) => {
                    tracing::warn!(
                        store,
                        partition,
                        checkpoint = c,
                        low,
                        high,
                        "checkpoint outside the changelog: restoring from the beginning"
                    );
                    if let Err(e) = task.wipe_store(&store) {
                        tracing::error!(store, partition, error = %e, "cannot wipe store");
                    }
                    Offset::Beginning
                }
                (Some(c), Err(_)) => Offset::Offset(c),
                (None, _) => Offset::Beginning,
            };
            let mut tpl = TopicPartitionList::new();
            if tpl.add_partition_offset(&topic, partition, start).is_ok() && rc.incremental_assign(&tpl).is_ok() {
                stores.insert(store);
            } else {
                tracing::error!(store, partition, "cannot assign changelog for restoration");
            }
        }
        self.restoring.insert(partition, stores);
        self.status.restore_started();
    }

    /// Drives restoration: applies a batch of changelog records per store, finishes tasks whose
    /// changelogs all reached their end, and resumes their source partitions.
    pub fn restore_step<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>) {
        if self.restoring.is_empty() {
            return;
        }
        let stores: Vec<String> = self.restore.keys().cloned().collect();
        for store in stores {
            let mut batches: BTreeMap<i32, Vec<ChangelogEntry>> = BTreeMap::new();
            let mut finished = Vec::new();
            let rc = &self.restore[&store];
            for _ in 0..RESTORE_BATCH {
                match rc.poll(Duration::from_millis(1)) {
                    None => break,
                    Some(Ok(m)) => {
                        let entry = ChangelogEntry {
                            offset: m.offset(),
                            key: m.key().unwrap_or_default().to_vec(),
                            value: m.payload().map(<[u8]>::to_vec),
                            is_marker: m.headers().is_some_and(|h| h.iter().any(|h| h.key == MARKER_HEADER)),
                            commit: ChangelogEntry::decode_commit(
                                m.headers().and_then(|h| h.iter().find(|h| h.key == COMMIT_HEADER)).and_then(|h| h.value),
                            ),
                        };
                        batches.entry(m.partition()).or_default().push(entry);
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => finished.push(p),
                    Some(Err(e)) => tracing::warn!(store, error = %e, "restore consumer error"),
                }
            }
            for (p, entries) in batches {
                let n = entries.len() as u64;
                if let Some(task) = self.tasks.get_mut(p) {
                    if let Err(e) = task.restore(&store, &entries) {
                        tracing::error!(partition = p, error = %e, "restore failed");
                    }
                }
                self.status.restored(n);
            }
            for p in finished {
                if let Some(remaining) = self.restoring.get_mut(&p) {
                    remaining.remove(&store);
                    let mut tpl = TopicPartitionList::new();
                    let topic = crate::state::changelog_topic(self.application_id(), &store);
                    let _ = tpl.add_partition(&topic, p);
                    let _ = self.restore[&store].incremental_unassign(&tpl);
                }
            }
        }
        let done: Vec<i32> = self.restoring.iter().filter(|(_, s)| s.is_empty()).map(|(p, _)| *p).collect();
        for p in done {
            self.restoring.remove(&p);
            if let Some(task) = self.tasks.get_mut(p) {
                match task.finish_restore() {
                    Ok(()) => tracing::info!(partition = p, "task restored and running"),
                    Err(e) => tracing::error!(partition = p, error = %e, "finishing restoration failed"),
                }
            }
            if let Some(topics) = self.assigned.get(&p) {
                resume(consumer, p, topics);
            }
        }
        self.status.set_assignment(self.tasks.partitions(), self.is_restoring());
    }

    fn application_id(&self) -> &str {
        self.tasks.application_id()
    }

    /// Rebalance: partitions are being revoked (`lost` = taken without a chance to commit).
    pub fn on_revoked<C: ConsumerContext + 'static>(&mut self, consumer: &BaseConsumer<C>, tpl: &TopicPartitionList, lost: bool) {
        tracing::info!(partitions = ?tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect::<Vec<_>>(), lost, "revoked");
        if lost {
            // Our transaction can no longer commit for these partitions: abort it, roll back.
            self.rollback_and_rewind(consumer);
        } else if let Err(e) = self.commit(consumer) {
            tracing::error!(error = %e, "commit on revocation failed");
        }
        for e in tpl.elements() {
            if let Some(topics) = self.assigned.get_mut(&e.partition()) {
                topics.remove(e.topic());
                if topics.is_empty() {
                    self.assigned.remove(&e.partition());
                    self.close_task(e.partition());
                }
            }
        }
        self.status.set_assignment(self.tasks.partitions(), self.is_restoring());
    }

    fn close_task(&mut self, partition: i32) {
        if let Some(stores) = self.restoring.remove(&partition) {
            for store in stores {
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition(&crate::state::changelog_topic(self.application_id(), &store), partition);
                let _ = self.restore[&store].incremental_unassign(&tpl);
            }
        }
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
            self.tasks.rollback(&mut KafkaLog { producer: &self.producer, consumer, timeout: self.timeout });
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

fn partition_list(partition: i32, topics: &BTreeSet<String>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        tpl.add_partition(t, partition);
    }
    tpl
}

fn pause<C: ConsumerContext + 'static>(consumer: &BaseConsumer<C>, partition: i32, topics: &BTreeSet<String>) {
    if let Err(e) = consumer.pause(&partition_list(partition, topics)) {
        tracing::warn!(partition, error = %e, "pause failed");
    }
}

fn resume<C: ConsumerContext + 'static>(consumer: &BaseConsumer<C>, partition: i32, topics: &BTreeSet<String>) {
    if let Err(e) = consumer.resume(&partition_list(partition, topics)) {
        tracing::warn!(partition, error = %e, "resume failed");
    }
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
