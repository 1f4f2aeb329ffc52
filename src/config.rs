//! Configuration: one TOML file plus `KEYFLOW_*` environment overrides, named as Kafka Streams
//! names things (`application.id`, `processing.guarantee`, `state.dir`, `commit.interval.ms`).
//!
//! ```toml
//! application.id = "doc-approval"
//! bootstrap.servers = "kafka-1:9092,kafka-2:9092"
//! processing.guarantee = "exactly_once_v2"
//!
//! [topology]
//! builtin = "status-tracker"
//!
//! [consumer]            # passed to librdkafka as they are
//! fetch.min.bytes = 1
//! ```
//!
//! An environment variable `KEYFLOW_COMMIT_INTERVAL_MS=500` sets `commit.interval.ms`;
//! `KEYFLOW_CONSUMER_FETCH_MIN_BYTES=1` sets `fetch.min.bytes` in `[consumer]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::runtime::Guarantee;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Sections whose keys are not flattened into the top level.
const SECTIONS: [&str; 5] = ["topology", "client", "consumer", "producer", "admin"];

/// librdkafka settings keyflow owns: setting them in `[client]`, `[consumer]`, `[producer]` or
/// `[admin]` is an error.
const MANAGED: [&str; 8] = [
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transactional.id",
    "bootstrap.servers",
    "enable.partition.eof",
];

/// librdkafka pass-through settings. `Debug` redacts secrets.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaProps(pub BTreeMap<String, String>);

impl fmt::Debug for KafkaProps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            let secret = ["password", "secret", "jaas", "token", "key.pem", "credentials"].iter().any(|s| k.contains(s));
            m.entry(k, &if secret { "<redacted>" } else { v.as_str() });
        }
        m.finish()
    }
}

/// Which topology `keyflow run` runs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// A workflow definition (`topologies/*.toml`); when set, `builtin` and the topics below are
    /// not used. Default: none.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Older versions of `file`'s workflow whose instances are still running: each instance runs
    /// by the version it started on (see `workflow::versions`). Default: none.
    #[serde(default)]
    pub versions: Vec<PathBuf>,
    /// A topology that ships with keyflow. Default `status-tracker`.
    #[serde(default = "default_builtin")]
    pub builtin: String,
    /// Input topic. Default `events`.
    #[serde(default = "default_input")]
    pub input: String,
    /// Output topic. Default `statuses`.
    #[serde(default = "default_output")]
    pub output: String,
    /// SLA before escalation, ms of stream time. Default 48 h.
    #[serde(rename = "sla.ms", default = "default_sla")]
    pub sla_ms: i64,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            file: None,
            versions: Vec::new(),
            builtin: default_builtin(),
            input: default_input(),
            output: default_output(),
            sla_ms: default_sla(),
        }
    }
}

fn default_builtin() -> String {
    "status-tracker".into()
}
fn default_input() -> String {
    "events".into()
}
fn default_output() -> String {
    "statuses".into()
}
fn default_sla() -> i64 {
    48 * 3600 * 1000
}

/// The whole configuration of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Consumer group id, prefix of internal topics and of the transactional id. Required.
    #[serde(rename = "application.id")]
    pub application_id: String,
    /// Kafka brokers. Required for `keyflow run`.
    #[serde(rename = "bootstrap.servers", default)]
    pub bootstrap_servers: String,
    /// `at_least_once` (default) or `exactly_once_v2`.
    #[serde(rename = "processing.guarantee", default)]
    pub processing_guarantee: Guarantee,
    /// Where RocksDB stores live: `<state.dir>/<application.id>/0_<partition>/<store>`. Default `state`.
    #[serde(rename = "state.dir", default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Memory of all RocksDB stores of the instance together: one block cache, memtables charged
    /// to it and at most half of it (see `state::StoreMemory`). Default 64 MiB.
    #[serde(rename = "state.rocksdb.memory.bytes", default = "default_rocksdb_memory")]
    pub rocksdb_memory_bytes: usize,
    /// How often to commit. Default 100 ms under exactly-once, 30 s otherwise (as Kafka Streams).
    #[serde(rename = "commit.interval.ms", default)]
    commit_interval_ms: Option<u64>,
    /// A stable id for this instance: enables static membership (`group.instance.id`), so a
    /// restarted instance gets its partitions back without a rebalance. Default: none.
    #[serde(rename = "instance.id", default)]
    pub instance_id: Option<String>,
    /// Dead-letter topic. Default `<application.id>-dlq`.
    #[serde(rename = "dlq.topic", default)]
    dlq_topic: Option<String>,
    /// How often wall-clock timers are checked. Default 1000 ms.
    #[serde(rename = "wall.clock.punctuation.interval.ms", default = "default_punctuation")]
    punctuation_interval_ms: u64,
    /// Timeout of blocking Kafka calls (transactions, flush, offset commit). Default 30000 ms.
    #[serde(rename = "kafka.call.timeout.ms", default = "default_call_timeout")]
    call_timeout_ms: u64,
    /// A local checkpoint older than this is not trusted: the store is restored from the start
    /// of its changelog. The log cleaner drops tombstones `delete.retention.ms` (24 h by default)
    /// after cleaning them, and a restore from before a dropped tombstone brings its key back.
    /// Default 43200000 (12 h): keep it under the changelogs' `delete.retention.ms`.
    #[serde(rename = "state.checkpoint.max.age.ms", default = "default_checkpoint_max_age")]
    checkpoint_max_age_ms: u64,
    /// How long a stop (SIGTERM, SIGINT) may take to commit and leave the group before the
    /// process exits anyway, as a crash would (the next owner restores; nothing committed is
    /// lost). Default 8000 ms: inside the usual 10 s an orchestrator waits before SIGKILL.
    #[serde(rename = "shutdown.timeout.ms", default = "default_shutdown_timeout")]
    shutdown_timeout_ms: u64,
    /// Create missing internal topics (changelogs, DLQ) at start. Default true.
    #[serde(rename = "topics.provision", default = "default_true")]
    pub provision_topics: bool,
    /// Replication factor of created internal topics. Default -1: the broker's
    /// `default.replication.factor` (Kafka Streams' default).
    #[serde(rename = "replication.factor", default = "default_replication")]
    pub replication_factor: i32,
    /// Schema registry for Avro serdes: `http(s)://...` or `mock://<scope>`. Default: none.
    #[serde(rename = "schema.registry.url", default)]
    schema_registry_url: Option<String>,
    /// `user:password` for the registry's basic auth. Redacted in logs.
    #[serde(rename = "schema.registry.basic.auth.user.info", default)]
    schema_registry_basic_auth: Option<Secret>,
    /// Bearer token for the registry. Redacted in logs.
    #[serde(rename = "schema.registry.bearer.auth.token", default)]
    schema_registry_bearer_token: Option<Secret>,
    /// `topic` (default), `record` or `topic-record`: how Avro subjects are named.
    #[serde(rename = "subject.name.strategy", default = "default_strategy")]
    pub subject_name_strategy: String,
    #[serde(default)]
    pub topology: TopologyConfig,
    /// librdkafka settings every Kafka client keyflow builds takes: the home of
    /// `security.protocol`, `sasl.*` and `ssl.*` (see `kafka::clients`).
    #[serde(default)]
    pub client: KafkaProps,
    /// librdkafka consumer settings, passed through: they add to `[client]` or override it for
    /// every consumer keyflow builds.
    #[serde(default)]
    pub consumer: KafkaProps,
    /// librdkafka producer settings, passed through, as `[consumer]` for producers.
    #[serde(default)]
    pub producer: KafkaProps,
    /// librdkafka admin client settings, passed through, as `[consumer]` for the admin client.
    #[serde(default)]
    pub admin: KafkaProps,
    /// Serve the web console (`/`), `/metrics`, `/health`, `/ready` and `/workflows/{id}` on this
    /// `host:port`: keep it on loopback or a private network. Default: none (no HTTP endpoint).
    #[serde(rename = "http.listen", default)]
    pub http_listen: Option<String>,
    /// The other instances' HTTP addresses (`http://host:port`): a `/workflows/{id}` query this
    /// instance cannot answer is asked of them. Default: none.
    #[serde(rename = "http.peers", default, deserialize_with = "list_or_commas")]
    pub http_peers: Vec<String>,
    /// The token the web console needs to read data and to change it (redrive, purge dead
    /// letters): sent as `Authorization: Bearer <token>`; the probes and the page itself need
    /// none. Without it the console reads without a token and changes nothing. Redacted in logs.
    #[serde(rename = "http.auth.token", default)]
    pub http_auth_token: Option<Secret>,
    /// The names the HTTP endpoint answers to in a request's `Host` header (without the port).
    /// Default: on a loopback `http.listen`, the loopback names; else any.
    #[serde(rename = "http.allowed.hosts", default, deserialize_with = "list_or_commas")]
    pub http_allowed_hosts: Vec<String>,
    /// Services that perform a workflow's commands (`[topology] builtin = "connectors"`).
    #[serde(default)]
    pub connectors: Option<crate::connectors::ConnectorsConfig>,
}

fn default_strategy() -> String {
    "topic".into()
}

/// A secret setting: readable by the code that needs it, never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A list, or one string of comma-separated items (as an environment variable gives it).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(l) => l,
        Either::Text(t) => t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
    })
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}
fn default_rocksdb_memory() -> usize {
    crate::state::StoreMemory::DEFAULT_BYTES
}

fn default_punctuation() -> u64 {
    1000
}
fn default_call_timeout() -> u64 {
    30_000
}
fn default_checkpoint_max_age() -> u64 {
    12 * 3600 * 1000
}
fn default_shutdown_timeout() -> u64 {
    8_000
}
fn default_true() -> bool {
    true
}
/// The broker's `default.replication.factor`, as Kafka Streams' default (-1): the same file
/// works on a developer's one-node broker and on a production cluster.
fn default_replication() -> i32 {
    -1
}

impl Config {
    /// Reads `path`, applies `KEYFLOW_*` variables from `env`, validates.
    ///
    /// # Errors
    /// [`Error`] naming the file, the key or the rule broken.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Like [`Config::load`], from text.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(text: &str, origin: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, Error> {
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| Error::Syntax { path: origin.to_owned(), message: e.to_string() })?;
        let mut flat = flatten_top(table)?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        if let Some(c) = flat.get_mut("connectors") {
            let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            crate::connectors::config::expand_env(c, &lookup).map_err(Error::Invalid)?;
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("KEYFLOW_") else { continue };
            let dotted = rest.to_ascii_lowercase().replace('_', ".");
            let section = SECTIONS.iter().find(|s| dotted.starts_with(&format!("{s}.")));
            // librdkafka settings are text, kept as given: a password such as `1e3` or `0x1F`
            // must not be read as a number and written back as another.
            let value = match section {
                Some(s) if *s != "topology" => toml::Value::String(value),
                _ => parse_env_value(&value),
            };
            match section {
                Some(section) => {
                    let key = dotted[section.len() + 1..].to_owned();
                    let t = flat.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(t) = t {
                        t.insert(key, value);
                    }
                }
                None => {
                    flat.insert(dotted, value);
                }
            }
        }
        for section in ["client", "consumer", "producer", "admin"] {
            if let Some(toml::Value::Table(t)) = flat.get_mut(section) {
                let strings: toml::Table = std::mem::take(t)
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            toml::Value::String(match v {
                                toml::Value::String(s) => s,
                                other => other.to_string(),
                            }),
                        )
                    })
                    .collect();
                *t = strings;
            }
        }
        let config: Config = toml::Value::Table(flat).try_into().map_err(|e: toml::de::Error| Error::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.application_id.is_empty() || !self.application_id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return bad(format!("application.id `{}` must be non-empty and use only letters, digits, `.`, `_`, `-`", self.application_id));
        }
        if self.commit_interval_ms == Some(0) {
            return bad("commit.interval.ms must be at least 1".into());
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return bad(format!("replication.factor must be -1 (the broker's default) or at least 1, not {}", self.replication_factor));
        }
        if self.punctuation_interval_ms == 0 {
            return bad("wall.clock.punctuation.interval.ms must be at least 1".into());
        }
        if let Err(e) = self.subject_name_strategy.parse::<crate::serde::SubjectStrategy>() {
            return bad(format!("subject.name.strategy: {e}"));
        }
        if let Some(url) = &self.schema_registry_url {
            if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("mock://")) {
                return bad(format!("schema.registry.url `{url}` must start with http://, https:// or mock://"));
            }
        }
        if self.topology.sla_ms <= 0 {
            return bad("topology.sla.ms must be positive".into());
        }
        for (section, props) in
            [("client", &self.client), ("consumer", &self.consumer), ("producer", &self.producer), ("admin", &self.admin)]
        {
            if let Some(k) = props.0.keys().find(|k| MANAGED.contains(&k.as_str())) {
                return bad(format!("[{section}] {k} is set by keyflow; remove it (see README, configuration)"));
            }
        }
        Ok(())
    }

    /// A minimal config for the embedded demo and tests.
    pub fn for_application(application_id: &str, bootstrap_servers: &str, state_dir: &Path) -> Config {
        let mut c = Config::parse(&format!("application.id = \"{application_id}\""), "defaults", []).expect("valid defaults");
        c.bootstrap_servers = bootstrap_servers.to_owned();
        c.state_dir = state_dir.to_owned();
        c
    }

    /// The topology to run: the workflow definition if `[topology] file` is set, else the built-in.
    ///
    /// # Errors
    /// A definition error (file, line, problem), a registry that cannot be set up, or an unknown
    /// built-in.
    pub fn build_topology(&self) -> Result<crate::Topology, String> {
        let t = &self.topology;
        match &t.file {
            Some(f) => {
                let registry = self.registry().map(|r| crate::serde::Registry::new(&r)).transpose().map_err(|e| e.to_string())?;
                let versions = crate::workflow::versions::load(f, &t.versions).map_err(|e| e.to_string())?;
                crate::workflow::compile_versions(versions, registry.as_ref()).map_err(|e| e.to_string())
            }
            None if t.builtin == "connectors" => {
                let c = self.connectors.as_ref().ok_or("[topology] builtin = \"connectors\" needs a [connectors] section")?;
                let registry = self.registry().map(|r| crate::serde::Registry::new(&r)).transpose().map_err(|e| e.to_string())?;
                crate::connectors::topology(c, registry.as_ref())
            }
            None => crate::builtin::by_name(&t.builtin, &t.input, &t.output, t.sla_ms),
        }
    }

    /// How every Kafka client reaches the cluster: `bootstrap.servers`, `[client]`, and the
    /// settings per kind of client.
    pub fn clients(&self) -> crate::kafka::Clients {
        crate::kafka::Clients {
            bootstrap: self.bootstrap_servers.clone(),
            common: self.client.clone(),
            consumer: self.consumer.clone(),
            producer: self.producer.clone(),
            admin: self.admin.clone(),
        }
    }

    /// The schema registry settings, if a registry is configured.
    pub fn registry(&self) -> Option<crate::serde::RegistryConfig> {
        self.schema_registry_url.as_ref().map(|url| crate::serde::RegistryConfig {
            url: url.clone(),
            basic_auth_user_info: self.schema_registry_basic_auth.as_ref().map(|s| s.expose().to_owned()),
            bearer_auth_token: self.schema_registry_bearer_token.as_ref().map(|s| s.expose().to_owned()),
        })
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.unwrap_or(match self.processing_guarantee {
            Guarantee::ExactlyOnceV2 => 100,
            Guarantee::AtLeastOnce => 30_000,
        }))
    }

    pub fn set_commit_interval(&mut self, interval: Duration) {
        self.commit_interval_ms = Some(interval.as_millis().max(1) as u64);
    }

    pub fn dlq_topic(&self) -> String {
        self.dlq_topic.clone().unwrap_or_else(|| format!("{}-dlq", self.application_id))
    }

    pub fn set_punctuation_interval(&mut self, interval: Duration) {
        self.punctuation_interval_ms = interval.as_millis().max(1) as u64;
    }

    pub fn punctuation_interval(&self) -> Duration {
        Duration::from_millis(self.punctuation_interval_ms)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn checkpoint_max_age(&self) -> Duration {
        Duration::from_millis(self.checkpoint_max_age_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The producer's `transaction.timeout.ms` (`[producer]`, else keyflow's 10 s): an open
    /// transaction older than this is aborted by the coordinator, so commits come well before.
    pub fn transaction_timeout(&self) -> Duration {
        let ms = self.producer.0.get("transaction.timeout.ms").and_then(|v| v.parse().ok());
        Duration::from_millis(ms.unwrap_or(crate::kafka::TRANSACTION_TIMEOUT_MS))
    }

    /// The producer's `message.max.bytes` (`[producer]`, else librdkafka's default).
    pub fn producer_max_bytes(&self) -> usize {
        self.producer.0.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(crate::runtime::DEFAULT_MAX_BYTES)
    }

    /// `<state.dir>/<application.id>`.
    pub fn app_state_dir(&self) -> PathBuf {
        self.state_dir.join(&self.application_id)
    }
}

/// Turns nested tables made by dotted keys (`commit.interval.ms = 1` is `{commit: {interval:
/// {ms: 1}}}` in TOML) back into dotted names, keeping the sections as tables.
fn flatten_top(table: toml::Table) -> Result<toml::Table, Error> {
    let mut out = toml::Table::new();
    for (k, v) in table {
        if k == "connectors" {
            // Nested tables of its own (see `connectors::config`): kept as written.
            out.insert(k, v);
        } else if SECTIONS.contains(&k.as_str()) {
            let toml::Value::Table(inner) = v else {
                return Err(Error::Invalid(format!("`{k}` must be a table ([{k}])")));
            };
            let mut flat = toml::Table::new();
            flatten_into(&mut flat, "", inner);
            out.insert(k, toml::Value::Table(flat));
        } else {
            flatten_into(&mut out, "", toml::Table::from_iter([(k, v)]));
        }
    }
    Ok(out)
}

fn flatten_into(out: &mut toml::Table, prefix: &str, table: toml::Table) {
    for (k, v) in table {
        let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten_into(out, &name, t),
            other => {
                out.insert(name, other);
            }
        }
    }
}

/// An environment value as TOML if it reads as a number or boolean, else as a string.
fn parse_env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_))) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests;
