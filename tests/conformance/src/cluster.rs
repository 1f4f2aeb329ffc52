//! A one-node KRaft Kafka (and optionally a Schema Registry beside it) in containers, or the
//! brokers named by `KEYFLOW_CONFORMANCE_BOOTSTRAP` / `KEYFLOW_CONFORMANCE_REGISTRY`.

use std::net::TcpListener;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt, TestcontainersError};

pub const KAFKA_IMAGE: (&str, &str) = ("apache/kafka", "3.9.1");
pub const REGISTRY_IMAGE: (&str, &str) = ("confluentinc/cp-schema-registry", "7.7.1");

pub struct Cluster {
    pub bootstrap: String,
    pub registry: Option<String>,
    // Dropped last: the containers (and their network) are removed with the cluster.
    _containers: Vec<Container<GenericImage>>,
}

impl Cluster {
    /// Kafka (and a Schema Registry when `registry`), or `None` after printing why the test
    /// cannot run here.
    pub fn start(test: &str, registry: bool) -> Option<Cluster> {
        if let Ok(bootstrap) = std::env::var("KEYFLOW_CONFORMANCE_BOOTSTRAP") {
            let registry = std::env::var("KEYFLOW_CONFORMANCE_REGISTRY").ok();
            eprintln!("{test}: against the brokers at {bootstrap} (KEYFLOW_CONFORMANCE_BOOTSTRAP)");
            return Some(Cluster { bootstrap, registry, _containers: Vec::new() });
        }
        match Self::containers(registry) {
            Ok(c) => Some(c),
            Err(e) if no_engine(&e) => {
                eprintln!("SKIPPED {test}: no Docker engine reachable ({e}); the real-Kafka conformance suite needs one (or KEYFLOW_CONFORMANCE_BOOTSTRAP)");
                None
            }
            Err(e) => panic!("{test}: starting the containers failed: {e}"),
        }
    }

    fn containers(with_registry: bool) -> Result<Cluster, TestcontainersError> {
        let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
        let (network, kafka_name) = (format!("keyflow-conformance-{tag}"), format!("kafka-{tag}"));
        // Clients on the host reach the broker on a host port fixed before the start, so the
        // broker can advertise it; containers on the network use the BROKER listener.
        let host_port = free_port();
        let kafka = GenericImage::new(KAFKA_IMAGE.0, KAFKA_IMAGE.1)
            .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"))
            .with_network(&network)
            .with_container_name(&kafka_name)
            .with_mapped_port(host_port, 9092.tcp())
            .with_env_var("CLUSTER_ID", "5L6g3nShT-eMCtK--X86sw")
            .with_env_var("KAFKA_NODE_ID", "1")
            .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env_var("KAFKA_LISTENERS", "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094")
            .with_env_var("KAFKA_ADVERTISED_LISTENERS", format!("PLAINTEXT://127.0.0.1:{host_port},BROKER://{kafka_name}:9093"))
            .with_env_var("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT")
            .with_env_var("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER")
            .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9094")
            .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
            // Look for timed-out transactions every second (default 10 s), so the timeout test
            // does not wait on the sweep.
            .with_env_var("KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS", "1000")
            .with_startup_timeout(Duration::from_secs(180))
            .start()?;
        let bootstrap = format!("127.0.0.1:{host_port}");
        let mut containers = vec![kafka];
        let mut registry = None;
        if with_registry {
            let sr = GenericImage::new(REGISTRY_IMAGE.0, REGISTRY_IMAGE.1)
                .with_exposed_port(8081.tcp())
                .with_wait_for(WaitFor::message_on_either_std("Server started, listening for requests"))
                .with_network(&network)
                .with_container_name(format!("schema-registry-{tag}"))
                .with_env_var("SCHEMA_REGISTRY_HOST_NAME", format!("schema-registry-{tag}"))
                .with_env_var("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", format!("PLAINTEXT://{kafka_name}:9093"))
                .with_env_var("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
                .with_startup_timeout(Duration::from_secs(180))
                .start()?;
            registry = Some(format!("http://127.0.0.1:{}", sr.get_host_port_ipv4(8081)?));
            containers.push(sr);
        }
        Ok(Cluster { bootstrap, registry, _containers: containers })
    }

    /// Whether these are the suite's own containers (real Apache Kafka and Confluent Schema
    /// Registry), rather than brokers named by the environment: only then do tests also insist
    /// that the fault they injected was seen (a local broker may not model it at all).
    pub fn is_reference(&self) -> bool {
        !self._containers.is_empty()
    }

    /// Creates `topics` (name, partitions) with replication factor 1, if they do not exist.
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let new: Vec<NewTopic> = topics.iter().map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1))).collect();
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

/// Whether `e` says there is no Docker engine to talk to (as opposed to one that failed).
fn no_engine(e: &TestcontainersError) -> bool {
    use testcontainers::core::error::ClientError;
    match e {
        TestcontainersError::Client(ClientError::Init(_) | ClientError::Configuration(_) | ClientError::InvalidDockerHost(_)) => true,
        // bollard reports a missing socket or a refused connection on the first request.
        TestcontainersError::Client(c) => {
            let text = format!("{c:?}");
            ["SocketNotFound", "Connection refused", "No such file or directory"].iter().any(|s| text.contains(s))
        }
        _ => false,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
