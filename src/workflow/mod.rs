//! Workflows: definitions in `topologies/*.toml`, compiled into keyed topologies whose processor
//! runs a deterministic state machine per instance (the record key).

pub mod definition;
pub mod diagram;
pub mod machine;
pub mod processor;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

pub use definition::{Definition, Error};
pub use machine::{apply, Action, Event, Instance, Outcome};
pub use processor::{count_key, parse_count_key, COUNTS, STORE};

use crate::serde::{AvroSerde, Registry, Serde, SubjectStrategy};
use crate::state::StoreSpec;
use crate::topology::{Topology, TopologyBuilder};
use definition::{ActionSpec, Format};
use processor::{sink_name, WorkflowProcessor};

/// Reads and validates a definition file.
///
/// # Errors
/// [`Error`] with the file, the line and the problem.
pub fn load(path: &Path) -> Result<Definition, Error> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error { file: file.clone(), line: 0, message: e.to_string() })?;
    let mut def = Definition::parse(&text, &file)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for input in &mut def.inputs {
        let line = text[..input.span().start].matches('\n').count() + 1;
        let i = input.get_mut();
        if let Some(rel) = &i.schema {
            let at = |m: String| Error { file: file.clone(), line, message: format!("input `{}`: {m}", i.topic) };
            let schema_text = std::fs::read_to_string(base.join(rel)).map_err(|e| at(format!("schema `{rel}`: {e}")))?;
            i.reader_schema =
                Some(apache_avro::Schema::parse_str(&schema_text).map_err(|e| at(format!("schema `{rel}` is not valid Avro: {e}")))?);
        }
    }
    Ok(def)
}

/// Every topic a definition writes, sorted.
pub fn output_topics(def: &Definition) -> Vec<String> {
    let mut topics = BTreeSet::from([def.channel("transitions")]);
    for t in &def.transitions {
        for a in &t.get_ref().actions {
            match a {
                ActionSpec::Emit { topic, .. } => topics.insert(topic.clone()),
                ActionSpec::RequestDecision { .. } => topics.insert(def.channel("decisions")),
                ActionSpec::OpenTask { .. } => topics.insert(def.channel("tasks")),
                ActionSpec::UpdateDocument { .. } => topics.insert(def.channel("documents")),
                ActionSpec::Notify { .. } => topics.insert(def.channel("notifications")),
                ActionSpec::SetTimer { .. } | ActionSpec::CancelTimer { .. } => false,
            };
        }
    }
    topics.into_iter().collect()
}

/// Compiles a definition into a topology: a source per input topic, the workflow processor with
/// its `instances` store, a sink per output topic. Keys are strings; values JSON, or Avro for
/// inputs that say so (through `registry`). Outputs are JSON.
///
/// # Errors
/// An Avro input without a registry.
pub fn compile(def: Definition, registry: Option<&Arc<Registry>>) -> Result<Topology, Error> {
    Ok(builder(def, registry)?.build().expect("a validated definition compiles to a valid topology"))
}

/// The topology of a definition, not yet built: add Rust processors for custom steps (for
/// example one reading a command topic the workflow writes and answering on one it reads),
/// then `build()`.
///
/// # Errors
/// As [`compile`].
pub fn builder(mut def: Definition, registry: Option<&Arc<Registry>>) -> Result<TopologyBuilder, Error> {
    let mut serdes = Vec::new();
    for input in &mut def.inputs {
        let i = input.get_mut();
        serdes.push(match i.format {
            Format::Json => Serde::Json,
            Format::Avro => {
                let Some(r) = registry else {
                    return Err(Error {
                        file: def.name.clone(),
                        line: 0,
                        message: format!("input `{}` is Avro: set schema.registry.url", i.topic),
                    });
                };
                Serde::Avro(AvroSerde::new(r.clone(), i.reader_schema.take(), SubjectStrategy::TopicName))
            }
        });
    }
    let def = Arc::new(def);
    let name = def.name.clone();
    let mut b = TopologyBuilder::new();
    let sources: Vec<String> = def.inputs.iter().map(|i| format!("in:{}", i.get_ref().topic)).collect();
    for ((i, s), serde) in def.inputs.iter().zip(&sources).zip(serdes) {
        b = b.source(s, &[&i.get_ref().topic], Serde::String, serde);
    }
    let parents: Vec<&str> = sources.iter().map(String::as_str).collect();
    let d = def.clone();
    b = b
        .processor(&name, move || WorkflowProcessor::new(d.clone()), &parents)
        .store(StoreSpec::new(STORE), &[&name])
        .store(StoreSpec::new(COUNTS), &[&name]);
    for topic in output_topics(&def) {
        b = b.sink(&sink_name(&topic), &topic, Serde::String, Serde::Json, &[&name]);
    }
    Ok(b)
}

/// A definition's own summary (states, transitions), then its topology.
pub fn describe(def: &Definition) -> String {
    use std::fmt::Write;
    let mut out = format!("Workflow: {} (initial: {})\n", def.name, def.initial.get_ref());
    for (name, s) in &def.states {
        let s = s.get_ref();
        let mut notes = Vec::new();
        if s.terminal {
            notes.push("terminal".to_owned());
        }
        for t in &s.timers {
            notes.push(format!("timer {} after {} fires {}", t.name, t.after, t.fire));
        }
        let _ = writeln!(out, "  state {name}{}", if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) });
    }
    for t in &def.transitions {
        let t = t.get_ref();
        let on = t.on.clone().unwrap_or_else(|| format!("error:{}", t.on_error.clone().unwrap_or_default()));
        let when = t.when.as_ref().map(|w| format!(" [{w}]")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} --{on}{when}--> {} ({} actions)",
            t.from.states().join("|"),
            t.to.as_ref().map_or("?", |s| s.get_ref().as_str()),
            t.actions.len()
        );
    }
    out
}
