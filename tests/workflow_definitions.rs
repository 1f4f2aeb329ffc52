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
