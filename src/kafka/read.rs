//! Reading a whole topic, beginning to end, outside any group: what the operator commands
//! (`keyflow tasks`, and inspection tools) need. Committed records only.

use super::{Clients, Role};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::QuietEof;

/// One record as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: crate::record::Headers,
}

impl Message {
    /// The last value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.last_str(name)
    }
}

/// Every committed record of `topic` now, in partition and offset order. A topic that does not
/// exist yet reads as empty.
///
/// # Errors
/// As [`read_each`].
pub fn read_to_end(kafka: impl Into<Clients>, topic: &str, timeout: Duration) -> Result<Vec<Message>, KafkaError> {
    let mut out = Vec::new();
    read_each(kafka, topic, timeout, |m| out.push(m))?;
    out.sort_by_key(|m| (m.partition, m.offset));
    Ok(out)
}

/// Every committed record of `topic` now, handed to `each` as it is read: in offset order
/// within a partition, the partitions interleaved. What is kept of them is the caller's choice,
/// so a topic larger than memory can be read. `idle` bounds each wait (for the cluster, for the
/// next record), not the whole read: a long topic read at a steady pace is never cut short.
/// "Now" is the partitions' ends when the read starts: records written after are not read, so a
/// partition written faster than it is read still ends.
///
/// # Errors
/// The cluster cannot be reached, or no record or end of a partition arrives, within `idle`;
/// or a read fails.
pub fn read_each(kafka: impl Into<Clients>, topic: &str, idle: Duration, mut each: impl FnMut(Message)) -> Result<(), KafkaError> {
    let timeout = idle;
    let consumer: BaseConsumer<QuietEof> = kafka
        .into()
        .config(Role::Consumer)
        .set("group.id", "keyflow-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(QuietEof)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let mut ends = std::collections::HashMap::new();
    for &p in &partitions {
        ends.insert(p, consumer.fetch_watermarks(topic, p, idle)?.1);
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = std::collections::BTreeSet::new();
    let mut deadline = Instant::now() + idle;
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OperationTimedOut));
        }
        let polled = consumer.poll(Duration::from_millis(100));
        if polled.is_some() {
            deadline = Instant::now() + idle;
        }
        match polled {
            Some(Ok(m)) if at_end.contains(&m.partition()) => {}
            Some(Ok(m)) if m.offset() >= ends[&m.partition()] => {
                at_end.insert(m.partition());
            }
            Some(Ok(m)) => {
                if m.offset() + 1 >= ends[&m.partition()] {
                    at_end.insert(m.partition());
                }
                each(Message {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis().unwrap_or(0),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m.headers().map_or_else(crate::record::Headers::new, |hs| {
                        let mut out = crate::record::Headers::new();
                        for h in hs.iter() {
                            out.insert(h.key, h.value.unwrap_or_default());
                        }
                        out
                    }),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(())
}
