//! The HTTP endpoint of an instance (`http.listen`): the web console (`/`, see [`crate::console`]),
//! Prometheus `/metrics`, `/health` (the stream thread runs), `/ready` (and no task is
//! restoring), and `GET /workflows/{id}`, an interactive query of a workflow instance's state and
//! audit trail from this instance's stores.
//!
//! A query for an instance whose partition another keyflow instance owns is asked of the peers
//! (`http.peers`), once: a forwarded query carries `X-Keyflow-Forwarded` and is not forwarded
//! again. Without peers, or when none has it, the answer is 404.
//!
//! Serving, and why so: connections are tasks on a small tokio runtime of the endpoint's own
//! thread (hyper's HTTP/1 server), so a client that sends slowly, or many of them, holds only its
//! own task; headers must arrive within [`HEADER_TIMEOUT`] and a body within [`BODY_TIMEOUT`].
//! The probes (`/health`, `/ready`, `/metrics`) are answered on that runtime at once from the
//! status snapshot. Everything that may block (Kafka reads for dead letters, store queries,
//! peers asked over HTTP) runs on the runtime's blocking pool, at most [`WORKERS`] at a time, so
//! it never holds up a probe. Who may read and change what: [`crate::console::guard`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::console::{self, guard, Console, FORWARDED};
use crate::runtime::Status;

pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub address: String,
}

/// On every answer: the console's page runs only its own script and cannot be framed by another
/// site (a framed page could be clicked into a redrive with a token the operator typed).
/// Inline styles stay allowed: the diagram's SVG carries its own.
const HARDENING: [(&str, &str); 4] = [
    ("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
];

/// The largest request body read (a redrive names dead letters; nothing needs more).
const MAX_BODY: usize = 1 << 20;
/// How long a client may take to send a request's headers, and then its body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests that may block (Kafka, stores, peers) served at once; more wait their turn.
const WORKERS: usize = 8;
/// How long a request waits for a worker before it is answered 503.
const WORKER_WAIT: Duration = Duration::from_secs(10);

/// What every connection's requests share.
struct Shared {
    console: Console,
    status: Arc<Status>,
    hosts: guard::Hosts,
    /// Permits to run on the blocking pool: a request waits [`WORKER_WAIT`] for one at most.
    workers: Arc<tokio::sync::Semaphore>,
}

impl Server {
    /// Serves `status` and the `console` on `listen` (`host:port`; port 0 picks a free one).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(listen: &str, console: Console, status: Arc<Status>) -> Result<Server, String> {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let shared = Arc::new(Shared {
            hosts: guard::Hosts::new(console.hosts()),
            console,
            status,
            workers: Arc::new(tokio::sync::Semaphore::new(WORKERS)),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(WORKERS)
            .thread_name("keyflow-http-worker")
            .build()
            .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("keyflow-http".into())
            .spawn(move || {
                rt.block_on(serve(listener, shared, stopped));
                // Work still on the blocking pool (a dead-letter read) is not waited for.
                rt.shutdown_background();
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
        let address = bound.to_string();
        tracing::info!(%address, "serving the console at /, and /metrics, /health, /ready, /workflows/{{id}}");
        Ok(Server { stop: Some(stop), thread: Some(thread), address })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "the HTTP endpoint cannot serve"),
    };
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| respond(shared.clone(), peer, request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}

async fn respond(shared: Arc<Shared>, peer: SocketAddr, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (code, content_type, body) = answer(&shared, request).await;
    if code >= 400 && code != 404 {
        tracing::debug!(%peer, code, "HTTP request refused or failed");
    }
    let mut response = Response::builder().status(code).header("Content-Type", content_type);
    for (name, value) in HARDENING {
        response = response.header(name, value);
    }
    Ok(response.body(Full::new(Bytes::from(body))).expect("a valid response"))
}

/// A request's parts the console needs, owned, so they can move to a blocking worker.
struct Parts {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    sec_fetch_site: Option<String>,
    origin: Option<String>,
    host: Option<String>,
    content_type: Option<String>,
    forwarded: bool,
}

impl Parts {
    fn of(request: &Request<Incoming>) -> Parts {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Parts {
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            authorization: header("authorization"),
            sec_fetch_site: header("sec-fetch-site"),
            origin: header("origin"),
            host: header("host"),
            content_type: header("content-type"),
            forwarded: request.headers().contains_key(FORWARDED),
        }
    }

    fn headers(&self) -> guard::Headers<'_> {
        guard::Headers {
            authorization: self.authorization.as_deref(),
            sec_fetch_site: self.sec_fetch_site.as_deref(),
            origin: self.origin.as_deref(),
            host: self.host.as_deref(),
            content_type: self.content_type.as_deref(),
        }
    }
}

fn refusal(r: &guard::Refusal) -> console::Reply {
    (r.status, JSON, serde_json::json!({"error": r.message}).to_string().into_bytes())
}

/// The steps of one request: the probes at once; the `Host` check; the read check; a change's
/// check before its body is read; the rest on a blocking worker.
async fn answer(shared: &Arc<Shared>, request: Request<Incoming>) -> console::Reply {
    let parts = Parts::of(&request);
    if parts.method == "GET" && matches!(parts.path.as_str(), "/health" | "/ready" | "/metrics") {
        let (code, content_type, text) = route(&parts.method, &parts.path, shared.console.application(), &shared.status);
        return (code, content_type, text.into_bytes());
    }
    if let Err(r) = shared.hosts.allow(parts.host.as_deref()) {
        return refusal(&r);
    }
    if let Err(r) = guard::allow_read(shared.console.needs_token(), &parts.path, &parts.headers()) {
        return refusal(&r);
    }
    let body = if request.method() == Method::POST {
        if !console::is_change(&parts.path) {
            return (405, TEXT, b"only GET here\n".to_vec());
        }
        // Refused before the body is read: an unauthorised client cannot hold a worker.
        if let Err(r) = guard::allow_change(shared.console.needs_token(), &parts.headers()) {
            tracing::warn!(path = parts.path, status = r.status, reason = r.message, "console change refused");
            return refusal(&r);
        }
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(request.into_body(), MAX_BODY).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return (413, TEXT, format!("the body is too large or broken: {e}\n").into_bytes()),
            Err(_) => return (408, TEXT, format!("the body did not arrive within {BODY_TIMEOUT:?}\n").into_bytes()),
        }
    } else {
        Bytes::new()
    };
    let Ok(Ok(permit)) = tokio::time::timeout(WORKER_WAIT, shared.workers.clone().acquire_owned()).await else {
        return (503, TEXT, format!("busy: {WORKERS} requests are being served; try again\n").into_bytes());
    };
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        blocking_answer(&shared, &parts, &body)
    })
    .await
    .unwrap_or_else(|e| (500, TEXT, format!("the request failed: {e}\n").into_bytes()))
}

fn blocking_answer(shared: &Shared, parts: &Parts, body: &[u8]) -> console::Reply {
    let r = console::Request {
        method: &parts.method,
        path: &parts.path,
        query: &parts.query,
        headers: parts.headers(),
        forwarded: parts.forwarded,
        body,
    };
    if let Some(reply) = shared.console.handle(&r, &shared.status) {
        return reply;
    }
    let (mut code, mut content_type, mut text) = route(&parts.method, &parts.path, shared.console.application(), &shared.status);
    if code == 404 && !parts.forwarded && parts.path.starts_with("/workflows/") {
        // The first peer that has the instance.
        let url = if parts.query.is_empty() { parts.path.clone() } else { format!("{}?{}", parts.path, parts.query) };
        if let Some(v) = shared.console.ask_peers(&url).into_iter().next() {
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
        // Ready, and saying which partitions wait and why: the member is fine, a service or a
        // member with another workflow version is what they wait for.
        "/ready" if s.running && !s.restoring => {
            let waiting: String = status.waiting().iter().map(|((t, p), why)| format!("waiting: {t}/{p}: {why}\n")).collect();
            (200, TEXT, format!("ready\n{waiting}"))
        }
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
