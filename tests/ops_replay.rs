//! `keyflow replay` on Apache Kafka: a dry run changes nothing; it refuses while an instance of
//! the application is still in the group (the broker describes the group's members); a real run with
//! --wipe-state moves the offsets to the start, and an instance restarted on its OLD local state
//! rebuilds the state from the inputs exactly (the reset marker voids what it had), re-emitting
//! every output.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_exact, committed, final_states, produce, read_all, setup, wait_until, workload};
use keyflow::runtime::Guarantee;

#[test]
fn a_replay_with_wiped_state_rebuilds_it_exactly_even_on_machines_that_kept_their_disk() {
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let w = workload(200, 3000, 7);
    produce(&s.bootstrap, &s.input, &w.events);
    let group = s.config.application_id.clone();
    let a = s.start("a");
    wait_until("all inputs committed", Duration::from_secs(90), || committed(&s.bootstrap, &group, &s.input) == w.events.len() as i64);
    let outputs_before = read_all(&s.bootstrap, &s.output).len();

    let cfg = s.dir.path().join("app.toml");
    std::fs::write(
        &cfg,
        format!(
            "application.id = \"{group}\"\nbootstrap.servers = \"{}\"\nstate.dir = \"{}\"\n[topology]\nbuiltin = \"status-tracker\"\ninput = \"{}\"\noutput = \"{}\"\nsla.ms = 5000\n[consumer]\nsession.timeout.ms = 6000\n",
            s.bootstrap,
            s.dir.path().join("operator-machine").display(),
            s.input,
            s.output
        ),
    )
    .unwrap();
    let replay = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keyflow")).args(["replay", "--config"]).arg(&cfg).args(extra).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let (ok, out, err) = replay(&["--to-earliest", "--wipe-state", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("dry run") && out.contains(&format!("{}[0]:", s.input)) && out.contains("-> 0") && out.contains("reset"), "{out}");
    assert_eq!(committed(&s.bootstrap, &group, &s.input), w.events.len() as i64, "a dry run changes nothing");

    let (ok, _, err) = replay(&["--to-earliest", "--wipe-state"]);
    assert!(!ok && err.contains("are alive"), "a running instance makes replay refuse: {err}");
    assert_eq!(committed(&s.bootstrap, &group, &s.input), w.events.len() as i64);
    a.stop();
    a.join().unwrap();
    assert_exact(&w.expected, &final_states(&s.bootstrap, &s.output));

    let (ok, out, err) = replay(&["--to-earliest", "--wipe-state", "--force"]);
    assert!(ok && out.contains("done"), "{out}{err}");
    assert_eq!(committed(&s.bootstrap, &group, &s.input), 0, "offsets moved to the start");

    // The instance comes back on the disk it had: restore reads the reset markers and empties it.
    let a = s.start("a");
    wait_until("all inputs re-processed", Duration::from_secs(90), || committed(&s.bootstrap, &group, &s.input) == w.events.len() as i64);
    std::thread::sleep(Duration::from_millis(300));
    a.stop();
    a.join().unwrap();
    let outputs_after = read_all(&s.bootstrap, &s.output).len();
    assert!(
        outputs_after - outputs_before >= w.events.len() - w.malformed,
        "every input was processed again, none skipped by the old state's guard: {outputs_before} then {outputs_after}"
    );
    assert_exact(&w.expected, &final_states(&s.bootstrap, &s.output));
}

/// The log cleaner removes tombstones `delete.retention.ms` after it cleaned them. A reset
/// marker that was one vanished, and every key older than it came back on the next restore from
/// scratch: the wiped state resurrected (stale timers included). The marker carries a value.
#[test]
fn a_wipe_survives_the_log_cleaner_and_a_restore_from_scratch_long_after() {
    use common::setup_compacted;
    use keyflow::builtin::status_tracker::STORE;
    let cleaning =
        [("segment.ms", "100"), ("min.cleanable.dirty.ratio", "0.01"), ("min.compaction.lag.ms", "0"), ("delete.retention.ms", "100")];
    let s = setup_compacted(Guarantee::ExactlyOnceV2, Duration::from_millis(100), &cleaning);
    let group = s.config.application_id.clone();
    let w = workload(40, 400, 11);
    produce(&s.bootstrap, &s.input, &w.events);
    s.run_until_committed("a", w.events.len() as i64);

    // Wipe the state without replaying anything: the offsets stay at the end.
    let cfg = s.dir.path().join("app.toml");
    std::fs::write(
        &cfg,
        format!(
            "application.id = \"{group}\"\nbootstrap.servers = \"{}\"\nstate.dir = \"{}\"\n[topology]\nbuiltin = \"status-tracker\"\ninput = \"{}\"\noutput = \"{}\"\nsla.ms = 5000\n",
            s.bootstrap,
            s.dir.path().join("operator-machine").display(),
            s.input,
            s.output
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .args(["--to-offset", "1000000000", "--wipe-state", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // New documents keep the changelogs rolling segments, so the cleaner runs over the marker.
    let changelog = format!("{group}-{STORE}-changelog");
    let b = s.start("b");
    let mut cleaned_at = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for round in 0.. {
        let chunk: Vec<_> = (0..20).map(|i| (round * 20 + i, format!("fresh-{}", i % 4), br#"{"status":"uploaded"}"#.to_vec())).collect();
        produce(&s.bootstrap, &s.input, &chunk);
        std::thread::sleep(Duration::from_millis(300));
        let log = read_all(&s.bootstrap, &changelog);
        let markers = log.iter().filter(|(k, _)| k.ends_with("keyflow.reset")).count();
        let fresh_records = log.iter().filter(|(k, _)| k == "fresh-0").count();
        // The cleaner has deduplicated the new keys; give it time to drop tombstones too.
        if fresh_records < round as usize && cleaned_at.is_none() {
            cleaned_at = Some(std::time::Instant::now());
        }
        if markers == 0 || cleaned_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the log cleaner never compacted {changelog} ({fresh_records} records of fresh-0)");
        std::thread::sleep(Duration::from_secs(1));
    }
    b.stop();
    b.join().unwrap();

    // A machine with no local state restores from the compacted changelogs.
    let c = s.start("c");
    common::wait_running("c restored", &c);
    let old = w.expected.keys().next().unwrap();
    let got = c.status().query(STORE, old.as_bytes(), Duration::from_secs(10)).unwrap();
    assert_eq!(got, None, "the wiped state of `{old}` came back after the cleaner ran");
    assert!(c.status().query(STORE, b"fresh-0", Duration::from_secs(10)).unwrap().is_some(), "state written after the wipe is there");
    c.stop();
    c.join().unwrap();
}
