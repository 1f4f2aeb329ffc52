//! keyflow: a Kafka-Streams-style stateful stream processor for keyed business workflows.
//!
//! Data flows one way: Kafka -> runtime task -> topology -> processors -> state + collector ->
//! Kafka. See `README.md` for the map of modules.

pub mod builtin;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod console;
pub mod demo;
pub mod dlq;
pub mod kafka;
pub mod metrics;
pub mod observe;
pub mod ops;
pub mod processor;
pub mod record;
pub mod runtime;
pub mod serde;
pub mod state;
pub mod testing;
pub mod topology;
pub mod workflow;

pub use processor::{Context, Processor};
pub use record::{Headers, InputRecord, OutputRecord, Record, RecordMetadata};
pub use runtime::Guarantee;
pub use state::{StoreSpec, TimeKind, Timer};
pub use topology::{Topology, TopologyBuilder};
