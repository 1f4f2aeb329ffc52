//! Shared fixtures for the broker tests: real Apache Kafka (or the mock, for injected errors), the status-tracker workload
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
pub mod camunda;
pub mod connectors;
pub mod kafka_broker;
pub use kafka_broker::KafkaCluster;

/// A unique name per test and process, so tests never share topics, groups or transactional ids.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// The broker under a test: real Apache Kafka, or librdkafka's mock where injecting request
/// errors is the point.
pub enum Broker {
    Kafka(KafkaCluster),
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl Broker {
    /// The mock, for `request_errors`.
    ///
    /// # Panics
    /// On real Kafka.
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        match self {
            Broker::Mock(m) => m,
            Broker::Kafka(_) => panic!("request errors can only be injected on the mock broker"),
        }
    }

    /// Creates `topics`; on Kafka the compacted ones with `compacted_config` too.
    fn provision(&self, topics: &[TopicSpec], compacted_config: &[(&str, &str)]) {
        match self {
            Broker::Kafka(k) => create_topics(&k.bootstrap, topics, compacted_config),
            Broker::Mock(m) => MockProvisioner(m).ensure(topics).unwrap(),
        }
    }
}

pub struct Setup {
    pub broker: Broker,
    pub bootstrap: String,
    pub config: Config,
    pub topology: Topology,
    pub input: String,
    pub output: String,
    pub dir: tempfile::TempDir,
}

/// Real Apache Kafka with the application's topics, and a config for it.
pub fn setup(guarantee: Guarantee, commit_interval: Duration) -> Setup {
    setup_compacted(guarantee, commit_interval, &[])
}

/// The same, with the changelogs created with `changelog_config` (e.g. aggressive cleaning).
pub fn setup_compacted(guarantee: Guarantee, commit_interval: Duration, changelog_config: &[(&str, &str)]) -> Setup {
    let kafka = kafka_broker::shared();
    let bootstrap = kafka.bootstrap.clone();
    setup_on(Broker::Kafka(kafka), bootstrap, guarantee, commit_interval, changelog_config)
}

/// The same on librdkafka's mock cluster, whose requests can be made to fail.
pub fn setup_on_mock(guarantee: Guarantee, commit_interval: Duration) -> Setup {
    let cluster = MockCluster::new(3).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    setup_on(Broker::Mock(cluster), bootstrap, guarantee, commit_interval, &[])
}

fn setup_on(
    broker: Broker,
    bootstrap: String,
    guarantee: Guarantee,
    commit_interval: Duration,
    changelog_config: &[(&str, &str)],
) -> Setup {
    keyflow::cli::init_tracing(0); // warnings; RUST_LOG=keyflow=info shows rebalances
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (unique("events"), unique("statuses"));
    let topology = status_tracker::topology(&input, &output, 5_000);
    let mut config = Config::for_application(&unique("app"), &bootstrap, dir.path());
    config.processing_guarantee = guarantee;
    config.set_commit_interval(commit_interval);
    config.replication_factor = 1;
    // Kafka's smallest session (group.min.session.timeout.ms): a killed member is seen gone
    // within 6 s. (The mock also ignores LeaveGroup, so there it matters for every leave.)
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    config.consumer.0.insert("heartbeat.interval.ms".into(), "500".into());
    broker.provision(
        &[
            TopicSpec { name: input.clone(), partitions: PARTITIONS, compacted: false },
            TopicSpec { name: output.clone(), partitions: PARTITIONS, compacted: false },
        ],
        &[],
    );
    broker.provision(&kafka::internal_topics(&config, &topology, PARTITIONS), changelog_config);
    Setup { broker, bootstrap, config, topology, input, output, dir }
}

/// Real Apache Kafka with the document-approval workflow's topics (inputs, outputs, internal
/// topics), and a config for it (commit every 100 ms, short sessions).
pub struct WorkflowSetup {
    pub kafka: KafkaCluster,
    pub bootstrap: String,
    pub config: Config,
    pub topology: Topology,
    pub dir: tempfile::TempDir,
}

pub fn document_approval(app_prefix: &str, guarantee: Guarantee) -> WorkflowSetup {
    keyflow::cli::init_tracing(0);
    // A broker of this test's own: the workflow's topic names are fixed, so tests on one broker
    // would read each other's documents.
    let kafka = KafkaCluster::start(1);
    let bootstrap = kafka.bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let def = keyflow::workflow::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    let topology = keyflow::workflow::compile(def, None).unwrap();
    let mut config = Config::for_application(&unique(app_prefix), &bootstrap, dir.path());
    config.processing_guarantee = guarantee;
    config.set_commit_interval(Duration::from_millis(100));
    config.replication_factor = 1;
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    let broker = Broker::Kafka(kafka);
    let topics: Vec<TopicSpec> = topology
        .source_topics()
        .into_iter()
        .chain(topology.sink_topics())
        .map(|name| TopicSpec { name, partitions: PARTITIONS, compacted: false })
        .collect();
    broker.provision(&topics, &[]);
    broker.provision(&kafka::internal_topics(&config, &topology, PARTITIONS), &[]);
    let Broker::Kafka(kafka) = broker else { unreachable!() };
    WorkflowSetup { kafka, bootstrap, config, topology, dir }
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

    /// Runs instance `name` until the group has committed `inputs` input offsets, then stops it.
    pub fn run_until_committed(&self, name: &str, inputs: i64) {
        let instance = self.start(name);
        wait_until(&format!("{name} to commit {inputs} inputs"), Duration::from_secs(60), || {
            committed(&self.bootstrap, &self.config.application_id, &self.input) >= inputs
        });
        instance.stop();
        instance.join().unwrap();
    }
}

/// Waits until `instance` runs every task (all partitions assigned, none restoring).
pub fn wait_running(what: &str, instance: &Instance) {
    wait_until(what, Duration::from_secs(60), || {
        let snap = instance.status().snapshot();
        snap.assignment.len() == PARTITIONS as usize && !snap.restoring
    });
}

/// An input as the workload holds it: (timestamp, document, value).
pub type Event = (i64, String, Vec<u8>);
/// Per document, (count, total).
pub type States = BTreeMap<String, (u64, f64)>;

/// One more `approved` input of amount 1 per document of `expected`, timestamped from `from` on,
/// and the states they lead to: their outputs show the count and total the state held.
pub fn one_more_per_document(expected: &States, from: i64) -> (Vec<Event>, States) {
    let events =
        expected.keys().enumerate().map(|(i, d)| (from + i as i64, d.clone(), br#"{"status":"approved","amount":1}"#.to_vec())).collect();
    let after = expected.iter().map(|(d, (n, total))| (d.clone(), (n + 1, total + 1.0))).collect();
    (events, after)
}

impl Setup {}

/// Input offsets the group has committed, summed over partitions.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    // A broker that just started may answer "not coordinator" while its offsets topic loads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => eprintln!("committed offsets: {e}; asking again"),
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    got.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum()
}

/// Waits up to `limit` until a `keyflow run` process (stderr piped) answers 200 on
/// `127.0.0.1:<port>/ready`; panics with its stderr if it stops first.
pub fn wait_for_run_ready(child: &mut std::process::Child, port: u16, limit: Duration) {
    let ready = format!("http://127.0.0.1:{port}/ready");
    let started = Instant::now();
    wait_until("keyflow run is ready", limit, || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("keyflow run stopped ({status}) after {:?}:\n{err}", started.elapsed());
        }
        reqwest::blocking::get(&ready).is_ok_and(|r| r.status().as_u16() == 200)
    });
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

/// Creates `topics` (replication factor 1) on the broker at `bootstrap`, if they do not exist.
/// Compacted ones get `compacted_config` too (e.g. aggressive cleaning).
pub fn create_topics(bootstrap: &str, topics: &[TopicSpec], compacted_config: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let mut n = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1));
            if t.compacted {
                n = n.set("cleanup.policy", "compact");
                for (k, v) in compacted_config {
                    n = n.set(k, v);
                }
            }
            n
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in rt.block_on(admin.create_topics(new.iter(), &opts)).unwrap() {
        if let Err((topic, code)) = r {
            assert_eq!(code, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "creating {topic}: {code}");
        }
    }
}
