//! What the peer benchmark does to the broker, the same for every system: create topics, load
//! events (all at once, or at a fixed rate), watch the output as a `read_committed` reader sees
//! it, and read a changelog the way a plain consumer would.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyflow::config::Config;
use keyflow::kafka::{self, Provisioner, TopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) {
    let mut config = Config::for_application("peer-bench", bootstrap, std::path::Path::new("unused"));
    config.replication_factor = 1;
    let specs: Vec<TopicSpec> = names.iter().map(|n| TopicSpec { name: (*n).to_owned(), partitions, compacted: false }).collect();
    kafka::AdminProvisioner::new(&config).unwrap().ensure(&specs).unwrap();
}

fn producer(bootstrap: &str, linger_ms: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms)
        .set("batch.size", "1048576")
        // Java's partitioner, so every system sees the same keys in the same partitions.
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap()
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, value: &str, ts: i64) {
    let mut r = BaseRecord::to(topic).key(key).payload(value).timestamp(ts);
    while let Err((e, back)) = p.send(r) {
        assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)), "{e}");
        std::thread::sleep(Duration::from_micros(200));
        r = back;
    }
}

/// Loads events `from..to` of the workload as fast as the broker takes them.
pub fn load(bootstrap: &str, topic: &str, from: usize, to: usize, keys: usize) {
    let p = producer(bootstrap, "20");
    for i in from..to {
        let (k, v) = crate::common::event(i, keys);
        send(&p, topic, &k, &v, now_ms());
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

/// Produces `rate` events/s for `secs`, each stamped with the time it is sent, in 1 ms steps.
pub fn load_at_rate(bootstrap: &str, topic: &str, rate: f64, secs: f64, keys: usize) -> usize {
    let p = producer(bootstrap, "0");
    let start = Instant::now();
    let mut sent = 0usize;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= secs {
            break;
        }
        let due = (rate * elapsed) as usize;
        while sent < due {
            let (k, v) = crate::common::event(sent, keys);
            send(&p, topic, &k, &v, now_ms());
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    p.flush(Duration::from_secs(60)).unwrap();
    sent
}

/// The output as a `read_committed` reader sees it, from the beginning of every partition.
pub struct Observer {
    consumer: BaseConsumer,
    pub count: usize,
    pub first: Option<(Instant, usize)>,
    /// End-to-end latencies (ms) of outputs whose input was stamped at or after `latency_from`.
    pub latencies: Vec<i64>,
    pub latency_from: i64,
}

impl Observer {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Observer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "peer-bench-observer")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Observer { consumer, count: 0, first: None, latencies: Vec::new(), latency_from: i64::MAX }
    }

    /// Reads until `count >= n`; false if `deadline` passed first. `alive` is asked between polls.
    pub fn wait_for(&mut self, n: usize, deadline: Instant, mut alive: impl FnMut()) -> bool {
        while self.count < n {
            if Instant::now() > deadline {
                return false;
            }
            alive();
            for _ in 0..10_000 {
                match self.consumer.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => {
                        self.count += 1;
                        self.first.get_or_insert((Instant::now(), self.count));
                        if let Some(ts) = m.timestamp().to_millis() {
                            if ts >= self.latency_from {
                                self.latencies.push(now_ms() - ts);
                            }
                        }
                    }
                    Some(Err(e)) => panic!("observer: {e}"),
                    None => break,
                }
            }
        }
        true
    }
}

/// Every topic of the broker whose name holds `app` and `changelog`: the changelogs of that
/// application's stores, whatever its naming scheme (Kafka Streams', keyflow's, Quix's).
pub fn changelogs(bootstrap: &str, app: &str) -> Vec<(String, i32)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics()
        .iter()
        .filter(|t| t.name().contains(app) && t.name().contains("changelog"))
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect()
}

/// Reads `topics` from the beginning to their log ends by assignment, `read_committed` as an
/// exactly-once restore must, with the pipe's fastest fetch settings; returns the records read
/// and the seconds it took.
pub fn read_all(bootstrap: &str, topics: &[(String, i32)]) -> (usize, f64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "peer-bench-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.max.bytes", "52428800")
        .set("queued.min.messages", "200000")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (t, n) in topics {
        for p in 0..*n {
            let (low, high) = c.fetch_watermarks(t, p, Duration::from_secs(10)).unwrap();
            if high > low {
                tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
                ends.insert((t.clone(), p), high);
            }
        }
    }
    let start = Instant::now();
    c.assign(&tpl).unwrap();
    let mut read = 0usize;
    // Done when every partition's position reaches the end read before: the last offsets of a
    // transactional changelog are commit markers, never delivered, so positions decide.
    while !ends.is_empty() {
        match c.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => {
                read += 1;
                if !read.is_multiple_of(10_000) {
                    continue;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => panic!("changelog read: {e}"),
            None => panic!("changelog read stalled with {} partitions left", ends.len()),
        }
        for e in c.position().unwrap().elements() {
            if let Offset::Offset(at) = e.offset() {
                let key = (e.topic().to_owned(), e.partition());
                if ends.get(&key).is_some_and(|&end| at >= end) {
                    ends.remove(&key);
                }
            }
        }
    }
    (read, start.elapsed().as_secs_f64())
}
