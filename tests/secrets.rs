//! No secret leaves in data (issue 22, item 4): a service URL's credentials, path and query (a
//! webhook's token, an API key) never appear in a dead letter, an error answer or a log line when
//! a call fails; the service's origin does, so the failure still says where.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use keyflow::connectors::{self, ConnectorsConfig};
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use serde_json::json;

/// Log lines, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_call_names_the_service_but_never_its_urls_secrets() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_max_level(tracing::Level::DEBUG).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // nothing listens
    let secrets = ["hookpathsecret", "querysecret456", "decpass789"];
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml");
    let text = format!(
        "workflow = {:?}\ntimeout_ms = 1000\n[retry]\nattempts = 1\n\
         [notifications]\nwebhook = \"http://127.0.0.1:{port}/services/T0/B0/hookpathsecret?token=querysecret456\"\n\
         [decisions]\nbackend = \"camunda8\"\nurl = \"http://keyflow:decpass789@127.0.0.1:{port}\"\n",
        workflow.display().to_string()
    );
    let config: ConnectorsConfig = toml::from_str(&text).unwrap();
    let mut conn = TopologyTestDriver::new(
        connectors::topology(&config, None).unwrap(),
        DriverConfig { application_id: "secrets".into(), partitions: 1, ..DriverConfig::default() },
    );
    let now = conn.wall_clock();
    conn.pipe_json("notifications", "doc-1", &json!({"channel": "email", "recipient": "jdoe", "subject": "s", "body": "b", "idempotencyKey": "doc-1:5:1", "instanceId": "doc-1"}), now);
    conn.pipe_json(
        "document-approval.decision-requests",
        "doc-2",
        &json!({"decisionKey": "document-routing", "idempotencyKey": "doc-2:3:0", "variables": {"classification": "invoice"}, "instanceId": "doc-2"}),
        now,
    );

    let dead: Vec<_> = conn.committed_records("secrets-dlq").into_iter().map(|(_, r)| r).collect();
    let answers = conn.read_output("document-approval.decision-results");
    assert_eq!(dead.len(), 1, "the notification, out of attempts, is a dead letter");
    assert_eq!(answers.len(), 1, "the decision, out of attempts, is an error answer");
    let mut data = String::new();
    for r in dead.iter().chain(&answers) {
        data.push_str(&String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()));
        for (k, v) in r.headers.iter() {
            data.push_str(&format!("{k}={}\n", String::from_utf8_lossy(v)));
        }
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for secret in secrets {
        assert!(!data.contains(secret), "`{secret}` in a dead letter or an answer:\n{data}");
        assert!(!logged.contains(secret), "`{secret}` in the logs:\n{logged}");
    }
    assert!(data.contains(&format!("http://127.0.0.1:{port}")), "the failure still names the service:\n{data}");
    assert!(data.contains("cannot connect"), "{data}");
}
