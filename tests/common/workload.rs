//! The status-tracker workload and what a correct run of it must leave behind, with nothing but
//! rdkafka: shared by keyflow's broker tests (`tests/common`) and the real-Kafka conformance
//! suite (`tests/conformance`, which does not link keyflow).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

pub const PARTITIONS: i32 = 4;

/// Events for `docs` documents with random statuses (valid or not) and amounts, plus a few
/// malformed records; and per document the count and total the state must end with.
pub struct Workload {
    pub events: Vec<(i64, String, Vec<u8>)>,
    pub expected: BTreeMap<String, (u64, f64)>,
    pub malformed: usize,
}

pub fn workload(docs: usize, events: usize, seed: u64) -> Workload {
    let mut rng = SmallRng::seed_from_u64(seed);
    let statuses = ["uploaded", "scanned", "classified", "approved", "rejected"];
    let mut w = Workload { events: Vec::new(), expected: BTreeMap::new(), malformed: 0 };
    for i in 0..events {
        let doc = format!("doc-{}", rng.random_range(0..docs));
        let ts = 1_700_000_000_000 + i as i64;
        if rng.random_ratio(1, 100) {
            w.events.push((ts, doc, b"not json".to_vec()));
            w.malformed += 1;
            continue;
        }
        let amount = rng.random_range(1..100) as f64;
        let status = statuses[rng.random_range(0..statuses.len())];
        w.events.push((ts, doc.clone(), format!(r#"{{"status":"{status}","amount":{amount}}}"#).into_bytes()));
        let e = w.expected.entry(doc).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += amount;
    }
    w
}

impl Workload {
    /// The inputs a correct run turns into exactly one output each.
    pub fn good(&self) -> usize {
        self.events.len() - self.malformed
    }
}

/// Produces `events` to `topic` with Java's partitioner (as keyflow's own producers), waiting
/// while librdkafka's queue is full.
pub fn produce(bootstrap: &str, topic: &str, events: &[(i64, String, Vec<u8>)]) {
    produce_paced(bootstrap, topic, events, None);
}

/// `produce`, at most `per_second` events a second when given: input that keeps arriving while
/// instances are killed, paused and restarted.
pub fn produce_paced(bootstrap: &str, topic: &str, events: &[(i64, String, Vec<u8>)], per_second: Option<usize>) {
    // Idempotent, and patient through a broker restart: a retried send must not write an input
    // twice (the fault suite kills brokers), and none may be dropped.
    let p: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "300000")
        // Room for the poison suite's records at the broker's 1 MiB limit.
        .set("message.max.bytes", "2000000")
        .create_with_context(Deliveries::default())
        .unwrap();
    let started = Instant::now();
    for (i, (ts, key, value)) in events.iter().enumerate() {
        if let Some(rate) = per_second.filter(|_| i % 100 == 0) {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut record = BaseRecord::to(topic).key(key.as_str()).payload(value.as_slice()).timestamp(*ts);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    p.poll(Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => panic!("produce to {topic}: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(300)).unwrap();
    let failed = p.context().failed.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(failed, 0, "{failed} inputs to {topic} were not delivered");
}

/// Counts the deliveries that failed.
#[derive(Default)]
pub struct Deliveries {
    failed: std::sync::atomic::AtomicUsize,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Every record of `topic` (partitions 0..PARTITIONS) as (key, value), read with `isolation`
/// (`read_committed` or `read_uncommitted`) from a fresh reader.
pub fn read_topic(bootstrap: &str, topic: &str, isolation: &str) -> Vec<(String, Vec<u8>)> {
    let group = format!("reader-{}-{}", std::process::id(), rand::random::<u32>());
    let client = |isolation: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", &group)
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .create()
            .unwrap()
    };
    // The log end of every partition now (read_uncommitted: the high watermark); the reader is
    // done when its position reaches it in every partition (a read_committed reader's position
    // moves past aborted records and commit markers too). Counting end-of-partition events
    // instead stops early when a partition reports its end twice.
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| client("read_uncommitted").fetch_watermarks(topic, p, Duration::from_secs(10)).map_or(0, |w| w.1))
        .collect();
    let c = client(isolation);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = |c: &BaseConsumer| {
        let pos = c.position().unwrap();
        (0..PARTITIONS).all(|p| {
            ends[p as usize] == 0 || pos.find_partition(topic, p).and_then(|e| e.offset().to_raw()).is_some_and(|o| o >= ends[p as usize])
        })
    };
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push((String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(), m.payload().unwrap_or_default().to_vec()))
            }
            _ if done(&c) => break,
            _ => {}
        }
    }
    out
}

/// Per document, the furthest state the outputs report: (count, total). Duplicated outputs do
/// not change it; a lost or doubly applied update does.
pub fn final_states_of(outputs: &[(String, Vec<u8>)]) -> BTreeMap<String, (u64, f64)> {
    let mut m: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (key, value) in outputs {
        let v: Value = serde_json::from_slice(value).unwrap();
        let Some(count) = v["count"].as_u64() else { continue }; // escalations carry no count
        let total = v["total"].as_f64().unwrap();
        let e = m.entry(key.clone()).or_insert((0, 0.0));
        if count > e.0 {
            *e = (count, total);
        }
    }
    m
}

/// Asserts that every document's state counts each of its events exactly once.
pub fn assert_exact(expected: &BTreeMap<String, (u64, f64)>, got: &BTreeMap<String, (u64, f64)>) {
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, want)| got.get(*k).map(|g| (g.0, (g.1 * 100.0).round())) != Some((want.0, (want.1 * 100.0).round())))
        .map(|(k, want)| (k, want, got.get(k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} documents have lost or doubled updates, e.g. {:?}",
        wrong.len(),
        expected.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Documents some output count 1..=n of which never appeared: an output lost.
pub fn missing_outputs(expected: &BTreeMap<String, (u64, f64)>, outputs: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut seen: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (key, value) in outputs {
        let v: Value = serde_json::from_slice(value).unwrap();
        if let Some(c) = v["count"].as_u64() {
            seen.entry(key).or_default().insert(c);
        }
    }
    expected
        .iter()
        .filter(|(k, (n, _))| seen.get(k.as_str()).map_or(0, |s| (1..=*n).filter(|c| s.contains(c)).count() as u64) != *n)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Outputs whose (document, count) appeared before: what exactly-once must never let through.
pub fn duplicated_outputs(outputs: &[(String, Vec<u8>)]) -> usize {
    let mut seen = BTreeSet::new();
    outputs
        .iter()
        .filter(|(key, value)| {
            let v: Value = serde_json::from_slice(value).unwrap();
            v["count"].as_u64().is_some_and(|c| !seen.insert((key.clone(), c)))
        })
        .count()
}
