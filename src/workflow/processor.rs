//! The workflow processor: keeps each instance in the `instances` store, turns records and timers
//! into events for the machine, and performs the actions it returns through the processor
//! context (so they commit with the state, exactly once).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::processor::{Context, Error, Processor};
use crate::record::{Record, CONTROL_HEADER};
use crate::state::{TimeKind, Timer};

use super::definition::{Definition, Unmatched};
use super::machine::{self, Action, Event, Guards, Instance, Outcome};
use super::migration::{self, Migration};
use super::versions::Versions;

/// How long a timer of an instance this binary cannot read, or of a version it does not have,
/// waits before it is tried again.
const UNREADABLE_TIMER_RETRY_MS: i64 = 60_000;

/// How long a partition waits before trying again an instance of a version this member does
/// not have (a member started with it takes the partition over in a rolling deploy).
const UNKNOWN_VERSION_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The store every workflow keeps its instances in.
pub const STORE: &str = "instances";

/// The number of instances in each state of each version, per task: written in the same
/// transaction as the instances, so it is exact at every commit and restored like any store, and
/// the `keyflow_workflow_instances` gauge and the console read it instead of scanning
/// `instances`. Keys are JSON: `[workflow, state]` for version 1 (the form from before versions,
/// so counts kept then stay right) and `[workflow, state, version]` for later ones; values counts.
pub const COUNTS: &str = "instances-per-state";

/// The key of a state's count in [`COUNTS`].
pub fn count_key(workflow: &str, version: u32, state: &str) -> String {
    if version == 1 {
        json!([workflow, state]).to_string()
    } else {
        json!([workflow, state, version]).to_string()
    }
}

/// The workflow, version and state of a [`COUNTS`] key.
pub fn parse_count_key(key: &[u8]) -> Option<(String, u32, String)> {
    match serde_json::from_slice::<Value>(key).ok()? {
        Value::Array(a) => match a.as_slice() {
            [Value::String(w), Value::String(s)] => Some((w.clone(), 1, s.clone())),
            [Value::String(w), Value::String(s), v] => Some((w.clone(), u32::try_from(v.as_u64()?).ok()?, s.clone())),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn sink_name(topic: &str) -> String {
    format!("out:{topic}")
}

pub struct WorkflowProcessor {
    versions: Arc<Versions>,
    /// Per version, timer name -> the event it fires (built once: timers fire by the thousand).
    timer_events: HashMap<u32, HashMap<String, String>>,
    guards: Guards,
}

/// Why a record is no event for the machine.
enum Read {
    /// The input's filter skips it (not the workflow's business).
    Skip(&'static str),
    /// This version does not read the topic.
    NotRead(String),
}

/// What a member knows of the version an instance runs by.
enum VersionOf {
    Known(Arc<Definition>),
    /// The instance finished on a version this member does not have (removed from
    /// `[topology] versions` after its instances finished): nothing it receives applies, and it
    /// needs no rules to say so.
    Finished(String),
    /// An unfinished instance on a version this member does not have: wait for one that has it.
    Missing(String),
}

impl WorkflowProcessor {
    pub fn new(versions: Arc<Versions>) -> Self {
        let timer_events = versions
            .all()
            .map(|d| (d.version, d.timers().into_iter().map(|(name, fire)| (name.to_owned(), fire.to_owned())).collect()))
            .collect();
        Self { versions, timer_events, guards: Guards::default() }
    }

    fn name(&self) -> &str {
        self.versions.name()
    }

    /// The definition `instance` runs by (the newest for a new one), or why there is none here.
    fn definition_of(&self, key: &str, instance: Option<&Instance>) -> VersionOf {
        let Some(i) = instance else { return VersionOf::Known(self.versions.newest().clone()) };
        if let Some(d) = self.versions.get(i.version) {
            return VersionOf::Known(d.clone());
        }
        let (name, have) = (self.name(), self.versions.numbers());
        if i.finished {
            VersionOf::Finished(format!(
                "instance `{key}` finished in `{}` on version {} of `{name}` (this member has {have:?})",
                i.state, i.version
            ))
        } else {
            VersionOf::Missing(format!(
                "instance `{key}` runs version {} of workflow `{name}`, which this member does not have (it has {have:?}); \
                 the partition waits for a member that has it (add the file to [topology] versions)",
                i.version
            ))
        }
    }

    /// The event `record` of `topic` is, or why it is none: skipped by the input's filter, or
    /// not readable by this version.
    fn event_of(def: &Definition, topic: &str, record: &Record) -> Result<Result<Event, Read>, Error> {
        let Some(input) = def.inputs.iter().map(|i| i.get_ref()).find(|i| i.topic == topic) else {
            return Ok(Err(Read::NotRead(format!("version {} of workflow `{}` does not read topic `{topic}`", def.version, def.name))));
        };
        let v = &record.value;
        if let Some(why) = input.filter.and_then(|f| f.skips(v)) {
            return Ok(Err(Read::Skip(why)));
        }
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
        Ok(Ok(Event { name, error: text(&def.error_field), id: text(&def.event_id_field), payload: v.clone(), at: record.timestamp }))
    }

    /// Moves an instance's count from `(before's version, state)` to `(after's)`.
    fn recount(&self, ctx: &mut Context<'_>, before: Option<&Instance>, after: &Instance) -> Result<(), Error> {
        let at = |i: &Instance| (i.version, i.state.clone());
        if before.map(at) == Some(at(after)) {
            return Ok(());
        }
        if let Some(b) = before {
            self.count(ctx, b.version, &b.state, -1)?;
        }
        self.count(ctx, after.version, &after.state, 1)
    }

    fn count(&self, ctx: &mut Context<'_>, version: u32, state: &str, delta: i64) -> Result<(), Error> {
        let key = count_key(self.name(), version, state);
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
                self.name()
            ))
        })
    }

    /// Keeps what `outcome` says: the instance, its count, its actions.
    fn perform(
        &self,
        ctx: &mut Context<'_>,
        key: &str,
        before: Option<&Instance>,
        outcome: Outcome,
        def: &Definition,
        at: i64,
    ) -> Result<(), Error> {
        match outcome {
            Outcome::Transitioned { instance, actions } => {
                let from = before.map_or(def.initial.get_ref().as_str(), |b| b.state.as_str());
                crate::metrics::transition(&def.name, from, &instance.state);
                self.recount(ctx, before, &instance)?;
                for a in actions {
                    match a {
                        Action::Emit { topic, value } => ctx.forward_to(&sink_name(&topic), Record::new(key.to_owned(), value, at)),
                        Action::SetTimer { name, due, .. } => ctx.schedule(&name, key, TimeKind::WallClock, due)?,
                        Action::CancelTimer { name } => ctx.cancel_timer(&name, key)?,
                    }
                }
                ctx.put_json(STORE, key, &instance)
            }
            Outcome::Noted { instance } => {
                tracing::info!(key, run = instance.run, "a late answer of an earlier run, recorded and not applied");
                ctx.put_json(STORE, key, &instance)
            }
            Outcome::Duplicate | Outcome::Ignored => {
                tracing::debug!(key, "dropped (duplicate or ignored by the state)");
                Ok(())
            }
            Outcome::Unmatched(reason) => Self::unmatched(def, key, reason),
        }
    }

    fn unmatched(def: &Definition, key: &str, reason: String) -> Result<(), Error> {
        match def.unmatched {
            Unmatched::DeadLetter => Err(Error::BadRecord(reason)),
            Unmatched::Ignore => {
                tracing::info!(key, reason, "event fits no transition; ignored as the definition says");
                Ok(())
            }
        }
    }

    fn handle(&mut self, ctx: &mut Context<'_>, key: &str, record: &Record) -> Result<(), Error> {
        let before = self.stored(ctx, key)?;
        let def = match self.definition_of(key, before.as_ref()) {
            VersionOf::Known(d) => d,
            // A finished instance needs no rules of its own: the machine drops duplicates and
            // late events as for any finished instance, with the newest version's names.
            VersionOf::Finished(why) => {
                tracing::debug!(key, why, "an event for a finished instance of a version not kept");
                self.versions.newest().clone()
            }
            VersionOf::Missing(reason) => return Err(Error::Backoff { reason, after: UNKNOWN_VERSION_RETRY }),
        };
        let topic = ctx.metadata().topic.clone();
        let event = match Self::event_of(&def, &topic, record)? {
            Ok(e) => e,
            Err(Read::Skip(why)) => {
                tracing::debug!(key, topic, why, "skipped by the input's filter");
                crate::metrics::skipped(&def.name, &topic);
                return Ok(());
            }
            Err(Read::NotRead(reason)) => return Self::unmatched(&def, key, reason),
        };
        let _span =
            tracing::info_span!("workflow", workflow = %def.name, version = def.version, instance = key, event = %event.name).entered();
        // A new run (`restart_on`) starts on the newest version, as a new instance would.
        let outcome = machine::apply_versions(&def, self.versions.newest(), key, before.as_ref(), &event, &mut self.guards);
        self.perform(ctx, key, before.as_ref(), outcome, &def, event.at)
    }

    /// A control record: a migration command for this workflow of this application (another's is
    /// dropped).
    fn control(&mut self, ctx: &mut Context<'_>, key: &str, record: &Record) -> Result<(), Error> {
        let kind = record.headers.last(CONTROL_HEADER).map(String::from_utf8_lossy).unwrap_or_default();
        if kind != migration::CONTROL {
            return Err(Error::BadRecord(format!("unknown control record `{kind}` (a newer keyflow's?)")));
        }
        let m: Migration = serde_json::from_value(record.value.clone())
            .map_err(|e| Error::BadRecord(format!("a migration command that cannot be read: {e}")))?;
        if m.workflow != self.name() {
            tracing::debug!(key, workflow = m.workflow, "a migration of another workflow; dropped");
            return Ok(());
        }
        if let Some(app) = m.application.as_deref().filter(|a| *a != ctx.application_id()) {
            tracing::debug!(key, application = app, "a migration of another application's instances; dropped");
            return Ok(());
        }
        let Some(before) = self.stored(ctx, key)? else {
            return Err(Error::BadRecord(format!("migration `{}`: there is no instance `{key}`", m.migration)));
        };
        // Seen, finished, or moved since the plan: nothing to do, whatever the versions named.
        if let Some(why) = migration::skip(&before, &m) {
            tracing::debug!(key, migration = m.migration, why, "migration command left without effect");
            return Ok(());
        }
        let wait = |reason| Error::Backoff { reason, after: UNKNOWN_VERSION_RETRY };
        let from = match self.definition_of(key, Some(&before)) {
            VersionOf::Known(d) => d,
            VersionOf::Finished(_) => unreachable!("skip() leaves finished instances"),
            VersionOf::Missing(reason) => return Err(wait(reason)),
        };
        let Some(to) = self.versions.get(m.to_version).cloned() else {
            let why = format!("migration `{}` moves `{key}` to version {} of `{}`", m.migration, m.to_version, self.name());
            // A later version than any here is on its way with a member that has it; an earlier
            // one that is not here does not exist.
            return if m.to_version > self.versions.newest().version {
                Err(wait(format!("{why}, which this member does not have yet")))
            } else {
                Err(Error::BadRecord(format!("{why}, which does not exist (versions: {:?})", self.versions.numbers())))
            };
        };
        let _span = tracing::info_span!("migration", workflow = %to.name, instance = key, to = to.version).entered();
        match migration::apply(&from, &to, &before, &m, record.timestamp) {
            // A migration that cannot place its instance is always a dead letter, whatever the
            // target's `unmatched`: an operator asked for it.
            Outcome::Unmatched(reason) => Err(Error::BadRecord(reason)),
            outcome => self.perform(ctx, key, Some(&before), outcome, &to, record.timestamp),
        }
    }
}

impl Processor for WorkflowProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        if key.is_empty() || record.key.is_null() {
            return Err(Error::BadRecord("record has no key: the key is the workflow instance".into()));
        }
        if record.headers.last(CONTROL_HEADER).is_some() {
            return self.control(ctx, &key, &record);
        }
        self.handle(ctx, &key, &record)
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        // A timer of an instance this member cannot read, or whose version it does not have,
        // waits for one that can (a rolling deploy or a rollback), checked again every minute:
        // dead-lettered, it could not be redriven, and the escalation would be lost.
        let postpone = |ctx: &mut Context<'_>, reason: String| {
            tracing::warn!(timer = %timer.name, instance = %timer.key, reason, "timer postponed");
            ctx.schedule(&timer.name, &timer.key, TimeKind::WallClock, ctx.wall_clock_time() + UNREADABLE_TIMER_RETRY_MS)
        };
        let before = match self.stored(ctx, &timer.key) {
            Err(Error::BadRecord(reason)) => return postpone(ctx, reason),
            other => other?,
        };
        let def = match self.definition_of(&timer.key, before.as_ref()) {
            VersionOf::Known(d) => d,
            VersionOf::Finished(why) => {
                tracing::info!(timer = %timer.name, why, "timer of a finished instance dropped");
                return Ok(());
            }
            VersionOf::Missing(reason) => return postpone(ctx, reason),
        };
        let Some(fire) = self.timer_events.get(&def.version).and_then(|t| t.get(&timer.name)).cloned() else {
            return Err(Error::BadRecord(format!("timer `{}` is not in version {} of `{}` any more", timer.name, def.version, def.name)));
        };
        let event = Event {
            name: fire,
            error: None,
            id: Some(format!("timer:{}:{}", timer.name, timer.due)),
            payload: json!({"timer": timer.name, "due": timer.due}),
            at: timer.due,
        };
        let _span =
            tracing::info_span!("workflow", workflow = %def.name, version = def.version, instance = %timer.key, event = %event.name)
                .entered();
        let outcome = machine::apply_versions(&def, self.versions.newest(), &timer.key, before.as_ref(), &event, &mut self.guards);
        self.perform(ctx, &timer.key, before.as_ref(), outcome, &def, event.at)
    }
}
