//! The group consumer's partitions as tasks see them: pausing and resuming a task's sources, and
//! where they start when the task is assigned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::TopicPartitionList;

/// Where a newly assigned task's sources start: the group's committed offsets, else (nothing
/// committed yet) the log start. The task commits these until it has consumed, so even a
/// transaction of timer outputs alone carries offsets, and the group generation is checked.
///
/// # Errors
/// Either could not be read: never a guess, since a wrong start offset would be committed.
pub(super) fn start_offsets<C: ConsumerContext + 'static>(
    consumer: &BaseConsumer<C>,
    partition: i32,
    topics: &BTreeSet<String>,
    timeout: Duration,
) -> Result<BTreeMap<String, i64>, String> {
    let committed = consumer
        .committed_offsets(partition_list(partition, topics), timeout)
        .map_err(|e| format!("cannot read the group's offsets: {e}"))?;
    let mut out = BTreeMap::new();
    for topic in topics {
        let offset = match committed.find_partition(topic, partition).and_then(|e| e.offset().to_raw()) {
            Some(o) if o >= 0 => o,
            // Nothing committed yet: the consumer starts at the log start (auto.offset.reset=earliest).
            _ => consumer.fetch_watermarks(topic, partition, timeout).map_err(|e| format!("cannot read where `{topic}` starts: {e}"))?.0,
        };
        out.insert(topic.clone(), offset);
    }
    Ok(out)
}

fn partition_list(partition: i32, topics: &BTreeSet<String>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        tpl.add_partition(t, partition);
    }
    tpl
}

pub(super) fn pause<C: ConsumerContext + 'static>(consumer: &BaseConsumer<C>, partition: i32, topics: &BTreeSet<String>) {
    if let Err(e) = consumer.pause(&partition_list(partition, topics)) {
        tracing::warn!(partition, error = %e, "pause failed");
    }
}

pub(super) fn resume<C: ConsumerContext + 'static>(consumer: &BaseConsumer<C>, partition: i32, topics: &BTreeSet<String>) {
    if let Err(e) = consumer.resume(&partition_list(partition, topics)) {
        tracing::warn!(partition, error = %e, "resume failed");
    }
}
