//! Embedded human tasks: without Camunda, a task is a record on a Kafka topic
//! (`<workflow>.human-tasks`, keyed by task id; the newest record of a key is the task's state),
//! and a person acts on it with `keyflow tasks list` and `keyflow tasks complete`.
//!
//! Completing is one Kafka transaction: the `task.completed` event for the workflow and the
//! task's `COMPLETED` record commit together or not at all. The event id is the task's
//! idempotency key + `:completed`, so even two people completing the same task at once move the
//! workflow once.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Map, Value};

use crate::kafka::read::read_to_end;
use crate::kafka::Clients;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The id of the task a command opens: its idempotency key made readable (`kf-` + the key with
/// anything but letters, digits and `-` as `_`), hashed past 64 characters so that the same
/// command always names the same task.
pub fn task_id(idempotency_key: &str) -> String {
    let clean: String = idempotency_key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let id = format!("kf-{clean}");
    if id.len() <= 64 {
        return id;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = idempotency_key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("kf-{}-{hash:016x}", &clean[..40])
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("no task `{0}` on the task topic")]
    Unknown(String),
    #[error("task `{id}` is already {state}")]
    NotOpen { id: String, state: String },
    #[error("task `{id}` was withdrawn ({reason}): its workflow no longer waits for it, so it cannot be completed")]
    Withdrawn { id: String, reason: String },
    #[error("task `{0}` names no result topic; it was not written by keyflow's connectors")]
    NoResultTopic(String),
}

/// Every task on `topic`, newest state per task id, oldest first.
///
/// # Errors
/// [`Error::Kafka`].
pub fn tasks(kafka: impl Into<Clients>, topic: &str) -> Result<Vec<Value>, Error> {
    let mut latest: BTreeMap<Vec<u8>, (i64, Value)> = BTreeMap::new();
    for m in read_to_end(kafka.into(), topic, TIMEOUT)? {
        let (Some(key), Some(value)) = (m.key, m.value) else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&value) else {
            tracing::warn!(topic, partition = m.partition, offset = m.offset, "skipping a task record that is not JSON");
            continue;
        };
        latest.insert(key, (v.get("createdAt").and_then(Value::as_i64).unwrap_or(m.timestamp), v));
    }
    let mut all: Vec<(i64, Value)> = latest.into_values().collect();
    all.sort_by_key(|(at, _)| *at);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

/// Completes open task `id` as `user` with `variables`; returns the `task.completed` event sent.
///
/// # Errors
/// The task is unknown or not open, or Kafka refused the transaction.
pub fn complete(
    kafka: impl Into<Clients>,
    topic: &str,
    id: &str,
    user: &str,
    variables: Map<String, Value>,
    now: i64,
) -> Result<Value, Error> {
    let kafka: Clients = kafka.into();
    let task = tasks(&kafka, topic)?.into_iter().find(|t| t["taskId"] == id).ok_or_else(|| Error::Unknown(id.to_owned()))?;
    let producer: BaseProducer = kafka.transactional_producer(&format!("keyflow-tasks-{id}")).create()?;
    producer.init_transactions(TIMEOUT)?;
    Ok(complete_with(&producer, topic, &[(task, variables)], user, now)?.remove(0))
}

/// [`complete`] for tasks already read, all in one transaction, with a transactional producer
/// already initialised (a reviewer working through many tasks). Returns the events sent.
///
/// # Errors
/// As [`complete`]; on an error nothing of the batch is visible.
pub fn complete_with(
    producer: &BaseProducer,
    topic: &str,
    tasks: &[(Value, Map<String, Value>)],
    user: &str,
    now: i64,
) -> Result<Vec<Value>, Error> {
    let mut records = Vec::new();
    for (task, variables) in tasks {
        let id = task["taskId"].as_str().unwrap_or_default();
        let state = task["state"].as_str().unwrap_or_default();
        if state == "WITHDRAWN" {
            let reason = task["reason"].as_str().unwrap_or("no reason given").to_owned();
            return Err(Error::Withdrawn { id: id.to_owned(), reason });
        }
        if state != "CREATED" {
            return Err(Error::NotOpen { id: id.to_owned(), state: state.to_lowercase() });
        }
        let results = task["resultTopic"].as_str().ok_or_else(|| Error::NoResultTopic(id.to_owned()))?;
        let instance = task["instanceId"].as_str().unwrap_or_default();
        let event = json!({"id": format!("{}:completed", task["idempotencyKey"].as_str().unwrap_or(id)), "idempotencyKey": task["idempotencyKey"],
                           "run": task["run"], "taskId": id, "name": task["name"],
                           "completedBy": user, "completedAt": now, "variables": variables, "instanceId": instance});
        let mut done = task.clone();
        done["state"] = json!("COMPLETED");
        done["completedBy"] = json!(user);
        done["completedAt"] = json!(now);
        records.push((results.to_owned(), instance.to_owned(), event, id.to_owned(), done));
    }
    producer.begin_transaction()?;
    let sent = records
        .iter()
        .try_for_each(|(results, instance, event, id, done)| {
            crate::kafka::send_waiting(producer, BaseRecord::to(results).key(instance).payload(&event.to_string()))?;
            crate::kafka::send_waiting(producer, BaseRecord::to(topic).key(id).payload(&done.to_string()))
        })
        .and_then(|()| producer.commit_transaction(TIMEOUT));
    if let Err(e) = sent {
        let _ = producer.abort_transaction(TIMEOUT);
        return Err(e.into());
    }
    Ok(records.into_iter().map(|(_, _, event, _, _)| event).collect())
}
