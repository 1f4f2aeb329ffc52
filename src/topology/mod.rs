//! Topologies: sources -> processors -> sinks, with named state stores, built and validated once.

mod describe;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::processor::{Processor, ProcessorSupplier};
use crate::serde::Serde;
use crate::state::StoreSpec;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("node name `{0}` is used twice")]
    DuplicateNode(String),
    #[error("node `{node}` names parent `{parent}`, which does not exist")]
    UnknownParent { node: String, parent: String },
    #[error("node `{node}` cannot have sink `{parent}` as its parent: sinks have no children")]
    ParentIsSink { node: String, parent: String },
    #[error("{kind} `{node}` needs at least one parent")]
    NoParent { kind: &'static str, node: String },
    #[error("source `{0}` reads no topic")]
    NoTopic(String),
    #[error("topic `{topic}` is read by two sources, `{first}` and `{second}`")]
    TopicReadTwice { topic: String, first: String, second: String },
    #[error("store `{store}` is connected to `{node}`, which is not a processor")]
    StoreOnNonProcessor { store: String, node: String },
    #[error("store name `{0}` is used twice")]
    DuplicateStore(String),
    #[error("store name `{0}` is reserved by keyflow")]
    ReservedStore(String),
    #[error("the topology has no source")]
    NoSource,
}

pub(crate) enum NodeKind {
    Source { topics: Vec<String>, key_serde: Serde, value_serde: Serde },
    Processor { supplier: ProcessorSupplier, stores: Vec<String> },
    Sink { topic: String, key_serde: Serde, value_serde: Serde },
}

pub(crate) struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<String>,
    /// Indexes into `Topology::nodes`, in the order the children were added.
    pub children: Vec<usize>,
}

/// A validated topology. Cheap to share: each task instantiates its own processors from it.
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub nodes: Vec<Node>,
    pub stores: Vec<StoreSpec>,
    /// Source topic -> source node index.
    pub sources: BTreeMap<String, usize>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Topology {
    pub(crate) fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    pub(crate) fn source_for(&self, topic: &str) -> Option<usize> {
        self.inner.sources.get(topic).copied()
    }

    /// All topics the topology reads, sorted.
    pub fn source_topics(&self) -> Vec<String> {
        self.inner.sources.keys().cloned().collect()
    }

    /// All topics the topology's sinks write, sorted and deduplicated.
    pub fn sink_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .inner
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Sink { topic, .. } => Some(topic.clone()),
                _ => None,
            })
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The user stores (the timer store is added to every task by the runtime).
    pub fn stores(&self) -> &[StoreSpec] {
        &self.inner.stores
    }

    /// A stable, human-readable description, in the spirit of Kafka Streams' `describe()`.
    pub fn describe(&self) -> String {
        describe::describe(self)
    }
}

/// Builds a [`Topology`]. Nodes are added parents-first.
#[derive(Default)]
pub struct TopologyBuilder {
    nodes: Vec<Node>,
    stores: Vec<(StoreSpec, Vec<String>)>,
}

impl TopologyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A source reading `topics` with the given key and value serdes.
    pub fn source(mut self, name: &str, topics: &[&str], key_serde: Serde, value_serde: Serde) -> Self {
        self.push(name, NodeKind::Source { topics: topics.iter().map(|t| t.to_string()).collect(), key_serde, value_serde }, &[]);
        self
    }

    /// A processor made by `supplier`, fed by `parents`.
    pub fn processor<F, P>(mut self, name: &str, supplier: F, parents: &[&str]) -> Self
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: Processor + 'static,
    {
        let supplier: ProcessorSupplier = Arc::new(move || Box::new(supplier()) as Box<dyn Processor>);
        self.push(name, NodeKind::Processor { supplier, stores: Vec::new() }, parents);
        self
    }

    /// A sink writing to `topic`, fed by `parents`.
    pub fn sink(mut self, name: &str, topic: &str, key_serde: Serde, value_serde: Serde, parents: &[&str]) -> Self {
        self.push(name, NodeKind::Sink { topic: topic.to_owned(), key_serde, value_serde }, parents);
        self
    }

    /// A state store, usable by the named processors.
    pub fn store(mut self, spec: StoreSpec, processors: &[&str]) -> Self {
        self.stores.push((spec, processors.iter().map(|p| p.to_string()).collect()));
        self
    }

    fn push(&mut self, name: &str, kind: NodeKind, parents: &[&str]) {
        self.nodes.push(Node {
            name: name.to_owned(),
            kind,
            parents: parents.iter().map(|p| p.to_string()).collect(),
            children: Vec::new(),
        });
    }

    /// Validates and freezes the topology.
    ///
    /// # Errors
    /// [`Error`] naming the node, store or topic at fault.
    pub fn build(mut self) -> Result<Topology, Error> {
        let mut seen = HashSet::new();
        for n in &self.nodes {
            if !seen.insert(n.name.clone()) {
                return Err(Error::DuplicateNode(n.name.clone()));
            }
        }
        let index = |name: &str, nodes: &[Node]| nodes.iter().position(|n| n.name == name);
        let mut sources = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            match &node.kind {
                NodeKind::Source { topics, .. } => {
                    if topics.is_empty() {
                        return Err(Error::NoTopic(node.name.clone()));
                    }
                    for t in topics {
                        if let Some(&first) = sources.get(t) {
                            let first: usize = first;
                            return Err(Error::TopicReadTwice {
                                topic: t.clone(),
                                first: self.nodes[first].name.clone(),
                                second: node.name.clone(),
                            });
                        }
                        sources.insert(t.clone(), i);
                    }
                }
                kind if node.parents.is_empty() => {
                    let kind = if matches!(kind, NodeKind::Sink { .. }) { "sink" } else { "processor" };
                    return Err(Error::NoParent { kind, node: node.name.clone() });
                }
                _ => {}
            }
            for p in node.parents.clone() {
                let Some(pi) = index(&p, &self.nodes) else {
                    return Err(Error::UnknownParent { node: self.nodes[i].name.clone(), parent: p });
                };
                if matches!(self.nodes[pi].kind, NodeKind::Sink { .. }) {
                    return Err(Error::ParentIsSink { node: self.nodes[i].name.clone(), parent: p });
                }
                self.nodes[pi].children.push(i);
            }
        }
        if sources.is_empty() {
            return Err(Error::NoSource);
        }
        let mut specs = Vec::new();
        for (spec, processors) in self.stores {
            if spec.name == crate::state::TIMER_STORE {
                return Err(Error::ReservedStore(spec.name));
            }
            if specs.iter().any(|s: &StoreSpec| s.name == spec.name) {
                return Err(Error::DuplicateStore(spec.name));
            }
            for p in processors {
                match self.nodes.iter_mut().find(|n| n.name == p) {
                    Some(Node { kind: NodeKind::Processor { stores, .. }, .. }) => stores.push(spec.name.clone()),
                    _ => return Err(Error::StoreOnNonProcessor { store: spec.name.clone(), node: p }),
                }
            }
            specs.push(spec);
        }
        Ok(Topology { inner: Arc::new(Inner { nodes: self.nodes, stores: specs, sources }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{Context, Error as ProcessorError};
    use crate::record::Record;

    struct Noop;
    impl Processor for Noop {
        fn process(&mut self, _: &mut Context<'_>, _: Record) -> Result<(), ProcessorError> {
            Ok(())
        }
    }

    fn base() -> TopologyBuilder {
        TopologyBuilder::new().source("in", &["t"], Serde::String, Serde::Json).processor("p", || Noop, &["in"])
    }

    #[test]
    fn invalid_topologies_are_refused_with_the_node_at_fault() {
        assert_eq!(base().processor("p", || Noop, &["in"]).build().err(), Some(Error::DuplicateNode("p".into())));
        assert_eq!(
            base().sink("s", "o", Serde::String, Serde::Json, &["nope"]).build().err(),
            Some(Error::UnknownParent { node: "s".into(), parent: "nope".into() })
        );
        assert_eq!(
            base().sink("s", "o", Serde::String, Serde::Json, &["p"]).processor("q", || Noop, &["s"]).build().err(),
            Some(Error::ParentIsSink { node: "q".into(), parent: "s".into() })
        );
        assert_eq!(
            base().source("again", &["t"], Serde::String, Serde::Json).build().err(),
            Some(Error::TopicReadTwice { topic: "t".into(), first: "in".into(), second: "again".into() })
        );
        assert_eq!(
            base().store(StoreSpec::new("s"), &["in"]).build().err(),
            Some(Error::StoreOnNonProcessor { store: "s".into(), node: "in".into() })
        );
        assert_eq!(
            base().store(StoreSpec::new("keyflow-timers"), &["p"]).build().err(),
            Some(Error::ReservedStore("keyflow-timers".into()))
        );
        assert_eq!(
            TopologyBuilder::new().processor("p", || Noop, &[]).build().err(),
            Some(Error::NoParent { kind: "processor", node: "p".into() })
        );
        assert!(base().store(StoreSpec::new("s"), &["p"]).build().is_ok());
    }
}
