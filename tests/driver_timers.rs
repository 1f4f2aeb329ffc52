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
