//! Layer (b): durable timers on both clocks, through the test driver's controllable wall clock.

use keyflow::processor::Error;
use keyflow::serde::Serde;
use keyflow::testing::{DriverConfig, TopologyTestDriver};
use keyflow::{Context, Processor, Record, StoreSpec, TimeKind, Timer, Topology, TopologyBuilder};
use serde_json::json;

/// Sets a wall-clock reminder `delay_ms` after each `open` event; `close` cancels it.
struct Reminder {
    delay_ms: i64,
}

impl Processor for Reminder {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        match record.value["action"].as_str() {
            Some("open") => {
                let due = ctx.wall_clock_time() + self.delay_ms;
                ctx.schedule("remind", &key, TimeKind::WallClock, due)?;
                ctx.put_json("reminders", &key, &json!({"due": due}))?;
            }
            Some("close") => ctx.cancel_timer("remind", &key)?,
            other => return Err(Error::BadRecord(format!("unknown action {other:?}"))),
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let fired_at = ctx.wall_clock_time();
        ctx.forward(Record::new(timer.key.clone(), json!({"reminder": timer.key, "due": timer.due, "fired_at": fired_at}), fired_at));
        Ok(())
    }
}

fn topology() -> Topology {
    TopologyBuilder::new()
        .source("in", &["actions"], Serde::String, Serde::Json)
        .processor("reminder", || Reminder { delay_ms: 60_000 }, &["in"])
        .store(StoreSpec::new("reminders"), &["reminder"])
        .sink("out", "reminders-out", Serde::String, Serde::Json, &["reminder"])
        .build()
        .unwrap()
}

#[test]
fn wall_clock_timers_fire_when_the_clock_passes_them_and_not_before() {
    let mut d = TopologyTestDriver::new(topology(), DriverConfig::default());
    let t0 = d.wall_clock();
    d.pipe_json("actions", "a", &json!({"action": "open"}), 0);
    d.pipe_json("actions", "b", &json!({"action": "open"}), 0);
    d.pipe_json("actions", "b", &json!({"action": "close"}), 0);
    d.advance_wall_clock(59_999);
    assert!(d.read_output("reminders-out").is_empty(), "not due yet");
    d.advance_wall_clock(1);
    let out = d.read_output("reminders-out");
    assert_eq!(out.len(), 1, "b was cancelled");
    let v: serde_json::Value = serde_json::from_slice(out[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(v, json!({"reminder": "a", "due": t0 + 60_000, "fired_at": t0 + 60_000}));
    d.advance_wall_clock(120_000);
    assert!(d.read_output("reminders-out").is_empty(), "a timer fires once");
}

#[test]
fn a_pending_wall_clock_timer_survives_a_crash_that_loses_the_local_disk() {
    let mut d = TopologyTestDriver::new(topology(), DriverConfig::default());
    d.pipe_json("actions", "a", &json!({"action": "open"}), 0);
    d.crash_and_restart(true);
    d.advance_wall_clock(60_000);
    assert_eq!(d.read_output("reminders-out").len(), 1, "restored from the timer changelog and fired");
}

#[test]
fn a_processor_may_only_use_the_stores_it_is_connected_to() {
    struct Snoop;
    impl Processor for Snoop {
        fn process(&mut self, ctx: &mut Context<'_>, _: Record) -> Result<(), Error> {
            ctx.store("reminders").map(|_| ())
        }
    }
    let t = TopologyBuilder::new()
        .source("in", &["actions"], Serde::String, Serde::Json)
        .processor("reminder", || Reminder { delay_ms: 1 }, &["in"])
        .processor("snoop", || Snoop, &["in"])
        .store(StoreSpec::new("reminders"), &["reminder"])
        .build()
        .unwrap();
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut d = TopologyTestDriver::new(t, DriverConfig::default());
        d.pipe_json("actions", "a", &json!({"action": "open"}), 0);
    }))
    .expect_err("a topology bug stops the instance");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("`snoop` is not connected to store `reminders`"), "{msg}");
}

#[test]
fn a_zombie_whose_commit_holds_only_timer_outputs_is_still_fenced() {
    // The instance commits the timer, then pauses; another member takes its partitions (the
    // group generation moves on) while the timer becomes due. When it wakes, its transaction
    // holds timer outputs and no consumed input: it must still carry the group's metadata and
    // offsets, or the broker never checks the generation and the zombie commits a duplicate.
    let mut d = TopologyTestDriver::new(topology(), DriverConfig::default());
    d.pipe_json("actions", "a", &json!({"action": "open"}), 0);
    d.commit();
    d.fence();
    d.advance_wall_clock(60_000);
    assert_eq!(d.migrations(), 1, "the timer-only transaction was refused for a stale generation");
    // The driver then plays the rebalance that gives the task back: restored, the timer fires
    // once more, as the task's rightful owner, and is committed exactly once.
    d.advance_wall_clock(1);
    d.commit();
    assert_eq!(d.read_output("reminders-out").len(), 1, "one reminder, committed once");
}

/// Two wall-clock timers per document, as a workflow state's `remind` and `expire`: `remind`
/// moves itself on; `expire` ends the document and cancels `remind`; an `open` (re)sets both.
struct Deadlines;

const HOUR: i64 = 3_600_000;

impl Processor for Deadlines {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        let now = ctx.wall_clock_time();
        ctx.schedule("expire", &key, TimeKind::WallClock, now + record.value["expire_h"].as_i64().unwrap_or(2) * HOUR)?;
        ctx.schedule("remind", &key, TimeKind::WallClock, now + record.value["remind_h"].as_i64().unwrap_or(1) * HOUR)?;
        ctx.put_json("reminders", &key, &json!({"state": "open"}))
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let state: serde_json::Value = ctx.get_json("reminders", &timer.key)?.unwrap_or_default();
        if state["state"] != "open" {
            return Err(Error::BadRecord(format!("timer `{}` fired for `{}` in state {state}", timer.name, timer.key)));
        }
        match timer.name.as_str() {
            "remind" => ctx.schedule("remind", &timer.key, TimeKind::WallClock, timer.due + HOUR)?,
            _ => {
                ctx.cancel_timer("remind", &timer.key)?;
                ctx.put_json("reminders", &timer.key, &json!({"state": "expired"}))?;
            }
        }
        ctx.forward(Record::new(timer.key.clone(), json!({"timer": timer.name, "due": timer.due}), timer.due));
        Ok(())
    }
}

fn deadlines() -> Topology {
    TopologyBuilder::new()
        .source("in", &["actions"], Serde::String, Serde::Json)
        .processor("deadlines", || Deadlines, &["in"])
        .store(StoreSpec::new("reminders"), &["deadlines"])
        .sink("out", "reminders-out", Serde::String, Serde::Json, &["deadlines"])
        .build()
        .unwrap()
}

fn fired(d: &mut TopologyTestDriver) -> Vec<(String, i64)> {
    d.read_output("reminders-out")
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_ref().unwrap()).unwrap())
        .map(|v| (v["timer"].as_str().unwrap().to_owned(), v["due"].as_i64().unwrap()))
        .collect()
}

#[test]
fn a_timer_cancelled_by_an_earlier_timer_due_in_the_same_batch_never_fires() {
    // After an outage both are overdue: `expire` (1 h) fires first and cancels `remind` (2 h),
    // read in the same batch. Before, `remind` fired all the same, in the state `expire` left.
    let mut d = TopologyTestDriver::new(deadlines(), DriverConfig::default());
    let t0 = d.wall_clock();
    d.pipe_json("actions", "doc", &json!({"expire_h": 1, "remind_h": 2}), 0);
    d.advance_wall_clock(5 * HOUR);
    assert_eq!(fired(&mut d), vec![("expire".to_owned(), t0 + HOUR)]);
    assert!(d.read_output("test-app-dlq").is_empty(), "no timer fired in a state it does not belong to");
}

#[test]
fn a_timer_moved_by_an_earlier_timer_of_the_same_batch_fires_at_its_new_time_only() {
    // `remind` (1 h) moves itself to 2 h, 3 h, ...; `expire` is at 3.5 h. Overdue after an
    // outage of 10 h, the stale copies of `remind` read in the first batch must not fire
    // (before, the copy at 1 h cancelled the moved timer and `remind` fired once per batch entry).
    let mut d = TopologyTestDriver::new(deadlines(), DriverConfig::default());
    let t0 = d.wall_clock();
    d.pipe_json("actions", "doc", &json!({"expire_h": 4, "remind_h": 1}), 0);
    d.pipe_json("actions", "other", &json!({"expire_h": 100, "remind_h": 100}), 0);
    d.advance_wall_clock(10 * HOUR);
    let want: Vec<_> =
        [("remind", 1), ("remind", 2), ("remind", 3), ("expire", 4)].iter().map(|(n, h)| (n.to_string(), t0 + h * HOUR)).collect();
    assert_eq!(fired(&mut d), want);
    assert!(d.read_output("test-app-dlq").is_empty());
}

#[test]
fn thousands_of_overdue_timers_all_fire_in_bounded_punctuations() {
    let mut d = TopologyTestDriver::new(deadlines(), DriverConfig::default());
    for i in 0..2_500 {
        d.pipe_json("actions", &format!("doc-{i}"), &json!({"expire_h": 1, "remind_h": 5}), 0);
    }
    d.advance_wall_clock(2 * HOUR);
    let out = fired(&mut d);
    assert_eq!(out.len(), 2_500, "every overdue timer fired, over several punctuations");
    assert!(out.iter().all(|(name, _)| name == "expire"));
    assert_eq!(d.stats().timers_fired, 2_500);
}
