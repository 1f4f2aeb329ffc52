//! The connectors application of the document-approval workflow on a real broker: its config,
//! its topics, and the commands the workflow would send it.
#![allow(dead_code)]

use std::path::Path;

use keyflow::config::Config;
use keyflow::connectors::ConnectorsConfig;
use keyflow::kafka::TopicSpec;
use keyflow::runtime::Guarantee;
use keyflow::Topology;
use serde_json::{json, Value};

use super::{create_topics, unique, PARTITIONS};

pub const DECISIONS: &str = "document-approval.decision-requests";
pub const DECISION_RESULTS: &str = "document-approval.decision-results";
pub const TASKS: &str = "document-approval.task-requests";
pub const TASK_RESULTS: &str = "document-approval.task-results";
pub const HUMAN_TASKS: &str = "document-approval.human-tasks";

/// An exactly-once connectors application on `bootstrap` whose `[connectors]` section is
/// `section` (after `workflow`, which names document-approval), with the workflow's command and
/// result topics and the application's internal topics created.
pub fn app(bootstrap: &str, state_dir: &Path, prefix: &str, section: &str) -> (Config, Topology) {
    let mut config = Config::for_application(&unique(prefix), bootstrap, state_dir);
    config.processing_guarantee = Guarantee::ExactlyOnceV2;
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    config.topology.builtin = "connectors".into();
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml");
    let text = format!("workflow = {:?}\n{section}", workflow.display().to_string());
    config.connectors = Some(toml::from_str::<ConnectorsConfig>(&text).unwrap());
    let topology = config.build_topology().unwrap();
    let mut specs: Vec<TopicSpec> = [DECISIONS, DECISION_RESULTS, TASKS, TASK_RESULTS, HUMAN_TASKS]
        .iter()
        .map(|t| TopicSpec { name: (*t).into(), partitions: PARTITIONS, compacted: false })
        .collect();
    specs.extend(keyflow::kafka::internal_topics(&config, &topology, PARTITIONS));
    create_topics(bootstrap, &specs, &[]);
    (config, topology)
}

/// A command of document `doc-<i>`'s workflow instance, as (timestamp, key, value) to produce.
pub fn command(i: usize, body: Value) -> (i64, String, Vec<u8>) {
    let mut v = body;
    v["instanceId"] = json!(format!("doc-{i}"));
    v["workflow"] = json!("document-approval");
    v["at"] = json!(0);
    (1_700_000_000_000, format!("doc-{i}"), v.to_string().into_bytes())
}
