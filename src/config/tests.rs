use super::*;

const FILE: &str = r#"
application.id = "docs"
bootstrap.servers = "k1:9092"
processing.guarantee = "exactly_once_v2"
commit.interval.ms = 250
schema.registry.url = "https://sr:8081"
schema.registry.bearer.auth.token = "tok-secret"

[topology]
input = "in"
sla.ms = 1000

[producer]
linger.ms = 5
sasl.password = "hunter2"
"#;

#[test]
fn dotted_kafka_streams_names_parse_and_env_overrides_win() {
    let env = [
        ("KEYFLOW_COMMIT_INTERVAL_MS".to_string(), "500".to_string()),
        ("KEYFLOW_CONSUMER_FETCH_MIN_BYTES".into(), "1".into()),
        ("OTHER".into(), "x".into()),
    ];
    let c = Config::parse(FILE, "test", env).unwrap();
    assert_eq!(c.application_id, "docs");
    assert_eq!(c.processing_guarantee, Guarantee::ExactlyOnceV2);
    assert_eq!(c.commit_interval(), Duration::from_millis(500));
    assert_eq!(c.topology.input, "in");
    assert_eq!(c.topology.sla_ms, 1000);
    assert_eq!(c.producer.0["linger.ms"], "5");
    assert_eq!(c.consumer.0["fetch.min.bytes"], "1");
    assert_eq!(c.dlq_topic(), "docs-dlq");
}

#[test]
fn client_settings_apply_to_every_client_and_their_env_overrides_stay_text() {
    let file = "application.id = \"a\"\nkafka.call.timeout.ms = 5000\n[client]\n\"security.protocol\" = \"SASL_SSL\"\n[admin]\n\"request.timeout.ms\" = 1000\n";
    let env = [("KEYFLOW_CLIENT_SASL_PASSWORD".to_string(), "1e3".to_string())];
    let c = Config::parse(file, "test", env).unwrap();
    assert_eq!(c.call_timeout(), Duration::from_millis(5000), "a top-level `kafka.` key is not a section");
    assert_eq!(c.client.0["sasl.password"], "1e3", "not 1000.0");
    assert_eq!(c.clients().config(crate::kafka::Role::Admin).get("request.timeout.ms"), Some("1000"));
    assert_eq!(c.clients().config(crate::kafka::Role::Consumer).get("security.protocol"), Some("SASL_SSL"));
    let managed = Config::parse("application.id = \"a\"\n[client]\n\"group.id\" = \"x\"\n", "test", []).unwrap_err().to_string();
    assert!(managed.contains("[client] group.id is set by keyflow"), "{managed}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/keyflow.toml");
    let c = Config::load(&path, []).unwrap();
    assert_eq!(c.processing_guarantee, Guarantee::ExactlyOnceV2);
    assert_eq!(c.topology.sla_ms, 48 * 3600 * 1000);
}

#[test]
fn the_shipped_connectors_config_is_valid_and_takes_secrets_from_the_environment() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/connectors.toml");
    let env = || [("CAMUNDA_PASSWORD".to_owned(), "c8-secret".to_owned()), ("ALFRESCO_PASSWORD".to_owned(), "alf-secret".to_owned())];
    let mut c = Config::load(&path, env()).unwrap();
    let conn = c.connectors.clone().unwrap();
    assert_eq!(conn.breaker.open_ms, 30_000);
    let shown = format!("{c:?}");
    assert!(!shown.contains("c8-secret") && !shown.contains("alf-secret"), "{shown}");
    // The topology builds once the workflow is where the file says (here: the repository's).
    c.connectors.as_mut().unwrap().workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml");
    c.schema_registry_url = Some("mock://connectors-config".into());
    let t = c.build_topology().unwrap();
    assert!(t.source_topics().contains(&"alfresco.events".to_owned()), "{t:?}");
    assert!(t.sink_topics().contains(&"document-approval.decision-results".to_owned()));
    let e = Config::load(&path, []).unwrap_err().to_string();
    assert!(e.contains("${ALFRESCO_PASSWORD}, which is not set in the environment"), "{e}");
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let c = Config::parse(FILE, "test", []).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("tok-secret"), "{shown}");
    assert_eq!(c.registry().unwrap().bearer_auth_token.as_deref(), Some("tok-secret"));
    assert!(shown.contains("<redacted>"));
}

#[test]
fn unknown_keys_bad_values_and_managed_settings_are_clear_errors() {
    let e = Config::parse("application.id = \"a\"\ncommit.intervall.ms = 5", "t", []).unwrap_err().to_string();
    assert!(e.contains("unknown field `commit.intervall.ms`"), "{e}");
    let e = Config::parse("application.id = \"a\"\nprocessing.guarantee = \"exactly_once\"", "t", []).unwrap_err().to_string();
    assert!(e.contains("unknown variant `exactly_once`"), "{e}");
    let e = Config::parse("application.id = \"a\"\n[consumer]\ngroup.id = \"x\"", "t", []).unwrap_err().to_string();
    assert!(e.contains("group.id is set by keyflow"), "{e}");
    let e = Config::parse("application.id = \"a b\"", "t", []).unwrap_err().to_string();
    assert!(e.contains("application.id"), "{e}");
    let e = Config::parse("bootstrap.servers = \"x\"", "t", []).unwrap_err().to_string();
    assert!(e.contains("missing field `application.id`"), "{e}");
    let defaults = Config::parse("application.id = \"a\"", "t", []).unwrap();
    assert_eq!(defaults.commit_interval(), Duration::from_secs(30));
    assert_eq!(defaults.state_dir, PathBuf::from("state"));
}
