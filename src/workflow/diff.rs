//! What changed between two definitions of a workflow, and what its instances in flight would
//! notice (`keyflow topology diff`, `keyflow topology validate --against`).
//!
//! Each change has an [`Impact`]: `Strands` when an instance in flight could be left unable to
//! go on (its state is gone, a transition it waits for is gone, a timer it holds would fire into
//! nothing), `Noticed` when instances in flight behave differently but can go on, `None` when
//! only new paths appear. A change that strands or is noticed must be deployed as a new version
//! (in-flight instances stay on theirs) or followed by a migration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::definition::{Definition, TimerSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impact {
    None,
    Noticed,
    Strands,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `state added`, `transition removed`, ...
    pub kind: &'static str,
    pub what: String,
    pub impact: Impact,
    /// Why instances in flight notice it.
    pub why: Option<String>,
}

/// The changes from `old` to `new`, states first, then transitions, timers and inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<Change>,
}

impl Diff {
    /// The worst impact of any change.
    pub fn impact(&self) -> Impact {
        self.changes.iter().map(|c| c.impact).max().unwrap_or(Impact::None)
    }

    /// Renamed states, old -> new (a suggested migration mapping).
    pub fn renames(&self) -> BTreeMap<String, String> {
        self.changes
            .iter()
            .filter(|c| c.kind == "state renamed")
            .filter_map(|c| c.what.split_once(" -> ").map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect()
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "no change");
        }
        for c in &self.changes {
            let mark = match c.impact {
                Impact::None => "  ",
                Impact::Noticed => "* ",
                Impact::Strands => "! ",
            };
            write!(f, "{mark}{}: {}", c.kind, c.what)?;
            match &c.why {
                Some(why) => writeln!(f, "\n    {why}")?,
                None => writeln!(f)?,
            }
        }
        writeln!(f, "(! strands instances in flight, * instances in flight notice it)")
    }
}

/// A transition's trigger as written: `on` or `error:<code>`, with its guard.
fn trigger(on: &Option<String>, on_error: &Option<String>, when: &Option<String>) -> String {
    let t = on.clone().unwrap_or_else(|| format!("error:{}", on_error.clone().unwrap_or_default()));
    when.as_ref().map_or(t.clone(), |w| format!("{t} [{w}]"))
}

/// (from state, trigger) -> (target, actions as text), one entry per source state.
fn transitions(def: &Definition) -> BTreeMap<(String, String), (String, String)> {
    let mut out = BTreeMap::new();
    for t in &def.transitions {
        let t = t.get_ref();
        let to = t.to.as_ref().map(|s| s.get_ref().clone()).unwrap_or_default();
        let body = format!("{:?} {:?}", t.set, t.actions);
        for from in t.from.states() {
            // The first transition that matches wins, as in the machine.
            out.entry((from.to_owned(), trigger(&t.on, &t.on_error, &t.when))).or_insert((to.clone(), body.clone()));
        }
    }
    out
}

/// What a state looks like with its own name hidden: its triggers out and in, whether it ends
/// the workflow, its timers. Two states with the same shape are one state renamed.
fn shape(def: &Definition, state: &str, all: &BTreeMap<(String, String), (String, String)>) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = all.iter().filter(|((from, _), _)| from == state).map(|((_, trig), _)| format!("out {trig}")).collect();
    s.extend(all.iter().filter(|(_, (to, _))| to == state).map(|((_, trig), _)| format!("in {trig}")));
    let st = def.states[state].get_ref();
    if st.terminal {
        s.insert("terminal".into());
    }
    s.extend(st.timers.iter().map(|t| format!("timer {} {}", t.name, t.fire)));
    s
}

/// The changes from `old` to `new`.
pub fn diff(old: &Definition, new: &Definition) -> Diff {
    let mut changes = Vec::new();
    let mut push = |kind, what: String, impact, why: Option<String>| changes.push(Change { kind, what, impact, why });
    let (old_t, new_t) = (transitions(old), transitions(new));
    let removed: Vec<&String> = old.states.keys().filter(|s| !new.states.contains_key(*s)).collect();
    let added: Vec<&String> = new.states.keys().filter(|s| !old.states.contains_key(*s)).collect();
    // Renames: a removed state and the added one most like it, if they share more than half of
    // their shape (a renamed state often gains or loses a transition in the same change).
    let mut renamed: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &removed {
        let rs = shape(old, r, &old_t);
        let best = added
            .iter()
            .filter(|a| !renamed.values().any(|v| v == *a))
            .map(|a| {
                let s = shape(new, a, &new_t);
                (s.intersection(&rs).count() as f64 / s.union(&rs).count() as f64, *a)
            })
            .max_by(|x, y| x.0.total_cmp(&y.0));
        if let Some((_, a)) = best.filter(|(similarity, _)| *similarity > 0.5) {
            renamed.insert(r, a);
        }
    }
    let strands_state =
        |s: &str| Some(format!("instances in `{s}` are stranded: deploy as a new version, or migrate them with a mapping for `{s}`"));
    for r in &removed {
        match renamed.get(r.as_str()) {
            Some(a) => push("state renamed", format!("{r} -> {a}"), Impact::Strands, strands_state(r)),
            None => push("state removed", (*r).clone(), Impact::Strands, strands_state(r)),
        }
    }
    for a in added.iter().filter(|a| !renamed.values().any(|v| v == *a)) {
        push("state added", (*a).clone(), Impact::None, None);
    }
    if old.initial.get_ref() != new.initial.get_ref() {
        push("initial state changed", format!("{} -> {}", old.initial.get_ref(), new.initial.get_ref()), Impact::None, None);
    }
    for (name, s) in new.states.iter().filter(|(n, _)| old.states.contains_key(*n)) {
        let (before, after) = (old.states[name].get_ref().terminal, s.get_ref().terminal);
        if before != after {
            let why = format!("instances in `{name}` {}", if after { "are finished by it" } else { "that finished there stay finished" });
            push("state terminal changed", format!("{name}: {before} -> {after}"), Impact::Noticed, Some(why));
        }
    }
    // New runs: what restarts a state's instances (a finished one's by its own version).
    for (name, s) in new.states.iter().filter(|(n, _)| old.states.contains_key(*n)) {
        let (before, after) = (&old.states[name].get_ref().restart_on, &s.get_ref().restart_on);
        for e in after.iter().filter(|e| !before.contains(e)) {
            let why = format!("instances in `{name}` now start a new run on `{e}`");
            push("restart added", format!("{name}: {e}"), Impact::Noticed, Some(why));
        }
        for e in before.iter().filter(|e| !after.contains(e)) {
            let why = format!("instances in `{name}` no longer start a new run on `{e}`");
            push("restart removed", format!("{name}: {e}"), Impact::Noticed, Some(why));
        }
    }
    // Transitions of the states both versions have (a renamed state's are compared under its new name).
    let rename = |s: &str| renamed.get(s).map_or(s.to_owned(), |n| (*n).to_owned());
    let old_t: BTreeMap<(String, String), (String, String)> =
        old_t.into_iter().map(|((from, trig), (to, body))| ((rename(&from), trig), (rename(&to), body))).collect();
    for ((from, trig), (to, body)) in &old_t {
        let what = format!("{from} --{trig}--> {to}");
        match new_t.get(&(from.clone(), trig.clone())) {
            None if new.states.contains_key(from) => {
                push("transition removed", what, Impact::Strands, Some(format!("instances waiting in `{from}` no longer move on `{trig}`")))
            }
            None => {}
            Some((to2, body2)) if to2 != to || body2 != body => push(
                "transition changed",
                format!("{what}{}", if to2 != to { format!(" now --> {to2}") } else { " (its actions or variables)".into() }),
                Impact::Noticed,
                Some(format!("instances in `{from}` that meet `{trig}` take the new path")),
            ),
            Some(_) => {}
        }
    }
    for ((from, trig), (to, _)) in &new_t {
        if !old_t.contains_key(&(from.clone(), trig.clone())) {
            let existing = old.states.contains_key(from) || renamed.values().any(|v| v == from);
            let why = existing.then(|| format!("instances in `{from}` now move on `{trig}`"));
            push("transition added", format!("{from} --{trig}--> {to}"), if existing { Impact::Noticed } else { Impact::None }, why);
        }
    }
    // Timers, by state; a timer an instance holds fires by the version it runs.
    let timers = |d: &Definition, s: &str| -> BTreeMap<String, TimerSpec> {
        d.states.get(s).map(|st| st.get_ref().timers.iter().map(|t| (t.name.clone(), t.clone())).collect()).unwrap_or_default()
    };
    for (old_name, _) in old.states.iter() {
        let name = rename(old_name);
        if !new.states.contains_key(&name) {
            continue;
        }
        let (before, after) = (timers(old, old_name), timers(new, &name));
        for (t, spec) in &before {
            match after.get(t) {
                None => push(
                    "timer removed",
                    format!("{name}: {t}"),
                    Impact::Strands,
                    Some(format!("instances in `{name}` hold `{t}`, which would fire `{}` into a version without it", spec.fire)),
                ),
                Some(s) if s != spec => push(
                    "timer changed",
                    format!("{name}: {t} after {} fires {} -> after {} fires {}", spec.after, spec.fire, s.after, s.fire),
                    Impact::Noticed,
                    Some(format!("instances already in `{name}` keep the due time they have")),
                ),
                Some(_) => {}
            }
        }
        for t in after.keys().filter(|t| !before.contains_key(*t)) {
            push("timer added", format!("{name}: {t}"), Impact::Noticed, Some(format!("instances already in `{name}` do not get it")));
        }
    }
    let topics = |d: &Definition| -> BTreeSet<String> { d.inputs.iter().map(|i| i.get_ref().topic.clone()).collect() };
    let (ot, nt) = (topics(old), topics(new));
    for t in ot.difference(&nt) {
        push("input removed", t.clone(), Impact::Strands, Some(format!("instances waiting for events from `{t}` no longer hear them")));
    }
    for t in nt.difference(&ot) {
        push("input added", t.clone(), Impact::None, None);
    }
    let filter = |d: &Definition, t: &str| d.inputs.iter().map(|i| i.get_ref()).find(|i| i.topic == t).and_then(|i| i.filter);
    for t in ot.intersection(&nt) {
        let (before, after) = (filter(old, t), filter(new, t));
        if before != after {
            let why = format!("instances hear {} of `{t}`", if after.is_some() { "fewer events" } else { "every event" });
            push("input filter changed", format!("{t}: {before:?} -> {after:?}"), Impact::Noticed, Some(why));
        }
    }
    Diff { changes }
}
