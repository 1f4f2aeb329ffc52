//! The workflow state machine: `apply(definition, instance, event) -> (instance, actions)`.
//! Deterministic and free of I/O: the same inputs give the same outputs, so a replay reproduces
//! decisions, and every action's idempotency key (`<instance>:<step>:<n>`) is the same again.
//!
//! ```text
//!   event ──> duplicate id? ──yes──> Duplicate (no change)
//!               │ no
//!   answers an earlier run? ──yes──> Noted (in the audit trail, applied to nothing)
//!               │ no
//!   in the state's restart_on? ──yes──> a new run from `initial` (see `runs`)
//!               │ no
//!   state terminal? ──yes──> Finished (dead-letter or ignore)
//!               │ no
//!   first transition from the state whose `on`/`on_error` and guard match
//!               │ none ──> state ignores it? ──> Ignored ; else Unmatched (dead-letter or ignore)
//!               v
//!   cancel the old state's timers, run the actions, set the new state's timers
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::definition::{parse_duration, ActionSpec, Definition, RetrySpec, Transition};
use super::runs;

/// How many recent event ids an instance remembers to drop duplicates.
const REMEMBERED_EVENTS: usize = 64;

/// One workflow instance, as stored (and as `GET /workflows/{id}` will show it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub workflow: String,
    /// The version of the workflow the instance runs by: the one it started on, or the one a
    /// migration moved it to. Instances stored before versions existed are on version 1.
    #[serde(default = "super::definition::first_version")]
    pub version: u32,
    pub state: String,
    /// The run, from 1: one more each time an event of the state's `restart_on` starts the
    /// instance again. Every command carries it, and an answer that names an earlier run is
    /// never applied to this one.
    #[serde(default = "first_run")]
    pub run: u32,
    /// Transitions taken, counted across runs; part of every idempotency key, so the keys of
    /// two runs never meet.
    pub step: u64,
    pub variables: BTreeMap<String, Value>,
    /// The audit trail.
    pub history: Vec<HistoryEntry>,
    pub finished: bool,
    /// Ids of the latest events, newest last.
    pub recent_events: Vec<String>,
    /// Human tasks this run opened that no answer has closed yet: idempotency key -> task
    /// name. Withdrawn when the run ends or is superseded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open_tasks: BTreeMap<String, String>,
    /// The first step of this run: an answer to a command of an earlier step answers an
    /// earlier run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run_started_step: u64,
    /// Ids of the events that started runs after the first: a redelivered one, however late,
    /// never starts another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_events: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(super) fn first_run() -> u32 {
    1
}

impl Instance {
    /// Remembers an event id to drop its duplicates, forgetting the oldest past
    /// `REMEMBERED_EVENTS`.
    pub(super) fn remember(&mut self, id: String) {
        self.recent_events.push(id);
        if self.recent_events.len() > REMEMBERED_EVENTS {
            self.recent_events.remove(0);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub from: String,
    pub to: String,
    pub event: String,
    pub at: i64,
    pub step: u64,
    /// The run the entry belongs to.
    #[serde(default = "first_run")]
    pub run: u32,
    /// What else happened: a run superseded, tasks withdrawn, a late answer ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An event as the machine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    /// `Some(code)` for an error event (matched by `on_error`).
    pub error: Option<String>,
    pub id: Option<String>,
    pub payload: Value,
    pub at: i64,
}

impl Event {
    /// The event as the audit trail names it: its name, or `error:<code>`.
    pub fn label(&self) -> String {
        self.error.as_ref().map_or_else(|| self.name.clone(), |e| format!("error:{e}"))
    }
}

/// What the runtime must do. Data only: the processor performs them.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Produce `value` (keyed by the instance) to `topic`.
    Emit {
        topic: String,
        value: Value,
    },
    SetTimer {
        name: String,
        due: i64,
        fire: String,
    },
    CancelTimer {
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Transitioned {
        instance: Instance,
        actions: Vec<Action>,
    },
    /// The event was seen before (same id): nothing happens.
    Duplicate,
    /// The state ignores this event.
    Ignored,
    /// Nothing moves, but the audit trail records the event (a late answer of an earlier run).
    Noted {
        instance: Instance,
    },
    /// Nothing fits; the reason says why. The definition's `unmatched` decides its fate.
    Unmatched(String),
}

/// Applies `event` to `instance` (`None`: an instance that does not exist yet).
///
/// # Errors
/// A guard that fails to evaluate (e.g. compares a string with a number): the event is rejected
/// with the reason, like an unmatched one.
pub fn apply(def: &Definition, key: &str, instance: Option<&Instance>, event: &Event) -> Outcome {
    apply_with(def, key, instance, event, &mut Guards::default())
}

/// Compiled guards, by their source text (compiling CEL per event would dominate the cost).
#[derive(Default)]
pub struct Guards(std::collections::HashMap<String, cel::Program>);

impl Guards {
    fn eval(&mut self, expr: &str, inst: &Instance, event: &Event) -> Result<bool, String> {
        if !self.0.contains_key(expr) {
            let program = cel::Program::compile(expr).map_err(|e| e.to_string())?;
            self.0.insert(expr.to_owned(), program);
        }
        let mut ctx = cel::Context::default();
        ctx.add_variable("event", &event.payload).map_err(|e| e.to_string())?;
        ctx.add_variable("vars", &inst.variables).map_err(|e| e.to_string())?;
        ctx.add_variable("state", &inst.state).map_err(|e| e.to_string())?;
        match self.0[expr].execute(&ctx).map_err(|e| e.to_string())? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!("the guard gave {other:?}, not a boolean")),
        }
    }
}

/// [`apply`] with a cache of compiled guards.
pub fn apply_with(def: &Definition, key: &str, instance: Option<&Instance>, event: &Event, guards: &mut Guards) -> Outcome {
    apply_versions(def, def, key, instance, event, guards)
}

/// [`apply_with`] for an instance that runs by `def` while `newest` is the workflow's newest
/// version: a new run (`restart_on`) starts on `newest`, as a new instance would.
pub fn apply_versions(
    def: &Definition,
    newest: &Definition,
    key: &str,
    instance: Option<&Instance>,
    event: &Event,
    guards: &mut Guards,
) -> Outcome {
    let mut inst = instance.cloned().unwrap_or_else(|| Instance {
        id: key.into(),
        workflow: def.name.clone(),
        version: def.version,
        state: def.initial.get_ref().clone(),
        run: 1,
        ..Default::default()
    });
    if let Some(id) = &event.id {
        if inst.recent_events.contains(id) || inst.run_events.contains(id) {
            return Outcome::Duplicate;
        }
    }
    // An answer to a command of an earlier run is never applied to this one.
    if let Some(run) = runs::earlier_run(&inst, event) {
        return runs::late_answer(inst, event, run);
    }
    let state = def.states.get(&inst.state).map(|s| s.get_ref());
    if instance.is_some() && state.is_some_and(|s| event.error.is_none() && s.restart_on.contains(&event.name)) {
        if let Some(outcome) = runs::restart(def, newest, &inst, event, guards) {
            return outcome;
        }
    }
    // A finished instance takes nothing more; its end state, if this definition has it, may
    // drop some late events quietly. (So a definition of another version serves too.)
    if inst.finished {
        if state.is_some_and(|s| s.ignore.contains(&event.name)) {
            return Outcome::Ignored;
        }
        return Outcome::Unmatched(format!("instance `{key}` already finished in `{}`; `{}` arrived late", inst.state, event.name));
    }
    // A stored instance may be in a state this definition does not have (renamed or removed
    // since it got there): never a panic of the stream thread, a dead letter that says so.
    let Some(state) = state else {
        return Outcome::Unmatched(format!(
            "instance `{key}` is in state `{}`, which workflow `{}` does not define (renamed or removed since?); `{}` cannot apply",
            inst.state, def.name, event.name
        ));
    };
    let tr = match choose(def, &inst, event, guards) {
        Ok(Some(tr)) => tr,
        Ok(None) if state.ignore.contains(&event.name) => return Outcome::Ignored,
        Ok(None) => {
            let what = event.error.as_ref().map_or_else(|| format!("event `{}`", event.name), |e| format!("error `{e}`"));
            return Outcome::Unmatched(format!("no transition from `{}` on {what}", inst.state));
        }
        Err(reason) => return Outcome::Unmatched(reason),
    };
    let mut actions = Vec::new();
    take(def, &mut inst, tr, event, &mut actions);
    Outcome::Transitioned { instance: inst, actions }
}

/// The first transition from the instance's state whose `on`/`on_error` and guard match.
///
/// # Errors
/// A guard that fails to evaluate, with why.
pub(super) fn choose<'d>(
    def: &'d Definition,
    inst: &Instance,
    event: &Event,
    guards: &mut Guards,
) -> Result<Option<&'d Transition>, String> {
    for t in &def.transitions {
        let tr = t.get_ref();
        let matches_event = match (&tr.on, &tr.on_error, &event.error) {
            (Some(on), _, None) => *on == event.name,
            (_, Some(code), Some(err)) => code == err,
            _ => false,
        };
        if !matches_event || !tr.from.states().contains(&inst.state.as_str()) {
            continue;
        }
        if let Some(when) = &tr.when {
            match guards.eval(when, inst, event) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Err(format!("guard `{when}` failed on `{}`: {e}", event.name)),
            }
        }
        return Ok(Some(tr));
    }
    Ok(None)
}

/// Takes `tr` from the instance's state: the step, the variables, the actions (the old state's
/// timers cancelled, the new state's set), the audit entry, the transition record. A run that
/// ends withdraws the human tasks it left open.
pub(super) fn take(def: &Definition, inst: &mut Instance, tr: &Transition, event: &Event, actions: &mut Vec<Action>) {
    let from = inst.state.clone();
    let leaving = def.states[&from].get_ref();
    let to = tr.to.as_ref().expect("validated: every transition has a target").get_ref().clone();
    inst.step += 1;
    // The answer of a task this run opened (or the news that it could not be opened) closes it.
    if let Some(answered) = runs::answered_task(inst, event) {
        inst.open_tasks.remove(&answered);
    }
    for (name, template) in &tr.set {
        let v = render(template, inst, event);
        inst.variables.insert(name.clone(), v);
    }
    if from != to {
        for t in &leaving.timers {
            actions.push(Action::CancelTimer { name: t.name.clone() });
        }
    }
    for (n, spec) in tr.actions.iter().enumerate() {
        let idempotency = format!("{}:{}:{}", inst.id, inst.step, n);
        if let ActionSpec::OpenTask { name, .. } = spec {
            inst.open_tasks.insert(idempotency.clone(), name.clone());
        }
        actions.push(action(def, spec, inst, event, &idempotency));
    }
    let target = def.states[&to].get_ref();
    if from != to {
        for t in &target.timers {
            let after = parse_duration(&t.after).expect("validated").as_millis() as i64;
            actions.push(Action::SetTimer { name: t.name.clone(), due: event.at + after, fire: t.fire.clone() });
        }
    }
    inst.state = to.clone();
    inst.finished = target.terminal;
    let mut note = None;
    if inst.finished {
        note = runs::withdraw_open_tasks(def, inst, &format!("run {} ended in `{to}`", inst.run), event.at, actions);
    }
    inst.history.push(HistoryEntry {
        from: from.clone(),
        to: to.clone(),
        event: event.label(),
        at: event.at,
        step: inst.step,
        run: inst.run,
        note,
    });
    if let Some(id) = &event.id {
        inst.remember(id.clone());
    }
    actions.push(Action::Emit {
        topic: def.channel("transitions"),
        value: json!({"instanceId": inst.id, "workflow": def.name, "from": from, "to": to, "event": event.name,
                      "step": inst.step, "run": inst.run, "final": inst.finished, "at": event.at}),
    });
}

fn action(def: &Definition, spec: &ActionSpec, inst: &Instance, event: &Event, idempotency: &str) -> Action {
    let fields =
        |m: &BTreeMap<String, Value>| -> Map<String, Value> { m.iter().map(|(k, v)| (k.clone(), render(v, inst, event))).collect() };
    let retry = |r: &Option<RetrySpec>| r.as_ref().map_or(Value::Null, |r| json!(r));
    let common = |mut v: Value, r: &Option<RetrySpec>| {
        v["instanceId"] = json!(inst.id);
        v["workflow"] = json!(def.name);
        v["idempotencyKey"] = json!(idempotency);
        v["retry"] = retry(r);
        v["run"] = json!(inst.run);
        v["at"] = json!(event.at);
        v
    };
    match spec {
        ActionSpec::Emit { topic, fields: f, retry: r } => {
            Action::Emit { topic: topic.clone(), value: common(Value::Object(fields(f)), r) }
        }
        ActionSpec::RequestDecision { decision, inputs, retry: r } => Action::Emit {
            topic: def.channel("decisions"),
            value: common(json!({"decisionKey": decision, "variables": fields(inputs)}), r),
        },
        ActionSpec::OpenTask { name, candidate_groups, assignee, retry: r } => Action::Emit {
            topic: def.channel("tasks"),
            value: common(
                json!({"name": name, "candidateGroups": candidate_groups, "assignee": assignee.as_ref().map(|a| render(&json!(a), inst, event))}),
                r,
            ),
        },
        ActionSpec::UpdateDocument { properties, aspects, version, retry: r } => Action::Emit {
            topic: def.channel("documents"),
            value: common(
                json!({"nodeId": inst.id, "properties": fields(properties), "aspects": aspects,
                       "version": version.as_ref().map(|v| render(&json!(v), inst, event))}),
                r,
            ),
        },
        ActionSpec::Notify { channel, recipient, subject, body, retry: r } => Action::Emit {
            topic: def.channel("notifications"),
            value: common(
                json!({"channel": channel, "recipient": render(&json!(recipient), inst, event), "subject": render(&json!(subject), inst, event), "body": render(&json!(body), inst, event)}),
                r,
            ),
        },
        ActionSpec::SetTimer { name, after, fire } => Action::SetTimer {
            name: name.clone(),
            due: event.at + parse_duration(after).expect("validated").as_millis() as i64,
            fire: fire.clone(),
        },
        ActionSpec::CancelTimer { name } => Action::CancelTimer { name: name.clone() },
    }
}

/// A template: `$key`, `$state`, `$step`, `$event.<path>`, `$vars.<name>`; else the literal.
fn render(template: &Value, inst: &Instance, event: &Event) -> Value {
    let Value::String(s) = template else { return template.clone() };
    let path = |root: &Value, p: &str| p.split('.').try_fold(root, |v, k| v.get(k)).cloned().unwrap_or(Value::Null);
    match s.as_str() {
        "$key" => json!(inst.id),
        "$state" => json!(inst.state),
        "$step" => json!(inst.step),
        _ if s.starts_with("$event.") => path(&event.payload, &s["$event.".len()..]),
        _ if s.starts_with("$vars.") => inst.variables.get(&s["$vars.".len()..]).cloned().unwrap_or(Value::Null),
        _ => template.clone(),
    }
}
