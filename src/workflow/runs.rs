//! Runs of an instance: an event of a state's `restart_on` starts the instance again from the
//! initial state, as run N+1 of the same instance (one key, one audit trail), on the newest
//! version of the workflow.
//!
//! ```text
//!   run 1: new ──> scanning ──> ... ──> review ─┐ restart_on (in flight): run 1 superseded,
//!                                               │ its tasks withdrawn, its timers cancelled
//!   run 2: new ──> scanning ──> ... ──> approved ┘<┐
//!   run 3: new ──> scanning ──> ...               └ restart_on (terminal): a finished
//!                                                   instance starts again
//! ```
//!
//! Steps count on across runs, so the idempotency keys of two runs (`<instance>:<step>:<n>`)
//! never meet, and an answer names the command it answers by its key: as `idempotencyKey`, or
//! as its id (`<key>` or `<key>:<suffix>`, as keyflow's connectors answer). An answer to a
//! command of a step before the run started is a late answer of an earlier run: recorded in the
//! audit trail, applied to nothing. Commands also carry `run`, for people and services to read.
//! A new run keeps the instance's variables; its transitions `set` what they need afresh.

use serde_json::{json, Value};

use super::definition::Definition;
use super::machine::{choose, take, Action, Event, Guards, HistoryEntry, Instance, Outcome};

/// The idempotency key of the command `event` answers, if it names one of `inst`'s, and the
/// key past `<instance>:` (`<step>:...`).
fn answered_key<'e>(inst: &Instance, event: &'e Event) -> Option<(&'e str, &'e str)> {
    let key = event.payload.get("idempotencyKey").and_then(Value::as_str).or(event.id.as_deref())?;
    Some((key, key.strip_prefix(inst.id.as_str())?.strip_prefix(':')?))
}

/// When `event` answers a command of an earlier run of `inst`: which run it says it was, if it
/// says (`run`).
pub(super) fn earlier_run(inst: &Instance, event: &Event) -> Option<Option<u64>> {
    let (_, rest) = answered_key(inst, event)?;
    let step: u64 = rest.split(':').next()?.parse().ok()?;
    (step < inst.run_started_step).then(|| event.payload.get("run").and_then(Value::as_u64))
}

/// The open task of `inst` that `event` answers (its completion, or its failure to open).
pub(super) fn answered_task(inst: &Instance, event: &Event) -> Option<String> {
    let (key, _) = answered_key(inst, event)?;
    inst.open_tasks.keys().find(|k| key == k.as_str() || key.strip_prefix(k.as_str()).is_some_and(|r| r.starts_with(':'))).cloned()
}

/// The audit entry of an event that moved `inst` nowhere, with what happened.
fn stayed(inst: &Instance, event: &Event, note: String) -> HistoryEntry {
    HistoryEntry {
        from: inst.state.clone(),
        to: inst.state.clone(),
        event: event.label(),
        at: event.at,
        step: inst.step,
        run: inst.run,
        note: Some(note),
    }
}

/// A late answer of an earlier run: kept in the audit trail, applied to nothing.
pub(super) fn late_answer(mut inst: Instance, event: &Event, run: Option<u64>) -> Outcome {
    let which = run.map_or_else(|| "an earlier run".to_owned(), |r| format!("run {r}"));
    let note = format!("a late answer of {which}, ignored: the instance is on run {}", inst.run);
    let entry = stayed(&inst, event, note);
    inst.history.push(entry);
    if let Some(id) = &event.id {
        inst.remember(id.clone());
    }
    Outcome::Noted { instance: inst }
}

/// Starts run N+1 with `event` on `newest`, if a transition from its initial state takes it
/// (else `None`: the event is handled as any other). A run still in flight (by `own`) is
/// superseded first.
pub(super) fn restart(own: &Definition, newest: &Definition, inst: &Instance, event: &Event, guards: &mut Guards) -> Option<Outcome> {
    let mut next = inst.clone();
    next.run = inst.run + 1;
    next.run_started_step = inst.step + 1;
    next.state = newest.initial.get_ref().clone();
    next.version = newest.version;
    next.finished = false;
    next.open_tasks.clear();
    let tr = match choose(newest, &next, event, guards) {
        Ok(Some(tr)) => tr,
        Ok(None) => return None,
        Err(reason) => return Some(Outcome::Unmatched(reason)),
    };
    let mut actions = Vec::new();
    if !inst.finished {
        let reason = format!("run {} superseded by run {} (`{}`)", inst.run, next.run, event.name);
        let withdrew = withdraw_open_tasks(own, &mut inst.clone(), &reason, event.at, &mut actions);
        let note = format!("superseded by run {}{}", next.run, withdrew.map(|w| format!("; {w}")).unwrap_or_default());
        next.history.push(stayed(inst, event, note));
        actions.push(Action::Emit {
            topic: own.channel("transitions"),
            value: json!({"instanceId": inst.id, "workflow": own.name, "from": inst.state, "to": inst.state, "event": event.name,
                          "step": inst.step, "run": inst.run, "final": false, "superseded": true, "at": event.at}),
        });
    }
    // Every timer the old run may have set, not only its state's (a `set_timer` action's outlives
    // the state, and an end state cancels none): none of them is the new run's.
    actions.extend(own.timers().into_keys().map(|name| Action::CancelTimer { name: name.to_owned() }));
    if let Some(id) = &event.id {
        next.run_events.push(id.clone());
    }
    take(newest, &mut next, tr, event, &mut actions);
    Some(Outcome::Transitioned { instance: next, actions })
}

/// Withdraws the human tasks `inst`'s run left open, if any, with the command that names them
/// by their idempotency keys (so the connectors find them in Camunda or on the embedded task
/// topic); returns the note for the audit trail.
pub(super) fn withdraw_open_tasks(
    def: &Definition,
    inst: &mut Instance,
    reason: &str,
    at: i64,
    actions: &mut Vec<Action>,
) -> Option<String> {
    if inst.open_tasks.is_empty() {
        return None;
    }
    let tasks: Vec<Value> = inst.open_tasks.iter().map(|(key, name)| json!({"idempotencyKey": key, "name": name})).collect();
    actions.push(Action::Emit {
        topic: def.channel("tasks"),
        value: json!({"command": "withdraw", "tasks": tasks, "reason": reason, "instanceId": inst.id, "workflow": def.name,
                      "idempotencyKey": format!("{}:{}:withdraw", inst.id, inst.step), "run": inst.run, "retry": Value::Null, "at": at}),
    });
    let note = format!("withdrew {} open task(s): {reason}", inst.open_tasks.len());
    inst.open_tasks.clear();
    Some(note)
}
