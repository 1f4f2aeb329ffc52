//! `status-tracker`: a per-document state machine over status events, the peer workload of the
//! benchmarks and the example the README runs.
//!
//! Input (key = document id, JSON value): `{"status": "...", "amount": 12.5}`.
//! State per document: event count, last status, running total of `amount`, invalid transitions.
//! Output: one record per input with the new state and whether the transition was valid.
//! A document that is `uploaded` and not `approved`/`rejected` within `sla_ms` of stream time gets
//! an `escalated` output (a durable stream-time timer).
//!
//! ```text
//!   uploaded -> scanned -> classified -> approved
//!                                     \-> rejected
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::processor::{Context, Error, Processor};
use crate::record::Record;
use crate::serde::Serde;
use crate::state::{StoreSpec, TimeKind, Timer};
use crate::topology::{Topology, TopologyBuilder};

pub const STORE: &str = "documents";

/// The state kept per document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DocumentState {
    pub count: u64,
    pub status: Option<String>,
    pub total: f64,
    pub invalid: u64,
    pub escalated: bool,
}

impl DocumentState {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_deref(), Some("approved" | "rejected"))
    }
}

/// Whether `from -> to` is a legal transition (`None` = no event yet).
pub fn is_valid(from: Option<&str>, to: &str) -> bool {
    matches!(
        (from, to),
        (None, "uploaded")
            | (Some("uploaded"), "scanned")
            | (Some("scanned"), "classified")
            | (Some("classified"), "approved" | "rejected")
    )
}

/// The transition, free of I/O: new state and the output it emits. Invalid transitions are
/// counted, not applied, so a late or duplicate event cannot move a document backwards.
pub fn apply(mut state: DocumentState, status: &str, amount: f64) -> (DocumentState, bool) {
    let valid = is_valid(state.status.as_deref(), status);
    state.count += 1;
    state.total += amount;
    if valid {
        state.status = Some(status.to_owned());
    } else {
        state.invalid += 1;
    }
    (state, valid)
}

struct Tracker {
    sla_ms: i64,
}

impl Processor for Tracker {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let id = record.key_string();
        let status = record
            .value
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::BadRecord("event has no string field `status`".into()))?;
        let amount = match record.value.get("amount") {
            None | Some(Value::Null) => 0.0,
            Some(v) => v.as_f64().ok_or_else(|| Error::BadRecord(format!("`amount` is not a number: {v}")))?,
        };
        let before: DocumentState = ctx.get_json(STORE, &id)?.unwrap_or_default();
        let (after, valid) = apply(before, status, amount);
        if valid && status == "uploaded" {
            ctx.schedule("sla", &id, TimeKind::StreamTime, record.timestamp + self.sla_ms)?;
        }
        if valid && after.is_final() {
            // Only the transition into a final state has a timer to cancel: a final state never
            // changes again, and later events would each pay a timer-index read for nothing.
            ctx.cancel_timer("sla", &id)?;
        }
        ctx.put_json(STORE, &id, &after)?;
        let out = json!({"id": id, "count": after.count, "status": after.status, "valid": valid, "total": after.total});
        ctx.forward(Record { key: record.key, value: out, timestamp: record.timestamp, headers: Default::default() });
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let mut state: DocumentState = ctx.get_json(STORE, &timer.key)?.unwrap_or_default();
        if state.is_final() {
            return Ok(());
        }
        state.escalated = true;
        ctx.put_json(STORE, &timer.key, &state)?;
        let out = json!({"id": timer.key, "escalated": true, "status": state.status});
        ctx.forward(Record::new(timer.key.clone(), out, timer.due));
        Ok(())
    }
}

/// The status-tracker topology reading `input` and writing `output`.
pub fn topology(input: &str, output: &str, sla_ms: i64) -> Topology {
    TopologyBuilder::new()
        .source("events", &[input], Serde::String, Serde::Json)
        .processor("tracker", move || Tracker { sla_ms }, &["events"])
        .store(StoreSpec::new(STORE), &["tracker"])
        .sink("statuses", output, Serde::String, Serde::Json, &["tracker"])
        .build()
        .expect("the built-in topology is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_lifecycle_and_invalid_ones_are_counted_not_applied() {
        let (s, v) = apply(DocumentState::default(), "uploaded", 1.0);
        assert!(v);
        let (s, v) = apply(s, "approved", 2.0);
        assert!(!v);
        assert_eq!(s.status.as_deref(), Some("uploaded"));
        assert_eq!((s.count, s.invalid, s.total), (2, 1, 3.0));
        let (s, _) = apply(s, "scanned", 0.0);
        let (s, _) = apply(s, "classified", 0.0);
        let (s, v) = apply(s, "rejected", 0.0);
        assert!(v && s.is_final());
    }
}
