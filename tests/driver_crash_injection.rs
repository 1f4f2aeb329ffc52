//! Layer (b): exactly-once under crashes, shown on the in-memory transactional log (no broker that
//! runs here isolates aborted transactions). For each seed: random inputs, random commit cadence,
//! faults injected at protocol steps (the first one cycling through every step), optionally losing
//! the local disk. The committed result must equal a run without faults.
//!
//! Two topologies: the status tracker (stream-time timers) and `deadlines`, whose wall-clock
//! timers fire with the clock jumping hours ahead, several overdue per document at once, and
//! cancel and move each other: commits that hold only timers, which move no source offset.

use std::collections::{BTreeMap, BTreeSet};

use keyflow::builtin::status_tracker;
use keyflow::processor::Error;
use keyflow::runtime::Step;
use keyflow::serde::Serde;
use keyflow::testing::{DriverConfig, Fault, FaultPlan, TopologyTestDriver};
use keyflow::{Context, Guarantee, Processor, Record, StoreSpec, TimeKind, Timer, Topology, TopologyBuilder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const SEEDS: u64 = 220;
const STATUSES: [&str; 6] = ["uploaded", "scanned", "classified", "approved", "rejected", "bogus"];

struct Input {
    key: String,
    value: Vec<u8>,
    ts: i64,
    /// Hours the wall clock jumps before this input (deadlines only).
    jump_h: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    StatusTracker,
    Deadlines,
}

const HOUR: i64 = 3_600_000;

/// Per document: `open` sets `remind` (1 h) and `expire` (3 h) on the wall clock; `touch` moves
/// `remind`; `remind` counts and moves itself on by an hour; `expire` closes the document and
/// cancels `remind`. Every timer writes state and an output.
struct Deadlines;

impl Processor for Deadlines {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        // The record's time, not the clock's: a crash makes the instance process a record again
        // later, and the run must stay comparable with the reference (the inputs carry the wall
        // clock of the reference run at the time they are piped in).
        let now = record.timestamp;
        let mut state: serde_json::Value = ctx.get_json("deadlines", &key)?.unwrap_or_else(|| json!({"reminded": 0}));
        match record.value["op"].as_str() {
            Some("open") => {
                ctx.schedule("expire", &key, TimeKind::WallClock, now + 3 * HOUR)?;
                ctx.schedule("remind", &key, TimeKind::WallClock, now + HOUR)?;
                state["open"] = json!(true);
            }
            Some("touch") if state["open"] == true => ctx.schedule("remind", &key, TimeKind::WallClock, now + HOUR)?,
            Some("touch") => {}
            other => return Err(Error::BadRecord(format!("unknown op {other:?}"))),
        }
        ctx.put_json("deadlines", &key, &state)?;
        ctx.forward(Record::new(key, json!({"op": record.value["op"], "state": state}), record.timestamp));
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let mut state: serde_json::Value = ctx.get_json("deadlines", &timer.key)?.unwrap_or_default();
        if timer.name == "remind" {
            state["reminded"] = json!(state["reminded"].as_i64().unwrap_or(0) + 1);
            ctx.schedule("remind", &timer.key, TimeKind::WallClock, timer.due + HOUR)?;
        } else {
            state["open"] = json!(false);
            ctx.cancel_timer("remind", &timer.key)?;
        }
        ctx.put_json("deadlines", &timer.key, &state)?;
        ctx.forward(Record::new(timer.key.clone(), json!({"timer": timer.name, "due": timer.due, "state": state}), timer.due));
        Ok(())
    }
}

fn topology(kind: Kind) -> Topology {
    match kind {
        Kind::StatusTracker => status_tracker::topology("events", "statuses", 20_000),
        Kind::Deadlines => TopologyBuilder::new()
            .source("in", &["events"], Serde::String, Serde::Json)
            .processor("deadlines", || Deadlines, &["in"])
            .store(StoreSpec::new("deadlines"), &["deadlines"])
            .sink("out", "statuses", Serde::String, Serde::Json, &["deadlines"])
            .build()
            .unwrap(),
    }
}

fn store(kind: Kind) -> &'static str {
    match kind {
        Kind::StatusTracker => status_tracker::STORE,
        Kind::Deadlines => "deadlines",
    }
}

fn inputs(rng: &mut SmallRng, kind: Kind) -> Vec<Input> {
    let n = rng.random_range(20..60);
    (0..n)
        .map(|i| {
            let key = format!("doc-{}", rng.random_range(0..8));
            let value = if rng.random_ratio(1, 15) {
                b"{broken".to_vec()
            } else if kind == Kind::Deadlines {
                format!(r#"{{"op":"{}"}}"#, if rng.random_ratio(1, 2) { "open" } else { "touch" }).into_bytes()
            } else {
                let status = STATUSES[rng.random_range(0..STATUSES.len())];
                format!(r#"{{"status":"{status}","amount":{}}}"#, rng.random_range(0..100)).into_bytes()
            };
            // Mostly no jump; sometimes hours, so several timers of a document are overdue at once.
            let jump_h = if kind == Kind::Deadlines && rng.random_ratio(1, 4) { rng.random_range(1..6) } else { 0 };
            Input { key, value, ts: i * 1_000, jump_h }
        })
        .scan(DriverConfig::default().start_time_ms, |clock, mut input| {
            // Deadlines: each input is stamped with the wall clock it is piped in at.
            *clock += input.jump_h * HOUR;
            if kind == Kind::Deadlines {
                input.ts += *clock;
            }
            Some(input)
        })
        .collect()
}

fn run(kind: Kind, guarantee: Guarantee, inputs: &[Input], commit_every: usize, plan: Option<(FaultPlan, u64)>) -> TopologyTestDriver {
    // The log cleaner runs at every crash: restores read compacted changelogs, as on Kafka.
    let config = DriverConfig { guarantee, partitions: 2, commit_every, compact_changelogs: true, ..DriverConfig::default() };
    let mut d = TopologyTestDriver::new(topology(kind), config);
    if let Some((plan, seed)) = plan {
        d.inject(plan, seed);
    }
    for i in inputs {
        if i.jump_h > 0 {
            d.advance_wall_clock(i.jump_h * HOUR);
        }
        d.pipe_input("events", Some(i.key.as_bytes()), Some(&i.value), i.ts);
    }
    d.advance_wall_clock(1);
    d.commit();
    d
}

type Committed = BTreeMap<i32, Vec<(String, String)>>;

fn text(b: &Option<Vec<u8>>) -> String {
    b.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned()
}

fn committed(d: &TopologyTestDriver, topic: &str) -> Committed {
    let mut m = Committed::new();
    for (p, r) in d.committed_records(topic) {
        // The DLQ timestamp header is wall-clock time, the same in both runs.
        m.entry(p).or_default().push((text(&r.key), text(&r.value)));
    }
    m
}

fn steps_of(guarantee: Guarantee) -> Vec<Step> {
    match guarantee {
        Guarantee::ExactlyOnceV2 => vec![
            Step::Processing,
            Step::SendChangelog,
            Step::SendMarkers,
            Step::FlushChangelog,
            Step::SendOffsets,
            Step::CommitTransaction,
            Step::WriteCheckpoint,
        ],
        Guarantee::AtLeastOnce => vec![
            Step::Processing,
            Step::FlushOutputs,
            Step::SendChangelog,
            Step::FlushChangelog,
            Step::SendMarkers,
            Step::FlushMarkers,
            Step::WriteCheckpoint,
            Step::CommitOffsets,
        ],
    }
}

fn plan(rng: &mut SmallRng, seed: u64, steps: &[Step]) -> FaultPlan {
    let mut faults = Vec::new();
    let first = steps[(seed as usize) % steps.len()];
    faults.push(Fault::Crash { step: first, nth: 1 + (seed as u32 / steps.len() as u32) % 3, wipe_local_state: rng.random_bool(0.3) });
    for _ in 0..rng.random_range(0..3) {
        let step = steps[rng.random_range(0..steps.len())];
        let nth = rng.random_range(1..6);
        faults.push(match rng.random_range(0..4) {
            0 => Fault::Crash { step, nth, wipe_local_state: rng.random_bool(0.3) },
            1 => Fault::Abort { step, nth },
            // A commit that reached the coordinator, whose reply was lost.
            2 if step == Step::CommitTransaction => Fault::InDoubt { step, nth },
            // A broker call that times out once is called again; elsewhere it aborts.
            _ => Fault::Timeout { step, nth },
        });
    }
    FaultPlan::new(faults)
}

fn check(guarantee: Guarantee) {
    check_topology(Kind::StatusTracker, guarantee);
    check_topology(Kind::Deadlines, guarantee);
}

fn check_topology(kind: Kind, guarantee: Guarantee) {
    let mut hit_steps = BTreeSet::new();
    let mut crashes = 0;
    let only: Option<u64> = std::env::var("KEYFLOW_SEED").ok().and_then(|s| s.parse().ok());
    for seed in (0..SEEDS).filter(|s| only.is_none_or(|o| o == *s)) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let inputs = inputs(&mut rng, kind);
        let commit_every = rng.random_range(1..6);
        let reference = run(kind, guarantee, &inputs, commit_every, None);
        let faulty = run(kind, guarantee, &inputs, commit_every, Some((plan(&mut rng, seed, &steps_of(guarantee)), seed)));
        for f in faulty.faults_hit() {
            hit_steps.insert(f.step());
        }
        crashes += faulty.crashes();

        let ctx = format!("{kind:?} {guarantee:?} seed {seed}, faults hit {:?}", faulty.faults_hit());
        if only.is_some() {
            for (name, d) in [("reference", &reference), ("faulty", &faulty)] {
                eprintln!("== {name}");
                for (p, r) in d.committed_records("statuses") {
                    eprintln!("  p{p} {} {}", text(&r.key), text(&r.value));
                }
            }
        }
        let state = |d: &TopologyTestDriver| -> BTreeMap<String, String> {
            d.store_entries(store(kind)).into_iter().map(|(k, v)| (text(&Some(k)), text(&Some(v)))).collect()
        };
        assert_eq!(state(&faulty), state(&reference), "state differs: {ctx}");
        for p in 0..2 {
            let b = faulty.broker();
            assert_eq!(
                b.committed_offset("events", p).unwrap_or(0),
                b.end_offset("events", p),
                "partition {p}: not every input offset was committed: {ctx}"
            );
        }
        for topic in ["statuses", "test-app-dlq"] {
            let (got, want) = (committed(&faulty, topic), committed(&reference, topic));
            match guarantee {
                Guarantee::ExactlyOnceV2 => assert_eq!(got, want, "committed `{topic}` differs: {ctx}"),
                Guarantee::AtLeastOnce => {
                    // Every output arrives, in order per partition; duplicates are allowed.
                    for (p, want) in &want {
                        let got = got.get(p).cloned().unwrap_or_default();
                        let mut it = got.iter();
                        for w in want {
                            assert!(it.any(|g| g == w), "`{topic}` partition {p} lost {w:?}: {ctx}");
                        }
                    }
                }
            }
        }
    }
    let expected: BTreeSet<Step> = steps_of(guarantee).into_iter().collect();
    if only.is_some() {
        return;
    }
    assert_eq!(hit_steps, expected, "every step of the {guarantee:?} protocol had a fault injected");
    assert!(crashes >= SEEDS as u32, "at least one crash per seed ({crashes})");
}

#[test]
fn exactly_once_output_and_state_match_a_crash_free_run_for_every_seed() {
    check(Guarantee::ExactlyOnceV2);
}

#[test]
fn at_least_once_loses_nothing_and_never_double_applies_state_for_every_seed() {
    check(Guarantee::AtLeastOnce);
}

#[test]
fn a_failed_offset_commit_is_retried_even_when_no_new_input_arrives() {
    let config = DriverConfig { guarantee: Guarantee::AtLeastOnce, partitions: 1, commit_every: 1, ..DriverConfig::default() };
    let mut d = TopologyTestDriver::new(topology(Kind::StatusTracker), config);
    d.inject(FaultPlan::new(vec![Fault::Abort { step: Step::CommitOffsets, nth: 3 }]), 0);
    for i in 0..3 {
        d.pipe_input("events", Some(b"doc"), Some(br#"{"status":"uploaded"}"#), i);
    }
    assert_eq!(d.aborts(), 1, "the third offset commit failed");
    d.commit();
    assert_eq!(d.broker().committed_offset("events", 0), Some(3), "the next commit retried the offsets");
}

#[test]
fn a_commit_whose_outcome_is_unknown_is_never_processed_again() {
    // The coordinator took the 3rd commit, but its reply was lost and every retry timed out.
    // Taken as an abort, its inputs were processed again and their outputs committed twice.
    let config = DriverConfig { guarantee: Guarantee::ExactlyOnceV2, partitions: 2, commit_every: 2, ..DriverConfig::default() };
    let mut d = TopologyTestDriver::new(topology(Kind::StatusTracker), config);
    d.inject(FaultPlan::new(vec![Fault::InDoubt { step: Step::CommitTransaction, nth: 3 }]), 0);
    for i in 0..10 {
        d.pipe_input("events", Some(format!("doc-{}", i % 3).as_bytes()), Some(br#"{"status":"uploaded","amount":1}"#), i);
    }
    d.commit();
    assert_eq!(d.faults_hit().len(), 1, "the commit's reply was lost");
    let outputs = d.committed_records("statuses");
    assert_eq!(outputs.len(), 10, "one committed output per input: {outputs:?}");
    let counts: BTreeMap<String, u64> = d
        .store_entries(status_tracker::STORE)
        .into_iter()
        .map(|(k, v)| (text(&Some(k)), serde_json::from_slice::<serde_json::Value>(&v).unwrap()["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts.values().sum::<u64>(), 10, "every input applied once: {counts:?}");
}
