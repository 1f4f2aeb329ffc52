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
    // Documents revised after their review, during it, and deleted in it (`demo::simulated::fate`):
    // each run that ended wrote back once.
    assert_eq!((s["runs_after_the_first"].as_u64(), s["runs_superseded"].as_u64()), (Some(14), Some(4)), "{s}");
    assert_eq!(s["final_states"]["deleted"], 3, "{s}");
    assert_eq!(s["write_backs"], 120 - 3 + 10);
    assert!(s["tasks_withdrawn"].as_u64().unwrap() >= 4 + 3, "{s}");
    // Every run that was not quarantined got a routing decision.
    assert!(s["decisions"].as_u64().unwrap() >= 120 - s["final_states"]["quarantined"].as_u64().unwrap());
    assert!(s["escalated"].as_u64().unwrap() > 0, "slow reviewers were escalated: {s}");
    assert!(s["tasks_completed"].as_u64().unwrap() > 0);
}

/// `keyflow demo --serve`: after the summary the console answers at the printed URL, with both
/// workflow instances' documents counted and the counts moving as documents keep arriving;
/// Ctrl-C stops it cleanly.
#[test]
fn the_demo_serves_the_console_with_counts_moving_until_interrupted() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["demo", "--documents", "40", "--escalate-after-ms", "3000", "--serve", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (url, token) = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let rest = l.strip_prefix("The console: ")?;
            let token = rest.trim_end_matches(')').rsplit(' ').next()?.to_owned();
            Some((rest.split_whitespace().next()?.to_owned(), token))
        })
        .expect("the demo prints the console's URL and token");
    // Keep reading stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let total = || -> u64 {
        let o: Value =
            reqwest::blocking::Client::new().get(format!("{url}api/overview")).bearer_auth(&token).send().unwrap().json().unwrap();
        o["workflows"][0]["states"].as_array().unwrap().iter().map(|s| s["instances"].as_u64().unwrap()).sum()
    };
    let first = total();
    assert!(first >= 40, "both instances' documents are counted: {first}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while total() <= first {
        assert!(Instant::now() < deadline, "the counts do not move");
        std::thread::sleep(Duration::from_millis(500));
    }
    let page = reqwest::blocking::get(&url).unwrap().text().unwrap();
    assert!(page.contains("<title>keyflow console</title>"));

    // SAFETY: a plain signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
