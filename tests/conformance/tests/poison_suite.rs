//! The poison suite: records that cannot be processed, or whose results cannot be written, mixed
//! into a good workload on Apache Kafka, with three `keyflow run` processes of one exactly-once
//! application. Each poison record costs one dead letter that says why; nothing stalls.
//!
//! - records at the broker's 1 MiB limit: malformed (their dead letter, value plus headers,
//!   is over the producer's `message.max.bytes`: it is cut to fit, with the original's size and
//!   SHA-256) and well-formed (processed as any other);
//! - records whose output would pass the output topic's `max.message.bytes` (300 kB here), and
//!   records whose new state would pass the changelog's (100 kB): their transition is refused;
//! - 1 % malformed JSON throughout;
//! - an outage: every instance stopped by SIGTERM (each must exit within 10 s), 10k documents
//!   uploaded meanwhile, then stream time jumped past their SLA: 10k timers overdue at once
//!   when the instances come back.
//!
//! Verdict by a `read_committed` reader: one output per good input, none twice, every
//! document's state exact; one dead letter per bad record, with its reason; one escalation per
//! overdue document; no partition stood still for 30 s while it had input; `/ready` answered
//! every probe. `KEYFLOW_POISON_EVENTS` sets the size (default 100k good events),
//! `KEYFLOW_SEED` replays a run.
//!
//!     tests/kafka/with-broker.sh cargo nextest run -p keyflow-conformance poison_suite --no-capture

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyflow_conformance::workload::{
    assert_exact, duplicated_outputs, final_states_of, missing_outputs, produce_paced, read_topic, workload, PARTITIONS,
};
use keyflow_conformance::{App, Cluster, Keyflow};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const GROUP: &str = "[consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 500\n";
const SLA_MS: i64 = 3_600_000;
/// No partition may stand still longer than this while it has input.
const STALL: Duration = Duration::from_secs(30);

type Event = (i64, String, Vec<u8>);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A GET with a 1 s budget: the answer's status code, or `None` (no answer in time).
fn get(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = std::net::TcpStream::connect_timeout(&host.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Watches the group while the test runs: per input partition, how long its committed offset
/// stood still while it had input; per instance, probes of `/ready` that got no answer.
struct Monitor {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    longest_stall: Arc<Mutex<BTreeMap<i32, Duration>>>,
    unanswered: Arc<Mutex<Vec<String>>>,
    probes: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(app: &App, ready: Vec<String>) -> Monitor {
        let (stop, paused) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let longest_stall = Arc::new(Mutex::new(BTreeMap::new()));
        let (unanswered, probes) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)));
        let (s, p, l, u, n) = (stop.clone(), paused.clone(), longest_stall.clone(), unanswered.clone(), probes.clone());
        let (bootstrap, group, topic) = (app.bootstrap.clone(), app.id.clone(), app.input.clone());
        let thread = std::thread::spawn(move || {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", &group).create().unwrap();
            let mut still: BTreeMap<i32, (i64, Instant)> = BTreeMap::new();
            // A process's endpoint must answer every probe once it has answered one (it starts
            // listening a moment after the process starts).
            let mut up = std::collections::BTreeSet::new();
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(1));
                if p.load(Ordering::SeqCst) {
                    still.clear();
                    up.clear();
                    continue;
                }
                for url in &ready {
                    *n.lock().unwrap() += 1;
                    match get(url) {
                        Some(_) => {
                            up.insert(url.clone());
                        }
                        None if up.contains(url) => u.lock().unwrap().push(url.clone()),
                        None => {}
                    }
                }
                let mut tpl = TopicPartitionList::new();
                for p in 0..PARTITIONS {
                    tpl.add_partition(&topic, p);
                }
                let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else { continue };
                for p in 0..PARTITIONS {
                    let at = committed.find_partition(&topic, p).and_then(|e| e.offset().to_raw()).unwrap_or(0).max(0);
                    let end = c.fetch_watermarks(&topic, p, Duration::from_secs(5)).map_or(at, |w| w.1);
                    let e = still.entry(p).or_insert((at, Instant::now()));
                    if at != e.0 || at >= end {
                        *e = (at, Instant::now());
                    }
                    let mut l = l.lock().unwrap();
                    let longest = l.entry(p).or_insert(Duration::ZERO);
                    *longest = (*longest).max(e.1.elapsed());
                }
            }
        });
        Monitor { stop, paused, longest_stall, unanswered, probes, thread: Some(thread) }
    }

    fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    fn finish(mut self) -> (BTreeMap<i32, Duration>, Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.longest_stall.lock().unwrap().clone(), self.unanswered.lock().unwrap().clone(), *self.probes.lock().unwrap())
    }
}

/// Every dead letter: key, value length and headers.
fn dead_letters(bootstrap: &str, topic: &str) -> Vec<(String, usize, BTreeMap<String, String>)> {
    let ends: Vec<i64> = {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
        (0..PARTITIONS).map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(10)).map_or(0, |w| w.1)).collect()
    };
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("dlq-reader-{}", rand::random::<u32>()))
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default());
            out.push((key.chars().take(40).collect(), m.payload().map_or(0, <[u8]>::len), headers));
            continue;
        }
        let pos = c.position().unwrap();
        let done = (0..PARTITIONS).all(|p| {
            pos.find_partition(topic, p).and_then(|e| e.offset().to_raw()).is_some_and(|o| o >= ends[p as usize]) || ends[p as usize] == 0
        });
        if done {
            break;
        }
    }
    out
}

#[test]
fn poison_suite_costs_one_dead_letter_per_bad_record_and_stalls_nothing() {
    let seed: u64 = std::env::var("KEYFLOW_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (KEYFLOW_SEED={seed} replays it)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let events = env_or("KEYFLOW_POISON_EVENTS", 100_000);
    let cluster = Cluster::start("poison_suite");
    let app = App::status_tracker_topics(
        &cluster,
        "poison",
        "exactly_once_v2",
        &[("max.message.bytes", "100000")],
        &[("max.message.bytes", "300000")],
        GROUP,
    );

    // The good workload (with its 1 % malformed JSON), and the poison mixed into it.
    let w = workload(2_000, events, seed);
    let mut expected = w.expected.clone();
    let mut inputs: Vec<Event> = w.events.clone();
    let mut bad = w.malformed;
    let mut poison: BTreeMap<&str, usize> = BTreeMap::new();
    let last_ts = inputs.last().map_or(0, |e| e.0);
    let mut insert = |inputs: &mut Vec<Event>, key: String, value: Vec<u8>| {
        let at = rng.random_range(0..inputs.len());
        let ts = inputs[at].0;
        inputs.insert(at, (ts, key, value));
    };
    for i in 0..20 {
        insert(&mut inputs, format!("doc-{i}"), vec![b'{'; 1_010_000]);
        let pad = "p".repeat(1_009_950);
        insert(&mut inputs, format!("big-{i}"), format!(r#"{{"status":"uploaded","amount":1,"pad":"{pad}"}}"#).into_bytes());
        expected.insert(format!("big-{i}"), (1, 1.0));
    }
    for i in 0..10 {
        // Its output repeats the 200 kB key twice over: past the output topic's 300 kB.
        insert(&mut inputs, format!("{i}{}", "o".repeat(200_000)), br#"{"status":"uploaded","amount":1}"#.to_vec());
        // Its state is stored under the 120 kB key: past the changelog's 100 kB.
        insert(&mut inputs, format!("{i}{}", "s".repeat(120_000)), br#"{"status":"uploaded","amount":1}"#.to_vec());
    }
    poison.insert("malformed 1 MiB", 20);
    poison.insert("output too large", 10);
    poison.insert("state too large", 10);
    bad += 40;

    let ports: Vec<u16> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let listen: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let spawn = |i: usize| app.spawn_with(i, &[("KEYFLOW_HTTP_LISTEN", listen[i].as_str())]);
    let mut instances: Vec<Keyflow> = (0..3).map(spawn).collect();
    let monitor = Monitor::start(&app, listen.iter().map(|l| format!("http://{l}/ready")).collect());
    let started = Instant::now();
    produce_paced(&app.bootstrap, &app.input, &inputs, Some(5_000));
    eprintln!("{:.1}s: {} inputs produced ({} bad)", started.elapsed().as_secs_f64(), inputs.len(), bad);
    let outputs = app.converge(&expected, Duration::from_secs(240));
    assert_exact(&expected, &final_states_of(&outputs));
    eprintln!("{:.1}s: every good input processed", started.elapsed().as_secs_f64());

    // The outage: every instance stopped, documents uploaded meanwhile, stream time jumped.
    monitor.pause(true);
    let mut stops = Vec::new();
    for k in &mut instances {
        let stopped = k.terminate_within(Duration::from_secs(10));
        assert!(
            stopped.is_some_and(|(_, clean)| clean),
            "instance {} did not stop cleanly within 10 s of SIGTERM\n{}",
            k.index,
            k.tail(20)
        );
        stops.push(stopped.unwrap().0);
    }
    let overdue = 10_000;
    let mut late: Vec<Event> =
        (0..overdue).map(|i| (last_ts + 1 + i as i64, format!("sla-{i}"), br#"{"status":"uploaded","amount":2}"#.to_vec())).collect();
    for i in 0..overdue {
        expected.insert(format!("sla-{i}"), (1, 2.0));
    }
    // Enough keys that every partition gets one: each moves its partition's stream time past
    // every upload's SLA.
    for t in 0..64 {
        late.push((last_ts + overdue as i64 + SLA_MS + 1, format!("tick-{t}"), br#"{"status":"scanned","amount":0}"#.to_vec()));
        expected.insert(format!("tick-{t}"), (1, 0.0));
    }
    produce_paced(&app.bootstrap, &app.input, &late, None);
    let restarted = Instant::now();
    instances = (0..3).map(spawn).collect();
    monitor.pause(false);
    let escalated = |outputs: &[(String, Vec<u8>)]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (k, v) in outputs {
            let v: serde_json::Value = serde_json::from_slice(v).unwrap();
            if v["escalated"] == true {
                *m.entry(k.clone()).or_insert(0) += 1;
            }
        }
        m
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let outputs = loop {
        let outputs = read_topic(&app.bootstrap, &app.output, "read_committed");
        let e = escalated(&outputs);
        if (0..overdue).all(|i| e.contains_key(&format!("sla-{i}"))) && final_states_of(&outputs) == expected || Instant::now() > deadline {
            break outputs;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!("{:.1}s after the restart: {overdue} overdue timers fired", restarted.elapsed().as_secs_f64());

    // The verdict.
    let report = |k: &[Keyflow]| k.iter().map(|k| k.tail(25)).collect::<Vec<_>>().join("\n");
    let missing = missing_outputs(&expected, &outputs);
    let duplicates = duplicated_outputs(&outputs);
    assert_exact(&expected, &final_states_of(&outputs));
    assert!(missing.is_empty(), "documents missing outputs: {:?}\n{}", &missing[..missing.len().min(5)], report(&instances));
    assert_eq!(duplicates, 0, "outputs committed twice");
    let e = escalated(&outputs);
    let unescalated: Vec<_> = (0..overdue).map(|i| format!("sla-{i}")).filter(|k| e.get(k) != Some(&1)).collect();
    assert!(
        unescalated.is_empty(),
        "{} overdue documents not escalated exactly once, e.g. {:?}",
        unescalated.len(),
        &unescalated[..unescalated.len().min(5)]
    );
    assert!(e.values().all(|&n| n == 1), "a document escalated twice");

    let letters = dead_letters(&app.bootstrap, &format!("{}-dlq", app.id));
    let message = |h: &BTreeMap<String, String>| h.get("keyflow.dlq.error.message").cloned().unwrap_or_default();
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, len, h) in &letters {
        let m = message(h);
        let reason = if h.get("keyflow.dlq.value.size").map(String::as_str) == Some("1010000") {
            assert!(*len < 1_000_000, "a cut letter fits: {len}");
            assert_eq!(h.get("keyflow.dlq.value.sha256").map(String::len), Some(64), "{key}: the original's digest");
            "malformed 1 MiB"
        } else if m.contains("output refused") {
            "output too large"
        } else if m.contains("transition refused") {
            "state too large"
        } else {
            assert_eq!(h.get("keyflow.dlq.error.class").map(String::as_str), Some("deserialization"), "{key}: {m}");
            "malformed JSON"
        };
        assert!(h.contains_key("keyflow.dlq.source.offset"), "{key}: every letter leads to its input");
        *by_reason.entry(reason).or_default() += 1;
    }
    eprintln!("dead letters by reason: {by_reason:?}");
    assert_eq!(letters.len(), bad, "one dead letter per bad record: {by_reason:?}");
    for (reason, n) in &poison {
        assert_eq!(by_reason.get(reason), Some(n), "{reason}");
    }

    let (stalls, unanswered, probes) = monitor.finish();
    let longest = stalls.values().max().copied().unwrap_or_default();
    eprintln!(
        "poison_suite: {} inputs ({} good, {bad} bad), {} committed outputs, 0 duplicated; SIGTERM stops took {stops:?}; \
         longest partition standstill {:.1}s; {probes} /ready probes, {} unanswered",
        inputs.len() + late.len(),
        inputs.len() + late.len() - bad,
        outputs.len(),
        longest.as_secs_f64(),
        unanswered.len()
    );
    assert!(longest < STALL, "a partition stood still for {longest:?} while it had input: {stalls:?}");
    assert!(unanswered.is_empty(), "/ready gave no answer within 1 s: {unanswered:?}");
    for k in &mut instances {
        let stopped = k.terminate_within(Duration::from_secs(10));
        assert!(stopped.is_some_and(|(_, clean)| clean), "instance {} did not stop cleanly within 10 s\n{}", k.index, k.tail(20));
    }
}
