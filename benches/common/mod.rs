//! What the benches share: a broker (a fresh in-process mock, or an external one such as tansu)
//! with one run's topics, each run with its own names.
//! Each bench uses part of it.
#![allow(dead_code)]

pub mod pipe;

use keyflow::builtin::status_tracker;
use keyflow::config::Config;
use keyflow::kafka::{self, MockProvisioner, Provisioner, TopicSpec};
use rdkafka::mocking::MockCluster;

/// Event `i` of the peer workload as (key, JSON value): key `doc-(i % keys)`, statuses cycling
/// once per round of keys, an amount of `i % 100`.
pub fn event(i: usize, keys: usize) -> (String, String) {
    const STATUSES: [&str; 4] = ["uploaded", "scanned", "classified", "approved"];
    (format!("doc-{}", i % keys), format!(r#"{{"status":"{}","amount":{}}}"#, STATUSES[(i / keys) % STATUSES.len()], i % 100))
}

/// The value of `--name` on the command line, if given.
pub fn arg(name: &str) -> Option<String> {
    let v: Vec<String> = std::env::args().collect();
    v.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

/// The number given as `--name N`, or `default`.
pub fn number(name: &str, default: usize) -> usize {
    arg(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} N: not a number: {v}")))
}

/// One run's broker and names: the status-tracker's input and output topics and its internal
/// topics exist.
pub struct Run {
    _mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub app: String,
}

impl Run {
    /// On a fresh mock broker (`bootstrap` None) or on the broker at `bootstrap`, through the
    /// admin API, with replication factor 1.
    pub fn new(bootstrap: Option<&str>, partitions: i32, app: &str) -> Run {
        let suffix = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let (input, output, app) = (format!("events-{suffix}"), format!("statuses-{suffix}"), format!("{app}-{suffix}"));
        let topics = [
            TopicSpec { name: input.clone(), partitions, compacted: false },
            TopicSpec { name: output.clone(), partitions, compacted: false },
        ];
        let topology = status_tracker::topology(&input, &output, 3_600_000);
        match bootstrap {
            None => {
                let c = MockCluster::new(1).unwrap();
                let bootstrap = c.bootstrap_servers();
                let config = Config::for_application(&app, &bootstrap, std::path::Path::new("unused"));
                MockProvisioner(&c).ensure(&topics).unwrap();
                MockProvisioner(&c).ensure(&kafka::internal_topics(&config, &topology, partitions)).unwrap();
                Run { _mock: Some(c), bootstrap, input, output, app }
            }
            Some(b) => {
                let mut config = Config::for_application(&app, b, std::path::Path::new("unused"));
                config.replication_factor = 1;
                let admin = kafka::AdminProvisioner::new(&config).unwrap();
                admin.ensure(&topics).unwrap();
                admin.ensure(&kafka::internal_topics(&config, &topology, partitions)).unwrap();
                Run { _mock: None, bootstrap: b.to_owned(), input, output, app }
            }
        }
    }

    /// Describes the broker for the report's header.
    pub fn broker(bootstrap: Option<&str>) -> String {
        bootstrap.map_or_else(|| "librdkafka mock broker (1 broker, in process)".to_owned(), |b| format!("broker at {b}"))
    }
}
