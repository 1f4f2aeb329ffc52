//! Avro with the Confluent wire format and a schema registry (`mock://` here; a real registry
//! server in `registry_server.rs`).

use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;
use keyflow::processor::Error as ProcessorError;
use keyflow::serde::compat::Level;
use keyflow::serde::{AvroSerde, Error, Registry, RegistryConfig, Serde, SubjectStrategy};
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::{dlq, Context, Processor, Record, TopologyBuilder};
use serde_json::{json, Value};

fn schema(file: &str) -> Schema {
    Schema::parse_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/document").join(file)).unwrap()).unwrap()
}

fn registry(scope: &str) -> Arc<Registry> {
    Registry::new(&RegistryConfig { url: format!("mock://{scope}-{}", std::process::id()), ..Default::default() }).unwrap()
}

fn uploaded_v1() -> Value {
    json!({"eventId": "ev-1", "nodeId": "node-1", "name": "contract.pdf", "mimeType": "application/pdf", "sizeBytes": 52_113,
           "path": "/Company Home/Sites/legal", "createdBy": "jdoe", "createdAt": 1_700_000_000_000i64})
}

#[test]
fn a_record_round_trips_through_the_wire_format() {
    let serde = AvroSerde::new(registry("round-trip"), Some(schema("DocumentUploaded.v1.avsc")), SubjectStrategy::TopicName);
    let bytes = serde.serialize("documents", false, &uploaded_v1()).unwrap();
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(serde.deserialize(&bytes).unwrap(), uploaded_v1());
}

#[test]
fn wire_bytes_of_a_known_record_are_stable() {
    let serde = AvroSerde::new(registry("wire"), Some(schema("DocumentUploaded.v1.avsc")), SubjectStrategy::TopicName);
    let bytes = serde.serialize("documents", false, &uploaded_v1()).unwrap();
    let hex: Vec<String> = bytes.chunks(16).map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")).collect();
    insta::assert_snapshot!(hex.join("\n"));
}

#[test]
fn a_v2_reader_reads_v1_data_with_defaults_and_a_v1_reader_reads_v2_data() {
    let r = registry("evolution");
    let v1 = AvroSerde::new(r.clone(), Some(schema("DocumentUploaded.v1.avsc")), SubjectStrategy::TopicName);
    let v2 = AvroSerde::new(r, Some(schema("DocumentUploaded.v2.avsc")), SubjectStrategy::TopicName);
    let old = v1.serialize("documents", false, &uploaded_v1()).unwrap();
    let mut expected = uploaded_v1();
    expected["contentHash"] = Value::Null;
    expected["aspects"] = json!([]);
    assert_eq!(v2.deserialize(&old).unwrap(), expected);

    let mut new_value = uploaded_v1();
    new_value["contentHash"] = json!("sha256:abc");
    new_value["aspects"] = json!(["cm:versionable"]);
    let new = v2.serialize("documents", false, &new_value).unwrap();
    assert_eq!(v1.deserialize(&new).unwrap(), uploaded_v1(), "the v1 reader ignores the new fields");
}

#[test]
fn an_incompatible_change_is_refused_with_the_field_and_the_rule() {
    let r = registry("refuse");
    let v1 = AvroSerde::new(r.clone(), Some(schema("DocumentUploaded.v1.avsc")), SubjectStrategy::TopicName);
    v1.serialize("documents", false, &uploaded_v1()).unwrap();
    r.set_mock_level("documents-value", Level::Backward);
    let broken = Schema::parse_str(
        r#"{"type":"record","name":"DocumentUploaded","namespace":"io.keyflow.document","fields":[
            {"name":"eventId","type":"string"},{"name":"nodeId","type":"string"},{"name":"retentionClass","type":"string"}]}"#,
    )
    .unwrap();
    let err = r.register("documents-value", &broken).unwrap_err();
    let Error::Incompatible { subject, reasons } = &err else { panic!("{err}") };
    assert_eq!(subject, "documents-value");
    assert!(reasons.iter().any(|m| m.contains("'retentionClass'") && m.contains("default") && m.contains("BACKWARD")), "{reasons:?}");
    let (level, reasons) = r.check("documents-value", &schema("DocumentUploaded.v2.avsc")).unwrap();
    assert_eq!((level, reasons.len()), (Level::Backward, 0), "v2 adds fields with defaults: compatible");
}

#[test]
fn subject_names_follow_the_configured_strategy() {
    let s = schema("DocumentUploaded.v1.avsc");
    assert_eq!(SubjectStrategy::TopicName.subject("docs", true, &s), "docs-key");
    assert_eq!(SubjectStrategy::RecordName.subject("docs", false, &s), "io.keyflow.document.DocumentUploaded");
    assert_eq!(SubjectStrategy::TopicRecordName.subject("docs", false, &s), "docs-io.keyflow.document.DocumentUploaded");
}

/// Forwards each document with its name upper-cased.
struct Shout;

impl Processor for Shout {
    fn process(&mut self, ctx: &mut Context<'_>, mut record: Record) -> Result<(), ProcessorError> {
        let name = record.value["name"].as_str().unwrap_or_default().to_uppercase();
        record.value["name"] = json!(name);
        ctx.forward(record);
        Ok(())
    }
}

fn avro_driver(r: &Arc<Registry>) -> TopologyTestDriver {
    let reader = Serde::Avro(AvroSerde::new(r.clone(), Some(schema("DocumentUploaded.v2.avsc")), SubjectStrategy::TopicName));
    let t = TopologyBuilder::new()
        .source("uploads", &["uploads"], Serde::String, reader)
        .processor("shout", || Shout, &["uploads"])
        .sink("out", "shouted", Serde::String, Serde::Json, &["shout"])
        .build()
        .unwrap();
    TopologyTestDriver::new(t, DriverConfig::default())
}

#[test]
fn poison_records_become_dead_letters_with_their_bytes_and_the_partition_moves_on() {
    let r = registry("poison");
    let good = AvroSerde::new(r.clone(), Some(schema("DocumentUploaded.v1.avsc")), SubjectStrategy::TopicName)
        .serialize("uploads", false, &uploaded_v1())
        .unwrap();
    let wrong_type = Schema::parse_str(r#"{"type":"record","name":"Other","fields":[{"name":"eventId","type":"int"}]}"#).unwrap();
    let unresolvable = AvroSerde::new(r.clone(), Some(wrong_type), SubjectStrategy::RecordName)
        .serialize("uploads", false, &json!({"eventId": 7}))
        .unwrap();
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&9_999u32.to_be_bytes());

    let mut d = avro_driver(&r);
    for bytes in [b"plain text".to_vec(), unknown_id, unresolvable.clone(), good] {
        d.pipe_input("uploads", Some(b"node-1"), Some(&bytes), 0);
    }
    let dead = d.read_output("test-app-dlq");
    let reasons: Vec<&str> = dead.iter().map(|r| r.headers.last_str(dlq::ERROR_MESSAGE).unwrap()).collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    assert!(dead.iter().all(|r| r.headers.last_str(dlq::ERROR_CLASS) == Some("deserialization")));
    assert!(reasons[0].contains("not Confluent-framed Avro"), "{}", reasons[0]);
    assert!(reasons[1].contains("9999"), "{}", reasons[1]);
    assert!(reasons[2].contains("Avro"), "{}", reasons[2]);
    assert_eq!(dead[2].value.as_deref(), Some(unresolvable.as_slice()), "the original bytes are kept");
    let out = d.read_output("shouted");
    assert_eq!(out.len(), 1);
    let v: Value = serde_json::from_slice(out[0].value.as_ref().unwrap()).unwrap();
    assert_eq!((v["name"].as_str(), &v["aspects"]), (Some("CONTRACT.PDF"), &json!([])), "v1 data read through the v2 reader");
}

#[test]
fn a_registry_outage_delays_good_records_and_never_dead_letters_them() {
    let r = registry("outage");
    let good = AvroSerde::new(r.clone(), Some(schema("DocumentUploaded.v1.avsc")), SubjectStrategy::TopicName)
        .serialize("uploads", false, &uploaded_v1())
        .unwrap();
    let mut d = avro_driver(&r);
    r.set_mock_available(false);
    d.pipe_input("uploads", Some(b"node-1"), Some(&good), 0);
    d.pipe_input("uploads", Some(b"node-2"), Some(&good), 1);
    assert!(d.retries() >= 2, "each attempt waited for the registry");
    assert!(d.read_output("shouted").is_empty());
    assert!(d.read_output("test-app-dlq").is_empty(), "an outage never makes a dead letter");
    r.set_mock_available(true);
    d.commit();
    assert_eq!(d.read_output("shouted").len(), 2, "both processed once the registry is back, each once");
    assert!(d.read_output("test-app-dlq").is_empty());
}

#[test]
fn the_registry_keeps_defaults_so_later_checks_judge_added_fields_correctly() {
    // Stored v2 must keep its defaults: a FORWARD_TRANSITIVE check of a v3 against it depends on them.
    let r = registry("defaults");
    r.set_mock_level("docs-value", Level::FullTransitive);
    r.register("docs-value", &schema("DocumentUploaded.v1.avsc")).unwrap();
    r.register("docs-value", &schema("DocumentUploaded.v2.avsc")).unwrap();
    let (_, reasons) = r.check("docs-value", &schema("DocumentUploaded.v1.avsc")).unwrap();
    assert!(reasons.is_empty(), "going back to v1 is fine under FULL: v2's added fields have defaults: {reasons:?}");
}
