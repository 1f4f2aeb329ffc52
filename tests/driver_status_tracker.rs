//! Layer (b): the status-tracker topology through the broker-free test driver.

use keyflow::builtin::status_tracker::{self, DocumentState, STORE};
use keyflow::dlq;
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use serde_json::{json, Value};

fn driver() -> TopologyTestDriver {
    TopologyTestDriver::new(status_tracker::topology("events", "statuses", 60_000), DriverConfig::default())
}

fn state(d: &TopologyTestDriver, id: &str) -> DocumentState {
    serde_json::from_slice(&d.store_get(STORE, id.as_bytes()).expect("state exists")).unwrap()
}

fn values(records: &[keyflow::testing::StoredRecord]) -> Vec<Value> {
    records.iter().map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap()).collect()
}

#[test]
fn each_event_updates_state_and_emits_one_output() {
    let mut d = driver();
    d.pipe_json("events", "doc-1", &json!({"status": "uploaded", "amount": 10}), 1_000);
    d.pipe_json("events", "doc-1", &json!({"status": "scanned", "amount": 2.5}), 2_000);
    d.pipe_json("events", "doc-1", &json!({"status": "approved"}), 3_000);
    let out = values(&d.read_output("statuses"));
    assert_eq!(out.len(), 3);
    assert_eq!(out[1], json!({"id": "doc-1", "count": 2, "status": "scanned", "valid": true, "total": 12.5}));
    assert_eq!(out[2]["valid"], json!(false), "approved straight after scanned is not a legal transition");
    let s = state(&d, "doc-1");
    assert_eq!((s.count, s.status.as_deref(), s.invalid), (3, Some("scanned"), 1));
}

#[test]
fn a_bad_record_goes_to_the_dead_letter_topic_with_its_bytes_and_the_partition_moves_on() {
    let mut d = driver();
    d.pipe_input("events", Some(b"doc-9"), Some(b"{not json"), 1_000);
    d.pipe_json("events", "doc-9", &json!({"status": 42}), 1_500);
    d.pipe_json("events", "doc-9", &json!({"status": "uploaded"}), 2_000);
    let dead = d.read_output("test-app-dlq");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].value.as_deref(), Some(&b"{not json"[..]));
    assert_eq!(dead[0].headers.last_str(dlq::ERROR_CLASS), Some("deserialization"));
    assert_eq!(dead[0].headers.last_str(dlq::SOURCE_TOPIC), Some("events"));
    assert_eq!(dead[0].headers.last_str(dlq::SOURCE_OFFSET), Some("0"));
    assert_eq!(dead[1].headers.last_str(dlq::ERROR_CLASS), Some("processing"));
    assert_eq!(dead[1].headers.last_str(dlq::STAGE), Some("tracker"));
    assert!(dead[1].headers.last_str(dlq::ERROR_MESSAGE).unwrap().contains("status"));
    assert_eq!(state(&d, "doc-9").count, 1, "only the good record reached the state");
    assert_eq!(d.read_output("statuses").len(), 1);
}

#[test]
fn sla_timer_fires_on_stream_time_and_is_cancelled_by_a_final_status() {
    let mut d = driver();
    for (id, t) in [("late", 0), ("done", 0)] {
        d.pipe_json("events", id, &json!({"status": "uploaded"}), t);
    }
    for s in ["scanned", "classified", "approved"] {
        d.pipe_json("events", "done", &json!({"status": s}), 10_000);
    }
    assert!(!state(&d, "late").escalated);
    // Stream time passes the SLA only when an event with a later timestamp arrives.
    d.pipe_json("events", "other", &json!({"status": "uploaded"}), 60_000);
    let out = values(&d.read_output("statuses"));
    let escalations: Vec<&Value> = out.iter().filter(|v| v.get("escalated").is_some()).collect();
    assert_eq!(escalations, vec![&json!({"id": "late", "escalated": true, "status": "uploaded"})]);
    assert!(state(&d, "late").escalated);
    assert!(!state(&d, "done").escalated);
}

#[test]
fn state_and_timers_survive_a_restart_that_loses_the_local_disk() {
    let mut d = driver();
    d.pipe_json("events", "doc-1", &json!({"status": "uploaded", "amount": 1}), 0);
    d.pipe_json("events", "doc-1", &json!({"status": "scanned", "amount": 1}), 1);
    d.crash_and_restart(true);
    assert_eq!(state(&d, "doc-1").count, 2, "restored from the changelog");
    d.pipe_json("events", "x", &json!({"status": "uploaded"}), 61_000);
    assert!(state(&d, "doc-1").escalated, "the timer was restored too");
}

#[test]
fn topology_description_is_stable() {
    insta::assert_snapshot!(status_tracker::topology("events", "statuses", 1).describe());
}
