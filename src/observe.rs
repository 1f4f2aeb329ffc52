//! The HTTP endpoint of an instance (`http.listen`): the web console (`/`, see [`crate::console`]),
//! Prometheus `/metrics`, `/health` (the stream thread runs), `/ready` (and no task is
//! restoring), and `GET /workflows/{id}`, an interactive query of a workflow instance's state and
//! audit trail from this instance's stores.
//!
//! A query for an instance whose partition another keyflow instance owns is asked of the peers
//! (`http.peers`), once: a forwarded query carries `X-Keyflow-Forwarded` and is not forwarded
//! again. Without peers, or when none has it, the answer is 404.

use std::io::Read as _;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server as Http};

use crate::console::{self, guard, Console, FORWARDED};
use crate::runtime::Status;

pub struct Server {
    http: Arc<Http>,
    thread: Option<JoinHandle<()>>,
    pub address: String,
}

/// On every answer: the console's page runs only its own script and cannot be framed by another
/// site (a framed page could be clicked into a redrive with a token the operator typed).
/// Inline styles stay allowed: the diagram's SVG carries its own.
const HARDENING: [(&str, &str); 3] = [
    ("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
];

/// The largest request body read (a redrive names dead letters; nothing needs more).
const MAX_BODY: u64 = 1 << 20;

impl Server {
    /// Serves `status` and the `console` on `listen` (`host:port`; port 0 picks a free one).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(listen: &str, console: Console, status: Arc<Status>) -> Result<Server, String> {
        let http = Arc::new(Http::http(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?);
        let address = http.server_addr().to_ip().map_or_else(|| listen.to_owned(), |a| a.to_string());
        let h = http.clone();
        let thread = std::thread::Builder::new()
            .name("keyflow-http".into())
            .spawn(move || {
                for mut request in h.incoming_requests() {
                    let (code, content_type, body) = answer(&mut request, &console, &status);
                    let mut response = Response::from_data(body).with_status_code(code);
                    for (name, value) in [("Content-Type", content_type)].into_iter().chain(HARDENING) {
                        response.add_header(Header::from_bytes(name, value).expect("a valid header"));
                    }
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
        tracing::info!(%address, "serving the console at /, and /metrics, /health, /ready, /workflows/{{id}}");
        Ok(Server { http, thread: Some(thread), address })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(request: &mut tiny_http::Request, console: &Console, status: &Status) -> console::Reply {
    let header = |name: &'static str| request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_owned());
    let (auth, site, origin, host, ctype) =
        (header("Authorization"), header("Sec-Fetch-Site"), header("Origin"), header("Host"), header("Content-Type"));
    let forwarded = header(FORWARDED).is_some();
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().as_str().to_owned();
    let mut body = Vec::new();
    if *request.method() == Method::Post {
        let _ = request.as_reader().take(MAX_BODY).read_to_end(&mut body);
    }
    let r = console::Request {
        method: &method,
        path,
        query,
        headers: guard::Headers {
            authorization: auth.as_deref(),
            sec_fetch_site: site.as_deref(),
            origin: origin.as_deref(),
            host: host.as_deref(),
            content_type: ctype.as_deref(),
        },
        forwarded,
        body: &body,
    };
    if let Some(reply) = console.handle(&r, status) {
        return reply;
    }
    let (mut code, mut content_type, mut text) = route(&method, path, console.application(), status);
    if code == 404 && !forwarded && path.starts_with("/workflows/") {
        // The first peer that has the instance.
        if let Some(v) = console.ask_peers(&url).into_iter().next() {
            (code, content_type, text) = (200, JSON, v.to_string());
        }
    }
    (code, content_type, text.into_bytes())
}

const JSON: &str = "application/json";

const TEXT: &str = "text/plain; charset=utf-8";

fn route(method: &str, path: &str, application: &str, status: &Status) -> (u16, &'static str, String) {
    if method != "GET" {
        return (405, TEXT, "only GET\n".into());
    }
    let s = status.snapshot();
    match path {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", crate::metrics::render(application, status)),
        "/health" if s.running => (200, TEXT, "ok\n".into()),
        "/health" | "/ready" if s.failure.is_some() => {
            (503, TEXT, format!("the stream thread stopped: {}\n", s.failure.as_deref().unwrap_or_default()))
        }
        "/health" => (503, TEXT, "the stream thread is not running\n".into()),
        "/ready" if s.running && !s.restoring => (200, TEXT, "ready\n".into()),
        "/ready" if s.restoring => (503, TEXT, "restoring state\n".into()),
        "/ready" => (503, TEXT, "not running\n".into()),
        _ => match path.strip_prefix("/workflows/").filter(|id| !id.is_empty() && !id.contains('/')) {
            Some(id) => {
                let id = console::percent_decode(id);
                match status.query(crate::workflow::STORE, id.as_bytes(), Duration::from_secs(5)) {
                    Ok(Some(bytes)) => (200, JSON, String::from_utf8_lossy(&bytes).into_owned()),
                    Ok(None) => (404, JSON, serde_json::json!({"error": format!("workflow instance `{id}` is not in this instance's partitions {:?}; another instance owns it, or it does not exist", s.assignment)}).to_string()),
                    Err(e) => (503, JSON, serde_json::json!({"error": e}).to_string()),
                }
            }
            None => (404, TEXT, "unknown path: / (the console), /metrics, /health, /ready, /workflows/{id}\n".into()),
        },
    }
}
