//! What every outbound HTTP call shares: one blocking client with a timeout, and one reading of
//! responses into [`CallError`]s classified by what the caller should do about them.
//!
//! The clients are blocking on purpose: they run inside a processor on the stream thread, and a
//! call's timeout is the bound on how long it can hold that thread (and so the other partitions).

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::Value;

/// Why an outbound call failed, by what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The service could not be reached, timed out, or failed on its side (5xx): try again
    /// later. Counts against the retry policy and the circuit breaker.
    #[error("{service} unavailable: {message}")]
    Transient { service: &'static str, message: String },
    /// The service is healthy but asks callers to slow down (HTTP 429, or Camunda's
    /// `503 RESOURCE_EXHAUSTED`): wait and send again. Neither a failed attempt nor a breaker
    /// failure: Camunda documents it as back-pressure, to be retried after a backoff.
    #[error("{service} applies back-pressure: {message}")]
    BackPressure { service: &'static str, message: String, retry_after: Option<Duration> },
    /// The service refused this request for what it is (4xx: unknown decision, invalid
    /// variables, a node that does not exist): sending it again cannot help, so the workflow's
    /// error policy decides.
    #[error("{service} refused the request ({status}): {message}")]
    Rejected { service: &'static str, status: u16, message: String },
}

impl CallError {
    pub fn transient(service: &'static str, message: impl Into<String>) -> Self {
        CallError::Transient { service, message: message.into() }
    }

    /// A send that produced no response (connect, timeout, TLS) is always transient.
    pub fn from_send(service: &'static str, e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        CallError::transient(service, format!("{what}: {}", describe(e)))
    }
}

/// An HTTP client error's text without its URL: a URL's path and query can carry secrets (a
/// webhook's token, a signed link, a key), and this text goes to logs, dead letters and answers.
/// The URL's origin stays, to say which service failed.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.url().map_or_else(String::new, |u| u.origin().ascii_serialization());
    let mut source = std::error::Error::source(e);
    if source.is_none() {
        // No cause to show: reqwest's own words, less the URL it adds in parentheses.
        text = format!("{} {text}", e.to_string().split(" for url (").next().unwrap_or_default());
    }
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.trim().to_owned()
}

/// The shared client: `timeout` bounds each whole call (connect, send, read).
///
/// # Errors
/// The TLS backend cannot be initialised.
pub fn client(timeout: Duration) -> Result<Client, String> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends `request` and classifies the answer. `Ok` carries a 2xx response; a 401 comes back as
/// [`Unauthorized`] so a caller holding a token can refresh it once and send again.
///
/// A 403 is not about the credentials: they were accepted, and this request is not allowed
/// (RFC 9110 15.5.4; RFC 6750 3.1 answers an expired or bad token with 401, a token lacking the
/// scope with 403). Alfresco's API says so per operation (`alfresco-core.yaml`, `PUT
/// /nodes/{nodeId}`: 401 "Authentication failed", 403 "Current user does not have permission to
/// update nodeId"), so one document without write permission is that command's refusal, not a
/// reason to hold back every other write-back.
pub fn send(service: &'static str, request: RequestBuilder) -> Result<Response, Failure> {
    let response = request.send().map_err(|e| Failure::Call(CallError::from_send(service, &e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(Failure::Unauthorized(Unauthorized { status: status.as_u16(), message: problem_text(response) }));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let message = problem_text(response);
    Err(Failure::Call(classify(service, status, message, retry_after)))
}

/// The JSON body of a successful response (`null` for 204 No Content). A body that does not
/// read as JSON is transient: a proxy's error page, a truncated response.
///
/// # Errors
/// [`CallError::Transient`].
pub fn read_json(service: &'static str, response: Response) -> Result<Value, CallError> {
    if response.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    response.json().map_err(|e| CallError::transient(service, format!("response unreadable: {}", describe(&e))))
}

/// A 401: the credentials were refused.
#[derive(Debug)]
pub struct Unauthorized {
    pub status: u16,
    pub message: String,
}

/// The outcome of [`send`] when it is not a success.
#[derive(Debug)]
pub enum Failure {
    Call(CallError),
    Unauthorized(Unauthorized),
}

impl Failure {
    /// For callers with nothing to refresh: refused credentials are a configuration problem,
    /// not the record's. They are transient so events wait (and the breaker opens) until an
    /// operator fixes them, instead of failing every workflow that needs the service.
    pub fn into_call(self, service: &'static str) -> CallError {
        match self {
            Failure::Call(e) => e,
            Failure::Unauthorized(u) => CallError::transient(service, format!("credentials refused ({}): {}", u.status, u.message)),
        }
    }

    /// For a login (an OAuth token endpoint, an Alfresco ticket): any refusal is the
    /// credentials', whatever its status. RFC 6749 5.2 answers a bad client with 400 or 401;
    /// Alfresco's `POST /tickets` answers "Login failed" with 403 (`alfresco-auth.yaml`). Taken
    /// as a request's refusal, it would fail the command that needed the login instead of
    /// letting it wait for an operator.
    pub fn into_login(self, service: &'static str) -> CallError {
        match self {
            Failure::Call(CallError::Rejected { status, message, .. }) | Failure::Unauthorized(Unauthorized { status, message }) => {
                CallError::transient(service, format!("credentials refused ({status}): {message}"))
            }
            Failure::Call(e) => e,
        }
    }
}

fn classify(service: &'static str, status: StatusCode, message: String, retry_after: Option<Duration>) -> CallError {
    let code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS || (status == StatusCode::SERVICE_UNAVAILABLE && message.contains("RESOURCE_EXHAUSTED")) {
        return CallError::BackPressure { service, message, retry_after };
    }
    // 408 and 5xx are the service's trouble; 409 is left to callers (it can mean "already done").
    if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        return CallError::Transient { service, message: format!("HTTP {code}: {message}") };
    }
    CallError::Rejected { service, status: code, message }
}

/// The most useful text of an error body: an RFC 9457 problem's `title: detail` (Camunda 8),
/// Camunda 7's `type: message`, Alfresco's `error.briefSummary`, else the raw text.
fn problem_text(response: Response) -> String {
    let status = response.status();
    let url = response.url().clone();
    let body = response.text().unwrap_or_default();
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return if body.trim().is_empty() { status.to_string() } else { truncate(&scrub(body.trim().to_owned(), &url)) };
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let text = match (s(&v, "title"), s(&v, "detail"), s(&v, "type"), s(&v, "message"), v.get("error").and_then(|e| s(e, "briefSummary"))) {
        (Some(t), Some(d), ..) => format!("{t}: {d}"),
        (Some(t), None, ..) => t,
        (None, Some(d), ..) => d,
        (_, _, Some(t), Some(m), _) => format!("{t}: {m}"),
        (_, _, _, Some(m), _) => m,
        (.., Some(b)) => b,
        _ => body,
    };
    truncate(&scrub(text, &url))
}

/// `text` without what of `url` may be a secret: error pages echo the request (Express's "Cannot
/// POST /hooks/<token>", Spring's `path`), and the text goes to logs, dead letters and answers.
fn scrub(text: String, url: &reqwest::Url) -> String {
    // Query values long enough to be a key (not `maxResults=1000`), raw and decoded; the path
    // raw and decoded (a webhook's token is a path segment); the password.
    let mut secrets: Vec<String> = url.query_pairs().map(|(_, v)| v.into_owned()).filter(|v| v.len() >= 8).collect();
    secrets.extend(url.query().map(str::to_owned));
    secrets.extend(url.password().map(str::to_owned));
    if url.path().len() > 1 {
        secrets.push(url.path().to_owned());
        secrets.push(percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy().into_owned());
    }
    secrets.retain(|s| s.len() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.iter().fold(text, |t, s| t.replace(s.as_str(), "<redacted>"))
}

fn truncate(s: &str) -> String {
    s.chars().take(500).collect()
}
