//! The suite's brokers: Apache Kafka run by `tests/kafka/broker.sh` (the broker
//! `tests/kafka/with-broker.sh` started for the run, or one of the test's own), and, for the
//! schema test, a Confluent-compatible registry (rivven-schema, installed by `.ci/setup`).
//! Nothing is skipped: a test whose broker cannot start fails.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::kafka_broker::{self, KafkaCluster};

pub struct Cluster {
    pub bootstrap: String,
    pub registry: Option<String>,
    kafka: KafkaCluster,
    registry_server: Option<Child>,
}

impl Cluster {
    /// Kafka, and a schema registry beside it when `registry`.
    ///
    /// # Panics
    /// When either cannot start.
    pub fn start(test: &str, registry: bool) -> Cluster {
        let kafka = kafka_broker::shared();
        eprintln!("{test}: Apache Kafka at {}", kafka.bootstrap);
        let (registry, registry_server) = if registry {
            let (url, child) = start_registry();
            (Some(url), Some(child))
        } else {
            (None, None)
        };
        Cluster { bootstrap: kafka.bootstrap.clone(), registry, kafka, registry_server }
    }

    /// Kafka nodes of this test's own (3 for one that survives losing a node).
    pub fn own(test: &str, nodes: usize) -> Cluster {
        let kafka = KafkaCluster::start(nodes);
        eprintln!("{test}: Apache Kafka, {nodes} node(s) of its own, at {}", kafka.bootstrap);
        Cluster { bootstrap: kafka.bootstrap.clone(), registry: None, kafka, registry_server: None }
    }

    /// The test's own nodes, to kill and restart.
    pub fn kafka_mut(&mut self) -> &mut KafkaCluster {
        &mut self.kafka
    }

    /// The replication factor of the topics: every node of a test's own cluster, else 1.
    pub fn replication(&self) -> usize {
        self.kafka.node_count().max(1)
    }

    /// Creates `topics` (name, partitions) if they do not exist, replicated on every node of a
    /// test's own cluster (once on the shared broker).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        self.create_topics_with(topics, &[]);
    }

    /// The same, each topic with `config` (e.g. `cleanup.policy`).
    pub fn create_topics_with(&self, topics: &[(&str, i32)], config: &[(&str, &str)]) {
        let replication = self.replication() as i32;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(name, p)| config.iter().fold(NewTopic::new(name, *p, TopicReplication::Fixed(replication)), |t, (k, v)| t.set(k, v)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let results = rt
            .block_on(admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))))
            .expect("CreateTopics");
        for r in results {
            if let Err((topic, code)) = r {
                assert_eq!(code, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "creating {topic}: {code}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.registry_server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_registry() -> (String, Child) {
    let home = std::env::var("HOME").unwrap_or_default();
    let bin = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("rivven-schema"))
        .chain([PathBuf::from(home).join(".cargo/bin/rivven-schema")])
        .find(|p| p.is_file())
        .expect("rivven-schema is not installed: run .ci/setup");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
    let child = Command::new(bin)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rivven-schema starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rivven-schema did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (format!("http://127.0.0.1:{port}"), child)
}
