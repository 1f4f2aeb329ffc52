//! The world around the workflow in the demo: Alfresco uploads, the virus scanner and the
//! classifier (one service answering `document-services.commands`), and reviewers completing
//! embedded tasks. Every choice is a function of the document's number, so the outcome of each
//! document is known in advance and the summary can be checked.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Map, Value};

use crate::connectors::embedded;
use crate::kafka::{self, QuietEof};

pub const UPLOADS: &str = "alfresco.node-events";
pub const SERVICE_COMMANDS: &str = "document-services.commands";
pub const SERVICE_RESULTS: &str = "document-services.results";

/// What happens to document `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fate {
    pub virus: bool,
    pub class: &'static str,
    pub size: i64,
    /// Only for documents a person reviews.
    pub reviewer_approves: bool,
    /// The reviewer waits past the escalation.
    pub slow: bool,
}

pub fn fate(i: usize) -> Fate {
    let class = match i % 10 {
        0..=4 => "invoice",
        5..=7 => "contract",
        8 => "spam",
        _ => "invoice",
    };
    // Every tenth document is a large invoice: the routing rules send it to a person.
    let size = if i % 10 == 9 { 20_000_000 } else { 50_000 + (i as i64 % 1000) };
    Fate { virus: i % 25 == 3, class, size, reviewer_approves: !i.is_multiple_of(3), slow: i % 4 == 1 }
}

/// Whether document `i` goes to a person (the routing rules say `manual`).
pub fn needs_review(i: usize) -> bool {
    let f = fate(i);
    !f.virus && f.class != "spam" && !(f.class == "invoice" && f.size < 10_000_000)
}

/// The final state document `i` must reach, by the workflow's rules and the routing rules.
pub fn expected_final(i: usize) -> &'static str {
    let f = fate(i);
    match (f.virus, f.class) {
        (true, _) => "quarantined",
        (false, "spam") => "rejected",
        _ if !needs_review(i) => "approved",
        _ if f.reviewer_approves => "approved",
        _ => "rejected",
    }
}

pub fn doc_id(i: usize) -> String {
    format!("doc-{i:05}")
}

fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix("doc-")?.parse().ok()
}

/// Alfresco's event for document `i` (CloudEvents JSON, as its event gateway publishes it), and
/// every `broken_every`-th one also a malformed copy (which the workflow dead-letters).
pub fn upload(producer: &BaseProducer, i: usize, now: i64, broken_every: usize) -> anyhow::Result<usize> {
    let f = fate(i);
    let id = doc_id(i);
    let event = json!({"specversion": "1.0", "type": "org.alfresco.event.node.Created", "id": format!("ev-{id}"), "source": "/demo-repository", "time": now,
        "data": {"resource": {"id": id, "nodeType": "cm:content", "name": format!("{}-{i}.pdf", f.class), "isFile": true,
                 "content": {"mimeType": "application/pdf", "sizeInBytes": f.size}, "createdByUser": {"id": format!("user-{}", i % 7)}}}});
    kafka::send_waiting(producer, BaseRecord::to(UPLOADS).key(&id).payload(&event.to_string()).timestamp(now))?;
    if broken_every > 0 && i % broken_every == broken_every - 1 {
        kafka::send_waiting(producer, BaseRecord::to(UPLOADS).key(&id).payload("{\"type\": oops").timestamp(now))?;
        return Ok(2);
    }
    Ok(1)
}

/// Keyed records must land where keyflow's own producers put the same key: Java's partitioner
/// (murmur2), not librdkafka's default (CRC32). Otherwise an instance's events split across tasks.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("partitioner", "murmur2_random");
    c
}

fn consumer(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<BaseConsumer<QuietEof>> {
    let c: BaseConsumer<QuietEof> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "20")
        .create_with_context(QuietEof)?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// The virus scanner and the classifier, until `stop`.
pub fn services(bootstrap: String, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let c = consumer(&bootstrap, "demo-document-services", SERVICE_COMMANDS)?;
    let p: BaseProducer = producer_config(&bootstrap).set("linger.ms", "5").create()?;
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
            p.poll(Duration::ZERO);
            continue;
        };
        let Ok(cmd) = serde_json::from_slice::<Value>(m.payload().unwrap_or_default()) else { continue };
        let node = cmd["nodeId"].as_str().unwrap_or_default();
        let Some(i) = index_of(node) else { continue };
        let f = fate(i);
        let id = format!("{}:result", cmd["idempotencyKey"].as_str().unwrap_or_default());
        let result = match cmd["service"].as_str() {
            Some("virus-scan") if f.virus => json!({"id": id, "service": "virus-scan", "status": "INFECTED", "error": "virus_found"}),
            Some("virus-scan") => json!({"id": id, "service": "virus-scan", "status": "OK"}),
            Some("classification") => json!({"id": id, "service": "classification", "status": "OK", "result": {"class": f.class}}),
            _ => continue,
        };
        kafka::send_waiting(&p, BaseRecord::to(SERVICE_RESULTS).key(node).payload(&result.to_string()))?;
    }
    p.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Reviewers working through embedded tasks, until `stop`. A slow reviewer leaves a task until
/// `slow_after` has passed since it appeared, so the workflow escalates it first.
pub fn reviewers(bootstrap: String, topic: String, slow_after: Duration, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let c = consumer(&bootstrap, "demo-reviewers", &topic)?;
    let p: BaseProducer = producer_config(&bootstrap).set("transactional.id", "demo-reviewers").create()?;
    p.init_transactions(Duration::from_secs(30))?;
    // Tasks seen and not yet completed, by task id: (seen at, task).
    let mut waiting: BTreeMap<String, (Instant, Value)> = BTreeMap::new();
    let mut done: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        // Take in everything available, then act on it.
        let mut wait = Duration::from_millis(50);
        while let Some(Ok(m)) = c.poll(wait) {
            wait = Duration::ZERO;
            if let Ok(task) = serde_json::from_slice::<Value>(m.payload().unwrap_or_default()) {
                let id = task["taskId"].as_str().unwrap_or_default().to_owned();
                if task["state"] == "CREATED" && !done.contains(&id) {
                    waiting.entry(id).or_insert((Instant::now(), task));
                }
            }
        }
        let ready: Vec<String> = waiting
            .iter()
            .filter(|(_, (seen, task))| {
                let slow = task["instanceId"].as_str().and_then(index_of).is_some_and(|i| fate(i).slow);
                !slow || seen.elapsed() >= slow_after
            })
            .map(|(id, _)| id.clone())
            .collect();
        // One transaction for everything ready: a commit costs a flush, and a reviewer per
        // transaction would fall behind the workflow.
        let batch: Vec<(Value, Map<String, Value>)> = ready
            .iter()
            .map(|id| {
                let (_, task) = waiting.remove(id).expect("listed");
                let approves = task["instanceId"].as_str().and_then(index_of).is_some_and(|i| fate(i).reviewer_approves);
                (task, Map::from_iter([("approved".to_owned(), json!(approves.to_string()))]))
            })
            .collect();
        if !batch.is_empty() {
            let now = crate::runtime::now_ms();
            embedded::complete_with(&p, &topic, &batch, "reviewer", now)?;
            done.extend(ready);
        }
    }
    Ok(())
}
