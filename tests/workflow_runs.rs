//! Runs of an instance, through the test driver with the reference `document-approval`
//! workflow: a new version of a document restarts a finished review and supersedes one in
//! flight; the superseded run's task is withdrawn and its timers cancelled; its late answers are
//! recorded and never applied; repository events that are not a content change never reach an
//! instance; the write-back names the version it is about.

use std::path::Path;

use keyflow::testing::{DriverConfig, StoredRecord, TopologyTestDriver};
use keyflow::workflow::{self, Instance};
use serde_json::{json, Value};

const NODE: &str = "node-1";
const HOUR: i64 = 3_600_000;
const DLQ: &str = "docs-dlq";
const TASKS: &str = "document-approval.task-requests";

fn driver() -> TopologyTestDriver {
    let def = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    TopologyTestDriver::new(
        workflow::compile(def, None).unwrap(),
        DriverConfig { application_id: "docs".into(), ..DriverConfig::default() },
    )
}

fn values(records: Vec<StoredRecord>) -> Vec<Value> {
    records.into_iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect()
}

fn instance(d: &TopologyTestDriver) -> Instance {
    serde_json::from_slice(&d.store_get("instances", NODE.as_bytes()).expect("instance exists")).unwrap()
}

fn pipe(d: &mut TopologyTestDriver, topic: &str, v: Value) {
    let now = d.wall_clock();
    d.pipe_json(topic, NODE, &v, now);
}

/// A repository event of a document, as Alfresco's event gateway publishes it.
fn node_event(kind: &str, id: &str, version: &str, before: Option<Value>) -> Value {
    let mut e = json!({"id": id, "type": format!("org.alfresco.event.node.{kind}"), "source": "/alfresco",
        "data": {"resource": {"id": NODE, "nodeType": "cm:content", "name": "contract.pdf", "isFile": true, "isFolder": false,
                 "content": {"mimeType": "application/pdf", "sizeInBytes": 52113},
                 "properties": {"cm:versionLabel": version, "cm:title": "Contract"},
                 "createdByUser": {"id": "jdoe"}, "modifiedByUser": {"id": "asmith"}}}});
    if let Some(b) = before {
        e["data"]["resourceBefore"] = b;
    }
    e
}

fn upload(d: &mut TopologyTestDriver) {
    pipe(d, "alfresco.node-events", node_event("Created", "ev-1", "1.0", None));
}

/// Version `version` of the document's content: a `node.Updated` whose "before" image has content.
fn new_version(d: &mut TopologyTestDriver, id: &str, version: &str) {
    let before = json!({"modifiedAt": "2026-12-01T10:00:00.000+0000", "content": {"mimeType": "application/pdf", "sizeInBytes": 50000}});
    pipe(d, "alfresco.node-events", node_event("Updated", id, version, Some(before)));
}

fn service(d: &mut TopologyTestDriver, id: &str, body: Value) {
    let mut v = json!({"id": id});
    v.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    pipe(d, "document-services.results", v);
}

/// Scan and classify, then the routing decision says `route`; answers name run `run`.
fn to_decision(d: &mut TopologyTestDriver, run: u32, route: &str) {
    service(d, &format!("scan-{run}"), json!({"service": "virus-scan", "status": "OK", "run": run}));
    service(d, &format!("class-{run}"), json!({"service": "classification", "status": "OK", "result": {"class": "contract"}, "run": run}));
    pipe(d, "document-approval.decision-results", json!({"id": format!("d-{run}"), "outcome": {"route": route}, "run": run}));
}

fn trail(i: &Instance) -> Vec<(u32, String, String, Option<String>)> {
    i.history.iter().map(|h| (h.run, h.from.clone(), h.to.clone(), h.note.clone())).collect()
}

/// Drives run 1 of the document to `end` (approved, rejected or quarantined).
fn finish_run_1(d: &mut TopologyTestDriver, end: &str) {
    upload(d);
    match end {
        "quarantined" => service(d, "scan-1", json!({"service": "virus-scan", "status": "INFECTED", "error": "virus_found", "run": 1})),
        "approved" => to_decision(d, 1, "auto-approve"),
        "rejected" => to_decision(d, 1, "reject"),
        other => unreachable!("{other}"),
    }
    assert_eq!((instance(d).state.as_str(), instance(d).finished), (end, true));
}

#[test]
fn a_new_version_restarts_a_finished_instance_after_each_end_state() {
    for end in ["approved", "rejected", "quarantined"] {
        let mut d = driver();
        finish_run_1(&mut d, end);
        let run_1 = values(d.read_output("document-approval.document-updates"));
        assert_eq!((run_1[0]["version"].as_str(), run_1[0]["run"].as_u64()), (Some("1.0"), Some(1)), "{end}");
        let commands_before = values(d.read_output("document-services.commands"));
        let keys_before: Vec<&str> = commands_before.iter().filter_map(|c| c["idempotencyKey"].as_str()).collect();

        new_version(&mut d, "ev-2", "1.1");
        let i = instance(&d);
        assert_eq!(
            (i.state.as_str(), i.run, i.finished, i.variables["versionLabel"].as_str()),
            ("scanning", 2, false, Some("1.1")),
            "{end}"
        );
        assert_eq!(i.history.last().unwrap().run, 2);
        assert_eq!(i.history.last().unwrap().from, "new", "run 2 starts at the initial state");
        let scan = values(d.read_output("document-services.commands"));
        assert_eq!((scan.len(), scan[0]["service"].as_str(), scan[0]["run"].as_u64()), (1, Some("virus-scan"), Some(2)));
        assert!(!keys_before.contains(&scan[0]["idempotencyKey"].as_str().unwrap()), "run 2's keys never meet run 1's");
        let last = values(d.read_output("document-approval.transitions")).pop().unwrap();
        assert_eq!((last["run"].as_u64(), last["to"].as_str(), last["final"].as_bool()), (Some(2), Some("scanning"), Some(false)));

        to_decision(&mut d, 2, "auto-approve");
        let i = instance(&d);
        assert_eq!((i.state.as_str(), i.run), ("approved", 2));
        let update = values(d.read_output("document-approval.document-updates")).pop().unwrap();
        assert_eq!((update["version"].as_str(), update["run"].as_u64()), (Some("1.1"), Some(2)), "the write-back names version 1.1");
        assert!(d.read_output(DLQ).is_empty(), "{end}: nothing dead-lettered");
    }
}

#[test]
fn a_new_version_supersedes_the_run_in_flight_from_each_state() {
    // (state, how to get there)
    type Reach = fn(&mut TopologyTestDriver);
    let paths: [(&str, Reach); 5] = [
        ("scanning", |_| {}),
        ("classifying", |d| service(d, "scan-1", json!({"service": "virus-scan", "status": "OK", "run": 1}))),
        ("deciding", |d| {
            service(d, "scan-1", json!({"service": "virus-scan", "status": "OK", "run": 1}));
            service(d, "class-1", json!({"service": "classification", "status": "OK", "result": {"class": "contract"}, "run": 1}));
        }),
        ("review", |d| to_decision(d, 1, "manual")),
        ("escalated", |d| {
            to_decision(d, 1, "manual");
            d.advance_wall_clock(48 * HOUR);
        }),
    ];
    for (state, path) in paths {
        let mut d = driver();
        upload(&mut d);
        path(&mut d);
        assert_eq!(instance(&d).state, state);
        let opened: Vec<String> = values(d.read_output(TASKS)).iter().map(|t| t["idempotencyKey"].as_str().unwrap().to_owned()).collect();

        new_version(&mut d, "ev-2", "1.1");
        let i = instance(&d);
        assert_eq!((i.state.as_str(), i.run, i.variables["versionLabel"].as_str()), ("scanning", 2, Some("1.1")), "from {state}");
        let superseded = &i.history[i.history.len() - 2];
        assert_eq!(
            (superseded.run, superseded.from.as_str(), superseded.to.as_str()),
            (1, state, state),
            "run 1 ends where it was, recorded"
        );
        assert!(superseded.note.as_deref().unwrap().starts_with("superseded by run 2"), "{:?}", superseded.note);
        let transitions = values(d.read_output("document-approval.transitions"));
        let ended = transitions.iter().find(|t| t["superseded"] == true).expect("the superseded run's record");
        assert_eq!((ended["run"].as_u64(), ended["from"].as_str()), (Some(1), Some(state)));

        // Its open tasks are withdrawn, by the keys that opened them.
        let withdrawn = values(d.read_output(TASKS));
        if opened.is_empty() {
            assert!(withdrawn.is_empty(), "from {state}: nothing to withdraw, no command");
        } else {
            assert_eq!(withdrawn.len(), 1, "from {state}");
            assert_eq!(withdrawn[0]["command"], "withdraw");
            let keys: Vec<&str> = withdrawn[0]["tasks"].as_array().unwrap().iter().map(|t| t["idempotencyKey"].as_str().unwrap()).collect();
            assert_eq!(keys, opened.iter().map(String::as_str).collect::<Vec<_>>(), "from {state}");
            assert_eq!(withdrawn[0]["run"], 1);
            assert!(withdrawn[0]["reason"].as_str().unwrap().contains("superseded by run 2"));
        }
        // Its escalation is cancelled: two days on, run 2 has not moved.
        d.advance_wall_clock(49 * HOUR);
        assert_eq!(instance(&d).state, "scanning", "from {state}: run 1's timer never fires into run 2");
        assert!(d.read_output(DLQ).is_empty(), "from {state}");
    }
}

#[test]
fn late_answers_of_a_superseded_run_are_recorded_and_never_applied() {
    let mut d = driver();
    upload(&mut d);
    to_decision(&mut d, 1, "manual");
    let task = values(d.read_output(TASKS)).remove(0);
    new_version(&mut d, "ev-2", "1.1");
    service(&mut d, "scan-2", json!({"service": "virus-scan", "status": "OK", "run": 2}));
    service(&mut d, "class-2", json!({"service": "classification", "status": "OK", "result": {"class": "contract"}, "run": 2}));
    assert_eq!(instance(&d).state, "deciding");

    // Run 1's reviewer answers after all, and a decision of run 1 arrives late.
    pipe(
        &mut d,
        "document-approval.task-results",
        json!({"id": format!("{}:completed", task["idempotencyKey"].as_str().unwrap()), "idempotencyKey": task["idempotencyKey"],
               "run": 1, "completedBy": "rev", "variables": {"approved": "true"}}),
    );
    pipe(&mut d, "document-approval.decision-results", json!({"id": "d-1-again", "outcome": {"route": "auto-approve"}, "run": 1}));
    let i = instance(&d);
    assert_eq!((i.state.as_str(), i.run), ("deciding", 2), "neither answer moved run 2");
    let notes: Vec<&str> = i.history.iter().rev().take(2).filter_map(|h| h.note.as_deref()).collect();
    assert_eq!(notes.len(), 2, "both recorded: {:?}", trail(&i));
    assert!(notes.iter().all(|n| n.starts_with("a late answer of run 1, ignored")), "{notes:?}");
    assert!(d.read_output("document-approval.document-updates").is_empty(), "run 1's approval is never written");
    assert!(d.read_output(DLQ).is_empty(), "late answers are not dead letters");

    // Run 2's own decision still applies.
    pipe(&mut d, "document-approval.decision-results", json!({"id": "d-2", "outcome": {"route": "auto-approve"}, "run": 2}));
    assert_eq!(instance(&d).state, "approved");
    assert_eq!(values(d.read_output("document-approval.document-updates"))[0]["version"], "1.1");
}

#[test]
fn replayed_inputs_of_an_old_run_change_nothing() {
    let mut d = driver();
    finish_run_1(&mut d, "approved");
    new_version(&mut d, "ev-2", "1.1");
    let before = instance(&d);
    d.read_output("document-services.commands");
    d.read_output("document-approval.document-updates");
    // The whole of run 1 delivered again (a replay of the topics): the same event ids.
    upload(&mut d);
    to_decision(&mut d, 1, "auto-approve");
    new_version(&mut d, "ev-2", "1.1");
    let after = instance(&d);
    assert_eq!((after.state.as_str(), after.run, after.step), (before.state.as_str(), before.run, before.step));
    assert!(d.read_output("document-services.commands").is_empty(), "no command sent twice");
    assert!(d.read_output("document-approval.document-updates").is_empty());
    assert!(d.read_output(DLQ).is_empty());
}

#[test]
fn repository_events_that_change_no_content_never_reach_an_instance() {
    let mut d = driver();
    // Of a document nobody uploaded through keyflow, and folder events: nothing is stored.
    let folder = json!({"id": "ev-f", "type": "org.alfresco.event.node.Created",
                        "data": {"resource": {"id": NODE, "nodeType": "cm:folder", "isFile": false, "isFolder": true, "name": "Contracts"}}});
    pipe(&mut d, "alfresco.node-events", folder);
    pipe(&mut d, "alfresco.node-events", node_event("Deleted", "ev-d0", "1.0", None));
    assert!(d.store_get("instances", NODE.as_bytes()).is_none());

    upload(&mut d);
    to_decision(&mut d, 1, "manual");
    let steps = instance(&d).step;
    // A metadata edit during the review, a move, an association: skipped.
    let edit = json!({"@type": "NodeResource", "modifiedAt": "2026-12-01T10:00:00.000+0000", "properties": {"cm:title": "old"}});
    pipe(&mut d, "alfresco.node-events", node_event("Updated", "ev-m1", "1.0", Some(edit)));
    pipe(&mut d, "alfresco.node-events", node_event("Updated", "ev-m2", "1.0", Some(json!({"primaryHierarchy": ["a", "b"]}))));
    let assoc =
        json!({"id": "ev-a", "type": "org.alfresco.event.assoc.child.Created", "data": {"resource": {"parentId": "p", "childId": NODE}}});
    pipe(&mut d, "alfresco.node-events", assoc);
    assert_eq!((instance(&d).state.as_str(), instance(&d).step), ("review", steps));

    pipe(&mut d, "document-approval.task-results", json!({"id": "t-1", "completedBy": "rev", "variables": {"approved": "true"}, "run": 1}));
    assert_eq!(instance(&d).state, "approved");
    // keyflow's own write-back comes back as a metadata edit of the finished instance.
    let writeback = json!({"modifiedAt": "2026-12-01T11:00:00.000+0000", "properties": {"kf:status": null, "kf:route": null}});
    pipe(&mut d, "alfresco.node-events", node_event("Updated", "ev-w", "1.0", Some(writeback)));
    // Deleting an approved document ends nothing more.
    pipe(&mut d, "alfresco.node-events", node_event("Deleted", "ev-d1", "1.0", None));
    assert_eq!(instance(&d).state, "approved");
    assert!(d.read_output(DLQ).is_empty(), "none of them is a dead letter");
    // A malformed repository event is still one, with why.
    pipe(&mut d, "alfresco.node-events", json!({"id": "ev-x", "data": {}}));
    assert_eq!(d.read_output(DLQ).len(), 1);
}

#[test]
fn a_document_deleted_during_its_review_ends_the_run_and_withdraws_the_task() {
    let mut d = driver();
    upload(&mut d);
    to_decision(&mut d, 1, "manual");
    d.advance_wall_clock(48 * HOUR); // escalated: two tasks open
    let opened = values(d.read_output(TASKS));
    assert_eq!(opened.len(), 2);
    pipe(&mut d, "alfresco.node-events", node_event("Deleted", "ev-d", "1.0", None));
    let i = instance(&d);
    assert_eq!((i.state.as_str(), i.finished), ("deleted", true));
    assert!(i.open_tasks.is_empty());
    let withdraw = values(d.read_output(TASKS)).remove(0);
    assert_eq!((withdraw["command"].as_str(), withdraw["tasks"].as_array().unwrap().len()), (Some("withdraw"), 2));
    assert!(withdraw["reason"].as_str().unwrap().contains("ended in `deleted`"));
    assert!(i.history.last().unwrap().note.as_deref().unwrap().starts_with("withdrew 2 open task(s)"));
}

#[test]
fn a_run_that_ends_withdraws_only_the_tasks_left_open() {
    let mut d = driver();
    upload(&mut d);
    to_decision(&mut d, 1, "manual");
    d.advance_wall_clock(48 * HOUR); // escalated: the review task and the overdue one
    let opened = values(d.read_output(TASKS));
    let first = opened[0]["idempotencyKey"].as_str().unwrap();
    pipe(
        &mut d,
        "document-approval.task-results",
        json!({"id": format!("{first}:completed"), "idempotencyKey": first, "run": 1, "completedBy": "rev", "variables": {"approved": "true"}}),
    );
    assert_eq!(instance(&d).state, "approved");
    let withdraw = values(d.read_output(TASKS)).remove(0);
    let keys: Vec<&str> = withdraw["tasks"].as_array().unwrap().iter().map(|t| t["idempotencyKey"].as_str().unwrap()).collect();
    assert_eq!(keys, vec![opened[1]["idempotencyKey"].as_str().unwrap()], "the answered task is not withdrawn");
}
