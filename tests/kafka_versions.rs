//! Workflow versions on Apache Kafka with the `keyflow run` binary (issue 21): a rolling deploy
//! of a version that renames a state and adds a step across three members, one by one, while events flow; then
//! `keyflow workflow migrate` of the version-1 instances left, while events still flow. Every
//! instance ends where its version's rules (or the migration's mapping) and its events say:
//! none lost, none doubled, no dead letter, every process stops cleanly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_topics, produce, read_all, unique, wait_until};
use keyflow::kafka::TopicSpec;
use keyflow::workflow::Instance;
use serde_json::{json, Value};

const TOKEN: &str = "versions-test-token";

/// `POST /api/workflows/migrate` on a member's console, with the token or without.
fn console_migrate(port: u16, body: &Value, token: bool) -> (u16, Value) {
    let mut r = reqwest::blocking::Client::new().post(format!("http://127.0.0.1:{port}/api/workflows/migrate")).json(body);
    if token {
        r = r.bearer_auth(TOKEN);
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

struct App {
    dir: tempfile::TempDir,
    bootstrap: String,
    app: String,
    input: String,
    name: String,
}

impl App {
    /// The orders workflow's two versions under this test's own topic and workflow names, and a
    /// configuration per version set: `v1` runs version 1 alone, `v2` version 2 and keeps 1.
    fn new(bootstrap: &str) -> App {
        let dir = tempfile::tempdir().unwrap();
        let (app, input, name) = (unique("versions"), unique("orders-events"), unique("orders"));
        for v in [1, 2] {
            let text = std::fs::read_to_string(root().join(format!("tests/workflows/orders.v{v}.toml"))).unwrap();
            let text =
                text.replace("\"orders.events\"", &format!("\"{input}\"")).replace("name = \"orders\"", &format!("name = \"{name}\""));
            std::fs::write(dir.path().join(format!("orders.v{v}.toml")), text).unwrap();
        }
        for (config, topology) in [
            ("v1", "file = \"orders.v1.toml\"".to_owned()),
            ("v2", "file = \"orders.v2.toml\"\nversions = [\"orders.v1.toml\"]".to_owned()),
        ] {
            let topology = topology.replace("orders.v", &format!("{}/orders.v", dir.path().display()));
            std::fs::write(
                dir.path().join(format!("{config}.toml")),
                format!(
                    "application.id = \"{app}\"\nbootstrap.servers = \"{bootstrap}\"\nprocessing.guarantee = \"exactly_once_v2\"\n\
                     commit.interval.ms = 100\n[topology]\n{topology}\n"
                ),
            )
            .unwrap();
        }
        create_topics(bootstrap, &[TopicSpec { name: input.clone(), partitions: 4, compacted: false }], &[]);
        App { dir, bootstrap: bootstrap.to_owned(), app, input, name }
    }

    fn config(&self, which: &str) -> PathBuf {
        self.dir.path().join(format!("{which}.toml"))
    }

    /// Starts a member running configuration `which`, with its own state directory and port.
    fn member(&self, which: &str, n: usize) -> (Child, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyflow"))
            .args(["run", "--config"])
            .arg(self.config(which))
            .env("KEYFLOW_STATE_DIR", self.dir.path().join(format!("state-{n}-{which}")))
            .env("KEYFLOW_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("KEYFLOW_HTTP_AUTH_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        common::wait_for_run_ready(&mut child, port, Duration::from_secs(90));
        (child, port)
    }

    fn send(&self, events: &[(&str, &str)]) {
        let now = keyflow::runtime::now_ms();
        let records: Vec<(i64, String, Vec<u8>)> = events
            .iter()
            .map(|(key, kind)| (now, key.to_string(), serde_json::to_vec(&json!({"type": kind, "id": format!("{key}:{kind}")})).unwrap()))
            .collect();
        produce(&self.bootstrap, &self.input, &records);
    }

    /// The instances as their changelog has them now.
    fn instances(&self) -> BTreeMap<String, Instance> {
        read_all(&self.bootstrap, &format!("{}-instances-changelog", self.app))
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v).ok()?)))
            .collect()
    }

    fn transitions(&self) -> Vec<Value> {
        read_committed(&self.bootstrap, &format!("{}.transitions", self.name))
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_keyflow")).args(args).arg("--config").arg(self.config("v2")).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_committed(bootstrap: &str, topic: &str) -> Vec<Value> {
    common::read_topic(bootstrap, topic, "read_committed").iter().map(|(_, v)| serde_json::from_slice(v).unwrap()).collect()
}

fn stop(mut child: Child) {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "a member stopped with {status}:\n{err}");
    assert!(!err.contains("panicked"), "a member panicked:\n{err}");
}

/// Whether the members behind `consoles` own every partition of the input once between them and
/// none is restoring: a listing asked meanwhile may be refused with 503 (ask again).
fn settled(consoles: &[u16]) -> bool {
    let mut owned = Vec::new();
    for port in consoles {
        let r = reqwest::blocking::Client::new().get(format!("http://127.0.0.1:{port}/api/health")).bearer_auth(TOKEN).send();
        let Ok(r) = r else { return false };
        let Ok(h) = r.json::<Value>() else { return false };
        let me = &h["instances"][0];
        if me["restoring"] != false || me["running"] != true {
            return false;
        }
        owned.extend(me["partitions"].as_array().into_iter().flatten().filter_map(Value::as_i64));
    }
    owned.sort();
    owned == [0, 1, 2, 3]
}

/// Every id a console lists at `path`, page by page. A page answered 503 is asked again, as the
/// console asks its users to; any other refusal fails the test with what the console said.
fn list_all(port: u16, path: &str) -> Vec<String> {
    let (mut ids, mut after) = (Vec::new(), String::new());
    loop {
        let url = format!("http://127.0.0.1:{port}{path}&after={after}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let page: Value = loop {
            let r = reqwest::blocking::Client::new().get(&url).bearer_auth(TOKEN).send().unwrap();
            let (code, body) = (r.status().as_u16(), r.text().unwrap());
            match code {
                200 => break serde_json::from_str(&body).unwrap(),
                503 if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                _ => panic!("the console refused {url}: {code} {body}"),
            }
        };
        ids.extend(page["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return ids,
        }
    }
}

fn paid(keys: &[String]) -> Vec<(&str, &str)> {
    keys.iter().map(|k| (k.as_str(), "paid")).collect()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn a_rolling_deploy_of_a_new_version_and_a_migration_while_events_flow_lose_and_double_nothing() {
    let kafka = common::kafka_broker::shared();
    let app = App::new(&kafka.bootstrap);
    let (old, early, late) = (keys("old", 200), keys("early", 100), keys("late", 100));

    // Three members on version 1; 200 orders paid.
    let (a, _) = app.member("v1", 1);
    let (b, _) = app.member("v1", 2);
    let (c, _) = app.member("v1", 3);
    app.send(&paid(&old));
    wait_until("200 orders paid", Duration::from_secs(120), || app.transitions().len() >= 200);

    // The rolling deploy, member by member, while orders keep arriving.
    stop(a);
    let (a, console) = app.member("v2", 1);
    app.send(&paid(&early[..50]));
    stop(b);
    let (b, b_console) = app.member("v2", 2);
    app.send(&paid(&early[50..]));
    stop(c);
    let (c, c_console) = app.member("v2", 3);
    app.send(&paid(&late));
    wait_until("every order paid", Duration::from_secs(120), || app.transitions().len() >= 400);
    let now = app.instances();
    for k in &old {
        assert_eq!((now[k].version, now[k].state.as_str()), (1, "paid"), "{k} started on version 1");
    }
    for k in &late {
        assert_eq!((now[k].version, now[k].state.as_str()), (2, "payment-received"), "{k} started after the deploy");
    }
    // Orders paid during the deploy started on the version of the member that owned them.
    for k in &early {
        assert!(matches!((now[k].version, now[k].state.as_str()), (1, "paid") | (2, "payment-received")), "{k}: {:?}", now[k]);
    }

    // The console lists the instances in a state of a version, 50 a page: once the group has
    // settled, the three members' lists together are exactly the version-1 orders still in `paid`.
    let in_paid: std::collections::BTreeSet<String> =
        app.instances().into_iter().filter(|(_, i)| i.version == 1 && i.state == "paid").map(|(k, _)| k).collect();
    let consoles = [console, b_console, c_console];
    wait_until("the group settled: each partition on one member, none restoring", Duration::from_secs(60), || settled(&consoles));
    let mut listed = std::collections::BTreeSet::new();
    for port in consoles {
        for id in list_all(port, &format!("/api/workflows/{}/instances?state=paid&version=1&limit=50", app.name)) {
            assert!(listed.insert(id.clone()), "listed twice: {id}");
        }
    }
    assert_eq!(listed, in_paid);

    // Half the old orders ship by version 1's rule; the v2 ones are packed and shipped.
    let mut events: Vec<(&str, &str)> = old[..100].iter().map(|k| (k.as_str(), "shipped")).collect();
    for k in early.iter().chain(&late).filter(|k| now[*k].version == 2) {
        events.extend([(k.as_str(), "packed"), (k.as_str(), "shipped")]);
    }
    app.send(&events);

    // The console's dry run, behind the token: refused without a mapping for `paid`.
    let (code, _) = console_migrate(console, &json!({"dryRun": true}), false);
    assert_eq!(code, 401, "a change needs the token");
    let (code, refused) = console_migrate(console, &json!({"dryRun": true}), true);
    assert!(code == 422 && refused["error"].as_str().unwrap().contains("version 1 state `paid`"), "{code} {refused}");
    let (code, dry) = console_migrate(console, &json!({"dryRun": true, "mapping": {"paid": "payment-received"}}), true);
    assert!(code == 200 && dry["sent"] == false && dry["instances"].as_u64().unwrap() >= 100, "{code} {dry}");

    // The migration of the version-1 orders left: refused without a mapping for `paid`; the
    // dry run counts them; then they move while the shipments above are still being applied.
    let (ok, out) = app.cli(&["workflow", "migrate"]);
    assert!(!ok && out.contains("version 1 state `paid`"), "{out}");
    let (ok, out) = app.cli(&["workflow", "migrate", "--map", "paid=payment-received", "--name", "to-v2", "--dry-run"]);
    assert!(ok && out.contains("dry run"), "{out}");
    let (ok, out) = app.cli(&["workflow", "migrate", "--map", "paid=payment-received", "--name", "to-v2"]);
    assert!(ok, "{out}");
    // Run twice under the same name: nothing more moves.
    let (ok, again) = app.cli(&["workflow", "migrate", "--map", "paid=payment-received", "--name", "to-v2"]);
    assert!(ok, "{again}");

    let v1_left: Vec<String> = old[100..].iter().chain(&early).filter(|k| now[*k].version == 1).cloned().collect();
    wait_until("the version-1 orders migrated", Duration::from_secs(120), || {
        let i = app.instances();
        v1_left.iter().all(|k| i[k].version == 2)
    });
    // Migrated orders follow version 2 from here: packed, then shipped.
    let events: Vec<(&str, &str)> = v1_left.iter().flat_map(|k| [(k.as_str(), "packed"), (k.as_str(), "shipped")]).collect();
    app.send(&events);
    let all: Vec<&String> = old.iter().chain(&early).chain(&late).collect();
    wait_until("every order shipped", Duration::from_secs(120), || {
        let i = app.instances();
        all.iter().all(|k| i.get(*k).is_some_and(|x| x.state == "shipped"))
    });
    stop(a);
    stop(b);
    stop(c);

    let end = app.instances();
    for k in &old[..100] {
        assert_eq!(end[k].version, 1, "{k} shipped by version 1's rule, before the migration reached it");
    }
    for k in &v1_left {
        let h: Vec<(&str, &str)> = end[k].history.iter().map(|h| (h.to.as_str(), h.event.as_str())).collect();
        assert_eq!(h, [("paid", "paid"), ("payment-received", "migration:v1->v2"), ("packed", "packed"), ("shipped", "shipped")], "{k}");
    }
    // Exactly one transition record per step of every order: none lost, none doubled.
    let mut per_order: BTreeMap<String, usize> = BTreeMap::new();
    for t in app.transitions() {
        *per_order.entry(t["instanceId"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    for k in &all {
        assert_eq!(per_order.get(*k).copied(), Some(end[*k].history.len()), "{k}: {:?}", end[*k].history);
    }
    let dlq = read_all(&kafka.bootstrap, &format!("{}-dlq", app.app));
    assert!(dlq.is_empty(), "no dead letter: {} of them", dlq.len());
}

/// A member that lacks an instance's version (a rollback, or a member not yet deployed) waits on
/// that partition and says so on `/ready` and `/metrics`, dead-letters nothing, still stops on
/// SIGTERM; a member with the version then applies what waited.
#[test]
fn a_member_without_an_instances_version_says_its_partition_waits_and_a_member_with_it_applies_the_event() {
    let kafka = common::kafka_broker::shared();
    let app = App::new(&kafka.bootstrap);
    let (m, _) = app.member("v2", 1);
    app.send(&[("o-1", "paid")]);
    wait_until("o-1 paid", Duration::from_secs(60), || app.transitions().len() == 1);
    stop(m);
    assert_eq!(app.instances()["o-1"].version, 2);

    let (m, port) = app.member("v1", 2);
    app.send(&[("o-1", "packed")]);
    let get = |path: &str| reqwest::blocking::get(format!("http://127.0.0.1:{port}{path}")).unwrap().text().unwrap();
    wait_until("/ready names the waiting partition", Duration::from_secs(60), || get("/ready").contains("runs version 2 of workflow"));
    let ready = reqwest::blocking::get(format!("http://127.0.0.1:{port}/ready")).unwrap();
    assert_eq!(ready.status().as_u16(), 200, "the member itself is fine");
    assert!(get("/metrics").lines().any(|l| l.starts_with("keyflow_input_waiting{") && l.contains(&app.input) && l.ends_with(" 1")));
    stop(m);
    assert_eq!(app.instances()["o-1"].state, "payment-received", "nothing guessed");

    let (m, _) = app.member("v2", 3);
    wait_until("o-1 packed by a member with version 2", Duration::from_secs(60), || app.instances()["o-1"].state == "packed");
    stop(m);
    assert!(read_all(&kafka.bootstrap, &format!("{}-dlq", app.app)).is_empty());
}
