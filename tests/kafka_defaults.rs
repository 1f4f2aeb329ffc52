//! `keyflow run` on the README's own one-node broker with nothing but the required settings:
//! the defaults must work there. `replication.factor` defaulted to 3, and a one-node broker
//! refused every internal topic (`InvalidReplicationFactor`): the first run stopped at once.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{create_topics, unique};
use keyflow::kafka::TopicSpec;

#[test]
fn keyflow_run_with_only_the_required_settings_works_on_a_one_node_broker() {
    let kafka = common::kafka_broker::shared();
    let (app, input) = (unique("defaults"), unique("events"));
    create_topics(&kafka.bootstrap, &[TopicSpec { name: input.clone(), partitions: 2, compacted: false }], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!(
            "application.id = \"{app}\"\nbootstrap.servers = \"{}\"\nstate.dir = \"{}\"\nhttp.listen = \"127.0.0.1:{port}\"\n\
             [topology]\nbuiltin = \"status-tracker\"\ninput = \"{input}\"\noutput = \"{}\"\n",
            kafka.bootstrap,
            dir.path().join("state").display(),
            unique("statuses")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_run_ready(&mut child, port, Duration::from_secs(60));
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success());
}
