//! The web console, served with the metrics on `http.listen`: each workflow's diagram with the
//! instances on each state and the transition rates on its edges, one instance's state, timers
//! and audit trail, the dead letters (list, one decoded, redrive and purge), and the instance's
//! health. The page and its script are in the binary; nothing is fetched from elsewhere.
//!
//! Figures that span the group (instances per state, transitions) are this instance's summed
//! with its peers' (`http.peers`), each asked once for its own (`X-Keyflow-Forwarded`). Dead
//! letters are read from and acted on in Kafka through the same code as `keyflow dlq`, so a
//! redrive from the page is the same exactly-once redrive. See [`guard`] for who may change data.

pub mod guard;
mod lists;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::Secret;
use crate::ops::dlq::{self, Filter};
use crate::runtime::Status;
use crate::serde::RegistryConfig;
use crate::workflow::diagram::{self, Live};
use crate::workflow::Definition;

/// Marks a request one instance sends another, so it is answered locally and not passed on.
pub const FORWARDED: &str = "X-Keyflow-Forwarded";

/// Where the dead letters are.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    pub kafka: crate::kafka::Clients,
    pub topic: String,
    pub registry: Option<RegistryConfig>,
}

/// What the console migrates instances with (`POST /api/workflows/migrate`): the application's
/// clients and every version of its workflow this member runs.
pub struct Migrations {
    pub kafka: crate::kafka::Clients,
    pub application_id: String,
    pub versions: Arc<crate::workflow::Versions>,
}

/// A request as the console sees it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: guard::Headers<'a>,
    pub forwarded: bool,
    pub body: &'a [u8],
}

/// An answer: status, content type, body.
pub type Reply = (u16, &'static str, Vec<u8>);

const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

/// How far back transition rates look.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Transition totals per (workflow, from, to).
type Totals = BTreeMap<(String, String, String), u64>;

/// Group-wide instances per (workflow, version, state) and transitions per minute per
/// (workflow, from, to).
struct GroupLive {
    counts: BTreeMap<(String, u32, String), i64>,
    rates: BTreeMap<(String, String, String), f64>,
}

pub struct Console {
    application: String,
    workflows: Vec<Arc<Definition>>,
    dead_letters: Option<DeadLetters>,
    migrations: Option<Migrations>,
    token: Option<Secret>,
    allowed_hosts: Vec<String>,
    peers: Vec<String>,
    http: Option<reqwest::blocking::Client>,
    /// Group-wide transition totals as they were seen, for rates.
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl Console {
    pub fn new(application: &str, peers: Vec<String>) -> Self {
        Console {
            application: application.to_owned(),
            workflows: Vec::new(),
            dead_letters: None,
            migrations: None,
            token: None,
            allowed_hosts: Vec::new(),
            peers,
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().ok(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    #[must_use]
    pub fn workflow(mut self, def: Arc<Definition>) -> Self {
        self.workflows.push(def);
        self
    }

    #[must_use]
    pub fn migrations(mut self, m: Migrations) -> Self {
        self.migrations = Some(m);
        self
    }

    #[must_use]
    pub fn dead_letters(mut self, d: DeadLetters) -> Self {
        self.dead_letters = Some(d);
        self
    }

    /// The token changes need; `None` or an empty one (an unset variable in a compose file)
    /// keeps the console read-only.
    #[must_use]
    pub fn token(mut self, token: Option<Secret>) -> Self {
        self.token = token.filter(|t| !t.expose().is_empty());
        self
    }

    /// The names the endpoint answers to (`http.allowed.hosts`; see [`guard::Hosts`]).
    #[must_use]
    pub fn allowed_hosts(mut self, hosts: Vec<String>) -> Self {
        self.allowed_hosts = hosts;
        self
    }

    pub fn application(&self) -> &str {
        &self.application
    }

    pub fn needs_token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    pub fn hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// The console's answer, or `None` for a path that is not the console's.
    pub fn handle(&self, r: &Request<'_>, status: &Status) -> Option<Reply> {
        let json = |code: u16, v: Value| Some((code, JSON, v.to_string().into_bytes()));
        match (r.method, r.path) {
            ("GET", "/" | "/index.html") => Some((200, HTML, include_str!("assets/index.html").as_bytes().to_vec())),
            ("GET", "/assets/console.js") => {
                Some((200, "text/javascript; charset=utf-8", include_str!("assets/console.js").as_bytes().to_vec()))
            }
            ("GET", "/assets/console.css") => {
                Some((200, "text/css; charset=utf-8", include_str!("assets/console.css").as_bytes().to_vec()))
            }
            ("GET", "/api/overview") => json(200, self.overview(status)),
            ("GET", "/api/local") => json(200, local_figures(status)),
            ("GET", "/api/health") => json(200, self.health(status, r.forwarded)),
            ("GET", "/api/dlq") => Some(self.dead_letter_list(r.query)),
            ("POST", "/api/workflows/migrate") => Some(self.migrate(r)),
            ("POST", p) if is_change(p) => Some(self.dead_letter_action(r)),
            ("GET", p) => {
                if let Some(name) = p.strip_prefix("/api/workflows/").and_then(|p| p.strip_suffix("/instances")) {
                    return Some(self.instances_in_state(&percent_decode(name), r.query, status, r.forwarded));
                }
                if let Some(name) = p.strip_prefix("/api/workflows/").and_then(|p| p.strip_suffix("/diagram.svg")) {
                    let version = url_query(r.query).get("version").and_then(|v| v.parse().ok());
                    return Some(self.diagram(&percent_decode(name), version, status));
                }
                if let Some(id) = p.strip_prefix("/api/instances/").filter(|id| !id.is_empty() && !id.contains('/')) {
                    return Some(self.instance(&percent_decode(id), status, r.forwarded));
                }
                p.strip_prefix("/api/dlq/").map(|id| self.dead_letter(&percent_decode(id)))
            }
            _ => None,
        }
    }

    /// Group-wide instances per state and transition totals: this instance's and its peers'.
    fn group_figures(&self, status: &Status) -> (BTreeMap<(String, u32, String), i64>, Totals) {
        let mut counts = status.instance_counts();
        let mut totals = status.transitions();
        for peer in self.ask_peers("/api/local") {
            for c in peer["instances"].as_array().into_iter().flatten() {
                // [workflow, state, count, version]; a peer from before versions sends no version.
                if let (Some(w), Some(s), Some(n)) = (c[0].as_str(), c[1].as_str(), c[2].as_i64()) {
                    let v = c.get(3).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(1);
                    *counts.entry((w.to_owned(), v, s.to_owned())).or_default() += n;
                }
            }
            for t in peer["transitions"].as_array().into_iter().flatten() {
                if let (Some(w), Some(f), Some(to), Some(n)) = (t[0].as_str(), t[1].as_str(), t[2].as_str(), t[3].as_u64()) {
                    *totals.entry((w.to_owned(), f.to_owned(), to.to_owned())).or_default() += n;
                }
            }
        }
        (counts, totals)
    }

    /// Transitions per minute per (workflow, from, to), against the oldest sample inside the
    /// window (none until the console has been asked twice, a second apart).
    fn rates(&self, totals: &Totals) -> BTreeMap<(String, String, String), f64> {
        let now = Instant::now();
        let mut samples = self.samples.lock().expect("console lock");
        while samples.front().is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW) {
            samples.pop_front();
        }
        let mut rates = BTreeMap::new();
        if let Some((at, old)) = samples.front().filter(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1)) {
            let minutes = now.duration_since(*at).as_secs_f64() / 60.0;
            for (k, n) in totals {
                let delta = n.saturating_sub(old.get(k).copied().unwrap_or(0));
                rates.insert(k.clone(), delta as f64 / minutes);
            }
        }
        if samples.back().is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1)) {
            samples.push_back((now, totals.clone()));
        }
        rates
    }

    /// The group's figures, asked of the peers once, for as many workflows as need them.
    fn group_live(&self, status: &Status) -> GroupLive {
        let (counts, totals) = self.group_figures(status);
        let rates = self.rates(&totals);
        GroupLive { counts, rates }
    }

    fn live(def: &Definition, group: &GroupLive) -> Live {
        let GroupLive { counts, rates } = group;
        Live {
            counts: def
                .states
                .keys()
                .map(|s| (s.clone(), counts.get(&(def.name.clone(), def.version, s.clone())).copied().unwrap_or(0)))
                .collect(),
            rates: rates.iter().filter(|((w, ..), _)| *w == def.name).map(|((_, f, t), r)| ((f.clone(), t.clone()), *r)).collect(),
        }
    }

    fn overview(&self, status: &Status) -> Value {
        let group = self.group_live(status);
        let workflows: Vec<Value> = self
            .workflows
            .iter()
            .map(|def| {
                let live = Self::live(def, &group);
                let edges: Vec<Value> = diagram::edges(def)
                    .into_iter()
                    .map(|e| {
                        let rate = live.rates.get(&(e.from.clone(), e.to.clone())).copied();
                        json!({"from": e.from, "to": e.to, "label": e.label(), "actions": e.actions,
                               "kind": format!("{:?}", e.kind).to_lowercase(), "perMinute": rate})
                    })
                    .collect();
                let states: Vec<Value> = def
                    .states
                    .iter()
                    .map(|(name, s)| json!({"name": name, "terminal": s.get_ref().terminal, "instances": live.counts.get(name).copied().unwrap_or(0)}))
                    .collect();
                let versions = self.workflows.iter().filter(|d| d.name == def.name).count();
                json!({"name": def.name, "version": def.version, "versions": versions, "description": def.description,
                       "initial": def.initial.get_ref(), "states": states, "transitions": edges})
            })
            .collect();
        json!({"application": self.application, "workflows": workflows, "changes": self.token.is_some(),
               "deadLetters": self.dead_letters.as_ref().map(|d| d.topic.clone())})
    }

    /// A version's diagram with its live counts (the first, newest, version if none is named).
    fn diagram(&self, name: &str, version: Option<u32>, status: &Status) -> Reply {
        let Some(def) = self.workflows.iter().find(|d| d.name == name && version.is_none_or(|v| d.version == v)) else {
            return (404, JSON, json!({"error": format!("no workflow `{name}` {version:?} here")}).to_string().into_bytes());
        };
        match diagram::svg(&diagram::workflow_dot(def, Some(&Self::live(def, &self.group_live(status))), true)) {
            Ok(svg) => (200, "image/svg+xml", svg.into_bytes()),
            Err(e) => (500, JSON, json!({"error": e}).to_string().into_bytes()),
        }
    }

    /// One workflow instance with its pending timers, from whichever instance of the group owns
    /// its partition.
    fn instance(&self, id: &str, status: &Status, forwarded: bool) -> Reply {
        let not_here = || {
            let e = format!("no workflow instance `{id}` in this group's partitions (or it does not exist)");
            (404, JSON, json!({"error": e}).to_string().into_bytes())
        };
        match status.query(crate::workflow::STORE, id.as_bytes(), Duration::from_secs(5)) {
            Ok(Some(bytes)) => {
                let instance: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let timers = self.pending_timers(&instance, id, status);
                (200, JSON, json!({"instance": instance, "timers": timers}).to_string().into_bytes())
            }
            Ok(None) if !forwarded => {
                let path = format!("/api/instances/{}", percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC));
                self.ask_peers(&path).into_iter().next().map_or_else(not_here, |v| (200, JSON, v.to_string().into_bytes()))
            }
            Ok(None) => not_here(),
            Err(e) => (503, JSON, json!({"error": e}).to_string().into_bytes()),
        }
    }

    fn pending_timers(&self, instance: &Value, id: &str, status: &Status) -> Vec<Value> {
        let version = instance["version"].as_u64().unwrap_or(1);
        let Some(def) = self.workflows.iter().find(|d| instance["workflow"] == d.name.as_str() && u64::from(d.version) == version) else {
            return Vec::new();
        };
        def.timers()
            .into_keys()
            .filter_map(|name| {
                let key = crate::state::pending_key(&def.name, name, id);
                let v = status.query(crate::state::TIMER_STORE, &key, Duration::from_secs(5)).ok()??;
                Some(json!({"name": name, "due": crate::state::pending_due(&v)?}))
            })
            .collect()
    }

    fn health(&self, status: &Status, forwarded: bool) -> Value {
        let mut instances = vec![health_of(status, "this instance")];
        if !forwarded {
            for (peer, v) in self.peers.iter().zip(self.ask_each_peer("/api/health")) {
                instances.push(v.and_then(|v| v["instances"].get(0).cloned()).map_or_else(
                    || json!({"name": peer, "reachable": false}),
                    |mut h| {
                        h["name"] = json!(peer);
                        h
                    },
                ));
            }
        }
        json!({"application": self.application, "instances": instances})
    }

    fn dead_letter_list(&self, query: &str) -> Reply {
        let Some(d) = &self.dead_letters else { return no_dead_letters() };
        let q: BTreeMap<String, String> = url_query(query);
        let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        // A bound that does not parse is refused, not dropped: dropping it would list more.
        let time = |k: &str| text(k).map(|v| dlq::parse_time(&v)).transpose();
        let (since, until) = match (time("since"), time("until")) {
            (Ok(since), Ok(until)) => (since, until),
            (Err(e), _) | (_, Err(e)) => return (400, JSON, json!({"error": e}).to_string().into_bytes()),
        };
        let filter = Filter {
            class: text("class"),
            source_topic: text("topic"),
            key: text("key"),
            since,
            until,
            ids: Vec::new(),
            include_handled: q.get("all").is_some_and(|v| v == "1" || v == "true"),
        };
        match dlq::list(&d.kafka, &d.topic, &filter) {
            Ok(found) => (
                200,
                JSON,
                json!({"topic": d.topic, "deadLetters": found.iter().map(dlq::DeadLetter::to_json).collect::<Vec<_>>()})
                    .to_string()
                    .into_bytes(),
            ),
            Err(e) => (503, JSON, json!({"error": format!("cannot read {}: {e}", d.topic)}).to_string().into_bytes()),
        }
    }

    fn dead_letter(&self, id: &str) -> Reply {
        let Some(d) = &self.dead_letters else { return no_dead_letters() };
        let filter = Filter { ids: vec![id.to_owned()], include_handled: true, ..Filter::default() };
        let found = match dlq::list(&d.kafka, &d.topic, &filter) {
            Ok(found) => found,
            Err(e) => return (503, JSON, json!({"error": format!("cannot read {}: {e}", d.topic)}).to_string().into_bytes()),
        };
        match found.first().map(|one| dlq::detail(d.registry.clone(), one)) {
            Some(Ok(v)) => (200, JSON, v.to_string().into_bytes()),
            Some(Err(e)) => (500, JSON, json!({"error": e.to_string()}).to_string().into_bytes()),
            None => (404, JSON, json!({"error": format!("no dead letter {id} on {}", d.topic)}).to_string().into_bytes()),
        }
    }

    /// Redrive or purge the dead letters a JSON body names (`{"ids": [...], "to": ...}`): the
    /// same calls as `keyflow dlq redrive|purge --id ...`.
    fn dead_letter_action(&self, r: &Request<'_>) -> Reply {
        let refuse = |code: u16, message: String| (code, JSON, json!({"error": message}).to_string().into_bytes());
        if let Err(refusal) = guard::allow_change(self.token.as_ref(), &r.headers) {
            tracing::warn!(path = r.path, status = refusal.status, reason = refusal.message, "console change refused");
            return refuse(refusal.status, refusal.message.to_owned());
        }
        let Some(d) = &self.dead_letters else { return no_dead_letters() };
        let body: Value = match serde_json::from_slice(r.body) {
            Ok(v) => v,
            Err(e) => return refuse(400, format!("the body is not JSON: {e}")),
        };
        let ids: Vec<String> = body["ids"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        if ids.is_empty() {
            return refuse(400, "name the dead letters: {\"ids\": [\"<partition>:<offset>\", ...]}".into());
        }
        let filter = Filter { ids, ..Filter::default() };
        let now = crate::runtime::now_ms();
        let done = if r.path.ends_with("/redrive") {
            dlq::redrive(&d.kafka, &d.topic, &filter, body["to"].as_str(), now)
        } else {
            dlq::purge(&d.kafka, &d.topic, &filter, now)
        };
        match done {
            Ok(h) => {
                tracing::info!(action = r.path, done = ?h.done, skipped = ?h.skipped, "dead letters handled from the console");
                (200, JSON, json!({"done": h.done, "skipped": h.skipped}).to_string().into_bytes())
            }
            Err(e) => refuse(500, e.to_string()),
        }
    }

    /// Migrates instances as `keyflow workflow migrate` does; the body is its options as JSON
    /// (`{"to": 2, "mapping": {"review": "in-review"}, "dryRun": true}`).
    fn migrate(&self, r: &Request<'_>) -> Reply {
        let answer = |code: u16, v: Value| (code, JSON, v.to_string().into_bytes());
        if let Err(refusal) = guard::allow_change(self.token.as_ref(), &r.headers) {
            tracing::warn!(path = r.path, status = refusal.status, reason = refusal.message, "console change refused");
            return answer(refusal.status, json!({"error": refusal.message}));
        }
        let Some(m) = &self.migrations else { return answer(404, json!({"error": "this instance runs no workflow definition"})) };
        let request: crate::ops::migrate::Request = match serde_json::from_slice(r.body) {
            Ok(q) => q,
            Err(e) => return answer(400, json!({"error": format!("the body is not a migration: {e}")})),
        };
        match crate::ops::migrate::migrate(&m.kafka, &m.application_id, &m.versions, request) {
            Ok(o) => {
                tracing::info!(
                    migration = o.name,
                    to = o.to,
                    instances = o.plan.commands.len(),
                    sent = o.sent,
                    "migration from the console"
                );
                let moves: Vec<Value> = o.plan.moves.iter().map(|((v, s), (t, n))| json!([v, s, t, n])).collect();
                answer(200, json!({"name": o.name, "to": o.to, "moves": moves, "instances": o.plan.commands.len(), "sent": o.sent}))
            }
            Err(e @ crate::ops::migrate::Error::Refused(_)) => answer(422, json!({"error": e.to_string()})),
            Err(e) => answer(500, json!({"error": e.to_string()})),
        }
    }

    /// Each peer's JSON answer to `path` (asked once, marked forwarded), in `peers` order.
    fn ask_each_peer(&self, path: &str) -> Vec<Option<Value>> {
        let Some(http) = &self.http else { return vec![None; self.peers.len()] };
        self.peers
            .iter()
            .map(|peer| {
                let mut request = http.get(format!("{}{path}", peer.trim_end_matches('/'))).header(FORWARDED, "1");
                if let Some(token) = &self.token {
                    // The group shares one token: a peer's reads need it as this one's do.
                    request = request.bearer_auth(token.expose());
                }
                let r = request.send().ok()?;
                r.status().is_success().then(|| r.json::<Value>().ok()).flatten()
            })
            .collect()
    }

    /// The peers' successful JSON answers to `path`.
    pub(crate) fn ask_peers(&self, path: &str) -> Vec<Value> {
        self.ask_each_peer(path).into_iter().flatten().collect()
    }
}

/// Whether `path` is one of the console's changes (a POST with a body).
pub fn is_change(path: &str) -> bool {
    matches!(path, "/api/dlq/redrive" | "/api/dlq/purge" | "/api/workflows/migrate")
}

fn no_dead_letters() -> Reply {
    (404, JSON, json!({"error": "this instance has no dead-letter topic configured"}).to_string().into_bytes())
}

/// This instance's own instances per state and transition totals, for a peer's console.
fn local_figures(status: &Status) -> Value {
    let instances: Vec<Value> = status.instance_counts().into_iter().map(|((w, v, s), n)| json!([w, s, n, v])).collect();
    let transitions: Vec<Value> = status.transitions().into_iter().map(|((w, f, t), n)| json!([w, f, t, n])).collect();
    json!({"instances": instances, "transitions": transitions})
}

fn health_of(status: &Status, name: &str) -> Value {
    let s = status.snapshot();
    let lag = status.lag();
    json!({
        "name": name, "reachable": true, "running": s.running, "restoring": s.restoring, "partitions": s.assignment,
        "processed": s.processed, "deadLettered": s.dead_lettered, "commits": s.commits, "aborts": s.aborts,
        "meanCommitMs": s.mean_commit_micros as f64 / 1000.0, "restoredRecords": s.restored_records, "timersFired": s.timers_fired,
        "lagTotal": lag.values().sum::<i64>(),
        "lag": lag.into_iter().map(|((t, p), n)| json!({"topic": t, "partition": p, "lag": n})).collect::<Vec<_>>(),
        "storeKeys": status.store_keys().into_iter().map(|((st, p), n)| json!({"store": st, "partition": p, "keys": n})).collect::<Vec<_>>(),
    })
}

fn url_query(q: &str) -> BTreeMap<String, String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (percent_decode(k), percent_decode(&v.replace('+', " ")))).collect()
}

/// `%xx` escapes in a path segment or query value.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
