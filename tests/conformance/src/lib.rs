//! keyflow against real Apache Kafka (KRaft) and Confluent Schema Registry, in containers.
//!
//! What the brokers that run without Docker cannot show (shared/ENVIRONMENT.md): that an aborted
//! transaction's records stay invisible to read_committed readers, that a zombie instance is
//! fenced, that the broker aborts a transaction left open too long. Each test starts its own
//! broker with testcontainers and drives the `keyflow` binary as separate processes, the way it
//! is deployed.
//!
//! Without a Docker engine every test prints why and returns (it passes, having checked
//! nothing: the README says so). `KEYFLOW_CONFORMANCE_BOOTSTRAP` (and
//! `KEYFLOW_CONFORMANCE_REGISTRY`) point the suite at brokers already running instead.

pub mod cluster;
pub mod keyflow;
#[path = "../../common/workload.rs"]
pub mod workload;

pub use cluster::Cluster;
pub use keyflow::{App, Keyflow};
