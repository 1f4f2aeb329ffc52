//! Credentials for outbound calls, and the one way every client sends an authorized request:
//! build it, attach credentials, send; on 401 refresh what can be refreshed (an OAuth token,
//! an Alfresco ticket) and send once more.
//!
//! - `basic`: user and password on every call (Camunda 7, Alfresco).
//! - `bearer`: a fixed token.
//! - `oauth`: OAuth2 client credentials (Camunda 8 SaaS, Self-Managed with Identity/Keycloak),
//!   cached until shortly before expiry.
//! - `ticket`: Alfresco's authentication ticket (`POST .../authentication/versions/1/tickets`),
//!   sent as `Authorization: Basic base64(ticket)` as Alfresco documents.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{self, CallError};
use crate::config::Secret;

/// How a service authenticates keyflow, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    #[default]
    None,
    Basic {
        user: String,
        password: Secret,
    },
    Bearer {
        token: Secret,
    },
    #[serde(rename = "oauth")]
    OAuth(OAuthConfig),
    /// Alfresco: log in with user and password for a ticket, use the ticket until refused.
    Ticket {
        user: String,
        password: Secret,
    },
}

/// Credentials in use, with whatever they cache.
#[derive(Debug)]
pub enum Credentials {
    None,
    Basic { user: String, password: Secret },
    Bearer(Secret),
    OAuth(TokenSource),
    Ticket { url: String, user: String, password: Secret, cached: Mutex<Option<String>> },
}

impl Credentials {
    /// `ticket_url` is where tickets come from (only `ticket` uses it).
    pub fn new(config: &AuthConfig, ticket_url: &str) -> Self {
        match config.clone() {
            AuthConfig::None => Credentials::None,
            AuthConfig::Basic { user, password } => Credentials::Basic { user, password },
            AuthConfig::Bearer { token } => Credentials::Bearer(token),
            AuthConfig::OAuth(c) => Credentials::OAuth(TokenSource::new(c)),
            AuthConfig::Ticket { user, password } => {
                Credentials::Ticket { url: ticket_url.to_owned(), user, password, cached: Mutex::new(None) }
            }
        }
    }

    fn apply(&self, service: &'static str, http: &Client, request: RequestBuilder, refresh: bool) -> Result<RequestBuilder, CallError> {
        Ok(match self {
            Credentials::None => request,
            Credentials::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
            Credentials::Bearer(t) => request.bearer_auth(t.expose()),
            Credentials::OAuth(source) => request.bearer_auth(source.token(http, refresh)?),
            Credentials::Ticket { url, user, password, cached } => {
                let mut cached = cached.lock().expect("ticket lock");
                if refresh || cached.is_none() {
                    let body = json!({"userId": user, "password": password.expose()});
                    let r = http::send(service, http.post(url).json(&body)).map_err(|f| f.into_login(service))?;
                    let v = http::read_json(service, r)?;
                    let ticket = v
                        .pointer("/entry/id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| CallError::transient(service, "ticket response has no entry.id"))?;
                    *cached = Some(ticket.to_owned());
                }
                let ticket = cached.as_deref().expect("set above");
                request
                    .header(reqwest::header::AUTHORIZATION, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(ticket)))
            }
        })
    }

    fn refreshable(&self) -> bool {
        matches!(self, Credentials::OAuth(_) | Credentials::Ticket { .. })
    }

    /// [`Credentials::send`], then the response's JSON body (see [`http::read_json`]).
    ///
    /// # Errors
    /// As [`Credentials::send`].
    pub fn send_json(&self, service: &'static str, http: &Client, build: impl Fn() -> RequestBuilder) -> Result<Value, CallError> {
        http::read_json(service, self.send(service, http, build)?)
    }

    /// Sends the request `build` makes, authorized; refreshes credentials once on 401.
    ///
    /// # Errors
    /// The call's [`CallError`]; credentials still refused after a refresh are transient.
    pub fn send(&self, service: &'static str, http: &Client, build: impl Fn() -> RequestBuilder) -> Result<Response, CallError> {
        match http::send(service, self.apply(service, http, build(), false)?) {
            Err(http::Failure::Unauthorized(u)) if self.refreshable() => {
                tracing::info!(service, status = u.status, "credentials refused; refreshing them once");
                http::send(service, self.apply(service, http, build(), true)?).map_err(|f| f.into_call(service))
            }
            other => other.map_err(|f| f.into_call(service)),
        }
    }
}

/// Client-credentials settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `zeebe.camunda.io` on SaaS; the API's audience on Self-Managed. Default: none.
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// Refresh this long before the token's announced expiry, so a token never expires in flight.
const EARLY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct TokenSource {
    config: OAuthConfig,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    pub fn new(config: OAuthConfig) -> Self {
        Self { config, cached: Mutex::new(None) }
    }

    /// A valid token: the cached one unless it is about to expire or `refresh` is set (the
    /// service refused it).
    ///
    /// # Errors
    /// The token endpoint failed or refused the credentials (transient: events wait for an
    /// operator rather than fail).
    pub fn token(&self, http: &Client, refresh: bool) -> Result<String, CallError> {
        let mut cached = self.cached.lock().expect("token lock");
        if let Some((token, expires)) = cached.as_ref() {
            if !refresh && Instant::now() + EARLY < *expires {
                return Ok(token.clone());
            }
        }
        let c = &self.config;
        let mut form =
            vec![("grant_type", "client_credentials"), ("client_id", c.client_id.as_str()), ("client_secret", c.client_secret.expose())];
        if let Some(a) = &c.audience {
            form.push(("audience", a));
        }
        if let Some(s) = &c.scope {
            form.push(("scope", s));
        }
        let response = http::send("oauth", http.post(&c.token_url).form(&form)).map_err(|f| f.into_login("oauth"))?;
        let t: TokenResponse = serde_json::from_value(http::read_json("oauth", response)?)
            .map_err(|e| CallError::transient("oauth", format!("token response unreadable: {e}")))?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(300));
        tracing::debug!(?lifetime, "fetched an OAuth token");
        *cached = Some((t.access_token.clone(), Instant::now() + lifetime));
        Ok(t.access_token)
    }
}
