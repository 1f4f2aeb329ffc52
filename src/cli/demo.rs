//! `keyflow demo`: the example topology end to end on an in-process broker, with nothing
//! installed. Documents go through their lifecycle; two instances share the work; one leaves
//! half-way and a fresh one joins, so partitions move and state is restored from the changelogs.
//! The summary is checked against what the generator sent.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::builtin::status_tracker;
use crate::config::Config;
use crate::kafka::{self, MockProvisioner, Provisioner as _, QuietEof, TopicSpec};
use crate::runtime::{Guarantee, Instance, StatusSnapshot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Documents to send through their lifecycle.
    #[arg(long, default_value_t = 2_000)]
    documents: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// `at_least_once` or `exactly_once_v2` (the mock broker does not isolate aborted
    /// transactions or store transactional offsets; see README).
    #[arg(long, default_value = "at_least_once")]
    guarantee: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

const APP: &str = "keyflow-demo";
const SLA_MS: i64 = 5_000;

/// One input event: (timestamp, document id, JSON value).
type Event = (i64, String, Vec<u8>);

/// What the generator sent, to check the outcome against.
#[derive(Default)]
struct Expected {
    events: usize,
    broken: usize,
    finals: BTreeMap<String, usize>,
    escalation_candidates: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let guarantee: Guarantee = serde_json::from_value(json!(args.guarantee)).context("--guarantee must be at_least_once or exactly_once_v2")?;
    let dir = tempfile::tempdir()?;
    let cluster = MockCluster::new(3)?;
    let bootstrap = cluster.bootstrap_servers();
    let topology = status_tracker::topology("events", "statuses", SLA_MS);
    let mut config = Config::for_application(APP, &bootstrap, dir.path());
    config.processing_guarantee = guarantee;
    config.set_commit_interval(Duration::from_millis(200));
    // The mock broker does not act on LeaveGroup: a leaving member is noticed only when its
    // session times out, so keep that short (librdkafka's default is 45 s).
    config.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    config.consumer.0.insert("heartbeat.interval.ms".into(), "500".into());
    let provisioner = MockProvisioner(&cluster);
    provisioner.ensure(&[
        TopicSpec { name: "events".into(), partitions: args.partitions, compacted: false },
        TopicSpec { name: "statuses".into(), partitions: args.partitions, compacted: false },
    ])?;
    provisioner.ensure(&kafka::internal_topics(&config, &topology, args.partitions))?;
    say(&args, format!("in-process Kafka (librdkafka mock, 3 brokers) at {bootstrap}"));

    let (events, expected) = generate(args.documents)?;
    let half = events.len() / 2;
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "5").create()?;
    send(&producer, &events[..half])?;
    say(&args, format!("sent the first {half} of {} events for {} documents ({} malformed in all)", expected.events, args.documents, expected.broken));

    let started = Instant::now();
    let instance = |name: &str| {
        let mut c = config.clone();
        c.state_dir = dir.path().join(name);
        Instance::start(c, topology.clone())
    };
    let a = instance("instance-a")?;
    let b = instance("instance-b")?;
    say(&args, "started instance-a and instance-b in group keyflow-demo".into());
    wait_for(&bootstrap, half as i64, Duration::from_secs(120))?;
    say(&args, format!("first half processed and committed after {:.1}s; a has partitions {:?}, b has {:?}", started.elapsed().as_secs_f64(), a.status().snapshot().assignment, b.status().snapshot().assignment));

    let b_status = b.status();
    b.stop();
    b.join()?;
    let c = instance("instance-c")?;
    say(&args, "instance-b left; instance-c joined with an empty state directory".into());
    let (a_status, c_status) = (a.status(), c.status());
    wait_settled(&[&a_status, &c_status], args.partitions, Duration::from_secs(120))?;
    let (sa, sc) = (a_status.snapshot(), c_status.snapshot());
    say(&args, format!("rebalanced: a has {:?}, c has {:?}; {} changelog records restored", sa.assignment, sc.assignment, sa.restored_records + sc.restored_records));

    send(&producer, &events[half..])?;
    say(&args, format!("sent the other {} events", events.len() - half));
    wait_for(&bootstrap, expected.events as i64, Duration::from_secs(180))?;
    let elapsed = started.elapsed();
    a.stop();
    c.stop();
    a.join()?;
    c.join()?;

    let snapshots = [("instance-a", a_status.snapshot()), ("instance-b", b_status.snapshot()), ("instance-c", c_status.snapshot())];
    let outcome = read_outcome(&bootstrap, &config.dlq_topic())?;
    let ok = report(&args, &expected, &outcome, &snapshots, elapsed);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn say(args: &Args, line: String) {
    if !args.json {
        println!("• {line}");
    }
}

/// Each document's lifecycle, in event-time order as the upstream services would send it. Every
/// 5th is rejected, every 7th stalls at `classified` (its SLA timer escalates it), every 50th gets
/// a malformed event (a dead letter).
fn generate(documents: usize) -> anyhow::Result<(Vec<Event>, Expected)> {
    let mut expected = Expected::default();
    let base = 1_700_000_000_000i64;
    let mut events: Vec<Event> = Vec::new();
    for i in 0..documents {
        let id = format!("doc-{i:05}");
        let t0 = base + i as i64 * 20;
        let stalls = i % 7 == 3;
        let last = if i % 5 == 0 { "rejected" } else { "approved" };
        let steps: Vec<&str> = if stalls { vec!["uploaded", "scanned", "classified"] } else { vec!["uploaded", "scanned", "classified", last] };
        for (n, s) in steps.iter().enumerate() {
            events.push((t0 + n as i64 * 1_000, id.clone(), serde_json::to_vec(&json!({"status": s, "amount": n + 1}))?));
        }
        if i % 50 == 7 {
            events.push((t0 + 500, id.clone(), b"{\"status\": oops".to_vec()));
            expected.broken += 1;
        }
        *expected.finals.entry(if stalls { "classified".into() } else { last.into() }).or_default() += 1;
        expected.escalation_candidates += usize::from(stalls);
    }
    events.sort_by_key(|e| e.0);
    expected.events = events.len();
    Ok((events, expected))
}

fn send(producer: &BaseProducer, events: &[Event]) -> anyhow::Result<()> {
    for (ts, key, value) in events {
        kafka::send_waiting(producer, BaseRecord::to("events").key(key.as_str()).payload(value.as_slice()).timestamp(*ts))?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Waits until the instances together own every partition and none is restoring.
fn wait_settled(instances: &[&std::sync::Arc<crate::runtime::Status>], partitions: i32, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let snaps: Vec<StatusSnapshot> = instances.iter().map(|s| s.snapshot()).collect();
        let mut owned: Vec<i32> = snaps.iter().flat_map(|s| s.assignment.clone()).collect();
        owned.sort_unstable();
        if owned == (0..partitions).collect::<Vec<_>>() && snaps.iter().all(|s| !s.restoring && !s.assignment.is_empty()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for the group to settle: {snaps:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the group has committed at least `target` input offsets.
fn wait_for(bootstrap: &str, target: i64, limit: Duration) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", APP).create()?;
    let md = consumer.fetch_metadata(Some("events"), Duration::from_secs(5))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition("events", p.id());
    }
    let deadline = Instant::now() + limit;
    loop {
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(5))?;
        let done: i64 = committed.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum();
        if done >= target {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out: {done} of {target} input offsets committed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A record's key and value bytes.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

struct Outcome {
    /// Last output per document.
    last: BTreeMap<String, Value>,
    outputs: usize,
    escalated: usize,
    dead_letters: usize,
}

fn read_all(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<KeyValue>> {
    let consumer: BaseConsumer<QuietEof> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "keyflow-demo-reader").set("enable.partition.eof", "true").create_with_context(QuietEof)?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut eof, mut out) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))),
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    Ok(out)
}

fn read_outcome(bootstrap: &str, dlq: &str) -> anyhow::Result<Outcome> {
    let mut o = Outcome { last: BTreeMap::new(), outputs: 0, escalated: 0, dead_letters: read_all(bootstrap, dlq)?.len() };
    for (_, value) in read_all(bootstrap, "statuses")? {
        let v: Value = serde_json::from_slice(&value.unwrap_or_default())?;
        o.outputs += 1;
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        if v.get("escalated").is_some() {
            o.escalated += 1;
            continue;
        }
        // Keep the furthest state per document (outputs of different partitions interleave).
        let newer = o.last.get(&id).is_none_or(|old| old["count"].as_u64() <= v["count"].as_u64());
        if newer {
            o.last.insert(id, v);
        }
    }
    Ok(o)
}

fn report(args: &Args, e: &Expected, o: &Outcome, instances: &[(&str, StatusSnapshot)], elapsed: Duration) -> bool {
    let mut finals: BTreeMap<String, usize> = BTreeMap::new();
    for v in o.last.values() {
        *finals.entry(v["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    let processed: u64 = instances.iter().map(|(_, s)| s.processed).sum();
    let ok = finals == e.finals && o.dead_letters >= e.broken && o.outputs >= e.events - e.broken + o.escalated;
    let rate = e.events as f64 / elapsed.as_secs_f64(); // a story, not a benchmark: see `cargo bench`
    if args.json {
        let per: Vec<Value> = instances
            .iter()
            .map(|(n, s)| json!({"instance": n, "processed": s.processed, "skipped_by_guard": s.skipped, "dead_lettered": s.dead_lettered,
                "timers_fired": s.timers_fired, "commits": s.commits, "mean_commit_ms": s.mean_commit_micros as f64 / 1000.0,
                "restored_records": s.restored_records}))
            .collect();
        let summary = json!({"ok": ok, "documents": args.documents, "events": e.events, "final_states": finals, "expected_final_states": e.finals,
            "outputs": o.outputs, "escalated": o.escalated, "dead_letters": o.dead_letters, "expected_dead_letters": e.broken,
            "processed": processed, "elapsed_s": elapsed.as_secs_f64(), "events_per_s": rate, "instances": per});
        println!("{}", serde_json::to_string_pretty(&summary).expect("JSON"));
        return ok;
    }
    println!();
    println!("Summary ({} documents, {} events, {:.1}s from first start to last commit, including the rebalance)", args.documents, e.events, elapsed.as_secs_f64());
    println!("  final state per document   (expected)");
    for (s, n) in &e.finals {
        println!("    {s:<12} {:>6}          ({n})", finals.get(s).copied().unwrap_or(0));
    }
    println!("  SLA escalations            {:>6}   (of {} stalled; fires once stream time passes upload + {}s)", o.escalated, e.escalation_candidates, SLA_MS / 1000);
    println!("  dead letters               {:>6}   ({} malformed sent; at-least-once may repeat one after a move)", o.dead_letters, e.broken);
    let exact = e.events - e.broken + o.escalated;
    println!("  outputs                    {:>6}   (good events + escalations = {exact}; more would be at-least-once duplicates after a move)", o.outputs);
    for (n, s) in instances {
        println!(
            "  {n}: processed {}, skipped by the applied-offset guard {}, dead-lettered {}, timers {}, commits {} (mean {:.1} ms), restored {} changelog records",
            s.processed, s.skipped, s.dead_lettered, s.timers_fired, s.commits, s.mean_commit_micros as f64 / 1000.0, s.restored_records
        );
    }
    println!("{}", if ok { "OK: every document reached the final state its events lead to." } else { "MISMATCH: see the expected counts above." });
    ok
}
