//! Records as they flow through a topology, and the metadata of the input that caused them.

use serde_json::Value;

/// Marks a control record: a command to keyflow itself (a workflow migration, see
/// `workflow::migration`) written into an input topic, in order with the events of its key. Its
/// value is JSON whatever the topic's format. keyflow writes it only into a workflow's inputs; a
/// workflow drops a control record addressed to another workflow.
pub const CONTROL_HEADER: &str = "keyflow.control";

/// Record headers, in order; a header name may repeat (as in Kafka).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header, keeping any earlier header of the same name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push((name.into(), value.into()));
    }

    /// The last value of the header `name`, the one a reader should believe.
    pub fn last(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The last value of `name` as UTF-8, if it is.
    pub fn last_str(&self, name: &str) -> Option<&str> {
        self.last(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A decoded record inside a topology. Keys and values are dynamic values: the source's serde
/// produced them and the sink's serde writes them back.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: Value,
    pub value: Value,
    /// Milliseconds since the Unix epoch (the record's event time).
    pub timestamp: i64,
    pub headers: Headers,
}

impl Record {
    pub fn new(key: impl Into<Value>, value: impl Into<Value>, timestamp: i64) -> Self {
        Self { key: key.into(), value: value.into(), timestamp, headers: Headers::new() }
    }

    /// The key as a string: a string key as it is, any other key as its JSON text.
    /// This is the form state stores and timers are keyed by.
    pub fn key_string(&self) -> String {
        key_string(&self.key)
    }
}

pub(crate) fn key_string(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where the record being processed came from. Timers have no source offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// `None` while a timer fires.
    pub offset: Option<i64>,
    pub timestamp: i64,
}

/// A raw record read from a source topic, before its serdes ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Headers,
}

/// A raw record on its way out, produced through the record collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: String,
    /// `None` lets the producer's partitioner choose from the key.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Headers,
}
