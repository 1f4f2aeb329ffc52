//! Shared fixtures for the broker tests: an in-process mock cluster, the status-tracker workload
//! with its expected outcome, and readers of what the application committed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use keyflow::builtin::status_tracker;
use keyflow::config::Config;
use keyflow::kafka::{self, MockProvisioner, Provisioner, TopicSpec};
use keyflow::runtime::{Guarantee, Instance};
use keyflow::Topology;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

mod workload;
pub use workload::*;

/// A unique name per test and process, so tests never share topics, groups or transactional ids.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

pub struct Setup {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    pub config: Config,
    pub topology: Topology,
    pub input: String,
    pub output: String,
    pub dir: tempfile::TempDir,
}

/// A mock cluster with the application's topics, and a config for it.
pub fn setup(guarantee: Guarantee, commit_interval: Duration) -> Setup {
    keyflow::cli::init_tracing(0); // warnings; RUST_LOG=keyflow=info shows rebalances
    let cluster = MockCluster::new(3).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (unique("events"), unique("statuses"));
    let topology = status_tracker::topology(&input, &output, 5_000);
    let mut config = Config::for_application(&unique("app"), &bootstrap, dir.path());
    config.processing_guarantee = guarantee;
    config.set_commit_interval(commit_interval);
    // The mock ignores LeaveGroup: a member that leaves is seen gone only after its session.
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    config.consumer.0.insert("heartbeat.interval.ms".into(), "500".into());
    let p = MockProvisioner(&cluster);
    p.ensure(&[
        TopicSpec { name: input.clone(), partitions: PARTITIONS, compacted: false },
        TopicSpec { name: output.clone(), partitions: PARTITIONS, compacted: false },
    ])
    .unwrap();
    p.ensure(&kafka::internal_topics(&config, &topology, PARTITIONS)).unwrap();
    Setup { cluster, bootstrap, config, topology, input, output, dir }
}

/// A mock cluster with the document-approval workflow's topics (inputs, outputs, internal
/// topics), and a config for it (commit every 100 ms, short sessions for the mock).
pub struct WorkflowSetup {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    pub config: Config,
    pub topology: Topology,
    pub dir: tempfile::TempDir,
}

pub fn document_approval(app_prefix: &str, guarantee: Guarantee) -> WorkflowSetup {
    keyflow::cli::init_tracing(0);
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let def = keyflow::workflow::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    let topology = keyflow::workflow::compile(def, None).unwrap();
    let mut config = Config::for_application(&unique(app_prefix), &bootstrap, dir.path());
    config.processing_guarantee = guarantee;
    config.set_commit_interval(Duration::from_millis(100));
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    let p = MockProvisioner(&cluster);
    let topics: Vec<TopicSpec> = topology
        .source_topics()
        .into_iter()
        .chain(topology.sink_topics())
        .map(|name| TopicSpec { name, partitions: PARTITIONS, compacted: false })
        .collect();
    p.ensure(&topics).unwrap();
    p.ensure(&kafka::internal_topics(&config, &topology, PARTITIONS)).unwrap();
    WorkflowSetup { cluster, bootstrap, config, topology, dir }
}

impl Setup {
    /// Starts an instance with its own state directory `name`.
    pub fn start(&self, name: &str) -> Instance {
        let mut c = self.config.clone();
        c.state_dir = self.dir.path().join(name);
        Instance::start(c, self.topology.clone()).expect("instance starts")
    }

    pub fn state_dir(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Input offsets the group has committed, summed over partitions.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    got.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes (then panics with `what`).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of `topic`, as (key, value), uncommitted ones included: the local brokers'
/// view of what a reader could see.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<(String, Vec<u8>)> {
    read_topic(bootstrap, topic, "read_uncommitted")
}

/// Per document, the furthest state the outputs report (see `final_states_of`).
pub fn final_states(bootstrap: &str, output: &str) -> BTreeMap<String, (u64, f64)> {
    final_states_of(&read_all(bootstrap, output))
}
