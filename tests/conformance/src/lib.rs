//! keyflow against real Apache Kafka (KRaft).
//!
//! What the brokers that run without Docker cannot show (shared/ENVIRONMENT.md): that an aborted
//! transaction's records stay invisible to read_committed readers, that a zombie instance is
//! fenced, that the broker aborts a transaction left open too long, that the log cleaner
//! compacts changelogs. The brokers run from the project's own files (`tests/kafka`); the tests
//! drive the `keyflow` binary as separate processes, the way it is deployed. A test whose broker
//! cannot start fails: nothing here is ever skipped.

pub mod cluster;
#[path = "../../common/kafka_broker.rs"]
pub mod kafka_broker;
pub mod keyflow;
#[path = "../../common/workload.rs"]
pub mod workload;

pub use cluster::Cluster;
pub use keyflow::{App, Keyflow};
