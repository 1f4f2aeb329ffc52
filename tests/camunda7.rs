//! keyflow's Camunda 7 connectors against a real Camunda 7 engine (7.24 Community Edition,
//! `tests/camunda`, started per test by `common::camunda`), not against recorded answers: every
//! rule of the routing table decided by Camunda's own DMN engine, a task's life from creation to
//! completion by a REST call, and the connectors on Kafka through a restart of theirs and an
//! outage of the engine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::camunda::{Camunda7, PASSWORD, USER};
use common::connectors::{self as connectors_app, DECISIONS, DECISION_RESULTS, TASKS, TASK_RESULTS};
use common::{produce, read_topic, wait_until};
use keyflow::connectors;
use keyflow::connectors::auth::Credentials;
use keyflow::connectors::decision::{Camunda7 as Camunda7Decisions, DecisionService};
use keyflow::connectors::tasks::{Camunda7Tasks, Opened, TaskRequest, TaskService};
use keyflow::runtime::Instance;
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use serde_json::{json, Map, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn credentials() -> Credentials {
    Credentials::Basic { user: USER.into(), password: PASSWORD.into() }
}

fn http() -> reqwest::blocking::Client {
    connectors::http::client(Duration::from_secs(10)).unwrap()
}

fn vars(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn camunda_decides_every_rule_of_the_routing_table_and_refuses_bad_input() {
    let engine = Camunda7::start();
    engine.deploy(&root().join("topologies/decisions/document-routing.dmn"));
    let c7 = Camunda7Decisions { base_url: engine.url.clone(), http: http(), credentials: credentials() };
    let route = |class: &str, mime: &str, size: i64| {
        let v = vars(json!({"classification": class, "mimeType": mime, "sizeBytes": size}));
        Value::Object(c7.evaluate("document-routing", &v).unwrap_or_else(|e| panic!("{class} {mime} {size}: {e}")))
    };
    // One case per rule, in the table's order (hit policy FIRST), and the boundary of rule 3.
    assert_eq!(route("invoice", "application/x-sh", 10), json!({"route": "reject", "reason": "executable content"}));
    assert_eq!(route("invoice", "application/x-msdownload", 10)["route"], "reject");
    assert_eq!(route("spam", "application/pdf", 10), json!({"route": "reject", "reason": "classified as spam"}));
    assert_eq!(route("invoice", "application/pdf", 1200), json!({"route": "auto-approve", "reason": "invoice under 10 MB"}));
    assert_eq!(route("invoice", "application/pdf", 9_999_999)["route"], "auto-approve");
    assert_eq!(route("invoice", "application/pdf", 10_000_000)["route"], "manual", "10 MB is not under 10 MB");
    assert_eq!(route("contract", "application/pdf", 10)["route"], "manual");

    // A decision the engine does not know is refused (no retry can help), not retried.
    let unknown = c7.evaluate("no-such-decision", &Map::new());
    assert!(matches!(unknown, Err(connectors::http::CallError::Rejected { .. })), "{unknown:?}");
    // Wrong credentials are refused as such.
    let intruder = Camunda7Decisions {
        base_url: engine.url.clone(),
        http: http(),
        credentials: Credentials::Basic { user: USER.into(), password: "wrong".into() },
    };
    let refused = intruder.evaluate("document-routing", &vars(json!({"classification": "x", "mimeType": "y", "sizeBytes": 1})));
    assert!(refused.is_err(), "a wrong password is refused: {refused:?}");
}

fn review(idempotency_key: &str, assignee: Option<&str>) -> TaskRequest {
    TaskRequest {
        idempotency_key: idempotency_key.into(),
        name: "Review document".into(),
        candidate_groups: vec!["reviewers".into()],
        assignee: assignee.map(str::to_owned),
        instance_id: "doc-1".into(),
        workflow: "document-approval".into(),
        run: Some(1),
    }
}

const PROCESS: &str = "keyflow-human-task";

fn tasks(engine: &Camunda7) -> Camunda7Tasks {
    engine.deploy(&root().join("topologies/camunda/keyflow-human-task-c7.bpmn"));
    Camunda7Tasks { base_url: engine.url.clone(), http: http(), credentials: credentials(), process_key: PROCESS.into() }
}

#[test]
fn a_task_is_created_once_reassigned_completed_by_a_rest_call_and_read_back_from_the_history() {
    let engine = Camunda7::start();
    let c7 = tasks(&engine);
    let since = keyflow::runtime::now_ms() - 1_000;
    let request = review("doc-1:4:0", Some("alice"));
    let opened = |task_id: &str, key: &str| Opened { task_id: task_id.into(), idempotency_key: key.into() };

    let id = c7.create(&request).unwrap();
    // Created again (a retry after a lost answer): still one task.
    assert_eq!(c7.create(&request).unwrap(), id);
    let open = engine.get("task", &[("processInstanceId", &id)]).unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["name"], "Review document");
    assert_eq!(open[0]["assignee"], "alice");
    let user_task = open[0]["id"].as_str().unwrap().to_owned();
    let links = engine.get(&format!("task/{user_task}/identity-links"), &[]).unwrap();
    assert!(links.as_array().unwrap().iter().any(|l| l["groupId"] == "reviewers" && l["type"] == "candidate"), "{links}");

    // Reassigned although alice holds it (a claim is refused: the task is not free).
    c7.assign(&id, "bob").unwrap();
    assert_eq!(engine.get(&format!("task/{user_task}"), &[]).unwrap()["assignee"], "bob");

    // Nothing completed yet.
    assert!(c7.completed(&[opened(&id, "doc-1:4:0")]).unwrap().is_empty());
    // bob completes it in his task list (a REST call, as Tasklist makes it).
    let answer = json!({"variables": {"approved": {"value": true, "type": "Boolean"}, "comment": {"value": "fine", "type": "String"}}});
    engine.post(&format!("task/{user_task}/complete"), &answer).unwrap();
    let done = c7.completed(&[opened(&id, "doc-1:4:0")]).unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].task_id, id);
    assert_eq!(done[0].completed_by.as_deref(), Some("bob"));
    assert_eq!(
        Value::Object(done[0].variables.clone()),
        json!({"approved": true, "comment": "fine"}),
        "the answer, not keyflow's own variables"
    );
    assert!(done[0].completed_at >= since);
    // Created again after completion (a command redelivered late): no second task.
    assert_eq!(c7.create(&request).unwrap(), id);
    assert!(engine.get("task", &[("processInstanceId", &id)]).unwrap().as_array().unwrap().is_empty());
    let started = engine.get("history/process-instance", &[("processInstanceBusinessKey", "doc-1:4:0")]).unwrap();
    assert_eq!(started.as_array().unwrap().len(), 1, "{started}");

    // keyflow completing a task itself (the connectors' `complete`) works on the real engine too.
    let other = c7.create(&review("doc-2:4:0", None)).unwrap();
    let third = c7.create(&review("doc-3:4:0", None)).unwrap();
    c7.complete(&other, &vars(json!({"approved": false}))).unwrap();
    let asked = [opened(&id, "doc-1:4:0"), opened(&other, "doc-2:4:0"), opened(&third, "doc-3:4:0")];
    let done = c7.completed(&asked).unwrap();
    assert_eq!(done.iter().map(|c| c.task_id.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from([id.as_str(), other.as_str()]));
    assert_eq!(done.iter().find(|c| c.task_id == other).unwrap().variables, vars(json!({"approved": false})), "each its own answer");
    // A task cancelled in the engine is no completion.
    engine.delete(&format!("process-instance/{third}")).unwrap();
    assert!(c7.completed(&asked[2..]).unwrap().is_empty());
    // A task with no open user task any more is refused, not retried.
    assert!(matches!(c7.assign(&other, "carol"), Err(connectors::http::CallError::Rejected { status: 404, .. })));
}

fn open_tasks(engine: &Camunda7) -> usize {
    engine.get("task", &[("processDefinitionKey", PROCESS)]).unwrap().as_array().unwrap().len()
}

fn committed(bootstrap: &str, topic: &str) -> Vec<Value> {
    read_topic(bootstrap, topic, "read_committed").iter().map(|(_, v)| serde_json::from_slice(v).unwrap()).collect()
}

/// Records to produce: (timestamp, key, value).
type Records = Vec<(i64, String, Vec<u8>)>;

fn commands(from: usize, to: usize) -> (Records, Records) {
    let command = connectors_app::command;
    let class = |i: usize| if i.is_multiple_of(2) { "invoice" } else { "contract" };
    let decisions = (from..to)
        .map(|i| {
            command(
                i,
                json!({"decisionKey": "document-routing", "idempotencyKey": format!("doc-{i}:3:0"),
                              "variables": {"classification": class(i), "mimeType": "application/pdf", "sizeBytes": 1000}}),
            )
        })
        .collect();
    let tasks = (from..to)
        .map(|i| command(i, json!({"name": "Review document", "candidateGroups": ["reviewers"], "idempotencyKey": format!("doc-{i}:4:0")})))
        .collect();
    (decisions, tasks)
}

/// As [`wait_until`] (two minutes), and on a timeout says what the engine and Kafka saw.
fn wait_or_explain(what: &str, mut cond: impl FnMut() -> bool, explain: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out after 120 s waiting for {what}\n{}", explain());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn explain(engine: &Camunda7, bootstrap: &str, dlq: &str) -> String {
    // The connectors' requests, not this test's own polling; the counts last, where a cut
    // output keeps them.
    let requests: Vec<String> = engine.requests().into_iter().filter(|r| !r.starts_with("GET /engine-rest/task?")).collect();
    format!(
        "the engine's last requests from the connectors:\n{}\ntask answers: {:?}\ndead letters: {}\nopen tasks: {}",
        requests[requests.len().saturating_sub(40)..].join("\n"),
        committed(bootstrap, TASK_RESULTS),
        read_topic(bootstrap, dlq, "read_committed").len(),
        open_tasks(engine),
    )
}

#[test]
fn the_connectors_answer_every_decision_and_task_once_across_their_restart_and_an_engine_outage() {
    keyflow::cli::init_tracing(0);
    let mut engine = Camunda7::start();
    engine.deploy(&root().join("topologies/decisions/document-routing.dmn"));
    engine.deploy(&root().join("topologies/camunda/keyflow-human-task-c7.bpmn"));
    // A broker of this test's own: the workflow's topic names are fixed.
    let kafka = common::KafkaCluster::start(1);
    let bootstrap = kafka.bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let auth = format!("auth = {{ type = \"basic\", user = \"{USER}\", password = \"{PASSWORD}\" }}");
    let section = format!(
        "timeout_ms = 5000\nretry = {{ attempts = 1000, backoff_ms = 200, max_backoff_ms = 1000 }}\nbreaker = {{ failure_threshold = 3, open_ms = 1000 }}\n\
         [decisions]\nbackend = \"camunda7\"\nurl = \"{url}\"\n{auth}\n[tasks]\nbackend = \"camunda7\"\nurl = \"{url}\"\npoll_interval_ms = 300\n{auth}\n",
        url = engine.url,
    );
    let (config, topology) = connectors_app::app(&bootstrap, dir.path(), "camunda7-connectors", &section);
    let dlq = config.dlq_topic();
    let docs = 12;

    // Half the commands, answered by a running engine.
    let (decisions, tasks) = commands(0, docs / 2);
    produce(&bootstrap, DECISIONS, &decisions);
    produce(&bootstrap, TASKS, &tasks);
    let instance = Instance::start(config.clone(), topology.clone()).unwrap();
    wait_until("the first decisions answered", Duration::from_secs(120), || committed(&bootstrap, DECISION_RESULTS).len() >= docs / 2);
    wait_until("the first tasks created", Duration::from_secs(120), || open_tasks(&engine) >= docs / 2);

    // The connectors restart, and the engine goes down meanwhile: the rest of the commands wait.
    instance.stop();
    instance.join().unwrap();
    engine.stop();
    let (decisions, tasks) = commands(docs / 2, docs);
    produce(&bootstrap, DECISIONS, &decisions);
    produce(&bootstrap, TASKS, &tasks);
    let instance = Instance::start(config.clone(), topology.clone()).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(committed(&bootstrap, DECISION_RESULTS).len(), docs / 2, "nothing answered while the engine is down");
    assert!(committed(&bootstrap, &dlq).is_empty(), "an outage dead-letters nothing");
    engine.start_again();
    wait_until("every decision answered", Duration::from_secs(120), || committed(&bootstrap, DECISION_RESULTS).len() >= docs);
    wait_or_explain("every task created", || open_tasks(&engine) >= docs, || explain(&engine, &bootstrap, &dlq));

    // People complete the tasks through the REST API, half before another restart of the
    // connectors and half while they are down.
    let complete = |i: usize| {
        let open = engine.get("task", &[("processInstanceBusinessKey", &format!("doc-{i}:4:0"))]).unwrap();
        let id = open[0]["id"].as_str().unwrap_or_else(|| panic!("doc-{i} has one open task: {open}")).to_owned();
        engine
            .post(&format!("task/{id}/complete"), &json!({"variables": {"approved": {"value": !i.is_multiple_of(3), "type": "Boolean"}}}))
            .unwrap();
    };
    for i in 0..docs / 2 {
        complete(i);
    }
    wait_until("the first completions answered", Duration::from_secs(60), || committed(&bootstrap, TASK_RESULTS).len() >= docs / 2);
    instance.stop();
    instance.join().unwrap();
    for i in docs / 2..docs {
        complete(i);
    }
    let instance = Instance::start(config, topology).unwrap();
    wait_or_explain(
        "every completion answered",
        || committed(&bootstrap, TASK_RESULTS).len() >= docs,
        || explain(&engine, &bootstrap, &dlq),
    );
    std::thread::sleep(Duration::from_secs(2));
    instance.stop();
    instance.join().unwrap();

    // Every decision answered once, by Camunda's table.
    let answers = committed(&bootstrap, DECISION_RESULTS);
    assert_eq!(answers.len(), docs, "none doubled: {answers:?}");
    let by_doc: BTreeMap<String, String> = answers
        .iter()
        .map(|a| (a["instanceId"].as_str().unwrap().to_owned(), a["outcome"]["route"].as_str().unwrap().to_owned()))
        .collect();
    for i in 0..docs {
        let expected = if i.is_multiple_of(2) { "auto-approve" } else { "manual" };
        assert_eq!(by_doc.get(&format!("doc-{i}")).map(String::as_str), Some(expected), "doc-{i}: {answers:?}");
    }
    // Every task created once in Camunda, and its completion answered once, with its variables.
    let history = engine.get("history/process-instance", &[("processDefinitionKey", PROCESS)]).unwrap();
    assert_eq!(history.as_array().unwrap().len(), docs, "one Camunda task per command: {history}");
    let completions = committed(&bootstrap, TASK_RESULTS);
    assert_eq!(completions.len(), docs, "each completion answered once: {completions:?}");
    for c in &completions {
        let i: usize = c["instanceId"].as_str().unwrap().trim_start_matches("doc-").parse().unwrap();
        assert_eq!(c["id"], format!("doc-{i}:4:0:completed"));
        assert_eq!(c["variables"]["approved"], json!((!i.is_multiple_of(3)).to_string()), "{c}");
    }
    assert!(committed(&bootstrap, &dlq).is_empty(), "nothing dead-lettered");
}

/// A busy task list (issue 22, item 1): 500 tasks open across the partitions, completed within a
/// minute through the REST API as Tasklist would. Each completion is answered exactly once, and
/// the engine, which logs every request it serves, sees a bounded number of history queries per
/// poll: a page of a partition's own open tasks per query, and one read of the answers found,
/// not one query per completion nor everyone's completions in every partition.
#[test]
fn five_hundred_tasks_completed_within_a_minute_are_each_answered_once_with_bounded_calls_per_poll() {
    keyflow::cli::init_tracing(0);
    let engine = Camunda7::start();
    engine.deploy(&root().join("topologies/camunda/keyflow-human-task-c7.bpmn"));
    let kafka = common::KafkaCluster::start(1);
    let bootstrap = kafka.bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let poll_ms = 1000;
    let section = format!(
        "[tasks]\nbackend = \"camunda7\"\nurl = \"{url}\"\npoll_interval_ms = {poll_ms}\nauth = {{ type = \"basic\", user = \"{USER}\", password = \"{PASSWORD}\" }}\n",
        url = engine.url,
    );
    let (config, topology) = connectors_app::app(&bootstrap, dir.path(), "camunda7-busy", &section);
    let docs = 500;
    let tasks: Records = (0..docs)
        .map(|i| connectors_app::command(i, json!({"name": "Review document", "idempotencyKey": format!("doc-{i}:4:0")})))
        .collect();
    produce(&bootstrap, TASKS, &tasks);
    let instance = Instance::start(config, topology).unwrap();
    let count = |path: &str| engine.get(path, &[("processDefinitionKey", PROCESS)]).unwrap()["count"].as_u64().unwrap();
    wait_until("every task created", Duration::from_secs(240), || count("task/count") >= docs as u64);

    // Everyone works through the list at once: all 500 completed, oldest first.
    let history_calls = |engine: &Camunda7| engine.requests().iter().filter(|r| r.contains("/engine-rest/history/")).count();
    let before = history_calls(&engine);
    let started = std::time::Instant::now();
    let open = engine.get("task", &[("processDefinitionKey", PROCESS), ("maxResults", "1000")]).unwrap();
    assert_eq!(open.as_array().unwrap().len(), docs);
    let answer = json!({"variables": {"approved": {"value": true, "type": "Boolean"}}});
    for t in open.as_array().unwrap() {
        engine.post(&format!("task/{}/complete", t["id"].as_str().unwrap()), &answer).unwrap();
    }
    let completing = started.elapsed();
    assert!(completing < Duration::from_secs(60), "the completions took {completing:?}, over the minute the test is about");
    wait_until("every completion answered", Duration::from_secs(120), || committed(&bootstrap, TASK_RESULTS).len() >= docs);
    let answering = started.elapsed();
    let calls = history_calls(&engine) - before;
    std::thread::sleep(Duration::from_secs(3));
    instance.stop();
    instance.join().unwrap();

    let answers = committed(&bootstrap, TASK_RESULTS);
    let ids: BTreeSet<String> = answers.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(answers.len(), docs, "each completion answered once");
    assert_eq!(ids, (0..docs).map(|i| format!("doc-{i}:4:0:completed")).collect(), "every completion answered");
    assert!(answers.iter().all(|a| a["variables"]["approved"] == "true"), "with its answer");
    // Each partition polls once a second at most: a query per page of 100 of its open tasks
    // and one read of the answers found. The old poller made one query per completion seen,
    // every partition reading every partition's, and polled again at once after a full page.
    let polls = (answering.as_millis() as usize / poll_ms + 2) * common::PARTITIONS as usize;
    let bound = polls * (docs.div_ceil(common::PARTITIONS as usize).div_ceil(100) + 1);
    eprintln!(
        "{docs} completions in {completing:?}, all answered after {answering:?}, with {calls} history calls (bound {bound} for {polls} partition polls)"
    );
    assert!(calls <= bound, "{calls} history calls for {docs} completions over {polls} partition polls, over the bound of {bound}");
}

/// The connectors of the reference workflow on a test driver, with their tasks in `engine`,
/// polled for every second of the driver's wall clock.
fn connectors_driver(engine: &Camunda7) -> TopologyTestDriver {
    let text = format!(
        "workflow = {:?}\n[tasks]\nbackend = \"camunda7\"\nurl = \"{}\"\npoll_interval_ms = 1000\n[tasks.auth]\ntype = \"basic\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
        root().join("topologies/document-approval.toml").display().to_string(),
        engine.url
    );
    let config: keyflow::connectors::ConnectorsConfig = toml::from_str(&text).unwrap();
    TopologyTestDriver::new(
        connectors::topology(&config, None).unwrap(),
        DriverConfig { application_id: "conn".into(), ..DriverConfig::default() },
    )
}

/// Operators end tasks in Cockpit, outside keyflow: 200 of 250 open tasks' process instances
/// deleted, one restarted by a process instance modification (its user task ended and opened
/// again), one completed. The poller answers each deleted one once, as a `task_cancelled` error
/// event, and stops asking about it; the modified one stays open and its completion is answered.
#[test]
fn tasks_whose_process_instance_is_deleted_in_the_engine_are_answered_as_cancelled_once_and_forgotten() {
    let engine = Camunda7::start();
    tasks(&engine);
    let mut conn = connectors_driver(&engine);
    let (docs, deleted) = (250, 200);
    let now = conn.wall_clock();
    for i in 0..docs {
        let (_, key, value) =
            connectors_app::command(i, json!({"name": "Review document", "idempotencyKey": format!("doc-{i}:4:0"), "run": 1}));
        conn.pipe_input(TASKS, Some(key.as_bytes()), Some(&value), now);
    }
    let process = |i: usize| {
        let found = engine.get("history/process-instance", &[("processInstanceBusinessKey", &format!("doc-{i}:4:0"))]).unwrap();
        found[0]["id"].as_str().unwrap_or_else(|| panic!("doc-{i}'s task is in the engine: {found}")).to_owned()
    };
    for i in 0..deleted {
        engine.delete(&format!("process-instance/{}", process(i))).unwrap();
    }
    let (modified, completed) = (process(deleted), process(deleted + 1));
    engine
        .post(
            &format!("process-instance/{modified}/modification"),
            &json!({"instructions": [{"type": "cancel", "activityId": "task"}, {"type": "startBeforeActivity", "activityId": "task"}]}),
        )
        .unwrap();
    let approve = json!({"variables": {"approved": {"value": true, "type": "Boolean"}}});
    let user_task = |p: &str| engine.get("task", &[("processInstanceId", p)]).unwrap()[0]["id"].as_str().unwrap().to_owned();
    engine.post(&format!("task/{}/complete", user_task(&completed)), &approve).unwrap();

    // A sweep for cancelled tasks every 10th poll, a page of 100 each: 3 of them for 250 tasks.
    let mut answers = Vec::new();
    for _ in 0..32 {
        conn.advance_wall_clock(1500);
        answers.extend(conn.read_output(TASK_RESULTS));
    }
    let answers: Vec<Value> = answers.iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect();
    let cancelled: BTreeSet<String> =
        answers.iter().filter(|a| a["error"] == "task_cancelled").map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(cancelled, (0..deleted).map(|i| format!("doc-{i}:4:0:cancelled")).collect(), "each deleted task answered");
    assert_eq!(
        answers.len(),
        deleted + 1,
        "each once, with the one completion: {:?}",
        answers.iter().map(|a| &a["id"]).collect::<Vec<_>>()
    );
    let first = answers.iter().find(|a| a["id"] == "doc-0:4:0:cancelled").unwrap();
    assert_eq!((&first["idempotencyKey"], &first["run"], &first["instanceId"]), (&json!("doc-0:4:0"), &json!(1), &json!("doc-0")));
    let reason = first["reason"].as_str().unwrap();
    assert!(reason.contains("Review document") && reason.contains("EXTERNALLY_TERMINATED"), "{reason}");
    assert!(answers.iter().any(|a| a["id"] == format!("doc-{}:4:0:completed", deleted + 1) && a["variables"]["approved"] == "true"));
    assert_eq!(conn.store_entries(connectors::poller::OPEN_TASKS).len(), docs - deleted - 1, "the cancelled are no longer asked about");
    assert!(conn.read_output("conn-dlq").is_empty());

    // The modified instance's new user task is the same keyflow task: its completion is answered.
    engine.post(&format!("task/{}/complete", user_task(&modified)), &approve).unwrap();
    conn.advance_wall_clock(1500);
    let last: Vec<Value> =
        conn.read_output(TASK_RESULTS).iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect();
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0]["id"], format!("doc-{deleted}:4:0:completed"));
}

/// A new version of the document supersedes the run whose review task is open in Camunda: the
/// connectors cancel the task's process instance on the real engine, which then shows it
/// terminated and refuses to complete its task; the run-1 answer the poller could still bring is
/// never applied to run 2.
#[test]
fn a_superseded_runs_task_is_withdrawn_from_the_engine_and_cannot_be_completed() {
    let engine = Camunda7::start();
    let c7 = tasks(&engine);
    let definition = root().join("topologies/document-approval.toml");
    let mut wf = TopologyTestDriver::new(
        keyflow::workflow::compile(keyflow::workflow::load(&definition).unwrap(), None).unwrap(),
        DriverConfig { application_id: "docs".into(), ..DriverConfig::default() },
    );
    let mut conn = connectors_driver(&engine);
    let shuttle = |from: &mut TopologyTestDriver, topic: &str, to: &mut TopologyTestDriver| {
        let records = from.read_output(topic);
        for r in &records {
            let now = to.wall_clock();
            to.pipe_input(topic, r.key.as_deref(), r.value.as_deref(), now);
        }
        records.len()
    };
    let now = wf.wall_clock();
    let event = |kind: &str, id: &str, version: &str, before: Value| {
        json!({"id": id, "type": format!("org.alfresco.event.node.{kind}"), "data": {"resource": {"id": "doc-9", "nodeType": "cm:content", "isFile": true,
               "name": "contract.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 9}, "properties": {"cm:versionLabel": version},
               "createdByUser": {"id": "jdoe"}, "modifiedByUser": {"id": "jdoe"}}, "resourceBefore": before}})
    };
    wf.pipe_json("alfresco.node-events", "doc-9", &event("Created", "up-1", "1.0", Value::Null), now);
    wf.pipe_json("document-services.results", "doc-9", &json!({"id": "s-1", "service": "virus-scan", "status": "OK", "run": 1}), now);
    wf.pipe_json(
        "document-services.results",
        "doc-9",
        &json!({"id": "c-1", "service": "classification", "result": {"class": "contract"}, "run": 1}),
        now,
    );
    wf.pipe_json(DECISION_RESULTS, "doc-9", &json!({"id": "d-1", "outcome": {"route": "manual"}, "run": 1}), now);
    assert_eq!(shuttle(&mut wf, TASKS, &mut conn), 1);
    let key = "doc-9:4:0";
    let started = engine.get("history/process-instance", &[("processInstanceBusinessKey", key)]).unwrap();
    let process = started[0]["id"].as_str().expect("the review task's process instance").to_owned();
    let user_task = engine.get("task", &[("processInstanceId", &process)]).unwrap()[0]["id"].as_str().unwrap().to_owned();

    // Version 1.1 arrives while 1.0 is in review.
    wf.pipe_json("alfresco.node-events", "doc-9", &event("Updated", "up-2", "1.1", json!({"content": {"sizeInBytes": 7}})), now);
    assert_eq!(shuttle(&mut wf, TASKS, &mut conn), 1, "the withdraw command");
    assert!(conn.read_output("conn-dlq").is_empty());

    let ended = engine.get("history/process-instance", &[("processInstanceId", &process)]).unwrap();
    assert_eq!(ended[0]["state"], "EXTERNALLY_TERMINATED", "{ended}");
    assert!(engine.get("task", &[("processInstanceId", &process)]).unwrap().as_array().unwrap().is_empty(), "Tasklist no longer offers it");
    let refused =
        engine.post(&format!("task/{user_task}/complete"), &json!({"variables": {"approved": {"value": true, "type": "Boolean"}}}));
    assert!(refused.is_err(), "completing a withdrawn task is refused: {refused:?}");
    c7.withdraw(&process).expect("withdrawing again is no error");

    // The poller forgot the task: nothing of run 1 comes back.
    assert!(conn.store_entries(connectors::poller::OPEN_TASKS).is_empty(), "no open task left to poll for");

    // Run 2 reviews 1.1: a new task in the engine, completed there, answered to run 2.
    wf.pipe_json("document-services.results", "doc-9", &json!({"id": "s-2", "service": "virus-scan", "status": "OK"}), now);
    wf.pipe_json(
        "document-services.results",
        "doc-9",
        &json!({"id": "c-2", "service": "classification", "result": {"class": "contract"}}),
        now,
    );
    wf.pipe_json(DECISION_RESULTS, "doc-9", &json!({"id": "d-2", "outcome": {"route": "manual"}}), now);
    assert_eq!(shuttle(&mut wf, TASKS, &mut conn), 1);
    let running = engine.get("process-instance", &[("processDefinitionKey", PROCESS)]).unwrap();
    assert_eq!(running.as_array().unwrap().len(), 1, "only run 2's task is open in the engine: {running}");
    let process_2 = running[0]["id"].as_str().unwrap().to_owned();
    assert_ne!(process_2, process);
    let task_2 = engine.get("task", &[("processInstanceId", &process_2)]).unwrap()[0]["id"].as_str().unwrap().to_owned();
    engine.post(&format!("task/{task_2}/complete"), &json!({"variables": {"approved": {"value": true, "type": "Boolean"}}})).unwrap();
    for _ in 0..3 {
        conn.advance_wall_clock(1500);
    }
    assert_eq!(shuttle(&mut conn, TASK_RESULTS, &mut wf), 1, "run 2's answer, once");
    let i: keyflow::workflow::Instance = serde_json::from_slice(&wf.store_get("instances", b"doc-9").unwrap()).unwrap();
    assert_eq!((i.state.as_str(), i.run), ("approved", 2));
    assert!(i.history.iter().any(|h| h.run == 1 && h.note.as_deref().is_some_and(|n| n.contains("withdrew 1 open task(s)"))));
}
