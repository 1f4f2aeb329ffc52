//! Pictures of a workflow: its states and transitions, and the topology it compiles to, as
//! Graphviz DOT, Mermaid, or SVG laid out in-process (the `layout-rs` crate renders the DOT; the
//! user installs nothing).
//!
//! A transition is drawn once per source state and labelled `event [guard] / actions`; timer
//! transitions (the event a timer fires) are dashed, error transitions (`on_error`) red, terminal
//! states filled, and the initial state is entered from a `start` point. The console draws the
//! same picture with live figures: each state's instance count and each edge's recent rate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::definition::{ActionSpec, Definition, Transition};
use crate::topology::{NodeKind, Topology};

/// What a picture is drawn as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The text form of `topology describe`.
    Text,
    Dot,
    Mermaid,
    Svg,
}

/// Live figures drawn on a workflow: instances per state, transitions per minute per edge.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub counts: BTreeMap<String, i64>,
    /// (from, to) -> transitions per minute.
    pub rates: BTreeMap<(String, String), f64>,
}

/// How a transition is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    Event,
    Timer,
    Error,
}

/// One drawn edge: a transition out of one of its source states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The event (`timer: ` before a timer's, `error: ` before an error code).
    pub event: String,
    /// The guard, whole.
    pub guard: Option<String>,
    /// `emit, decide …`, or empty.
    pub actions: String,
    pub kind: EdgeKind,
}

impl Edge {
    /// `event [guard]`, the guard shortened.
    pub fn label(&self) -> String {
        format!("{}{}", self.event, self.guard.as_ref().map(|g| format!(" [{}]", shorten(g, 28))).unwrap_or_default())
    }

    /// What the in-process layout can place without spreading the picture: the event's last two
    /// name segments (`node.Created` of `org.alfresco.event.node.Created`), the guard cut short.
    pub fn short_label(&self, with_guard: bool) -> String {
        let segments: Vec<&str> = self.event.split('.').collect();
        let event = if segments.len() > 2 { segments[segments.len() - 2..].join(".") } else { self.event.clone() };
        match (&self.guard, with_guard) {
            (Some(g), true) => format!("{event} [{}]", shorten(g, 16)),
            _ => event,
        }
    }
}

/// The initial state's entry point.
const START: &str = "start";

/// Every edge of a definition, in definition order.
pub fn edges(def: &Definition) -> Vec<Edge> {
    let timer_events: BTreeSet<&str> = def.timers().into_values().collect();
    let mut out = Vec::new();
    for t in &def.transitions {
        let t = t.get_ref();
        let (event, kind) = match (&t.on, &t.on_error) {
            (Some(on), _) if timer_events.contains(on.as_str()) => (format!("timer: {on}"), EdgeKind::Timer),
            (Some(on), _) => (on.clone(), EdgeKind::Event),
            (None, Some(code)) => (format!("error: {code}"), EdgeKind::Error),
            (None, None) => ("?".to_owned(), EdgeKind::Event),
        };
        let guard = t.when.as_ref().map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "));
        let actions = actions(t);
        for from in t.from.states() {
            // A transition without `to` stays in its state.
            let to = t.to.as_ref().map_or(from, |s| s.get_ref().as_str());
            out.push(Edge {
                from: from.to_owned(),
                to: to.to_owned(),
                event: event.clone(),
                guard: guard.clone(),
                actions: actions.clone(),
                kind,
            });
        }
    }
    out
}

fn actions(t: &Transition) -> String {
    if t.actions.is_empty() {
        return String::new();
    }
    let names: Vec<String> = t
        .actions
        .iter()
        .map(|a| match a {
            ActionSpec::Emit { .. } => "emit".to_owned(),
            ActionSpec::RequestDecision { decision, .. } => format!("decide {decision}"),
            ActionSpec::OpenTask { .. } => "task".to_owned(),
            ActionSpec::UpdateDocument { .. } => "update".to_owned(),
            ActionSpec::Notify { channel, .. } => format!("notify {channel}"),
            ActionSpec::SetTimer { name, after, .. } => format!("timer {name} {after}"),
            ActionSpec::CancelTimer { name } => format!("cancel {name}"),
        })
        .collect();
    names.join(", ")
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max - 1).collect::<String>() + "…"
    }
}

/// Text for one field of a record label, where `{ } | < >` are structure: shown as lookalikes.
fn field(s: &str) -> String {
    s.replace('{', "(").replace('}', ")").replace('|', "¦").replace('<', "‹").replace('>', "›")
}

/// A DOT string literal.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// The workflow as DOT, with `live` figures if given. `compact` labels edges for the in-process
/// layout, which places a label as wide as it is, so long ones spread the picture too far to
/// read (Graphviz itself copes): a short event and guard, or with `live` the event and its rate.
pub fn workflow_dot(def: &Definition, live: Option<&Live>, compact: bool) -> String {
    // Top to bottom: the in-process layout gives each edge label a rank of its own, and left to
    // right those ranks add up to a picture several screens wide.
    let mut out = format!("digraph {} {{\n  rankdir=TB;\n  node [shape=Mrecord];\n", q(&def.name));
    let _ = writeln!(out, "  {START} [shape=circle, label=\"\", style=filled, fillcolor=black, width=1];");
    for (name, s) in &def.states {
        let s = s.get_ref();
        let mut label = field(name);
        if let Some(n) = live.and_then(|l| l.counts.get(name)) {
            let _ = write!(label, "|{n}");
        }
        let timers: Vec<String> = s.timers.iter().map(|t| field(&format!("timer {} {}", t.name, t.after))).collect();
        if !timers.is_empty() {
            let _ = write!(label, "|{}", timers.join(" "));
        }
        let fill = if s.terminal { ", style=filled, fillcolor=\"#dfe9f5\", penwidth=2" } else { "" };
        let _ = writeln!(out, "  {} [label={}{fill}];", q(name), q(&format!("{{{label}}}")));
    }
    let _ = writeln!(out, "  {START} -> {};", q(def.initial.get_ref()));
    for e in edges(def) {
        let mut label = match (compact, e.actions.is_empty()) {
            (true, _) => e.short_label(live.is_none()),
            (false, true) => e.label(),
            (false, false) => format!("{} / {}", e.label(), e.actions),
        };
        if let Some(rate) = live.and_then(|l| l.rates.get(&(e.from.clone(), e.to.clone()))) {
            let _ = write!(label, " · {rate:.1}/min");
        }
        let style = match e.kind {
            EdgeKind::Event => "",
            EdgeKind::Timer => ", style=dashed, color=\"#8a5a00\"",
            EdgeKind::Error => ", color=\"#c62828\"",
        };
        let _ = writeln!(out, "  {} -> {} [label={}{style}];", q(&e.from), q(&e.to), q(&label));
    }
    out.push_str("}\n");
    out
}

/// The workflow as a Mermaid state diagram.
pub fn workflow_mermaid(def: &Definition) -> String {
    // Mermaid state ids cannot hold every character a state name may; ids are indexes, names
    // are their descriptions.
    let ids: BTreeMap<&str, String> = def.states.keys().enumerate().map(|(i, n)| (n.as_str(), format!("s{i}"))).collect();
    let id = |name: &str| ids.get(name).cloned().unwrap_or_else(|| format!("\"{name}\""));
    let mut out = String::from("stateDiagram-v2\n  direction LR\n");
    for (name, s) in &def.states {
        let _ = writeln!(out, "  state \"{}\" as {}", mermaid_text(name), id(name));
        if s.get_ref().terminal {
            let _ = writeln!(out, "  {} --> [*]", id(name));
        }
    }
    let _ = writeln!(out, "  [*] --> {}", id(def.initial.get_ref()));
    for e in edges(def) {
        let actions = if e.actions.is_empty() { String::new() } else { format!(" / {}", e.actions) };
        let _ = writeln!(out, "  {} --> {}: {}{}", id(&e.from), id(&e.to), mermaid_text(&e.label()), mermaid_text(&actions));
    }
    // State diagrams take no per-link style: the `timer:` and `error:` prefixes of the labels say it.
    out
}

/// Mermaid label text: no `:` (it ends a label), no `;` or `#` (they start other syntax).
fn mermaid_text(s: &str) -> String {
    s.replace(':', "∶").replace(';', ",").replace('#', "＃").replace('"', "'")
}

/// The compiled topology as DOT: sources, processors with their stores and changelogs, sinks.
pub fn topology_dot(t: &Topology) -> String {
    let mut out = String::from("digraph topology {\n  rankdir=LR;\n");
    for n in t.nodes() {
        let (shape, label) = match &n.kind {
            NodeKind::Source { topics, .. } => ("record", format!("source|{}", topics.join(", "))),
            NodeKind::Processor { .. } => ("Mrecord", n.name.clone()),
            NodeKind::Sink { topic, .. } => ("record", format!("sink|{topic}")),
        };
        let _ = writeln!(out, "  {} [shape={shape}, label={}];", q(&n.name), q(&format!("{{{label}}}")));
        for &c in &n.children {
            let _ = writeln!(out, "  {} -> {};", q(&n.name), q(&t.nodes()[c].name));
        }
        if let NodeKind::Processor { stores, .. } = &n.kind {
            for s in stores {
                let id = format!("store:{s}");
                let label = format!("{{{s}|changelog <application.id>-{s}-changelog}}");
                let _ = writeln!(out, "  {} [shape=record, style=filled, fillcolor=\"#f3f0e6\", label={}];", q(&id), q(&label));
                let _ = writeln!(out, "  {} -> {} [style=dashed];", q(&n.name), q(&id));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// The compiled topology as a Mermaid flowchart.
pub fn topology_mermaid(t: &Topology) -> String {
    // Quoted flowchart labels take any text but a double quote.
    let text = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    let id = |i: usize| format!("n{i}");
    for (i, n) in t.nodes().iter().enumerate() {
        let _ = match &n.kind {
            NodeKind::Source { topics, .. } => writeln!(out, "  {}[/\"source<br/>{}\"/]", id(i), text(&topics.join(", "))),
            NodeKind::Processor { .. } => writeln!(out, "  {}(\"{}\")", id(i), text(&n.name)),
            NodeKind::Sink { topic, .. } => writeln!(out, "  {}[\\\"sink<br/>{}\"\\]", id(i), text(topic)),
        };
        for &c in &n.children {
            let _ = writeln!(out, "  {} --> {}", id(i), id(c));
        }
        if let NodeKind::Processor { stores, .. } = &n.kind {
            for (k, s) in stores.iter().enumerate() {
                let _ = writeln!(out, "  {}_{k}[(\"{}\")]\n  {} -.- {}_{k}", id(i), text(s), id(i), id(i));
            }
        }
    }
    out
}

/// SVG for a DOT graph this module wrote, laid out in-process.
///
/// # Errors
/// The DOT does not parse (a bug here, not the user's).
pub fn svg(dot: &str) -> Result<String, String> {
    use layout::backends::svg::SVGWriter;
    use layout::gv::{DotParser, GraphBuilder};
    let graph = DotParser::new(dot).process()?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_with_record_syntax_are_drawn_not_parsed() {
        let text = r#"
name = "odd"
key = "record.key"
initial = "a|b"
[[inputs]]
topic = "in"
event = "go"
[states."a|b"]
[states."{done}"]
terminal = true
[[transitions]]
from = "a|b"
on = "go"
to = "{done}"
"#;
        let def = Definition::parse(text, "odd.toml").unwrap();
        let svg = svg(&workflow_dot(&def, None, true)).unwrap();
        assert!(svg.contains(">a¦b<") && svg.contains(">(done)<"), "{svg}");
    }
}
