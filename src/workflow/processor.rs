//! The workflow processor: keeps each instance in the `instances` store, turns records and timers
//! into events for the machine, and performs the actions it returns through the processor
//! context (so they commit with the state, exactly once).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::processor::{Context, Error, Processor};
use crate::record::Record;
use crate::state::{TimeKind, Timer};

use super::definition::{Definition, Unmatched};
use super::machine::{self, Action, Event, Guards, Instance, Outcome};

/// How long a timer of an instance this binary cannot read waits before it is tried again.
const UNREADABLE_TIMER_RETRY_MS: i64 = 60_000;

/// The store every workflow keeps its instances in.
pub const STORE: &str = "instances";

/// The number of instances in each state, per task: written in the same transaction as the
/// instances, so it is exact at every commit and restored like any store, and the
/// `keyflow_workflow_instances` gauge and the console read it instead of scanning `instances`.
/// Keys are `[workflow, state]` as JSON (see [`count_key`]), values counts.
pub const COUNTS: &str = "instances-per-state";

/// The key of a state's count in [`COUNTS`].
pub fn count_key(workflow: &str, state: &str) -> String {
    json!([workflow, state]).to_string()
}

/// The workflow and state of a [`COUNTS`] key.
pub fn parse_count_key(key: &[u8]) -> Option<(String, String)> {
    serde_json::from_slice(key).ok()
}

pub(crate) fn sink_name(topic: &str) -> String {
    format!("out:{topic}")
}

pub struct WorkflowProcessor {
    def: Arc<Definition>,
    /// Timer name -> the event it fires.
    timer_events: HashMap<String, String>,
    guards: Guards,
}

impl WorkflowProcessor {
    pub fn new(def: Arc<Definition>) -> Self {
        let timer_events = def.timers().into_iter().map(|(name, fire)| (name.to_owned(), fire.to_owned())).collect();
        Self { def, timer_events, guards: Guards::default() }
    }

    fn event_of(&self, topic: &str, record: &Record) -> Result<Event, Error> {
        let input = self
            .def
            .inputs
            .iter()
            .map(|i| i.get_ref())
            .find(|i| i.topic == topic)
            .ok_or_else(|| Error::Topology(format!("no input for topic `{topic}`")))?;
        let v = &record.value;
        let name = match (&input.event, &input.event_field) {
            (Some(fixed), _) => fixed.clone(),
            (None, Some(field)) => v
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| Error::BadRecord(format!("event has no string field `{field}` naming it")))?
                .to_owned(),
            (None, None) => unreachable!("validated: inputs name their events"),
        };
        let text = |field: &str| v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(Event { name, error: text(&self.def.error_field), id: text(&self.def.event_id_field), payload: v.clone(), at: record.timestamp })
    }

    fn count(&self, ctx: &mut Context<'_>, state: &str, delta: i64) -> Result<(), Error> {
        let key = count_key(&self.def.name, state);
        let n: i64 = ctx.get_json(COUNTS, &key)?.unwrap_or(0);
        ctx.put_json(COUNTS, &key, &(n + delta))
    }

    /// The instance stored under `key`. A value this binary cannot read (written by another
    /// version, or damaged) is that event's dead letter, naming why, and is left as it is: the
    /// task is not corrupted (restoring it would read the same value again, for ever), and every
    /// other key of the partition flows on.
    fn stored(&self, ctx: &mut Context<'_>, key: &str) -> Result<Option<Instance>, Error> {
        let Some(bytes) = ctx.store(STORE)?.get(key.as_bytes())? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            let shown: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            Error::BadRecord(format!(
                "the stored instance `{key}` of workflow `{}` cannot be read ({e}); it is left as it is, and this event not applied: {shown}",
                self.def.name
            ))
        })
    }

    fn handle(&mut self, ctx: &mut Context<'_>, key: &str, event: Event) -> Result<(), Error> {
        let _span = tracing::info_span!("workflow", workflow = %self.def.name, instance = key, event = %event.name).entered();
        let before = self.stored(ctx, key)?;
        match machine::apply_with(&self.def, key, before.as_ref(), &event, &mut self.guards) {
            Outcome::Transitioned { instance, actions } => {
                let from = before.as_ref().map_or(self.def.initial.get_ref().as_str(), |b| b.state.as_str());
                crate::metrics::transition(&self.def.name, from, &instance.state);
                if before.as_ref().map(|b| b.state.as_str()) != Some(instance.state.as_str()) {
                    if let Some(b) = &before {
                        self.count(ctx, &b.state, -1)?;
                    }
                    self.count(ctx, &instance.state, 1)?;
                }
                for a in actions {
                    match a {
                        Action::Emit { topic, value } => ctx.forward_to(&sink_name(&topic), Record::new(key.to_owned(), value, event.at)),
                        Action::SetTimer { name, due, .. } => ctx.schedule(&name, key, TimeKind::WallClock, due)?,
                        Action::CancelTimer { name } => ctx.cancel_timer(&name, key)?,
                    }
                }
                ctx.put_json(STORE, key, &instance)
            }
            Outcome::Duplicate | Outcome::Ignored => {
                tracing::debug!(key, event = %event.name, "event dropped (duplicate or ignored by the state)");
                Ok(())
            }
            Outcome::Unmatched(reason) => match self.def.unmatched {
                Unmatched::DeadLetter => Err(Error::BadRecord(reason)),
                Unmatched::Ignore => {
                    tracing::info!(key, reason, "event fits no transition; ignored as the definition says");
                    Ok(())
                }
            },
        }
    }
}

impl Processor for WorkflowProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        if key.is_empty() || record.key.is_null() {
            return Err(Error::BadRecord("record has no key: the key is the workflow instance".into()));
        }
        let event = self.event_of(&ctx.metadata().topic.clone(), &record)?;
        self.handle(ctx, &key, event)
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let Some(fire) = self.timer_events.get(&timer.name).cloned() else {
            return Err(Error::BadRecord(format!("timer `{}` is not in the definition any more", timer.name)));
        };
        if let Err(Error::BadRecord(reason)) = self.stored(ctx, &timer.key) {
            // A timer of an instance this binary cannot read waits for one that can (a rolling
            // deploy or a rollback), checked again every minute: dead-lettered, it could not be
            // redriven, and the escalation would be lost.
            tracing::warn!(timer = %timer.name, instance = %timer.key, reason, "timer of an unreadable instance postponed");
            return ctx.schedule(&timer.name, &timer.key, TimeKind::WallClock, ctx.wall_clock_time() + UNREADABLE_TIMER_RETRY_MS);
        }
        let event = Event {
            name: fire,
            error: None,
            id: Some(format!("timer:{}:{}", timer.name, timer.due)),
            payload: json!({"timer": timer.name, "due": timer.due}),
            at: timer.due,
        };
        self.handle(ctx, &timer.key, event)
    }
}
