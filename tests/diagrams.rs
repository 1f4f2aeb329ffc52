//! `topology describe --format dot|mermaid|svg`: every state and every transition of both
//! reference workflows is in each picture, checked by structure (the SVG parsed as XML, the
//! DOT's edge statements), not by snapshot.

use std::collections::BTreeSet;
use std::path::Path;

use keyflow::workflow::diagram::{self, EdgeKind, Live};
use keyflow::workflow::{self, Definition};

fn load(name: &str) -> Definition {
    workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies").join(name)).unwrap()
}

const WORKFLOWS: [&str; 2] = ["document-approval.toml", "claim-processing.toml"];

/// (from, to) of every transition out of every one of its states, as the definition says.
fn defined_edges(def: &Definition) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for t in &def.transitions {
        let t = t.get_ref();
        for from in t.from.states() {
            out.insert((from.to_owned(), t.to.as_ref().map_or(from, |s| s.get_ref().as_str()).to_owned()));
        }
    }
    out
}

/// The texts an SVG draws, and its arrows.
fn svg_parts(svg: &str) -> (Vec<String>, usize) {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    let texts = doc.descendants().filter(|n| n.has_tag_name("tspan")).filter_map(|n| n.text()).map(str::to_owned).collect();
    // A back edge is laid out reversed, its head drawn at the start of the path.
    let arrows = doc
        .descendants()
        .filter(|n| n.has_tag_name("path") && (n.attribute("marker-end").is_some() || n.attribute("marker-start").is_some()))
        .count();
    (texts, arrows)
}

#[test]
fn the_svg_of_each_workflow_draws_every_state_and_every_transition() {
    for name in WORKFLOWS {
        let def = load(name);
        let edges = diagram::edges(&def);
        assert_eq!(edges.iter().map(|e| (e.from.clone(), e.to.clone())).collect::<BTreeSet<_>>(), defined_edges(&def), "{name}");
        let svg = diagram::svg(&diagram::workflow_dot(&def, None, true)).unwrap();
        let (texts, arrows) = svg_parts(&svg);
        for state in def.states.keys() {
            assert!(texts.iter().any(|t| t == state), "{name}: state `{state}` is not drawn");
        }
        for e in &edges {
            let label = e.short_label(true);
            assert!(texts.contains(&label), "{name}: transition `{}` -> `{}` ({label}) has no label", e.from, e.to);
        }
        assert_eq!(arrows, edges.len() + 1, "{name}: one arrow per transition and its source state, and the entry");
    }
}

#[test]
fn live_counts_and_rates_are_drawn_on_states_and_edges() {
    let def = load("document-approval.toml");
    let live = Live {
        counts: [("review".to_owned(), 12), ("approved".to_owned(), 40)].into(),
        rates: [(("deciding".to_owned(), "review".to_owned()), 2.5)].into(),
    };
    let (texts, _) = svg_parts(&diagram::svg(&diagram::workflow_dot(&def, Some(&live), true)).unwrap());
    assert!(texts.iter().any(|t| t == "12") && texts.iter().any(|t| t == "40"), "{texts:?}");
    assert!(texts.iter().any(|t| t.ends_with("· 2.5/min")), "{texts:?}");
}

#[test]
fn the_dot_has_an_edge_statement_per_transition_with_its_kind_and_the_terminal_states_filled() {
    for name in WORKFLOWS {
        let def = load(name);
        let dot = diagram::workflow_dot(&def, None, false);
        for e in diagram::edges(&def) {
            let stmt = dot
                .lines()
                .find(|l| {
                    l.trim_start().starts_with(&format!("\"{}\" -> \"{}\" [label=\"{}", e.from, e.to, e.label().replace('"', "\\\"")))
                })
                .unwrap_or_else(|| panic!("{name}: no edge statement for {e:?}"));
            match e.kind {
                EdgeKind::Timer => assert!(stmt.contains("style=dashed"), "{stmt}"),
                EdgeKind::Error => assert!(stmt.contains("color=\"#c62828\"") && e.event.starts_with("error: "), "{stmt}"),
                EdgeKind::Event => assert!(!stmt.contains("style=dashed") && !stmt.contains("#c62828"), "{stmt}"),
            }
        }
        for (state, s) in &def.states {
            let line = dot.lines().find(|l| l.trim_start().starts_with(&format!("\"{state}\" [label="))).unwrap();
            assert_eq!(line.contains("style=filled"), s.get_ref().terminal, "{line}");
        }
        assert!(dot.contains(&format!("start -> \"{}\";", def.initial.get_ref())));
    }
    // Both kinds that are not plain events occur in the reference workflow.
    let kinds: BTreeSet<_> = diagram::edges(&load("document-approval.toml")).iter().map(|e| format!("{:?}", e.kind)).collect();
    assert_eq!(kinds, BTreeSet::from(["Error".to_owned(), "Event".to_owned(), "Timer".to_owned()]));
}

#[test]
fn mermaid_names_every_state_and_transition_and_the_topology_every_node() {
    let def = load("document-approval.toml");
    let m = diagram::workflow_mermaid(&def);
    assert!(m.starts_with("stateDiagram-v2\n"));
    for state in def.states.keys() {
        assert!(m.contains(&format!("state \"{state}\" as ")), "{state}");
    }
    assert_eq!(m.lines().filter(|l| l.contains(" --> ") && l.contains(": ")).count(), diagram::edges(&def).len());

    let t = workflow::compile(load("document-approval.toml"), None).unwrap();
    let (texts, _) = svg_parts(&diagram::svg(&diagram::topology_dot(&t)).unwrap());
    for topic in ["alfresco.node-events", "document-approval.decision-requests", "instances", "instances-per-state"] {
        assert!(texts.iter().any(|x| x.contains(topic)), "{topic} not in {texts:?}");
    }
    let flow = diagram::topology_mermaid(&t);
    assert!(flow.starts_with("flowchart LR\n") && flow.contains("alfresco.node-events") && flow.contains("instances-per-state"));
}

/// The reference workflows' pages show their current diagrams.
#[test]
fn the_reference_workflows_pages_show_their_current_diagrams() {
    for name in WORKFLOWS {
        let stem = name.trim_end_matches(".toml");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
        let def = load(name);
        let page = std::fs::read_to_string(dir.join(format!("{stem}.md"))).unwrap();
        assert!(page.contains(&diagram::workflow_mermaid(&def)), "{stem}.md: regenerate its state diagram");
        let t = workflow::compile(load(name), None).unwrap();
        assert!(page.contains(&diagram::topology_mermaid(&t)), "{stem}.md: regenerate its topology diagram");
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        // The layout is the same each time; the order of its font classes is not (a hash map).
        let drawn = |svg: &str| {
            let (mut texts, arrows) = svg_parts(svg);
            texts.sort();
            (texts, arrows)
        };
        let current = diagram::svg(&diagram::workflow_dot(&def, None, true)).unwrap();
        assert!(drawn(&svg) == drawn(&current), "regenerate topologies/{stem}.svg");
    }
}
