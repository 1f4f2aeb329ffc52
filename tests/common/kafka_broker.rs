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
        Ok(bootstrap) if !bootstrap.is_empty() => {
            KafkaCluster { bootstrap, client: Vec::new(), nodes: Vec::new(), env: Vec::new(), _dir: None }
        }
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
    /// What a client needs besides `bootstrap.servers` (none on a plaintext cluster).
    pub client: Vec<(String, String)>,
    nodes: Vec<Node>,
    /// How the nodes are started: `KAFKA_*` variables of `tests/kafka/broker.sh`.
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The SCRAM user the clients of a secured cluster log in as.
pub const SCRAM_USER: &str = "keyflow";
pub const SCRAM_PASSWORD: &str = "keyflow-scram-secret";

impl KafkaCluster {
    /// Starts `n` nodes (1, or 3 for a cluster that survives losing one) and waits until every
    /// one of them serves metadata.
    ///
    /// # Panics
    /// When the broker cannot start: the jars are missing (run `.ci/setup`) or Java fails.
    pub fn start(n: usize) -> KafkaCluster {
        Self::start_with(n, Vec::new(), Vec::new(), tempfile::tempdir().expect("temporary directory"))
    }

    /// One node whose only client listener is SASL_SSL: SCRAM-SHA-512 credentials created when
    /// the node is formatted, and a certificate for 127.0.0.1 signed by a CA of the test's own
    /// (made with the JDK's `keytool`, which the broker's Java brings). Clients log in as
    /// [`SCRAM_USER`] and trust `<dir>/ca.pem`; [`KafkaCluster::client`] says how.
    pub fn start_secure() -> KafkaCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let keytool = |args: &[&str]| {
            let out = Command::new("keytool").args(args).current_dir(&pki).output().expect("keytool (the JDK's) runs");
            assert!(out.status.success(), "keytool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let pass = "keystore-pass";
        let store = |name: &str| ["-storetype", "PKCS12", "-keystore", name, "-storepass", pass, "-keypass", pass].map(str::to_owned);
        let run = |base: &[&str], extra: [String; 8]| {
            let args: Vec<&str> = base.iter().copied().chain(extra.iter().map(String::as_str)).collect();
            keytool(&args);
        };
        run(
            &[
                "-genkeypair",
                "-alias",
                "ca",
                "-keyalg",
                "RSA",
                "-keysize",
                "2048",
                "-dname",
                "CN=keyflow test CA",
                "-ext",
                "bc:c",
                "-validity",
                "3",
            ],
            store("ca.p12"),
        );
        run(&["-exportcert", "-rfc", "-alias", "ca", "-file", "ca.pem"], store("ca.p12"));
        run(
            &["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=localhost", "-validity", "3"],
            store("broker.p12"),
        );
        run(&["-certreq", "-alias", "broker", "-file", "broker.csr"], store("broker.p12"));
        run(
            &[
                "-gencert",
                "-alias",
                "ca",
                "-infile",
                "broker.csr",
                "-outfile",
                "broker.pem",
                "-rfc",
                "-ext",
                "SAN=IP:127.0.0.1,DNS:localhost",
                "-validity",
                "3",
            ],
            store("ca.p12"),
        );
        run(&["-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem"], store("broker.p12"));
        run(&["-importcert", "-noprompt", "-alias", "broker", "-file", "broker.pem"], store("broker.p12"));
        run(&["-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem"], store("trust.p12"));
        let p = |name: &str| pki.join(name).display().to_string();
        let server = format!(
            "sasl.enabled.mechanisms=SCRAM-SHA-512\nsasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"broker\" password=\"broker-scram-secret\";\n\
             ssl.keystore.type=PKCS12\nssl.keystore.location={}\nssl.keystore.password={pass}\nssl.key.password={pass}\n\
             ssl.truststore.type=PKCS12\nssl.truststore.location={}\nssl.truststore.password={pass}\n",
            p("broker.p12"),
            p("trust.p12")
        );
        let env = vec![
            ("KAFKA_LISTENER_PROTOCOL".to_owned(), "SASL_SSL".to_owned()),
            (
                "KAFKA_SCRAM".to_owned(),
                format!(
                    "SCRAM-SHA-512=[name=broker,password=broker-scram-secret] SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"
                ),
            ),
            ("KAFKA_SERVER_PROPS".to_owned(), server),
        ];
        let client = [
            ("security.protocol", "SASL_SSL".to_owned()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_owned()),
            ("sasl.username", SCRAM_USER.to_owned()),
            ("sasl.password", SCRAM_PASSWORD.to_owned()),
            ("ssl.ca.location", p("ca.pem")),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        Self::start_with(1, env, client, dir)
    }

    /// A client configuration for this cluster: `bootstrap.servers` and [`KafkaCluster::client`].
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    fn start_with(n: usize, env: Vec<(String, String)>, client: Vec<(String, String)>, dir: tempfile::TempDir) -> KafkaCluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port_pair()).collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| Node { id: i + 1, port, dir: dir.path().join(format!("node-{}", i + 1)), child: None })
            .collect();
        let bootstrap = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let mut cluster = KafkaCluster { bootstrap, client, nodes, env, _dir: Some(dir) };
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
        cmd.env("KAFKA_HEAP", heap).envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
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
        let consumer: BaseConsumer = self.client_config().create().expect("metadata client");
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
