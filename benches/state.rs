//! Restore speed, memory per key of state, and Avro encode/decode cost.
//!
//! `cargo bench --profile dev --bench state -- [--keys 100000] [--avro 100000] [--bootstrap host:port]`
//! (1M keys takes more than 20 minutes on the mock broker, which holds everything in memory; use
//! an external broker such as tansu for that)
//!
//! - Restore: the status-tracker builds state for `--keys` documents (one event each) on the
//!   in-process mock broker or the broker at `--bootstrap`; a second instance with an empty disk
//!   then restores the changelogs. Reported: records/s and MB/s (key + value bytes of the
//!   changelogs), and the process's resident memory before and after the state was built (on the
//!   mock it includes the broker, which holds every topic in memory: an upper bound for keyflow's
//!   own share; with `--bootstrap` it is keyflow's alone).
//! - Avro: `DocumentUploaded` v2 through keyflow's serde (Confluent framing, `mock://` registry),
//!   per-record encode and decode time.

mod common;

use std::time::{Duration, Instant};

use common::Run;
use keyflow::builtin::status_tracker;
use keyflow::config::Config;
use keyflow::kafka;
use keyflow::kafka::read::read_to_end;
use keyflow::runtime::{Guarantee, Instance};
use keyflow::serde::{AvroSerde, Registry, RegistryConfig, SubjectStrategy};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn restore(keys: usize, external: Option<&str>) {
    let partitions = 4;
    let run = Run::new(external, partitions, "state-bench");
    let bootstrap = run.bootstrap.clone();
    let topology = status_tracker::topology(&run.input, &run.output, 3_600_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_application(&run.app, &bootstrap, &dir.path().join("a"));
    config.processing_guarantee = Guarantee::AtLeastOnce;
    config.set_commit_interval(Duration::from_millis(1000));
    // The mock ignores LeaveGroup: the second instance waits out the first one's session.
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    println!("restore: {keys} keys, {partitions} partitions, {}", Run::broker(external));

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    for i in 0..keys {
        let value = format!(r#"{{"status":"uploaded","amount":{}}}"#, i % 100);
        kafka::send_waiting(&producer, BaseRecord::to(&run.input).key(format!("doc-{i:08}").as_str()).payload(value.as_str())).unwrap();
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    let rss_before = rss_mb();

    let a = Instance::start(config.clone(), topology.clone()).unwrap();
    let status = a.status();
    wait("state built", || status.snapshot().processed >= keys as u64);
    let c = status.snapshot().commits;
    wait("state committed", || status.snapshot().commits > c);
    let rss_built = rss_mb();
    a.stop();
    a.join().unwrap();

    let changelog = keyflow::state::changelog_topic(&run.app, "documents");
    let read_started = Instant::now();
    let records = read_to_end(&bootstrap, &changelog, Duration::from_secs(600)).unwrap();
    println!("(a plain consumer reads the {changelog} changelog in {:.2} s)", read_started.elapsed().as_secs_f64());
    let bytes: usize = records.iter().map(|m| m.key.as_ref().map_or(0, Vec::len) + m.value.as_ref().map_or(0, Vec::len)).sum();

    // A new instance, empty disk: everything comes from the changelogs.
    config.state_dir = dir.path().join("b");
    let b = Instance::start(config, topology).unwrap();
    let status = b.status();
    // From the first restored record (after the group handed the partitions over) to the end.
    wait("restore started", || status.snapshot().restored_records > 0);
    let started = Instant::now();
    wait("restored", || {
        let s = status.snapshot();
        s.assignment.len() == partitions as usize && !s.restoring && s.restored_records >= records.len() as u64
    });
    let took = started.elapsed();
    let restored = status.snapshot().restored_records;
    b.stop();
    b.join().unwrap();
    println!("state for {keys} keys: {} changelog records, {:.1} MB (keys + values)", records.len(), bytes as f64 / 1e6);
    println!(
        "restore (new instance, empty disk, from its first restored record): {restored} records (state and timer changelogs) in {:.2} s = {:.0} records/s, {:.1} MB/s of state-changelog bytes",
        took.as_secs_f64(),
        restored as f64 / took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64()
    );
    let share = if external.is_some() {
        "keyflow's own: the broker runs in another process"
    } else {
        "upper bound: includes the in-process broker's copies of the changelog and outputs"
    };
    println!(
        "resident memory: {rss_before:.0} MB with the events loaded, {rss_built:.0} MB with the state built: {:.0} MB per 1M keys ({share})",
        (rss_built - rss_before) * 1e6 / keys as f64
    );
}

fn avro(n: usize) {
    let schema = apache_avro::Schema::parse_str(include_str!("../schemas/document/DocumentUploaded.v2.avsc")).unwrap();
    let registry =
        Registry::new(&RegistryConfig { url: "mock://state-bench".into(), basic_auth_user_info: None, bearer_auth_token: None }).unwrap();
    let serde = AvroSerde::new(registry, Some(schema), SubjectStrategy::TopicName);
    let docs: Vec<_> = (0..n)
        .map(|i| json!({"eventId": format!("ev-{i}"), "nodeId": format!("node-{i}"), "name": "invoice.pdf", "mimeType": "application/pdf", "sizeBytes": 52113 + i,
                        "path": "Company Home/Sites/finance", "createdBy": "jdoe", "createdAt": 1_795_600_800_000i64 + i as i64, "contentHash": null, "aspects": ["cm:titled"]}))
        .collect();
    serde.serialize("documents", false, &docs[0]).unwrap(); // registers the schema
    let started = Instant::now();
    let encoded: Vec<Vec<u8>> = docs.iter().map(|d| serde.serialize("documents", false, d).unwrap()).collect();
    let encode = started.elapsed();
    let started = Instant::now();
    for e in &encoded {
        std::hint::black_box(serde.deserialize(e).unwrap());
    }
    let decode = started.elapsed();
    let size = encoded.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!(
        "Avro DocumentUploaded v2 ({size:.0} bytes framed): encode {:.2} µs/record, decode {:.2} µs/record ({n} records)",
        encode.as_secs_f64() * 1e6 / n as f64,
        decode.as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    avro(common::number("--avro", 100_000));
    restore(common::number("--keys", 100_000), common::arg("--bootstrap").as_deref());
}
