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
//!
//! A remote human task is answered later, by the completion poller (`poller`), when a person
//! completes it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::alfresco::Alfresco;
use super::decision::DecisionService;
use super::http::CallError;
use super::poller::PollerState;
use super::resilience::{Attempts, CircuitBreaker, RetryPolicy};
use super::tasks::{TaskRequest, TaskService};
use crate::config::Secret;
use crate::processor::{Context, Error, Processor};
use crate::record::Record;
use crate::state::Timer;
use crate::workflow::definition::parse_duration;

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
                let mut p = PollerState::load(ctx)?;
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
                p.save(ctx)?;
                Ok(Ok(None))
            }
            _ => Err(Error::BadRecord(format!("a withdraw command on the {} channel: only human tasks are withdrawn", self.channel))),
        }
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

    /// The poll timer: see `poller`.
    fn on_timer(&mut self, ctx: &mut Context<'_>, _timer: Timer) -> Result<(), Error> {
        self.on_poll_timer(ctx)
    }
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
