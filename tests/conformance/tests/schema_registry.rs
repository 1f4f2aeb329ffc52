//! The schema catalogue against a real Confluent-compatible registry server (rivven-schema; the
//! Confluent Schema Registry itself is not served from the registries these machines reach):
//! `keyflow schemas register`
//! registers every version, `keyflow schemas check --registry` agrees with the registry's own
//! compatibility verdicts, and an incompatible new version is refused by both.

use std::path::Path;
use std::process::Command;

use keyflow_conformance::keyflow::binary;
use keyflow_conformance::Cluster;

fn schemas(args: &[&str], dir: &Path, registry: &str) -> (bool, String) {
    let out = Command::new(binary()).arg("schemas").args(args).arg("--dir").arg(dir).args(["--registry", registry]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("keyflow schemas {}:\n{text}", args.join(" "));
    (out.status.success(), text)
}

#[test]
fn the_catalogue_registers_and_checks_against_a_confluent_compatible_registry() {
    let cluster = Cluster::start("schema_registry", true);
    let registry = cluster.registry.clone().expect("the registry was asked for");
    let catalogue = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let (ok, out) = schemas(&["register"], &catalogue, &registry);
    assert!(ok, "register: {out}");
    assert!(!out.contains("REFUSED"), "{out}");
    let (ok, out) = schemas(&["check"], &catalogue, &registry);
    assert!(ok && out.contains(", 0 incompatibilities"), "check: {out}");

    // A v3 of DocumentUploaded with a new field and no default: readers of v3 cannot read v2
    // data (BACKWARD, the registry's default level).
    let dir = tempfile::tempdir().unwrap();
    let family = dir.path().join("document");
    std::fs::create_dir_all(&family).unwrap();
    for v in ["DocumentUploaded.v1.avsc", "DocumentUploaded.v2.avsc"] {
        std::fs::copy(catalogue.join("document").join(v), family.join(v)).unwrap();
    }
    let mut v3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(catalogue.join("document/DocumentUploaded.v2.avsc")).unwrap()).unwrap();
    v3["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "retentionClass", "type": "string"}));
    std::fs::write(family.join("DocumentUploaded.v3.avsc"), v3.to_string()).unwrap();

    let (ok, out) = schemas(&["check"], dir.path(), &registry);
    assert!(!ok, "an incompatible v3 passed the check: {out}");
    assert!(out.contains("INCOMPATIBLE (BACKWARD, offline)"), "the offline check missed it: {out}");
    assert!(out.contains("INCOMPATIBLE with registry subject"), "the registry's verdict was not reported: {out}");
    let (ok, out) = schemas(&["register"], dir.path(), &registry);
    assert!(!ok && out.contains("v3: REFUSED"), "the registry accepted an incompatible v3: {out}");
}
