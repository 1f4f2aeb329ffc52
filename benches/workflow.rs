//! The document-approval workflow end to end: the demo's architecture (`keyflow::demo`: two
//! workflow instances in one group, the connectors application with embedded decision rules and
//! human tasks, simulated services and reviewers) on librdkafka's in-process mock cluster, for
//! both guarantees. Every document's outcome is checked against its inputs, so a fast wrong run
//! does not count.
//!
//! `cargo bench --profile dev --bench workflow -- [--documents 2000] [--escalate-after-ms 3000]`
//!
//! Reported: documents/s from the first upload to the last document's final state, and records
//! processed per second by all instances together. Everything (broker, five instances,
//! simulations) shares the machine's cores, and reviewers answer a quarter of the tasks only
//! after the escalation, so this is the architecture's figure on one machine, not a ceiling.

mod common;

use std::time::Duration;

use keyflow::demo::{self, Options, Output};
use keyflow::runtime::Guarantee;

fn main() {
    let documents = common::number("--documents", 2_000);
    let escalate = Duration::from_millis(common::number("--escalate-after-ms", 3_000) as u64);
    println!("document-approval end to end: {documents} documents, escalation after {escalate:?}, librdkafka mock cluster (3 brokers, in process)");
    for (guarantee, name) in [(Guarantee::AtLeastOnce, "at_least_once"), (Guarantee::ExactlyOnceV2, "exactly_once_v2")] {
        let s = demo::run(&Options { documents, partitions: 4, guarantee, escalate_after: escalate, output: Output::Quiet, serve: None })
            .expect("the run completes");
        let secs = s.elapsed.as_secs_f64();
        println!(
            "{name:<16} {} documents ({} repository events) in {secs:.1} s: {:.0} documents/s, {:.0} records/s processed by all instances; outcome {}",
            s.documents,
            s.events,
            s.documents as f64 / secs,
            s.records_processed as f64 / secs,
            if s.ok { "checked: every document in its expected final state".to_owned() } else { format!("WRONG: {}", s.problems.join("; ")) }
        );
    }
}
