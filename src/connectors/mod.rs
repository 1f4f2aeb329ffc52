//! Connectors: what performs a workflow's commands outside Kafka — decisions (Camunda 8,
//! Camunda 7, dsntk), human tasks (Camunda 8, Camunda 7, or embedded in a Kafka topic),
//! Alfresco (repository events in, metadata write-back out) and notification webhooks.
//!
//! They run as their own keyflow application (`[topology] builtin = "connectors"`), reading the
//! workflow's command topics and answering on its result topics: calls are slow and I/O-bound,
//! so they scale apart from the state machines, and an outage of a service only ever pauses the
//! partitions of commands that need it.

pub mod alfresco;
pub mod auth;
pub mod config;
pub mod decision;
pub mod embedded;
pub mod executor;
pub mod http;
pub mod poller;
pub mod resilience;
pub mod tasks;

use std::sync::Arc;
use std::time::Duration;

pub use config::ConnectorsConfig;

use crate::serde::{AvroSerde, Registry, Serde, SubjectStrategy};
use crate::state::StoreSpec;
use crate::topology::{Topology, TopologyBuilder};
use auth::{AuthConfig, Credentials};
use config::{DecisionBackend, TaskBackend};
use executor::{CommandProcessor, IngestProcessor, Perform};
use poller::{OPEN_TASKS, POLLER};
use resilience::{Attempts, CircuitBreaker};

/// The `DocumentUploaded` schema ingest writes (the newest version).
const DOCUMENT_UPLOADED: &str = include_str!("../../schemas/document/DocumentUploaded.v2.avsc");

/// The connectors' topology for `config`.
///
/// # Errors
/// The workflow cannot be loaded, or a setting is missing (the message names it).
pub fn topology(config: &ConnectorsConfig, registry: Option<&Arc<Registry>>) -> Result<Topology, String> {
    let def = crate::workflow::load(&config.workflow).map_err(|e| e.to_string())?;
    let http = http::client(Duration::from_millis(config.timeout_ms))?;
    let breaker = |service: &str| {
        Arc::new(CircuitBreaker::new(service, config.breaker.failure_threshold, Duration::from_millis(config.breaker.open_ms)))
    };
    let mut b = TopologyBuilder::new();
    let mut any = false;

    let channel = |b: TopologyBuilder, name: &'static str, perform: Perform, extra_sink: Option<String>| -> TopologyBuilder {
        let source = format!("in:{name}");
        let node = format!("perform:{name}");
        let topic = def.channel(name);
        let result = def.result_channel(name);
        let perform = Arc::new(perform);
        let service = breaker(name);
        let retry = config.retry.policy();
        let result_sink = result.as_ref().map(|t| format!("out:{t}"));
        let sink = result_sink.clone();
        let mut b = b.source(&source, &[&topic], Serde::String, Serde::Json).processor(
            &node,
            move || CommandProcessor {
                channel: name,
                perform: perform.clone(),
                breaker: service.clone(),
                default_retry: retry,
                result_sink: sink.clone(),
                attempts: Attempts::default(),
            },
            &[&source],
        );
        if let (Some(t), Some(s)) = (&result, &result_sink) {
            b = b.sink(s, t, Serde::String, Serde::Json, &[&node]);
        }
        if let Some(t) = extra_sink {
            b = b.sink(&format!("out:{t}"), &t, Serde::String, Serde::Json, &[&node]);
        }
        if name == "tasks" {
            b = b.store(StoreSpec::new(OPEN_TASKS), &[&node]).store(StoreSpec::new(POLLER), &[&node]);
        }
        b
    };

    if let Some(d) = &config.decisions {
        let credentials = Credentials::new(&d.auth, "");
        let service: Arc<dyn decision::DecisionService> = match d.backend {
            DecisionBackend::Camunda8 => {
                Arc::new(decision::Camunda8 { base_url: d.url.clone(), http: http.clone(), credentials, tenant_id: d.tenant_id.clone() })
            }
            DecisionBackend::Camunda7 => Arc::new(decision::Camunda7 { base_url: d.url.clone(), http: http.clone(), credentials }),
            DecisionBackend::Dsntk => Arc::new(decision::Dsntk { base_url: d.url.clone(), http: http.clone(), paths: d.paths.clone() }),
            DecisionBackend::Rules => Arc::new(decision::Rules::new(&d.rules)?),
        };
        b = channel(b, "decisions", Perform::Decision(service), None);
        any = true;
    }
    if let Some(t) = &config.tasks {
        let credentials = Credentials::new(&t.auth, "");
        let poll = Duration::from_millis(t.poll_interval_ms.max(1));
        let need_url = || {
            if t.url.is_empty() {
                Err("[connectors.tasks] url is required for a Camunda backend".to_owned())
            } else {
                Ok(t.url.clone())
            }
        };
        b = match t.backend {
            TaskBackend::Camunda8 => {
                let s = tasks::Camunda8Tasks { base_url: need_url()?, http: http.clone(), credentials, process_id: t.process_id.clone() };
                channel(b, "tasks", Perform::Task(Arc::new(s), poll), None)
            }
            TaskBackend::Camunda7 => channel(
                b,
                "tasks",
                Perform::Task(
                    Arc::new(tasks::Camunda7Tasks {
                        base_url: need_url()?,
                        http: http.clone(),
                        credentials,
                        process_key: t.process_id.clone(),
                    }),
                    poll,
                ),
                None,
            ),
            TaskBackend::Embedded => {
                let topic = embedded_task_topic(t, &def.name);
                channel(b, "tasks", Perform::EmbeddedTask { sink: format!("out:{topic}") }, Some(topic))
            }
        };
        any = true;
    }
    if let Some(a) = &config.alfresco {
        if !a.url.is_empty() {
            let credentials = Credentials::new(&a.auth, &alfresco::ticket_url(&a.url));
            let repo = alfresco::Alfresco { base_url: a.url.clone(), http: http.clone(), credentials };
            b = channel(b, "documents", Perform::Document(Arc::new(repo)), None);
            any = true;
        }
        if let Some(i) = &a.ingest {
            any = true;
            let value = match registry {
                Some(r) => {
                    let schema = apache_avro::Schema::parse_str(DOCUMENT_UPLOADED).map_err(|e| format!("DocumentUploaded schema: {e}"))?;
                    Serde::Avro(AvroSerde::new(r.clone(), Some(schema), SubjectStrategy::TopicName))
                }
                None => Serde::Json,
            };
            let sink = format!("out:{}", i.output);
            let s = sink.clone();
            b = b
                .source("in:alfresco", &[&i.input], Serde::String, Serde::Json)
                .processor("ingest:alfresco", move || IngestProcessor { sink: s.clone() }, &["in:alfresco"])
                .sink(&sink, &i.output, Serde::String, value, &["ingest:alfresco"]);
        }
    }
    if let Some(n) = &config.notifications {
        if let Some(url) = &n.webhook {
            let auth = match &n.auth {
                AuthConfig::None => None,
                AuthConfig::Basic { user, password } => Some((user.clone(), password.clone())),
                _ => return Err("[connectors.notifications] auth supports only `basic`".into()),
            };
            b = channel(b, "notifications", Perform::Webhook { url: url.clone(), http: http.clone(), auth }, None);
            any = true;
        }
    }
    if !any {
        return Err("[connectors] configures no connector: add decisions, tasks, alfresco or notifications".into());
    }
    b.build().map_err(|e| e.to_string())
}

/// The strings of a JSON array (aspect names, candidate groups); anything else in it, or a value
/// that is no array, gives none.
pub(crate) fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(serde_json::Value::as_array).into_iter().flatten().filter_map(serde_json::Value::as_str).map(str::to_owned).collect()
}

/// The embedded task topic of a workflow.
pub fn embedded_task_topic(t: &config::TasksConfig, workflow: &str) -> String {
    t.topic.clone().unwrap_or_else(|| format!("{workflow}.human-tasks"))
}
