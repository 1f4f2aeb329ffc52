//! How large a record each topic takes. A record over its topic's limit can never be written:
//! librdkafka refuses it at `send` (the producer's `message.max.bytes`) or the broker refuses its
//! batch (the topic's `max.message.bytes`), and under exactly-once either aborts the transaction
//! of every task. Retrying such a record only fails again, so the task checks every output and
//! every state write of a record against these limits *before* the record's effects are kept,
//! and refuses the record as a dead letter instead (Kafka Streams' `ProductionExceptionHandler`
//! answering CONTINUE for `RecordTooLargeException`, with the failure on the record).

use std::collections::BTreeMap;

use crate::record::{Headers, OutputRecord};

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_BYTES: usize = 1_000_000;

/// What a record costs on the wire beyond its key, value and headers: the v2 record batch header
/// (61 bytes) and the record's own varints, with room to spare. librdkafka counts the same
/// overhead before it compares with `message.max.bytes`.
const RECORD_OVERHEAD: usize = 128;
/// Per header: its varint lengths.
const HEADER_OVERHEAD: usize = 10;

/// The largest record, in bytes, each topic takes: the producer's `message.max.bytes`, lowered
/// per topic to the topic's `max.message.bytes` where the broker said it is smaller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    default: usize,
    topics: BTreeMap<String, usize>,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl RecordLimits {
    /// Every topic takes records of up to `producer_max_bytes` (`message.max.bytes`).
    pub fn new(producer_max_bytes: usize) -> Self {
        Self { default: producer_max_bytes, topics: BTreeMap::new() }
    }

    /// `topic` takes records up to `max_bytes` (its `max.message.bytes`), if that is smaller.
    pub fn with_topic(mut self, topic: &str, max_bytes: usize) -> Self {
        self.topics.insert(topic.to_owned(), max_bytes.min(self.default));
        self
    }

    /// The largest record `topic` takes.
    pub fn of(&self, topic: &str) -> usize {
        self.topics.get(topic).copied().unwrap_or(self.default)
    }

    /// The smallest limit of any topic: librdkafka fills a batch up to `batch.size` whatever the
    /// topic, and a broker refuses a whole batch over the topic's `max.message.bytes`.
    pub fn smallest(&self) -> usize {
        self.topics.values().copied().min().unwrap_or(self.default).min(self.default)
    }

    /// Why `record` cannot be written, if it cannot.
    pub fn check(&self, record: &OutputRecord) -> Result<(), TooLarge> {
        let (size, limit) = (wire_size(record.key.as_deref(), record.value.as_deref(), &record.headers), self.of(&record.topic));
        if size > limit {
            return Err(TooLarge { topic: record.topic.clone(), size, limit });
        }
        Ok(())
    }
}

/// A record over its topic's limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a record of {size} bytes for `{topic}` is over its limit of {limit} bytes (the producer's message.max.bytes or the topic's max.message.bytes)")]
pub struct TooLarge {
    pub topic: String,
    pub size: usize,
    pub limit: usize,
}

/// The bytes a record takes on the wire, counted as librdkafka counts them (upper bound).
pub fn wire_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &Headers) -> usize {
    RECORD_OVERHEAD
        + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len)
        + headers.iter().map(|(n, v)| n.len() + v.len() + HEADER_OVERHEAD).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, value: usize) -> OutputRecord {
        let mut headers = Headers::new();
        headers.insert("h", "v");
        OutputRecord {
            topic: topic.into(),
            partition: None,
            key: Some(b"k".to_vec()),
            value: Some(vec![0; value]),
            timestamp: None,
            headers,
        }
    }

    #[test]
    fn a_topic_limit_only_ever_lowers_the_producers() {
        let limits = RecordLimits::new(1_000).with_topic("small", 500).with_topic("big", 5_000);
        assert_eq!((limits.of("small"), limits.of("big"), limits.of("other")), (500, 1_000, 1_000));
        assert!(limits.check(&record("other", 1_000 - RECORD_OVERHEAD - 1 - (1 + 1 + HEADER_OVERHEAD))).is_ok());
        let e = limits.check(&record("small", 500)).unwrap_err();
        assert_eq!((e.topic.as_str(), e.limit), ("small", 500));
        assert!(e.size > 500, "{e}");
    }
}
