//! keyflow as it is deployed: `keyflow run` processes of one application, each with its own
//! state directory and log, that tests kill (-9), pause (SIGSTOP: a zombie) and restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::workload::{final_states_of, produce_paced, read_topic, Workload, PARTITIONS};
use crate::Cluster;

/// The `keyflow` binary: `KEYFLOW_BIN`, or the workspace's debug build (brought up to date
/// first, so the suite never runs a stale binary; a no-op when it is).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("KEYFLOW_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // With its tests: the binary `cargo nextest run` built (dev-dependencies' features
        // unified), so nothing compiles again; `--bin keyflow` alone would build RocksDB twice.
        let ok =
            Command::new(cargo).args(["build", "-p", "keyflow", "--bins", "--tests"]).current_dir(&root).status().expect("cargo").success();
        assert!(ok, "cargo build --bin keyflow failed");
        target.join("debug/keyflow")
    })
}

/// One application: its topics, its config file and where its instances keep state and logs.
pub struct App {
    pub id: String,
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl App {
    /// The status-tracker application under exactly-once, with its input and output topics
    /// created; `extra` is appended to the config (e.g. `[producer]` settings).
    pub fn status_tracker(cluster: &Cluster, prefix: &str, extra: &str) -> App {
        Self::status_tracker_with(cluster, prefix, "exactly_once_v2", &[], extra)
    }

    /// The same under `guarantee`, with the changelogs created beforehand with
    /// `changelog_config` (e.g. a log cleaner that compacts within seconds).
    pub fn status_tracker_with(cluster: &Cluster, prefix: &str, guarantee: &str, changelog_config: &[(&str, &str)], extra: &str) -> App {
        Self::status_tracker_topics(cluster, prefix, guarantee, changelog_config, &[], extra)
    }

    /// The same, the output topic created with `output_config` (e.g. `max.message.bytes`).
    pub fn status_tracker_topics(
        cluster: &Cluster,
        prefix: &str,
        guarantee: &str,
        changelog_config: &[(&str, &str)],
        output_config: &[(&str, &str)],
        extra: &str,
    ) -> App {
        let tag = format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>());
        let (id, input, output) = (format!("{tag}-app"), format!("{tag}-events"), format!("{tag}-statuses"));
        cluster.create_topics(&[(&input, PARTITIONS)]);
        cluster.create_topics_with(&[(&output, PARTITIONS)], output_config);
        if !changelog_config.is_empty() {
            let changelogs = ["documents", "keyflow-timers"].map(|store| format!("{id}-{store}-changelog"));
            let mut config = vec![("cleanup.policy", "compact")];
            config.extend_from_slice(changelog_config);
            cluster.create_topics_with(&changelogs.iter().map(|t| (t.as_str(), PARTITIONS)).collect::<Vec<_>>(), &config);
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("app.toml");
        let bootstrap = &cluster.bootstrap;
        let replication = cluster.replication();
        std::fs::write(
            &config,
            format!(
                "application.id = \"{id}\"\nbootstrap.servers = \"{bootstrap}\"\nprocessing.guarantee = \"{guarantee}\"\n\
                 replication.factor = {replication}\n\
                 [topology]\nbuiltin = \"status-tracker\"\ninput = \"{input}\"\noutput = \"{output}\"\nsla.ms = 3600000\n{extra}\n"
            ),
        )
        .unwrap();
        App { id, bootstrap: bootstrap.clone(), input, output, dir, config }
    }

    /// Starts instance `i` on its own state directory (the same one each time it restarts).
    pub fn spawn(&self, i: usize) -> Keyflow {
        self.spawn_with(i, &[])
    }

    /// [`App::spawn`], with `KEYFLOW_*` overrides of its config (e.g. `KEYFLOW_HTTP_LISTEN`).
    pub fn spawn_with(&self, i: usize, overrides: &[(&str, &str)]) -> Keyflow {
        let log = self.dir.path().join(format!("instance-{i}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = Command::new(binary());
        // keyflow reads KEYFLOW_* as config overrides: the test's own (KEYFLOW_SEED, ...) are
        // not for it.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KEYFLOW_")) {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .env("KEYFLOW_STATE_DIR", self.dir.path().join(format!("state-{i}")))
            .envs(overrides.iter().copied())
            .env("RUST_LOG", "keyflow=info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Keyflow { child: Some(child), log, index: i }
    }

    /// Produces the workload's events to the input topic in the background, `per_second`, so
    /// input keeps arriving while the test injects faults.
    pub fn feed(&self, w: &Workload, per_second: usize) -> std::thread::JoinHandle<()> {
        let (bootstrap, topic, events) = (self.bootstrap.clone(), self.input.clone(), w.events.clone());
        std::thread::spawn(move || produce_paced(&bootstrap, &topic, &events, Some(per_second)))
    }

    /// Every committed output, as a read_committed consumer downstream sees it.
    pub fn committed_outputs(&self) -> Vec<(String, Vec<u8>)> {
        read_topic(&self.bootstrap, &self.output, "read_committed")
    }

    /// Every output written, aborted transactions' included (read_uncommitted).
    pub fn written_outputs(&self) -> Vec<(String, Vec<u8>)> {
        read_topic(&self.bootstrap, &self.output, "read_uncommitted")
    }

    /// Waits until the committed outputs report `expected` for every document (or `limit`
    /// passes), and returns the committed outputs.
    pub fn converge(&self, expected: &BTreeMap<String, (u64, f64)>, limit: Duration) -> Vec<(String, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            let outputs = self.committed_outputs();
            if final_states_of(&outputs) == *expected || Instant::now() > deadline {
                return outputs;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// A running `keyflow run` process.
pub struct Keyflow {
    child: Option<Child>,
    pub log: PathBuf,
    pub index: usize,
}

impl Keyflow {
    /// SIGKILL: no commit, no abort, no leaving the group.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGSTOP: the process keeps its sockets and its open transaction but does nothing, as a
    /// process in a long GC pause or on a partitioned host would. The group and the
    /// transaction coordinator see it as gone; it does not know.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: the zombie wakes and carries on where it was.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM, and how long the process took to exit and whether it exited cleanly; `None` if
    /// it was still running after `limit` (it is then killed).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<(Duration, bool)> {
        self.signal("-TERM");
        let started = Instant::now();
        let mut c = self.child.take()?;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return Some((started.elapsed(), status.success()));
            }
            if started.elapsed() > limit {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").arg(sig).arg(c.id().to_string()).status().is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {}", c.id());
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- instance {} ({})\n{}", self.index, self.log.display(), lines[lines.len().saturating_sub(n)..].join("\n"))
    }
}

impl Drop for Keyflow {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = Command::new("kill").arg("-CONT").arg(c.id().to_string()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a test saw at the end, checked against exactly-once: every document's state exact, every
/// output present, none twice (read_committed). Panics with the instances' last log lines if not.
pub fn assert_exactly_once(test: &str, app: &App, w: &Workload, instances: &[Keyflow], limit: Duration) {
    let (outputs, duplicates, report) = assert_complete(test, app, w, instances, limit, false);
    assert_eq!(duplicates, 0, "{report}: a read_committed reader saw outputs twice");
    assert_eq!(outputs, w.good(), "{report}: one committed output per good input");
}

/// What a test saw at the end, checked against at-least-once: every document's state exact and
/// every output present; outputs written twice are allowed, and counted. Returns that count.
pub fn assert_at_least_once(test: &str, app: &App, w: &Workload, instances: &[Keyflow], limit: Duration) -> usize {
    assert_complete(test, app, w, instances, limit, true).1
}

/// Waits for the outputs to converge, then asserts exact state and no missing output. Returns
/// how many outputs there are, how many of them repeat an earlier one, and the report line.
fn assert_complete(
    test: &str,
    app: &App,
    w: &Workload,
    instances: &[Keyflow],
    limit: Duration,
    duplicates_allowed: bool,
) -> (usize, usize, String) {
    let started = Instant::now();
    let outputs = app.converge(&w.expected, limit);
    let got = final_states_of(&outputs);
    let missing = crate::workload::missing_outputs(&w.expected, &outputs);
    let duplicates = crate::workload::duplicated_outputs(&outputs);
    let report = format!(
        "{test}: {} inputs ({} good), {} committed outputs, {duplicates} duplicated, {} documents missing outputs; converged {:.1}s after the faults",
        w.events.len(),
        w.good(),
        outputs.len(),
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{report}");
    if got != w.expected || !missing.is_empty() || (duplicates > 0 && !duplicates_allowed) {
        for k in instances {
            eprintln!("{}", k.tail(25));
        }
    }
    crate::workload::assert_exact(&w.expected, &got);
    for doc in missing.iter().take(3) {
        let counts: Vec<u64> = outputs
            .iter()
            .filter(|(k, _)| k == doc)
            .filter_map(|(_, v)| serde_json::from_slice::<serde_json::Value>(v).ok()?["count"].as_u64())
            .collect();
        eprintln!("{doc}: expected counts 1..={}, committed outputs carry {counts:?}", w.expected[doc].0);
    }
    assert!(missing.is_empty(), "{report}: e.g. {:?}", &missing[..missing.len().min(5)]);
    (outputs.len(), duplicates, report)
}
