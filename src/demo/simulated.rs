//! The world around the workflow in the demo: the Alfresco repository (uploads, new versions,
//! metadata edits, deletions, and a `node.Updated` for every write-back, as Alfresco emits
//! them), the virus scanner and the classifier (one service answering
//! `document-services.commands`), and reviewers completing embedded tasks. Every choice is a
//! function of the document's number, so the outcome of each document is known in advance and
//! the summary can be checked.

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
pub const DOCUMENT_UPDATES: &str = "document-approval.document-updates";
pub const TRANSITIONS: &str = "document-approval.transitions";

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
    /// Version 1.1 is uploaded after the review of 1.0 ended: reviewed again in run 2.
    pub revised_after: bool,
    /// Version 1.1 is uploaded while 1.0 waits for its reviewer: run 1 is superseded, its task
    /// withdrawn, and 1.1 reviewed in run 2.
    pub revised_in_review: bool,
    /// Deleted while it waits for its reviewer: the review is withdrawn.
    pub deleted: bool,
    /// Someone edits its title right after the upload (a metadata edit: not the workflow's
    /// business).
    pub edited: bool,
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
    let f = Fate {
        virus: i % 25 == 3,
        class,
        size,
        reviewer_approves: !i.is_multiple_of(3),
        slow: i % 4 == 1,
        revised_after: i % 13 == 2,
        revised_in_review: false,
        deleted: false,
        edited: i % 11 == 4,
    };
    let reviewed = !f.virus && f.class != "spam" && !(f.class == "invoice" && f.size < 10_000_000);
    let revised_in_review = reviewed && i % 13 == 7;
    let deleted = reviewed && !revised_in_review && i % 17 == 11;
    // A deleted document gets no new version.
    Fate { revised_in_review, deleted, revised_after: f.revised_after && !deleted, ..f }
}

/// The runs document `i` goes through.
pub fn runs(i: usize) -> u32 {
    let f = fate(i);
    if f.revised_after || f.revised_in_review {
        2
    } else {
        1
    }
}

/// Whether document `i` goes to a person (the routing rules say `manual`).
pub fn needs_review(i: usize) -> bool {
    let f = fate(i);
    !f.virus && f.class != "spam" && !(f.class == "invoice" && f.size < 10_000_000)
}

/// The final state document `i` must reach, by the workflow's rules and the routing rules.
pub fn expected_final(i: usize) -> &'static str {
    let f = fate(i);
    if f.deleted {
        return "deleted";
    }
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

pub fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix("doc-")?.parse().ok()
}

/// Alfresco's event of `kind` (`Created`, `Updated`, `Deleted`) for document `i` at `version`
/// (CloudEvents JSON, as its event gateway publishes it); `before` is the "before" image of an
/// update: only the attributes that changed.
fn node_event(i: usize, kind: &str, id: String, version: &str, before: Option<Value>, now: i64) -> Value {
    let f = fate(i);
    let mut e = json!({"specversion": "1.0", "type": format!("org.alfresco.event.node.{kind}"), "id": id, "source": "/demo-repository", "time": now,
        "data": {"resource": {"id": doc_id(i), "nodeType": "cm:content", "name": format!("{}-{i}.pdf", f.class), "isFile": true, "isFolder": false,
                 "content": {"mimeType": "application/pdf", "sizeInBytes": f.size}, "properties": {"cm:versionLabel": version},
                 "aspectNames": ["cm:versionable"], "createdByUser": {"id": format!("user-{}", i % 7)}, "modifiedByUser": {"id": format!("user-{}", i % 5)}}}});
    if let Some(b) = before {
        e["data"]["resourceBefore"] = b;
    }
    e
}

fn send_event(producer: &BaseProducer, i: usize, event: &Value, now: i64) -> anyhow::Result<()> {
    kafka::send_waiting(producer, BaseRecord::to(UPLOADS).key(&doc_id(i)).payload(&event.to_string()).timestamp(now))?;
    Ok(())
}

/// Alfresco's events for the upload of document `i`: its creation, a title edit for some, and
/// every `broken_every`-th one also a malformed copy (which the workflow dead-letters). Returns
/// the events sent.
pub fn upload(producer: &BaseProducer, i: usize, now: i64, broken_every: usize) -> anyhow::Result<usize> {
    let id = doc_id(i);
    send_event(producer, i, &node_event(i, "Created", format!("ev-{id}"), "1.0", None, now), now)?;
    let mut sent = 1;
    if fate(i).edited {
        let before = json!({"@type": "NodeResource", "modifiedAt": now, "properties": {"cm:title": null}});
        send_event(producer, i, &node_event(i, "Updated", format!("ev-{id}-title"), "1.0", Some(before), now), now)?;
        sent += 1;
    }
    if broken_every > 0 && i % broken_every == broken_every - 1 {
        kafka::send_waiting(producer, BaseRecord::to(UPLOADS).key(&id).payload("{\"type\": oops").timestamp(now))?;
        sent += 1;
    }
    Ok(sent)
}

/// Version 1.1 of document `i`: new content.
fn new_version(producer: &BaseProducer, i: usize, now: i64) -> anyhow::Result<()> {
    let before = json!({"modifiedAt": now, "content": {"mimeType": "application/pdf", "sizeInBytes": fate(i).size - 1}});
    send_event(producer, i, &node_event(i, "Updated", format!("ev-{}-v1.1", doc_id(i)), "1.1", Some(before), now), now)
}

/// The rest of the repository, until `stop`: a `node.Updated` for every write-back (Alfresco
/// emits one for any property change, keyflow's own included), and version 1.1 of the
/// documents revised after their review ended. Returns the repository events it sent.
pub fn repository(bootstrap: String, stop: Arc<AtomicBool>) -> anyhow::Result<usize> {
    let c = consumer(&bootstrap, "demo-repository", &[DOCUMENT_UPDATES, TRANSITIONS])?;
    let p: BaseProducer = producer_config(&bootstrap).set("linger.ms", "5").create()?;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
            p.poll(Duration::ZERO);
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(m.payload().unwrap_or_default()) else { continue };
        let Some(i) = v["instanceId"].as_str().and_then(index_of) else { continue };
        let now = crate::runtime::now_ms();
        if m.topic() == DOCUMENT_UPDATES {
            let before = json!({"@type": "NodeResource", "modifiedAt": now, "properties": v["properties"].as_object().map(|p| p.keys().map(|k| (k.clone(), Value::Null)).collect::<Map<_, _>>())});
            let id = format!("ev-{}-written-{}", doc_id(i), v["idempotencyKey"].as_str().unwrap_or_default());
            let version = v["version"].as_str().unwrap_or("1.0");
            send_event(&p, i, &node_event(i, "Updated", id, version, Some(before), now), now)?;
            sent += 1;
        } else if v["final"] == true && v["superseded"] != true && v["run"] == 1 && fate(i).revised_after {
            new_version(&p, i, now)?;
            sent += 1;
        }
    }
    p.flush(Duration::from_secs(10))?;
    Ok(sent)
}

/// Keyed records must land where keyflow's own producers put the same key: Java's partitioner
/// (murmur2), not librdkafka's default (CRC32). Otherwise an instance's events split across tasks.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("partitioner", "murmur2_random");
    c
}

fn consumer(bootstrap: &str, group: &str, topics: &[&str]) -> anyhow::Result<BaseConsumer<QuietEof>> {
    let c: BaseConsumer<QuietEof> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "20")
        .create_with_context(QuietEof)?;
    c.subscribe(topics)?;
    Ok(c)
}

/// The virus scanner and the classifier, until `stop`.
pub fn services(bootstrap: String, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let c = consumer(&bootstrap, "demo-document-services", &[SERVICE_COMMANDS])?;
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
        let mut result = match cmd["service"].as_str() {
            Some("virus-scan") if f.virus => json!({"id": id, "service": "virus-scan", "status": "INFECTED", "error": "virus_found"}),
            Some("virus-scan") => json!({"id": id, "service": "virus-scan", "status": "OK"}),
            Some("classification") => json!({"id": id, "service": "classification", "status": "OK", "result": {"class": f.class}}),
            _ => continue,
        };
        // The run the command was of, as keyflow asks of the services it talks to.
        result["run"] = cmd["run"].clone();
        kafka::send_waiting(&p, BaseRecord::to(SERVICE_RESULTS).key(node).payload(&result.to_string()))?;
    }
    p.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Reviewers working through embedded tasks, until `stop`. A slow reviewer leaves a task until
/// `slow_after` has passed since it appeared, so the workflow escalates it first. Some documents
/// change while they wait for their reviewer: a new version is uploaded, or the document is
/// deleted (both withdraw the task). Returns the repository events that sent.
pub fn reviewers(bootstrap: String, topic: String, slow_after: Duration, stop: Arc<AtomicBool>) -> anyhow::Result<usize> {
    let c = consumer(&bootstrap, "demo-reviewers", &[&topic])?;
    let p: BaseProducer = producer_config(&bootstrap).set("transactional.id", "demo-reviewers").create()?;
    let repository: BaseProducer = producer_config(&bootstrap).create()?;
    let mut sent = 0;
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
                let doc = task["instanceId"].as_str().and_then(index_of);
                match (task["state"].as_str(), doc.map(fate)) {
                    // The repository acts before the reviewer of run 1 does.
                    (Some("CREATED"), Some(f)) if task["run"] == 1 && (f.revised_in_review || f.deleted) && done.insert(id.clone()) => {
                        let (i, now) = (doc.expect("matched"), crate::runtime::now_ms());
                        if f.deleted {
                            let event = node_event(i, "Deleted", format!("ev-{}-deleted", doc_id(i)), "1.0", None, now);
                            send_event(&repository, i, &event, now)?;
                        } else {
                            new_version(&repository, i, now)?;
                        }
                        sent += 1;
                    }
                    (Some("CREATED"), _) if !done.contains(&id) => {
                        waiting.entry(id).or_insert((Instant::now(), task));
                    }
                    (Some("WITHDRAWN"), _) => {
                        waiting.remove(&id);
                    }
                    _ => {}
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
    repository.flush(Duration::from_secs(10))?;
    Ok(sent)
}
