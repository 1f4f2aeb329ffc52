//! Workflow definitions (`topologies/*.toml`): parsed, then validated with errors that name the
//! problem and its place (file, line, the field).
//!
//! ```toml
//! name = "document-approval"
//! key = "record.key"            # the instance is the Kafka record key
//! initial = "new"
//!
//! [[inputs]]
//! topic = "alfresco.node-events"
//! event_field = "type"          # the event's name is this field of the value (or: event = "...")
//!
//! [states.review]
//! timers = [{ name = "escalate", after = "48h", fire = "review.timeout" }]
//! [states.approved]
//! terminal = true
//!
//! [[transitions]]
//! from = "classified"
//! on = "decision.made"
//! when = "event.outcome.route == 'manual'"      # CEL, over `event`, `vars`, `state`
//! to = "review"
//! actions = [{ type = "open_task", name = "Review document", candidate_groups = ["reviewers"] }]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

/// A definition error: what is wrong and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct Error {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// What to do with an event that fits no transition of the instance's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmatched {
    /// Send it to the dead-letter topic with the reason.
    #[default]
    DeadLetter,
    /// Drop it (logged).
    Ignore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    /// The version of this definition, from 1. An instance keeps the version it started on, and
    /// a change that instances in flight would notice is deployed as a new version (see
    /// `workflow::versions`). Default 1.
    #[serde(default = "first_version")]
    pub version: u32,
    #[serde(default)]
    pub description: String,
    /// How an event names its instance. Only `record.key` (the Kafka record key) for now:
    /// keying by a value field would need a repartition topic.
    pub key: Spanned<String>,
    /// The state of an instance before its first event.
    pub initial: Spanned<String>,
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Field of an event's value holding its id, used to drop duplicates. Default `id`.
    #[serde(default = "default_id_field")]
    pub event_id_field: String,
    /// Field of an event's value that, when present, makes it an error event (`on_error`).
    #[serde(default = "default_error_field")]
    pub error_field: String,
    pub inputs: Vec<Spanned<Input>>,
    pub states: BTreeMap<String, Spanned<State>>,
    #[serde(default)]
    pub transitions: Vec<Spanned<Transition>>,
    /// Topics of the runtime's own outputs; defaults are `<name>.<channel>`.
    #[serde(default)]
    pub channels: Channels,
}

pub(super) fn first_version() -> u32 {
    1
}
fn default_id_field() -> String {
    "id".into()
}
fn default_error_field() -> String {
    "error".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub topic: String,
    /// A fixed event name for every record of the topic.
    pub event: Option<String>,
    /// Or: the value's field that names the event.
    pub event_field: Option<String>,
    /// `json` (default) or `avro` (Confluent wire format, through `schema.registry.url`).
    #[serde(default)]
    pub format: Format,
    /// Avro reader schema file, relative to the definition; without it records are read with
    /// their writer schema.
    pub schema: Option<String>,
    /// The parsed reader schema (filled by `workflow::load`).
    #[serde(skip)]
    pub reader_schema: Option<apache_avro::Schema>,
    /// Records of the topic the workflow does not want, skipped before they reach an
    /// instance (never dead letters). Default: none skipped.
    pub filter: Option<InputFilter>,
}

/// A rule for the records of an input that are not the workflow's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputFilter {
    /// Alfresco repository events: only a document's content arriving, changing (a new
    /// version) or being deleted; metadata edits (keyflow's own write-back among them),
    /// folders, moves and the like are skipped. The same rule as the connectors' ingest
    /// (`connectors::alfresco::content_change`).
    AlfrescoContent,
}

impl InputFilter {
    /// Why `value` is skipped, or `None` to keep it. A record the rule cannot read is kept: the
    /// workflow then says what is wrong with it (a dead letter), instead of it vanishing.
    pub fn skips(self, value: &Value) -> Option<&'static str> {
        match self {
            InputFilter::AlfrescoContent => match crate::connectors::alfresco::content_change(value) {
                Ok(None) => Some("not a document content change"),
                Ok(Some(_)) | Err(_) => None,
            },
        }
    }
}

/// The wire format of an input's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Avro,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub terminal: bool,
    /// Set when the state is entered, cancelled when it is left.
    #[serde(default)]
    pub timers: Vec<TimerSpec>,
    /// Events this state drops silently (late or repeated service results).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Events that start the instance again, in a new run from the initial state (taken by the
    /// transition from `initial` that matches the event). On a terminal state this restarts a
    /// finished instance (a new version of an approved document); on any other state it
    /// supersedes the run in flight: the run's open human tasks are withdrawn, its timers
    /// cancelled, and the answers still on their way to it are recognised by their run and
    /// ignored.
    #[serde(default)]
    pub restart_on: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimerSpec {
    pub name: String,
    /// `30s`, `15m`, `48h`, `2d`.
    pub after: String,
    /// The event the timer delivers to the instance.
    pub fire: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// One state, or several.
    pub from: OneOrMany,
    /// The event that takes it...
    pub on: Option<String>,
    /// ...or the error code (like a BPMN error boundary event).
    pub on_error: Option<String>,
    /// A CEL condition over `event`, `vars` and `state`.
    pub when: Option<String>,
    pub to: Option<Spanned<String>>,
    /// Instance variables to set, from templates (see `actions`).
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn states(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// An action as written. String values are templates: `$key`, `$state`, `$step`,
/// `$event.<path>`, `$vars.<name>`; anything else is a literal.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    /// An event or a command to another service's topic (choreography).
    Emit {
        topic: String,
        #[serde(default)]
        fields: BTreeMap<String, Value>,
        retry: Option<RetrySpec>,
    },
    RequestDecision {
        decision: String,
        #[serde(default)]
        inputs: BTreeMap<String, Value>,
        retry: Option<RetrySpec>,
    },
    OpenTask {
        name: String,
        #[serde(default)]
        candidate_groups: Vec<String>,
        assignee: Option<String>,
        retry: Option<RetrySpec>,
    },
    UpdateDocument {
        #[serde(default)]
        properties: BTreeMap<String, Value>,
        #[serde(default)]
        aspects: Vec<String>,
        /// The document version the outcome is about (a template, e.g. `$vars.versionLabel`):
        /// the connector writes it only while that version is still the node's current one,
        /// and dead-letters the write-back, naming both versions, once a newer one exists.
        version: Option<String>,
        retry: Option<RetrySpec>,
    },
    Notify {
        channel: String,
        recipient: String,
        subject: String,
        #[serde(default)]
        body: String,
        retry: Option<RetrySpec>,
    },
    SetTimer {
        name: String,
        after: String,
        fire: String,
    },
    CancelTimer {
        name: String,
    },
}

/// Retries of an action that leaves Kafka, performed by its executor.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub attempts: u32,
    /// First backoff, doubled each attempt.
    pub backoff: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub transitions: Option<String>,
    pub decisions: Option<String>,
    pub tasks: Option<String>,
    pub documents: Option<String>,
    pub notifications: Option<String>,
    /// Where the connectors answer decisions (`decision.made`). Default `<name>.decision-results`.
    pub decision_results: Option<String>,
    /// Where completed human tasks arrive (`task.completed`). Default `<name>.task-results`.
    pub task_results: Option<String>,
    /// Where document write-backs are confirmed, if the workflow wants to know. Default: none,
    /// and a write-back that fails for good is dead-lettered.
    pub document_results: Option<String>,
}

/// Parses `30s`, `15m`, `48h`, `2d`, `500ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return None,
    })
}

impl Definition {
    /// Every timer the workflow can set, name -> the event it fires: the states' timers and the
    /// `set_timer` actions.
    pub fn timers(&self) -> BTreeMap<&str, &str> {
        let mut timers: BTreeMap<&str, &str> =
            self.states.values().flat_map(|s| s.get_ref().timers.iter().map(|t| (t.name.as_str(), t.fire.as_str()))).collect();
        for t in &self.transitions {
            for a in &t.get_ref().actions {
                if let ActionSpec::SetTimer { name, fire, .. } = a {
                    timers.insert(name, fire);
                }
            }
        }
        timers
    }

    /// Parses and validates a definition. `file` names it in errors.
    ///
    /// # Errors
    /// [`Error`] with the line and what is wrong: TOML syntax, unknown fields, unknown or
    /// unreachable states, transitions without a target, missing inputs, bad guards or durations.
    pub fn parse(text: &str, file: &str) -> Result<Definition, Error> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let def: Definition = toml::from_str(text).map_err(|e| Error {
            file: file.into(),
            line: e.span().map_or(1, |s| line_of(s.start)),
            message: e.message().to_owned(),
        })?;
        let err = |span: std::ops::Range<usize>, message: String| Error { file: file.into(), line: line_of(span.start), message };
        if def.key.get_ref() != "record.key" {
            return Err(err(
                def.key.span(),
                format!("key `{}` is not supported: use `record.key` (producers key events by the instance id)", def.key.get_ref()),
            ));
        }
        if def.version == 0 {
            return Err(Error { file: file.into(), line: 1, message: "version 0: versions count from 1".into() });
        }
        if def.inputs.is_empty() {
            return Err(Error { file: file.into(), line: 1, message: "no [[inputs]]: the workflow reads no topic".into() });
        }
        for input in &def.inputs {
            let i = input.get_ref();
            if i.event.is_some() == i.event_field.is_some() {
                return Err(err(input.span(), format!("input `{}`: set exactly one of `event` and `event_field`", i.topic)));
            }
            if i.schema.is_some() && i.format != Format::Avro {
                return Err(err(input.span(), format!("input `{}`: `schema` needs format = \"avro\"", i.topic)));
            }
        }
        let known = |s: &str| def.states.contains_key(s);
        if !known(def.initial.get_ref()) {
            return Err(err(def.initial.span(), format!("initial state `{}` is not declared in [states]", def.initial.get_ref())));
        }
        for (name, state) in &def.states {
            for t in &state.get_ref().timers {
                if parse_duration(&t.after).is_none() {
                    return Err(err(
                        state.span(),
                        format!("state `{name}`: timer `{}` has a bad duration `{}` (use 30s, 15m, 48h, 2d)", t.name, t.after),
                    ));
                }
            }
        }
        for (name, state) in &def.states {
            if name == def.initial.get_ref() && !state.get_ref().restart_on.is_empty() {
                return Err(err(state.span(), format!("state `{name}` is the initial state: a run that has not started cannot restart")));
            }
            for event in &state.get_ref().restart_on {
                let starts = def.transitions.iter().any(|t| {
                    let tr = t.get_ref();
                    tr.on.as_ref() == Some(event) && tr.from.states().contains(&def.initial.get_ref().as_str())
                });
                if !starts {
                    return Err(err(
                        state.span(),
                        format!(
                            "state `{name}`: restart_on `{event}` needs a transition from the initial state `{}` on `{event}` to start the new run with",
                            def.initial.get_ref()
                        ),
                    ));
                }
            }
        }
        for (i, t) in def.transitions.iter().enumerate() {
            let tr = t.get_ref();
            let at = |m: String| err(t.span(), format!("transition #{} ({}): {m}", i + 1, tr.from.states().join("|")));
            for from in tr.from.states() {
                if !known(from) {
                    return Err(at(format!("unknown state `{from}` in `from`")));
                }
                if def.states[from].get_ref().terminal {
                    return Err(at(format!("`{from}` is terminal: nothing leaves it")));
                }
            }
            if tr.on.is_some() == tr.on_error.is_some() {
                return Err(at("set exactly one of `on` and `on_error`".into()));
            }
            match &tr.to {
                None => return Err(at("no target state (`to`)".into())),
                Some(to) if !known(to.get_ref()) => {
                    return Err(err(
                        to.span(),
                        format!("transition #{} ({}): unknown state `{}` in `to`", i + 1, tr.from.states().join("|"), to.get_ref()),
                    ))
                }
                _ => {}
            }
            if let Some(when) = &tr.when {
                if let Err(e) = cel::Program::compile(when) {
                    return Err(at(format!("guard `{when}` does not parse: {e}")));
                }
            }
            for a in &tr.actions {
                let bad = match a {
                    ActionSpec::SetTimer { after, .. } => {
                        parse_duration(after).is_none().then(|| format!("set_timer: bad duration `{after}`"))
                    }
                    ActionSpec::Emit { retry: Some(r), .. }
                    | ActionSpec::RequestDecision { retry: Some(r), .. }
                    | ActionSpec::OpenTask { retry: Some(r), .. }
                    | ActionSpec::UpdateDocument { retry: Some(r), .. }
                    | ActionSpec::Notify { retry: Some(r), .. } => {
                        parse_duration(&r.backoff).is_none().then(|| format!("retry: bad backoff `{}`", r.backoff))
                    }
                    _ => None,
                };
                if let Some(m) = bad {
                    return Err(at(m));
                }
            }
        }
        // Every state must be reachable from the initial one.
        let mut reached: BTreeSet<&str> = BTreeSet::from([def.initial.get_ref().as_str()]);
        loop {
            let before = reached.len();
            for t in &def.transitions {
                let tr = t.get_ref();
                if tr.from.states().iter().any(|f| reached.contains(f)) {
                    reached.insert(tr.to.as_ref().expect("validated above").get_ref().as_str());
                }
            }
            if reached.len() == before {
                break;
            }
        }
        if let Some((name, state)) = def.states.iter().find(|(n, _)| !reached.contains(n.as_str())) {
            return Err(err(state.span(), format!("state `{name}` is unreachable from `{}`", def.initial.get_ref())));
        }
        Ok(def)
    }

    pub fn channel(&self, which: &str) -> String {
        let c = &self.channels;
        let set = match which {
            "transitions" => &c.transitions,
            "decisions" => &c.decisions,
            "tasks" => &c.tasks,
            "documents" => &c.documents,
            "decision-results" => &c.decision_results,
            "task-results" => &c.task_results,
            _ => &c.notifications,
        };
        set.clone().unwrap_or_else(|| format!("{}.{which}", self.name))
    }

    /// Where the connectors answer the commands of channel `which`, if anywhere.
    pub fn result_channel(&self, which: &str) -> Option<String> {
        match which {
            "decisions" => Some(self.channel("decision-results")),
            "tasks" => Some(self.channel("task-results")),
            "documents" => self.channels.document_results.clone(),
            _ => None,
        }
    }
}
