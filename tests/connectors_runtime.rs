//! The connectors on the real runtime (on Apache Kafka): while the decision service is
//! down, only the decision partitions wait; task commands on the same tasks keep flowing. When the
//! service returns, every decision is answered, once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{produce, read_all, unique, wait_until, PARTITIONS};
use keyflow::config::Config;
use keyflow::connectors::ConnectorsConfig;
use keyflow::kafka::TopicSpec;
use keyflow::runtime::{Guarantee, Instance};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DECISIONS: &str = "document-approval.decision-requests";
const DECISION_RESULTS: &str = "document-approval.decision-results";
const TASKS: &str = "document-approval.task-requests";
const HUMAN_TASKS: &str = "document-approval.human-tasks";
const EVALUATE: &str = "/v2/decision-definitions/evaluation";

#[test]
fn a_decision_outage_holds_only_decisions_and_answers_each_once_after_it() {
    keyflow::cli::init_tracing(0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let camunda = rt.block_on(MockServer::start());
    rt.block_on(
        Mock::given(method("POST"))
            .and(path(EVALUATE))
            .respond_with(ResponseTemplate::new(503).set_body_json(json!({"title": "UNAVAILABLE", "status": 503})))
            .mount(&camunda),
    );

    // A broker of this test's own: the workflow's topic names are fixed.
    let kafka = common::KafkaCluster::start(1);
    let bootstrap = kafka.bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_application(&unique("connectors"), &bootstrap, dir.path());
    config.processing_guarantee = Guarantee::ExactlyOnceV2;
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    config.topology.builtin = "connectors".into();
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml");
    let text = format!(
        "workflow = {:?}\ntimeout_ms = 2000\nretry = {{ attempts = 1000, backoff_ms = 200, max_backoff_ms = 1000 }}\nbreaker = {{ failure_threshold = 3, open_ms = 2000 }}\n\
         [decisions]\nbackend = \"camunda8\"\nurl = \"{}\"\n[tasks]\nbackend = \"embedded\"\n",
        workflow.display().to_string(),
        camunda.uri()
    );
    config.connectors = Some(toml::from_str::<ConnectorsConfig>(&text).unwrap());
    let topology = config.build_topology().unwrap();
    let topics = [DECISIONS, DECISION_RESULTS, TASKS, HUMAN_TASKS, "document-approval.task-results"];
    let mut specs: Vec<TopicSpec> =
        topics.iter().map(|t| TopicSpec { name: (*t).into(), partitions: PARTITIONS, compacted: false }).collect();
    specs.extend(keyflow::kafka::internal_topics(&config, &topology, PARTITIONS));
    common::create_topics(&bootstrap, &specs, &[]);

    let docs = 40;
    let command = |i: usize, body: Value| {
        let mut v = body;
        v["instanceId"] = json!(format!("doc-{i}"));
        v["workflow"] = json!("document-approval");
        v["at"] = json!(0);
        (1_700_000_000_000, format!("doc-{i}"), v.to_string().into_bytes())
    };
    let decisions: Vec<_> = (0..docs).map(|i| command(i, json!({"decisionKey": "document-routing", "variables": {"classification": "invoice"}, "idempotencyKey": format!("doc-{i}:3:0")}))).collect();
    let tasks: Vec<_> = (0..docs)
        .map(|i| command(i, json!({"name": "Review document", "candidateGroups": ["reviewers"], "idempotencyKey": format!("doc-{i}:4:0")})))
        .collect();
    produce(&bootstrap, DECISIONS, &decisions);
    produce(&bootstrap, TASKS, &tasks);

    let dlq = config.dlq_topic();
    let instance = Instance::start(config, topology).unwrap();
    // Every task command is performed although every partition also holds waiting decisions.
    wait_until("all task commands performed during the outage", Duration::from_secs(60), || {
        read_all(&bootstrap, HUMAN_TASKS).len() >= docs
    });
    assert!(read_all(&bootstrap, DECISION_RESULTS).is_empty(), "no decision answered while the service is down");
    let calls = rt.block_on(camunda.received_requests()).unwrap().len();

    // The service returns.
    rt.block_on(camunda.reset());
    let ok = json!({"decisionDefinitionId": "document-routing", "output": "{\"route\":\"auto-approve\"}", "failureMessage": "", "evaluatedDecisions": []});
    rt.block_on(Mock::given(method("POST")).and(path(EVALUATE)).respond_with(ResponseTemplate::new(200).set_body_json(ok)).mount(&camunda));
    wait_until("every decision answered", Duration::from_secs(60), || read_all(&bootstrap, DECISION_RESULTS).len() >= docs);
    std::thread::sleep(Duration::from_secs(1));
    instance.stop();
    instance.join().unwrap();

    let answers: Vec<Value> = read_all(&bootstrap, DECISION_RESULTS).iter().map(|(_, v)| serde_json::from_slice(v).unwrap()).collect();
    let ids: BTreeSet<&str> = answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), docs, "every decision answered");
    // (The mock broker would show an aborted batch's records too; nothing here makes the
    // runtime abort, so any duplicate would be the connectors' own.)
    assert_eq!(answers.len(), docs, "none doubled: {answers:?}");
    assert!(answers.iter().all(|a| a["outcome"]["route"] == "auto-approve"));
    assert!(read_all(&bootstrap, &dlq).is_empty(), "an outage dead-letters nothing");
    eprintln!("calls to the decision service during the outage: {calls}");
}
