//! Schema registries: a Confluent-compatible one over HTTP, or `mock://<scope>`, an in-memory
//! registry shared by everything in the process that names the same scope (as Confluent's
//! serializers do with `mock://`). Both cache schemas by id; ids and schemas never change.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::blocking::schema_registry::{get_schema_by_id, post_schema, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde::Deserialize;

use super::compat::{self, Level};
use super::Error;

/// How to reach a registry. `Debug` redacts the credentials.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistryConfig {
    /// `http(s)://host:port` or `mock://<scope>`.
    pub url: String,
    /// `user:password` for basic auth (Confluent's `basic.auth.user.info`).
    pub basic_auth_user_info: Option<String>,
    /// A bearer token (Confluent's `bearer.auth.token`).
    pub bearer_auth_token: Option<String>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("basic_auth_user_info", &redact(&self.basic_auth_user_info))
            .field("bearer_auth_token", &redact(&self.bearer_auth_token))
            .finish()
    }
}

// One per registry client, shared by every serde that uses it: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Http { settings: SrSettings, base: String, client: reqwest::blocking::Client, auth: RegistryConfig },
    Mock(Arc<Mutex<MockScope>>),
}

/// A schema registry client with a schema cache.
pub struct Registry {
    backend: Backend,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    ids: Mutex<HashMap<(String, String), u32>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Http { base, .. } => write!(f, "Registry({base})"),
            Backend::Mock(_) => write!(f, "Registry(mock)"),
        }
    }
}

impl Registry {
    /// # Errors
    /// [`Error::Registry`] for a URL it cannot use.
    pub fn new(config: &RegistryConfig) -> Result<Arc<Registry>, Error> {
        let backend = if let Some(scope) = config.url.strip_prefix("mock://") {
            Backend::Mock(MockScope::get(scope))
        } else {
            let mut b = SrSettings::new_builder(config.url.clone());
            if let Some(token) = &config.bearer_auth_token {
                b.set_token_authorization(token);
            }
            if let Some(info) = &config.basic_auth_user_info {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                b.set_basic_authorization(user, Some(pass));
            }
            b.set_timeout(Duration::from_secs(10));
            let settings = b.build().map_err(|e| Error::Registry(format!("registry settings: {e}")))?;
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| Error::Registry(e.to_string()))?;
            Backend::Http { settings, base: config.url.trim_end_matches('/').to_owned(), client, auth: config.clone() }
        };
        Ok(Arc::new(Registry { backend, by_id: Mutex::default(), ids: Mutex::default() }))
    }

    /// The schema registered under `id`.
    ///
    /// # Errors
    /// [`Error::UnknownSchemaId`] when the registry has no such id; [`Error::Unavailable`] when
    /// it cannot be reached (retry later).
    pub fn schema(&self, id: u32) -> Result<Arc<Schema>, Error> {
        if let Some(s) = self.by_id.lock().expect("registry cache").get(&id) {
            return Ok(s.clone());
        }
        let text = match &self.backend {
            Backend::Mock(scope) => {
                let s = scope.lock().expect("mock registry");
                s.check_up()?;
                s.schemas.get(id as usize).cloned().ok_or(Error::UnknownSchemaId(id))?
            }
            Backend::Http { settings, .. } => match get_schema_by_id(id, settings) {
                Ok(r) => r.schema,
                Err(e) if e.retriable => return Err(Error::Unavailable(format!("schema {id}: {e}"))),
                Err(e) if e.error.contains("404") || e.cause.as_deref().is_some_and(|c| c.contains("40403") || c.contains("404")) => {
                    return Err(Error::UnknownSchemaId(id))
                }
                Err(e) => return Err(Error::Unavailable(format!("schema {id}: {e}"))),
            },
        };
        let schema = Arc::new(Schema::parse_str(&text).map_err(|e| Error::Registry(format!("schema {id} does not parse: {e}")))?);
        self.by_id.lock().expect("registry cache").insert(id, schema.clone());
        Ok(schema)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    ///
    /// # Errors
    /// [`Error::Incompatible`] if the registry refuses it; [`Error::Unavailable`].
    pub fn register(&self, subject: &str, schema: &Schema) -> Result<u32, Error> {
        let key = (subject.to_owned(), schema.canonical_form());
        if let Some(id) = self.ids.lock().expect("registry cache").get(&key) {
            return Ok(*id);
        }
        let id = match &self.backend {
            Backend::Mock(scope) => scope.lock().expect("mock registry").register(subject, schema)?,
            Backend::Http { settings, .. } => {
                let supplied = SuppliedSchema::new(None, SchemaType::Avro, full_json(schema));
                match post_schema(settings, subject.to_owned(), supplied) {
                    Ok(r) => r.id,
                    Err(e) if e.retriable => return Err(Error::Unavailable(format!("register {subject}: {e}"))),
                    Err(e) if e.error.contains("409") || e.cause.as_deref().is_some_and(|c| c.contains("409")) => {
                        return Err(Error::Incompatible { subject: subject.to_owned(), reasons: vec![e.to_string()] })
                    }
                    Err(e) => return Err(Error::Unavailable(format!("register {subject}: {e}"))),
                }
            }
        };
        self.ids.lock().expect("registry cache").insert(key, id);
        self.by_id.lock().expect("registry cache").insert(id, Arc::new(schema.clone()));
        Ok(id)
    }

    /// Checks `schema` against `subject` under the subject's configured compatibility level.
    /// Returns the reasons it is incompatible (empty: compatible, or nothing registered yet).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Registry`].
    pub fn check(&self, subject: &str, schema: &Schema) -> Result<(Level, Vec<String>), Error> {
        match &self.backend {
            Backend::Mock(scope) => {
                let s = scope.lock().expect("mock registry");
                s.check_up()?;
                let level = s.level(subject);
                let previous: Vec<Schema> =
                    s.versions(subject).iter().map(|t| Schema::parse_str(t).expect("stored schemas parse")).collect();
                Ok((level, compat::check(level, schema, &previous).into_iter().map(|v| v.to_string()).collect()))
            }
            Backend::Http { base, client, auth, .. } => {
                let level = self.http_level(subject)?;
                let url = format!("{base}/compatibility/subjects/{}/versions/latest?verbose=true", encode(subject));
                let body = serde_json::json!({"schema": full_json(schema), "schemaType": "AVRO"});
                let resp = with_auth(client.post(url), auth)
                    .json(&body)
                    .send()
                    .map_err(|e| Error::Unavailable(format!("compatibility of {subject}: {}", crate::connectors::http::describe(&e))))?;
                let status = resp.status();
                let v: serde_json::Value = resp.json().unwrap_or_default();
                if status.as_u16() == 404 {
                    return Ok((level, Vec::new())); // no version registered yet
                }
                if !status.is_success() {
                    return Err(Error::Registry(format!("compatibility of {subject}: HTTP {status}: {v}")));
                }
                if v["is_compatible"].as_bool() == Some(true) {
                    return Ok((level, Vec::new()));
                }
                let mut reasons: Vec<String> =
                    v["messages"].as_array().map(|m| m.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default();
                if reasons.is_empty() {
                    reasons.push(format!("the registry reports it incompatible under {level}"));
                }
                Ok((level, reasons))
            }
        }
    }

    fn http_level(&self, subject: &str) -> Result<Level, Error> {
        let Backend::Http { base, client, auth, .. } = &self.backend else { unreachable!("http only") };
        for url in [format!("{base}/config/{}?defaultToGlobal=true", encode(subject)), format!("{base}/config")] {
            let resp = with_auth(client.get(url), auth)
                .send()
                .map_err(|e| Error::Unavailable(format!("config of {subject}: {}", crate::connectors::http::describe(&e))))?;
            if resp.status().is_success() {
                let v: serde_json::Value = resp.json().unwrap_or_default();
                let level = v["compatibilityLevel"].as_str().or(v["compatibility"].as_str()).unwrap_or("BACKWARD");
                return level.parse().map_err(Error::Registry);
            }
        }
        Ok(Level::Backward)
    }

    /// Sets a subject's compatibility level (mock registries only; used by tests and the demo).
    ///
    /// # Panics
    /// On an HTTP registry.
    pub fn set_mock_level(&self, subject: &str, level: Level) {
        let Backend::Mock(scope) = &self.backend else { panic!("only mock registries are configured this way") };
        scope.lock().expect("mock registry").levels.insert(subject.to_owned(), level);
    }

    /// Takes a mock registry down or brings it back (outage tests).
    ///
    /// # Panics
    /// On an HTTP registry.
    pub fn set_mock_available(&self, up: bool) {
        let Backend::Mock(scope) = &self.backend else { panic!("only mock registries can be taken down") };
        scope.lock().expect("mock registry").down = !up;
        if !up {
            self.by_id.lock().expect("registry cache").clear();
            self.ids.lock().expect("registry cache").clear();
        }
    }
}

/// The schema as JSON with everything in it. Not the Parsing Canonical Form: that drops
/// defaults, and a registry judging compatibility without them refuses every added field.
fn full_json(schema: &Schema) -> String {
    serde_json::to_string(schema).expect("a parsed schema serializes")
}

fn with_auth(r: reqwest::blocking::RequestBuilder, auth: &RegistryConfig) -> reqwest::blocking::RequestBuilder {
    let r = r.header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
    if let Some(t) = &auth.bearer_auth_token {
        return r.bearer_auth(t);
    }
    if let Some(info) = &auth.basic_auth_user_info {
        let (user, pass) = info.split_once(':').unwrap_or((info, ""));
        return r.basic_auth(user, Some(pass));
    }
    r
}

/// Percent-encodes a subject for a URL path (subjects may contain `.`, `-`, `/`).
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// One `mock://` scope.
#[derive(Default)]
struct MockScope {
    /// Index = id; id 0 is never used, as in Confluent's registry.
    schemas: Vec<String>,
    subjects: HashMap<String, Vec<u32>>,
    levels: HashMap<String, Level>,
    down: bool,
}

static SCOPES: LazyLock<Mutex<HashMap<String, Arc<Mutex<MockScope>>>>> = LazyLock::new(Mutex::default);

impl MockScope {
    fn get(scope: &str) -> Arc<Mutex<MockScope>> {
        SCOPES
            .lock()
            .expect("mock scopes")
            .entry(scope.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(MockScope { schemas: vec![String::new()], ..Default::default() })))
            .clone()
    }

    fn check_up(&self) -> Result<(), Error> {
        if self.down {
            return Err(Error::Unavailable("mock registry is down".into()));
        }
        Ok(())
    }

    fn level(&self, subject: &str) -> Level {
        self.levels.get(subject).copied().unwrap_or(Level::Backward)
    }

    fn versions(&self, subject: &str) -> Vec<String> {
        self.subjects.get(subject).map(|ids| ids.iter().map(|&i| self.schemas[i as usize].clone()).collect()).unwrap_or_default()
    }

    fn register(&mut self, subject: &str, schema: &Schema) -> Result<u32, Error> {
        self.check_up()?;
        let canonical = schema.canonical_form();
        let same = |text: &String| Schema::parse_str(text).is_ok_and(|s| s.canonical_form() == canonical);
        if let Some(&id) = self.subjects.get(subject).and_then(|ids| ids.iter().find(|&&i| same(&self.schemas[i as usize]))) {
            return Ok(id);
        }
        let previous: Vec<Schema> = self.versions(subject).iter().map(|t| Schema::parse_str(t).expect("stored schemas parse")).collect();
        let violations = compat::check(self.level(subject), schema, &previous);
        if !violations.is_empty() {
            return Err(Error::Incompatible { subject: subject.to_owned(), reasons: violations.iter().map(ToString::to_string).collect() });
        }
        let id = match self.schemas.iter().skip(1).position(same) {
            Some(i) => i as u32 + 1,
            None => {
                self.schemas.push(full_json(schema));
                (self.schemas.len() - 1) as u32
            }
        };
        self.subjects.entry(subject.to_owned()).or_default().push(id);
        Ok(id)
    }
}
