//! Workflow versions through the test driver (issue 21): versions side by side, a member
//! without an instance's version waits, migrations (exactly once, in order with the instance's
//! events, timers moved), and every class of `topology diff`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keyflow::record::{Headers, CONTROL_HEADER};
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::workflow::diff::{diff, Impact};
use keyflow::workflow::migration::{self, Migration, Selection};
use keyflow::workflow::{self, Definition, Instance, Versions};
use serde_json::{json, Value};

const TOPIC: &str = "orders.events";
const HOUR: i64 = 3_600_000;

fn file(v: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/workflows/orders.v{v}.toml"))
}

fn def(v: u32) -> Definition {
    workflow::load(&file(v)).unwrap()
}

fn topology(versions: &[u32]) -> keyflow::Topology {
    workflow::compile_versions(Versions::new(versions.iter().map(|v| def(*v)).collect()).unwrap(), None).unwrap()
}

fn driver(versions: &[u32]) -> TopologyTestDriver {
    TopologyTestDriver::new(topology(versions), DriverConfig { application_id: "orders".into(), partitions: 2, ..DriverConfig::default() })
}

fn event(d: &mut TopologyTestDriver, key: &str, kind: &str) {
    let now = d.wall_clock();
    d.pipe_json(TOPIC, key, &json!({"type": kind, "id": format!("{key}:{kind}:{now}")}), now);
}

fn instance(d: &TopologyTestDriver, key: &str) -> Instance {
    serde_json::from_slice(&d.store_get("instances", key.as_bytes()).expect("instance exists")).unwrap()
}

/// Instances per (version, state): each partition's `instances-per-state` count, summed, as
/// committed to its changelog.
fn counts(d: &TopologyTestDriver) -> BTreeMap<(u32, String), i64> {
    let mut latest = BTreeMap::new();
    for (p, r) in d.committed_records("orders-instances-per-state-changelog") {
        let (Some(k), Some(v)) = (r.key, r.value) else { continue };
        let Some((_, version, state)) = workflow::parse_count_key(&k) else { continue };
        latest.insert((p, version, state), serde_json::from_slice::<i64>(&v).unwrap());
    }
    let mut sum = BTreeMap::new();
    for ((_, version, state), n) in latest {
        *sum.entry((version, state)).or_default() += n;
    }
    sum.retain(|_, n| *n != 0);
    sum
}

fn dead_letters(d: &TopologyTestDriver) -> usize {
    d.committed_records("orders-dlq").len()
}

/// The partition each instance is stored in (that of its events), from the changelog.
fn partitions(d: &TopologyTestDriver) -> BTreeMap<String, (i32, Instance)> {
    d.committed_records("orders-instances-changelog")
        .into_iter()
        .filter_map(|(p, r)| Some((String::from_utf8(r.key?).ok()?, (p, serde_json::from_slice(r.value.as_deref()?).ok()?))))
        .collect()
}

/// Sends a migration's commands as `keyflow workflow migrate` does: each to its instance's
/// partition of the input, marked as a control record.
fn send(d: &mut TopologyTestDriver, commands: &[(i32, String, Migration)]) {
    for (p, key, m) in commands {
        let mut h = Headers::new();
        h.insert(CONTROL_HEADER, migration::CONTROL);
        let now = d.wall_clock();
        d.pipe_with_headers(TOPIC, Some(*p), key, &serde_json::to_vec(m).unwrap(), now, h);
    }
}

fn plan(
    d: &TopologyTestDriver,
    versions: &[u32],
    select: Selection,
    mapping: &[(&str, &str)],
    name: &str,
) -> Result<migration::Plan, String> {
    let v = Versions::new(versions.iter().map(|v| def(*v)).collect()).unwrap();
    let all: Vec<(i32, Instance)> = partitions(d).into_values().collect();
    let mapping = mapping.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    migration::plan(&v, &all, &select, 2, &mapping, name)
}

#[test]
fn instances_of_v1_finish_by_v1_while_new_ones_start_and_finish_on_v2() {
    let mut d = driver(&[1]);
    for i in 0..20 {
        event(&mut d, &format!("o-{i}"), "paid");
    }
    // The rolling deploy: the member now has v2 and keeps v1.
    d.redeploy(topology(&[1, 2]));
    for i in 20..40 {
        event(&mut d, &format!("o-{i}"), "paid");
    }
    assert_eq!(counts(&d), BTreeMap::from([((1, "paid".into()), 20), ((2, "payment-received".into()), 20)]));
    // v1's rule: `paid --shipped--> shipped`; v2 needs `packed` first.
    for i in 0..20 {
        event(&mut d, &format!("o-{i}"), "shipped");
    }
    for i in 20..40 {
        event(&mut d, &format!("o-{i}"), "packed");
        event(&mut d, &format!("o-{i}"), "shipped");
    }
    d.commit();
    for i in 0..40 {
        let inst = instance(&d, &format!("o-{i}"));
        assert_eq!((inst.version, inst.state.as_str()), (if i < 20 { 1 } else { 2 }, "shipped"), "o-{i}: {inst:?}");
    }
    assert_eq!(counts(&d), BTreeMap::from([((1, "shipped".into()), 20), ((2, "shipped".into()), 20)]));
    assert_eq!(dead_letters(&d), 0);
    // v2 rules for a v1 instance would have been refused: `shipped` straight from
    // `payment-received` has no transition in v2.
    let mut d2 = driver(&[2]);
    event(&mut d2, "x", "paid");
    event(&mut d2, "x", "shipped");
    assert_eq!(dead_letters(&d2), 1);
}

#[test]
fn a_member_without_an_instances_version_waits_and_applies_it_once_it_has_it() {
    let mut d = driver(&[1, 2]);
    event(&mut d, "o-1", "paid");
    assert_eq!(instance(&d, "o-1").version, 2);
    // A rollback to a binary with v1 only: the v2 instance's events wait, never guessed at,
    // never dead-lettered; its timer waits too.
    d.redeploy(topology(&[1]));
    event(&mut d, "o-1", "packed");
    assert!(d.retries() > 0, "the partition waits");
    assert_eq!(instance(&d, "o-1").state, "payment-received");
    d.advance_wall_clock(3 * HOUR);
    assert_eq!(instance(&d, "o-1").state, "payment-received", "its timer waits as well");
    assert_eq!(dead_letters(&d), 0);
    // The member gets v2 again: what waited applies, in order.
    d.redeploy(topology(&[1, 2]));
    d.advance_wall_clock(61_000);
    let inst = instance(&d, "o-1");
    assert_eq!(inst.history.iter().map(|h| h.to.as_str()).collect::<Vec<_>>(), ["payment-received", "packed"], "{inst:?}");
    assert_eq!(dead_letters(&d), 0);
}

#[test]
fn a_migration_moves_the_chosen_instances_once_in_order_with_their_events_and_moves_their_timers() {
    // Ten v1 instances in `paid`, each holding the 1 h `ship-by` timer, started before v2 was
    // deployed.
    let mut d = driver(&[1]);
    for i in 0..10 {
        event(&mut d, &format!("o-{i}"), "paid");
    }
    d.redeploy(topology(&[1, 2]));
    let start = d.wall_clock();

    // The dry run refuses a mapping that leaves `paid` nowhere, and counts with a complete one.
    let refused = plan(&d, &[1, 2], Selection::default(), &[], "m1").unwrap_err();
    assert!(refused.contains("version 1 state `paid`"), "{refused}");
    let p = plan(&d, &[1, 2], Selection::default(), &[("paid", "payment-received")], "m1").unwrap();
    assert_eq!(p.moves, BTreeMap::from([((1, "paid".into()), ("payment-received".into(), 10))]));
    // Only some instances, by id.
    let some = plan(
        &d,
        &[1, 2],
        Selection { ids: vec!["o-1".into(), "o-2".into()], ..Selection::default() },
        &[("paid", "payment-received")],
        "m0",
    )
    .unwrap();
    assert_eq!(some.commands.len(), 2);

    // An event of o-0 that arrives before its command is applied by v1 first (it ships), so the
    // command finds it finished and leaves it; o-1's `packed` after its command is v2's.
    event(&mut d, "o-0", "shipped");
    send(&mut d, &p.commands);
    event(&mut d, "o-1", "packed");
    d.commit();
    let o0 = instance(&d, "o-0");
    assert_eq!((o0.version, o0.state.as_str()), (1, "shipped"));
    let o1 = instance(&d, "o-1");
    assert_eq!((o1.version, o1.state.as_str()), (2, "packed"), "{o1:?}");
    for i in 2..10 {
        let inst = instance(&d, &format!("o-{i}"));
        assert_eq!((inst.version, inst.state.as_str()), (2, "payment-received"), "o-{i}");
        let last = inst.history.last().unwrap();
        assert_eq!((last.from.as_str(), last.to.as_str(), last.event.as_str()), ("paid", "payment-received", "migration:v1->v2"));
    }
    assert_eq!(counts(&d), BTreeMap::from([((1, "shipped".into()), 1), ((2, "packed".into()), 1), ((2, "payment-received".into()), 8)]));
    let transitions = d.read_output("orders.transitions");
    let migrated: Vec<Value> = transitions
        .iter()
        .map(|r| serde_json::from_slice::<Value>(r.value.as_deref().unwrap()).unwrap())
        .filter(|v| v["event"] == "migration:v1->v2")
        .collect();
    assert_eq!(migrated.len(), 9, "one transition record per instance moved");

    // Delivered twice (a producer retry, a second run under the same name): nothing changes.
    let before: Vec<Instance> = (0..10).map(|i| instance(&d, &format!("o-{i}"))).collect();
    send(&mut d, &p.commands);
    d.commit();
    assert_eq!((0..10).map(|i| instance(&d, &format!("o-{i}"))).collect::<Vec<_>>(), before);
    // A second plan finds nothing left on version 1 but the finished one.
    assert!(plan(&d, &[1, 2], Selection::default(), &[("paid", "payment-received")], "m2").unwrap().commands.is_empty());

    // Timers: v1's 1 h `ship-by` was cancelled; v2's 2 h one, set at the migration, fires.
    d.advance_wall_clock(HOUR + 60_000);
    assert_eq!(instance(&d, "o-5").state, "payment-received", "the old 1 h timer does not fire");
    d.advance_wall_clock(HOUR);
    let o5 = instance(&d, "o-5");
    assert_eq!((o5.state.as_str(), o5.version), ("late", 2), "the new 2 h timer fires: {o5:?}");
    assert!(d.wall_clock() >= start + 2 * HOUR);
    assert_eq!(instance(&d, "o-1").state, "packed", "a state without the timer has none");
    assert_eq!(dead_letters(&d), 0);
}

#[test]
fn a_migration_command_that_cannot_place_an_instance_is_a_dead_letter_naming_the_state() {
    let mut d = driver(&[1]);
    event(&mut d, "o-1", "paid");
    d.redeploy(topology(&[1, 2]));
    let (p, _) = partitions(&d)["o-1"].clone();
    let m = Migration {
        migration: "bad".into(),
        workflow: "orders".into(),
        from_version: 1,
        to_version: 2,
        mapping: BTreeMap::new(),
        states: vec![],
        application: None,
    };
    send(&mut d, &[(p, "o-1".into(), m)]);
    d.commit();
    let letters = d.committed_records("orders-dlq");
    assert_eq!(letters.len(), 1);
    let reason = letters[0].1.headers.last_str(keyflow::dlq::ERROR_MESSAGE).unwrap_or_default();
    assert!(reason.contains("state `paid` has no place in version 2"), "{reason}");
    assert_eq!((instance(&d, "o-1").version, instance(&d, "o-1").state.as_str()), (1, "paid"), "left as it was");
}

#[test]
fn two_definitions_with_one_version_number_or_of_two_workflows_are_refused() {
    let e = Versions::new(vec![def(1), def(1)]).unwrap_err();
    assert!(e.message.contains("a changed definition needs a new `version`"), "{e}");
    let other = workflow::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/claim-processing.toml")).unwrap();
    assert!(Versions::new(vec![def(1), other]).is_err());
}

fn parse(toml: &str) -> Definition {
    Definition::parse(toml, "test.toml").unwrap()
}

const BASE: &str = r#"
name = "w"
key = "record.key"
initial = "a"
[[inputs]]
topic = "t"
event_field = "type"
[states.a]
timers = [{ name = "t1", after = "1h", fire = "late" }]
[states.b]
[states.c]
terminal = true
[[transitions]]
from = "a"
on = "go"
to = "b"
[[transitions]]
from = "a"
on = "late"
to = "c"
[[transitions]]
from = "b"
on = "done"
to = "c"
"#;

#[test]
fn the_diff_names_every_class_of_change_and_what_instances_in_flight_notice() {
    let old = parse(BASE);
    assert!(diff(&old, &parse(BASE)).changes.is_empty());
    let kinds = |new: &str| diff(&old, &parse(new)).changes.into_iter().map(|c| (c.kind, c.what, c.impact)).collect::<Vec<_>>();
    // A state renamed with its transitions.
    let renamed = BASE.replace("[states.b]", "[states.bb]").replace("to = \"b\"", "to = \"bb\"").replace("from = \"b\"", "from = \"bb\"");
    assert_eq!(kinds(&renamed), [("state renamed", "b -> bb".into(), Impact::Strands)]);
    assert_eq!(diff(&old, &parse(&renamed)).renames(), BTreeMap::from([("b".to_owned(), "bb".to_owned())]));
    // A state added (and reached): new paths only, nothing noticed but the new transition out of `b`.
    let added = format!("{BASE}\n[states.d]\n[[transitions]]\nfrom = \"b\"\non = \"hold\"\nto = \"d\"\n[[transitions]]\nfrom = \"d\"\non = \"done\"\nto = \"c\"\n");
    let k = kinds(&added);
    assert!(k.contains(&("state added", "d".into(), Impact::None)), "{k:?}");
    assert!(k.contains(&("transition added", "b --hold--> d".into(), Impact::Noticed)), "{k:?}");
    assert!(k.contains(&("transition added", "d --done--> c".into(), Impact::None)), "{k:?}");
    // A transition removed strands; changed is noticed.
    let removed = BASE.replace(
        "[[transitions]]\nfrom = \"b\"\non = \"done\"\nto = \"c\"\n",
        "[[transitions]]\nfrom = \"a\"\non = \"skip\"\nto = \"c\"\n[[transitions]]\nfrom = \"b\"\non = \"finish\"\nto = \"c\"\n",
    );
    let k = kinds(&removed);
    assert!(k.contains(&("transition removed", "b --done--> c".into(), Impact::Strands)), "{k:?}");
    let changed = BASE.replace("on = \"late\"\nto = \"c\"", "on = \"late\"\nto = \"b\"");
    assert!(kinds(&changed).iter().any(|(k, w, i)| *k == "transition changed" && w.contains("now --> b") && *i == Impact::Noticed));
    // Timers: removed strands, changed and added are noticed.
    let timer_removed = BASE.replace("timers = [{ name = \"t1\", after = \"1h\", fire = \"late\" }]", "");
    assert!(kinds(&timer_removed).contains(&("timer removed", "a: t1".into(), Impact::Strands)));
    let timer_changed = BASE.replace("after = \"1h\"", "after = \"2h\"");
    assert_eq!(kinds(&timer_changed)[0].0, "timer changed");
    assert_eq!(kinds(&timer_changed)[0].2, Impact::Noticed);
    let timer_added = BASE.replace("[states.b]", "[states.b]\ntimers = [{ name = \"t2\", after = \"1h\", fire = \"done\" }]");
    assert_eq!(kinds(&timer_added), [("timer added", "b: t2".into(), Impact::Noticed)]);
    // A state removed (nothing like it added) strands; an input removed strands.
    let gone = BASE
        .replace("[states.b]\n", "")
        .replace("to = \"b\"", "to = \"c\"")
        .replace("[[transitions]]\nfrom = \"b\"\non = \"done\"\nto = \"c\"\n", "");
    let k = kinds(&gone);
    assert!(k.contains(&("state removed", "b".into(), Impact::Strands)), "{k:?}");
    let input = BASE.replace("topic = \"t\"", "topic = \"t2\"");
    let k = kinds(&input);
    assert!(
        k.contains(&("input removed", "t".into(), Impact::Strands)) && k.contains(&("input added", "t2".into(), Impact::None)),
        "{k:?}"
    );
    // A state that becomes terminal is noticed.
    let terminal =
        BASE.replace("[states.b]", "[states.b]\nterminal = true").replace("[[transitions]]\nfrom = \"b\"\non = \"done\"\nto = \"c\"\n", "");
    assert!(kinds(&terminal).iter().any(|(k, _, i)| *k == "state terminal changed" && *i == Impact::Noticed));
    // The reference change: v1 -> v2 of the orders workflow.
    let d = diff(&def(1), &def(2));
    assert_eq!(d.renames(), BTreeMap::from([("paid".to_owned(), "payment-received".to_owned())]));
    assert_eq!(d.impact(), Impact::Strands);
}

#[test]
fn hostile_and_stale_migration_commands_neither_stall_nor_move_anything_wrongly() {
    let mut d = driver(&[1]);
    event(&mut d, "o-1", "paid");
    event(&mut d, "o-2", "paid");
    d.redeploy(topology(&[1, 2]));
    let (p1, _) = partitions(&d)["o-1"].clone();
    let command = |to: u32| Migration {
        migration: format!("to-{to}"),
        workflow: "orders".into(),
        from_version: 1,
        to_version: to,
        mapping: BTreeMap::from([("paid".into(), "payment-received".into())]),
        states: vec![],
        application: Some("orders".into()),
    };
    // A version that does not exist, below the newest: a dead letter, not a wait.
    send(&mut d, &[(p1, "o-1".into(), command(0))]);
    d.commit();
    assert_eq!(dead_letters(&d), 1);
    // Another workflow's command, another application's (running the same workflow over the
    // same input), and a command for a finished or already moved instance: no effect, no dead
    // letter, no wait.
    let retries = d.retries();
    let mut other = command(2);
    other.workflow = "claims".into();
    send(&mut d, &[(p1, "o-1".into(), other)]);
    let mut other_application = command(2);
    other_application.application = Some("orders-eu".into());
    send(&mut d, &[(p1, "o-1".into(), other_application)]);
    d.commit();
    assert_eq!((instance(&d, "o-1").version, dead_letters(&d)), (1, 1), "another application's migration moves nothing here");
    send(&mut d, &[(p1, "o-1".into(), command(2))]);
    let moved = instance(&d, "o-1");
    assert_eq!((moved.version, moved.state.as_str()), (2, "payment-received"));
    let mut stale = command(2);
    stale.migration = "again".into();
    send(&mut d, &[(p1, "o-1".into(), stale)]);
    d.commit();
    assert_eq!(instance(&d, "o-1"), moved, "an instance already on the target stays as it is");
    assert_eq!((dead_letters(&d), d.retries()), (1, retries));
    // A version above the newest: the partition waits for a member that has it.
    let (p2, _) = partitions(&d)["o-2"].clone();
    send(&mut d, &[(p2, "o-2".into(), command(3))]);
    assert!(d.retries() > retries, "waits");
    assert_eq!(dead_letters(&d), 1);
}

#[test]
fn a_command_leaves_an_instance_that_left_the_chosen_states_and_timers_count_from_entering_the_state() {
    let mut d = driver(&[1]);
    event(&mut d, "o-1", "paid");
    let paid_at = d.wall_clock();
    d.advance_wall_clock(30 * 60_000);
    event(&mut d, "o-2", "paid");
    d.redeploy(topology(&[1, 2]));
    let p =
        plan(&d, &[1, 2], Selection { states: vec!["paid".into()], ..Selection::default() }, &[("paid", "payment-received")], "m").unwrap();
    assert_eq!(p.commands.len(), 2);
    // o-2 ships between the plan and its command; o-1 moves 30 min after it was paid.
    event(&mut d, "o-2", "shipped");
    send(&mut d, &p.commands);
    d.commit();
    assert_eq!((instance(&d, "o-2").version, instance(&d, "o-2").state.as_str()), (1, "shipped"));
    assert_eq!(instance(&d, "o-1").version, 2);
    // v2's 2 h deadline counts from when o-1 was paid, not from the migration.
    d.advance_wall_clock(paid_at + 2 * HOUR - d.wall_clock() - 60_000);
    assert_eq!(instance(&d, "o-1").state, "payment-received");
    d.advance_wall_clock(2 * 60_000);
    assert_eq!(instance(&d, "o-1").state, "late", "due 2 h after it was paid");
}

#[test]
fn a_finished_instance_of_a_version_no_member_keeps_takes_late_events_as_any_finished_one() {
    let mut d = driver(&[1]);
    event(&mut d, "o-1", "paid");
    event(&mut d, "o-1", "shipped");
    // Version 1 dropped from the files once its instances finished.
    d.redeploy(topology(&[2]));
    let retries = d.retries();
    // The final event delivered again: a duplicate, dropped as for any finished instance.
    event(&mut d, "o-1", "shipped");
    d.commit();
    assert_eq!(dead_letters(&d), 0, "a duplicate is no dead letter");
    event(&mut d, "o-1", "shipped-again");
    d.commit();
    assert_eq!(d.retries(), retries, "no wait for a version a finished instance no longer needs");
    let letters = d.committed_records("orders-dlq");
    assert_eq!(letters.len(), 1);
    assert!(letters[0].1.headers.last_str(keyflow::dlq::ERROR_MESSAGE).unwrap_or_default().contains("arrived late"));
}

#[test]
fn with_chosen_states_the_mapping_needs_a_place_only_for_them() {
    let mut d = driver(&[1]);
    event(&mut d, "o-1", "paid");
    event(&mut d, "o-2", "paid");
    d.advance_wall_clock(HOUR + 60_000); // both late by version 1's deadline
    event(&mut d, "o-3", "paid");
    d.redeploy(topology(&[1, 2]));
    // `late` exists in version 2; `paid` (o-3's) is not chosen, so it needs no mapping.
    let p = plan(&d, &[1, 2], Selection { states: vec!["late".into()], ..Selection::default() }, &[], "late-to-v2").unwrap();
    assert_eq!(p.moves, BTreeMap::from([((1, "late".into()), ("late".into(), 2))]));
    send(&mut d, &p.commands);
    d.commit();
    assert_eq!((instance(&d, "o-1").version, instance(&d, "o-3").version), (2, 1));
    assert!(plan(&d, &[1, 2], Selection::default(), &[], "all").is_err(), "without --state, `paid` still needs a place");
}
