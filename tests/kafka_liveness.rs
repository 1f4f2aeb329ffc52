//! Liveness on Apache Kafka: nothing stalls an instance, and an instance that cannot go on says
//! so. Each test reproduces a defect found on `keyflow run`:
//! - one record too large for the producer (its dead letter was larger still) aborted the
//!   exactly-once transaction of every task, for ever: no partition moved, `/ready` said ready,
//!   and SIGTERM was not heard;
//! - a panic in the stream thread left a process that reported healthy and did nothing;
//! - a backlog of slow records (one blocking call each) kept one transaction open past
//!   `transaction.timeout.ms`: the coordinator aborted it, the instance was fenced, processed the
//!   same records again, and was aborted again.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{committed, produce, read_all, setup, unique, wait_until};
use keyflow::console::Console;
use keyflow::observe::Server;
use keyflow::processor::Error;
use keyflow::runtime::{Guarantee, Instance};
use keyflow::serde::Serde;
use keyflow::{Context, Processor, Record, TopologyBuilder};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

fn get(url: &str) -> (u16, String) {
    match reqwest::blocking::Client::new().get(url).timeout(Duration::from_secs(2)).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_record_too_large_to_dead_letter_whole_stalls_nothing_and_sigterm_still_stops_the_process() {
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let port = free_port();
    let config = s.dir.path().join("app.toml");
    std::fs::write(
        &config,
        format!(
            "application.id = \"{}\"\nbootstrap.servers = \"{}\"\nprocessing.guarantee = \"exactly_once_v2\"\nreplication.factor = 1\n\
             state.dir = \"{}\"\nhttp.listen = \"127.0.0.1:{port}\"\n\
             [topology]\nbuiltin = \"status-tracker\"\ninput = \"{}\"\noutput = \"{}\"\nsla.ms = 3600000\n\
             [consumer]\nsession.timeout.ms = 6000\n",
            s.config.application_id,
            s.bootstrap,
            s.dir.path().join("state").display(),
            s.input,
            s.output
        ),
    )
    .unwrap();
    let log = s.dir.path().join("keyflow.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyflow"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "keyflow=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{port}/ready");
    wait_until("keyflow run is ready", Duration::from_secs(60), || get(&ready).0 == 200);

    // Under the broker's 1 MiB limit, over the producer's message.max.bytes (1,000,000): the
    // whole value could never be written as a dead letter.
    let poison = vec![b'!'; 1_010_000];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .set("message.max.bytes", "2000000")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    producer.send(BaseRecord::to(&s.input).key("poison").payload(&poison[..])).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    // Stamped now, as the poison record is: stream time stays short of their SLA timers.
    let now = keyflow::runtime::now_ms();
    let good: Vec<_> = (0..100).map(|i| (now + i, format!("doc-{i}"), br#"{"status":"uploaded","amount":1}"#.to_vec())).collect();
    produce(&s.bootstrap, &s.input, &good);

    let started = Instant::now();
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(40).collect::<Vec<_>>().join("\n");
    let guard = scopeguard_print(&log_tail);
    wait_until("every good input has its output", Duration::from_secs(60), || {
        assert_eq!(get(&ready).0, 200, "/ready must keep telling the truth: the instance is processing");
        common::read_topic(&s.bootstrap, &s.output, "read_committed").len() == 100
    });
    eprintln!("100 good inputs behind a 1,010,000-byte poison record: all output after {:.1}s", started.elapsed().as_secs_f64());
    std::mem::forget(guard);
    wait_until("all input committed", Duration::from_secs(30), || committed(&s.bootstrap, &s.config.application_id, &s.input) == 101);
    let dead = common::read_topic(&s.bootstrap, &s.config.dlq_topic(), "read_committed");
    assert_eq!(dead.len(), 1, "one dead letter for the poison record");
    assert_eq!(dead[0].0, "poison");
    assert!(dead[0].1.len() < 1_000_000 && dead[0].1.len() > 990_000, "its value cut to fit: {} bytes", dead[0].1.len());

    let stopping = Instant::now();
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(stopping.elapsed() < Duration::from_secs(10), "SIGTERM did not stop the process within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    std::fs::File::open(&log).unwrap().read_to_string(&mut text).unwrap();
    assert!(status.success(), "a clean stop: {status}\n{text}");
    assert!(!text.contains("aborting: tasks roll back"), "no transaction was aborted for the poison record:\n{text}");
}

/// Prints the instance's log (newest first) if the test fails while it lives.
fn scopeguard_print<'a>(tail: &'a dyn Fn() -> String) -> impl Drop + 'a {
    struct Print<'a>(&'a dyn Fn() -> String);
    impl Drop for Print<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("keyflow's log, newest first:\n{}", (self.0)());
            }
        }
    }
    Print(tail)
}

/// Panics on `{"panic": true}`, forwards anything else.
struct Fragile;

impl Processor for Fragile {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        assert!(record.value.get("panic").is_none(), "a bug in a processor");
        ctx.forward(record);
        Ok(())
    }
}

#[test]
fn a_stream_thread_that_panics_fails_health_and_readiness_and_join_says_why() {
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let topology = TopologyBuilder::new()
        .source("in", &[&s.input], Serde::String, Serde::Json)
        .processor("fragile", || Fragile, &["in"])
        .sink("out", &s.output, Serde::String, Serde::Json, &["fragile"])
        .build()
        .unwrap();
    let mut config = s.config.clone();
    config.state_dir = s.dir.path().join("fragile");
    let instance = Instance::start(config, topology).unwrap();
    let server = Server::start("127.0.0.1:0", Console::new(&unique("console"), Vec::new()), instance.status()).unwrap();
    let url = |path: &str| format!("http://{}{path}", server.address);
    wait_until("ready", Duration::from_secs(60), || get(&url("/ready")).0 == 200);
    produce(&s.bootstrap, &s.input, &[(0, "a".into(), br#"{"ok": 1}"#.to_vec()), (1, "b".into(), br#"{"panic": true}"#.to_vec())]);
    wait_until("/health fails", Duration::from_secs(30), || get(&url("/health")).0 == 503);
    let (code, body) = get(&url("/health"));
    assert_eq!(code, 503);
    assert!(body.contains("panicked") && body.contains("a bug in a processor"), "{body}");
    assert_eq!(get(&url("/ready")).0, 503);
    let e = instance.join().unwrap_err().to_string();
    assert!(e.contains("a bug in a processor"), "{e}");
}

/// Takes 30 ms per record, as a connector's blocking HTTP call does.
struct Slow;

impl Processor for Slow {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        std::thread::sleep(Duration::from_millis(30));
        ctx.forward(record);
        Ok(())
    }
}

#[test]
fn a_backlog_of_slow_records_commits_within_the_transaction_timeout_and_is_never_fenced() {
    let s = setup(Guarantee::ExactlyOnceV2, Duration::from_millis(100));
    let topology = TopologyBuilder::new()
        .source("in", &[&s.input], Serde::String, Serde::Json)
        .processor("slow", || Slow, &["in"])
        .sink("out", &s.output, Serde::String, Serde::Json, &["slow"])
        .build()
        .unwrap();
    let mut config = s.config.clone();
    config.state_dir = s.dir.path().join("slow");
    // 700 records take 21 s; one transaction may stay open 2 s (the broker aborts expired ones
    // within its 10 s check interval).
    config.producer.0.insert("transaction.timeout.ms".into(), "2000".into());
    let records: Vec<_> = (0..700).map(|i| (i, format!("doc-{}", i % 50), br#"{"n":1}"#.to_vec())).collect();
    produce(&s.bootstrap, &s.input, &records);
    let instance = Instance::start(config, topology).unwrap();
    wait_until("every slow record committed", Duration::from_secs(120), || {
        committed(&s.bootstrap, &s.config.application_id, &s.input) == records.len() as i64
    });
    let status = instance.status().snapshot();
    instance.stop();
    instance.join().unwrap();
    assert_eq!((status.aborts, status.migrations), (0, 0), "no transaction was aborted or fenced");
    assert_eq!(common::read_topic(&s.bootstrap, &s.output, "read_committed").len(), records.len());
    assert!(read_all(&s.bootstrap, &s.output).len() == records.len(), "nothing was written twice, even in aborted transactions");
}
