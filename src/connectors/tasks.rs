//! Human tasks behind one trait: open a task for a workflow instance, ask which of the tasks it
//! opened a person has completed, assign and complete them.
//!
//! - Camunda 8: a task is a process instance of a small BPMN process holding one user task
//!   (`topologies/camunda/keyflow-human-task.bpmn`), started with the workflow's ids as
//!   variables; user tasks are searched, assigned and completed under `/v2/user-tasks/...`.
//! - Camunda 7: the same one-user-task process (`topologies/camunda/keyflow-human-task-c7.bpmn`),
//!   started with the idempotency key as business key, found again by it in the history;
//!   completions and their variables are read from the history (`POST /history/task`,
//!   `POST /history/variable-instance`).
//!
//! The poller asks about the tasks it opened, by id, never "what was completed since": a
//! time window of everybody's completions has to be paged and re-read (Camunda 8's search is
//! eventually consistent), and each partition would read every other partition's tasks.
//!
//! In embedded mode (no Camunda) tasks are records on a Kafka topic instead: see `embedded`.

use reqwest::blocking::Client;
use serde_json::{json, Map, Value};

use super::auth::Credentials;
use super::decision::typed_value;
use super::http::CallError;

/// A task to open.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRequest {
    pub idempotency_key: String,
    pub instance_id: String,
    pub workflow: String,
    pub name: String,
    pub candidate_groups: Vec<String>,
    pub assignee: Option<String>,
    /// The run of the instance the task is for.
    pub run: Option<u64>,
}

/// A task keyflow opened: the id [`TaskService::create`] returned and the command's
/// idempotency key (Camunda 7 finds a task by it).
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    pub task_id: String,
    pub idempotency_key: String,
}

/// A task whose process instance the engine ended without its completion (an operator cancelled
/// it in Cockpit or Operate, outside keyflow): no one can complete it now. The poller answers it
/// as a `task_cancelled` error event.
#[derive(Clone, Debug, PartialEq)]
pub struct Cancelled {
    /// The id [`TaskService::create`] returned.
    pub task_id: String,
    /// What the engine says became of it.
    pub reason: String,
    /// When its process instance ended, ms since the epoch, if the engine says.
    pub at: Option<i64>,
}

/// A completed task: the poller answers it as a `task.completed` event.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    /// The id [`TaskService::create`] returned.
    pub task_id: String,
    pub completed_by: Option<String>,
    /// ms since the epoch.
    pub completed_at: i64,
    pub variables: Map<String, Value>,
}

pub trait TaskService: Send + Sync {
    /// Opens the task unless it is already open (same idempotency key); returns its id.
    ///
    /// # Errors
    /// [`CallError`].
    fn create(&self, task: &TaskRequest) -> Result<String, CallError>;
    /// Those of `tasks` a person has completed, each once, in no particular order. One query
    /// for the page of tasks (callers pass [`COMPLETED_PAGE`] at most), then the answers' reads:
    /// one paged query for all of them (Camunda 7), one per completed task (Camunda 8, whose
    /// variables are searched per user task).
    ///
    /// A task cancelled in the engine is not reported here: see [`TaskService::cancelled`].
    ///
    /// # Errors
    /// [`CallError`].
    fn completed(&self, tasks: &[Opened]) -> Result<Vec<Completed>, CallError>;
    /// Those of `tasks` whose process instance has ended terminated (cancelled in the engine):
    /// one query for the page, a row per process instance. A user task ended on its own is not
    /// enough: a process instance modification ends it and opens it again in the same process
    /// instance, which a person may still complete.
    ///
    /// # Errors
    /// [`CallError`].
    fn cancelled(&self, tasks: &[Opened]) -> Result<Vec<Cancelled>, CallError>;
    /// # Errors
    /// [`CallError`].
    fn assign(&self, task_id: &str, user: &str) -> Result<(), CallError>;
    /// # Errors
    /// [`CallError`].
    fn complete(&self, task_id: &str, variables: &Map<String, Value>) -> Result<(), CallError>;
    /// Withdraws a task no run waits for any more: its process instance is cancelled, so
    /// Tasklist no longer offers it and completing it is refused. A task already gone (ended,
    /// cancelled before) is withdrawn too: the call is idempotent.
    ///
    /// # Errors
    /// [`CallError`].
    fn withdraw(&self, task_id: &str) -> Result<(), CallError>;
}

/// A withdrawal the engine answers "no such (running) process instance": it is gone already.
fn gone_already(r: Result<(), CallError>) -> Result<(), CallError> {
    match r {
        Err(CallError::Rejected { status: 404, .. }) => Ok(()),
        other => other,
    }
}

const C8: &str = "camunda8";
const C7: &str = "camunda7";

/// The variables keyflow starts a task's process with (both Camundas); the rest are the
/// person's answer.
const CREATION_VARIABLES: [&str; 6] =
    ["taskName", "candidateGroups", "assignee", "keyflowIdempotencyKey", "keyflowInstanceId", "keyflowWorkflow"];

/// Variables of one user task read per page.
const C8_VARIABLES_PAGE: usize = 100;
/// Tasks asked about in one [`TaskService::completed`] call.
pub const COMPLETED_PAGE: usize = 100;
/// Camunda 7 history variables read per page.
const C7_VARIABLES_PAGE: usize = 1000;

/// Camunda 8. Task ids are process instance keys.
pub struct Camunda8Tasks {
    pub base_url: String,
    pub http: Client,
    pub credentials: Credentials,
    /// The BPMN process id of the one-user-task process.
    pub process_id: String,
}

impl Camunda8Tasks {
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base_url.trim_end_matches('/'))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.post_query(path, &[], body)
    }

    fn post_query(&self, path: &str, query: &[(&str, &str)], body: &Value) -> Result<Value, CallError> {
        let url = self.url(path);
        self.credentials.send_json(C8, &self.http, || self.http.post(&url).query(query).json(body))
    }

    /// The answer a user task was completed with: its variables less keyflow's own. Values are
    /// JSON documents in strings. Camunda 8.8's `POST /v2/user-tasks/{userTaskKey}/variables/search`
    /// cuts long values short unless told not to (`truncateValues=false`) and answers a page at
    /// a time (100 by default), so every page is read and a value still cut short is an error.
    fn variables(&self, user_task: &str) -> Result<Map<String, Value>, CallError> {
        let path = format!("user-tasks/{user_task}/variables/search");
        let mut out = Map::new();
        let mut from = 0;
        loop {
            let page = json!({"page": {"from": from, "limit": C8_VARIABLES_PAGE}});
            let r = self.post_query(&path, &[("truncateValues", "false")], &page)?;
            let items = r.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for v in items {
                let Some(name) = v.get("name").and_then(Value::as_str) else { continue };
                if CREATION_VARIABLES.contains(&name) {
                    continue;
                }
                if v.get("isTruncated").and_then(Value::as_bool) == Some(true) {
                    return Err(CallError::transient(C8, format!("variable `{name}` of user task {user_task} came back truncated")));
                }
                let text = v.get("value").and_then(Value::as_str);
                out.insert(name.to_owned(), text.map_or(Value::Null, |s| serde_json::from_str(s).unwrap_or_else(|_| json!(s))));
            }
            from += items.len();
            let total = r.pointer("/page/totalItems").and_then(Value::as_u64).unwrap_or(0);
            if items.is_empty() || from as u64 >= total {
                return Ok(out);
            }
        }
    }

    /// The open user task of a task's process instance.
    fn user_task_key(&self, task_id: &str) -> Result<String, CallError> {
        let r =
            self.post("user-tasks/search", &json!({"filter": {"processInstanceKey": task_id, "state": "CREATED"}, "page": {"limit": 1}}))?;
        r.pointer("/items/0/userTaskKey").and_then(key_text).ok_or_else(|| CallError::Rejected {
            service: C8,
            status: 404,
            message: format!("task {task_id} has no open user task"),
        })
    }
}

/// Camunda 8 keys are int64 serialized as strings (older versions: numbers).
fn key_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|i| i.to_string()))
}

impl TaskService for Camunda8Tasks {
    fn create(&self, task: &TaskRequest) -> Result<String, CallError> {
        // Camunda 8 cannot dedupe a creation by key, so search first. Search is eventually
        // consistent: a retry within the exporter's lag could still open a second instance
        // (README, known limits); the poller then reports only the task keyflow recorded.
        let key_var = json!(task.idempotency_key).to_string();
        let found = self.post("process-instances/search", &json!({"filter": {"processDefinitionId": self.process_id, "variables": [{"name": "keyflowIdempotencyKey", "value": key_var}]}, "page": {"limit": 1}}))?;
        if let Some(k) = found.pointer("/items/0/processInstanceKey").and_then(key_text) {
            return Ok(k);
        }
        let variables = json!({
            "keyflowIdempotencyKey": task.idempotency_key, "keyflowInstanceId": task.instance_id, "keyflowWorkflow": task.workflow,
            "taskName": task.name, "candidateGroups": task.candidate_groups, "assignee": task.assignee,
        });
        let r = self.post("process-instances", &json!({"processDefinitionId": self.process_id, "variables": variables}))?;
        r.get("processInstanceKey")
            .and_then(key_text)
            .ok_or_else(|| CallError::transient(C8, "creation response has no processInstanceKey"))
    }

    fn completed(&self, tasks: &[Opened]) -> Result<Vec<Completed>, CallError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let body = json!({
            "filter": {"processDefinitionId": self.process_id, "processInstanceKey": {"$in": keys}, "state": "COMPLETED"},
            "page": {"limit": tasks.len()},
        });
        let r = self.post("user-tasks/search", &body)?;
        let mut out = Vec::new();
        for item in r.get("items").and_then(Value::as_array).into_iter().flatten() {
            let (Some(task_id), Some(user_task)) =
                (item.get("processInstanceKey").and_then(key_text), item.get("userTaskKey").and_then(key_text))
            else {
                continue;
            };
            if !keys.contains(&task_id.as_str()) || out.iter().any(|c: &Completed| c.task_id == task_id) {
                continue;
            }
            // One task's answer that cannot be read (cut short, archived) holds back only that
            // task: it stays open and is asked about again; the page's others are answered.
            let variables = match self.variables(&user_task) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(task = %task_id, reason = %e, "the answer of a completed task cannot be read yet; asked again later");
                    continue;
                }
            };
            out.push(Completed {
                task_id,
                completed_by: item.get("assignee").and_then(Value::as_str).map(str::to_owned),
                completed_at: item.get("completionDate").and_then(Value::as_str).and_then(parse_millis).unwrap_or_default(),
                variables,
            });
        }
        Ok(out)
    }

    fn assign(&self, task_id: &str, user: &str) -> Result<(), CallError> {
        let key = self.user_task_key(task_id)?;
        self.post(&format!("user-tasks/{key}/assignment"), &json!({"assignee": user, "allowOverride": true})).map(drop)
    }

    fn complete(&self, task_id: &str, variables: &Map<String, Value>) -> Result<(), CallError> {
        let key = self.user_task_key(task_id)?;
        self.post(&format!("user-tasks/{key}/completion"), &json!({"variables": variables})).map(drop)
    }

    /// `POST /v2/process-instances/{key}/cancellation`: 204, or 404 for an instance that has
    /// ended or was cancelled before.
    fn withdraw(&self, task_id: &str) -> Result<(), CallError> {
        let url = self.url(&format!("process-instances/{task_id}/cancellation"));
        gone_already(self.credentials.send(C8, &self.http, || self.http.post(&url).json(&json!({}))).map(drop))
    }

    /// `POST /v2/process-instances/search` for the page's keys in state `TERMINATED` (8.8
    /// `ProcessInstanceStateEnum`).
    fn cancelled(&self, tasks: &[Opened]) -> Result<Vec<Cancelled>, CallError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let body = json!({"filter": {"processInstanceKey": {"$in": keys}, "state": "TERMINATED"}, "page": {"limit": tasks.len()}});
        let r = self.post("process-instances/search", &body)?;
        Ok(r.get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|i| i.get("state").and_then(Value::as_str) == Some("TERMINATED"))
            .filter_map(|i| Some((i.get("processInstanceKey").and_then(key_text)?, i)))
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(k, i)| Cancelled {
                reason: format!("its process instance {k} was cancelled in Camunda 8 (TERMINATED)"),
                at: i.get("endDate").and_then(Value::as_str).and_then(parse_millis),
                task_id: k,
            })
            .collect())
    }
}

/// Camunda 7 (`base_url` ends in `/engine-rest`). A task is a process instance of the
/// one-user-task process (`topologies/camunda/keyflow-human-task-c7.bpmn`) whose business key is
/// the command's idempotency key; its id is the process instance id.
///
/// Not a standalone task (`POST /task/create`), as it was: Camunda 7 drops the variables a
/// standalone task is completed with (nothing reaches the history), so a reviewer's answer never
/// came back. The real engine showed it (`tests/camunda7.rs`).
pub struct Camunda7Tasks {
    pub base_url: String,
    pub http: Client,
    pub credentials: Credentials,
    /// The key of the one-user-task process.
    pub process_key: String,
}

impl Camunda7Tasks {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url.trim_end_matches('/'))
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, CallError> {
        let url = self.url(path);
        self.credentials.send_json(C7, &self.http, || self.http.get(&url).query(query))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let url = self.url(path);
        self.credentials.send_json(C7, &self.http, || self.http.post(&url).json(body))
    }

    /// The open user task of a task's process instance.
    fn user_task_id(&self, task_id: &str) -> Result<String, CallError> {
        let open = self.get("task", &[("processInstanceId", task_id)])?;
        open.pointer("/0/id").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| CallError::Rejected {
            service: C7,
            status: 404,
            message: format!("task {task_id} has no open user task"),
        })
    }
}

impl TaskService for Camunda7Tasks {
    fn create(&self, task: &TaskRequest) -> Result<String, CallError> {
        // The history holds every instance ever started, running or ended, and Camunda 7 reads
        // its database: a retry finds the first instance at once.
        let key = task.idempotency_key.as_str();
        let found = self
            .get("history/process-instance", &[("processDefinitionKey", self.process_key.as_str()), ("processInstanceBusinessKey", key)])?;
        if let Some(id) = found.pointer("/0/id").and_then(Value::as_str) {
            return Ok(id.to_owned());
        }
        let variables = json!({
            "taskName": task.name, "candidateGroups": task.candidate_groups.join(","), "assignee": task.assignee,
            "keyflowIdempotencyKey": key, "keyflowInstanceId": task.instance_id, "keyflowWorkflow": task.workflow,
        });
        let typed: Map<String, Value> = variables.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), typed_value(v))).collect();
        let started =
            self.post(&format!("process-definition/key/{}/start", self.process_key), &json!({"businessKey": key, "variables": typed}))?;
        started.get("id").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| CallError::transient(C7, "start response has no id"))
    }

    fn completed(&self, tasks: &[Opened]) -> Result<Vec<Completed>, CallError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        // The task's process instance is found by its business key, the idempotency key; the
        // POST form of the query takes the whole page of keys in its body, not in the URL.
        let keys: Vec<&str> = tasks.iter().map(|t| t.idempotency_key.as_str()).collect();
        let query = json!({"processDefinitionKey": self.process_key, "processInstanceBusinessKeyIn": keys,
                           "finished": true, "taskDeleteReason": "completed"});
        let url = self.url("history/task");
        let limit = (2 * tasks.len()).to_string();
        let rows = self.credentials.send_json(C7, &self.http, || self.http.post(&url).query(&[("maxResults", &limit)]).json(&query))?;
        let mut unanswered: std::collections::HashSet<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let mut completed = Vec::new();
        for t in rows.as_array().into_iter().flatten() {
            let Some(id) = t.get("processInstanceId").and_then(Value::as_str) else { continue };
            // Deleted tasks finish too; only completions count (the filter says so, and so does this).
            if t.get("deleteReason").and_then(Value::as_str) != Some("completed") || !unanswered.remove(id) {
                continue;
            }
            completed.push(Completed {
                task_id: id.to_owned(),
                completed_by: t.get("assignee").and_then(Value::as_str).map(str::to_owned),
                completed_at: t.get("endTime").and_then(Value::as_str).and_then(parse_millis).unwrap_or_default(),
                variables: Map::new(),
            });
        }
        if completed.is_empty() {
            return Ok(completed);
        }
        // Every answer's variables in one query, a page at a time in a stable order.
        let ids: Vec<&str> = completed.iter().map(|c| c.task_id.as_str()).collect();
        let query = json!({"processInstanceIdIn": ids,
                           "sorting": [{"sortBy": "instanceId", "sortOrder": "asc"}, {"sortBy": "variableName", "sortOrder": "asc"}]});
        let url = self.url("history/variable-instance");
        let mut answers: std::collections::HashMap<String, Map<String, Value>> = std::collections::HashMap::new();
        let mut first = 0;
        loop {
            let page = [("firstResult", first.to_string()), ("maxResults", C7_VARIABLES_PAGE.to_string())];
            let vars = self.credentials.send_json(C7, &self.http, || self.http.post(&url).query(&page).json(&query))?;
            let rows = vars.as_array().map(Vec::as_slice).unwrap_or_default();
            for v in rows {
                let (Some(p), Some(name)) = (v.get("processInstanceId").and_then(Value::as_str), v.get("name").and_then(Value::as_str))
                else {
                    continue;
                };
                if !CREATION_VARIABLES.contains(&name) {
                    answers.entry(p.to_owned()).or_default().insert(name.to_owned(), v.get("value").cloned().unwrap_or(Value::Null));
                }
            }
            if rows.len() < C7_VARIABLES_PAGE {
                break;
            }
            first += rows.len();
        }
        for c in &mut completed {
            c.variables = answers.remove(&c.task_id).unwrap_or_default();
        }
        Ok(completed)
    }

    fn assign(&self, task_id: &str, user: &str) -> Result<(), CallError> {
        // `POST /task/{id}/assignee` sets the assignee whoever holds the task; `/claim` is refused
        // when the task already has one (the real engine answers 500, TaskAlreadyClaimedException).
        let id = self.user_task_id(task_id)?;
        self.post(&format!("task/{id}/assignee"), &json!({"userId": user})).map(drop)
    }

    fn complete(&self, task_id: &str, variables: &Map<String, Value>) -> Result<(), CallError> {
        let id = self.user_task_id(task_id)?;
        let typed: Map<String, Value> = variables.iter().map(|(k, v)| (k.clone(), typed_value(v))).collect();
        self.post(&format!("task/{id}/complete"), &json!({"variables": typed})).map(drop)
    }

    /// `DELETE /process-instance/{id}`: 204, or 404 for an instance no longer running. The
    /// history keeps it, `EXTERNALLY_TERMINATED`.
    fn withdraw(&self, task_id: &str) -> Result<(), CallError> {
        let url = self.url(&format!("process-instance/{task_id}"));
        gone_already(self.credentials.send(C7, &self.http, || self.http.delete(&url)).map(drop))
    }

    /// `POST /history/process-instance` for the page's process instances that have finished;
    /// those `EXTERNALLY_TERMINATED` (deleted through the API or Cockpit) or
    /// `INTERNALLY_TERMINATED` (a terminate end event) were cancelled.
    fn cancelled(&self, tasks: &[Opened]) -> Result<Vec<Cancelled>, CallError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let url = self.url("history/process-instance");
        let limit = ids.len().to_string();
        let query = json!({"processInstanceIds": ids, "finished": true});
        let rows = self.credentials.send_json(C7, &self.http, || self.http.post(&url).query(&[("maxResults", &limit)]).json(&query))?;
        Ok(rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get("id")?.as_str()?, p.get("state")?.as_str()?, p)))
            .filter(|(id, state, _)| ids.contains(id) && state.ends_with("_TERMINATED"))
            .map(|(id, state, p)| Cancelled {
                task_id: id.to_owned(),
                reason: format!("its process instance {id} was cancelled in Camunda 7 ({state})"),
                at: p.get("endTime").and_then(Value::as_str).and_then(parse_millis),
            })
            .collect())
    }
}

/// An ISO 8601 / RFC 3339 date (Camunda 8's `2024-05-01T10:00:00.000Z`, Camunda 7's
/// `2024-05-01T12:00:00.000+0200`) in ms since the epoch.
pub fn parse_millis(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}
