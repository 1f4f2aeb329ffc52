//! A task's timers: punctuation and firing due timers, in due order and a bounded number at a time.

use crate::dlq;
use crate::processor;
use crate::record::RecordMetadata;
use crate::state::TimeKind;

use super::super::collector::Collector;
use super::super::Error;
use super::{Input, Task};

/// Timers a task fires per call at most: a stream-time jump or an outage can make thousands due
/// at once, and firing them all inside one transaction could outlast `transaction.timeout.ms`.
/// The rest fire at the next punctuation, which comes at once while timers are left over.
const MAX_TIMERS_PER_CALL: usize = 500;

impl Task {
    /// Punctuation: fires the timers due now on either clock (wall-clock timers at `wall_clock`,
    /// stream-time ones at the task's stream time, for those a record's own call left over).
    /// Returns how many fired, and whether more are due than one call fires.
    ///
    /// # Errors
    /// As [`Task::process`].
    pub fn punctuate(&mut self, wall_clock: i64, out: &mut Collector<'_>) -> Result<(usize, bool), Error> {
        let wall = self.fire_timers(TimeKind::WallClock, wall_clock, wall_clock, out)?;
        let stream = self.fire_stream_timers(wall_clock, out)?;
        Ok((wall + stream, wall >= MAX_TIMERS_PER_CALL || self.stream_timers_left))
    }

    /// Fires the stream-time timers due at the task's stream time, and notes whether more are
    /// due than one call fires (they then fire before the next record).
    pub(super) fn fire_stream_timers(&mut self, wall_clock: i64, out: &mut Collector<'_>) -> Result<usize, Error> {
        let fired = self.fire_timers(TimeKind::StreamTime, self.position.stream_time, wall_clock, out)?;
        self.stream_timers_left = fired >= MAX_TIMERS_PER_CALL;
        Ok(fired)
    }

    /// Fires the timers of `kind` due at `now`, in due order, at most [`MAX_TIMERS_PER_CALL`].
    /// Each fired timer is removed in the same commit as its effects.
    ///
    /// Timers are read in batches, and a timer that fires may cancel or move a later one of its
    /// batch (a transition leaves the state whose timer it was, or enters it again): each is
    /// checked against the schedule just before it fires, and fires only if still set for that
    /// time. A timer that sets one already due ends the batch, so that one fires in due order.
    ///
    /// # Errors
    /// As [`Task::process`].
    pub fn fire_timers(&mut self, kind: TimeKind, now: i64, wall_clock: i64, out: &mut Collector<'_>) -> Result<usize, Error> {
        let partition = self.partition;
        let corrupted = move |source: crate::state::Error| Error::corrupted(partition, &source);
        // Timers handled (fired, or dropped as below): the bound counts them all.
        let mut handled = 0;
        // A timer that sets itself again for a time already due fires again in this call only if
        // that time is later (catching up, hour by hour, after an outage); one that sets itself
        // for the same time or earlier waits for the next call instead of firing hundreds of
        // times in a row.
        let mut fired: std::collections::HashMap<(String, String, String), i64> = std::collections::HashMap::new();
        loop {
            let batch = 64.min(MAX_TIMERS_PER_CALL - handled);
            if batch == 0 {
                return Ok(handled);
            }
            let due = self.timers.due(kind, now, batch).map_err(corrupted)?;
            if due.is_empty() {
                return Ok(handled);
            }
            self.timers.take_scheduled(kind);
            for timer in due {
                let id = (timer.node.clone(), timer.name.clone(), timer.key.clone());
                if fired.get(&id).is_some_and(|&due| timer.due <= due) {
                    return Ok(handled);
                }
                if self.timers.take_scheduled(kind).is_some_and(|d| d <= now) {
                    break; // read the schedule again: a timer just set is due before the rest
                }
                if !self.timers.is_scheduled(&timer).map_err(corrupted)? {
                    // Cancelled or moved by a timer fired before it in this batch; or an entry
                    // nothing indexes, which is removed so it is not read as due again.
                    if self.timers.remove_orphan(&timer).map_err(corrupted)? {
                        self.end_record(true);
                        self.commit_needed = true;
                        handled += 1;
                    }
                    continue;
                }
                handled += 1;
                fired.insert(id.clone(), timer.due);
                let (timer_node, timer_name, key) = id;
                let Some(node) = self.topology.nodes().iter().position(|n| n.name == timer.node) else {
                    tracing::warn!(node = %timer.node, key = %timer.key, "dropping a timer of a processor the topology no longer has");
                    self.timers.cancel(&timer_node, &timer_name, &key).map_err(corrupted)?;
                    self.end_record(true);
                    self.commit_needed = true;
                    continue;
                };
                self.commit_needed = true;
                self.timers.cancel(&timer_node, &timer_name, &key).map_err(corrupted)?;
                let metadata = RecordMetadata { topic: String::new(), partition, offset: None, timestamp: timer.due };
                match self.run(node, Input::Timer(timer), &metadata, wall_clock) {
                    Ok(outputs) => {
                        for o in &outputs {
                            out.send(o)?;
                        }
                    }
                    Err((stage, processor::Error::BadRecord(msg))) => {
                        // The failed run dropped the timer's removal with its other effects; remove it
                        // again on its own, since firing it again would only fail again.
                        self.timers.cancel(&timer_node, &timer_name, &key).map_err(corrupted)?;
                        self.end_record(true);
                        self.stats.dead_lettered += 1;
                        self.send_dead_letter(out, dlq::dead_timer(&self.dlq_topic, &key, &msg, &stage, wall_clock))?;
                    }
                    Err((_, processor::Error::Retry(reason) | processor::Error::Backoff { reason, .. })) => {
                        // Nothing of the attempt was kept, the timer included: it fires again later.
                        tracing::warn!(key = %key, reason, "timer hit a transient failure; it fires again later");
                        return Ok(handled);
                    }
                    Err((_, e)) => return Err(self.escalate(e)),
                }
                self.stats.timers_fired += 1;
            }
        }
    }
}
