//! The connectors application in the test driver, next to the document-approval workflow: commands
//! flow from the workflow to the connectors and answers flow back (`shuttle`), against recorded
//! Camunda services. An outage of the decision service, a decision refused for good, and the
//! human-task completion poller across a crash.

use std::path::Path;

use keyflow::connectors::{self, ConnectorsConfig};
use keyflow::testing::{DriverConfig, StoredRecord, TopologyTestDriver};
use keyflow::workflow::{self, Instance};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DECISIONS: &str = "document-approval.decision-requests";
const DECISION_RESULTS: &str = "document-approval.decision-results";
const TASKS: &str = "document-approval.task-requests";
const TASK_RESULTS: &str = "document-approval.task-results";

fn workflow_driver() -> TopologyTestDriver {
    let def = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    TopologyTestDriver::new(
        workflow::compile(def, None).unwrap(),
        DriverConfig { application_id: "docs".into(), partitions: 2, ..DriverConfig::default() },
    )
}

fn connectors_driver(sections: &str) -> TopologyTestDriver {
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml");
    let text = format!("workflow = {:?}\ntimeout_ms = 2000\n{sections}", workflow.display().to_string());
    let config: ConnectorsConfig = toml::from_str(&text).unwrap();
    TopologyTestDriver::new(
        connectors::topology(&config, None).unwrap(),
        DriverConfig { application_id: "docs-connectors".into(), partitions: 2, ..DriverConfig::default() },
    )
}

fn values(records: &[StoredRecord]) -> Vec<Value> {
    records.iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect()
}

/// Moves what `from` committed to `topic` into `to`, as Kafka would.
fn shuttle(from: &mut TopologyTestDriver, topic: &str, to: &mut TopologyTestDriver) -> Vec<Value> {
    let records = from.read_output(topic);
    for r in &records {
        to.pipe_input(topic, r.key.as_deref(), r.value.as_deref(), to.wall_clock());
    }
    values(&records)
}

fn instance(d: &TopologyTestDriver, node: &str) -> Instance {
    serde_json::from_slice(&d.store_get("instances", node.as_bytes()).expect("instance exists")).unwrap()
}

/// Uploads, scans and classifies `node`: the workflow then asks for the routing decision.
fn to_deciding(d: &mut TopologyTestDriver, node: &str, class: &str) {
    let now = d.wall_clock();
    d.pipe_json("alfresco.node-events", node, &json!({"id": format!("{node}-up"), "type": "org.alfresco.event.node.Created",
        "data": {"resource": {"id": node, "nodeType": "cm:content", "name": "f.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 1200}, "createdByUser": {"id": "jdoe"}}}}), now);
    d.pipe_json("document-services.results", node, &json!({"id": format!("{node}-scan"), "service": "virus-scan", "status": "OK"}), now);
    d.pipe_json(
        "document-services.results",
        node,
        &json!({"id": format!("{node}-class"), "service": "classification", "result": {"class": class}}),
        now,
    );
}

struct Camunda {
    rt: tokio::runtime::Runtime,
    server: MockServer,
}

impl Camunda {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(MockServer::start());
        Self { rt, server }
    }
    fn answer(&self, p: &str, status: u16, body: Value) {
        self.rt.block_on(
            Mock::given(method("POST")).and(path(p)).respond_with(ResponseTemplate::new(status).set_body_json(body)).mount(&self.server),
        );
    }
    /// Camunda 7 starting the one-user-task process: the instance's id is `p-<business key>`.
    fn start_processes_by_business_key(&self) {
        let business_key =
            |r: &wiremock::Request| serde_json::from_slice::<Value>(&r.body).unwrap()["businessKey"].as_str().unwrap().to_owned();
        self.rt.block_on(
            Mock::given(method("POST"))
                .and(path("/engine-rest/process-definition/key/keyflow-human-task/start"))
                .respond_with(move |r: &wiremock::Request| {
                    ResponseTemplate::new(200).set_body_json(json!({"id": format!("p-{}", business_key(r))}))
                })
                .mount(&self.server),
        );
    }

    fn answer_get(&self, p: &str, body: Value) {
        self.rt.block_on(
            Mock::given(method("GET")).and(path(p)).respond_with(ResponseTemplate::new(200).set_body_json(body)).mount(&self.server),
        );
    }
    fn answer_delete(&self, p: &str, status: u16) {
        self.rt.block_on(Mock::given(method("DELETE")).and(path(p)).respond_with(ResponseTemplate::new(status)).mount(&self.server));
    }
    fn calls(&self, p: &str) -> usize {
        self.rt.block_on(self.server.received_requests()).unwrap_or_default().iter().filter(|r| r.url.path() == p).count()
    }
    fn reset(&self) {
        self.rt.block_on(self.server.reset());
    }
}

const EVALUATE: &str = "/v2/decision-definitions/evaluation";

fn decided(route: &str) -> Value {
    json!({"decisionDefinitionId": "document-routing", "output": json!({"route": route}).to_string(), "failureMessage": "", "evaluatedDecisions": []})
}

#[test]
fn a_decision_service_outage_delays_decisions_and_loses_or_doubles_none() {
    let camunda = Camunda::start();
    camunda.answer(EVALUATE, 500, json!({"title": "INTERNAL_SERVER_ERROR", "status": 500, "detail": "the gateway is down"}));
    let mut wf = workflow_driver();
    let mut conn = connectors_driver(&format!(
        "[retry]\nattempts = 1000\nbackoff_ms = 500\nmax_backoff_ms = 2000\n[breaker]\nfailure_threshold = 3\nopen_ms = 10000\n[decisions]\nbackend = \"camunda8\"\nurl = \"{}\"\n",
        camunda.server.uri()
    ));
    let nodes: Vec<String> = (0..6).map(|i| format!("doc-{i}")).collect();
    for n in &nodes {
        to_deciding(&mut wf, n, "invoice");
    }
    // The commands carry the workflow's own retry policy (5 attempts, 2 s); the outage outlasts
    // it, so the default (1000 attempts) applies only if the command had none. Strip it here to
    // test a long outage; the refused-for-good test below keeps it.
    for r in wf.read_output(DECISIONS) {
        let mut v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        v["retry"] = Value::Null;
        conn.pipe_json(DECISIONS, std::str::from_utf8(r.key.as_deref().unwrap()).unwrap(), &v, conn.wall_clock());
    }

    // Two minutes of outage, in one-second steps.
    for _ in 0..120 {
        conn.advance_wall_clock(1000);
    }
    assert!(conn.read_output(DECISION_RESULTS).is_empty(), "nothing is answered while the service is down");
    let calls_during_outage = camunda.calls(EVALUATE);
    // The breaker opens after 3 failures and lets one probe through every 10 s (~12 probes), far
    // fewer than the ~240 calls retrying each second would make.
    assert!((3..=30).contains(&calls_during_outage), "calls during the outage: {calls_during_outage}");
    assert!(conn.committed_records("docs-connectors-dlq").is_empty(), "an outage dead-letters nothing");
    assert!(nodes.iter().all(|n| instance(&wf, n).state == "deciding"));

    // The service comes back.
    camunda.reset();
    camunda.answer(EVALUATE, 200, decided("auto-approve"));
    for _ in 0..60 {
        conn.advance_wall_clock(1000);
    }
    let answers = shuttle(&mut conn, DECISION_RESULTS, &mut wf);
    let mut ids: Vec<&str> = answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((answers.len(), ids.len()), (6, 6), "one answer per decision, none doubled: {answers:?}");
    assert!(answers.iter().all(|a| a["outcome"]["route"] == "auto-approve" && a.get("error").is_none()));
    for n in &nodes {
        assert_eq!(instance(&wf, n).state, "approved", "{n} resumed and finished");
    }
    assert!(wf.committed_records("docs-dlq").is_empty());
    // Replaying the answers (a redelivery) changes nothing: the workflow drops them by id.
    let replay: Vec<StoredRecord> = conn.committed_records(DECISION_RESULTS).into_iter().map(|(_, r)| r).collect();
    for r in &replay {
        wf.pipe_input(DECISION_RESULTS, r.key.as_deref(), r.value.as_deref(), wf.wall_clock());
    }
    assert!(nodes.iter().all(|n| instance(&wf, n).history.len() == 4), "no transition twice");
}

#[test]
fn a_decision_refused_or_out_of_retries_takes_the_workflows_error_transition() {
    let camunda = Camunda::start();
    camunda.rt.block_on(
        Mock::given(method("POST"))
            .and(path(EVALUATE))
            .and(wiremock::matchers::body_partial_json(json!({"variables": {"classification": "contract"}})))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_json(json!({"title": "INVALID_ARGUMENT", "status": 400, "detail": "no variable 'amount'"})),
            )
            .expect(1)
            .mount(&camunda.server),
    );
    camunda.rt.block_on(
        Mock::given(method("POST"))
            .and(path(EVALUATE))
            .and(wiremock::matchers::body_partial_json(json!({"variables": {"classification": "invoice"}})))
            .respond_with(ResponseTemplate::new(503).set_body_json(json!({"title": "UNAVAILABLE", "status": 503})))
            .expect(5)
            .mount(&camunda.server),
    );
    let mut wf = workflow_driver();
    let mut conn = connectors_driver(&format!(
        "[breaker]\nfailure_threshold = 100\n[decisions]\nbackend = \"camunda8\"\nurl = \"{}\"\n",
        camunda.server.uri()
    ));
    to_deciding(&mut wf, "refused", "contract");
    to_deciding(&mut wf, "exhausted", "invoice");
    let commands = shuttle(&mut wf, DECISIONS, &mut conn);
    assert!(commands.iter().all(|c| c["retry"] == json!({"attempts": 5, "backoff": "2s"})), "{commands:?}");
    // 2 s doubling with jitter, five attempts: done well within five minutes.
    for _ in 0..300 {
        conn.advance_wall_clock(1000);
    }
    let answers = shuttle(&mut conn, DECISION_RESULTS, &mut wf);
    assert_eq!(answers.len(), 2, "{answers:?}");
    for a in &answers {
        assert_eq!(a["error"], "decision_failed");
    }
    let by = |id: &str| answers.iter().find(|a| a["instanceId"] == id).unwrap().clone();
    assert_eq!(by("refused")["attempts"], 1, "a refusal is not retried");
    assert!(by("refused")["reason"].as_str().unwrap().contains("no variable 'amount'"));
    assert_eq!(by("exhausted")["attempts"], 5);
    for n in ["refused", "exhausted"] {
        let i = instance(&wf, n);
        assert_eq!(i.state, "review", "{n}: a person decides instead");
        assert!(i.variables["decisionError"].as_str().unwrap().contains("camunda8"));
    }
    let tasks = values(&wf.read_output(TASKS));
    assert_eq!(tasks.iter().filter(|t| t["name"] == "Route document (decision service failed)").count(), 2);
}

#[test]
fn completed_camunda7_tasks_are_answered_once_across_a_crash() {
    let camunda = Camunda::start();
    let id = "c7d1e0a4-ed37-11f1-9420-02fc00000001";
    let start = "/engine-rest/process-definition/key/keyflow-human-task/start";
    camunda.answer_get("/engine-rest/history/process-instance", json!([]));
    // Not completed yet: history has nothing.
    camunda.answer("/engine-rest/history/task", 200, json!([]));
    camunda.answer(start, 200, json!({"id": id, "businessKey": "doc-1:4:0", "ended": false}));
    let mut wf = workflow_driver();
    let mut conn = connectors_driver(&format!(
        "[tasks]\nbackend = \"camunda7\"\nurl = \"{}/engine-rest\"\npoll_interval_ms = 5000\n",
        camunda.server.uri()
    ));

    to_deciding(&mut wf, "doc-1", "contract");
    let now = wf.wall_clock();
    wf.pipe_json(DECISION_RESULTS, "doc-1", &json!({"id": "d-1", "outcome": {"route": "manual"}}), now);
    assert_eq!(instance(&wf, "doc-1").state, "review");
    let opened = shuttle(&mut wf, TASKS, &mut conn);
    assert_eq!(opened[0]["idempotencyKey"], "doc-1:4:0");
    assert_eq!(camunda.calls(start), 1);

    conn.advance_wall_clock(6000);
    assert!(conn.read_output(TASK_RESULTS).is_empty());

    // A reviewer completes it in Camunda's Tasklist.
    let done_at = jiff::Timestamp::from_millisecond(conn.wall_clock()).unwrap().to_string();
    camunda.reset();
    camunda.answer(
        "/engine-rest/history/variable-instance",
        200,
        json!([{"name": "approved", "type": "Boolean", "value": true, "processInstanceId": id}]),
    );
    camunda.answer(
        "/engine-rest/history/task",
        200,
        json!([{"id": "u-1", "processInstanceId": id, "assignee": "alice", "endTime": done_at, "deleteReason": "completed"}]),
    );
    conn.advance_wall_clock(6000);
    // A crash with the disk lost: the open-task store and the cursor come back from the changelog.
    conn.crash_and_restart(true);
    for _ in 0..3 {
        conn.advance_wall_clock(6000);
    }
    let answers = shuttle(&mut conn, TASK_RESULTS, &mut wf);
    assert_eq!(answers.len(), 1, "answered once although the history keeps returning it: {answers:?}");
    assert_eq!(answers[0]["id"], "doc-1:4:0:completed");
    assert_eq!(answers[0]["completedBy"], "alice");
    assert_eq!(answers[0]["variables"]["approved"], "true");
    let i = instance(&wf, "doc-1");
    assert_eq!(i.state, "approved");
    assert_eq!(i.history.last().unwrap().event, "task.completed");
}

#[test]
fn notifications_reach_the_webhook_with_their_idempotency_key_and_a_refusal_is_dead_lettered() {
    let hook = Camunda::start();
    hook.rt.block_on(
        Mock::given(method("POST"))
            .and(path("/hook"))
            .and(wiremock::matchers::header("idempotency-key", "doc-1:5:1"))
            .and(wiremock::matchers::body_partial_json(json!({"channel": "email", "recipient": "jdoe", "subject": "Document approved"})))
            .respond_with(ResponseTemplate::new(202))
            .expect(1)
            .mount(&hook.server),
    );
    hook.rt.block_on(
        Mock::given(method("POST"))
            .and(path("/hook"))
            .and(wiremock::matchers::header("idempotency-key", "doc-2:5:1"))
            .respond_with(ResponseTemplate::new(422).set_body_json(json!({"message": "unknown recipient"})))
            .mount(&hook.server),
    );
    let mut conn = connectors_driver(&format!("[notifications]\nwebhook = \"{}/hook\"\n", hook.server.uri()));
    for (doc, key) in [("doc-1", "doc-1:5:1"), ("doc-2", "doc-2:5:1")] {
        let now = conn.wall_clock();
        conn.pipe_json("notifications", doc, &json!({"channel": "email", "recipient": "jdoe", "subject": "Document approved", "body": "f.pdf", "idempotencyKey": key, "instanceId": doc}), now);
    }
    let dead = conn.committed_records("docs-connectors-dlq");
    assert_eq!(dead.len(), 1, "the refused notification, with its original bytes");
    let reason = dead[0].1.headers.last_str(keyflow::dlq::ERROR_MESSAGE).unwrap();
    assert!(reason.contains("unknown recipient"), "{reason}");
    let original: Value = serde_json::from_slice(dead[0].1.value.as_deref().unwrap()).unwrap();
    assert_eq!(original["idempotencyKey"], "doc-2:5:1");
}

/// The completion poller on a busy task list and a failing engine (issue 22, item 1): with 2,500
/// tasks open on two partitions, every poll asks about its partition's own open tasks a page of
/// 100 at a time, at most 10 pages, going on where the last poll stopped; the answers of a page
/// are read in one query; and a failing history goes through the task service's circuit breaker
/// instead of being asked again every second.
#[test]
fn the_completion_poller_pages_through_its_own_open_tasks_and_backs_off_through_the_breaker() {
    let camunda = Camunda::start();
    let start = "/engine-rest/process-definition/key/keyflow-human-task/start";
    let history = "/engine-rest/history/task";
    let variables = "/engine-rest/history/variable-instance";
    camunda.answer_get("/engine-rest/history/process-instance", json!([]));
    camunda.start_processes_by_business_key();
    camunda.answer(history, 503, json!({"type": "ProcessEngineException", "message": "the database is down"}));
    let mut conn = connectors_driver(&format!(
        "[retry]\nattempts = 1000\nbackoff_ms = 1000\nmax_backoff_ms = 8000\n[breaker]\nfailure_threshold = 3\nopen_ms = 30000\n\
         [tasks]\nbackend = \"camunda7\"\nurl = \"{}/engine-rest\"\npoll_interval_ms = 1000\n",
        camunda.server.uri()
    ));
    let docs = 2500;
    for i in 0..docs {
        let key = format!("doc-{i}:4:0");
        let command = json!({"name": "Review document", "candidateGroups": ["reviewers"], "idempotencyKey": key, "instanceId": format!("doc-{i}"), "workflow": "document-approval"});
        conn.pipe_json(TASKS, &format!("doc-{i}"), &command, conn.wall_clock());
    }
    assert_eq!(camunda.calls(start), docs, "every task opened");

    // The history fails for a minute: three failed polls open the circuit; while it is open
    // nothing is asked, then one probe per partition, and the polls back off.
    for _ in 0..60 {
        conn.advance_wall_clock(1000);
    }
    let failed = camunda.calls(history);
    eprintln!("{failed} polls of the failing history in 60 s");
    assert!(conn.read_output(TASK_RESULTS).is_empty());
    assert!(failed <= 12, "{failed} polls of a failing history in a minute, through a breaker open for 30 s");

    // The engine is back and every task has been completed: each history query names the
    // business keys asked about, and the engine answers for those.
    camunda.reset();
    camunda.answer_get("/engine-rest/history/process-instance", json!([]));
    camunda.rt.block_on(
        Mock::given(method("POST"))
            .and(path(history))
            .respond_with(|r: &wiremock::Request| {
                let query: Value = serde_json::from_slice(&r.body).unwrap();
                let keys = query["processInstanceBusinessKeyIn"].as_array().unwrap();
                assert!(keys.len() <= 100, "a page of open tasks per query, not {}", keys.len());
                let rows: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        json!({"processInstanceId": format!("p-{}", k.as_str().unwrap()), "assignee": "alice",
                                    "endTime": "2026-11-25T10:05:00.000+0000", "deleteReason": "completed"})
                    })
                    .collect();
                ResponseTemplate::new(200).set_body_json(rows)
            })
            .mount(&camunda.server),
    );
    camunda.rt.block_on(
        Mock::given(method("POST"))
            .and(path(variables))
            .respond_with(|r: &wiremock::Request| {
                let query: Value = serde_json::from_slice(&r.body).unwrap();
                let rows: Vec<Value> = query["processInstanceIdIn"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| json!({"processInstanceId": p, "name": "approved", "type": "Boolean", "value": true}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(rows)
            })
            .mount(&camunda.server),
    );
    let mut most = 0;
    for _ in 0..40 {
        let before = camunda.calls(history);
        conn.advance_wall_clock(1000);
        most = most.max(camunda.calls(history) - before);
    }
    assert!(most <= 20, "{most} history queries in one second: at most 10 per partition's poll");
    let answers = values(&conn.read_output(TASK_RESULTS));
    let ids: std::collections::BTreeSet<&str> = answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(answers.len(), docs, "each answered once");
    assert_eq!(ids.len(), docs, "every task answered");
    assert!(answers.iter().all(|a| a["variables"]["approved"] == "true" && a["completedBy"] == "alice"));
    // 2,500 tasks over two partitions: 13 pages each, over two polls, plus one read of the
    // answers per page.
    let (queries, reads) = (camunda.calls(history), camunda.calls(variables));
    eprintln!("{docs} completions answered with {queries} history queries and {reads} variable reads, at most {most} queries a second");
    assert!(queries <= 30 && reads <= 30, "{queries} history queries and {reads} variable reads for {docs} completions");
    // Nothing is open any more: the poller stops asking.
    for _ in 0..10 {
        conn.advance_wall_clock(1000);
    }
    assert_eq!(camunda.calls(history), queries, "no open task, no poll");
}

/// A new version of a document in review: the workflow withdraws run 1's task, and the
/// connectors cancel its process instance in Camunda 7 and stop polling for it. A cancellation
/// the engine refuses for good is logged and forgotten; one that keeps failing ends as a dead
/// letter, never as a `task_failed` answer to the workflow (whose run has moved on).
#[test]
fn a_superseded_runs_camunda_task_is_cancelled_and_forgotten_by_the_poller() {
    let camunda = Camunda::start();
    let start = "/engine-rest/process-definition/key/keyflow-human-task/start";
    camunda.answer_get("/engine-rest/history/process-instance", json!([]));
    camunda.answer("/engine-rest/history/task", 200, json!([]));
    let mut wf = workflow_driver();
    let mut conn = connectors_driver(&format!(
        "[tasks]\nbackend = \"camunda7\"\nurl = \"{}/engine-rest\"\npoll_interval_ms = 5000\n",
        camunda.server.uri()
    ));
    let new_version = |wf: &mut TopologyTestDriver, node: &str| {
        let now = wf.wall_clock();
        wf.pipe_json("alfresco.node-events", node, &json!({"id": format!("{node}-v2"), "type": "org.alfresco.event.node.Updated",
            "data": {"resource": {"id": node, "nodeType": "cm:content", "name": "f.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 1300},
                     "properties": {"cm:versionLabel": "1.1"}, "modifiedByUser": {"id": "jdoe"}}, "resourceBefore": {"content": {"sizeInBytes": 1200}}}}), now);
    };
    // Each partition's poller state, as last committed to its changelog.
    let poller_open = |conn: &mut TopologyTestDriver| -> u64 {
        conn.commit();
        let mut latest = std::collections::BTreeMap::new();
        for (p, r) in conn.committed_records("docs-connectors-task-poller-changelog") {
            if let (Some(b"state"), Some(v)) = (r.key.as_deref(), r.value.as_deref()) {
                latest.insert(p, serde_json::from_slice::<Value>(v).unwrap()["open"].as_u64().unwrap());
            }
        }
        latest.values().sum()
    };
    // Three documents in review, each with a task in the engine.
    for (n, node) in ["doc-1", "doc-2", "doc-3"].into_iter().enumerate() {
        camunda.answer(start, 200, json!({"id": format!("pi-{n}"), "businessKey": format!("{node}:4:0"), "ended": false}));
        to_deciding(&mut wf, node, "contract");
        let now = wf.wall_clock();
        wf.pipe_json(DECISION_RESULTS, node, &json!({"id": format!("{node}:3:0"), "outcome": {"route": "manual"}}), now);
        wf.commit();
        shuttle(&mut wf, TASKS, &mut conn);
        camunda.reset();
        camunda.answer_get("/engine-rest/history/process-instance", json!([]));
        camunda.answer("/engine-rest/history/task", 200, json!([]));
    }
    assert_eq!((conn.store_entries(connectors::poller::OPEN_TASKS).len(), poller_open(&mut conn)), (3, 3));

    camunda.answer_delete("/engine-rest/process-instance/pi-0", 204);
    camunda.answer_delete("/engine-rest/process-instance/pi-1", 403);
    camunda.answer_delete("/engine-rest/process-instance/pi-2", 500);
    for node in ["doc-1", "doc-2", "doc-3"] {
        new_version(&mut wf, node);
    }
    wf.commit();
    let withdrawals = shuttle(&mut wf, TASKS, &mut conn);
    assert_eq!(withdrawals.iter().filter(|c| c["command"] == "withdraw").count(), 3, "{withdrawals:?}");
    // The failing one is retried with backoff (its partition waits), then given up.
    for _ in 0..20 {
        conn.advance_wall_clock(60_000);
    }
    assert_eq!(camunda.calls("/engine-rest/process-instance/pi-0"), 1);
    assert_eq!(camunda.calls("/engine-rest/process-instance/pi-1"), 1);
    assert!(camunda.calls("/engine-rest/process-instance/pi-2") > 1, "retried");
    let open: Vec<String> =
        conn.store_entries(connectors::poller::OPEN_TASKS).keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert_eq!(open, ["pi-2"], "the cancelled and the refused task are forgotten; the one never cancelled is still asked about");
    assert_eq!(poller_open(&mut conn), 1, "the poller's count agrees with its store");
    assert!(conn.read_output(TASK_RESULTS).is_empty(), "a withdrawal answers nobody");
    let dead = conn.read_output("docs-connectors-dlq");
    assert_eq!(dead.len(), 1, "the withdrawal that kept failing is a dead letter, to redrive");
    let letter: Value = serde_json::from_slice(dead[0].value.as_deref().unwrap()).unwrap();
    assert_eq!((letter["command"].as_str(), letter["instanceId"].as_str()), (Some("withdraw"), Some("doc-3")));
}

/// A withdrawal finds its tasks among more open tasks than one page of the store's scan (1,000):
/// 2,500 open tasks on two partitions, and the tasks withdrawn sort last and first.
#[test]
fn a_withdrawal_finds_its_tasks_past_a_page_of_open_tasks() {
    let camunda = Camunda::start();
    camunda.answer_get("/engine-rest/history/process-instance", json!([]));
    camunda.answer("/engine-rest/history/task", 200, json!([]));
    camunda.start_processes_by_business_key();
    let mut conn = connectors_driver(&format!(
        "[tasks]\nbackend = \"camunda7\"\nurl = \"{}/engine-rest\"\npoll_interval_ms = 600000\n",
        camunda.server.uri()
    ));
    let docs = 2500;
    for i in 0..docs {
        let command = json!({"name": "Review document", "idempotencyKey": format!("doc-{i}:4:0"), "instanceId": format!("doc-{i}"), "workflow": "document-approval"});
        conn.pipe_json(TASKS, &format!("doc-{i}"), &command, conn.wall_clock());
    }
    assert_eq!(conn.store_entries(connectors::poller::OPEN_TASKS).len(), docs);
    // `p-doc-999:4:0` sorts last of its partition's ids, `p-doc-0:4:0` first.
    for doc in ["doc-999", "doc-0"] {
        camunda.answer_delete(&format!("/engine-rest/process-instance/p-{doc}:4:0"), 204);
        let withdraw = json!({"command": "withdraw", "tasks": [{"idempotencyKey": format!("{doc}:4:0"), "name": "Review document"}],
                              "reason": "run 1 superseded by run 2", "instanceId": doc, "idempotencyKey": format!("{doc}:6:withdraw"), "run": 1});
        conn.pipe_json(TASKS, doc, &withdraw, conn.wall_clock());
        assert_eq!(camunda.calls(&format!("/engine-rest/process-instance/p-{doc}:4:0")), 1, "{doc} cancelled");
    }
    let open = conn.store_entries(connectors::poller::OPEN_TASKS);
    assert_eq!(open.len(), docs - 2);
    assert!(!open.contains_key(b"p-doc-999:4:0".as_slice()) && !open.contains_key(b"p-doc-0:4:0".as_slice()));
}

/// The sweep for tasks cancelled in the engine goes round all open tasks, a page each sweep,
/// past a page the engine refuses (before, a refused page held the sweep on it for good): of
/// 250 open tasks, the one whose process instance was deleted, on the third page, is answered
/// `task_cancelled` once; a task whose instance ended after its completion is answered as
/// completed, never as cancelled.
#[test]
fn the_cancellation_sweep_passes_a_refused_page_and_never_calls_a_completed_task_cancelled() {
    let camunda = Camunda::start();
    camunda.answer_get("/engine-rest/history/process-instance", json!([]));
    camunda.start_processes_by_business_key();
    let mut conn = connectors_driver(&format!(
        "[tasks]\nbackend = \"camunda7\"\nurl = \"{}/engine-rest\"\npoll_interval_ms = 1000\n",
        camunda.server.uri()
    ));
    for i in 0..500 {
        let key = format!("doc-{i}:4:0");
        let command = json!({"name": "Review document", "idempotencyKey": key, "instanceId": format!("doc-{i}"), "workflow": "document-approval", "run": 1});
        conn.pipe_json(TASKS, &format!("doc-{i}"), &command, conn.wall_clock());
    }
    let open: Vec<String> = conn.store_entries(connectors::poller::OPEN_TASKS).into_keys().map(|k| String::from_utf8(k).unwrap()).collect();
    assert_eq!(open.len(), 500);
    let mut sorted = open.clone();
    sorted.sort();
    // A task on the last page of its partition was deleted in Cockpit, and one more ended
    // terminated after its completion; the engine refuses every other page of the sweep.
    let (deleted, completed) = (sorted[sorted.len() - 1].clone(), sorted[sorted.len() - 2].clone());
    let (d, c) = (deleted.clone(), completed.clone());
    camunda.rt.block_on(
        Mock::given(method("POST"))
            .and(path("/engine-rest/history/process-instance"))
            .respond_with(move |r: &wiremock::Request| {
                let ids: Vec<String> = serde_json::from_slice::<Value>(&r.body).unwrap()["processInstanceIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                if !ids.contains(&d) && !ids.contains(&c) {
                    return ResponseTemplate::new(400).set_body_json(json!({"type": "InvalidRequestException", "message": "refused"}));
                }
                let rows: Vec<Value> = [&d, &c]
                    .into_iter()
                    .filter(|p| ids.contains(p))
                    .map(|p| json!({"id": p, "state": "EXTERNALLY_TERMINATED", "endTime": "2026-11-25T10:06:00.000+0000"}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(rows)
            })
            .mount(&camunda.server),
    );
    // The history shows the completion only to the sweep's own question (the two tasks it found
    // ended), as it would were the completion recorded between the poll and the sweep.
    let c = completed.clone();
    camunda.rt.block_on(
        Mock::given(method("POST"))
            .and(path("/engine-rest/history/task"))
            .respond_with(move |r: &wiremock::Request| {
                let keys = serde_json::from_slice::<Value>(&r.body).unwrap()["processInstanceBusinessKeyIn"].clone();
                let keys: Vec<String> = keys.as_array().unwrap().iter().map(|k| format!("p-{}", k.as_str().unwrap())).collect();
                let rows = if keys.len() <= 2 && keys.contains(&c) {
                    json!([{"processInstanceId": c, "assignee": "alice", "endTime": "2026-11-25T10:05:00.000+0000", "deleteReason": "completed"}])
                } else {
                    json!([])
                };
                ResponseTemplate::new(200).set_body_json(rows)
            })
            .mount(&camunda.server),
    );
    camunda.answer("/engine-rest/history/variable-instance", 200, json!([]));
    for _ in 0..60 {
        conn.advance_wall_clock(1000);
    }
    let answers = values(&conn.read_output(TASK_RESULTS));
    let got: Vec<(String, String)> =
        answers.iter().map(|a| (a["taskId"].as_str().unwrap().to_owned(), a["error"].as_str().unwrap_or("completed").to_owned())).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&(deleted.clone(), "task_cancelled".into())), "{got:?}");
    assert!(got.contains(&(completed.clone(), "completed".into())), "{got:?}");
    assert_eq!(conn.store_entries(connectors::poller::OPEN_TASKS).len(), 498);
}
