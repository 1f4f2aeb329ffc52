//! Human tasks behind one trait: open a task for a workflow instance, find tasks completed since
//! a point in time, assign and complete them.
//!
//! - Camunda 8: a task is a process instance of a small BPMN process holding one user task
//!   (`topologies/camunda/keyflow-human-task.bpmn`), started with the workflow's ids as
//!   variables; user tasks are searched, assigned and completed under `/v2/user-tasks/...`.
//! - Camunda 7: the same one-user-task process (`topologies/camunda/keyflow-human-task-c7.bpmn`),
//!   started with the idempotency key as business key, found again by it in the history;
//!   completions and their variables are read from the history (`GET /history/task`,
//!   `GET /history/variable-instance`).
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
}

/// A completed task, as the poller turns it into a `task.completed` event.
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
    /// Tasks completed at or after `since` (ms), oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`CallError`].
    fn completed_since(&self, since: i64, limit: usize) -> Result<Vec<Completed>, CallError>;
    /// # Errors
    /// [`CallError`].
    fn assign(&self, task_id: &str, user: &str) -> Result<(), CallError>;
    /// # Errors
    /// [`CallError`].
    fn complete(&self, task_id: &str, variables: &Map<String, Value>) -> Result<(), CallError>;
}

const C8: &str = "camunda8";
const C7: &str = "camunda7";

/// The variables keyflow starts a task's process with (both Camundas); the rest are the
/// person's answer.
const CREATION_VARIABLES: [&str; 6] =
    ["taskName", "candidateGroups", "assignee", "keyflowIdempotencyKey", "keyflowInstanceId", "keyflowWorkflow"];

/// Variables of one user task read per page.
const C8_VARIABLES_PAGE: usize = 100;

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

    fn completed_since(&self, since: i64, limit: usize) -> Result<Vec<Completed>, CallError> {
        let body = json!({
            "filter": {"state": "COMPLETED", "processDefinitionId": self.process_id, "completionDate": {"$gte": format_millis(since)}},
            "sort": [{"field": "completionDate", "order": "ASC"}],
            "page": {"limit": limit},
        });
        let r = self.post("user-tasks/search", &body)?;
        let mut out = Vec::new();
        for item in r.get("items").and_then(Value::as_array).into_iter().flatten() {
            let (Some(task_id), Some(user_task)) =
                (item.get("processInstanceKey").and_then(key_text), item.get("userTaskKey").and_then(key_text))
            else {
                continue;
            };
            let variables = self.variables(&user_task)?;
            out.push(Completed {
                task_id,
                completed_by: item.get("assignee").and_then(Value::as_str).map(str::to_owned),
                completed_at: item.get("completionDate").and_then(Value::as_str).and_then(parse_millis).unwrap_or(since),
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

    fn completed_since(&self, since: i64, limit: usize) -> Result<Vec<Completed>, CallError> {
        // `finishedAfter` is exclusive; a millisecond earlier makes it "at or after".
        let after = format_c7(since - 1);
        let limit = limit.to_string();
        let q = [
            ("processDefinitionKey", self.process_key.as_str()),
            ("finished", "true"),
            ("finishedAfter", after.as_str()),
            ("sortBy", "endTime"),
            ("sortOrder", "asc"),
            ("maxResults", limit.as_str()),
        ];
        let tasks = self.get("history/task", &q)?;
        let mut out = Vec::new();
        for t in tasks.as_array().into_iter().flatten() {
            // Deleted tasks finish too; only completions count.
            if t.get("deleteReason").and_then(Value::as_str) != Some("completed") {
                continue;
            }
            let Some(id) = t.get("processInstanceId").and_then(Value::as_str) else { continue };
            let vars = self.get("history/variable-instance", &[("processInstanceIdIn", id)])?;
            let variables = vars
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| Some((v.get("name")?.as_str()?.to_owned(), v.get("value").cloned().unwrap_or(Value::Null))))
                .filter(|(name, _)| !CREATION_VARIABLES.contains(&name.as_str()))
                .collect();
            out.push(Completed {
                task_id: id.to_owned(),
                completed_by: t.get("assignee").and_then(Value::as_str).map(str::to_owned),
                completed_at: t.get("endTime").and_then(Value::as_str).and_then(parse_millis).unwrap_or(since),
                variables,
            });
        }
        Ok(out)
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
}

/// An ISO 8601 / RFC 3339 date (Camunda 8's `2024-05-01T10:00:00.000Z`, Camunda 7's
/// `2024-05-01T12:00:00.000+0200`) in ms since the epoch.
pub fn parse_millis(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// RFC 3339 in UTC with milliseconds.
pub fn format_millis(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| format!("{t:.3}")).unwrap_or_default()
}

/// Camunda 7's query date format: `yyyy-MM-dd'T'HH:mm:ss.SSSZ`, here with a `+0000` offset.
fn format_c7(ms: i64) -> String {
    format_millis(ms).trim_end_matches('Z').to_owned() + "+0000"
}
