//! The claim-processing workflow through the test driver, including its error paths.

use std::path::Path;

use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::workflow::{self, Instance};
use serde_json::{json, Value};

fn driver() -> TopologyTestDriver {
    let def = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/claim-processing.toml")).unwrap();
    TopologyTestDriver::new(
        workflow::compile(def, None).unwrap(),
        DriverConfig { application_id: "claims".into(), partitions: 2, ..DriverConfig::default() },
    )
}

fn pipe(d: &mut TopologyTestDriver, topic: &str, claim: &str, v: Value) {
    let now = d.wall_clock();
    d.pipe_json(topic, claim, &v, now);
}

fn state(d: &TopologyTestDriver, claim: &str) -> Instance {
    serde_json::from_slice(&d.store_get("instances", claim.as_bytes()).unwrap()).unwrap()
}

fn values(d: &mut TopologyTestDriver, topic: &str) -> Vec<Value> {
    d.read_output(topic).into_iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect()
}

fn submit(d: &mut TopologyTestDriver, claim: &str) {
    pipe(
        d,
        "claims.events",
        claim,
        json!({"id": format!("{claim}-s"), "type": "claim.submitted", "policyId": "P-9", "amount": 1250.0, "claimant": "ann@example.com", "documents": ["invoice.pdf"]}),
    );
}

#[test]
fn a_clean_claim_is_checked_decided_paid_and_the_claimant_told() {
    let mut d = driver();
    submit(&mut d, "C-1");
    let cmds = values(&mut d, "claim-services.commands");
    assert_eq!((cmds[0]["service"].as_str(), &cmds[0]["documents"]), (Some("document-check"), &json!(["invoice.pdf"])));
    pipe(&mut d, "claim-services.results", "C-1", json!({"id": "r1", "service": "document-check", "status": "OK"}));
    let req = values(&mut d, "claim-processing.decision-requests");
    assert_eq!(req[0]["variables"], json!({"policyId": "P-9", "amount": 1250.0}));
    pipe(&mut d, "claim-processing.decision-results", "C-1", json!({"id": "d1", "outcome": {"result": "approve"}}));
    let pay = values(&mut d, "claim-services.commands");
    assert_eq!(
        (pay[0]["service"].as_str(), pay[0]["amount"].as_f64(), pay[0]["idempotencyKey"].as_str()),
        (Some("payment"), Some(1250.0), Some("C-1:3:0"))
    );
    pipe(&mut d, "claim-services.results", "C-1", json!({"id": "r2", "service": "payment", "status": "OK"}));
    let s = state(&d, "C-1");
    assert_eq!((s.state.as_str(), s.finished), ("paid", true));
    assert_eq!(values(&mut d, "notifications").last().unwrap()["subject"], "Claim paid");
}

#[test]
fn missing_documents_wait_for_the_claimant_then_an_adjuster_pays_and_the_payment_fails() {
    let mut d = driver();
    submit(&mut d, "C-2");
    pipe(
        &mut d,
        "claim-services.results",
        "C-2",
        json!({"id": "r1", "service": "document-check", "status": "FAILED", "error": "missing_documents"}),
    );
    assert_eq!(state(&d, "C-2").state, "awaiting-documents");
    assert_eq!(values(&mut d, "notifications")[0]["subject"], "Documents missing for your claim");
    pipe(&mut d, "claims.events", "C-2", json!({"id": "C-2-docs", "type": "claim.documents-added", "documents": ["police-report.pdf"]}));
    assert_eq!(state(&d, "C-2").state, "checking-documents");
    pipe(&mut d, "claim-services.results", "C-2", json!({"id": "r2", "service": "document-check", "status": "OK"}));
    pipe(&mut d, "claim-processing.decision-results", "C-2", json!({"id": "d1", "outcome": {"result": "investigate"}}));
    assert_eq!(values(&mut d, "claim-processing.task-requests")[0]["candidateGroups"], json!(["adjusters"]));
    pipe(&mut d, "claim-processing.task-results", "C-2", json!({"id": "t1", "variables": {"decision": "pay"}}));
    pipe(&mut d, "claim-services.results", "C-2", json!({"id": "r3", "service": "payment", "status": "FAILED", "error": "payment_failed"}));
    let s = state(&d, "C-2");
    assert_eq!(s.state, "payment-failed");
    let path: Vec<&str> = s.history.iter().map(|h| h.to.as_str()).collect();
    assert_eq!(
        path,
        vec!["checking-documents", "awaiting-documents", "checking-documents", "deciding", "adjuster-review", "paying", "payment-failed"]
    );
}

#[test]
fn documents_that_never_arrive_close_the_claim_after_seven_days() {
    let mut d = driver();
    submit(&mut d, "C-3");
    pipe(&mut d, "claim-services.results", "C-3", json!({"id": "r1", "service": "document-check", "error": "missing_documents"}));
    d.advance_wall_clock(7 * 24 * 3_600_000);
    assert_eq!(state(&d, "C-3").state, "rejected");
}

#[test]
fn a_claim_whose_guard_fails_is_a_dead_letter_not_a_transition() {
    let mut d = driver();
    pipe(&mut d, "claims.events", "C-4", json!({"id": "x", "type": "claim.submitted", "amount": -5.0}));
    assert!(d.store_get("instances", b"C-4").is_none(), "no instance for a claim the guard refuses");
    assert_eq!(d.read_output("claims-dlq").len(), 1);
}
