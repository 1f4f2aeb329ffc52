//! Three `keyflow run` processes of one application on a broker that runs here (librdkafka's mock
//! cluster, reached over TCP), 100k events, and kill -9 of a random process every few seconds,
//! restarted on its own disk. At the end the state equals a reference computed from the inputs
//! (no input applied twice, none lost) and no output is missing. The mock keeps aborted
//! transactions' records visible, so duplicates in the output topic are counted and reported.
//!
//! `KEYFLOW_FAULT_EVENTS` (default 100000) and `KEYFLOW_FAULT_KILLS` (default 6) size it;
//! `cargo nextest run --test fault_processes --no-capture` prints the report.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exact, duplicated_outputs, final_states, missing_outputs, produce, read_all, unique, workload, PARTITIONS};
use keyflow::builtin::status_tracker;
use keyflow::config::Config;
use keyflow::kafka::{self, MockProvisioner, Provisioner, TopicSpec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::mocking::MockCluster;

struct Process {
    child: Child,
    log: PathBuf,
}

fn spawn(config: &Path, state: &Path, log: &Path) -> Process {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyflow"));
    // keyflow reads KEYFLOW_* as config overrides: the test's own (KEYFLOW_SEED, ...) are not
    // for it.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEYFLOW_")) {
        cmd.env_remove(k);
    }
    let child = cmd
        .args(["run", "--config"])
        .arg(config)
        .env("KEYFLOW_STATE_DIR", state)
        .env("RUST_LOG", "keyflow=info")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    Process { child, log: log.to_owned() }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn three_processes_killed_at_random_end_with_exact_state_and_every_output() {
    let events = env_or("KEYFLOW_FAULT_EVENTS", 100_000);
    let kills = env_or("KEYFLOW_FAULT_KILLS", 6);
    let seed: u64 = std::env::var("KEYFLOW_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);

    let cluster = MockCluster::new(3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (app, input, output) = (unique("fault"), unique("events"), unique("statuses"));
    let topology = status_tracker::topology(&input, &output, 3_600_000);
    let mut config = Config::for_application(&app, &bootstrap, dir.path());
    config.provision_topics = false;
    let p = MockProvisioner(&cluster);
    p.ensure(&[
        TopicSpec { name: input.clone(), partitions: PARTITIONS, compacted: false },
        TopicSpec { name: output.clone(), partitions: PARTITIONS, compacted: false },
    ])
    .unwrap();
    p.ensure(&kafka::internal_topics(&config, &topology, PARTITIONS)).unwrap();
    let cfg = dir.path().join("app.toml");
    std::fs::write(
        &cfg,
        format!(
            "application.id = \"{app}\"\nbootstrap.servers = \"{bootstrap}\"\nprocessing.guarantee = \"exactly_once_v2\"\ntopics.provision = false\n\
             [topology]\nbuiltin = \"status-tracker\"\ninput = \"{input}\"\noutput = \"{output}\"\nsla.ms = 3600000\n\
             [consumer]\nsession.timeout.ms = 6000\nheartbeat.interval.ms = 500\n"
        ),
    )
    .unwrap();

    let w = workload(2_000, events, seed);
    let started = Instant::now();
    let mut procs: Vec<Process> =
        (0..3).map(|i| spawn(&cfg, &dir.path().join(format!("state-{i}")), &dir.path().join(format!("instance-{i}.log")))).collect();
    produce(&bootstrap, &input, &w.events);

    // Kill -9 a random process every 2-5 s and restart it on its own disk a moment later.
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(2_000..5_000)));
        let i = rng.random_range(0..procs.len());
        procs[i].child.kill().unwrap(); // SIGKILL: no commit, no leave
        procs[i].child.wait().unwrap();
        eprintln!("kill {}: instance {i} killed at {:.1}s", k + 1, started.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1_500)));
        procs[i] = spawn(&cfg, &dir.path().join(format!("state-{i}")), &procs[i].log);
    }

    // The state converges on the reference (or the test reports what it saw).
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut got = final_states(&bootstrap, &output);
    while got != w.expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        got = final_states(&bootstrap, &output);
    }
    let elapsed = started.elapsed();
    for p in &mut procs {
        let _ = Command::new("kill").arg("-TERM").arg(p.child.id().to_string()).status();
    }
    for p in &mut procs {
        let _ = p.child.wait();
    }
    if got != w.expected {
        for p in &procs {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            eprintln!(
                "--- {} (last lines)\n{}",
                p.log.display(),
                log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    assert_exact(&w.expected, &got);

    // No output missing: per document, every count 1..=n was emitted at least once.
    let outputs = read_all(&bootstrap, &output);
    let missing = missing_outputs(&w.expected, &outputs);
    assert!(missing.is_empty(), "{} documents miss outputs, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    let good = w.events.len() - w.malformed;
    eprintln!(
        "fault test (seed {seed}): {} events, {kills} kill -9s, {:.1}s; state exact for {} documents; {} outputs for {good} good inputs: {} duplicates let through by the broker (aborted transactions stay visible on the mock)",
        w.events.len(),
        elapsed.as_secs_f64(),
        w.expected.len(),
        outputs.len(),
        duplicated_outputs(&outputs)
    );
}
