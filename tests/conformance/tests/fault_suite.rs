//! The fault suite: three `keyflow run` processes of one application on a three-node Apache
//! Kafka, input flowing throughout, while the test
//! - kills a random instance with kill -9 (`KEYFLOW_FAULT_KILLS` cycles, default 20), each at a
//!   random moment, and restarts it on its own disk;
//! - freezes one instance (SIGSTOP) past its session, and wakes it after its partitions moved;
//! - kills a broker node and restarts it (partition leaders and coordinators move);
//! - lets the log cleaner compact the changelogs every few seconds (1 s segments, dirty ratio
//!   0.01), so restores read compacted logs.
//!
//! Verdict from a `read_committed` reader of the output: under exactly-once, one output per good
//! input (0 duplicates, 0 missing) and every document's state equal to the reference computed
//! from the inputs; under at-least-once, 0 missing and exact state, duplicates counted. The
//! seed is printed first; `KEYFLOW_SEED` replays it, `KEYFLOW_FAULT_EVENTS` sets the size
//! (default 100k events).
//!
//!     tests/kafka/with-broker.sh cargo nextest run -p keyflow-conformance fault_suite --no-capture

use std::time::{Duration, Instant};

use keyflow_conformance::keyflow::{assert_at_least_once, assert_exactly_once};
use keyflow_conformance::workload::workload;
use keyflow_conformance::{App, Cluster};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Changelogs the log cleaner compacts within seconds of a write.
const AGGRESSIVE_CLEANING: [(&str, &str); 5] = [
    ("segment.ms", "1000"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("min.compaction.lag.ms", "0"),
    ("delete.retention.ms", "1000"),
    ("max.compaction.lag.ms", "2000"),
];

/// Sessions short enough that a dead or frozen member's partitions move within seconds.
const GROUP: &str = "[consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 500\n";

fn run(guarantee: &str) {
    let seed: u64 = std::env::var("KEYFLOW_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (KEYFLOW_SEED={seed} replays it)");
    let (events, kills) = (env_or("KEYFLOW_FAULT_EVENTS", 100_000), env_or("KEYFLOW_FAULT_KILLS", 20));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::own("fault_suite", 3);
    let mut cleaning = AGGRESSIVE_CLEANING.to_vec();
    if guarantee == "at_least_once" {
        // At-least-once has no transaction to hide a crashed attempt's changelog writes, so a
        // cleaner that ran before the next commit could drop a key's committed value for one the
        // restore must ignore: the README's known limit, and its advice (a compaction lag).
        cleaning.retain(|(k, _)| !k.ends_with("compaction.lag.ms"));
        cleaning.extend([("min.compaction.lag.ms", "30000"), ("max.compaction.lag.ms", "40000")]);
    }
    let app = App::status_tracker_with(&cluster, "faults", guarantee, &cleaning, GROUP);
    let w = workload(5_000, events, seed);
    let mut instances: Vec<_> = (0..3).map(|i| app.spawn(i)).collect();

    // Input flows over about as long as the faults take (~2 s a kill cycle, ~35 s for the rest).
    let schedule = Duration::from_secs(2 * kills as u64 + 35);
    let feeder = app.feed(&w, (events as u64 * 1_000 / schedule.as_millis() as u64).max(1) as usize);
    let started = Instant::now();
    let at = || started.elapsed().as_secs_f64();
    let (zombie_at, broker_at) = (kills / 3, 2 * kills / 3);
    for k in 0..kills {
        if k == zombie_at {
            // The zombie: frozen past its session while its partitions move, then woken.
            let i = rng.random_range(0..instances.len());
            eprintln!("{:.1}s: freezing instance {i} for 15 s", at());
            instances[i].pause();
            std::thread::sleep(Duration::from_secs(15));
            instances[i].resume();
            eprintln!("{:.1}s: instance {i} woken", at());
        }
        if k == broker_at {
            let node = rng.random_range(0..3);
            eprintln!("{:.1}s: kill -9 of broker node {}", at(), node + 1);
            cluster.kafka_mut().kill(node);
            std::thread::sleep(Duration::from_secs(5));
            cluster.kafka_mut().restart(node);
            eprintln!("{:.1}s: broker node {} back", at(), node + 1);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(800..2_500)));
        let i = rng.random_range(0..instances.len());
        instances[i].kill9();
        eprintln!("{:.1}s: kill -9 {} of {kills}: instance {i}", at(), k + 1);
        std::thread::sleep(Duration::from_millis(rng.random_range(100..1_000)));
        instances[i] = app.spawn(i);
    }
    feeder.join().unwrap();
    eprintln!("{:.1}s: input done", at());

    // The instances' logs outlive the run, for a failure to be read.
    let kept = std::env::temp_dir().join(format!("keyflow-fault-suite-{guarantee}-{seed}"));
    std::fs::create_dir_all(&kept).unwrap();
    for k in &instances {
        std::fs::copy(&k.log, kept.join(k.log.file_name().unwrap())).unwrap();
    }
    eprintln!("instance logs copied to {}", kept.display());
    let limit = Duration::from_secs(300);
    if guarantee == "exactly_once_v2" {
        assert_exactly_once("fault_suite", &app, &w, &instances, limit);
        // The kills hit uncommitted work: aborted transactions left outputs a read_committed
        // reader never saw.
        let (written, committed) = (app.written_outputs().len(), app.committed_outputs().len());
        eprintln!("fault_suite: {written} outputs written, {committed} committed: {} in aborted transactions", written - committed);
        assert!(written > committed, "no kill hit an open transaction: the faults proved nothing");
    } else {
        let duplicates = assert_at_least_once("fault_suite", &app, &w, &instances, limit);
        eprintln!("fault_suite: {duplicates} outputs written twice (allowed under at-least-once)");
    }
    let migrated = instances.iter().filter(|k| k.log().contains("task migrated") || k.log().contains("lost=true")).count();
    eprintln!("fault_suite: {migrated} instance logs show a fenced or lost generation");
    for k in &mut instances {
        k.terminate();
    }
}

#[test]
fn fault_suite_exactly_once_on_three_brokers() {
    run("exactly_once_v2");
}

#[test]
fn fault_suite_at_least_once_on_three_brokers() {
    run("at_least_once");
}
