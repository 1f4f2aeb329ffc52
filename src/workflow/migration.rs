//! Moving instances to another version of their workflow (`keyflow workflow migrate`).
//!
//! A migration is a command per instance, produced to the partition of one of the workflow's
//! input topics that holds the instance's events, keyed by the instance and marked by the
//! [`crate::record::CONTROL_HEADER`] header. So it is applied by the task that owns the
//! instance, between two of its events, in the same transaction as its state: exactly once,
//! and in order with everything else the instance sees. Like an event, it is deterministic:
//!
//! ```text
//!   command seen before (its id)?           -> Duplicate
//!   instance finished, or not on the
//!   command's source version?               -> Ignored (a second run changes nothing)
//!   state mapped (or kept, if the target
//!   version has a state of that name)?  no  -> Unmatched (dead letter naming the state)
//!   cancel the old state's timers, and those the target version does not know; move the
//!   instance; set the new state's timers; record the migration in the history
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::definition::{parse_duration, Definition};
use super::machine::{Action, HistoryEntry, Instance, Outcome};

/// The value of a migration command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// Names this migration; with the instance, it makes the command's event id, so a command
    /// delivered twice applies once.
    pub migration: String,
    pub workflow: String,
    /// Only instances still on this version move (a command for an instance that was moved
    /// since is ignored).
    pub from_version: u32,
    pub to_version: u32,
    /// Source state -> target state. A state not named here keeps its name, if the target
    /// version has it.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// Only instances in one of these states move (any, if empty): an instance that left the
    /// chosen states between the plan and its command stays where it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    /// The application whose instances move: another application that runs the same workflow
    /// over the same input leaves the command alone. (A command written before keyflow named
    /// it moves any application's instance.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

/// The value of [`crate::record::CONTROL_HEADER`] on a migration command.
pub const CONTROL: &str = "migrate";

impl Migration {
    /// Where a state of the source version goes in the target version, if anywhere.
    pub fn target_of<'a>(&'a self, state: &'a str, to: &Definition) -> Option<&'a str> {
        match self.mapping.get(state) {
            Some(t) => to.states.contains_key(t).then_some(t.as_str()),
            None => to.states.contains_key(state).then_some(state),
        }
    }

    /// With the versions, so a name used again for another migration is not taken for this one.
    fn event_id(&self) -> String {
        format!("migration:{}:v{}->v{}", self.migration, self.from_version, self.to_version)
    }
}

/// Why `m` leaves `inst` as it is, if it does: seen before, finished, on another version than
/// the command's source, or no longer in the chosen states.
pub fn skip(inst: &Instance, m: &Migration) -> Option<&'static str> {
    if inst.recent_events.contains(&m.event_id()) {
        Some(APPLIED_BEFORE)
    } else if inst.finished {
        Some("the instance finished")
    } else if inst.version != m.from_version || inst.version == m.to_version {
        Some("the instance is on another version")
    } else if !m.states.is_empty() && !m.states.contains(&inst.state) {
        Some("the instance left the chosen states")
    } else {
        None
    }
}

const APPLIED_BEFORE: &str = "applied before";

/// Applies a migration command to `inst`, which runs by `from`, at `at` (the command's time).
pub fn apply(from: &Definition, to: &Definition, inst: &Instance, m: &Migration, at: i64) -> Outcome {
    let id = m.event_id();
    match skip(inst, m) {
        Some(APPLIED_BEFORE) => return Outcome::Duplicate,
        Some(_) => return Outcome::Ignored,
        None => {}
    }
    let Some(target) = m.target_of(&inst.state, to) else {
        return Outcome::Unmatched(format!(
            "migration `{}` cannot move instance `{}`: its state `{}` has no place in version {} of `{}` (map it with --map {}=<state>)",
            m.migration, inst.id, inst.state, to.version, to.name, inst.state
        ));
    };
    let mut next = inst.clone();
    let mut actions = Vec::new();
    let old_state = from.states.get(&inst.state).map(|s| s.get_ref());
    let target_state = to.states[target].get_ref();
    let known_to_target = to.timers();
    // The old state's timers go (the new state sets its own), and so does any timer the target
    // version would not know what to do with when it fires, or every timer if it ends there.
    for name in old_state.iter().flat_map(|s| s.timers.iter().map(|t| t.name.as_str())).chain(from.timers().into_keys()) {
        let cancel = Action::CancelTimer { name: name.to_owned() };
        let keep = !target_state.terminal
            && known_to_target.contains_key(name)
            && old_state.is_none_or(|s| s.timers.iter().all(|t| t.name != name));
        if !keep && !actions.contains(&cancel) {
            actions.push(cancel);
        }
    }
    // The new state's timers count from when the instance entered the state it is moved from,
    // as if it had been in the new state all along: a review 47 h old meets a 24 h escalation
    // at once, not 24 h later.
    let entered = entered_state(inst).unwrap_or(at);
    for t in target_state.timers.iter().filter(|_| !target_state.terminal) {
        let after = parse_duration(&t.after).expect("validated").as_millis() as i64;
        actions.push(Action::SetTimer { name: t.name.clone(), due: entered + after, fire: t.fire.clone() });
    }
    next.version = to.version;
    next.state = target.to_owned();
    next.finished = target_state.terminal;
    next.step += 1;
    let event = format!("migration:v{}->v{}", from.version, to.version);
    // A migration that ends the run ends its open tasks too.
    let note = if next.finished {
        let reason = format!("run {} ended in `{target}` by migration `{}`", next.run, m.migration);
        // On the source version's tasks channel: its connectors opened them.
        super::runs::withdraw_open_tasks(from, &mut next, &reason, at, &mut actions)
    } else {
        None
    };
    next.history.push(HistoryEntry {
        from: inst.state.clone(),
        to: target.to_owned(),
        event: event.clone(),
        at,
        step: next.step,
        run: next.run,
        note,
    });
    next.remember(id);
    actions.push(Action::Emit {
        topic: to.channel("transitions"),
        value: json!({"instanceId": next.id, "workflow": to.name, "from": inst.state, "to": target, "event": event,
                      "step": next.step, "run": next.run, "final": next.finished, "at": at, "fromVersion": from.version, "toVersion": to.version}),
    });
    Outcome::Transitioned { instance: next, actions }
}

/// When `inst` entered the state it is in: its last transition into it that was not a
/// self-loop (those keep the state's timers), followed back through earlier migrations (which
/// moved it, not entered it).
fn entered_state(inst: &Instance) -> Option<i64> {
    let mut state = inst.state.as_str();
    for h in inst.history.iter().rev() {
        if h.to != state || h.from == h.to {
            continue;
        }
        if !h.event.starts_with("migration:") {
            return Some(h.at);
        }
        state = &h.from;
    }
    None
}

/// Which instances a migration moves: unfinished ones of the workflow, on `from_version` (every
/// version but the target if `None`), in one of `states` (any if empty), with one of `ids` (any
/// if empty).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub from_version: Option<u32>,
    pub states: Vec<String>,
    pub ids: Vec<String>,
}

/// What a migration will do: per (version, state) the target state and how many instances, and
/// the command of each, with the partition its instance lives in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub moves: BTreeMap<(u32, String), (String, usize)>,
    pub commands: Vec<(i32, String, Migration)>,
}

/// Plans moving the selected `instances` (with the partition each is stored in) to version `to`
/// with `mapping`.
///
/// # Errors
/// An unknown version, or an incomplete mapping: a state of a source version, unfinished
/// instances could be in when their command arrives, with no place in the target (listed), or a
/// mapping to a state the target lacks.
pub fn plan(
    versions: &super::Versions,
    instances: &[(i32, Instance)],
    select: &Selection,
    to: u32,
    mapping: &BTreeMap<String, String>,
    migration: &str,
) -> Result<Plan, String> {
    let target = versions.get(to).ok_or_else(|| format!("version {to} of `{}` is not among {:?}", versions.name(), versions.numbers()))?;
    if let Some((from, bad)) = mapping.iter().find(|(_, t)| !target.states.contains_key(*t)) {
        return Err(format!("--map {from}={bad}: version {to} has no state `{bad}`"));
    }
    let chosen: Vec<&(i32, Instance)> = instances
        .iter()
        .filter(|(_, i)| i.workflow == versions.name() && !i.finished && i.version != to)
        .filter(|(_, i)| select.from_version.is_none_or(|v| i.version == v))
        .filter(|(_, i)| select.states.is_empty() || select.states.contains(&i.state))
        .filter(|(_, i)| select.ids.is_empty() || select.ids.contains(&i.id))
        .collect();
    // Complete over every state an instance of a source version could be in when its command
    // arrives (it may move between this plan and then), not only the states seen now.
    // ... and over the states instances are in that their version does not define (a file
    // edited in place).
    let probe = |v: u32| Migration {
        migration: String::new(),
        workflow: String::new(),
        from_version: v,
        to_version: to,
        mapping: mapping.clone(),
        states: Vec::new(),
        application: None,
    };
    let mut missing = BTreeSet::new();
    let mut source_states = BTreeSet::new();
    for v in chosen.iter().map(|(_, i)| i.version).collect::<BTreeSet<u32>>() {
        let Some(from) = versions.get(v) else {
            return Err(format!("instances are on version {v}, which is not among the definitions given ({:?})", versions.numbers()));
        };
        // With `--state`, only the chosen states (a command leaves an instance that moved on).
        let chosen_states = from.states.iter().filter(|(name, _)| select.states.is_empty() || select.states.contains(name));
        for (name, s) in chosen_states {
            source_states.insert(name.as_str());
            if !s.get_ref().terminal && probe(v).target_of(name, target).is_none() {
                missing.insert(format!("version {v} state `{name}`"));
            }
        }
    }
    for (_, i) in &chosen {
        source_states.insert(i.state.as_str());
        if probe(i.version).target_of(&i.state, target).is_none() {
            missing.insert(format!("version {} state `{}`", i.version, i.state));
        }
    }
    if let Some(typo) = mapping.keys().find(|k| !chosen.is_empty() && !source_states.contains(k.as_str())) {
        return Err(format!("--map {typo}=...: the instances chosen have no state `{typo}` in their versions"));
    }
    if !missing.is_empty() {
        return Err(format!(
            "the mapping is incomplete: no place in version {to} for {} (add --map <old>=<new> for each)",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut p = Plan::default();
    for (partition, i) in chosen {
        let m = Migration {
            migration: migration.to_owned(),
            workflow: i.workflow.clone(),
            from_version: i.version,
            to_version: to,
            mapping: mapping.clone(),
            states: select.states.clone(),
            application: None,
        };
        let Some(t) = m.target_of(&i.state, target).map(str::to_owned) else {
            return Err(format!("instance `{}` in `{}` has no place in version {to}", i.id, i.state));
        };
        p.moves.entry((i.version, i.state.clone())).or_insert((t, 0)).1 += 1;
        p.commands.push((*partition, i.id.clone(), m));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: &str, to: &str, event: &str, at: i64) -> HistoryEntry {
        HistoryEntry { from: from.into(), to: to.into(), event: event.into(), at, step: 0, run: 1, note: None }
    }

    #[test]
    fn a_state_is_entered_by_its_last_real_transition_through_self_loops_and_migrations() {
        let inst = Instance {
            state: "in-review".into(),
            history: vec![
                entry("new", "review", "decision.made", 1),
                entry("review", "review", "comment", 5),
                entry("review", "in-review", "migration:v1->v2", 9),
                entry("in-review", "in-review", "comment", 12),
            ],
            ..Instance::default()
        };
        assert_eq!(entered_state(&inst), Some(1));
        assert_eq!(entered_state(&Instance { state: "new".into(), ..Instance::default() }), None);
    }
}
