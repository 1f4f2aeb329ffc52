//! keyflow against its peers on one broker, in one run: the stateless rdkafka pipe (the ceiling),
//! Kafka Streams (`benches/peer/kstreams`, built here with Maven) and Quix Streams
//! (`benches/peer/quix_status_tracker.py`), all running the status-tracker workload (per-key
//! count, last status, transition validity, running total; one JSON output per input), each as a
//! process of its own, measured from outside the same way:
//!
//! - **throughput**: `--events` loaded before the process starts; events/s between the first and
//!   the last output visible to a `read_committed` reader;
//! - **start-up**: process start to the first committed output (empty state, group join included);
//! - **CPU** per 1M events and **peak RSS**: `wait4`'s rusage after a graceful stop;
//! - **latency**: input create time to the output visible to `read_committed`, at a fixed input
//!   rate every system sustains: half the throughput of the slowest stateful system measured
//!   (`--latency-rate` to set it). Half the pipe's rate, the first idea, is beyond every stateful
//!   system on real Kafka (the pipe is ~10x faster), and a latency taken on a growing backlog
//!   measures the backlog;
//! - **restore**: `--restore-keys` keys built, the process stopped; started again on the same disk
//!   and then on an empty one: the difference of their times to first output, against a plain
//!   consumer reading the same changelogs.
//!
//! ```sh
//! tests/kafka/with-broker.sh cargo bench --profile dev --bench peer -- [--events 1000000] [--keys 10000]
//!     [--partitions 4] [--runs 3] [--systems pipe,keyflow,kstreams,quix] [--cases eos:100,eos:1000,alos:100,alos:1000]
//!     [--latency-secs 20] [--latency-rate N] [--restore-keys 1000000] [--bootstrap host:port]
//! ```
//!
//! The broker is `--bootstrap`, or `TEST_KAFKA_BOOTSTRAP` (set by `tests/kafka/with-broker.sh`).
//! Each figure is the median of `--runs` runs, with the lowest and highest beside it.

#[path = "../common/mod.rs"]
mod common;
mod measure;
mod report;
mod systems;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use measure::Observer;
use systems::{Case, Job, System};

pub struct Args {
    bootstrap: String,
    events: usize,
    keys: usize,
    partitions: i32,
    runs: usize,
    systems: Vec<System>,
    cases: Vec<Case>,
    latency_secs: f64,
    restore_keys: usize,
    latency_rate: Option<f64>,
}

fn args() -> Args {
    use common::{arg, number};
    let list = |name: &str, default: &str| arg(name).unwrap_or_else(|| default.to_owned());
    Args {
        bootstrap: arg("--bootstrap")
            .or_else(|| std::env::var("TEST_KAFKA_BOOTSTRAP").ok())
            .expect("--bootstrap host:port, or run under tests/kafka/with-broker.sh"),
        events: number("--events", 1_000_000),
        keys: number("--keys", 10_000),
        partitions: number("--partitions", 4) as i32,
        runs: number("--runs", 3),
        systems: list("--systems", "pipe,keyflow,kstreams,quix").split(',').map(System::parse).collect(),
        cases: list("--cases", "eos:100,eos:1000,alos:100,alos:1000")
            .split(',')
            .map(|c| {
                let (g, ms) = c.split_once(':').expect("--cases eos:100,alos:1000,...");
                Case { exactly_once: g == "eos", commit_ms: ms.parse().expect("commit interval in ms") }
            })
            .collect(),
        latency_secs: number("--latency-secs", 20) as f64,
        restore_keys: number("--restore-keys", 1_000_000),
        latency_rate: arg("--latency-rate").map(|r| r.parse().expect("--latency-rate events/s")),
    }
}

/// One throughput run's figures.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub events_per_s: f64,
    pub startup_s: f64,
    pub cpu_s_per_m: f64,
    pub max_rss_mb: f64,
}

/// One latency run's figures (ms), or None where the system fell behind the input rate.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub kept_up: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Restore {
    pub changelog_records: usize,
    /// Start to first output after a restart on the same disk (nothing to restore).
    pub kept_disk_s: f64,
    /// Start to first output after a restart on an empty disk.
    pub empty_disk_s: f64,
    pub plain_read_s: f64,
    pub max_rss_mb: f64,
}

/// The cases a system runs: the pipe has no guarantee and no commit interval of its own.
fn cases_of(system: System, a: &Args) -> Vec<Option<Case>> {
    if system == System::Pipe {
        vec![None]
    } else {
        a.cases.iter().copied().map(Some).collect()
    }
}

struct Names {
    input: String,
    output: String,
    app: String,
}

fn names(system: System) -> Names {
    let tag = format!("{:08x}", rand::random::<u32>());
    let short = match system {
        System::Pipe => "pipe",
        System::Keyflow => "keyflow",
        System::KafkaStreams => "kstreams",
        System::Quix => "quix",
    };
    Names { input: format!("peer-in-{tag}"), output: format!("peer-out-{tag}"), app: format!("peer-{short}-{tag}") }
}

fn job<'a>(a: &'a Args, n: &'a Names, dir: &'a Path, case: Option<Case>) -> Job<'a> {
    Job {
        bootstrap: &a.bootstrap,
        input: &n.input,
        output: &n.output,
        app: &n.app,
        state_dir: dir,
        case: case.unwrap_or(Case { exactly_once: false, commit_ms: 1000 }),
    }
}

fn throughput(a: &Args, system: System, case: Option<Case>, logs: &Path) -> Throughput {
    let n = names(system);
    measure::create_topics(&a.bootstrap, &[&n.input, &n.output], a.partitions);
    measure::load(&a.bootstrap, &n.input, 0, a.events, a.keys);
    let dir = logs.join(&n.app);
    let mut observer = Observer::new(&a.bootstrap, &n.output, a.partitions);
    let mut running = systems::start(system, &job(a, &n, &dir, case), logs);
    let done = observer.wait_for(a.events, Instant::now() + Duration::from_secs(1800), || running.check_alive());
    let end = Instant::now();
    let started = running.started;
    let usage = running.stop();
    assert!(done, "{} did not produce {} outputs in 30 min (saw {})", system.name(), a.events, observer.count);
    let (first, first_count) = observer.first.expect("outputs were seen");
    let _ = std::fs::remove_dir_all(&dir);
    Throughput {
        events_per_s: (a.events - first_count) as f64 / (end - first).as_secs_f64(),
        startup_s: (first - started).as_secs_f64(),
        cpu_s_per_m: usage.cpu_s * 1e6 / a.events as f64,
        max_rss_mb: usage.max_rss_mb,
    }
}

/// Starts `system`, waits until it answers one event (joined, running), then loads `rate`
/// events/s for `--latency-secs` (the first 3 s a warm-up) and reads every output.
fn latency(a: &Args, system: System, case: Option<Case>, rate: f64, logs: &Path) -> Latency {
    const WARM_UP_S: f64 = 3.0;
    let n = names(system);
    measure::create_topics(&a.bootstrap, &[&n.input, &n.output], a.partitions);
    let dir = logs.join(&n.app);
    let mut observer = Observer::new(&a.bootstrap, &n.output, a.partitions);
    let mut running = systems::start(system, &job(a, &n, &dir, case), logs);
    measure::load(&a.bootstrap, &n.input, 0, 1, a.keys);
    assert!(observer.wait_for(1, Instant::now() + Duration::from_secs(300), || running.check_alive()), "{} did not start", system.name());
    observer.latency_from = measure::now_ms() + (WARM_UP_S * 1000.0) as i64;
    let (bootstrap, input, keys, secs) = (a.bootstrap.clone(), n.input.clone(), a.keys, WARM_UP_S + a.latency_secs);
    let feeder = std::thread::spawn(move || measure::load_at_rate(&bootstrap, &input, rate, secs, keys));
    let expected = 1 + (rate * secs) as usize;
    // Read along while the feeder runs, so each latency is taken when the output shows.
    observer.wait_for(expected, Instant::now() + Duration::from_secs_f64(secs + 1.0), || running.check_alive());
    let sent = 1 + feeder.join().unwrap();
    // A system that keeps up shows the last outputs within a few commit intervals.
    let kept_up = observer.wait_for(sent, Instant::now() + Duration::from_secs(30), || running.check_alive());
    running.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let mut l = std::mem::take(&mut observer.latencies);
    l.sort_unstable();
    let at = |q: f64| l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(i64::MAX) as f64;
    Latency { p50: at(0.5), p99: at(0.99), max: l.last().copied().unwrap_or(i64::MAX) as f64, kept_up }
}

/// Builds `--restore-keys` keys of state (exactly-once, 100 ms) and stops. Starts again on the
/// same disk and answers one new event; stops, wipes the state directory, starts again and
/// answers one more. The restore is the difference of the two starts (join and first commit
/// alike); a plain consumer reads the same changelogs for comparison.
fn restore(a: &Args, system: System, logs: &Path) -> Restore {
    let case = Some(Case { exactly_once: true, commit_ms: 100 });
    let keys = a.restore_keys;
    let n = names(system);
    measure::create_topics(&a.bootstrap, &[&n.input, &n.output], a.partitions);
    measure::load(&a.bootstrap, &n.input, 0, keys, keys);
    let dir = logs.join(&n.app);
    let mut observer = Observer::new(&a.bootstrap, &n.output, a.partitions);
    let mut running = systems::start(system, &job(a, &n, &dir, case), logs);
    let built = observer.wait_for(keys, Instant::now() + Duration::from_secs(1800), || running.check_alive());
    let usage = running.stop();
    assert!(built, "{} did not build {keys} keys in 30 min", system.name());
    let changelogs = measure::changelogs(&a.bootstrap, &n.app);
    assert!(!changelogs.is_empty(), "no changelog topic of {} found", n.app);
    let (records, plain_read_s) = measure::read_all(&a.bootstrap, &changelogs);
    // One new key per start: its output shows once the task runs.
    let mut start_and_answer = |nth: usize| {
        measure::load(&a.bootstrap, &n.input, keys + nth, keys + nth + 1, keys + 2);
        let mut running = systems::start(system, &job(a, &n, &dir, case), logs);
        let answered = observer.wait_for(keys + nth + 1, Instant::now() + Duration::from_secs(600), || running.check_alive());
        let s = running.started.elapsed().as_secs_f64();
        running.stop();
        assert!(answered, "{} did not answer after a restart in 10 min", system.name());
        s
    };
    let kept_disk_s = start_and_answer(0);
    std::fs::remove_dir_all(&dir).unwrap();
    let empty_disk_s = start_and_answer(1);
    let _ = std::fs::remove_dir_all(&dir);
    Restore { changelog_records: records, kept_disk_s, empty_disk_s, plain_read_s, max_rss_mb: usage.max_rss_mb }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--pipe-child") {
        // The pipe as a process of its own, until SIGTERM.
        let [b, input, output, group] = [1, 2, 3, 4].map(|k| argv[i + k].clone());
        common::pipe::run(&b, &input, &output, &group, |_| false);
        return;
    }
    let a = args();
    let logs = tempfile::Builder::new().prefix("keyflow-peer-").tempdir().unwrap().keep();
    for &s in &a.systems {
        systems::prepare(s);
    }
    println!(
        "peer benchmark: broker {}, {} events over {} keys, {} partitions, {} runs each; process logs in {}",
        a.bootstrap,
        a.events,
        a.keys,
        a.partitions,
        a.runs,
        logs.display()
    );
    let mut tp: BTreeMap<report::Key, Vec<Throughput>> = BTreeMap::new();
    for run in 0..a.runs {
        for (si, &system) in a.systems.iter().enumerate() {
            for case in cases_of(system, &a) {
                let t = throughput(&a, system, case, &logs);
                println!("  run {}: {} {}: {t:.2?}", run + 1, system.name(), case.map_or("-".into(), Case::label));
                tp.entry((si, case.map(|c| (c.exactly_once, c.commit_ms)))).or_default().push(t);
            }
        }
    }
    report::throughput(&a, &tp);
    if a.latency_secs > 0.0 {
        let rate = a.latency_rate.unwrap_or_else(|| report::latency_rate(&a, &tp));
        let mut lat: BTreeMap<report::Key, Vec<Latency>> = BTreeMap::new();
        for run in 0..a.runs {
            for (si, &system) in a.systems.iter().enumerate() {
                for case in cases_of(system, &a) {
                    let l = latency(&a, system, case, rate, &logs);
                    println!("  run {}: {} {} at {rate:.0}/s: {l:?}", run + 1, system.name(), case.map_or("-".into(), Case::label));
                    lat.entry((si, case.map(|c| (c.exactly_once, c.commit_ms)))).or_default().push(l);
                }
            }
        }
        report::latency(&a, rate, &lat);
    }
    if a.restore_keys > 0 {
        let mut rs: BTreeMap<usize, Vec<Restore>> = BTreeMap::new();
        for run in 0..a.runs {
            for (si, &system) in a.systems.iter().enumerate().filter(|(_, &s)| s != System::Pipe) {
                let r = restore(&a, system, &logs);
                println!("  run {}: {} restore of {} keys: {r:?}", run + 1, system.name(), a.restore_keys);
                rs.entry(si).or_default().push(r);
            }
        }
        report::restore(&a, &tp, &rs);
    }
}
