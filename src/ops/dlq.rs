//! Dead-letter inspection and redrive: what `keyflow dlq list|show|redrive|purge` do.
//!
//! Kafka cannot delete one record, so handling a dead letter is recorded, not destructive: every
//! redrive or purge writes a marker to `<dlq>.handled` (compacted, key `<partition>:<offset>`),
//! and `list` hides handled dead letters unless asked. The records themselves leave with the DLQ
//! topic's retention.
//!
//! A redrive is exactly-once: the re-published records and their markers commit in one Kafka
//! transaction, and records already marked are never re-published, so running the same redrive
//! twice (or after a crash) publishes each record once.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Value};

use crate::dlq;
use crate::kafka::read::{read_to_end, Message};
use crate::kafka::Clients;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Header on a redriven record: where it came from (`<dlq>:<partition>:<offset>`).
pub const REDRIVEN_FROM: &str = "keyflow.redriven.from";

/// The marker topic of a DLQ.
pub fn handled_topic(dlq_topic: &str) -> String {
    format!("{dlq_topic}.handled")
}

/// Which dead letters a command acts on. Empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub class: Option<String>,
    pub source_topic: Option<String>,
    pub key: Option<String>,
    /// Dead-lettered at or after, ms since the epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// `<partition>:<offset>` positions; empty = any.
    pub ids: Vec<String>,
    /// Include dead letters already redriven or purged.
    pub include_handled: bool,
}

/// A filter's time bound: RFC 3339, or ms since the epoch (the CLI's and the console's).
///
/// # Errors
/// Neither.
pub fn parse_time(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .or_else(|_| s.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()))
        .map_err(|_| format!("`{s}` is neither RFC 3339 nor ms since the epoch"))
}

/// One dead letter, with what has been done about it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub message: Message,
    pub handled: Option<Value>,
}

impl DeadLetter {
    /// `<partition>:<offset>` in the DLQ.
    pub fn id(&self) -> String {
        format!("{}:{}", self.message.partition, self.message.offset)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message.header(name)
    }
    pub fn key_text(&self) -> String {
        self.message.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default()
    }
    /// When it was dead-lettered (the error timestamp header, else the record's).
    pub fn at(&self) -> i64 {
        self.header(dlq::TIMESTAMP).and_then(|t| t.parse().ok()).unwrap_or(self.message.timestamp)
    }

    fn matches(&self, f: &Filter) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
        (f.include_handled || self.handled.is_none())
            && eq(&f.class, self.header(dlq::ERROR_CLASS))
            && eq(&f.source_topic, self.header(dlq::SOURCE_TOPIC))
            && f.key.as_deref().is_none_or(|k| self.key_text() == k)
            && f.since.is_none_or(|s| self.at() >= s)
            && f.until.is_none_or(|u| self.at() < u)
            && (f.ids.is_empty() || f.ids.contains(&self.id()))
    }

    /// A summary for listings and `--json`.
    pub fn to_json(&self) -> Value {
        let h = |n: &str| self.header(n).map_or(Value::Null, |v| json!(v));
        json!({"id": self.id(), "at": self.at(), "key": self.key_text(), "class": h(dlq::ERROR_CLASS), "message": h(dlq::ERROR_MESSAGE),
               "stage": h(dlq::STAGE), "source": {"topic": h(dlq::SOURCE_TOPIC), "partition": h(dlq::SOURCE_PARTITION), "offset": h(dlq::SOURCE_OFFSET)},
               "attempts": h(dlq::ATTEMPTS), "version": h(dlq::VERSION), "handled": self.handled.clone().unwrap_or(Value::Null)})
    }
}

/// The dead letters of `dlq_topic` that `filter` selects, oldest first per partition.
///
/// # Errors
/// The cluster cannot be read.
pub fn list(kafka: impl Into<Clients>, dlq_topic: &str, filter: &Filter) -> Result<Vec<DeadLetter>, rdkafka::error::KafkaError> {
    let kafka: Clients = kafka.into();
    let mut handled: BTreeMap<String, Value> = BTreeMap::new();
    for m in read_to_end(&kafka, &handled_topic(dlq_topic), TIMEOUT)? {
        if let (Some(k), Some(v)) = (m.key, m.value) {
            if let Ok(v) = serde_json::from_slice(&v) {
                handled.insert(String::from_utf8_lossy(&k).into_owned(), v);
            }
        }
    }
    Ok(read_to_end(&kafka, dlq_topic, TIMEOUT)?
        .into_iter()
        .map(|message| {
            let id = format!("{}:{}", message.partition, message.offset);
            DeadLetter { handled: handled.get(&id).cloned(), message }
        })
        .filter(|d| d.matches(filter))
        .collect())
}

/// What a redrive or purge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub done: Vec<String>,
    /// Already handled before, left alone.
    pub skipped: Vec<String>,
}

/// Re-publishes the selected dead letters to their source topic (or `to`), original key, value
/// and headers (the error headers dropped, `keyflow.redriven.from` added), and marks them, in one
/// transaction. Dead letters already handled are skipped even if the filter includes them.
///
/// # Errors
/// The cluster cannot be read, a dead letter has no source topic and no `to` was given, or the
/// transaction failed (then nothing was published or marked).
pub fn redrive(kafka: impl Into<Clients>, dlq_topic: &str, filter: &Filter, to: Option<&str>, now: i64) -> anyhow::Result<Handled> {
    act(&kafka.into(), dlq_topic, filter, &|d| {
        let target = to.map(str::to_owned).or_else(|| d.header(dlq::SOURCE_TOPIC).map(str::to_owned));
        let target = target.ok_or_else(|| anyhow::anyhow!("dead letter {} has no source topic (a failed timer?): pass --to", d.id()))?;
        if [dlq::VALUE_SIZE, dlq::KEY_SIZE, dlq::HEADERS_DROPPED].iter().any(|h| d.header(h).is_some()) {
            // Its value, key or headers were cut to fit the dead-letter topic: republishing it
            // would publish a different record. The original is where the letter says.
            anyhow::bail!(
                "dead letter {} was cut to fit the dead-letter topic (value sha256 {}); its original is at {}[{}]@{}: \
                 redrive it from there, or leave this one out (--key, --class, --since)",
                d.id(),
                d.header(dlq::VALUE_SHA256).unwrap_or("not cut"),
                d.header(dlq::SOURCE_TOPIC).unwrap_or("?"),
                d.header(dlq::SOURCE_PARTITION).unwrap_or("?"),
                d.header(dlq::SOURCE_OFFSET).unwrap_or("?"),
            );
        }
        Ok((json!({"action": "redriven", "to": target, "at": now}), Some(target)))
    })
}

/// Marks the selected dead letters as purged: `list` no longer shows them and `redrive` never
/// publishes them.
///
/// # Errors
/// As [`redrive`].
pub fn purge(kafka: impl Into<Clients>, dlq_topic: &str, filter: &Filter, now: i64) -> anyhow::Result<Handled> {
    act(&kafka.into(), dlq_topic, filter, &|_| Ok((json!({"action": "purged", "at": now}), None)))
}

type Decide<'a> = dyn Fn(&DeadLetter) -> anyhow::Result<(Value, Option<String>)> + 'a;

/// Redrives or purges in one transaction, exactly once across operators: every operator (the
/// CLI, any console) uses the same transactional id, so `init_transactions` first fences any other
/// redrive still running and has the broker finish or abort its transaction; only then are the
/// handled markers read (`read_committed`), so a letter another operator handled is skipped, and
/// one whose redrive was aborted is not.
fn act(kafka: &Clients, dlq_topic: &str, filter: &Filter, decide: &Decide<'_>) -> anyhow::Result<Handled> {
    let producer: BaseProducer = kafka.transactional_producer(&format!("keyflow-dlq-{dlq_topic}")).create()?;
    producer.init_transactions(TIMEOUT)?;
    let all = list(kafka, dlq_topic, &Filter { include_handled: true, ..filter.clone() })?;
    let mut result = Handled::default();
    let mut work = Vec::new();
    for d in all {
        if d.handled.is_some() {
            result.skipped.push(d.id());
        } else {
            let (marker, publish) = decide(&d)?;
            work.push((d, marker, publish));
        }
    }
    if work.is_empty() {
        return Ok(result);
    }
    producer.begin_transaction()?;
    let handled = handled_topic(dlq_topic);
    let sent: Result<(), rdkafka::error::KafkaError> = work.iter().try_for_each(|(d, marker, publish)| {
        if let Some(target) = publish {
            let from = format!("{dlq_topic}:{}", d.id());
            let mut headers = OwnedHeaders::new();
            for (name, value) in d.message.headers.iter().filter(|(n, _)| !n.starts_with("keyflow.dlq.")) {
                headers = headers.insert(Header { key: name, value: Some(value) });
            }
            headers = headers.insert(Header { key: REDRIVEN_FROM, value: Some(from.as_bytes()) });
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(target).headers(headers);
            if let Some(k) = d.message.key.as_deref() {
                record = record.key(k);
            }
            if let Some(v) = d.message.value.as_deref() {
                record = record.payload(v);
            }
            crate::kafka::send_waiting(&producer, record)?;
        }
        let id = d.id();
        let marker = marker.to_string();
        crate::kafka::send_waiting(&producer, BaseRecord::to(&handled).key(id.as_str()).payload(marker.as_str()))
    });
    if let Err(e) = sent.and_then(|()| producer.commit_transaction(TIMEOUT)) {
        let _ = producer.abort_transaction(TIMEOUT);
        return Err(anyhow::anyhow!(
            "nothing was redriven or marked: {e} (a redrive or purge of this topic started elsewhere meanwhile takes over: run again to see what is left)"
        ));
    }
    result.done = work.into_iter().map(|(d, ..)| d.id()).collect();
    Ok(result)
}

/// The dead letter's value as JSON: Confluent-framed Avro decoded through the registry, JSON as
/// it is, anything else as text.
///
/// # Errors
/// The registry settings are invalid.
pub fn decode_value(registry: Option<crate::serde::RegistryConfig>, d: &DeadLetter) -> anyhow::Result<Value> {
    let Some(bytes) = d.message.value.as_deref() else { return Ok(Value::Null) };
    if bytes.first() == Some(&0) && bytes.len() > 5 {
        if let Some(r) = registry {
            let registry = crate::serde::Registry::new(&r)?;
            let serde = crate::serde::AvroSerde::new(registry, None, crate::serde::SubjectStrategy::TopicName);
            return Ok(serde.deserialize(bytes).unwrap_or_else(|e| Value::String(format!("<Avro that does not decode: {e}>"))));
        }
    }
    Ok(serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())))
}

/// One dead letter in full: the summary, every header, the decoded value.
///
/// # Errors
/// As [`decode_value`].
pub fn detail(registry: Option<crate::serde::RegistryConfig>, d: &DeadLetter) -> anyhow::Result<Value> {
    let mut v = d.to_json();
    v["headers"] = d
        .message
        .headers
        .iter()
        .map(|(k, v)| (k.to_owned(), Value::String(String::from_utf8_lossy(v).into_owned())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    v["value"] = decode_value(registry, d)?;
    Ok(v)
}
