//! The HTTP endpoint of a running instance (mock cluster, document-approval workflow): health,
//! readiness, the Prometheus exposition (checked line by line against the text format), and the
//! interactive query of a workflow instance.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{document_approval, unique, wait_until, WorkflowSetup};
use keyflow::config::Config;
use keyflow::console::Console;
use keyflow::kafka;
use keyflow::observe::Server;
use keyflow::runtime::{Guarantee, Instance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

fn get(url: &str) -> (u16, String) {
    let r = reqwest::blocking::get(url).unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Every sample line is `name{labels} value` with a float value, and its family was declared
/// with `# HELP` and `# TYPE` before it.
fn check_exposition(text: &str) -> BTreeSet<String> {
    let mut declared = BTreeSet::new();
    let mut samples = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            assert!(matches!(parts.next(), Some("counter" | "gauge" | "histogram")), "{line}");
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        let name = series.split('{').next().unwrap();
        let family =
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f))).unwrap_or(name);
        assert!(declared.contains(family), "sample before its # TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        samples.insert(series.to_owned());
    }
    samples
}

#[test]
fn health_readiness_metrics_and_the_instance_query_are_served() {
    let WorkflowSetup { kafka: _kafka, bootstrap, config, topology, dir } = document_approval("observed", Guarantee::AtLeastOnce);
    let app = config.application_id.clone();
    let instance = Instance::start(config, topology).unwrap();
    let server = Server::start("127.0.0.1:0", Console::new(&app, Vec::new()), instance.status()).unwrap();
    let base = format!("http://{}", server.address);

    wait_until("ready", Duration::from_secs(30), || {
        get(&format!("{base}/ready")).0 == 200 && !instance.status().snapshot().assignment.is_empty()
    });
    assert_eq!(get(&format!("{base}/health")), (200, "ok\n".into()));

    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("partitioner", "murmur2_random").create().unwrap();
    let upload = json!({"id": "up-1", "type": "org.alfresco.event.node.Created",
        "data": {"resource": {"id": "doc 1", "nodeType": "cm:content", "name": "a.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 5}, "createdByUser": {"id": "jdoe"}}}});
    kafka::send_waiting(&producer, BaseRecord::to("alfresco.node-events").key("doc 1").payload(&upload.to_string())).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    // The instance's state and audit trail, by id (percent-encoded in the path).
    wait_until("the instance is queryable", Duration::from_secs(30), || get(&format!("{base}/workflows/doc%201")).0 == 200);
    let (_, body) = get(&format!("{base}/workflows/doc%201"));
    let inst: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(inst["state"], "scanning");
    assert_eq!(inst["history"][0]["to"], "scanning");
    // An instance without the key asks its peers.
    let idle = Instance::start(
        Config::for_application(&unique("idle"), &bootstrap, &dir.path().join("idle")),
        keyflow::builtin::by_name("status-tracker", "idle-in", "idle-out", 1000).unwrap(),
    )
    .unwrap();
    let def = keyflow::workflow::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap();
    let front =
        Server::start("127.0.0.1:0", Console::new("idle", vec![base.clone()]).workflow(std::sync::Arc::new(def)), idle.status()).unwrap();
    wait_until("the front instance runs", Duration::from_secs(30), || idle.status().snapshot().running);
    let (code, body) = get(&format!("http://{}/workflows/doc%201", front.address));
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["state"], "scanning");
    assert_eq!(get(&format!("http://{}/workflows/nobody", front.address)).0, 404);
    // The console of an instance that owns none of the documents shows the group's: its peer's
    // instances per state, and the document's page.
    let overview: Value = serde_json::from_str(&get(&format!("http://{}/api/overview", front.address)).1).unwrap();
    let scanning = overview["workflows"][0]["states"].as_array().unwrap().iter().find(|s| s["name"] == "scanning").unwrap().clone();
    assert_eq!(scanning["instances"], 1, "{overview}");
    let (code, body) = get(&format!("http://{}/api/instances/doc%201", front.address));
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["instance"]["state"], "scanning");
    let (code, body) = get(&format!("http://{}/api/instances/doc%201", front.address));
    let pending = serde_json::from_str::<Value>(&body).unwrap()["timers"].clone();
    assert_eq!((code, pending), (200, json!([])), "scanning sets no timer");
    idle.stop();
    idle.join().unwrap();
    let (code, body) = get(&format!("{base}/workflows/nobody"));
    assert_eq!(code, 404);
    assert!(body.contains("another instance owns it, or it does not exist"), "{body}");
    assert_eq!(get(&format!("{base}/nope")).0, 404);

    // Lag comes with librdkafka's statistics, every 5 s; store sizes with the next commit.
    wait_until("lag and store sizes in the metrics", Duration::from_secs(30), || {
        let m = get(&format!("{base}/metrics")).1;
        m.contains("keyflow_consumer_lag{") && m.contains("keyflow_store_keys{")
    });
    let (code, metrics) = get(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    let samples = check_exposition(&metrics);
    let app_label = format!("{{application=\"{app}\"}}");
    assert!(samples.contains(&format!("keyflow_records_processed_total{app_label}")), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!("keyflow_records_processed_total{app_label} ")) && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        samples.contains(&format!(
            "keyflow_workflow_transitions_total{{application=\"{app}\",workflow=\"document-approval\",from=\"new\",to=\"scanning\"}}"
        )),
        "{metrics}"
    );
    assert!(samples.iter().any(|s| s.starts_with("keyflow_consumer_lag{") && s.contains("topic=\"alfresco.node-events\"")), "{metrics}");
    assert!(samples.iter().any(|s| s.starts_with("keyflow_store_keys{") && s.contains("store=\"instances\"")), "{metrics}");
    // One document, in `scanning`: the exact count, from the counts store, not a scan.
    let scanning =
        format!("keyflow_workflow_instances{{application=\"{app}\",workflow=\"document-approval\",version=\"1\",state=\"scanning\"}} 1");
    assert!(metrics.lines().any(|l| l == scanning), "{metrics}");

    instance.stop();
    instance.join().unwrap();
    assert_eq!(get(&format!("{base}/health")).0, 503, "a stopped instance is not healthy");
    drop(server);
}
