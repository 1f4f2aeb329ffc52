//! `keyflow demo`: the document-approval architecture on one machine with nothing installed.
//!
//! librdkafka's in-process mock cluster; the document-approval workflow (two instances in one
//! group, its 48 h escalation shortened); the connectors application (decisions by embedded rules
//! mirroring `topologies/decisions/document-routing.dmn`, human tasks embedded in a Kafka topic);
//! simulated services and reviewers (`simulated`); Alfresco-style upload events for N documents.
//! Every document's outcome is known in advance, so the summary is checked, not just printed.

pub mod simulated;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};
use serde_json::{json, Value};

use crate::config::Config;
use crate::connectors::ConnectorsConfig;
use crate::console::{Console, DeadLetters};
use crate::kafka::read::read_to_end;
use crate::kafka::{self, MockProvisioner, Provisioner as _, QuietEof, TopicSpec};
use crate::observe::Server;
use crate::runtime::{Guarantee, Instance, StatusSnapshot};
use crate::workflow;

const DEFINITION: &str = include_str!("../../topologies/document-approval.toml");
const WORKFLOW_APP: &str = "demo-document-approval";
const CONNECTORS_APP: &str = "demo-connectors";
const TRANSITIONS: &str = "document-approval.transitions";
const HUMAN_TASKS: &str = "document-approval.human-tasks";
const DECISION_RESULTS: &str = "document-approval.decision-results";
const TASK_RESULTS: &str = "document-approval.task-results";
const DOCUMENT_UPDATES: &str = "document-approval.document-updates";
const NOTIFICATIONS: &str = "notifications";

/// The routing decision as rules, the same as the DMN file (hit policy FIRST).
const RULES: &str = r#"
[decisions]
backend = "rules"
[[decisions.rules.document-routing]]
when = "mimeType == 'application/x-msdownload' || mimeType == 'application/x-sh'"
outcome = { route = "reject", reason = "executable content" }
[[decisions.rules.document-routing]]
when = "classification == 'spam'"
outcome = { route = "reject", reason = "classified as spam" }
[[decisions.rules.document-routing]]
when = "classification == 'invoice' && sizeBytes < 10000000"
outcome = { route = "auto-approve", reason = "invoice under 10 MB" }
[[decisions.rules.document-routing]]
when = "true"
outcome = { route = "manual", reason = "needs a reviewer" }
[tasks]
backend = "embedded"
"#;

#[derive(Debug, Clone)]
pub struct Options {
    pub documents: usize,
    pub partitions: i32,
    pub guarantee: Guarantee,
    /// The review escalation (48 h in the definition).
    pub escalate_after: Duration,
    pub output: Output,
    /// After the summary, keep the instances running, keep uploading documents, and serve the
    /// web console on this address until interrupted.
    pub serve: Option<String>,
}

/// How the demo reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Progress each second and a summary table.
    Text,
    /// Only the summary, as JSON.
    Json,
    /// Nothing: the caller reads the returned `Summary` (the benchmark).
    Quiet,
}

/// The run in figures.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every document ended where its inputs lead and the counts add up.
    pub ok: bool,
    /// What did not add up, when not `ok`.
    pub problems: Vec<String>,
    pub documents: usize,
    /// Repository events uploaded (documents plus malformed copies).
    pub events: usize,
    /// From the first upload to the last document's final state.
    pub elapsed: Duration,
    /// Records processed by all instances (workflow and connectors).
    pub records_processed: u64,
}

/// What the run produced, read back from the topics.
#[derive(Debug, Default)]
struct Outcome {
    finals: BTreeMap<String, usize>,
    escalated: usize,
    decisions: usize,
    tasks_opened: usize,
    tasks_completed: usize,
    tasks_withdrawn: usize,
    /// Runs started after the first (a new version of the document).
    new_runs: usize,
    superseded: usize,
    write_backs: usize,
    notifications: usize,
    dead_letters: usize,
    /// Dead letters by reason.
    dead_letter_reasons: BTreeMap<String, usize>,
    /// Topics whose oldest records the broker has dropped (the mock's retention).
    truncated: Vec<String>,
}

/// Runs the demo; `ok` is false when the outcome does not match the inputs.
///
/// # Errors
/// The broker or an instance failed, or the run did not finish in time.
pub fn run(o: &Options) -> anyhow::Result<Summary> {
    let dir = tempfile::tempdir()?;
    let cluster = MockCluster::new(3)?;
    let bootstrap = cluster.bootstrap_servers();
    let say = |line: String| {
        if o.output == Output::Text {
            println!("• {line}");
        }
    };
    say(format!("in-process Kafka (librdkafka mock, 3 brokers) at {bootstrap}"));

    // The workflow, with its escalation shortened so the demo shows one.
    let text = DEFINITION.replace("after = \"48h\"", &format!("after = \"{}ms\"", o.escalate_after.as_millis()));
    let def_path = dir.path().join("document-approval.toml");
    std::fs::write(&def_path, &text)?;
    let def = workflow::load(&def_path).map_err(anyhow::Error::msg)?;
    let wf_topology = workflow::compile(def, None).map_err(anyhow::Error::msg)?;
    let wf_config = app_config(WORKFLOW_APP, &bootstrap, dir.path(), o.guarantee);
    let mut conn_config = app_config(CONNECTORS_APP, &bootstrap, dir.path(), o.guarantee);
    conn_config.connectors =
        Some(toml::from_str::<ConnectorsConfig>(&format!("workflow = {:?}\n{RULES}", def_path.display().to_string()))?);
    conn_config.topology.builtin = "connectors".into();
    let conn_topology = conn_config.build_topology().map_err(anyhow::Error::msg)?;

    let provisioner = MockProvisioner(&cluster);
    let mut topics: Vec<String> =
        wf_topology.source_topics().into_iter().chain(wf_topology.sink_topics()).chain(conn_topology.sink_topics()).collect();
    topics.extend([simulated::SERVICE_COMMANDS.to_owned(), simulated::SERVICE_RESULTS.to_owned()]);
    topics.sort();
    topics.dedup();
    provisioner
        .ensure(&topics.iter().map(|t| TopicSpec { name: t.clone(), partitions: o.partitions, compacted: false }).collect::<Vec<_>>())?;
    provisioner.ensure(&kafka::internal_topics(&wf_config, &wf_topology, o.partitions))?;
    provisioner.ensure(&kafka::internal_topics(&conn_config, &conn_topology, o.partitions))?;

    let stop = Arc::new(AtomicBool::new(false));
    let services = {
        let (b, s) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || simulated::services(b, s))
    };
    let reviewers = {
        let (b, s, slow) = (bootstrap.clone(), stop.clone(), o.escalate_after + Duration::from_secs(1));
        std::thread::spawn(move || simulated::reviewers(b, HUMAN_TASKS.into(), slow, s))
    };
    let repository = {
        let (b, s) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || simulated::repository(b, s))
    };
    let start = |config: &Config, name: &str, topology: &crate::Topology| {
        let mut c = config.clone();
        c.state_dir = dir.path().join(name);
        Instance::start(c, topology.clone())
    };
    let instances = [
        ("workflow-a", start(&wf_config, "workflow-a", &wf_topology)?),
        ("workflow-b", start(&wf_config, "workflow-b", &wf_topology)?),
        ("connectors", start(&conn_config, "connectors", &conn_topology)?),
    ];
    say(format!("started 2 workflow instances ({WORKFLOW_APP}), 1 connectors instance ({CONNECTORS_APP}), the simulated scanner, classifier and reviewers"));

    let started = Instant::now();
    let producer: BaseProducer = simulated::producer_config(&bootstrap).set("linger.ms", "5").create()?;
    let now = crate::runtime::now_ms();
    let mut sent = 0;
    for i in 0..o.documents {
        sent += simulated::upload(&producer, i, now + i as i64, 50)?;
    }
    producer.flush(Duration::from_secs(30))?;
    let malformed = (0..o.documents).filter(|i| i % 50 == 49).count();
    say(format!("uploaded {} documents ({sent} repository events, {malformed} of them malformed)", o.documents));

    // Progress until every document has reached a final state.
    let deadline = Instant::now() + Duration::from_secs(120 + o.documents as u64 / 20);
    let mut last_print = Instant::now();
    let mut progress = Progress::follow(&bootstrap, o.partitions)?;
    loop {
        let finished = progress.finished();
        if finished >= o.documents {
            break;
        }
        if Instant::now() > deadline {
            say(format!("timed out with {finished} of {} documents finished", o.documents));
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            say(format!("{:>5.1}s  {finished:>6} of {} documents finished", started.elapsed().as_secs_f64(), o.documents));
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let elapsed = started.elapsed();
    let snapshots: Vec<(&str, StatusSnapshot)> = instances.iter().map(|(n, i)| (*n, i.status().snapshot())).collect();
    let dead_letter_topics = [wf_config.dlq_topic(), conn_config.dlq_topic()];
    let mut served = None;
    if let Some(listen) = &o.serve {
        let summary = report(o, &read_outcome(&bootstrap, &dead_letter_topics)?, &snapshots, (sent, malformed), elapsed);
        serve(listen, &bootstrap, &wf_config, &def_path, [&instances[0].1, &instances[1].1], o.documents)?;
        served = Some(summary);
    }
    stop.store(true, Ordering::Relaxed);
    for (_, i) in instances {
        i.stop();
        i.join()?;
    }
    services.join().map_err(|_| anyhow::anyhow!("the simulated services panicked"))??;
    let sent = sent
        + reviewers.join().map_err(|_| anyhow::anyhow!("the simulated reviewers panicked"))??
        + repository.join().map_err(|_| anyhow::anyhow!("the simulated repository panicked"))??;

    if let Some(summary) = served {
        return Ok(summary);
    }
    let outcome = read_outcome(&bootstrap, &dead_letter_topics)?;
    Ok(report(o, &outcome, &snapshots, (sent, malformed), elapsed))
}

/// `--serve`: the console of both workflow instances (the first asks the second for its share),
/// a document uploaded every half second so the counts move, until Ctrl-C.
fn serve(
    listen: &str,
    bootstrap: &str,
    config: &Config,
    definition: &std::path::Path,
    workflow: [&Instance; 2],
    mut next: usize,
) -> anyhow::Result<()> {
    use rand::Rng as _;
    let def = Arc::new(workflow::load(definition).map_err(anyhow::Error::msg)?);
    let token: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(20).map(char::from).collect();
    let dead = DeadLetters { kafka: bootstrap.into(), topic: config.dlq_topic(), registry: None };
    let console =
        |peers| Console::new(WORKFLOW_APP, peers).workflow(def.clone()).dead_letters(dead.clone()).token(Some(token.as_str().into()));
    let second = Server::start("127.0.0.1:0", console(Vec::new()), workflow[1].status()).map_err(anyhow::Error::msg)?;
    let first =
        Server::start(listen, console(vec![format!("http://{}", second.address)]), workflow[0].status()).map_err(anyhow::Error::msg)?;
    println!("\nThe console: http://{}/  (its token, for the page's Token field: {token})", first.address);
    println!("Documents keep arriving, one every 0.5 s. Ctrl-C stops the demo.");
    let producer: BaseProducer = simulated::producer_config(bootstrap).create()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    simulated::upload(&producer, next, crate::runtime::now_ms(), 50)?;
                    next += 1;
                }
            }
        }
        anyhow::Ok(())
    })?;
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

fn app_config(app: &str, bootstrap: &str, dir: &std::path::Path, guarantee: Guarantee) -> Config {
    let mut c = Config::for_application(app, bootstrap, dir);
    c.processing_guarantee = guarantee;
    c.set_commit_interval(Duration::from_millis(100));
    c.set_punctuation_interval(Duration::from_millis(200));
    // The mock broker does not act on LeaveGroup; keep sessions short.
    c.consumer.0.insert("session.timeout.ms".into(), "6000".into());
    c.consumer.0.insert("heartbeat.interval.ms".into(), "500".into());
    // Each document crosses about ten topics; with librdkafka's default of a fetch waiting up to
    // 500 ms on a quiet partition, latency (and the escalations it causes) would dominate.
    c.consumer.0.insert("fetch.wait.max.ms".into(), "20".into());
    c
}

/// Follows the transitions topic for the progress check, reading each record once as it
/// arrives. Re-reading the topic from the beginning could never finish a long run on the mock,
/// which drops a partition's oldest records past 5 MB (the first documents' final states among
/// them), and cost more at every check. The summary reads everything once more at the end.
struct Progress {
    consumer: BaseConsumer<QuietEof>,
    /// Documents whose last run has ended.
    finished: BTreeSet<String>,
}

impl Progress {
    fn follow(bootstrap: &str, partitions: i32) -> anyhow::Result<Self> {
        let consumer: BaseConsumer<QuietEof> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "demo-progress")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create_with_context(QuietEof)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(TRANSITIONS, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(Self { consumer, finished: BTreeSet::new() })
    }

    /// Documents whose last run has ended, as far as read so far.
    fn finished(&mut self) -> usize {
        while let Some(r) = self.consumer.poll(Duration::from_millis(50)) {
            if let Some((instance, run, _)) = r.ok().and_then(|m| final_transition(m.payload())) {
                if simulated::index_of(&instance).is_some_and(|i| simulated::runs(i) == run) {
                    self.finished.insert(instance);
                }
            }
        }
        self.finished.len()
    }
}

/// (instance id, run, final state) when `value` is a transition record into a final state (not
/// the record of a superseded run, which ends where it was).
fn final_transition(value: Option<&[u8]>) -> Option<(String, u32, String)> {
    let t = serde_json::from_slice::<Value>(value?).ok()?;
    let run = t["run"].as_u64().unwrap_or(1) as u32;
    (t["final"] == true && t["superseded"] != true)
        .then(|| (t["instanceId"].as_str().unwrap_or_default().to_owned(), run, t["to"].as_str().unwrap_or_default().to_owned()))
}

/// The final state of each instance's last run, from the workflow's transition records.
fn finished(bootstrap: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut done: BTreeMap<String, (u32, String)> = BTreeMap::new();
    for m in read_to_end(bootstrap, TRANSITIONS, Duration::from_secs(30))? {
        if let Some((instance, run, state)) = final_transition(m.value.as_deref()) {
            if done.get(&instance).is_none_or(|(r, _)| *r <= run) {
                done.insert(instance, (run, state));
            }
        }
    }
    Ok(done.into_iter().map(|(i, (_, s))| (i, s)).collect())
}

fn count(bootstrap: &str, topic: &str, keep: impl Fn(&Value) -> bool) -> anyhow::Result<usize> {
    let all = read_to_end(bootstrap, topic, Duration::from_secs(30)).with_context(|| format!("reading {topic}"))?;
    Ok(all.iter().filter(|m| m.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()).is_some_and(|v| keep(&v))).count())
}

/// The topics of `topics` some partition of which no longer starts at offset 0.
fn truncated<'a>(bootstrap: &str, topics: impl Iterator<Item = &'a str>) -> anyhow::Result<Vec<String>> {
    let c: BaseConsumer<QuietEof> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", "demo-check").create_with_context(QuietEof)?;
    let mut out = Vec::new();
    for topic in topics {
        let metadata = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        for p in partitions {
            if c.fetch_watermarks(topic, p, Duration::from_secs(10))?.0 > 0 {
                out.push(topic.to_owned());
                break;
            }
        }
    }
    Ok(out)
}

fn read_outcome(bootstrap: &str, dlqs: &[String]) -> anyhow::Result<Outcome> {
    let mut o = Outcome::default();
    let topics = [TRANSITIONS, HUMAN_TASKS, DECISION_RESULTS, TASK_RESULTS, DOCUMENT_UPDATES, NOTIFICATIONS];
    o.truncated = truncated(bootstrap, topics.iter().copied().chain(dlqs.iter().map(String::as_str)))?;
    for state in finished(bootstrap)?.into_values() {
        *o.finals.entry(state).or_default() += 1;
    }
    o.escalated = count(bootstrap, TRANSITIONS, |t| t["to"] == "escalated")?;
    o.decisions = count(bootstrap, DECISION_RESULTS, |_| true)?;
    o.tasks_opened = count(bootstrap, HUMAN_TASKS, |t| t["state"] == "CREATED")?;
    o.tasks_completed = count(bootstrap, TASK_RESULTS, |_| true)?;
    o.tasks_withdrawn = count(bootstrap, HUMAN_TASKS, |t| t["state"] == "WITHDRAWN")?;
    o.new_runs = count(bootstrap, TRANSITIONS, |t| t["from"] == "new" && t["run"].as_u64() > Some(1))?;
    o.superseded = count(bootstrap, TRANSITIONS, |t| t["superseded"] == true)?;
    o.write_backs = count(bootstrap, DOCUMENT_UPDATES, |_| true)?;
    o.notifications = count(bootstrap, NOTIFICATIONS, |_| true)?;
    for d in dlqs {
        for m in read_to_end(bootstrap, d, Duration::from_secs(30))? {
            o.dead_letters += 1;
            let reason = m.header(crate::dlq::ERROR_MESSAGE).unwrap_or("?").chars().take(100).collect::<String>();
            *o.dead_letter_reasons.entry(reason).or_default() += 1;
        }
    }
    Ok(o)
}

fn report(opts: &Options, o: &Outcome, instances: &[(&str, StatusSnapshot)], events: (usize, usize), elapsed: Duration) -> Summary {
    let n = opts.documents;
    let (events, broken) = events;
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        *expected.entry(simulated::expected_final(i).to_owned()).or_default() += 1;
    }
    let fates: Vec<simulated::Fate> = (0..n).map(simulated::fate).collect();
    let revised_after = fates.iter().filter(|f| f.revised_after).count();
    let revised_in_review = fates.iter().filter(|f| f.revised_in_review).count();
    let deleted = fates.iter().filter(|f| f.deleted).count();
    let manual = (0..n).filter(|&i| simulated::needs_review(i) && !fates[i].deleted).count();
    // Each run that ends (not deleted) writes back once and notifies once, plus a notice per
    // escalation. A task is withdrawn for each run superseded or deleted in review, and for
    // each escalation (the run ends with one of its two tasks answered).
    let write_backs = n - deleted + revised_after;
    let withdrawn = revised_in_review + deleted + o.escalated;
    let mut problems = Vec::new();
    if o.finals != expected {
        problems.push(format!("final states {:?}, expected {expected:?}", o.finals));
    }
    if o.dead_letters != broken {
        problems.push(format!("{} dead letters, expected {broken}", o.dead_letters));
    }
    if o.write_backs != write_backs {
        problems.push(format!("{} write-backs, expected {write_backs}", o.write_backs));
    }
    if o.notifications != write_backs + o.escalated {
        problems.push(format!("{} notifications, expected {}", o.notifications, write_backs + o.escalated));
    }
    if o.new_runs != revised_after + revised_in_review {
        problems.push(format!("{} runs after the first, expected {}", o.new_runs, revised_after + revised_in_review));
    }
    if o.superseded != revised_in_review {
        problems.push(format!("{} runs superseded, expected {revised_in_review}", o.superseded));
    }
    if o.tasks_withdrawn != withdrawn {
        problems.push(format!("{} tasks withdrawn, expected {withdrawn}", o.tasks_withdrawn));
    }
    if o.tasks_completed < manual {
        problems.push(format!("{} tasks completed, expected at least {manual}", o.tasks_completed));
    }
    if !o.truncated.is_empty() {
        // Not keyflow's doing, but it makes the counts above meaningless.
        problems.push(format!(
            "the broker no longer holds the oldest records of {} (librdkafka's mock keeps at most 5 MB or 100k records per partition), so the run cannot be checked: use fewer documents",
            o.truncated.join(", ")
        ));
    }
    let ok = problems.is_empty();
    let processed: u64 = instances.iter().map(|(_, s)| s.processed).sum();
    let rate = processed as f64 / elapsed.as_secs_f64();
    let summary = Summary { ok, problems, documents: n, events, elapsed, records_processed: processed };
    if opts.output == Output::Quiet {
        return summary;
    }
    if opts.output == Output::Json {
        let per: Vec<Value> = instances
            .iter()
            .map(|(name, s)| json!({"instance": name, "processed": s.processed, "dead_lettered": s.dead_lettered, "timers_fired": s.timers_fired, "commits": s.commits, "mean_commit_ms": s.mean_commit_micros as f64 / 1000.0}))
            .collect();
        let json_summary = json!({"ok": ok, "documents": n, "repository_events": events, "final_states": o.finals, "expected_final_states": expected,
            "decisions": o.decisions, "tasks_opened": o.tasks_opened, "tasks_completed": o.tasks_completed, "tasks_withdrawn": o.tasks_withdrawn,
            "escalated": o.escalated, "runs_after_the_first": o.new_runs, "runs_superseded": o.superseded,
            "write_backs": o.write_backs, "notifications": o.notifications, "dead_letters": o.dead_letters, "dead_letter_reasons": o.dead_letter_reasons, "expected_dead_letters": broken,
            "records_processed": processed, "elapsed_s": elapsed.as_secs_f64(), "records_per_s": rate, "instances": per});
        println!("{}", serde_json::to_string_pretty(&json_summary).expect("JSON"));
        return summary;
    }
    println!();
    println!("Summary: {n} documents, {:.1}s from the first upload to the last final state", elapsed.as_secs_f64());
    println!("  final state            count   (expected)");
    for (s, e) in &expected {
        println!("    {s:<18} {:>7}   ({e})", o.finals.get(s).copied().unwrap_or(0));
    }
    println!("  routing decisions      {:>7}   (every document not quarantined)", o.decisions);
    println!("  tasks opened           {:>7}   ({manual} documents needed a person; escalations open a second task)", o.tasks_opened);
    println!("  tasks completed        {:>7}", o.tasks_completed);
    println!(
        "  tasks withdrawn        {:>7}   ({withdrawn}: a new version or a deletion during the review, the second task of an escalation)",
        o.tasks_withdrawn
    );
    println!(
        "  new versions reviewed  {:>7}   ({revised_after} after their review ended, {revised_in_review} during it: runs superseded {})",
        o.new_runs, o.superseded
    );
    println!("  reviews escalated      {:>7}   (slow reviewers; escalation after {:?} instead of 48 h)", o.escalated, opts.escalate_after);
    println!(
        "  write-backs, notices   {:>7}, {}   (one each per run that ended, {deleted} documents deleted in review; a notice per escalation)",
        o.write_backs, o.notifications
    );
    println!(
        "  dead letters           {:>7}   ({broken} malformed repository events sent; write-backs, edits and deletions are none)",
        o.dead_letters
    );
    for (reason, count) in &o.dead_letter_reasons {
        println!("    {count:>5} × {reason}");
    }
    println!(
        "  records processed      {:>7}   ({rate:.0}/s over all three instances; a story, not a benchmark: see cargo bench)",
        processed
    );
    for (name, s) in instances {
        println!(
            "  {name}: processed {}, dead-lettered {}, timers {}, commits {} (mean {:.1} ms)",
            s.processed,
            s.dead_lettered,
            s.timers_fired,
            s.commits,
            s.mean_commit_micros as f64 / 1000.0
        );
    }
    if ok {
        println!("OK: every document reached the final state its events lead to, and the counts add up.");
    } else {
        println!("MISMATCH: {}", summary.problems.join("; "));
    }
    summary
}
