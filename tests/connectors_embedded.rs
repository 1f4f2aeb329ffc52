//! Embedded human tasks: the connectors put a task on a Kafka topic, a person lists and completes
//! it with `keyflow tasks` (the binary, against Apache Kafka), and the completion
//! moves the workflow, once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keyflow::connectors::{self, embedded, ConnectorsConfig};
use keyflow::kafka::read::read_to_end;
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::workflow;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Map, Value};

#[path = "common/kafka_broker.rs"]
mod kafka_broker;
use kafka_broker::KafkaCluster;

const TASKS: &str = "document-approval.human-tasks";
const RESULTS: &str = "document-approval.task-results";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn keyflow(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyflow")).args(args).env("USER", "alice").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The task records on the task topic of a broker of this test's own (the workflow's topic names
/// are fixed), as the connectors' producer would have written them, and a directory holding the
/// connectors' configuration for it (`connectors.toml`, from the `[tasks]` section `text`).
fn on_a_broker(records: &[keyflow::testing::StoredRecord], text: &str) -> (KafkaCluster, tempfile::TempDir) {
    let kafka = KafkaCluster::start(1);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    for r in records {
        producer.send(BaseRecord::to(TASKS).key(r.key.as_deref().unwrap()).payload(r.value.as_deref().unwrap())).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("connectors.toml"),
        format!(
            "application.id = \"docs-connectors\"\nbootstrap.servers = \"{}\"\n[topology]\nbuiltin = \"connectors\"\n{}",
            kafka.bootstrap,
            text.replace("[tasks]", "[connectors.tasks]").replacen("workflow", "[connectors]\nworkflow", 1)
        ),
    )
    .unwrap();
    (kafka, dir)
}

#[test]
fn a_person_completes_an_embedded_task_and_the_workflow_moves_once() {
    // The workflow asks for a review; the connectors turn the command into a task record.
    let def = workflow::load(&root().join("topologies/document-approval.toml")).unwrap();
    let mut wf = TopologyTestDriver::new(
        workflow::compile(def, None).unwrap(),
        DriverConfig { application_id: "docs".into(), ..DriverConfig::default() },
    );
    let text = format!(
        "workflow = {:?}\n[tasks]\nbackend = \"embedded\"\n",
        root().join("topologies/document-approval.toml").display().to_string()
    );
    let config: ConnectorsConfig = toml::from_str(&text).unwrap();
    let mut conn = TopologyTestDriver::new(
        connectors::topology(&config, None).unwrap(),
        DriverConfig { application_id: "conn".into(), ..DriverConfig::default() },
    );
    let now = wf.wall_clock();
    wf.pipe_json("alfresco.node-events", "doc-7", &json!({"id": "up-7", "type": "org.alfresco.event.node.Created",
        "data": {"resource": {"id": "doc-7", "nodeType": "cm:content", "name": "contract.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 9}, "createdByUser": {"id": "jdoe"}}}}), now);
    wf.pipe_json("document-services.results", "doc-7", &json!({"id": "s-7", "service": "virus-scan", "status": "OK"}), now);
    wf.pipe_json(
        "document-services.results",
        "doc-7",
        &json!({"id": "c-7", "service": "classification", "result": {"class": "contract"}}),
        now,
    );
    wf.pipe_json("document-approval.decision-results", "doc-7", &json!({"id": "d-7", "outcome": {"route": "manual"}}), now);
    for r in wf.read_output("document-approval.task-requests") {
        conn.pipe_input("document-approval.task-requests", r.key.as_deref(), r.value.as_deref(), now);
    }
    let task_records = conn.read_output(TASKS);
    assert_eq!(task_records.len(), 1);
    let task: Value = serde_json::from_slice(task_records[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(
        (task["taskId"].as_str(), task["state"].as_str(), task["resultTopic"].as_str()),
        (Some("kf-doc-7_4_0"), Some("CREATED"), Some(RESULTS))
    );
    assert_eq!(task["candidateGroups"], json!(["reviewers"]));

    let (kafka, dir) = on_a_broker(&task_records, &text);
    let bootstrap = kafka.bootstrap.clone();
    let cfg = dir.path().join("connectors.toml");
    let cfg = cfg.to_str().unwrap();

    let (ok, out, err) = keyflow(&["tasks", "list", "--config", cfg]);
    assert!(ok, "{err}");
    assert!(out.contains("kf-doc-7_4_0") && out.contains("Review document") && out.contains("doc-7") && out.contains("reviewers"), "{out}");

    let (ok, out, err) =
        keyflow(&["tasks", "complete", "kf-doc-7_4_0", "--config", cfg, "--var", "approved=true", "--var", "comment=looks fine"]);
    assert!(ok, "{err}");
    assert!(out.contains("completed kf-doc-7_4_0"), "{out}");
    let (ok, _, err) = keyflow(&["tasks", "complete", "kf-doc-7_4_0", "--config", cfg, "--var", "approved=false"]);
    assert!(!ok && err.contains("task `kf-doc-7_4_0` is already completed"), "a second completion is refused: {err}");
    let (ok, out, _) = keyflow(&["tasks", "list", "--config", cfg]);
    assert!(ok && out.contains("no open tasks"), "{out}");
    let (ok, _, err) = keyflow(&["tasks", "complete", "nope", "--config", cfg]);
    assert!(!ok && err.contains("no task `nope`"), "{err}");

    // Exactly one completion reached the workflow's topic, and it moves the workflow.
    let sent = read_to_end(&bootstrap, RESULTS, Duration::from_secs(10)).unwrap();
    assert_eq!(sent.len(), 1);
    let event: Value = serde_json::from_slice(sent[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(event["id"], "doc-7:4:0:completed");
    assert_eq!(
        (event["completedBy"].as_str(), event["variables"].clone()),
        (Some("alice"), json!({"approved": "true", "comment": "looks fine"}))
    );
    wf.pipe_input(RESULTS, sent[0].key.as_deref(), sent[0].value.as_deref(), now);
    wf.pipe_input(RESULTS, sent[0].key.as_deref(), sent[0].value.as_deref(), now); // a redelivery
    let inst: workflow::Instance = serde_json::from_slice(&wf.store_get("instances", b"doc-7").unwrap()).unwrap();
    assert_eq!(inst.state, "approved");
    assert_eq!(inst.history.iter().filter(|h| h.event == "task.completed").count(), 1);

    // The library refuses the same way the CLI does.
    assert!(matches!(embedded::complete(&bootstrap, TASKS, "kf-doc-7_4_0", "bob", Map::new(), 0), Err(embedded::Error::NotOpen { .. })));
}

/// A new version supersedes a review whose embedded task is open: the connectors withdraw it,
/// `keyflow tasks complete` refuses it with why, and the new run's task completes as usual.
#[test]
fn a_superseded_runs_embedded_task_is_withdrawn_and_completing_it_is_refused() {
    let definition = root().join("topologies/document-approval.toml");
    let mut wf = TopologyTestDriver::new(
        workflow::compile(workflow::load(&definition).unwrap(), None).unwrap(),
        DriverConfig { application_id: "docs".into(), ..DriverConfig::default() },
    );
    let text = format!("workflow = {:?}\n[tasks]\nbackend = \"embedded\"\n", definition.display().to_string());
    let config: ConnectorsConfig = toml::from_str(&text).unwrap();
    let mut conn = TopologyTestDriver::new(
        connectors::topology(&config, None).unwrap(),
        DriverConfig { application_id: "conn".into(), ..DriverConfig::default() },
    );
    let now = wf.wall_clock();
    let node_event = |kind: &str, id: &str, version: &str, before: Value| {
        json!({"id": id, "type": format!("org.alfresco.event.node.{kind}"), "data": {"resource": {"id": "doc-8", "nodeType": "cm:content", "isFile": true,
               "name": "contract.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 9}, "properties": {"cm:versionLabel": version},
               "createdByUser": {"id": "jdoe"}, "modifiedByUser": {"id": "jdoe"}}, "resourceBefore": before}})
    };
    let review = |wf: &mut TopologyTestDriver, run: u32| {
        let answer = |v: Value| {
            let mut v = v;
            v["run"] = json!(run);
            v
        };
        wf.pipe_json(
            "document-services.results",
            "doc-8",
            &answer(json!({"id": format!("s-{run}"), "service": "virus-scan", "status": "OK"})),
            now,
        );
        let class = json!({"id": format!("c-{run}"), "service": "classification", "result": {"class": "contract"}});
        wf.pipe_json("document-services.results", "doc-8", &answer(class), now);
        wf.pipe_json(
            "document-approval.decision-results",
            "doc-8",
            &answer(json!({"id": format!("d-{run}"), "outcome": {"route": "manual"}})),
            now,
        );
    };
    let to_connectors = |wf: &mut TopologyTestDriver, conn: &mut TopologyTestDriver| {
        for r in wf.read_output("document-approval.task-requests") {
            conn.pipe_input("document-approval.task-requests", r.key.as_deref(), r.value.as_deref(), now);
        }
        conn.read_output(TASKS)
    };
    wf.pipe_json("alfresco.node-events", "doc-8", &node_event("Created", "up-1", "1.0", Value::Null), now);
    review(&mut wf, 1);
    let mut records = to_connectors(&mut wf, &mut conn);
    wf.pipe_json("alfresco.node-events", "doc-8", &node_event("Updated", "up-2", "1.1", json!({"content": {"sizeInBytes": 7}})), now);
    review(&mut wf, 2);
    records.extend(to_connectors(&mut wf, &mut conn));
    let states: Vec<(String, String)> = records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(r.value.as_deref().unwrap()).unwrap())
        .map(|t| (t["taskId"].as_str().unwrap().to_owned(), t["state"].as_str().unwrap().to_owned()))
        .collect();
    let (run_1, run_2) = ("kf-doc-8_4_0", "kf-doc-8_8_0");
    assert_eq!(
        states,
        [(run_1.into(), "CREATED".into()), (run_1.into(), "WITHDRAWN".into()), (run_2.into(), "CREATED".into())],
        "run 1's task opened, then withdrawn; run 2's opened"
    );

    let (kafka, dir) = on_a_broker(&records, &text);
    let bootstrap = kafka.bootstrap.clone();
    let cfg = dir.path().join("connectors.toml");
    let cfg = cfg.to_str().unwrap();
    let (ok, out, _) = keyflow(&["tasks", "list", "--config", cfg]);
    assert!(ok && out.contains(run_2) && !out.contains(run_1), "only run 2's task is open: {out}");
    let (ok, _, err) = keyflow(&["tasks", "complete", run_1, "--config", cfg, "--var", "approved=true"]);
    assert!(!ok, "a withdrawn task is not completed");
    assert!(
        err.contains(&format!("task `{run_1}` was withdrawn (run 1 superseded by run 2")) && err.contains("cannot be completed"),
        "{err}"
    );
    let (ok, _, err) = keyflow(&["tasks", "complete", run_2, "--config", cfg, "--var", "approved=true"]);
    assert!(ok, "{err}");
    let sent = read_to_end(&bootstrap, RESULTS, Duration::from_secs(10)).unwrap();
    assert_eq!(sent.len(), 1, "nothing sent for the withdrawn task");
    wf.pipe_input(RESULTS, sent[0].key.as_deref(), sent[0].value.as_deref(), now);
    let inst: workflow::Instance = serde_json::from_slice(&wf.store_get("instances", b"doc-8").unwrap()).unwrap();
    assert_eq!((inst.state.as_str(), inst.run), ("approved", 2));
}
