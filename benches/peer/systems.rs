//! The systems the peer benchmark runs, each as a process of its own, so that every one is
//! measured the same way: CPU time and peak resident set from `wait4`'s `rusage` once it has
//! stopped (SIGTERM, then a graceful shutdown).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// The stateless rdkafka pipe (the ceiling), this binary run with `--pipe-child`.
    Pipe,
    Keyflow,
    KafkaStreams,
    Quix,
}

impl System {
    pub fn parse(name: &str) -> System {
        match name {
            "pipe" => System::Pipe,
            "keyflow" => System::Keyflow,
            "kstreams" => System::KafkaStreams,
            "quix" => System::Quix,
            other => panic!("unknown system `{other}` (pipe, keyflow, kstreams, quix)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            System::Pipe => "rdkafka pipe",
            System::Keyflow => "keyflow",
            System::KafkaStreams => "Kafka Streams",
            System::Quix => "Quix Streams",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub exactly_once: bool,
    pub commit_ms: u64,
}

impl Case {
    pub fn label(self) -> String {
        format!("{} {} ms", if self.exactly_once { "exactly_once_v2" } else { "at_least_once" }, self.commit_ms)
    }
}

/// What one process is asked to do: its topics, group and state directory.
pub struct Job<'a> {
    pub bootstrap: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub app: &'a str,
    pub state_dir: &'a Path,
    pub case: Case,
}

/// What a stopped process used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub max_rss_mb: f64,
}

/// A running system; [`Running::stop`] ends it and reports its usage.
pub struct Running {
    child: Child,
    pub started: Instant,
    log: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kstreams_dir() -> PathBuf {
    repo().join("benches/peer/kstreams")
}

/// Makes `system` ready to start, or says what it lacks.
pub fn prepare(system: System) {
    match system {
        System::KafkaStreams => build_kafka_streams(),
        System::Quix => {
            let ok = Command::new("python3").args(["-c", "import quixstreams"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
            assert!(ok, "Quix Streams is not installed: pip install quixstreams==3.28.1 (or leave quix out of --systems)");
        }
        System::Pipe | System::Keyflow => {}
    }
}

/// Builds the Kafka Streams peer (Maven resolves Kafka Streams and its RocksDB from Maven Central).
fn build_kafka_streams() {
    let status = Command::new("mvn")
        .args(["-q", "-f"])
        .arg(kstreams_dir().join("pom.xml"))
        .args(["clean", "package"])
        .status()
        .expect("mvn (Maven) runs");
    assert!(status.success(), "the Kafka Streams peer did not build");
}

pub fn start(system: System, job: &Job, logs: &Path) -> Running {
    let log = logs.join(format!("{}.log", job.app));
    let mut cmd = match system {
        System::Pipe => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--pipe-child", job.bootstrap, job.input, job.output, job.app]);
            c
        }
        System::Keyflow => {
            let config = job.state_dir.with_extension("toml");
            std::fs::write(&config, keyflow_config(job)).unwrap();
            let mut c = Command::new(env!("CARGO_BIN_EXE_keyflow"));
            c.arg("run").arg("--config").arg(&config).env("RUST_LOG", "warn");
            c
        }
        System::KafkaStreams => {
            let dir = kstreams_dir();
            let mut c = Command::new("java");
            c.arg("-Xmx1g")
                .arg("-cp")
                .arg(format!("{}:{}/*", dir.join("target/classes").display(), dir.join("target/lib").display()))
                .arg("io.keyflow.peer.StatusTracker")
                .args(["--bootstrap", job.bootstrap, "--input", job.input, "--output", job.output, "--application-id", job.app])
                .arg("--state-dir")
                .arg(job.state_dir)
                .args(["--guarantee", if job.case.exactly_once { "exactly_once_v2" } else { "at_least_once" }])
                .args(["--commit-ms", &job.case.commit_ms.to_string()]);
            c
        }
        System::Quix => {
            let mut c = Command::new("python3");
            c.arg(repo().join("benches/peer/quix_status_tracker.py"))
                .args(["serve", "--bootstrap", job.bootstrap, "--input", job.input, "--output", job.output, "--group", job.app])
                .arg("--state-dir")
                .arg(job.state_dir)
                .args(["--guarantee", if job.case.exactly_once { "exactly-once" } else { "at-least-once" }])
                .args(["--commit-interval", &format!("{}", job.case.commit_ms as f64 / 1000.0)]);
            c
        }
    };
    let out = std::fs::File::create(&log).unwrap();
    cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{} did not start: {e}", system.name()));
    Running { child, started, log }
}

fn keyflow_config(job: &Job) -> String {
    format!(
        "application.id = \"{}\"\nbootstrap.servers = \"{}\"\nstate.dir = \"{}\"\nprocessing.guarantee = \"{}\"\n\
         commit.interval.ms = {}\nreplication.factor = 1\n[topology]\nbuiltin = \"status-tracker\"\ninput = \"{}\"\n\
         output = \"{}\"\nsla.ms = 3600000\n",
        job.app,
        job.bootstrap,
        job.state_dir.display(),
        if job.case.exactly_once { "exactly_once_v2" } else { "at_least_once" },
        job.case.commit_ms,
        job.input,
        job.output
    )
}

impl Running {
    /// Panics with the process's log if it has died.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the process exited ({status}); its log {}:\n{}", self.log.display(), tail(&log));
        }
    }

    /// SIGTERM, then waits for the graceful shutdown (killed after 60 s).
    pub fn stop(self) -> Usage {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls on our own child's pid; `rusage` is written by wait4.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            loop {
                let r = libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage);
                if r == pid {
                    break;
                }
                if Instant::now() > deadline {
                    libc::kill(pid, libc::SIGKILL);
                    libc::wait4(pid, &mut status, 0, &mut usage);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            // ru_maxrss is in KiB on Linux.
            Usage { cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime), max_rss_mb: usage.ru_maxrss as f64 / 1024.0 }
        }
    }
}

fn tail(s: &str) -> &str {
    let cut = s.len().saturating_sub(4000);
    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[cut..]
}
