//! The suite's brokers: Apache Kafka run by `tests/kafka/broker.sh` (the broker
//! `tests/kafka/with-broker.sh` started for the run, or nodes of the test's own). Nothing is
//! skipped: a test whose broker cannot start fails.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::kafka_broker::{self, KafkaCluster};

pub struct Cluster {
    pub bootstrap: String,
    kafka: KafkaCluster,
}

impl Cluster {
    /// The suite's Kafka (or one of this test's own when the suite has none).
    ///
    /// # Panics
    /// When it cannot start.
    pub fn start(test: &str) -> Cluster {
        let kafka = kafka_broker::shared();
        eprintln!("{test}: Apache Kafka at {}", kafka.bootstrap);
        Cluster { bootstrap: kafka.bootstrap.clone(), kafka }
    }

    /// Kafka nodes of this test's own (3 for one that survives losing a node).
    pub fn own(test: &str, nodes: usize) -> Cluster {
        let kafka = KafkaCluster::start(nodes);
        eprintln!("{test}: Apache Kafka, {nodes} node(s) of its own, at {}", kafka.bootstrap);
        Cluster { bootstrap: kafka.bootstrap.clone(), kafka }
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
