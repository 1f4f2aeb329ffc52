//! A real DMN 1.3 decision table (`topologies/decisions/document-routing.dmn`, the file that would
//! be deployed to Camunda) evaluated by a real DMN engine, dsntk (`dsntk srv`, installed by
//! `.ci/setup`): directly through the dsntk backend, and end to end from the workflow's decision
//! request to its transition.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyflow::connectors::decision::{DecisionService, Dsntk};
use keyflow::connectors::{self, ConnectorsConfig};
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::workflow;
use serde_json::{json, Map, Value};

const ROUTE: &str = "io/keyflow/dmn/documents/DocumentRouting/Route";

struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("dsntk"))
        .chain([Path::new(&home).join(".cargo/bin/dsntk")])
        .find(|p| p.is_file())
}

/// dsntk serving the repository's decisions, or `None` (printed) where it is not installed. CI
/// installs it, so there a missing engine fails.
fn start() -> Option<(Engine, String)> {
    let Some(bin) = binary() else {
        assert!(std::env::var("CI").is_err(), "dsntk is not installed: .ci/setup installs it");
        eprintln!("skipped: dsntk is not installed (cargo install dsntk --locked; .ci/setup does)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/decisions");
    let child = Command::new(bin)
        .args(["srv", "-H", "127.0.0.1", "-P", &port.to_string(), "-D"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dsntk starts");
    let engine = Engine(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "dsntk did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((engine, format!("http://127.0.0.1:{port}")))
}

fn vars(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn the_routing_table_decides_every_rule_in_dsntk() {
    let Some((_engine, url)) = start() else { return };
    let dsntk = Dsntk {
        base_url: url,
        http: connectors::http::client(Duration::from_secs(5)).unwrap(),
        paths: [("document-routing".to_owned(), ROUTE.to_owned())].into(),
    };
    let route = |class: &str, mime: &str, size: i64| {
        dsntk.evaluate("document-routing", &vars(json!({"classification": class, "mimeType": mime, "sizeBytes": size}))).unwrap()
    };
    assert_eq!(Value::Object(route("invoice", "application/pdf", 1200)), json!({"route": "auto-approve", "reason": "invoice under 10 MB"}));
    assert_eq!(route("invoice", "application/pdf", 20_000_000)["route"], "manual", "large invoices go to a person");
    assert_eq!(Value::Object(route("spam", "application/pdf", 10)), json!({"route": "reject", "reason": "classified as spam"}));
    assert_eq!(route("invoice", "application/x-sh", 10)["route"], "reject", "the first matching rule wins (FIRST)");
    assert_eq!(route("contract", "application/pdf", 10)["route"], "manual");
    // An unknown decision is refused, not retried.
    assert!(matches!(dsntk.evaluate("unknown", &Map::new()), Err(connectors::http::CallError::Rejected { .. })));
}

#[test]
fn a_workflow_routes_documents_by_the_dmn_file_through_the_connectors() {
    let Some((_engine, url)) = start() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let def = workflow::load(&root.join("topologies/document-approval.toml")).unwrap();
    let mut wf = TopologyTestDriver::new(
        workflow::compile(def, None).unwrap(),
        DriverConfig { application_id: "docs".into(), ..DriverConfig::default() },
    );
    let text = format!(
        "workflow = {:?}\n[decisions]\nbackend = \"dsntk\"\nurl = \"{url}\"\npaths = {{ document-routing = \"{ROUTE}\" }}\n",
        root.join("topologies/document-approval.toml").display().to_string()
    );
    let config: ConnectorsConfig = toml::from_str(&text).unwrap();
    let mut conn = TopologyTestDriver::new(
        connectors::topology(&config, None).unwrap(),
        DriverConfig { application_id: "conn".into(), ..DriverConfig::default() },
    );

    for (node, class, size) in [("small-invoice", "invoice", 1200), ("spam", "spam", 10), ("contract", "contract", 52_113)] {
        let now = wf.wall_clock();
        wf.pipe_json("alfresco.node-events", node, &json!({"id": format!("{node}-up"), "type": "org.alfresco.event.node.Created",
            "data": {"resource": {"id": node, "nodeType": "cm:content", "name": "f.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": size}, "createdByUser": {"id": "jdoe"}}}}), now);
        wf.pipe_json(
            "document-services.results",
            node,
            &json!({"id": format!("{node}-scan"), "service": "virus-scan", "status": "OK"}),
            now,
        );
        wf.pipe_json(
            "document-services.results",
            node,
            &json!({"id": format!("{node}-class"), "service": "classification", "result": {"class": class}}),
            now,
        );
    }
    for r in wf.read_output("document-approval.decision-requests") {
        conn.pipe_input("document-approval.decision-requests", r.key.as_deref(), r.value.as_deref(), conn.wall_clock());
    }
    for r in conn.read_output("document-approval.decision-results") {
        wf.pipe_input("document-approval.decision-results", r.key.as_deref(), r.value.as_deref(), wf.wall_clock());
    }
    let state =
        |node: &str| serde_json::from_slice::<workflow::Instance>(&wf.store_get("instances", node.as_bytes()).unwrap()).unwrap().state;
    assert_eq!((state("small-invoice").as_str(), state("spam").as_str(), state("contract").as_str()), ("approved", "rejected", "review"));
}
