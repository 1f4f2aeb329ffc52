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
