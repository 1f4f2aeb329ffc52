//! Runs of an instance, through the test driver with the reference `document-approval`
//! workflow: a new version of a document restarts a finished review and supersedes one in
//! flight; the superseded run's task is withdrawn and its timers cancelled; its late answers are
//! recorded and never applied; repository events that are not a content change never reach an
//! instance; the write-back names the version it is about.

use std::path::Path;

use keyflow::testing::TopologyTestDriver;
use keyflow::workflow::{self, Instance};
use serde_json::{json, Value};

const NODE: &str = "node-1";
const HOUR: i64 = 3_600_000;
const DLQ: &str = "docs-dlq";
const TASKS: &str = "document-approval.task-requests";

#[path = "common/document_approval.rs"]
mod document_approval;
use document_approval::{driver, values};

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

/// The idempotency key of the last command the workflow sent to `topic` (from what it
/// committed, so `read_output` still sees it).
fn last_key(d: &mut TopologyTestDriver, topic: &str) -> String {
    d.commit();
    let (_, last) = d.committed_records(topic).pop().expect("a command");
    let v: Value = serde_json::from_slice(last.value.as_deref().unwrap()).unwrap();
    v["idempotencyKey"].as_str().unwrap().to_owned()
}

/// Answers the scan, then the classification, each naming its command as the services do
/// (`<key>:result`).
fn scanned_and_classified(d: &mut TopologyTestDriver) {
    let scan = last_key(d, "document-services.commands");
    service(d, &format!("{scan}:result"), json!({"service": "virus-scan", "status": "OK"}));
    let classify = last_key(d, "document-services.commands");
    service(d, &format!("{classify}:result"), json!({"service": "classification", "status": "OK", "result": {"class": "contract"}}));
}

/// Scan and classify, then the routing decision says `route` (answered by its key, as the
/// connectors answer).
fn to_decision(d: &mut TopologyTestDriver, _run: u32, route: &str) {
    scanned_and_classified(d);
    let request = last_key(d, "document-approval.decision-requests");
    pipe(d, "document-approval.decision-results", json!({"id": request, "outcome": {"route": route}}));
}

/// Drives run 1 of the document to `end` (approved, rejected or quarantined).
fn finish_run_1(d: &mut TopologyTestDriver, end: &str) {
    upload(d);
    match end {
        "quarantined" => {
            let scan = last_key(d, "document-services.commands");
            service(d, &format!("{scan}:result"), json!({"service": "virus-scan", "status": "INFECTED", "error": "virus_found"}))
        }
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
        let steps_of_run_1 = instance(&d).step;
        d.read_output("document-services.commands");

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
        let key = format!("node-1:{}:0", steps_of_run_1 + 1);
        assert_eq!(scan[0]["idempotencyKey"].as_str(), Some(key.as_str()), "steps count on: run 2's keys never meet run 1's");
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
        ("classifying", |d| {
            let scan = last_key(d, "document-services.commands");
            service(d, &format!("{scan}:result"), json!({"service": "virus-scan", "status": "OK"}));
        }),
        ("deciding", scanned_and_classified),
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
    // Run 1 waits for its routing decision when version 1.1 arrives.
    let mut d = driver();
    upload(&mut d);
    scanned_and_classified(&mut d);
    let run_1_decision = last_key(&mut d, "document-approval.decision-requests");
    new_version(&mut d, "ev-2", "1.1");
    let run_2_scan = last_key(&mut d, "document-services.commands");
    // The decision service answers run 1 now, by its key, with nothing else to tell the runs
    // apart (no `run`): recorded, not applied.
    pipe(&mut d, "document-approval.decision-results", json!({"id": run_1_decision, "outcome": {"route": "auto-approve"}}));
    let i = instance(&d);
    assert_eq!((i.state.as_str(), i.run), ("scanning", 2), "run 1's decision did not approve 1.1 unscanned");
    let note = i.history.last().unwrap().note.clone().unwrap();
    assert_eq!(note, "a late answer of an earlier run, ignored: the instance is on run 2");
    assert!(d.read_output("document-approval.document-updates").is_empty(), "run 1's outcome is never written");
    assert!(d.read_output(DLQ).is_empty(), "late answers are not dead letters");

    // A service result of run 1 that names its run as well.
    service(&mut d, "node-1:1:0:result-again", json!({"service": "virus-scan", "status": "INFECTED", "error": "virus_found", "run": 1}));
    let i = instance(&d);
    assert_eq!(i.state, "scanning");
    assert_eq!(i.history.last().unwrap().note.as_deref(), Some("a late answer of run 1, ignored: the instance is on run 2"));

    // Run 2's own answers apply; a field named `run` in an event that answers no command of
    // this instance is just a field.
    service(&mut d, &format!("{run_2_scan}:result"), json!({"service": "virus-scan", "status": "OK", "run": 0}));
    assert_eq!(instance(&d).state, "classifying");
    let classify = last_key(&mut d, "document-services.commands");
    service(&mut d, &format!("{classify}:result"), json!({"service": "classification", "status": "OK", "result": {"class": "x"}}));
    let request = last_key(&mut d, "document-approval.decision-requests");
    pipe(&mut d, "document-approval.decision-results", json!({"id": request, "outcome": {"route": "auto-approve"}}));
    assert_eq!((instance(&d).state.as_str(), instance(&d).run), ("approved", 2));
    assert_eq!(values(d.read_output("document-approval.document-updates"))[0]["version"], "1.1");
}

#[test]
fn a_late_task_completion_of_a_superseded_run_is_recorded_and_never_applied() {
    let mut d = driver();
    upload(&mut d);
    to_decision(&mut d, 1, "manual");
    let task = last_key(&mut d, TASKS);
    new_version(&mut d, "ev-2", "1.1");
    to_decision(&mut d, 2, "manual");
    assert_eq!(instance(&d).state, "review");
    let run_2_task = last_key(&mut d, TASKS);
    // Run 1's reviewer answers after all, as `keyflow tasks complete` would have before the
    // task was withdrawn (its answer: `<key>:completed`).
    pipe(
        &mut d,
        "document-approval.task-results",
        json!({"id": format!("{task}:completed"), "completedBy": "rev", "variables": {"approved": "true"}}),
    );
    let i = instance(&d);
    assert_eq!((i.state.as_str(), i.run), ("review", 2), "run 1's approval is not run 2's");
    assert!(i.open_tasks.contains_key(&run_2_task), "run 2's task is still open");
    assert!(i.history.last().unwrap().note.as_deref().unwrap().starts_with("a late answer of an earlier run"));
    assert!(d.read_output(DLQ).is_empty());
    d.read_output(TASKS);
    pipe(
        &mut d,
        "document-approval.task-results",
        json!({"id": format!("{run_2_task}:completed"), "completedBy": "rev", "variables": {"approved": "false"}}),
    );
    assert_eq!((instance(&d).state.as_str(), instance(&d).run), ("rejected", 2));
    assert!(instance(&d).open_tasks.is_empty());
    let left = values(d.read_output(TASKS));
    assert!(left.is_empty(), "nothing left to withdraw: {left:?}");
}

#[test]
fn a_new_run_of_an_instance_finished_on_an_older_version_starts_on_the_newest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = |f: &str| workflow::load(&root.join(f)).unwrap();
    let mut d = driver();
    finish_run_1(&mut d, "approved");
    assert_eq!(instance(&d).version, 1);
    let both =
        workflow::Versions::new(vec![load("topologies/document-approval.toml"), load("topologies/document-approval.v2.toml")]).unwrap();
    d.redeploy(workflow::compile_versions(both, None).unwrap());
    new_version(&mut d, "ev-2", "1.1");
    let i = instance(&d);
    assert_eq!((i.version, i.run, i.state.as_str()), (2, 2, "scanning"));
    to_decision(&mut d, 2, "manual");
    assert_eq!(instance(&d).state, "in-review", "version 2's name for the review");
    let mut counts = std::collections::BTreeMap::new();
    for (_, r) in d.committed_records("docs-instances-per-state-changelog") {
        let (Some(k), Some(v)) = (r.key, r.value) else { continue };
        let Some(key) = workflow::parse_count_key(&k) else { continue };
        counts.insert(key, serde_json::from_slice::<i64>(&v).unwrap());
    }
    counts.retain(|_, n| *n != 0);
    let in_review = ("document-approval".to_owned(), 2, "in-review".to_owned());
    assert_eq!(counts, std::collections::BTreeMap::from([(in_review, 1)]), "moved from version 1's `approved` to version 2's count");
}

#[test]
fn restart_on_is_validated() {
    let def = |states: &str| {
        let text = format!(
            "name = \"w\"\nkey = \"record.key\"\ninitial = \"new\"\n[[inputs]]\ntopic = \"t\"\nevent_field = \"type\"\n{states}\n\
             [[transitions]]\nfrom = \"new\"\non = \"go\"\nto = \"done\"\n"
        );
        workflow::Definition::parse(&text, "w.toml").map(drop).map_err(|e| e.to_string())
    };
    assert_eq!(def("[states.new]\n[states.done]\nterminal = true\nrestart_on = [\"go\"]"), Ok(()));
    let err = def("[states.new]\n[states.done]\nterminal = true\nrestart_on = [\"again\"]").unwrap_err();
    assert!(err.contains("restart_on `again` needs a transition from the initial state `new` on `again`"), "{err}");
    let err = def("[states.new]\nrestart_on = [\"go\"]\n[states.done]\nterminal = true").unwrap_err();
    assert!(err.contains("state `new` is the initial state"), "{err}");
}

#[test]
fn replayed_inputs_of_an_old_run_change_nothing() {
    let mut d = driver();
    finish_run_1(&mut d, "approved");
    new_version(&mut d, "ev-2", "1.1");
    let before = instance(&d);
    for topic in ["document-services.commands", "document-approval.decision-requests", "document-approval.document-updates", TASKS] {
        d.read_output(topic);
    }
    // The whole of run 1 and the start of run 2 delivered again (a replay of the topics): the
    // same events, the same ids.
    upload(&mut d);
    service(&mut d, "node-1:1:0:result", json!({"service": "virus-scan", "status": "OK"}));
    service(&mut d, "node-1:2:0:result", json!({"service": "classification", "status": "OK", "result": {"class": "contract"}}));
    pipe(&mut d, "document-approval.decision-results", json!({"id": "node-1:3:0", "outcome": {"route": "auto-approve"}}));
    new_version(&mut d, "ev-2", "1.1");
    let after = instance(&d);
    assert_eq!(after, before, "state, runs, history: all as they were");
    for topic in ["document-services.commands", "document-approval.decision-requests", "document-approval.document-updates", TASKS] {
        assert!(d.read_output(topic).is_empty(), "nothing sent again to {topic}");
    }
    assert!(d.read_output(DLQ).is_empty());
}

#[test]
fn a_new_version_redelivered_after_the_duplicate_window_starts_no_other_run() {
    let mut d = driver();
    finish_run_1(&mut d, "approved");
    new_version(&mut d, "ev-2", "1.1");
    // Many late answers later (each remembered), the event that started run 2 comes again.
    for n in 0..100 {
        service(&mut d, &format!("node-1:1:0:result-{n}"), json!({"service": "virus-scan", "status": "OK"}));
    }
    new_version(&mut d, "ev-2", "1.1");
    assert_eq!(instance(&d).run, 2);
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

/// A task cancelled in the engine, outside keyflow, is answered `task_cancelled` by the poller
/// (`tests/camunda7.rs`). The reference workflow has no transition for it: the answer of the
/// run waiting for the task is a dead letter naming the task, and the instance waits on (its
/// escalation still runs); the same answer for a superseded run is a late answer, noted.
#[test]
fn a_task_cancelled_in_the_engine_is_a_dead_letter_that_names_it_unless_its_run_is_over() {
    let mut d = driver();
    upload(&mut d);
    to_decision(&mut d, 1, "manual");
    let task = last_key(&mut d, TASKS);
    let cancelled = |key: &str, run: u64| {
        json!({"id": format!("{key}:cancelled"), "error": "task_cancelled", "idempotencyKey": key, "run": run, "name": "Review document",
               "reason": "task `Review document` was cancelled in the engine: its process instance p-1 was cancelled in Camunda 7 (EXTERNALLY_TERMINATED)"})
    };
    pipe(&mut d, "document-approval.task-results", cancelled(&task, 1));
    let dead = d.read_output(DLQ);
    assert_eq!(dead.len(), 1);
    let reason = dead[0].headers.last_str("keyflow.dlq.error.message").unwrap_or_default().to_owned();
    assert!(reason.contains("task_cancelled"), "{reason}");
    assert_eq!(instance(&d).state, "review", "the instance waits on");
    assert!(instance(&d).open_tasks.contains_key(&task));
    d.advance_wall_clock(49 * HOUR);
    assert_eq!(instance(&d).state, "escalated", "its escalation still runs");

    // A new version supersedes run 1; the engine's cancellation of run 1's task comes after.
    new_version(&mut d, "ev-2", "1.1");
    pipe(&mut d, "document-approval.task-results", cancelled(&task, 1));
    assert!(d.read_output(DLQ).is_empty(), "run 1 no longer waits for it");
    assert!(instance(&d).history.last().unwrap().note.as_deref().unwrap().starts_with("a late answer of run 1"));
}
