//! keyflow on an Apache Kafka broker whose only client listener is SASL_SSL (SCRAM-SHA-512
//! credentials created at format time, a certificate signed by the test's own CA): `keyflow run`,
//! the console, `dlq list/show/redrive/purge`, `replay` and `tasks` all reach it with the
//! settings in `[client]`, and the same commands without them are refused by the broker (issue 22,
//! item 5). A configuration written before `[client]` existed, with the credentials in
//! `[consumer]` and `[producer]` (the reproduction of the issue: `keyflow run` stopped at once,
//! `cannot read metadata of topic ...: BrokerTransportFailure`), runs too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::kafka_broker::{KafkaCluster, SCRAM_PASSWORD, SCRAM_USER};
use common::wait_until;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Value};

const TOKEN: &str = "secured-console-token";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn keyflow(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyflow")).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// An application configuration on `kafka` whose client settings are `security` (TOML sections).
fn write_config(dir: &Path, name: &str, kafka: &KafkaCluster, port: u16, security: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "application.id = \"secured\"\nbootstrap.servers = \"{}\"\nstate.dir = \"{}\"\nhttp.listen = \"127.0.0.1:{port}\"\n\
             http.auth.token = \"{TOKEN}\"\ncommit.interval.ms = 100\n[topology]\nfile = \"{}\"\n{security}",
            kafka.bootstrap,
            dir.join(format!("state-{name}")).display(),
            root().join("topologies/document-approval.toml").display(),
        ),
    )
    .unwrap();
    file
}

fn client_section(section: &str, kafka: &KafkaCluster) -> String {
    let mut s = format!("[{section}]\n");
    for (k, v) in &kafka.client {
        s.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    s
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_run(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops `keyflow run` with SIGTERM; returns what it logged.
fn stop(child: Child) -> String {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn api(port: u16, path: &str) -> (u16, Value) {
    let r = reqwest::blocking::Client::new().get(format!("http://127.0.0.1:{port}{path}")).bearer_auth(TOKEN).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn every_command_reaches_a_sasl_ssl_cluster_with_the_kafka_section_and_a_plaintext_client_is_refused() {
    keyflow::cli::init_tracing(0);
    let kafka = KafkaCluster::start_secure();
    let dir = tempfile::tempdir().unwrap();
    // The workflow's topics, created over SASL_SSL.
    let def = keyflow::workflow::load(&root().join("topologies/document-approval.toml")).unwrap();
    let topology = keyflow::workflow::compile(def, None).unwrap();
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().unwrap();
    let topics: Vec<String> = topology.source_topics().into_iter().chain(topology.sink_topics()).collect();
    let new: Vec<NewTopic<'_>> = topics.iter().map(|t| NewTopic::new(t, 2, TopicReplication::Fixed(1))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap() {
        r.unwrap();
    }

    // The reproduction first: a configuration from before `[client]`, the credentials in
    // `[consumer]` and `[producer]` (the README named no other place). It stopped at once.
    let port = free_port();
    let legacy = format!("{}{}", client_section("consumer", &kafka), client_section("producer", &kafka));
    let legacy = write_config(dir.path(), "legacy", &kafka, port, &legacy);
    let mut run = start_run(&legacy);
    common::wait_for_run_ready(&mut run, port, Duration::from_secs(90));
    // A decision for a document not uploaded yet (a dead letter), and an upload.
    let producer: BaseProducer = kafka.client_config().create().unwrap();
    let early = json!({"id": "dec-early", "outcome": {"route": "auto-approve"}}).to_string();
    keyflow::kafka::send_waiting(&producer, BaseRecord::to("document-approval.decision-results").key("doc-early").payload(&early)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    // The upload by `keyflow send`, with the same settings.
    let upload = json!({"id": "up-1", "type": "org.alfresco.event.node.Created",
        "data": {"resource": {"id": "doc-1", "nodeType": "cm:content", "name": "a.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 5}, "createdByUser": {"id": "jdoe"}}}});
    let sent = keyflow(&["send", "--topic", "alfresco.node-events", "--key", "doc-1", &upload.to_string()], &legacy);
    assert!(sent.status.success() && text(&sent).contains("sent 1 record(s)"), "{}", text(&sent));
    wait_until("doc-1 in the legacy run", Duration::from_secs(60), || api(port, "/api/instances/doc-1").0 == 200);
    let mut logged = stop(run);

    // The same application with the settings in `[client]`, on a new disk: restored over SASL_SSL.
    let port = free_port();
    let secured = write_config(dir.path(), "secured", &kafka, port, &client_section("client", &kafka));
    let mut run = start_run(&secured);
    common::wait_for_run_ready(&mut run, port, Duration::from_secs(90));

    // The console reads the instance and the dead letter (its own clients, over SASL_SSL).
    wait_until("doc-1 in the console", Duration::from_secs(60), || api(port, "/api/instances/doc-1").1["instance"]["state"] == "scanning");
    wait_until("the dead letter in the console", Duration::from_secs(60), || {
        api(port, "/api/dlq").1["deadLetters"].as_array().is_some_and(|l| l.len() == 1)
    });
    let id = api(port, "/api/dlq").1["deadLetters"][0]["id"].as_str().unwrap().to_owned();

    // The CLI: list, show, redrive; the redriven letter is handled.
    let listed = keyflow(&["dlq", "list"], &secured);
    assert!(listed.status.success() && text(&listed).contains(&id), "{}", text(&listed));
    let shown = keyflow(&["dlq", "show", &id], &secured);
    assert!(shown.status.success() && text(&shown).contains("dec-early"), "{}", text(&shown));
    let redriven = keyflow(&["dlq", "redrive", "--id", &id], &secured);
    assert!(redriven.status.success(), "{}", text(&redriven));
    wait_until("the redriven letter dead-lettered again (doc-early is still unknown)", Duration::from_secs(60), || {
        api(port, "/api/dlq").1["deadLetters"].as_array().is_some_and(|l| l.len() == 1 && l[0]["id"] != id.as_str())
    });
    let again = api(port, "/api/dlq").1["deadLetters"][0]["id"].as_str().unwrap().to_owned();
    let purged = keyflow(&["dlq", "purge", "--yes", "--id", &again], &secured);
    assert!(purged.status.success(), "{}", text(&purged));
    let none = keyflow(&["dlq", "list"], &secured);
    assert!(none.status.success() && !text(&none).contains(&again), "{}", text(&none));
    logged.push_str(&stop(run));

    // `replay` (the instance stopped): a dry run reads the group's offsets, then the replay.
    let dry = keyflow(&["replay", "--to-earliest", "--dry-run"], &secured);
    assert!(dry.status.success(), "{}", text(&dry));
    let replayed = keyflow(&["replay", "--to-earliest"], &secured);
    assert!(replayed.status.success(), "{}", text(&replayed));
    // `tasks`: the embedded task list of the connectors application, read over SASL_SSL.
    let connectors = dir.path().join("connectors.toml");
    std::fs::write(
        &connectors,
        format!(
            "application.id = \"secured-connectors\"\nbootstrap.servers = \"{}\"\n[topology]\nbuiltin = \"connectors\"\n{}\
             [connectors]\nworkflow = \"{}\"\n[connectors.tasks]\nbackend = \"embedded\"\n",
            kafka.bootstrap,
            client_section("client", &kafka),
            root().join("topologies/document-approval.toml").display()
        ),
    )
    .unwrap();
    let tasks = keyflow(&["tasks", "list"], &connectors);
    assert!(tasks.status.success(), "{}", text(&tasks));

    // Without the settings: the broker refuses the client (no SASL handshake on its listener).
    let plain = write_config(dir.path(), "plain", &kafka, free_port(), "");
    let refused = keyflow(&["dlq", "list"], &plain);
    assert!(!refused.status.success(), "a plaintext client is refused: {}", text(&refused));
    let started = Instant::now();
    let plain_run = start_run(&plain).wait_with_output().unwrap();
    assert!(!plain_run.status.success(), "keyflow run without credentials stops: {}", text(&plain_run));
    assert!(started.elapsed() < Duration::from_secs(120));
    // Nothing secret in what keyflow printed, even when failing.
    for o in [&sent, &listed, &shown, &redriven, &purged, &dry, &replayed, &tasks, &refused, &plain_run] {
        assert!(!text(o).contains(SCRAM_PASSWORD), "{}", text(o));
    }
    assert!(!logged.contains(SCRAM_PASSWORD) && logged.contains("starting"), "keyflow run's log has no password:\n{logged}");

    assert!(kafka.client.iter().any(|(k, v)| k == "sasl.username" && v == SCRAM_USER));
}
