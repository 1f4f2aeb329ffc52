//! Exactly-once on real Kafka, under the faults the local brokers cannot model: kill -9 of
//! instances while input flows, a zombie instance (SIGSTOP past its session) that wakes after
//! its partitions moved, and a transaction the broker aborts because its producer hung past
//! `transaction.timeout.ms`. Every test ends with the same check: as a read_committed reader
//! sees the output topic, every input produced exactly one output and every document's state is
//! exact.

use std::time::{Duration, Instant};

use keyflow_conformance::keyflow::assert_exactly_once;
use keyflow_conformance::workload::workload;
use keyflow_conformance::{App, Cluster, Keyflow};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn seed() -> u64 {
    let seed = std::env::var("KEYFLOW_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (KEYFLOW_SEED replays it)");
    seed
}

/// Lets `instance` run for `after` once it processes, then freezes it (SIGSTOP) for `frozen` and
/// wakes it.
fn freeze(instance: &Keyflow, after: Duration, frozen: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !instance.log().contains("task restored and running") {
        assert!(Instant::now() < deadline, "instance {} never started running a task\n{}", instance.index, instance.tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(after);
    instance.pause();
    std::thread::sleep(frozen);
    instance.resume();
}

/// Insists that `instance` logged one of `markers` (it noticed the injected fault): a run where
/// the fault never bit proves nothing.
fn saw(instance: &Keyflow, markers: &[&str], what: &str) {
    let log = instance.log();
    let seen = markers.iter().any(|m| log.contains(m));
    assert!(seen, "instance {} never logged {what} ({markers:?})\n{}", instance.index, instance.tail(30));
}

/// Sessions short enough that a dead member's partitions move within seconds.
const GROUP: &str = "[consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 500\n";

#[test]
fn kill_9_of_random_instances_loses_nothing_and_duplicates_nothing() {
    let cluster = Cluster::start("kill_9");
    let seed = seed();
    let mut rng = SmallRng::seed_from_u64(seed);
    let app = App::status_tracker(&cluster, "kill9", GROUP);
    let w = workload(2_000, 60_000, seed);
    let mut instances: Vec<_> = (0..3).map(|i| app.spawn(i)).collect();

    // Input keeps arriving (~6k/s for 10 s) while instances die and come back.
    let feeder = app.feed(&w, 6_000);
    let started = Instant::now();
    for k in 0..5 {
        std::thread::sleep(Duration::from_millis(rng.random_range(1_500..4_000)));
        let i = rng.random_range(0..instances.len());
        instances[i].kill9();
        eprintln!("kill {}: instance {i} at {:.1}s", k + 1, started.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1_500)));
        instances[i] = app.spawn(i);
    }
    feeder.join().unwrap();
    assert_exactly_once("kill_9", &app, &w, &instances, Duration::from_secs(180));
}

#[test]
fn a_zombie_that_wakes_after_its_partitions_moved_is_fenced() {
    let cluster = Cluster::start("zombie");
    let seed = seed();
    // A transaction timeout far longer than the pause: what stops the zombie must be fencing
    // through the group generation (KIP-447), not the broker aborting its transaction.
    let app = App::status_tracker(&cluster, "zombie", &format!("{GROUP}[producer]\ntransaction.timeout.ms = 120000\n"));
    let w = workload(2_000, 60_000, seed);
    let mut instances = vec![app.spawn(0), app.spawn(1)];
    let feeder = app.feed(&w, 3_000);
    // Mid-stream, with a transaction open, instance 0 freezes; its session expires and
    // instance 1 takes every partition and carries on from instance 0's last commit.
    // It wakes believing it still owns its partitions, with records processed and outputs sent
    // in an open transaction. Its commit must be refused and its outputs aborted.
    freeze(&instances[0], Duration::from_secs(5), Duration::from_secs(15));
    feeder.join().unwrap();
    assert_exactly_once("zombie", &app, &w, &instances, Duration::from_secs(180));
    // It found out either way: its commit refused ("task migrated") or its partitions reported
    // lost by the group before it tried.
    saw(&instances[0], &["task migrated", "lost=true"], "that it had been replaced");
    for k in &mut instances {
        k.terminate();
    }
}

#[test]
fn a_transaction_left_open_past_its_timeout_is_aborted_and_redone() {
    let cluster = Cluster::start("transaction_timeout");
    let seed = seed();
    // One instance whose group session outlives the pause: nobody takes its partitions, so only
    // the broker's transaction timeout (5 s) acts on the transaction it leaves open.
    let app =
        App::status_tracker(&cluster, "txn-timeout", "[consumer]\nsession.timeout.ms = 45000\n[producer]\ntransaction.timeout.ms = 5000\n");
    let w = workload(1_000, 30_000, seed);
    let mut instances = vec![app.spawn(0)];
    let feeder = app.feed(&w, 2_000);
    // Past the timeout and the coordinator's 1 s sweep: the transaction is aborted and the
    // producer's epoch bumped, so its next send or commit is refused.
    freeze(&instances[0], Duration::from_secs(4), Duration::from_secs(12));
    feeder.join().unwrap();
    assert_exactly_once("transaction_timeout", &app, &w, &instances, Duration::from_secs(180));
    // It must have found its transaction gone (a local broker that never times transactions
    // out lets it commit, which is also consistent, but shows nothing).
    saw(&instances[0], &["task migrated", "aborting"], "that its transaction was aborted");
    instances[0].terminate();
}
