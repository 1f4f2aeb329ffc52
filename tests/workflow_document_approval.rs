//! The document-approval workflow end to end through the test driver: every emitted command,
//! the state, the audit trail, the timeout, error and duplicate paths.

use std::path::Path;

use keyflow::dlq;
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::workflow::{self, Instance};
use serde_json::{json, Value};

const NODE: &str = "node-1";
const HOUR: i64 = 3_600_000;

#[path = "common/document_approval.rs"]
mod document_approval;
use document_approval::{driver, values};

fn instance(d: &TopologyTestDriver, node: &str) -> Instance {
    serde_json::from_slice(&d.store_get("instances", node.as_bytes()).expect("instance exists")).unwrap()
}

fn pipe(d: &mut TopologyTestDriver, topic: &str, node: &str, v: Value) {
    let now = d.wall_clock();
    d.pipe_json(topic, node, &v, now);
}

fn upload(d: &mut TopologyTestDriver, node: &str, event_id: &str) {
    pipe(
        d,
        "alfresco.node-events",
        node,
        json!({"id": event_id, "type": "org.alfresco.event.node.Created", "source": "/alfresco",
        "data": {"resource": {"id": node, "nodeType": "cm:content", "name": "contract.pdf",
                 "content": {"mimeType": "application/pdf", "sizeInBytes": 52113}, "createdByUser": {"id": "jdoe"}}}}),
    );
}

fn result(d: &mut TopologyTestDriver, node: &str, id: &str, body: Value) {
    pipe(
        d,
        "document-services.results",
        node,
        json!({"id": id})
            .as_object()
            .unwrap()
            .clone()
            .into_iter()
            .chain(body.as_object().unwrap().clone())
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
}

fn through_classification(d: &mut TopologyTestDriver) {
    upload(d, NODE, "ev-1");
    result(d, NODE, "r-1", json!({"service": "virus-scan", "status": "OK"}));
    result(d, NODE, "r-2", json!({"service": "classification", "status": "OK", "result": {"class": "contract"}}));
}

#[test]
fn an_upload_is_scanned_classified_decided_approved_written_back_and_notified() {
    let mut d = driver();
    upload(&mut d, NODE, "ev-1");
    let commands = values(d.read_output("document-services.commands"));
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0]["service"], "virus-scan");
    assert_eq!(commands[0]["nodeId"], NODE);
    assert_eq!(commands[0]["idempotencyKey"], "node-1:1:0");
    assert_eq!(commands[0]["retry"], json!({"attempts": 5, "backoff": "1s"}));

    result(&mut d, NODE, "r-1", json!({"service": "virus-scan", "status": "OK"}));
    let commands = values(d.read_output("document-services.commands"));
    assert_eq!((commands[0]["service"].as_str(), commands[0]["mimeType"].as_str()), (Some("classification"), Some("application/pdf")));

    result(&mut d, NODE, "r-2", json!({"service": "classification", "status": "OK", "result": {"class": "contract"}}));
    let requests = values(d.read_output("document-approval.decision-requests"));
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["decisionKey"], "document-routing");
    assert_eq!(requests[0]["variables"], json!({"mimeType": "application/pdf", "sizeBytes": 52113, "classification": "contract"}));
    assert_eq!(requests[0]["idempotencyKey"], "node-1:3:0");

    pipe(&mut d, "document-approval.decision-results", NODE, json!({"id": "d-1", "outcome": {"route": "auto-approve"}}));
    let updates = values(d.read_output("document-approval.document-updates"));
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["properties"], json!({"kf:status": "approved", "kf:route": "auto"}));
    assert_eq!(updates[0]["nodeId"], NODE);
    let notes = values(d.read_output("notifications"));
    assert_eq!(
        (notes[0]["recipient"].as_str(), notes[0]["subject"].as_str(), notes[0]["body"].as_str()),
        (Some("jdoe"), Some("Document approved"), Some("contract.pdf"))
    );

    let i = instance(&d, NODE);
    assert_eq!((i.state.as_str(), i.finished, i.step), ("approved", true, 4));
    let trail: Vec<(&str, &str, &str)> = i.history.iter().map(|h| (h.from.as_str(), h.to.as_str(), h.event.as_str())).collect();
    assert_eq!(
        trail,
        vec![
            ("new", "scanning", "org.alfresco.event.node.Created"),
            ("scanning", "classifying", "virus-scan"),
            ("classifying", "deciding", "classification"),
            ("deciding", "approved", "decision.made")
        ]
    );
    let transitions = values(d.read_output("document-approval.transitions"));
    assert_eq!(transitions.len(), 4);
    assert_eq!(transitions[3]["final"], true);
}

#[test]
fn a_manual_review_nobody_answers_is_escalated_after_48_hours_and_then_decided() {
    let mut d = driver();
    through_classification(&mut d);
    pipe(&mut d, "document-approval.decision-results", NODE, json!({"id": "d-1", "outcome": {"route": "manual"}}));
    let tasks = values(d.read_output("document-approval.task-requests"));
    assert_eq!((tasks[0]["name"].as_str(), &tasks[0]["candidateGroups"]), (Some("Review document"), &json!(["reviewers"])));

    d.advance_wall_clock(48 * HOUR - 1);
    assert_eq!(instance(&d, NODE).state, "review", "not yet");
    d.advance_wall_clock(1);
    assert_eq!(instance(&d, NODE).state, "escalated");
    let tasks = values(d.read_output("document-approval.task-requests"));
    assert_eq!(tasks[0]["candidateGroups"], json!(["review-managers"]));
    assert_eq!(values(d.read_output("notifications"))[0]["subject"], "Review overdue for 48 h");

    pipe(&mut d, "document-approval.task-results", NODE, json!({"id": "t-1", "completedBy": "mgr", "variables": {"approved": "true"}}));
    let i = instance(&d, NODE);
    assert_eq!(i.state, "approved");
    assert_eq!(i.history.last().unwrap().event, "task.completed");
    assert_eq!(values(d.read_output("document-approval.document-updates"))[0]["properties"]["kf:reviewer"], "mgr");
}

#[test]
fn a_review_answered_in_time_cancels_the_escalation() {
    let mut d = driver();
    through_classification(&mut d);
    pipe(&mut d, "document-approval.decision-results", NODE, json!({"id": "d-1", "outcome": {"route": "manual"}}));
    pipe(&mut d, "document-approval.task-results", NODE, json!({"id": "t-1", "completedBy": "rev", "variables": {"approved": "false"}}));
    assert_eq!(instance(&d, NODE).state, "rejected");
    d.read_output("notifications");
    d.advance_wall_clock(49 * HOUR);
    assert_eq!(instance(&d, NODE).state, "rejected");
    assert!(d.read_output("notifications").is_empty(), "no escalation after the review was done");
    assert!(d.read_output("docs-dlq").is_empty());
}

#[test]
fn a_virus_takes_the_error_path_to_quarantine() {
    let mut d = driver();
    upload(&mut d, NODE, "ev-1");
    result(&mut d, NODE, "r-1", json!({"service": "virus-scan", "status": "FAILED", "error": "virus_found"}));
    let i = instance(&d, NODE);
    assert_eq!((i.state.as_str(), i.history.last().unwrap().event.as_str()), ("quarantined", "error:virus_found"));
    let updates = values(d.read_output("document-approval.document-updates"));
    assert_eq!(updates[0]["properties"], json!({"kf:status": "quarantined", "kf:reason": "virus_found"}));
    assert!(d.read_output("document-approval.decision-requests").is_empty());
}

#[test]
fn duplicates_are_dropped_late_results_ignored_and_events_that_fit_nothing_dead_lettered() {
    let mut d = driver();
    upload(&mut d, NODE, "ev-1");
    upload(&mut d, NODE, "ev-1"); // the same event delivered twice
    assert_eq!(d.read_output("document-services.commands").len(), 1, "one scan command");
    assert_eq!(instance(&d, NODE).step, 1);

    // A decision for an instance still being scanned fits no transition: dead letter, with why.
    pipe(&mut d, "document-approval.decision-results", NODE, json!({"id": "d-0", "outcome": {"route": "auto-approve"}}));
    let dead = d.read_output("docs-dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers.last_str(dlq::ERROR_MESSAGE), Some("no transition from `scanning` on event `decision.made`"));
    assert_eq!(instance(&d, NODE).state, "scanning");

    result(&mut d, NODE, "r-1", json!({"service": "virus-scan", "status": "OK"}));
    result(&mut d, NODE, "r-2", json!({"service": "classification", "status": "OK", "result": {"class": "invoice"}}));
    result(&mut d, NODE, "r-2b", json!({"service": "classification", "status": "OK", "result": {"class": "late"}})); // late repeat
    pipe(&mut d, "document-approval.decision-results", NODE, json!({"id": "d-1", "outcome": {"route": "reject"}}));
    result(&mut d, NODE, "r-3", json!({"service": "virus-scan", "status": "OK"})); // after the end
    let i = instance(&d, NODE);
    assert_eq!((i.state.as_str(), i.step), ("rejected", 4));
    assert_eq!(i.variables["classification"], "invoice", "the late result changed nothing");
    assert_eq!(d.read_output("docs-dlq").len(), 0, "late and repeated results are ignored, not dead letters");
}

#[test]
fn the_workflow_survives_a_crash_between_steps() {
    let mut d = driver();
    upload(&mut d, NODE, "ev-1");
    d.crash_and_restart(true);
    result(&mut d, NODE, "r-1", json!({"service": "virus-scan", "status": "OK"}));
    assert_eq!(instance(&d, NODE).state, "classifying", "state restored from the changelog");
}

/// The instances per state, as the `instances-per-state` store holds them (zeros dropped).
fn counts(d: &TopologyTestDriver) -> std::collections::BTreeMap<String, i64> {
    d.store_entries(workflow::COUNTS)
        .into_iter()
        .map(|(k, v)| (workflow::parse_count_key(&k).unwrap(), serde_json::from_slice::<i64>(&v).unwrap()))
        .filter(|(_, n)| *n != 0)
        .map(|((w, version, state), n)| {
            assert_eq!((w.as_str(), version), ("document-approval", 1));
            (state, n)
        })
        .collect()
}

/// The same, counted the slow way: every instance read.
fn counted_by_scan(d: &TopologyTestDriver) -> std::collections::BTreeMap<String, i64> {
    let mut by_state = std::collections::BTreeMap::new();
    for v in d.store_entries("instances").values() {
        *by_state.entry(serde_json::from_slice::<Instance>(v).unwrap().state).or_default() += 1;
    }
    by_state
}

#[test]
fn instances_per_state_are_counted_exactly_with_each_transition_and_survive_a_lost_disk() {
    let mut d = driver();
    for n in 0..5 {
        upload(&mut d, &format!("node-{n}"), &format!("ev-{n}"));
    }
    upload(&mut d, "node-0", "ev-0"); // a duplicate moves nothing
    for n in 0..3 {
        result(&mut d, &format!("node-{n}"), &format!("r-{n}"), json!({"service": "virus-scan", "status": "OK"}));
    }
    result(&mut d, "node-4", "r-4", json!({"service": "virus-scan", "status": "FAILED", "error": "virus_found"}));
    let expected =
        std::collections::BTreeMap::from([("classifying".to_owned(), 3), ("quarantined".to_owned(), 1), ("scanning".to_owned(), 1)]);
    assert_eq!(counts(&d), expected);
    assert_eq!(counted_by_scan(&d), expected);

    d.crash_and_restart(true);
    assert_eq!(counts(&d), expected, "restored from its changelog with the instances");
    result(&mut d, "node-3", "r-3", json!({"service": "virus-scan", "status": "OK"}));
    assert_eq!(counts(&d), counted_by_scan(&d));
    assert_eq!(counts(&d)["classifying"], 4);
}

#[test]
fn the_compiled_topology_and_the_workflow_are_described_stably() {
    let def = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    let text = workflow::describe(&def);
    insta::assert_snapshot!(format!("{text}{}", workflow::compile(def, None).unwrap().describe()));
}

/// A custom step in Rust: an in-process virus scanner answering the workflow's scan commands.
struct Scanner;

impl keyflow::Processor for Scanner {
    fn process(&mut self, ctx: &mut keyflow::Context<'_>, record: keyflow::Record) -> Result<(), keyflow::processor::Error> {
        if record.value["service"] == "virus-scan" {
            let id = format!("scan-{}", record.value["idempotencyKey"].as_str().unwrap_or_default());
            ctx.forward(keyflow::Record::new(
                record.key.clone(),
                json!({"id": id, "service": "virus-scan", "status": "OK"}),
                record.timestamp,
            ));
        }
        Ok(())
    }
}

#[test]
fn a_rust_processor_plugs_in_as_a_custom_step() {
    use keyflow::serde::Serde;
    let def = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    let topology = workflow::builder(def, None)
        .unwrap()
        .source("scan-commands", &["document-services.commands"], Serde::String, Serde::Json)
        .processor("scanner", || Scanner, &["scan-commands"])
        .sink("scan-results", "document-services.results", Serde::String, Serde::Json, &["scanner"])
        .build()
        .unwrap();
    let mut d = TopologyTestDriver::new(topology, DriverConfig { application_id: "docs".into(), ..DriverConfig::default() });
    upload(&mut d, NODE, "ev-1");
    d.commit();
    assert_eq!(instance(&d, NODE).state, "classifying", "the in-process scanner answered and the workflow moved on");
}

/// An escalation timer of an instance this binary cannot read (a newer version wrote it, during a
/// rolling deploy or after a rollback) waits, checked again every minute, instead of being
/// dead-lettered (a timer's dead letter cannot be redriven): once a binary that can read the
/// instance is back, it escalates.
#[test]
fn a_timer_of_an_unreadable_instance_waits_for_a_binary_that_can_read_it() {
    let mut d = driver();
    through_classification(&mut d);
    pipe(&mut d, "document-approval.decision-results", NODE, json!({"id": "d-1", "outcome": {"route": "manual"}}));
    let readable = d.store_get("instances", NODE.as_bytes()).unwrap();
    let write_back = |d: &mut TopologyTestDriver, value: &[u8]| {
        d.pipe_input("docs-instances-changelog", Some(NODE.as_bytes()), Some(value), d.wall_clock());
        upload(d, "node-other", &format!("ev-other-{}", value.len())); // a commit after it
        d.crash_and_restart(true);
    };
    write_back(&mut d, br#"{"id": "node-1", "state": {"v3": "review"}}"#);
    d.advance_wall_clock(48 * HOUR + 5 * 60_000);
    assert!(d.committed_records("docs-dlq").is_empty(), "the timer is not dead-lettered");
    assert!(d.read_output("notifications").is_empty(), "nor fired");
    // The instance readable again (the version that reads it is back): the escalation happens.
    write_back(&mut d, &readable);
    d.advance_wall_clock(61_000);
    assert_eq!(instance(&d, NODE).state, "escalated");
    assert_eq!(values(d.read_output("notifications"))[0]["subject"], "Review overdue for 48 h");
}
