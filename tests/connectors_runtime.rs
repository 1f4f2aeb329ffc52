//! The connectors on the real runtime (on Apache Kafka): while the decision service is
//! down, only the decision partitions wait; task commands on the same tasks keep flowing. When the
//! service returns, every decision is answered, once.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::connectors::{self, DECISIONS, DECISION_RESULTS, HUMAN_TASKS, TASKS};
use common::{produce, read_all, wait_until};

use keyflow::runtime::Instance;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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
    let section = format!(
        "timeout_ms = 2000\nretry = {{ attempts = 1000, backoff_ms = 200, max_backoff_ms = 1000 }}\nbreaker = {{ failure_threshold = 3, open_ms = 2000 }}\n\
         [decisions]\nbackend = \"camunda8\"\nurl = \"{}\"\n[tasks]\nbackend = \"embedded\"\n",
        camunda.uri()
    );
    let (config, topology) = connectors::app(&bootstrap, dir.path(), "connectors", &section);

    let docs = 40;
    let command = connectors::command;
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
