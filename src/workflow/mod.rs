//! Workflows: definitions in `topologies/*.toml`, compiled into keyed topologies whose processor
//! runs a deterministic state machine per instance (the record key).

pub mod definition;
pub mod diagram;
pub mod diff;
pub mod machine;
pub mod migration;
pub mod processor;
mod runs;
pub mod versions;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

pub use definition::{Definition, Error};
pub use machine::{apply, Action, Event, Instance, Outcome};
pub use processor::{count_key, parse_count_key, COUNTS, STORE};
pub use versions::Versions;

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
    compile_versions(Versions::single(def), registry)
}

/// As [`compile`], for several versions of a workflow run side by side: the sources and sinks of
/// them all, and one processor that runs each instance by its own version.
///
/// # Errors
/// As [`compile`].
pub fn compile_versions(versions: Versions, registry: Option<&Arc<Registry>>) -> Result<Topology, Error> {
    Ok(builder_versions(versions, registry)?.build().expect("a validated definition compiles to a valid topology"))
}

/// The topology of a definition, not yet built: add Rust processors for custom steps (for
/// example one reading a command topic the workflow writes and answering on one it reads),
/// then `build()`.
///
/// # Errors
/// As [`compile`].
pub fn builder(def: Definition, registry: Option<&Arc<Registry>>) -> Result<TopologyBuilder, Error> {
    builder_versions(Versions::single(def), registry)
}

/// As [`builder`], for several versions.
///
/// # Errors
/// As [`compile`].
pub fn builder_versions(versions: Versions, registry: Option<&Arc<Registry>>) -> Result<TopologyBuilder, Error> {
    // One source per topic any version reads, with the newest reader schema of it.
    let mut sources: Vec<(String, Serde)> = Vec::new();
    for def in versions.all().rev() {
        for i in def.inputs.iter().map(|i| i.get_ref()) {
            if sources.iter().any(|(t, _)| *t == i.topic) {
                continue;
            }
            let serde = match i.format {
                Format::Json => Serde::Json,
                Format::Avro => {
                    let Some(r) = registry else {
                        return Err(Error {
                            file: def.name.clone(),
                            line: 0,
                            message: format!("input `{}` is Avro: set schema.registry.url", i.topic),
                        });
                    };
                    Serde::Avro(AvroSerde::new(r.clone(), i.reader_schema.clone(), SubjectStrategy::TopicName))
                }
            };
            sources.push((i.topic.clone(), serde));
        }
    }
    let outputs: BTreeSet<String> = versions.all().flat_map(|d| output_topics(d)).collect();
    let name = versions.name().to_owned();
    let versions = Arc::new(versions);
    let mut b = TopologyBuilder::new();
    let names: Vec<String> = sources.iter().map(|(t, _)| format!("in:{t}")).collect();
    for ((topic, serde), s) in sources.into_iter().zip(&names) {
        b = b.source(s, &[&topic], Serde::String, serde);
    }
    let parents: Vec<&str> = names.iter().map(String::as_str).collect();
    b = b
        .processor(&name, move || WorkflowProcessor::new(versions.clone()), &parents)
        .store(StoreSpec::new(STORE), &[&name])
        .store(StoreSpec::new(COUNTS), &[&name]);
    for topic in outputs {
        b = b.sink(&sink_name(&topic), &topic, Serde::String, Serde::Json, &[&name]);
    }
    Ok(b)
}

/// A definition's own summary (states, transitions), then its topology.
pub fn describe(def: &Definition) -> String {
    use std::fmt::Write;
    let mut out = format!("Workflow: {} version {} (initial: {})\n", def.name, def.version, def.initial.get_ref());
    for (name, s) in &def.states {
        let s = s.get_ref();
        let mut notes = Vec::new();
        if s.terminal {
            notes.push("terminal".to_owned());
        }
        for t in &s.timers {
            notes.push(format!("timer {} after {} fires {}", t.name, t.after, t.fire));
        }
        if !s.restart_on.is_empty() {
            let kind = if s.terminal { "restarts" } else { "a new run supersedes this one" };
            notes.push(format!("{kind} on {}", s.restart_on.join(", ")));
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
