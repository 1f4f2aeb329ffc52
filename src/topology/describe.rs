//! `Topology::describe()`: one stable text form, read by people and pinned by snapshot tests.

use std::fmt::Write;

use super::{NodeKind, Topology};

pub(super) fn describe(t: &Topology) -> String {
    let nodes = t.nodes();
    let mut out = String::from("Topology:\n");
    for n in nodes {
        let _ = match &n.kind {
            NodeKind::Source { topics, key_serde, value_serde } => {
                writeln!(
                    out,
                    "  Source: {} (topics: [{}], key: {}, value: {})",
                    n.name,
                    topics.join(", "),
                    key_serde.name(),
                    value_serde.name()
                )
            }
            NodeKind::Processor { stores, .. } => writeln!(out, "  Processor: {} (stores: [{}])", n.name, stores.join(", ")),
            NodeKind::Sink { topic, key_serde, value_serde } => {
                writeln!(out, "  Sink: {} (topic: {topic}, key: {}, value: {})", n.name, key_serde.name(), value_serde.name())
            }
        };
        let children: Vec<&str> = n.children.iter().map(|&c| nodes[c].name.as_str()).collect();
        if !children.is_empty() {
            let _ = writeln!(out, "    --> {}", children.join(", "));
        }
        if !n.parents.is_empty() {
            let _ = writeln!(out, "    <-- {}", n.parents.join(", "));
        }
    }
    let _ = writeln!(out, "Stores:");
    for s in t.stores() {
        let _ = writeln!(out, "  {} (changelog: <application.id>-{}-changelog)", s.name, s.name);
    }
    let _ = writeln!(out, "  keyflow-timers (changelog: <application.id>-keyflow-timers-changelog)");
    out
}
