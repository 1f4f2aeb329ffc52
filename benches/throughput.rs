//! Throughput of the status-tracker topology (the peer workload: per-key state machine with a
//! count, last status, transition validity and running total; one output per input) on
//! librdkafka's in-process mock broker, for both guarantees at two commit intervals, against the
//! tuned stateless rdkafka consume->produce pipe on the same broker (the ceiling the broker
//! allows). `benches/peer` compares keyflow with Kafka Streams and Quix Streams on real Kafka.
//!
//! `cargo bench --bench throughput -- [--events 200000] [--keys 10000] [--partitions 4] [--bootstrap host:port]`
//!
//! Without `--bootstrap` each run gets a fresh in-process mock broker; with it, every run uses
//! its own topics and application id on that broker (e.g. tansu), created through the admin API.
//!
//! Figures are processing-only: from the first input handled to every input processed and
//! committed (the load is produced before the clock starts). Run on a quiet machine; quote medians
//! of several runs.

mod common;

use std::time::{Duration, Instant};

use common::Run;
use keyflow::builtin::status_tracker;
use keyflow::config::Config;
use keyflow::kafka;
use keyflow::runtime::{Guarantee, Instance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

struct Args {
    events: usize,
    keys: usize,
    partitions: i32,
    bootstrap: Option<String>,
}

fn args() -> Args {
    use common::number;
    Args {
        events: number("--events", 200_000),
        keys: number("--keys", 10_000),
        partitions: number("--partitions", 4) as i32,
        bootstrap: common::arg("--bootstrap"),
    }
}

fn load(bootstrap: &str, topic: &str, a: &Args) {
    let p: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "20").set("batch.num.messages", "10000").create().unwrap();
    for i in 0..a.events {
        let (key, value) = common::event(i, a.keys);
        kafka::send_waiting(&p, BaseRecord::to(topic).key(key.as_str()).payload(value.as_str())).unwrap();
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

/// Where one run happens: its broker (kept alive by the guard) and its topic and application names.
fn cluster(a: &Args, app: &str) -> Run {
    Run::new(a.bootstrap.as_deref(), a.partitions, app)
}

/// events/s of keyflow with `guarantee` and `commit` interval.
fn keyflow_run(a: &Args, guarantee: Guarantee, commit: Duration) -> f64 {
    let run = cluster(a, "bench");
    load(&run.bootstrap, &run.input, a);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_application(&run.app, &run.bootstrap, dir.path());
    config.processing_guarantee = guarantee;
    config.set_commit_interval(commit);
    let instance = Instance::start(config, status_tracker::topology(&run.input, &run.output, 3_600_000)).unwrap();
    let status = instance.status();
    // Done = every input processed and a commit completed after that (the mock does not store
    // transactional offsets, so committed group offsets cannot be the signal under EOS).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut commits_at_done = None;
    let end = loop {
        let s = status.snapshot();
        if commits_at_done.is_none() && s.processed + s.dead_lettered + s.skipped >= a.events as u64 {
            commits_at_done = Some(s.commits);
        }
        if commits_at_done.is_some_and(|c| s.commits > c) {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "benchmark did not finish: {s:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let start = status.first_input_at().expect("inputs were handled");
    instance.stop();
    instance.join().unwrap();
    a.events as f64 / (end - start).as_secs_f64()
}

/// events/s of the tuned stateless rdkafka pipe (`common::pipe`): the ceiling.
fn pipe_run(a: &Args) -> f64 {
    let run = cluster(a, "pipe");
    load(&run.bootstrap, &run.input, a);
    let first = common::pipe::run(&run.bootstrap, &run.input, &run.output, &run.app, |n| n >= a.events);
    a.events as f64 / first.expect("consumed").elapsed().as_secs_f64()
}

fn main() {
    let a = args();
    let broker = Run::broker(a.bootstrap.as_deref());
    println!("keyflow throughput: {} events, {} keys, {} partitions, {broker}", a.events, a.keys, a.partitions);
    let pipe = pipe_run(&a);
    println!("{:<44} {:>10.0} events/s", "stateless rdkafka pipe (ceiling)", pipe);
    for (guarantee, name) in [(Guarantee::AtLeastOnce, "at_least_once"), (Guarantee::ExactlyOnceV2, "exactly_once_v2")] {
        for ms in [100, 1_000] {
            let eps = keyflow_run(&a, guarantee, Duration::from_millis(ms));
            println!(
                "{:<44} {:>10.0} events/s  ({:.0}% of the pipe)",
                format!("keyflow status-tracker {name}, commit {ms} ms"),
                eps,
                100.0 * eps / pipe
            );
        }
    }
}
