//! Shared fixtures for the broker tests: an in-process mock cluster, the status-tracker workload
//! with its expected outcome, and readers of what the application committed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use keyflow::builtin::status_tracker;
use keyflow::config::Config;
use keyflow::kafka::{self, MockProvisioner, Provisioner, QuietEof, TopicSpec};
use keyflow::runtime::{Guarantee, Instance};
use keyflow::Topology;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

pub const PARTITIONS: i32 = 4;

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
    p.ensure(&[TopicSpec { name: input.clone(), partitions: PARTITIONS, compacted: false }, TopicSpec { name: output.clone(), partitions: PARTITIONS, compacted: false }])
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
    let topics: Vec<TopicSpec> = topology.source_topics().into_iter().chain(topology.sink_topics()).map(|name| TopicSpec { name, partitions: PARTITIONS, compacted: false }).collect();
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

/// Events for `docs` documents with random statuses (valid or not) and amounts, plus a few
/// malformed records; and per document the count and total the state must end with.
pub struct Workload {
    pub events: Vec<(i64, String, Vec<u8>)>,
    pub expected: BTreeMap<String, (u64, f64)>,
    pub malformed: usize,
}

pub fn workload(docs: usize, events: usize, seed: u64) -> Workload {
    let mut rng = SmallRng::seed_from_u64(seed);
    let statuses = ["uploaded", "scanned", "classified", "approved", "rejected"];
    let mut w = Workload { events: Vec::new(), expected: BTreeMap::new(), malformed: 0 };
    for i in 0..events {
        let doc = format!("doc-{}", rng.random_range(0..docs));
        let ts = 1_700_000_000_000 + i as i64;
        if rng.random_ratio(1, 100) {
            w.events.push((ts, doc, b"not json".to_vec()));
            w.malformed += 1;
            continue;
        }
        let amount = rng.random_range(1..100) as f64;
        let status = statuses[rng.random_range(0..statuses.len())];
        w.events.push((ts, doc.clone(), format!(r#"{{"status":"{status}","amount":{amount}}}"#).into_bytes()));
        let e = w.expected.entry(doc).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += amount;
    }
    w
}

pub fn produce(bootstrap: &str, topic: &str, events: &[(i64, String, Vec<u8>)]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().unwrap();
    for (ts, key, value) in events {
        kafka::send_waiting(&p, BaseRecord::to(topic).key(key.as_str()).payload(value.as_slice()).timestamp(*ts)).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
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

/// Every record of `topic`, as (key, value).
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<(String, Vec<u8>)> {
    let c: BaseConsumer<QuietEof> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", unique("reader")).set("enable.partition.eof", "true").create_with_context(QuietEof).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut eof, mut out) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof < PARTITIONS && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(), m.payload().unwrap_or_default().to_vec())),
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    out
}

/// Per document, the furthest state the outputs report: (count, total). Duplicated outputs do
/// not change it; a lost or doubly applied update does.
pub fn final_states(bootstrap: &str, output: &str) -> BTreeMap<String, (u64, f64)> {
    let mut m: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (key, value) in read_all(bootstrap, output) {
        let v: Value = serde_json::from_slice(&value).unwrap();
        let Some(count) = v["count"].as_u64() else { continue }; // escalations carry no count
        let total = v["total"].as_f64().unwrap();
        let e = m.entry(key).or_insert((0, 0.0));
        if count > e.0 {
            *e = (count, total);
        }
    }
    m
}

/// Asserts that every document's state counts each of its events exactly once.
pub fn assert_exact(expected: &BTreeMap<String, (u64, f64)>, got: &BTreeMap<String, (u64, f64)>) {
    let wrong: Vec<_> = expected.iter().filter(|(k, want)| got.get(*k).map(|g| (g.0, (g.1 * 100.0).round())) != Some((want.0, (want.1 * 100.0).round()))).map(|(k, want)| (k, want, got.get(k))).collect();
    assert!(wrong.is_empty(), "{} of {} documents have lost or doubled updates, e.g. {:?}", wrong.len(), expected.len(), &wrong[..wrong.len().min(5)]);
}

