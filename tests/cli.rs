//! The `keyflow` binary as a user runs it.

use std::process::Command;

fn keyflow(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyflow")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn schemas_check_passes_on_the_shipped_catalogue() {
    let (code, out) = keyflow(&["schemas", "check", "--level", "FULL_TRANSITIVE"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("io.keyflow.document.DocumentUploaded (2 versions)"), "{out}");
    assert!(out.contains("v2 against earlier versions (FULL_TRANSITIVE, offline): compatible"), "{out}");
    assert!(out.contains("0 incompatibilities"), "{out}");
}

#[test]
fn schemas_check_fails_on_an_incompatible_version_and_names_the_field_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = r#"{"type":"record","name":"Claim","namespace":"io.example","fields":[{"name":"id","type":"string"}]}"#;
    let v2 = r#"{"type":"record","name":"Claim","namespace":"io.example","fields":[{"name":"id","type":"string"},{"name":"amount","type":"double"}]}"#;
    std::fs::write(dir.path().join("Claim.v1.avsc"), v1).unwrap();
    std::fs::write(dir.path().join("Claim.v2.avsc"), v2).unwrap();
    let (code, out) = keyflow(&["schemas", "check", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("v2 INCOMPATIBLE (BACKWARD, offline) against version 1"), "{out}");
    assert!(out.contains("'amount'") && out.contains("default"), "{out}");
    let (code, out) = keyflow(&["schemas", "check", "--dir", dir.path().to_str().unwrap(), "--level", "FORWARD"]);
    assert_eq!(code, 0, "adding a field is forward compatible: {out}");
}

#[test]
fn schemas_register_registers_every_version_and_check_then_consults_the_registry() {
    let scope = format!("mock://cli-{}", std::process::id());
    // mock:// lives in one process, so register and check run in the same invocation's world:
    // `register` alone proves ids are assigned in order; `check` against an empty scope passes.
    let (code, out) = keyflow(&["schemas", "register", "--registry", &scope]);
    assert_eq!(code, 0, "{out}");
    let id = |version: &str| -> u32 {
        let prefix = format!("io.keyflow.document.DocumentUploaded {version}: id ");
        out.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{prefix} missing: {out}")).parse().unwrap()
    };
    assert_eq!(id("v2"), id("v1") + 1, "versions are registered oldest first: {out}");
    let (code, out) = keyflow(&["schemas", "check", "--registry", &scope, "--subject-strategy", "topic"]);
    assert_eq!(code, 2, "the topic strategy needs --topic: {out}");
    assert!(out.contains("--topic"), "{out}");
}

#[test]
fn a_bad_config_stops_the_start_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, "application.id = \"a\"\nbootstrap.servers = \"x:9092\"\nprocessing.guarantee = \"exactly-once\"\n").unwrap();
    let (code, out) = keyflow(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown variant `exactly-once`"), "{out}");
}

#[test]
fn topology_describe_prints_nodes_and_changelogs() {
    let (code, out) = keyflow(&["topology", "describe"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Processor: tracker (stores: [documents])") && out.contains("<application.id>-documents-changelog"), "{out}");
}

/// `topology validate --against` (issue 21): a change that instances in flight would notice is
/// refused under the running version's number, and accepted as a new version with its diff;
/// `topology diff` names the rename.
#[test]
fn validate_against_refuses_a_stranding_change_under_the_same_version_and_diff_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = "tests/workflows/orders.v1.toml";
    let v2 = "tests/workflows/orders.v2.toml";
    // v2's content under version 1's number: what the issue's user did (a file edited in place).
    let same = dir.path().join("orders.toml");
    std::fs::write(&same, std::fs::read_to_string(v2).unwrap().replace("version = 2", "version = 1")).unwrap();
    let (code, out) = keyflow(&["topology", "validate", same.to_str().unwrap(), "--against", v1]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused") && out.contains("state renamed: paid -> payment-received") && out.contains("version = 2"), "{out}");
    let (code, out) = keyflow(&["topology", "validate", v2, "--against", v1]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("a new version (2 after 1)"), "{out}");
    let (code, out) = keyflow(&["topology", "validate", v1, "--against", v2]);
    assert_eq!(code, 1, "an older version replaces nothing: {out}");
    let (code, out) = keyflow(&["topology", "diff", v1, v2]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("! state renamed: paid -> payment-received"), "{out}");
    assert!(out.contains("! transition removed: payment-received --shipped--> shipped"), "{out}");
}
