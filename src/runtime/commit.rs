//! The commit protocol, in one place. Both guarantees persist the same things; they differ in
//! what makes them atomic.
//!
//! **exactly_once_v2** — one transaction per commit interval, covering all of the instance's tasks:
//! 1. `SendChangelog` / `SendMarkers`: every dirty store's uncommitted writes, then its position
//!    marker, go to its changelog inside the open transaction (outputs and dead letters are already
//!    in it: the collector put them there while processing).
//! 2. `FlushChangelog`: wait until every record of the transaction is acknowledged; this also
//!    yields the changelog offsets for the checkpoint.
//! 3. `SendOffsets`: the consumed offsets (last processed + 1) join the transaction, with the
//!    consumer group's metadata so a zombie of an older generation is fenced.
//! 4. `CommitTransaction`: outputs, changelog and offsets become visible at once, or not at all.
//! 5. `WriteCheckpoint`: the tasks are marked committed (their positions can no longer be rewound
//!    past this commit), then each store writes its state, the next changelog offset and its
//!    position in one RocksDB `WriteBatch`. A crash before this only means restoring a little more
//!    from the changelog; a failed write marks the task corrupted (wipe, restore); a crash before
//!    step 4 aborts everything and the inputs are processed again.
//!
//! **at_least_once** — the same order, made safe by flushes instead of a transaction:
//! 1. `FlushOutputs`: outputs and dead letters are acknowledged first, so the guard below can never
//!    hide an input whose output was lost.
//! 2. `SendChangelog` + `FlushChangelog`: the data records are durable.
//! 3. `SendMarkers` + `FlushMarkers`: only now the position markers, so a marker in the changelog
//!    vouches for the data of every store of its task (restore takes the furthest marker).
//! 4. `WriteCheckpoint`: as above.
//! 5. `CommitOffsets`: the consumed offsets. A crash before this re-delivers inputs, and the
//!    applied-offset guard keeps them from being applied to state twice.
//!
//! State is never written to RocksDB before the log has it, and offsets are never committed
//! before the state they cover.
//!
//! A broker step that fails with a retriable error (a timed-out `commit_transaction`, a flush
//! still waiting) is called again, as librdkafka requires, a few times with a backoff; if it
//! still fails the commit fails as [`Error::Abortable`]: the caller aborts and rolls back. A
//! commit never returns with its records in a transaction left open.

use std::collections::BTreeMap;
use std::time::Duration;

use super::collector::{Collector, Transaction};
use super::log::{Log, SourceOffset};
use super::task::{Task, TaskState};
use super::{Error, Guarantee, Step};

/// Sees each step before it runs. Production passes [`NoFaults`]; the test driver injects crashes.
pub(crate) trait Probe {
    fn before(&mut self, step: Step) -> Result<(), Error>;

    /// Sees what the broker call of `step` returned (the test driver loses replies here).
    fn after(&mut self, _step: Step, result: Result<(), Error>) -> Result<(), Error> {
        result
    }
}

/// The production probe: never interferes.
pub(crate) struct NoFaults;

impl Probe for NoFaults {
    fn before(&mut self, _: Step) -> Result<(), Error> {
        Ok(())
    }
}

/// Attempts of a retriable broker step before the commit is given up (about 3 s of backoff).
const STEP_ATTEMPTS: u32 = 6;

/// Runs one broker step of the protocol (after the probe saw it), calling it again while it fails
/// with [`Error::Retriable`]; after [`STEP_ATTEMPTS`] the failure becomes [`Error::Abortable`].
fn step(probe: &mut dyn Probe, step: Step, call: impl FnMut() -> Result<(), Error>) -> Result<(), Error> {
    step_or(probe, step, call, Error::Abortable)
}

/// [`step`], with `gave_up` making the error once the attempts are spent.
fn step_or(
    probe: &mut dyn Probe,
    step: Step,
    mut call: impl FnMut() -> Result<(), Error>,
    gave_up: impl FnOnce(String) -> Error,
) -> Result<(), Error> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let result = match probe.before(step) {
            Ok(()) => probe.after(step, call()),
            Err(e) => Err(e),
        };
        match result {
            Err(Error::Retriable(m)) if attempt < STEP_ATTEMPTS => {
                tracing::warn!(?step, attempt, error = %m, "commit step failed for a retriable reason; calling it again");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(Error::Retriable(m)) => return Err(gave_up(format!("{step:?} still failing after {attempt} attempts: {m}"))),
            other => return other,
        }
    }
}

/// Commits every running task that needs it. Returns how many tasks were committed.
///
/// # Errors
/// A classified [`Error`]; the caller recovers (see `runtime::error`). On error nothing of this
/// commit is in local state, so rolling the tasks back is always safe.
pub(crate) fn commit(
    tasks: &mut BTreeMap<i32, Task>,
    log: &mut dyn Log,
    txn: &mut Transaction,
    probe: &mut dyn Probe,
) -> Result<usize, Error> {
    let committing: Vec<i32> =
        tasks.values().filter(|t| t.state() == TaskState::Running && t.commit_needed()).map(Task::partition).collect();
    if committing.is_empty() && !txn.is_open() {
        return Ok(0);
    }
    let offsets: Vec<SourceOffset> = match txn.guarantee() {
        // Every transaction carries the group's metadata and the offsets of every running task,
        // not only of those that consumed: the broker checks the group generation only on
        // TxnOffsetCommit, so a transaction without offsets (timer outputs alone) would let a
        // zombie commit after its partitions moved (KIP-447).
        Guarantee::ExactlyOnceV2 => tasks.values().filter(|t| t.state() == TaskState::Running).flat_map(Task::offsets_to_commit).collect(),
        Guarantee::AtLeastOnce => committing.iter().flat_map(|p| tasks[p].offsets_to_commit()).collect(),
    };
    tracing::debug!(tasks = ?committing, ?offsets, "committing");
    for p in &committing {
        tasks.get_mut(p).expect("committing tasks exist").begin_commit();
    }
    match txn.guarantee() {
        Guarantee::ExactlyOnceV2 => {
            probe.before(Step::SendChangelog)?;
            for p in &committing {
                tasks[p].send_changelog(&mut Collector::new(log, txn))?;
            }
            probe.before(Step::SendMarkers)?;
            for p in &committing {
                tasks[p].send_markers(&mut Collector::new(log, txn))?;
            }
            txn.ensure_open(log)?; // a commit of offsets alone still needs a transaction
            step(probe, Step::FlushChangelog, || log.flush())?;
            if offsets.is_empty() {
                // Never commit what the broker cannot fence: a zombie's escalations would go out.
                return Err(Error::Abortable(
                    "a transaction without any source offset cannot be checked against the group generation".into(),
                ));
            }
            step(probe, Step::SendOffsets, || log.send_offsets_to_transaction(&offsets))?;
            // A commit that still times out after its retries may or may not have reached the
            // coordinator. Rolling back and processing again would duplicate what it committed;
            // as Kafka Streams does (task corrupted), its tasks restore from their changelogs
            // instead, which show the outcome once a new producer has had the broker finish or
            // abort the transaction, and the applied-offset guard skips the inputs it covered.
            step_or(
                probe,
                Step::CommitTransaction,
                || log.commit_transaction(),
                |m| Error::CommitUnknown { partitions: committing.clone(), reason: m },
            )?;
            txn.closed();
        }
        Guarantee::AtLeastOnce => {
            step(probe, Step::FlushOutputs, || log.flush())?;
            probe.before(Step::SendChangelog)?;
            for p in &committing {
                tasks[p].send_changelog(&mut Collector::new(log, txn))?;
            }
            step(probe, Step::FlushChangelog, || log.flush())?;
            probe.before(Step::SendMarkers)?;
            for p in &committing {
                tasks[p].send_markers(&mut Collector::new(log, txn))?;
            }
            step(probe, Step::FlushMarkers, || log.flush())?;
        }
    }
    // Kafka now holds this commit (the transaction, or the flushed changelog and markers).
    // From here on a failure must never rewind the tasks to before it: a local write that fails
    // leaves the task corrupted, to be restored from the changelog, which has the commit.
    for p in &committing {
        tasks.get_mut(p).expect("committing tasks exist").mark_committed();
    }
    let delivered = log.take_delivered();
    for (i, p) in committing.iter().enumerate() {
        let persisted =
            probe.before(Step::WriteCheckpoint).and_then(|()| tasks.get_mut(p).expect("committing tasks exist").persist_local(&delivered));
        match persisted {
            Ok(()) => {}
            Err(e @ Error::Crash(_)) => return Err(e),
            Err(e) => {
                return Err(Error::TaskCorrupted { partitions: committing[i..].to_vec(), reason: format!("local checkpoint failed: {e}") })
            }
        }
    }
    if txn.guarantee() == Guarantee::AtLeastOnce && !offsets.is_empty() {
        // Until this succeeds the tasks keep asking for a commit, even across a rollback.
        for p in &committing {
            tasks.get_mut(p).expect("committing tasks exist").set_offsets_pending(true);
        }
        step(probe, Step::CommitOffsets, || log.commit_offsets(&offsets))?;
        for p in &committing {
            tasks.get_mut(p).expect("committing tasks exist").set_offsets_pending(false);
        }
    }
    Ok(committing.len())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use serde_json::json;

    use super::*;
    use crate::processor::{self, Context, Processor};
    use crate::runtime::tasks::Tasks;
    use crate::serde::Serde;
    use crate::testing::memory_log::{MemoryBroker, MemoryLog};
    use crate::{InputRecord, Record, TimeKind, Timer, TopologyBuilder};

    /// Sets a wall-clock timer a minute out; when it fires, emits.
    struct Remind;

    impl Processor for Remind {
        fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), processor::Error> {
            let due = ctx.wall_clock_time() + 60_000;
            ctx.schedule("remind", &record.key_string(), TimeKind::WallClock, due)
        }

        fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), processor::Error> {
            ctx.forward(Record::new(timer.key.clone(), json!({"reminded": timer.key}), timer.due));
            Ok(())
        }
    }

    #[test]
    fn an_exactly_once_transaction_without_source_offsets_is_never_committed() {
        // A task reopened after a rebalance whose start offsets could not be read, with a timer
        // due: its transaction would hold timer outputs and no offset, so the broker could not
        // check the group generation, and a zombie's escalations would be committed.
        let topology = TopologyBuilder::new()
            .source("in", &["events"], Serde::String, Serde::Json)
            .processor("remind", || Remind, &["in"])
            .sink("out", "out", Serde::String, Serde::Json, &["remind"])
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let broker = Rc::new(RefCell::new(MemoryBroker::new(1)));
        let tasks = || Tasks::new(topology.clone(), "app", dir.path().to_owned(), "app-dlq", Guarantee::ExactlyOnceV2);
        let mut log = MemoryLog::new(broker.clone());
        let mut first = tasks();
        first.open(0).unwrap().finish_restore().unwrap();
        let input = InputRecord {
            topic: "events".into(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: Some(b"a".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: Default::default(),
        };
        first.process(&input, 0, &mut log).unwrap();
        first.commit(&mut log, &mut NoFaults).unwrap();
        drop(first);

        let mut reopened = tasks();
        reopened.open(0).unwrap().finish_restore().unwrap(); // local state: the timer; no offsets
        let (fired, _) = reopened.punctuate(60_000, &mut log).unwrap();
        assert_eq!(fired, 1);
        let result = reopened.commit(&mut log, &mut NoFaults);
        assert!(matches!(result, Err(Error::Abortable(_))), "{result:?}");
        let _ = reopened.rollback(&mut log);
        assert!(broker.borrow().committed_records("out").is_empty(), "nothing was committed without offsets");
    }
}
