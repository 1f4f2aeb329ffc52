//! The completion poller of remote human tasks (Camunda 7 and 8): the `open-tasks` store of a
//! partition's tasks, and a wall-clock timer that asks the task service, page by page, which of
//! them a person completed (answered `task.completed`) and, in a slower sweep, which the engine
//! cancelled (answered `task_cancelled`). A task is answered once: its entry leaves the store
//! in the same commit as its answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::executor::{CommandProcessor, Perform};
use super::http::CallError;
use super::tasks::{Cancelled, Completed, Opened, TaskRequest, TaskService, COMPLETED_PAGE};
use crate::processor::{Context, Error};
use crate::record::Record;
use crate::state::TimeKind;

/// Open remote tasks of this partition: task id -> [`OpenTask`].
pub const OPEN_TASKS: &str = "open-tasks";
/// The completion poller's state, one entry.
pub const POLLER: &str = "task-poller";
const POLL_TIMER: &str = "poll-completions";
/// Pages of open tasks ([`COMPLETED_PAGE`] each) one poll asks about: the bound on a poll's
/// queries. A partition with more open tasks is asked about in turns, a poll going on where the
/// last one stopped.
const POLL_PAGES: usize = 10;
/// How long one poll may go on asking (it holds the stream thread): past it, the poll ends after
/// the page it is on, and the next one goes on from there.
const POLL_BUDGET: Duration = Duration::from_secs(2);
/// Every how many polls a poll also asks about one page of open tasks (its own cursor going
/// round them all) whether the engine cancelled them: a cancellation outside keyflow is rare, and
/// the question is one more query, so it is asked at a tenth of the completions' pace.
const CANCELLED_EVERY: u64 = 10;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct OpenTask {
    pub instance_id: String,
    pub idempotency_key: String,
    pub name: String,
    /// The run of the instance that opened it (none from before runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
}

impl OpenTask {
    /// An entry of [`OPEN_TASKS`].
    fn read(value: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(value)
            .map_err(|e| Error::State(crate::state::Error::Corrupt { store: OPEN_TASKS.into(), what: "open task", detail: e.to_string() }))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct PollerState {
    /// Open tasks of this partition; polling stops at zero.
    open: u64,
    /// When the poll timer is due, if set.
    next_poll: Option<i64>,
    /// The last open task asked about, when the last poll stopped before the end of them.
    #[serde(default)]
    resume_after: Option<String>,
    /// Polls failed in a row: the next one waits longer.
    #[serde(default)]
    failures: u32,
    /// Polls made: every [`CANCELLED_EVERY`]th also asks which tasks were cancelled.
    #[serde(default)]
    polls: u64,
    /// The last open task asked about by the last sweep for cancelled tasks, when it stopped
    /// before the end of them.
    #[serde(default)]
    sweep_after: Option<String>,
}

impl PollerState {
    pub(super) fn load(ctx: &mut Context<'_>) -> Result<Self, Error> {
        Ok(ctx.get_json(POLLER, "state")?.unwrap_or_default())
    }

    pub(super) fn save(&self, ctx: &mut Context<'_>) -> Result<(), Error> {
        ctx.put_json(POLLER, "state", self)
    }
}

impl CommandProcessor {
    /// The ids of this partition's open tasks opened by the commands `keys`.
    pub(super) fn open_tasks_with(&self, ctx: &mut Context<'_>, keys: &std::collections::BTreeSet<&str>) -> Result<Vec<String>, Error> {
        const PAGE: usize = 1000;
        let mut found = Vec::new();
        let mut from = Vec::new();
        loop {
            let page = ctx.store(OPEN_TASKS)?.range(&from, &[0xff], PAGE)?;
            for (id, value) in &page {
                let task = OpenTask::read(value)?;
                if keys.contains(task.idempotency_key.as_str()) {
                    found.push(String::from_utf8_lossy(id).into_owned());
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => from = [last.as_slice(), b"\0"].concat(),
                _ => return Ok(found),
            }
        }
    }

    /// Remembers a remote task so the poller can answer its completion, and makes sure the
    /// poller runs.
    pub(super) fn track(&self, ctx: &mut Context<'_>, task_id: &str, r: &TaskRequest, poll_every: Duration) -> Result<(), Error> {
        if ctx.get_json::<OpenTask>(OPEN_TASKS, task_id)?.is_some() {
            return Ok(());
        }
        ctx.put_json(
            OPEN_TASKS,
            task_id,
            &OpenTask { instance_id: r.instance_id.clone(), idempotency_key: r.idempotency_key.clone(), name: r.name.clone(), run: r.run },
        )?;
        let now = ctx.wall_clock_time();
        let mut p = PollerState::load(ctx)?;
        p.open += 1;
        if p.next_poll.is_none() {
            let due = now + poll_every.as_millis() as i64;
            ctx.schedule(POLL_TIMER, "poller", TimeKind::WallClock, due)?;
            p.next_poll = Some(due);
        }
        p.save(ctx)
    }
    /// The completion poller: asks the task service which of this partition's open tasks a
    /// person completed, a page at a time, and answers each once (the answer and the task's
    /// removal from [`OPEN_TASKS`] commit together).
    ///
    /// A poll makes at most [`POLL_PAGES`] queries, for at most [`POLL_BUDGET`], plus the reads
    /// of the answers found. It waits while the task service's circuit is open (commands found
    /// the service failing), counts only a service in trouble against the breaker (as commands
    /// do), and after a failure the next poll waits with the retry policy's backoff.
    pub(super) fn on_poll_timer(&self, ctx: &mut Context<'_>) -> Result<(), Error> {
        let Perform::Task(service, poll_every) = &*self.perform else { return Ok(()) };
        let mut p = PollerState::load(ctx)?;
        let now = ctx.wall_clock_time();
        let wait = match self.breaker.permit(now) {
            Err(open) => open.max(*poll_every),
            Ok(()) => match self.poll(ctx, service.as_ref(), &mut p) {
                Ok(asked) => {
                    if asked > 0 {
                        self.breaker.record(true, now);
                    }
                    p.failures = 0;
                    *poll_every
                }
                Err(PollError::State(e)) => return Err(e),
                Err(PollError::Call(e)) => {
                    p.failures += 1;
                    tracing::warn!(failures = p.failures, reason = %e, "polling for completed tasks failed; polling again later");
                    match e {
                        CallError::BackPressure { retry_after: Some(after), .. } => after.max(*poll_every),
                        CallError::BackPressure { .. } => self.default_retry.delay(p.failures).max(*poll_every),
                        _ => {
                            self.breaker.record(false, now);
                            self.default_retry.delay(p.failures).max(*poll_every)
                        }
                    }
                }
            },
        };
        p.next_poll = (p.open > 0).then(|| now + wait.as_millis() as i64);
        if let Some(due) = p.next_poll {
            ctx.schedule(POLL_TIMER, "poller", TimeKind::WallClock, due)?;
        }
        p.save(ctx)
    }
    /// One poll: up to [`POLL_PAGES`] pages of open tasks, from where the last poll stopped;
    /// returns the pages the service answered. Answers found before a failed call are kept (each page's
    /// answers are complete); a page the service refuses (4xx: no retry can help) is skipped
    /// with a warning and asked about again in the next round.
    fn poll(&self, ctx: &mut Context<'_>, service: &dyn TaskService, p: &mut PollerState) -> Result<usize, PollError> {
        let started = std::time::Instant::now();
        let mut asked = 0;
        let sweep = p.polls.is_multiple_of(CANCELLED_EVERY);
        p.polls = p.polls.wrapping_add(1);
        for _ in 0..POLL_PAGES {
            if started.elapsed() >= POLL_BUDGET {
                break;
            }
            let from = after(p.resume_after.as_deref());
            let page = ctx.store(OPEN_TASKS)?.range(&from, &[0xff], COMPLETED_PAGE)?;
            let open = opened(&page)?;
            if !open.is_empty() {
                match service.completed(&open) {
                    Ok(done) => {
                        asked += 1;
                        for c in done {
                            self.answer(ctx, c, p)?;
                        }
                    }
                    Err(e @ CallError::Rejected { .. }) => {
                        tracing::warn!(reason = %e, tasks = open.len(), "the task service refused a query for completed tasks; those tasks are asked about again next round");
                    }
                    Err(e) => return Err(PollError::Call(e)),
                }
            }
            p.resume_after = (page.len() == COMPLETED_PAGE).then(|| open.last().map(|o| o.task_id.clone())).flatten();
            if p.resume_after.is_none() {
                break; // the end of the open tasks: the next poll starts from the first again
            }
        }
        // After the completions, so a sweep that takes long holds none of them back.
        if sweep {
            self.sweep(ctx, service, p)?;
        }
        Ok(asked)
    }

    fn answer(&self, ctx: &mut Context<'_>, c: Completed, p: &mut PollerState) -> Result<(), Error> {
        let Some(open) = Self::forget(ctx, &c.task_id, p)? else { return Ok(()) };
        let answer = json!({"id": format!("{}:completed", open.idempotency_key), "idempotencyKey": open.idempotency_key, "run": open.run, "taskId": c.task_id, "name": open.name,
                            "completedBy": c.completed_by, "completedAt": c.completed_at, "variables": Value::Object(stringly(&c.variables)), "instanceId": open.instance_id});
        if let Some(sink) = &self.result_sink {
            ctx.forward_to(sink, Record::new(open.instance_id, answer, c.completed_at));
        }
        Ok(())
    }

    /// One page of open tasks, from where the last sweep stopped, asked whether the engine
    /// cancelled them. Best effort: a failure holds back no completion; a later sweep asks about
    /// the same page again (one the service refuses, it passes over).
    ///
    /// A process instance can end terminated after its task was completed (a terminate end event
    /// or a cancellation after the task, in a process of one's own): the tasks found are asked
    /// about once more, and a completion among them is answered as one, never as cancelled.
    fn sweep(&self, ctx: &mut Context<'_>, service: &dyn TaskService, p: &mut PollerState) -> Result<(), Error> {
        let from = after(p.sweep_after.as_deref());
        let page = ctx.store(OPEN_TASKS)?.range(&from, &[0xff], COMPLETED_PAGE)?;
        let open = opened(&page)?;
        let next = (page.len() == COMPLETED_PAGE).then(|| open.last().map(|o| o.task_id.clone())).flatten();
        let found = match service.cancelled(&open) {
            Ok(gone) if gone.is_empty() => Ok((Vec::new(), Vec::new())),
            Ok(gone) => {
                let asked: Vec<Opened> = open.into_iter().filter(|o| gone.iter().any(|g| g.task_id == o.task_id)).collect();
                service.completed(&asked).map(|done| (gone, done))
            }
            Err(e) => Err(e),
        };
        match found {
            Ok((gone, done)) => {
                p.sweep_after = next;
                for c in done {
                    self.answer(ctx, c, p)?;
                }
                // A task answered just above is forgotten already: `cancelled` passes it by.
                for c in gone {
                    self.cancelled(ctx, c, p)?;
                }
            }
            // Refused (4xx): no retry can help that page; the next sweep goes on past it.
            Err(e @ CallError::Rejected { .. }) => {
                p.sweep_after = next;
                tracing::warn!(reason = %e, "the task service refused to say which tasks were cancelled; that page is asked about next round");
            }
            Err(e) => tracing::warn!(reason = %e, "asking which tasks were cancelled in the engine failed; asked again at the next sweep"),
        }
        Ok(())
    }

    /// A task cancelled in the engine, outside keyflow: no one can complete it now, so it is no
    /// longer asked about, and the workflow hears of it as an error event (`task_cancelled`),
    /// which it takes with an `on_error` transition or dead-letters with the reason.
    fn cancelled(&self, ctx: &mut Context<'_>, c: Cancelled, p: &mut PollerState) -> Result<(), Error> {
        let Some(open) = Self::forget(ctx, &c.task_id, p)? else { return Ok(()) };
        tracing::warn!(task = %c.task_id, instance = %open.instance_id, name = %open.name, reason = %c.reason, "a task was cancelled in the engine, outside keyflow");
        let reason = format!("task `{}` was cancelled in the engine: {}", open.name, c.reason);
        let answer = json!({"id": format!("{}:cancelled", open.idempotency_key), "error": "task_cancelled", "reason": reason, "idempotencyKey": open.idempotency_key,
                            "run": open.run, "taskId": c.task_id, "name": open.name, "instanceId": open.instance_id});
        if let Some(sink) = &self.result_sink {
            let at = c.at.unwrap_or_else(|| ctx.wall_clock_time());
            ctx.forward_to(sink, Record::new(open.instance_id, answer, at));
        }
        Ok(())
    }

    /// Removes an open task from the poller's store and count; the entry, if it was open.
    pub(super) fn forget(ctx: &mut Context<'_>, task_id: &str, p: &mut PollerState) -> Result<Option<OpenTask>, Error> {
        let Some(open) = ctx.get_json::<OpenTask>(OPEN_TASKS, task_id)? else { return Ok(None) };
        ctx.store(OPEN_TASKS)?.delete(task_id.as_bytes())?;
        p.open = p.open.saturating_sub(1);
        Ok(Some(open))
    }
}

/// Where a page of [`OPEN_TASKS`] starts: just after the last task of the page before, if any.
fn after(last: Option<&str>) -> Vec<u8> {
    last.map_or_else(Vec::new, |last| [last.as_bytes(), b"\0"].concat())
}

/// The tasks of a page of [`OPEN_TASKS`], as a task service is asked about them.
fn opened(page: &crate::state::Entries) -> Result<Vec<Opened>, Error> {
    page.iter()
        .map(|(id, value)| {
            let task = OpenTask::read(value)?;
            Ok(Opened { task_id: String::from_utf8_lossy(id).into_owned(), idempotency_key: task.idempotency_key })
        })
        .collect()
}

/// Why a poll stopped: a call to the task service (retried at the next poll), or the state
/// store (the task's usual failure handling).
enum PollError {
    Call(CallError),
    State(Error),
}

impl From<Error> for PollError {
    fn from(e: Error) -> Self {
        PollError::State(e)
    }
}

impl From<crate::state::Error> for PollError {
    fn from(e: crate::state::Error) -> Self {
        PollError::State(e.into())
    }
}

/// Task variables as the workflow's guards compare them: Camunda forms submit booleans and
/// numbers, a person on the CLI types text; `approved == 'true'` should hold for both.
fn stringly(vars: &Map<String, Value>) -> Map<String, Value> {
    vars.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                match v {
                    Value::Bool(_) | Value::Number(_) => Value::String(v.to_string()),
                    other => other.clone(),
                },
            )
        })
        .collect()
}
