//! The `[connectors]` section: which services perform a workflow's commands.
//!
//! ```toml
//! [topology]
//! builtin = "connectors"
//!
//! [connectors]
//! workflow = "topologies/document-approval.toml"   # its channels and result topics
//!
//! [connectors.decisions]
//! backend = "camunda8"                               # camunda8 | camunda7 | dsntk
//! url = "https://bru-2.zeebe.camunda.io/<cluster-id>"
//! auth = { type = "oauth", token_url = "https://login.cloud.camunda.io/oauth/token",
//!          client_id = "...", client_secret = "${ZEEBE_CLIENT_SECRET}", audience = "zeebe.camunda.io" }
//!
//! [connectors.tasks]
//! backend = "embedded"                               # camunda8 | camunda7 | embedded
//! ```
//!
//! A string `${NAME}` anywhere in the section is replaced by the environment variable `NAME`, so
//! secrets stay out of the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::auth::AuthConfig;
use super::resilience::RetryPolicy;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// The workflow definition whose commands these connectors perform.
    pub workflow: PathBuf,
    /// Bound of one outbound call (connect, send, read), ms. Default 10000. It is also the
    /// longest a call can hold the stream thread, and so the other partitions.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Retries for commands that carry no policy of their own.
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub decisions: Option<DecisionsConfig>,
    #[serde(default)]
    pub tasks: Option<TasksConfig>,
    #[serde(default)]
    pub alfresco: Option<AlfrescoConfig>,
    #[serde(default)]
    pub notifications: Option<NotificationsConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { attempts: default_attempts(), backoff_ms: default_backoff(), max_backoff_ms: default_max_backoff() }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.max(1),
            backoff: Duration::from_millis(self.backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open a service's circuit. Default 5.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before one probe, ms. Default 30000.
    #[serde(default = "default_open")]
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: default_threshold(), open_ms: default_open() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionBackend {
    Camunda8,
    Camunda7,
    Dsntk,
    /// CEL rules from `rules` (no service).
    Rules,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsConfig {
    pub backend: DecisionBackend,
    /// Camunda 8: the cluster's REST address (without `/v2`); Camunda 7: `.../engine-rest`;
    /// dsntk: `http://host:22022`. Not used by `rules`.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Camunda 8 multi-tenancy. Default: none.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// dsntk: decision id -> path under `/evaluate/` (e.g. `io/keyflow/documents/document-routing/Route`).
    #[serde(default)]
    pub paths: BTreeMap<String, String>,
    /// `rules`: decision id -> rules in order, the first that holds decides.
    #[serde(default)]
    pub rules: BTreeMap<String, Vec<super::decision::RuleConfig>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskBackend {
    Camunda8,
    Camunda7,
    /// Tasks are records on a Kafka topic; `keyflow tasks list|complete` acts on them.
    Embedded,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    pub backend: TaskBackend,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Camunda 8 and 7: the id (key) of the one-user-task process. Default `keyflow-human-task`.
    #[serde(default = "default_process")]
    pub process_id: String,
    /// How often open tasks are polled for completion, ms. Default 5000.
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// Embedded: the task topic. Default `<workflow>.human-tasks`.
    #[serde(default)]
    pub topic: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlfrescoConfig {
    /// e.g. `http://alfresco:8080`. Empty: no write-back (ingest only).
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Turn repository events into `DocumentUploaded` events. Default: off.
    #[serde(default)]
    pub ingest: Option<IngestConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// CloudEvents JSON from Alfresco's event gateway.
    pub input: String,
    /// `DocumentUploaded` events: Avro through `schema.registry.url` if set, else JSON.
    pub output: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// POST each notification here (JSON, `Idempotency-Key` header). Default: none (the
    /// notification topic is the product).
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub auth: AuthConfig,
}

fn default_timeout() -> u64 {
    10_000
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    1000
}
fn default_max_backoff() -> u64 {
    60_000
}
fn default_threshold() -> u32 {
    5
}
fn default_open() -> u64 {
    30_000
}
fn default_process() -> String {
    "keyflow-human-task".into()
}
fn default_poll() -> u64 {
    5000
}

/// Replaces every `${NAME}` string in `value` with the environment variable `NAME`.
///
/// # Errors
/// The variable is not set.
pub fn expand_env(value: &mut toml::Value, env: &impl Fn(&str) -> Option<String>) -> Result<(), String> {
    match value {
        toml::Value::String(s) => {
            if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                *s = env(name).ok_or_else(|| format!("[connectors] refers to ${{{name}}}, which is not set in the environment"))?;
            }
        }
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(_, v)| expand_env(v, env))?,
        toml::Value::Array(a) => a.iter_mut().try_for_each(|v| expand_env(v, env))?,
        _ => {}
    }
    Ok(())
}
