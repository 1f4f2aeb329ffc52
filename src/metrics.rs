//! Metrics in the Prometheus text exposition format (0.0.4), served at `/metrics`.
//!
//! Two sources: the instances' [`Status`] (records, commits, lag, restores, store sizes), read at
//! scrape time; and process-wide counters the workflow and the connectors bump as they go
//! (transitions, outbound calls), kept here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::runtime::Status;

/// Upper bounds of the outbound-call latency histogram, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Counters {
    /// (service, outcome) -> calls.
    calls: BTreeMap<(String, String), u64>,
    /// (workflow, topic) -> records an input's filter skipped.
    skipped: BTreeMap<(String, String), u64>,
    /// service -> (bucket counts, sum of seconds, count).
    latency: BTreeMap<String, ([u64; BUCKETS.len()], f64, u64)>,
}

fn counters() -> &'static Mutex<Counters> {
    static C: OnceLock<Mutex<Counters>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

thread_local! {
    /// The instance whose stream thread this is, if it is one.
    static INSTANCE: std::cell::RefCell<Option<std::sync::Arc<Status>>> = const { std::cell::RefCell::new(None) };
}

/// Makes the calling thread an instance's stream thread: [`transition`] counts for `status`.
pub(crate) fn bind_instance(status: std::sync::Arc<Status>) {
    INSTANCE.with(|i| *i.borrow_mut() = Some(status));
}

/// A workflow instance moved `from` -> `to`: counted for the instance whose stream thread made
/// the move (a test driver's moves have no instance and are not counted).
pub fn transition(workflow: &str, from: &str, to: &str) {
    INSTANCE.with(|i| {
        if let Some(status) = i.borrow().as_ref() {
            status.transitioned(workflow, from, to);
        }
    });
}

/// A record of `topic` that `workflow`'s input filter skipped (not the workflow's business).
pub fn skipped(workflow: &str, topic: &str) {
    let mut c = counters().lock().expect("metrics lock");
    *c.skipped.entry((workflow.to_owned(), topic.to_owned())).or_default() += 1;
}

/// An outbound call to `service` ended with `outcome` (`ok`, `transient`, `back_pressure`,
/// `rejected`) after `took`.
pub fn call(service: &str, outcome: &str, took: Duration) {
    let mut c = counters().lock().expect("metrics lock");
    *c.calls.entry((service.to_owned(), outcome.to_owned())).or_default() += 1;
    let (buckets, sum, count) = c.latency.entry(service.to_owned()).or_insert(([0; BUCKETS.len()], 0.0, 0));
    let secs = took.as_secs_f64();
    for (b, bound) in buckets.iter_mut().zip(BUCKETS) {
        if secs <= bound {
            *b += 1;
        }
    }
    *sum += secs;
    *count += 1;
}

/// A label value, escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition for `application`'s instance `status`.
pub fn render(application: &str, status: &Status) -> String {
    let s = status.snapshot();
    let app = format!("application=\"{}\"", esc(application));
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name}{{{app}}} {value}");
    };
    one("keyflow_records_processed_total", "counter", "Input records processed.", s.processed.to_string());
    one("keyflow_records_skipped_total", "counter", "Re-delivered inputs the applied-offset guard skipped.", s.skipped.to_string());
    one("keyflow_dead_letters_total", "counter", "Records sent to the dead-letter topic.", s.dead_lettered.to_string());
    one("keyflow_timers_fired_total", "counter", "Durable timers fired.", s.timers_fired.to_string());
    one("keyflow_commits_total", "counter", "Commits that committed at least one task.", s.commits.to_string());
    one("keyflow_commit_latency_seconds_mean", "gauge", "Mean commit latency.", format!("{:.6}", s.mean_commit_micros as f64 / 1e6));
    one("keyflow_aborts_total", "counter", "Transactions aborted and rolled back.", s.aborts.to_string());
    one("keyflow_restored_records_total", "counter", "Changelog records restored.", s.restored_records.to_string());
    one("keyflow_restoring", "gauge", "1 while a task restores its state.", u8::from(s.restoring).to_string());
    one("keyflow_assigned_partitions", "gauge", "Partitions (tasks) this instance owns.", s.assignment.len().to_string());

    family(&mut out, "keyflow_consumer_lag", "gauge", "Records behind the end of each input partition.");
    for ((topic, partition), lag) in status.lag() {
        let _ = writeln!(out, "keyflow_consumer_lag{{{app},topic=\"{}\",partition=\"{partition}\"}} {lag}", esc(&topic));
    }
    family(
        &mut out,
        "keyflow_input_waiting",
        "gauge",
        "1 for each owned input partition waiting after a transient failure (see /ready for why).",
    );
    for (topic, partition) in status.waiting().into_keys() {
        let _ = writeln!(out, "keyflow_input_waiting{{{app},topic=\"{}\",partition=\"{partition}\"}} 1", esc(&topic));
    }
    family(&mut out, "keyflow_store_keys", "gauge", "Estimated keys per state store and partition.");
    for ((store, partition), n) in status.store_keys() {
        let _ = writeln!(out, "keyflow_store_keys{{{app},store=\"{}\",partition=\"{partition}\"}} {n}", esc(&store));
    }

    family(
        &mut out,
        "keyflow_workflow_instances",
        "gauge",
        "Workflow instances per version and state in this instance's partitions, as of its last commit.",
    );
    for ((w, version, state), n) in status.instance_counts() {
        let _ = writeln!(
            out,
            "keyflow_workflow_instances{{{app},workflow=\"{}\",version=\"{version}\",state=\"{}\"}} {n}",
            esc(&w),
            esc(&state)
        );
    }

    family(&mut out, "keyflow_workflow_transitions_total", "counter", "Workflow transitions by source and target state.");
    for ((w, from, to), n) in status.transitions() {
        let _ = writeln!(
            out,
            "keyflow_workflow_transitions_total{{{app},workflow=\"{}\",from=\"{}\",to=\"{}\"}} {n}",
            esc(&w),
            esc(&from),
            esc(&to)
        );
    }
    let c = counters().lock().expect("metrics lock");
    family(&mut out, "keyflow_input_skipped_total", "counter", "Records an input's filter kept from the workflow's instances.");
    for ((workflow, topic), n) in &c.skipped {
        let _ = writeln!(out, "keyflow_input_skipped_total{{workflow=\"{}\",topic=\"{}\"}} {n}", esc(workflow), esc(topic));
    }
    family(&mut out, "keyflow_outbound_calls_total", "counter", "Calls to services outside Kafka, by outcome.");
    for ((service, outcome), n) in &c.calls {
        let _ = writeln!(out, "keyflow_outbound_calls_total{{service=\"{}\",outcome=\"{}\"}} {n}", esc(service), esc(outcome));
    }
    family(&mut out, "keyflow_outbound_call_seconds", "histogram", "Latency of calls to services outside Kafka.");
    for (service, (buckets, sum, count)) in &c.latency {
        let svc = esc(service);
        for (b, bound) in buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "keyflow_outbound_call_seconds_bucket{{service=\"{svc}\",le=\"{bound}\"}} {b}");
        }
        let _ = writeln!(out, "keyflow_outbound_call_seconds_bucket{{service=\"{svc}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "keyflow_outbound_call_seconds_sum{{service=\"{svc}\"}} {sum:.6}\nkeyflow_outbound_call_seconds_count{{service=\"{svc}\"}} {count}");
    }
    out
}
