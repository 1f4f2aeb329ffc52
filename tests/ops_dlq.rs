//! Dead letters end to end on Apache Kafka with the document-approval workflow: their
//! headers, `list` filters, `show`, a redrive that is processed once (and a second redrive that
//! does nothing), `purge`, and the CLI around them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{document_approval, wait_until, WorkflowSetup};
use keyflow::dlq;
use keyflow::kafka::read::read_to_end;
use keyflow::kafka::{self, Provisioner as _, TopicSpec};
use keyflow::ops::dlq::{self as ops, Filter};
use keyflow::runtime::{Guarantee, Instance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

const TRANSITIONS: &str = "document-approval.transitions";

fn send(p: &BaseProducer, topic: &str, key: &str, value: &str) {
    kafka::send_waiting(p, BaseRecord::to(topic).key(key).payload(value)).unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

fn transitions_to(bootstrap: &str, node: &str, state: &str) -> usize {
    read_to_end(bootstrap, TRANSITIONS, Duration::from_secs(10))
        .unwrap()
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m.value.as_deref()?).ok())
        .filter(|t| t["instanceId"] == node && t["to"] == state)
        .count()
}

#[test]
fn dead_letters_are_listed_shown_redriven_once_and_purged() {
    let WorkflowSetup { kafka: _kafka, bootstrap, config, topology, dir } = document_approval("docs", Guarantee::ExactlyOnceV2);
    let dlq_topic = config.dlq_topic();
    common::create_topics(&bootstrap, &[TopicSpec { name: ops::handled_topic(&dlq_topic), partitions: 1, compacted: true }], &[]);
    let instance = Instance::start(config.clone(), topology).unwrap();

    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("partitioner", "murmur2_random").create().unwrap();
    // A decision that arrives before its document (an ordering problem upstream), and a broken upload.
    send(&producer, "document-approval.decision-results", "doc-1", &json!({"id": "d-1", "outcome": {"route": "auto-approve"}}).to_string());
    send(&producer, "alfresco.node-events", "doc-2", "{\"type\": oops");
    wait_until("two dead letters", Duration::from_secs(60), || {
        read_to_end(&bootstrap, &dlq_topic, Duration::from_secs(10)).unwrap().len() == 2
    });

    let all = ops::list(&bootstrap, &dlq_topic, &Filter::default()).unwrap();
    assert_eq!(all.len(), 2);
    let early = all.iter().find(|d| d.key_text() == "doc-1").unwrap();
    assert_eq!(early.header(dlq::ERROR_CLASS), Some("processing"));
    assert_eq!(early.header(dlq::ERROR_MESSAGE), Some("no transition from `new` on event `decision.made`"));
    assert_eq!(early.header(dlq::SOURCE_TOPIC), Some("document-approval.decision-results"));
    assert_eq!(early.header(dlq::SOURCE_OFFSET), Some("0"));
    assert!(
        early.header(dlq::SOURCE_PARTITION).is_some() && early.header(dlq::STAGE).is_some() && early.header(dlq::ATTEMPTS) == Some("1")
    );
    assert_eq!(early.header(dlq::VERSION), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        early.message.value.as_deref(),
        Some(json!({"id": "d-1", "outcome": {"route": "auto-approve"}}).to_string().as_bytes()),
        "original bytes kept"
    );
    let by_class =
        |class: &str| ops::list(&bootstrap, &dlq_topic, &Filter { class: Some(class.into()), ..Filter::default() }).unwrap().len();
    assert_eq!((by_class("processing"), by_class("deserialization"), by_class("timer")), (1, 1, 0));
    let by_topic =
        ops::list(&bootstrap, &dlq_topic, &Filter { source_topic: Some("alfresco.node-events".into()), ..Filter::default() }).unwrap();
    assert_eq!(by_topic.len(), 1);
    assert_eq!(by_topic[0].key_text(), "doc-2");
    assert!(ops::list(&bootstrap, &dlq_topic, &Filter { since: Some(early.at() + 3_600_000), ..Filter::default() }).unwrap().is_empty());

    // The document arrives and reaches `deciding`; now the decision fits.
    for (topic, v) in [
        (
            "alfresco.node-events",
            json!({"id": "up-1", "type": "org.alfresco.event.node.Created", "data": {"resource": {"id": "doc-1", "nodeType": "cm:content", "name": "a.pdf", "content": {"mimeType": "application/pdf", "sizeInBytes": 5}, "createdByUser": {"id": "jdoe"}}}}),
        ),
        ("document-services.results", json!({"id": "s-1", "service": "virus-scan", "status": "OK"})),
        ("document-services.results", json!({"id": "c-1", "service": "classification", "result": {"class": "invoice"}})),
    ] {
        send(&producer, topic, "doc-1", &v.to_string());
    }
    wait_until("doc-1 deciding", Duration::from_secs(30), || transitions_to(&bootstrap, "doc-1", "deciding") == 1);

    let only_early = Filter { ids: vec![early.id()], ..Filter::default() };
    let r = ops::redrive(&bootstrap, &dlq_topic, &only_early, None, 0).unwrap();
    assert_eq!(r.done, vec![early.id()]);
    wait_until("doc-1 approved by the redriven decision", Duration::from_secs(30), || transitions_to(&bootstrap, "doc-1", "approved") == 1);
    let again = ops::redrive(&bootstrap, &dlq_topic, &Filter { include_handled: true, ..only_early.clone() }, None, 0).unwrap();
    assert_eq!((again.done.len(), again.skipped.len()), (0, 1), "a second redrive publishes nothing");
    let redriven: Vec<_> = read_to_end(&bootstrap, "document-approval.decision-results", Duration::from_secs(10)).unwrap();
    assert_eq!(redriven.len(), 2, "the original and one redriven copy");
    assert_eq!(redriven.iter().filter(|m| m.header(ops::REDRIVEN_FROM) == Some(&format!("{dlq_topic}:{}", early.id()))).count(), 1);
    assert!(redriven.iter().all(|m| m.header(dlq::ERROR_CLASS).is_none()), "error headers are not carried back");

    // Handled dead letters leave the default listing; --all shows what was done.
    let open = ops::list(&bootstrap, &dlq_topic, &Filter::default()).unwrap();
    assert_eq!(open.iter().map(|d| d.key_text()).collect::<Vec<_>>(), vec!["doc-2"]);

    // The CLI: list, show (value decoded), purge needs --yes without a terminal.
    let cfg = dir.path().join("app.toml");
    std::fs::write(&cfg, format!("application.id = \"{}\"\nbootstrap.servers = \"{bootstrap}\"\n", config.application_id)).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keyflow")).args(args).arg("--config").arg(&cfg).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = cli(&["dlq", "list", "--all"]);
    assert!(ok, "{err}");
    assert!(out.contains("redriven") && out.contains("doc-2") && out.contains("deserialization"), "{out}");
    let (ok, out, err) = cli(&["dlq", "show", &early.id()]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["value"]["outcome"]["route"], "auto-approve");
    assert_eq!(shown["handled"]["action"], "redriven");
    let (ok, _, err) = cli(&["dlq", "purge", "--key", "doc-2"]);
    assert!(!ok && err.contains("needs confirmation: pass --yes"), "{err}");
    let (ok, out, err) = cli(&["dlq", "purge", "--key", "doc-2", "--yes"]);
    assert!(ok && out.contains("purged 1"), "{out}{err}");
    assert!(ops::list(&bootstrap, &dlq_topic, &Filter::default()).unwrap().is_empty());
    assert_eq!(ops::list(&bootstrap, &dlq_topic, &Filter { include_handled: true, ..Filter::default() }).unwrap().len(), 2);

    instance.stop();
    instance.join().unwrap();
    assert_eq!(transitions_to(&bootstrap, "doc-1", "approved"), 1, "processed once");
}

/// Two operators redrive the same letters at once (the CLI and a console): each letter is
/// published once. Both use one transactional id, so the second fences the first before it reads
/// which letters are handled. `<dlq>.handled` is created compacted with the other internal topics.
#[test]
fn two_redrives_at_once_publish_each_letter_once() {
    let kafka = common::kafka_broker::shared();
    let bootstrap = kafka.bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut config = keyflow::config::Config::for_application(&common::unique("redrives"), &bootstrap, dir.path());
    config.replication_factor = 1;
    let topology = keyflow::builtin::status_tracker::topology(&common::unique("in"), &common::unique("out"), 1000);
    kafka::AdminProvisioner::new(&config).unwrap().ensure(&kafka::internal_topics(&config, &topology, 1)).unwrap();
    let (dlq_topic, target) = (config.dlq_topic(), common::unique("target"));
    common::create_topics(&bootstrap, &[TopicSpec { name: target.clone(), partitions: 1, compacted: false }], &[]);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let handled = ops::handled_topic(&dlq_topic);
    let described = rt
        .block_on(admin.describe_configs([&rdkafka::admin::ResourceSpecifier::Topic(&handled)], &rdkafka::admin::AdminOptions::new()))
        .unwrap();
    let policy = described.into_iter().next().unwrap().unwrap().get("cleanup.policy").and_then(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"), "{handled} is created compacted");

    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let letters = 200;
    for i in 0..letters {
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header { key: dlq::SOURCE_TOPIC, value: Some(target.as_str()) })
            .insert(rdkafka::message::Header { key: dlq::ERROR_CLASS, value: Some("processing") });
        let key = format!("doc-{i}");
        kafka::send_waiting(&producer, BaseRecord::to(&dlq_topic).key(&key).payload("{}").headers(headers)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (bootstrap, dlq_topic) = (bootstrap.clone(), dlq_topic.clone());
            std::thread::spawn(move || ops::redrive(&bootstrap, &dlq_topic, &Filter::default(), None, 0))
        })
        .collect();
    let results: Vec<_> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let done: usize = results.iter().filter_map(|r| r.as_ref().ok()).map(|h| h.done.len()).sum();
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.to_string().contains("run again"), "a redrive that lost says so: {r}");
    }
    let published = read_to_end(&bootstrap, &target, Duration::from_secs(10)).unwrap();
    assert_eq!(published.len(), letters, "each letter published once ({done} reported redriven)");
    assert_eq!(done, letters);
    let again = ops::redrive(&bootstrap, &dlq_topic, &Filter::default(), None, 0).unwrap();
    assert!(again.done.is_empty() && again.skipped.len() == letters, "a third redrive finds them all handled");
}
