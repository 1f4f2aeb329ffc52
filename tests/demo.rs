//! The README's first command: `keyflow demo` runs the document-approval architecture to
//! completion on the in-process broker, and its summary matches the inputs.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_demo_finishes_every_document_and_its_counts_add_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["demo", "--documents", "120", "--escalate-after-ms", "4000", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    assert_eq!(s["ok"], true);
    assert_eq!(s["final_states"], s["expected_final_states"]);
    let finals: u64 = s["final_states"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(finals, 120, "every document reached a final state");
    assert_eq!(s["dead_letters"], s["expected_dead_letters"]);
    assert_eq!(s["write_backs"], 120);
    // Every document that was not quarantined got a routing decision.
    assert_eq!(s["decisions"].as_u64().unwrap(), 120 - s["final_states"]["quarantined"].as_u64().unwrap());
    assert!(s["escalated"].as_u64().unwrap() > 0, "slow reviewers were escalated: {s}");
    assert!(s["tasks_completed"].as_u64().unwrap() > 0);
}
