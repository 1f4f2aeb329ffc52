//! Invalid workflow definitions fail validation with the problem and its place.

use keyflow::workflow::Definition;

const VALID: &str = r#"name = "w"
key = "record.key"
initial = "a"

[[inputs]]
topic = "t"
event = "go"

[states.a]
[states.b]
terminal = true

[[transitions]]
from = "a"
on = "go"
to = "b"
"#;

fn error(text: &str) -> String {
    Definition::parse(text, "w.toml").expect_err("must be refused").to_string()
}

#[test]
fn the_minimal_definition_is_valid() {
    let d = Definition::parse(VALID, "w.toml").unwrap();
    assert_eq!(d.states.len(), 2);
}

#[test]
fn an_unknown_state_is_named_with_its_line() {
    let e = error(&VALID.replace("to = \"b\"", "to = \"bb\""));
    assert!(e.starts_with("w.toml:16:"), "the line of `to`: {e}");
    assert!(e.contains("unknown state `bb` in `to`"), "{e}");
}

#[test]
fn an_unreachable_state_is_named() {
    let e = error(&format!("{VALID}[states.orphan]\n"));
    assert!(e.contains("state `orphan` is unreachable from `a`"), "{e}");
}

#[test]
fn a_transition_without_a_target_is_refused() {
    let e = error(&VALID.replace("to = \"b\"\n", ""));
    assert!(e.contains("transition #1 (a): no target state (`to`)"), "{e}");
}

#[test]
fn a_missing_or_unsupported_key_is_refused() {
    let e = error(&VALID.replace("key = \"record.key\"\n", ""));
    assert!(e.contains("missing field `key`"), "{e}");
    let e = error(&VALID.replace("key = \"record.key\"", "key = \"value.claimId\""));
    assert!(e.starts_with("w.toml:2:") && e.contains("key `value.claimId` is not supported"), "{e}");
}

#[test]
fn bad_guards_durations_and_fields_are_refused() {
    let e = error(&VALID.replace("to = \"b\"", "to = \"b\"\nwhen = \"event.x ==\""));
    assert!(e.contains("guard `event.x ==` does not parse"), "{e}");
    let e = error(&VALID.replace("[states.a]", "[states.a]\ntimers = [{ name = \"t\", after = \"soon\", fire = \"x\" }]"));
    assert!(e.contains("bad duration `soon`"), "{e}");
    let e = error(&VALID.replace("on = \"go\"", "on = \"go\"\nthen = \"b\""));
    assert!(e.contains("unknown field `then`"), "{e}");
    let e = error(&VALID.replace(
        "[states.b]\nterminal = true",
        "[states.b]\nterminal = true\n\n[[transitions]]\nfrom = \"b\"\non = \"again\"\nto = \"a\"",
    ));
    assert!(e.contains("`b` is terminal"), "{e}");
}

#[test]
fn an_instance_in_a_state_the_definition_no_longer_has_is_refused_not_a_panic() {
    // v1 had `paid`; v2 renamed it. An instance stored in `paid` meets v2.
    let v2 = Definition::parse(VALID, "w.toml").unwrap();
    let stored = keyflow::workflow::Instance { id: "order-1".into(), workflow: "w".into(), state: "paid".into(), ..Default::default() };
    let event = keyflow::workflow::Event { name: "go".into(), error: None, id: None, payload: serde_json::json!({}), at: 0 };
    match keyflow::workflow::apply(&v2, "order-1", Some(&stored), &event) {
        keyflow::workflow::Outcome::Unmatched(reason) => {
            assert!(reason.contains("state `paid`") && reason.contains("does not define"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A stored instance this binary cannot read (written by another version, or damaged) is a dead
/// letter of each event for it, naming why; the partition's other instances flow on. Before, the
/// store read failed as corrupted state: the task was wiped and restored from its changelog,
/// which held the same value, for ever.
#[test]
fn an_instance_whose_stored_value_cannot_be_read_is_a_dead_letter_and_the_partition_flows() {
    use keyflow::testing::{DriverConfig, TopologyTestDriver};
    let def = Definition::parse(
        &VALID
            .replace("[states.b]\nterminal = true", "[states.b]\n[states.c]\nterminal = true")
            .replace("to = \"b\"\n", "to = \"b\"\n\n[[transitions]]\nfrom = \"b\"\non = \"go\"\nto = \"c\"\n"),
        "w.toml",
    )
    .unwrap();
    let topology = keyflow::workflow::compile(def, None).unwrap();
    let mut d = TopologyTestDriver::new(topology, DriverConfig { application_id: "w".into(), partitions: 1, ..DriverConfig::default() });
    for key in ["order-1", "order-2"] {
        d.pipe_input("t", Some(key.as_bytes()), Some(b"{}"), d.wall_clock());
    }
    // Another version wrote order-1's state in a shape this one cannot read; this instance then
    // restores it from the changelog.
    d.pipe_input("w-instances-changelog", Some(b"order-1"), Some(br#"{"id": "order-1", "state": 7}"#), d.wall_clock());
    // A commit after it (restores read up to the last commit's marker), then a disk lost.
    d.pipe_input("t", Some(b"order-3"), Some(b"{}"), d.wall_clock());
    d.crash_and_restart(true);
    assert_eq!(d.store_get("instances", b"order-1").as_deref(), Some(&br#"{"id": "order-1", "state": 7}"#[..]));
    for key in ["order-1", "order-2"] {
        d.pipe_input("t", Some(key.as_bytes()), Some(b"{}"), d.wall_clock());
    }
    let order2: serde_json::Value = serde_json::from_slice(&d.store_get("instances", b"order-2").unwrap()).unwrap();
    assert_eq!(order2["state"], "c", "the other instance flows on");
    let dead = d.committed_records("w-dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].1.headers.last_str("keyflow.dlq.error.message").unwrap_or_default().to_owned();
    assert!(reason.contains("stored instance `order-1`") && reason.contains("cannot be read"), "{reason}");
    assert_eq!(d.store_get("instances", b"order-1").as_deref(), Some(&br#"{"id": "order-1", "state": 7}"#[..]), "left as it is");
}
