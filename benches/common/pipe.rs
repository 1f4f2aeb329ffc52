//! The ceiling of every throughput figure: a stateless consume -> produce pipe with the fastest
//! settings rdkafka allows here (a threaded producer with 1 MB batches, large fetches, a deep
//! pre-fetch queue refilled at once). It keeps each record's key, value and timestamp and commits its offsets
//! once a second without waiting for deliveries: no guarantee at all, the broker's limit, not a
//! peer.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Timestamp};

/// Pipes `input` to `output` in consumer group `group` until `done(records piped)` says stop;
/// returns the time the first record arrived.
pub fn run(bootstrap: &str, input: &str, output: &str, group: &str, mut done: impl FnMut(usize) -> bool) -> Option<Instant> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("queued.min.messages", "200000")
        // Fetch again as soon as the queue drains (librdkafka's default waits 1 s once it is full).
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("pipe consumer");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", "1048576")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("pipe producer");
    consumer.subscribe(&[input]).expect("subscribe");
    let (mut n, mut first, mut committed_at) = (0usize, None, Instant::now());
    while !done(n) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else { continue };
        first.get_or_insert_with(Instant::now);
        let mut r = BaseRecord::to(output).key(m.key().unwrap_or_default()).payload(m.payload().unwrap_or_default());
        if let Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) = m.timestamp() {
            r = r.timestamp(t);
        }
        while let Err((_, back)) = producer.send(r) {
            // Queue full: the producer's thread drains it.
            std::thread::sleep(Duration::from_micros(200));
            r = back;
        }
        n += 1;
        if committed_at.elapsed() >= Duration::from_secs(1) {
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            committed_at = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(60)).expect("pipe flush");
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    first
}
