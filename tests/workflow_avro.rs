//! A workflow whose input is Avro: records written with DocumentUploaded v1 are read through the
//! v2 reader schema the definition names (the Avro issue's serdes inside a workflow).

use std::path::Path;

use keyflow::serde::{AvroSerde, Registry, RegistryConfig, SubjectStrategy};
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::workflow::{self, Instance};
use serde_json::json;

fn definition(dir: &Path, schema: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name = "doc-intake"
key = "record.key"
initial = "new"

[[inputs]]
topic = "documents.uploaded"
event = "document.uploaded"
format = "avro"
schema = "{schema}"

[states.new]
[states.received]
terminal = true

[[transitions]]
from = "new"
on = "document.uploaded"
when = "event.mimeType == 'application/pdf' && size(event.aspects) == 0"
to = "received"
set = {{ name = "$event.name" }}
"#
    );
    let path = dir.join("doc-intake.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn schema_path(version: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/document/DocumentUploaded.{version}.avsc")).display().to_string()
}

#[test]
fn an_avro_input_is_read_through_the_reader_schema_the_definition_names() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(&RegistryConfig { url: format!("mock://wf-avro-{}", std::process::id()), ..Default::default() }).unwrap();
    let def = workflow::load(&definition(dir.path(), &schema_path("v2"))).unwrap();
    let mut d = TopologyTestDriver::new(workflow::compile(def, Some(&registry)).unwrap(), DriverConfig::default());
    let v1 = apache_avro::Schema::parse_str(&std::fs::read_to_string(schema_path("v1")).unwrap()).unwrap();
    let bytes = AvroSerde::new(registry.clone(), Some(v1), SubjectStrategy::TopicName)
        .serialize(
            "documents.uploaded",
            false,
            &json!({"eventId": "e1", "nodeId": "n1", "name": "a.pdf", "mimeType": "application/pdf",
            "sizeBytes": 1, "path": "/", "createdBy": "jdoe", "createdAt": 1}),
        )
        .unwrap();
    d.pipe_input("documents.uploaded", Some(b"n1"), Some(&bytes), 0);
    let i: Instance = serde_json::from_slice(&d.store_get("instances", b"n1").expect("instance")).unwrap();
    assert_eq!(i.state, "received", "the guard saw v2's defaulted `aspects`");
    assert_eq!(i.variables["name"], "a.pdf");
}

#[test]
fn an_avro_input_needs_a_registry_and_a_readable_schema() {
    let dir = tempfile::tempdir().unwrap();
    let def = workflow::load(&definition(dir.path(), &schema_path("v2"))).unwrap();
    let e = workflow::compile(def, None).unwrap_err().to_string();
    assert!(e.contains("input `documents.uploaded` is Avro: set schema.registry.url"), "{e}");
    let e = workflow::load(&definition(dir.path(), "missing.avsc")).unwrap_err().to_string();
    assert!(e.contains("doc-intake.toml:5:") && e.contains("schema `missing.avsc`"), "{e}");
}
