//! The action executor: processors that read a workflow's command topics, perform each command
//! against its service, and answer on the workflow's result topics.
//!
//! Each command is one record, so the usual commit makes it exactly-once on the Kafka side: the
//! answer and the command's offset commit together. The call itself leaves Kafka and may be
//! repeated after a crash; it carries the command's idempotency key (as the Camunda 7 task id,
//! a Camunda 8 process variable searched before creating, an `Idempotency-Key` header), and the
//! answer carries it as its event id, so the workflow drops a repeated answer.
//!
//! Failure policy, one for every channel:
//! - transient (timeout, 5xx, refused credentials): retried with backoff, up to the command's
//!   `retry.attempts`; the record waits on its paused partition meanwhile (see `resilience`);
//! - back-pressure: waits, not counted as an attempt;
//! - circuit open: waits, no call made, not counted;
//! - refused (4xx) or attempts used up: the workflow's error policy. Channels with a result topic
//!   answer with an error event (`error = "<channel>_failed"`), which the workflow takes as an
//!   error transition or dead-letters if it has none; channels without one dead-letter the
//!   command itself (original bytes, reason, attempts).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::alfresco::Alfresco;
use super::decision::DecisionService;
use super::http::CallError;
use super::resilience::{Attempts, CircuitBreaker, RetryPolicy};
use super::tasks::{Cancelled, Completed, Opened, TaskRequest, TaskService, COMPLETED_PAGE};
use crate::config::Secret;
use crate::processor::{Context, Error, Processor};
use crate::record::Record;
use crate::state::{TimeKind, Timer};
use crate::workflow::definition::parse_duration;

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

/// What a command asks for.
pub enum Perform {
    Decision(Arc<dyn DecisionService>),
    Task(Arc<dyn TaskService>, Duration),
    /// Embedded tasks: the task is a record on this sink's topic.
    EmbeddedTask {
        sink: String,
    },
    Document(Arc<Alfresco>),
    Webhook {
        url: String,
        http: reqwest::blocking::Client,
        auth: Option<(String, Secret)>,
    },
}

/// Performs one channel's commands. One per task (partition); the breaker is the service's,
/// shared by all of them.
pub struct CommandProcessor {
    pub channel: &'static str,
    pub perform: Arc<Perform>,
    pub breaker: Arc<CircuitBreaker>,
    pub default_retry: RetryPolicy,
    /// The sink answering the workflow, if the channel has a result topic.
    pub result_sink: Option<String>,
    pub attempts: Attempts,
}

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
struct PollerState {
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

impl CommandProcessor {
    fn policy(&self, cmd: &Value) -> RetryPolicy {
        let Some(r) = cmd.get("retry").filter(|r| r.is_object()) else { return self.default_retry };
        RetryPolicy {
            attempts: r.get("attempts").and_then(Value::as_u64).map_or(self.default_retry.attempts, |a| a.max(1) as u32),
            backoff: r.get("backoff").and_then(Value::as_str).and_then(parse_duration).unwrap_or(self.default_retry.backoff),
            max_backoff: self.default_retry.max_backoff,
        }
    }

    /// The call; `Ok` carries the answer for the result topic, if any.
    fn call(&self, ctx: &mut Context<'_>, key: &str, idem: &str, cmd: &Value) -> Result<Result<Option<Value>, CallError>, Error> {
        let text = |f: &str| cmd.get(f).and_then(Value::as_str).map(str::to_owned);
        let need = |f: &str| text(f).ok_or_else(|| Error::BadRecord(format!("{} command has no string field `{f}`", self.channel)));
        let object = |f: &str| cmd.get(f).and_then(Value::as_object).cloned().unwrap_or_default();
        if cmd.get("command").and_then(Value::as_str) == Some("withdraw") {
            return self.withdraw(ctx, key, cmd);
        }
        Ok(match &*self.perform {
            Perform::Decision(service) => {
                let decision = need("decisionKey")?;
                service
                    .evaluate(&decision, &object("variables"))
                    .map(|outcome| Some(json!({"id": idem, "decisionKey": decision, "outcome": outcome, "instanceId": key})))
            }
            Perform::Task(service, poll_every) => {
                let request = task_request(key, idem, cmd)?;
                match service.create(&request) {
                    Ok(task_id) => {
                        self.track(ctx, &task_id, &request, *poll_every)?;
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
            Perform::EmbeddedTask { sink } => {
                let r = task_request(key, idem, cmd)?;
                let id = super::embedded::task_id(idem);
                let task = json!({"taskId": id, "name": r.name, "candidateGroups": r.candidate_groups, "assignee": r.assignee, "instanceId": key,
                                  "workflow": r.workflow, "idempotencyKey": idem, "run": r.run, "state": "CREATED", "createdAt": ctx.wall_clock_time(),
                                  "resultTopic": self.result_sink.as_deref().map(|s| s.trim_start_matches("out:"))});
                ctx.forward_to(sink, Record::new(id, task, ctx.metadata().timestamp));
                Ok(None)
            }
            Perform::Document(alfresco) => {
                let node = need("nodeId")?;
                let aspects = super::strings(cmd.get("aspects"));
                let version = cmd.get("version").and_then(Value::as_str);
                alfresco
                    .update_node(&node, &object("properties"), &aspects, version)
                    .map(|()| Some(json!({"id": idem, "nodeId": node, "status": "updated", "instanceId": key})))
            }
            Perform::Webhook { url, http, auth } => {
                let build = || {
                    let r = http.post(url).header("Idempotency-Key", idem).json(cmd);
                    match auth {
                        Some((user, password)) => r.basic_auth(user, Some(password.expose())),
                        None => r,
                    }
                };
                super::http::send("webhook", build()).map(|_| None).map_err(|f| f.into_call("webhook"))
            }
        })
    }

    /// Withdraws the human tasks a run left open (`{"command": "withdraw", "tasks":
    /// [{"idempotencyKey", "name"}], "reason"}`): Camunda's by cancelling their process
    /// instances (then forgotten by the poller), embedded ones by a `WITHDRAWN` record, which
    /// `keyflow tasks complete` refuses to complete.
    fn withdraw(&self, ctx: &mut Context<'_>, key: &str, cmd: &Value) -> Result<Result<Option<Value>, CallError>, Error> {
        let listed: Vec<(&str, &str)> = cmd
            .get("tasks")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::BadRecord("withdraw command has no array `tasks`".into()))?
            .iter()
            .filter_map(|t| Some((t.get("idempotencyKey")?.as_str()?, t.get("name").and_then(Value::as_str).unwrap_or_default())))
            .collect();
        let reason = cmd.get("reason").and_then(Value::as_str).unwrap_or("withdrawn by its workflow");
        match &*self.perform {
            Perform::EmbeddedTask { sink } => {
                for (idem, name) in listed {
                    let id = super::embedded::task_id(idem);
                    let task = json!({"taskId": id, "name": name, "instanceId": key, "workflow": cmd.get("workflow"), "idempotencyKey": idem,
                                      "run": cmd.get("run"), "state": "WITHDRAWN", "reason": reason, "withdrawnAt": ctx.wall_clock_time()});
                    ctx.forward_to(sink, Record::new(id, task, ctx.metadata().timestamp));
                }
                Ok(Ok(None))
            }
            Perform::Task(service, _) => {
                let keys: std::collections::BTreeSet<&str> = listed.iter().map(|(k, _)| *k).collect();
                let mut p: PollerState = ctx.get_json(POLLER, "state")?.unwrap_or_default();
                for task_id in self.open_tasks_with(ctx, &keys)? {
                    match service.withdraw(&task_id) {
                        Ok(()) => {}
                        // Refused for good (not found is withdrawn already): nothing a retry
                        // can change; the task is no longer the workflow's either way.
                        Err(CallError::Rejected { message, .. }) => {
                            tracing::warn!(task = task_id, reason = message, "the task service refused to withdraw a task; forgotten");
                        }
                        Err(e) => return Ok(Err(e)),
                    }
                    Self::forget(ctx, &task_id, &mut p)?;
                }
                // The tasks forgotten and the poller's count commit with the command. A transient
                // failure discards both with the record's writes, and its retry withdraws the
                // earlier tasks again (gone already: no error); a withdrawal that fails past its
                // retries is a dead letter, and keeps them all until it is redriven.
                ctx.put_json(POLLER, "state", &p)?;
                Ok(Ok(None))
            }
            _ => Err(Error::BadRecord(format!("a withdraw command on the {} channel: only human tasks are withdrawn", self.channel))),
        }
    }

    /// The ids of this partition's open tasks opened by the commands `keys`.
    fn open_tasks_with(&self, ctx: &mut Context<'_>, keys: &std::collections::BTreeSet<&str>) -> Result<Vec<String>, Error> {
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
    fn track(&self, ctx: &mut Context<'_>, task_id: &str, r: &TaskRequest, poll_every: Duration) -> Result<(), Error> {
        if ctx.get_json::<OpenTask>(OPEN_TASKS, task_id)?.is_some() {
            return Ok(());
        }
        ctx.put_json(
            OPEN_TASKS,
            task_id,
            &OpenTask { instance_id: r.instance_id.clone(), idempotency_key: r.idempotency_key.clone(), name: r.name.clone(), run: r.run },
        )?;
        let now = ctx.wall_clock_time();
        let mut p: PollerState = ctx.get_json(POLLER, "state")?.unwrap_or_default();
        p.open += 1;
        if p.next_poll.is_none() {
            let due = now + poll_every.as_millis() as i64;
            ctx.schedule(POLL_TIMER, "poller", TimeKind::WallClock, due)?;
            p.next_poll = Some(due);
        }
        ctx.put_json(POLLER, "state", &p)
    }

    /// Gives up on a command: an error answer if the channel has a result topic, else the
    /// dead-letter topic.
    fn give_up(&self, ctx: &mut Context<'_>, key: &str, cmd: &Value, idem: &str, reason: &str, attempts: u32) -> Result<(), Error> {
        tracing::warn!(channel = self.channel, instance = key, idempotency_key = idem, attempts, reason, "command failed for good");
        // A withdrawal answers nobody: the run it is about has ended.
        let withdraw = cmd.get("command").and_then(Value::as_str) == Some("withdraw");
        match &self.result_sink {
            Some(sink) if !withdraw => {
                let error = format!("{}_failed", self.channel.trim_end_matches('s'));
                let answer =
                    json!({"id": idem, "error": error, "reason": reason, "attempts": attempts, "instanceId": key, "run": cmd.get("run")});
                ctx.forward_to(sink, Record::new(key.to_owned(), answer, ctx.metadata().timestamp));
                Ok(())
            }
            _ => Err(Error::BadRecord(format!("{} command failed after {attempts} attempt(s): {reason}", self.channel))),
        }
    }
}

fn task_request(key: &str, idem: &str, cmd: &Value) -> Result<TaskRequest, Error> {
    Ok(TaskRequest {
        idempotency_key: idem.to_owned(),
        instance_id: key.to_owned(),
        workflow: cmd.get("workflow").and_then(Value::as_str).unwrap_or_default().to_owned(),
        name: cmd
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::BadRecord("task command has no string field `name`".into()))?
            .to_owned(),
        candidate_groups: super::strings(cmd.get("candidateGroups")),
        assignee: cmd.get("assignee").and_then(Value::as_str).map(str::to_owned),
        run: cmd.get("run").and_then(Value::as_u64),
    })
}

impl Processor for CommandProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        let key = record.key_string();
        let cmd = record.value;
        let idem = cmd
            .get("idempotencyKey")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::BadRecord(format!("{} command has no idempotencyKey", self.channel)))?
            .to_owned();
        let _span = tracing::info_span!("command", channel = self.channel, instance = %key, idempotency_key = %idem).entered();
        let policy = self.policy(&cmd);
        let now = ctx.wall_clock_time();
        if let Some(after) = self.attempts.wait(&idem, now) {
            return Err(Error::Backoff { reason: format!("{} command {idem} waits for its next attempt", self.channel), after });
        }
        if let Err(after) = self.breaker.permit(now) {
            return Err(Error::Backoff { reason: format!("{} service circuit is open", self.channel), after });
        }
        let started = std::time::Instant::now();
        let result = self.call(ctx, &key, &idem, &cmd)?;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CallError::Transient { .. }) => "transient",
            Err(CallError::BackPressure { .. }) => "back_pressure",
            Err(CallError::Rejected { .. }) => "rejected",
        };
        crate::metrics::call(self.channel, outcome, started.elapsed());
        match result {
            Ok(answer) => {
                self.breaker.record(true, now);
                self.attempts.done(&idem);
                if let (Some(sink), Some(mut answer)) = (&self.result_sink, answer) {
                    // The run the command was of: an answer that outlives its run is not applied
                    // to the next one.
                    if let Some(run) = cmd.get("run") {
                        answer["run"] = run.clone();
                    }
                    ctx.forward_to(sink, Record::new(key, answer, record.timestamp));
                }
                Ok(())
            }
            Err(CallError::BackPressure { message, retry_after, .. }) => {
                let after = retry_after.unwrap_or_else(|| policy.delay(self.attempts.failures(&idem) + 1));
                self.attempts.defer(&idem, after, now);
                Err(Error::Backoff { reason: message, after })
            }
            Err(e @ CallError::Transient { .. }) => {
                self.breaker.record(false, now);
                let made = self.attempts.failures(&idem) + 1;
                match self.attempts.failed(&idem, &policy, now) {
                    Some(after) => Err(Error::Backoff { reason: format!("attempt {made} of {}: {e}", policy.attempts), after }),
                    None => self.give_up(ctx, &key, &cmd, &idem, &e.to_string(), made),
                }
            }
            Err(e @ CallError::Rejected { .. }) => {
                self.breaker.record(true, now);
                let made = self.attempts.failures(&idem) + 1;
                self.attempts.done(&idem);
                self.give_up(ctx, &key, &cmd, &idem, &e.to_string(), made)
            }
        }
    }

    /// The completion poller: asks the task service which of this partition's open tasks a
    /// person completed, a page at a time, and answers each once (the answer and the task's
    /// removal from [`OPEN_TASKS`] commit together).
    ///
    /// A poll makes at most [`POLL_PAGES`] queries, for at most [`POLL_BUDGET`], plus the reads
    /// of the answers found. It waits while the task service's circuit is open (commands found
    /// the service failing), counts only a service in trouble against the breaker (as commands
    /// do), and after a failure the next poll waits with the retry policy's backoff.
    fn on_timer(&mut self, ctx: &mut Context<'_>, _timer: Timer) -> Result<(), Error> {
        let Perform::Task(service, poll_every) = &*self.perform else { return Ok(()) };
        let mut p: PollerState = ctx.get_json(POLLER, "state")?.unwrap_or_default();
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
        ctx.put_json(POLLER, "state", &p)
    }
}

impl CommandProcessor {
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
            let from = p.resume_after.as_ref().map_or_else(Vec::new, |last| [last.as_bytes(), b"\0"].concat());
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
        let from = p.sweep_after.as_ref().map_or_else(Vec::new, |last| [last.as_bytes(), b"\0"].concat());
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
    fn forget(ctx: &mut Context<'_>, task_id: &str, p: &mut PollerState) -> Result<Option<OpenTask>, Error> {
        let Some(open) = ctx.get_json::<OpenTask>(OPEN_TASKS, task_id)? else { return Ok(None) };
        ctx.store(OPEN_TASKS)?.delete(task_id.as_bytes())?;
        p.open = p.open.saturating_sub(1);
        Ok(Some(open))
    }
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

/// Turns repository events into `DocumentUploaded` events keyed by node id.
pub struct IngestProcessor {
    pub sink: String,
}

impl Processor for IngestProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error> {
        match super::alfresco::document_uploaded(&record.value).map_err(Error::BadRecord)? {
            Some(doc) => {
                let node = doc["nodeId"].as_str().expect("set by document_uploaded").to_owned();
                ctx.forward_to(&self.sink, Record::new(node, doc, record.timestamp));
                Ok(())
            }
            None => Ok(()),
        }
    }
}
