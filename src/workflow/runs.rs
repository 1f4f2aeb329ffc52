//! Runs of an instance: an event of a state's `restart_on` starts the instance again from the
//! initial state, as run N+1 of the same instance (one key, one audit trail).
//!
//! ```text
//!   run 1: new ──> scanning ──> ... ──> review ─┐ restart_on (in flight): run 1 superseded,
//!                                               │ its tasks withdrawn, its timers cancelled
//!   run 2: new ──> scanning ──> ... ──> approved ┘<┐
//!   run 3: new ──> scanning ──> ...               └ restart_on (terminal): a finished
//!                                                   instance starts again
//! ```
//!
//! Every command carries its run (`run`), and keyflow's connectors answer with it: an answer
//! naming an earlier run is recorded in the audit trail and never applied. Steps count on across
//! runs, so the idempotency keys of two runs never meet.

use serde_json::{json, Value};

use super::definition::Definition;
use super::machine::{choose, take, Action, Event, Guards, HistoryEntry, Instance, Outcome};

/// The run an event answers, when it is an answer to a command (commands carry `run`, and the
/// connectors and well-behaved services echo it).
pub(super) fn answered_run(event: &Event) -> Option<u32> {
    event.payload.get("run").and_then(Value::as_u64).and_then(|r| u32::try_from(r).ok())
}

/// A late answer of run `run`: kept in the audit trail, applied to nothing.
pub(super) fn late_answer(mut inst: Instance, event: &Event, run: u32) -> Outcome {
    inst.history.push(HistoryEntry {
        from: inst.state.clone(),
        to: inst.state.clone(),
        event: event.error.clone().map_or(event.name.clone(), |e| format!("error:{e}")),
        at: event.at,
        step: inst.step,
        run: inst.run,
        note: Some(format!("a late answer of run {run}, ignored: the instance is on run {}", inst.run)),
    });
    if let Some(id) = &event.id {
        inst.remember(id.clone());
    }
    Outcome::Noted { instance: inst }
}

/// Starts run N+1 with `event`, if a transition from the initial state takes it (else `None`:
/// the event is handled as any other). A run still in flight is superseded first.
pub(super) fn restart(def: &Definition, inst: &Instance, event: &Event, guards: &mut Guards) -> Option<Outcome> {
    let mut next = inst.clone();
    next.run = inst.run + 1;
    next.state = def.initial.get_ref().clone();
    next.version = def.version;
    next.finished = false;
    next.open_tasks.clear();
    let tr = match choose(def, &next, event, guards) {
        Ok(Some(tr)) => tr,
        Ok(None) => return None,
        Err(reason) => return Some(Outcome::Unmatched(reason)),
    };
    let mut actions = Vec::new();
    if !inst.finished {
        let reason = format!("run {} superseded by run {} (`{}`)", inst.run, next.run, event.name);
        let mut note = format!("superseded by run {}", next.run);
        if !inst.open_tasks.is_empty() {
            note = format!("{note}; withdrew {} open task(s)", inst.open_tasks.len());
            actions.push(withdraw(def, inst, &reason, event));
        }
        // Every timer the run may have set, not only its state's: none of them is run 2's.
        actions.extend(def.timers().into_keys().map(|name| Action::CancelTimer { name: name.to_owned() }));
        next.history.push(HistoryEntry {
            from: inst.state.clone(),
            to: inst.state.clone(),
            event: event.name.clone(),
            at: event.at,
            step: inst.step,
            run: inst.run,
            note: Some(note),
        });
        actions.push(Action::Emit {
            topic: def.channel("transitions"),
            value: json!({"instanceId": inst.id, "workflow": def.name, "from": inst.state, "to": inst.state, "event": event.name,
                          "step": inst.step, "run": inst.run, "final": true, "superseded": true, "at": event.at}),
        });
    }
    take(def, &mut next, tr, event, &mut actions);
    Some(Outcome::Transitioned { instance: next, actions })
}

/// The command withdrawing the human tasks `inst`'s run left open (they are named by their
/// idempotency keys, so the connectors find them in Camunda or on the embedded task topic).
pub(super) fn withdraw(def: &Definition, inst: &Instance, reason: &str, event: &Event) -> Action {
    let tasks: Vec<Value> = inst.open_tasks.iter().map(|(key, name)| json!({"idempotencyKey": key, "name": name})).collect();
    Action::Emit {
        topic: def.channel("tasks"),
        value: json!({"command": "withdraw", "tasks": tasks, "reason": reason, "instanceId": inst.id, "workflow": def.name,
                      "idempotencyKey": format!("{}:{}:withdraw", inst.id, inst.step), "run": inst.run, "retry": Value::Null, "at": event.at}),
    }
}
