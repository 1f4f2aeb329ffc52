//! Decisions (DMN) behind one trait, with three backends:
//!
//! - Camunda 8 Orchestration Cluster REST API v2: `POST /v2/decision-definitions/evaluation`,
//!   plain JSON variables, OAuth2 client credentials.
//! - Camunda 7 engine-rest: `POST /decision-definition/key/{key}/evaluate`, typed variables.
//! - dsntk, a standalone DMN 1.3/1.5 engine: the same `.dmn` file that would be deployed to
//!   Camunda, evaluated without Camunda (development, tests).
//! - Rules: ordered CEL rules in the configuration, first match wins (DMN's FIRST hit policy):
//!   the embedded fallback when no engine is at hand (the demo).
//!
//! Every backend returns the outcome as a JSON object of output name -> value, so a workflow's
//! guards (`event.outcome.route`) do not depend on the backend.

use std::collections::BTreeMap;

use reqwest::blocking::Client;
use serde_json::{json, Map, Value};

use super::auth::Credentials;
use super::http::CallError;

pub trait DecisionService: Send + Sync {
    /// Evaluates the latest version of `decision` (its DMN id) with `variables`.
    ///
    /// # Errors
    /// [`CallError`], classified by what to do about it.
    fn evaluate(&self, decision: &str, variables: &Map<String, Value>) -> Result<Map<String, Value>, CallError>;
}

const C8: &str = "camunda8";
const C7: &str = "camunda7";
const DSNTK: &str = "dsntk";

/// Camunda 8 (8.6+; the v2 API of the Orchestration Cluster).
pub struct Camunda8 {
    pub base_url: String,
    pub http: Client,
    pub credentials: Credentials,
    pub tenant_id: Option<String>,
}

impl DecisionService for Camunda8 {
    fn evaluate(&self, decision: &str, variables: &Map<String, Value>) -> Result<Map<String, Value>, CallError> {
        let url = format!("{}/v2/decision-definitions/evaluation", self.base_url.trim_end_matches('/'));
        let mut body = json!({"decisionDefinitionId": decision, "variables": variables});
        if let Some(t) = &self.tenant_id {
            body["tenantId"] = json!(t);
        }
        let r: Value = self.credentials.send_json(C8, &self.http, || self.http.post(&url).json(&body))?;
        if let Some(msg) = r.get("failureMessage").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            let failed = r.get("failedDecisionDefinitionId").and_then(Value::as_str).unwrap_or(decision);
            return Err(CallError::Rejected { service: C8, status: 200, message: format!("decision `{failed}` failed: {msg}") });
        }
        // `output` is a JSON document in a string: an object for several outputs, the bare value
        // for one (named by the matched rule's evaluated output).
        let output =
            r.get("output").and_then(Value::as_str).ok_or_else(|| CallError::transient(C8, "evaluation response has no `output`"))?;
        let output: Value = serde_json::from_str(output).map_err(|e| CallError::transient(C8, format!("`output` is not JSON: {e}")))?;
        let name = r.pointer("/evaluatedDecisions/0/matchedRules/0/evaluatedOutputs/0/outputName").and_then(Value::as_str);
        outcome(C8, decision, output, name)
    }
}

/// Camunda 7 (`base_url` ends in `/engine-rest`).
pub struct Camunda7 {
    pub base_url: String,
    pub http: Client,
    pub credentials: Credentials,
}

impl DecisionService for Camunda7 {
    fn evaluate(&self, decision: &str, variables: &Map<String, Value>) -> Result<Map<String, Value>, CallError> {
        let url = format!("{}/decision-definition/key/{decision}/evaluate", self.base_url.trim_end_matches('/'));
        let typed: Map<String, Value> = variables.iter().map(|(k, v)| (k.clone(), typed_value(v))).collect();
        let body = json!({"variables": typed});
        let r: Value = self.credentials.send_json(C7, &self.http, || self.http.post(&url).json(&body))?;
        // One map of output name -> typed value per matched rule.
        let rules: Vec<Map<String, Value>> = r
            .as_array()
            .ok_or_else(|| CallError::transient(C7, "evaluation response is not an array"))?
            .iter()
            .filter_map(Value::as_object)
            .map(|rule| rule.iter().map(|(k, v)| (k.clone(), v.get("value").cloned().unwrap_or(Value::Null))).collect())
            .collect();
        match rules.len() {
            0 => outcome(C7, decision, Value::Null, None),
            1 => Ok(rules.into_iter().next().expect("one")),
            _ => Ok(Map::from_iter([("results".to_owned(), Value::Array(rules.into_iter().map(Value::Object).collect()))])),
        }
    }
}

/// Camunda 7's typed variable for a JSON value.
pub fn typed_value(v: &Value) -> Value {
    match v {
        Value::Null => json!({"value": null, "type": "Null"}),
        Value::Bool(b) => json!({"value": b, "type": "Boolean"}),
        Value::Number(n) if n.is_i64() => {
            let i = n.as_i64().expect("i64");
            json!({"value": i, "type": if i32::try_from(i).is_ok() { "Integer" } else { "Long" }})
        }
        Value::Number(n) => json!({"value": n, "type": "Double"}),
        Value::String(s) => json!({"value": s, "type": "String"}),
        other => json!({"value": other.to_string(), "type": "Json"}),
    }
}

/// dsntk's HTTP API: `POST /evaluate/<model path>/<decision name>` with the inputs as JSON.
pub struct Dsntk {
    pub base_url: String,
    pub http: Client,
    /// Decision id -> its path under `/evaluate/` (namespace path, model name, decision name).
    pub paths: BTreeMap<String, String>,
}

impl DecisionService for Dsntk {
    fn evaluate(&self, decision: &str, variables: &Map<String, Value>) -> Result<Map<String, Value>, CallError> {
        let path = self.paths.get(decision).ok_or_else(|| CallError::Rejected {
            service: DSNTK,
            status: 404,
            message: format!("no model path configured for decision `{decision}` ([connectors.decisions.paths])"),
        })?;
        let url = format!("{}/evaluate/{}", self.base_url.trim_end_matches('/'), path.trim_matches('/'));
        let r: Value = Credentials::None.send_json(DSNTK, &self.http, || self.http.post(&url).json(variables))?;
        if let Some(errors) = r.get("errors").filter(|e| e.as_array().is_some_and(|a| !a.is_empty())) {
            return Err(CallError::Rejected { service: DSNTK, status: 200, message: format!("decision `{decision}` failed: {errors}") });
        }
        outcome(DSNTK, decision, r.get("data").cloned().unwrap_or(Value::Null), None)
    }
}

/// One rule of a [`Rules`] decision, as configured.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A CEL condition over the decision's variables (`classification == 'invoice' && sizeBytes < 10000000`).
    pub when: String,
    /// The outcome when it holds.
    pub outcome: Map<String, Value>,
}

/// A compiled rule: its source text, program and outcome.
type Rule = (String, cel::Program, Map<String, Value>);

/// Decisions as ordered CEL rules (hit policy FIRST), compiled once.
pub struct Rules {
    decisions: BTreeMap<String, Vec<Rule>>,
}

impl Rules {
    /// # Errors
    /// A rule that does not compile, named by decision and position.
    pub fn new(config: &BTreeMap<String, Vec<RuleConfig>>) -> Result<Self, String> {
        let mut decisions = BTreeMap::new();
        for (decision, rules) in config {
            let compiled = rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    cel::Program::compile(&r.when)
                        .map(|p| (r.when.clone(), p, r.outcome.clone()))
                        .map_err(|e| format!("decision `{decision}` rule {}: {e}", i + 1))
                })
                .collect::<Result<Vec<_>, _>>()?;
            decisions.insert(decision.clone(), compiled);
        }
        Ok(Self { decisions })
    }
}

const RULES: &str = "rules";

impl DecisionService for Rules {
    fn evaluate(&self, decision: &str, variables: &Map<String, Value>) -> Result<Map<String, Value>, CallError> {
        let refuse = |message: String| CallError::Rejected { service: RULES, status: 422, message };
        let rules = self.decisions.get(decision).ok_or_else(|| CallError::Rejected {
            service: RULES,
            status: 404,
            message: format!("no rules for decision `{decision}`"),
        })?;
        let mut ctx = cel::Context::default();
        for (name, value) in variables {
            ctx.add_variable(name.as_str(), value).map_err(|e| refuse(format!("variable `{name}`: {e}")))?;
        }
        for (when, program, outcome) in rules {
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => return Ok(outcome.clone()),
                Ok(cel::Value::Bool(false)) => {}
                Ok(other) => return Err(refuse(format!("rule `{when}` gave {other:?}, not a boolean"))),
                Err(e) => return Err(refuse(format!("rule `{when}`: {e}"))),
            }
        }
        outcome(RULES, decision, Value::Null, None)
    }
}

/// An object stays as it is; a bare value is named by `name` (or `result`); nothing is an error.
fn outcome(service: &'static str, decision: &str, output: Value, name: Option<&str>) -> Result<Map<String, Value>, CallError> {
    match output {
        Value::Object(m) => Ok(m),
        Value::Null => Err(CallError::Rejected {
            service,
            status: 200,
            message: format!("decision `{decision}` produced no result (no rule matched)"),
        }),
        other => Ok(Map::from_iter([(name.unwrap_or("result").to_owned(), other)])),
    }
}
