//! The versions of a workflow one member runs side by side.
//!
//! An instance records the version it started on (`Instance::version`) and keeps running by
//! that version's rules until it finishes or a migration moves it; a new instance starts on the
//! newest version the member has. Versions travel with the member's files, as a Kafka Streams
//! topology travels with its code: `[topology] file` is the current definition and
//! `[topology] versions` lists the older ones still running. A rolling restart deploys a
//! version, and a member that meets an instance of a version it does not have never guesses:
//! that partition waits until a member that has it owns the partition (see
//! `processor::WorkflowProcessor`).
//!
//! Why files and not a definitions topic read by every member: a version that reads a new
//! topic or writes one needs a restart anyway (subscriptions and sinks are fixed when the
//! topology is built), so a topic would make only some versions deployable without one, and the
//! files are already where definitions are reviewed, diffed and validated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::definition::{Definition, Error, Format};

/// A workflow's definitions by version.
#[derive(Debug)]
pub struct Versions {
    by_version: BTreeMap<u32, Arc<Definition>>,
}

impl Versions {
    /// The versions of one workflow.
    ///
    /// # Errors
    /// No definition, definitions of different workflows, two with the same version, or an
    /// input topic read in two formats (a topic has one source, so one format).
    pub fn new(defs: Vec<Definition>) -> Result<Versions, Error> {
        let err = |message: String| Error { file: String::new(), line: 0, message };
        let Some(first) = defs.first() else { return Err(err("no workflow definition".into())) };
        let name = first.name.clone();
        let mut by_version = BTreeMap::new();
        let mut formats: BTreeMap<String, (u32, Format)> = BTreeMap::new();
        for def in defs {
            if def.name != name {
                return Err(err(format!("version {} is of workflow `{}`, not `{name}`", def.version, def.name)));
            }
            for i in def.inputs.iter().map(|i| i.get_ref()) {
                match formats.get(&i.topic) {
                    Some((v, f)) if *f != i.format => {
                        return Err(err(format!(
                            "topic `{}` is read as {:?} by version {v} and as {:?} by version {} of `{name}`: a topic has one format",
                            i.topic, f, i.format, def.version
                        )))
                    }
                    _ => formats.insert(i.topic.clone(), (def.version, i.format)),
                };
            }
            let version = def.version;
            if by_version.insert(version, Arc::new(def)).is_some() {
                return Err(err(format!("two definitions of `{name}` are version {version}: a changed definition needs a new `version`")));
            }
        }
        Ok(Versions { by_version })
    }

    /// One version alone (tests, and workflows that never changed).
    pub fn single(def: Definition) -> Versions {
        Versions { by_version: BTreeMap::from([(def.version, Arc::new(def))]) }
    }

    pub fn name(&self) -> &str {
        &self.newest().name
    }

    /// The version new instances start on.
    pub fn newest(&self) -> &Arc<Definition> {
        self.by_version.values().next_back().expect("at least one version")
    }

    pub fn get(&self, version: u32) -> Option<&Arc<Definition>> {
        self.by_version.get(&version)
    }

    /// Every version, oldest first.
    pub fn all(&self) -> impl DoubleEndedIterator<Item = &Arc<Definition>> {
        self.by_version.values()
    }

    /// The version numbers, oldest first.
    pub fn numbers(&self) -> Vec<u32> {
        self.by_version.keys().copied().collect()
    }
}

/// Loads the current definition and the older versions still running.
///
/// # Errors
/// As [`super::load`] for each file, and as [`Versions::new`].
pub fn load(current: &Path, older: &[PathBuf]) -> Result<Versions, Error> {
    let mut defs = vec![super::load(current)?];
    for f in older {
        defs.push(super::load(f)?);
    }
    Versions::new(defs).map_err(|e| Error { file: current.display().to_string(), ..e })
}
