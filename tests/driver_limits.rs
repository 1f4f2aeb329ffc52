//! Layer (b): records that could never be written. A record over its topic's limit fails at the
//! producer or the broker, and under exactly-once it aborted the transaction of every task, over
//! and over: one poison record stalled the whole instance. Now every output, state write and dead
//! letter is checked against the limits before a record's effects are kept; what is too large
//! is refused as a dead letter that fits, and the partition flows on.

use keyflow::dlq;
use keyflow::processor::Error;
use keyflow::runtime::RecordLimits;
use keyflow::serde::Serde;
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::{Context, Processor, Record, StoreSpec, Topology, TopologyBuilder};
use serde_json::json;

const LIMIT: usize = 10_000;

/// Appends every event's `text` to the key's state and echoes `echo` to the output: a state
/// that grows without bound (a workflow's history) and an output as large as its input says.
struct Notes;

impl Processor for Notes {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        let mut notes: String = ctx.get_json("notes", &key)?.unwrap_or_default();
        notes.push_str(record.value["text"].as_str().unwrap_or_default());
        ctx.put_json("notes", &key, &notes)?;
        let echo = record.value["echo"].as_str().unwrap_or_default().to_owned();
        ctx.forward(Record::new(key, json!({"length": notes.len(), "echo": echo}), record.timestamp));
        Ok(())
    }
}

fn driver() -> TopologyTestDriver {
    let topology: Topology = TopologyBuilder::new()
        .source("in", &["events"], Serde::String, Serde::Json)
        .processor("notes", || Notes, &["in"])
        .store(StoreSpec::new("notes"), &["notes"])
        .sink("out", "out", Serde::String, Serde::Json, &["notes"])
        .build()
        .unwrap();
    let config = DriverConfig { partitions: 2, record_limits: RecordLimits::new(LIMIT), ..DriverConfig::default() };
    TopologyTestDriver::new(topology, config)
}

fn letters(d: &mut TopologyTestDriver) -> Vec<keyflow::testing::StoredRecord> {
    d.read_output("test-app-dlq")
}

fn message(r: &keyflow::testing::StoredRecord) -> String {
    r.headers.last_str(dlq::ERROR_MESSAGE).unwrap_or_default().to_owned()
}

#[test]
fn an_output_over_the_limit_becomes_a_dead_letter_and_the_partition_flows_on() {
    let mut d = driver();
    d.pipe_json("events", "a", &json!({"text": "x", "echo": "y".repeat(LIMIT)}), 1);
    d.pipe_json("events", "a", &json!({"text": "x"}), 2);
    let dead = letters(&mut d);
    assert_eq!(dead.len(), 1);
    assert!(message(&dead[0]).contains("output refused") && message(&dead[0]).contains("`out`"), "{}", message(&dead[0]));
    assert_eq!(dead[0].headers.last_str(dlq::SOURCE_OFFSET), Some("0"));
    let out = d.read_output("out");
    assert_eq!(out.len(), 1, "the refused record had no effect, the next one did");
    assert_eq!(d.store_get("notes", b"a"), Some(br#""x""#.to_vec()), "the refused record's state write was dropped");
}

#[test]
fn a_state_that_would_pass_the_limit_refuses_the_transition_and_keeps_the_last_good_state() {
    let mut d = driver();
    let chunk = "n".repeat(3_000);
    for i in 0..5 {
        d.pipe_json("events", "grows", &json!({"text": chunk}), i);
        d.pipe_json("events", "other", &json!({"text": "o"}), i);
    }
    let dead = letters(&mut d);
    assert_eq!(dead.len(), 2, "the 4th and 5th appends would pass {LIMIT} bytes");
    for r in &dead {
        let m = message(r);
        assert!(m.contains("transition refused") && m.contains("`grows`") && m.contains("store `notes`"), "{m}");
    }
    let kept: String = serde_json::from_slice(&d.store_get("notes", b"grows").unwrap()).unwrap();
    assert_eq!(kept.len(), 9_000);
    assert_eq!(d.read_output("out").len(), 8, "every other record went through, the other key's included");
}

#[test]
fn an_input_too_large_for_the_dead_letter_topic_is_dead_lettered_cut_with_its_digest() {
    let mut d = driver();
    let poison = vec![b'{'; 50_000];
    d.pipe_input("events", Some(b"big"), Some(&poison), 1);
    d.pipe_json("events", "big", &json!({"text": "after"}), 2);
    let dead = letters(&mut d);
    assert_eq!(dead.len(), 1);
    let h = &dead[0].headers;
    assert_eq!(h.last_str(dlq::ERROR_CLASS), Some("deserialization"));
    assert_eq!(h.last_str(dlq::VALUE_SIZE), Some("50000"));
    assert_eq!(h.last_str(dlq::VALUE_SHA256), Some(dlq::sha256_hex(&poison).as_str()));
    assert_eq!((h.last_str(dlq::SOURCE_TOPIC), h.last_str(dlq::SOURCE_OFFSET)), (Some("events"), Some("0")));
    let size = keyflow::runtime::wire_size(dead[0].key.as_deref(), dead[0].value.as_deref(), h);
    assert!(size <= LIMIT && size > LIMIT - 200, "cut to fit, no further: {size}");
    assert_eq!(d.read_output("out").len(), 1, "the partition flowed on");
}
