//! Real Apache Kafka for the tests, run by `tests/kafka/broker.sh` from the jars `.ci/setup`
//! copies from Maven Central.
//!
//! [`shared`]: the broker `tests/kafka/with-broker.sh` started for the whole suite
//! (`TEST_KAFKA_BOOTSTRAP`), or else one of this test's own. [`KafkaCluster::start`]: nodes of
//! the test's own, which it may kill and restart. Every test still uses its own topics, group and
//! transactional ids (`unique`).
#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// The suite's broker, or one of this test's own (stopped when dropped).
pub fn shared() -> KafkaCluster {
    match std::env::var("TEST_KAFKA_BOOTSTRAP") {
        Ok(bootstrap) if !bootstrap.is_empty() => KafkaCluster { bootstrap, nodes: Vec::new(), _dir: None },
        _ => KafkaCluster::start(1),
    }
}

struct Node {
    id: usize,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Kafka nodes (broker and controller in one process each) on loopback.
pub struct KafkaCluster {
    pub bootstrap: String,
    nodes: Vec<Node>,
    _dir: Option<tempfile::TempDir>,
}

impl KafkaCluster {
    /// Starts `n` nodes (1, or 3 for a cluster that survives losing one) and waits until every
    /// one of them serves metadata.
    ///
    /// # Panics
    /// When the broker cannot start: the jars are missing (run `.ci/setup`) or Java fails.
    pub fn start(n: usize) -> KafkaCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports: Vec<u16> = (0..n).map(|_| free_port_pair()).collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| Node { id: i + 1, port, dir: dir.path().join(format!("node-{}", i + 1)), child: None })
            .collect();
        let bootstrap = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let mut cluster = KafkaCluster { bootstrap, nodes, _dir: Some(dir) };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_for_brokers(n, Duration::from_secs(120));
        cluster
    }

    /// Whether this test started its own nodes (and so may kill them).
    pub fn is_own(&self) -> bool {
        !self.nodes.is_empty()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn spawn(&mut self, i: usize) {
        let voters = if self.nodes.len() > 1 {
            Some(self.nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.port + 1)).collect::<Vec<_>>().join(","))
        } else {
            None
        };
        let heap = if self.nodes.len() > 1 { "384m" } else { "768m" };
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir).expect("node directory");
        let log = File::options().create(true).append(true).open(node.dir.join("broker.log")).expect("broker log");
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(&node.dir).arg(node.port.to_string()).env("KAFKA_NODE_ID", node.id.to_string());
        cmd.env("KAFKA_HEAP", heap);
        if let Some(v) = voters {
            cmd.env("KAFKA_VOTERS", v);
        }
        cmd.stdout(log.try_clone().expect("log handle")).stderr(log);
        node.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display())));
    }

    /// kill -9 of node `i` (0-based).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its data directory, and waits until it serves metadata.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        let n = self.nodes.len();
        self.wait_for_brokers(n, Duration::from_secs(120));
    }

    fn wait_for_brokers(&mut self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().expect("metadata client");
        loop {
            for node in &mut self.nodes {
                if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(node.dir.join("broker.log")).unwrap_or_default();
                    panic!("Kafka node {} exited ({status}); run .ci/setup if its jars are missing. Its log:\n{log}", node.id);
                }
            }
            let up = self.nodes.iter().all(|n| TcpStream::connect(("127.0.0.1", n.port)).is_ok());
            if up && consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok_and(|m| m.brokers().len() >= n) {
                return;
            }
            assert!(Instant::now() < deadline, "Kafka did not come up within {limit:?} (logs under the nodes' directories)");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `tests/kafka/broker.sh`, found from this crate's directory upwards (the conformance suite is a
/// crate of its own under `tests/`).
fn script() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("tests/kafka/broker.sh");
        if candidate.exists() {
            return candidate;
        }
        assert!(dir.pop(), "tests/kafka/broker.sh not found above {}", env!("CARGO_MANIFEST_DIR"));
    }
}

/// A free port whose successor is free too (the node's controller listens there).
fn free_port_pair() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
