//! The HTTP endpoint of an instance (`http.listen`): Prometheus `/metrics`, `/health` (the stream
//! thread runs), `/ready` (and no task is restoring), and `GET /workflows/{id}`, an interactive
//! query of a workflow instance's state and audit trail from this instance's stores.
//!
//! A query for an instance whose partition another keyflow instance owns is asked of the peers
//! (`http.peers`), once: a forwarded query carries `X-Keyflow-Forwarded` and is not forwarded
//! again. Without peers, or when none has it, the answer is 404.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server as Http};

use crate::runtime::Status;

pub struct Server {
    http: Arc<Http>,
    thread: Option<JoinHandle<()>>,
    pub address: String,
}

impl Server {
    /// Serves `application`'s `status` on `listen` (`host:port`; port 0 picks a free one).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(listen: &str, application: &str, status: Arc<Status>, peers: Vec<String>) -> Result<Server, String> {
        let http = Arc::new(Http::http(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?);
        let address = http.server_addr().to_ip().map_or_else(|| listen.to_owned(), |a| a.to_string());
        let (h, app) = (http.clone(), application.to_owned());
        let thread = std::thread::Builder::new()
            .name("keyflow-http".into())
            .spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().ok();
                for request in h.incoming_requests() {
                    let forwarded = request.headers().iter().any(|h| h.field.equiv(FORWARDED));
                    let (mut code, mut content_type, mut body) = route(request.method(), request.url(), &app, &status);
                    if code == 404 && !forwarded && request.url().starts_with("/workflows/") {
                        if let Some((c, b)) = http.as_ref().and_then(|c| ask_peers(c, &peers, request.url())) {
                            (code, content_type, body) = (c, JSON, b);
                        }
                    }
                    let header = Header::from_bytes("Content-Type", content_type).expect("a valid header");
                    let _ = request.respond(Response::from_string(body).with_status_code(code).with_header(header));
                }
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
        tracing::info!(%address, "serving /metrics, /health, /ready, /workflows/{{id}}");
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

const JSON: &str = "application/json";
const FORWARDED: &str = "X-Keyflow-Forwarded";

/// The first peer that has the instance.
fn ask_peers(http: &reqwest::blocking::Client, peers: &[String], path: &str) -> Option<(u16, String)> {
    peers.iter().find_map(|peer| {
        let r = http.get(format!("{}{path}", peer.trim_end_matches('/'))).header(FORWARDED, "1").send().ok()?;
        (r.status().as_u16() == 200).then(|| r.text().ok()).flatten().map(|b| (200, b))
    })
}
const TEXT: &str = "text/plain; charset=utf-8";

fn route(method: &Method, url: &str, application: &str, status: &Status) -> (u16, &'static str, String) {
    if *method != Method::Get {
        return (405, TEXT, "only GET\n".into());
    }
    let path = url.split('?').next().unwrap_or_default();
    let s = status.snapshot();
    match path {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", crate::metrics::render(application, status)),
        "/health" if s.running => (200, TEXT, "ok\n".into()),
        "/health" => (503, TEXT, "the stream thread is not running\n".into()),
        "/ready" if s.running && !s.restoring => (200, TEXT, "ready\n".into()),
        "/ready" if s.restoring => (503, TEXT, "restoring state\n".into()),
        "/ready" => (503, TEXT, "not running\n".into()),
        _ => match path.strip_prefix("/workflows/").filter(|id| !id.is_empty() && !id.contains('/')) {
            Some(id) => {
                let id = percent_decode(id);
                match status.query(crate::workflow::STORE, id.as_bytes(), Duration::from_secs(5)) {
                    Ok(Some(bytes)) => (200, JSON, String::from_utf8_lossy(&bytes).into_owned()),
                    Ok(None) => (404, JSON, serde_json::json!({"error": format!("workflow instance `{id}` is not in this instance's partitions {:?}; another instance owns it, or it does not exist", s.assignment)}).to_string()),
                    Err(e) => (503, JSON, serde_json::json!({"error": e}).to_string()),
                }
            }
            None => (404, TEXT, "unknown path: /metrics, /health, /ready, /workflows/{id}\n".into()),
        },
    }
}

/// `%xx` escapes in a path segment (instance ids are often UUIDs, sometimes not).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
