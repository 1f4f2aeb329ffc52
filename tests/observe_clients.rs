//! The HTTP endpoint under the clients production sends it (issue 22, items 3 and 4), with no
//! Kafka behind it: slow and hostile clients and a dead-letter read that cannot finish never
//! hold up the probes; with a token set, every read of data needs it; a request naming another
//! host (DNS rebinding) is refused.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyflow::console::{Console, DeadLetters};
use keyflow::observe::Server;
use keyflow::runtime::Status;

const TOKEN: &str = "observe-test-token";

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn server() -> Server {
    // Dead letters on a "cluster" nobody answers: every read of them hangs until its timeout.
    let console = Console::new("observed", Vec::new())
        .dead_letters(DeadLetters {
            kafka: format!("127.0.0.1:{}", closed_port()).as_str().into(),
            topic: "observed-dlq".into(),
            registry: None,
        })
        .token(Some(TOKEN.into()));
    Server::start("127.0.0.1:0", console, Arc::new(Status::default())).unwrap()
}

/// Sends `request` as is and returns the status line of the answer, if one comes within `wait`.
fn raw(address: &str, request: &str, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().filter(|l| l.starts_with("HTTP/1.1")).map(str::to_owned)
}

fn status(line: Option<String>) -> u16 {
    line.and_then(|l| l.split(' ').nth(1).and_then(|c| c.parse().ok())).unwrap_or(0)
}

#[test]
fn fifty_slow_clients_and_a_dead_letter_read_that_hangs_never_hold_up_the_probes() {
    keyflow::cli::init_tracing(0);
    let server = server();
    let address = server.address.clone();
    let mut held = Vec::new();
    // 20 clients that never finish their headers, 20 that announce a change's body and send
    // ten bytes of it (with the token), 10 that do the same without it.
    for i in 0..50 {
        let mut s = TcpStream::connect(&address).unwrap();
        let request = match i % 5 {
            0 | 1 => format!("GET /api/overview HTTP/1.1\r\nHost: {address}\r\n"),
            2 | 3 => format!(
                "POST /api/dlq/redrive HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"ids\": [\"0"
            ),
            _ => format!("POST /api/dlq/purge HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"ids\": [\"0"),
        };
        s.write_all(request.as_bytes()).unwrap();
        held.push(s);
    }
    // Operators reading the dead letters meanwhile: each read waits on Kafka.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                raw(
                    &address,
                    &format!("GET /api/dlq HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
                    Duration::from_secs(60),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // The probes answer at once, every time.
    for probe in ["/health", "/ready", "/metrics", "/health", "/ready"] {
        let started = Instant::now();
        let line = raw(&address, &format!("GET {probe} HTTP/1.1\r\nHost: {address}\r\n\r\n"), Duration::from_secs(1));
        assert!(
            line.is_some(),
            "{probe} gave no answer within 1 s (after {:?}) with 50 slow clients and 8 hanging reads",
            started.elapsed()
        );
        // Not running (no stream thread here): 503 is the answer for the two checks.
        let want = if probe == "/metrics" { 200 } else { 503 };
        assert_eq!(status(line), want, "{probe}");
    }
    // A change without the token is refused before its body is read, at once.
    let refused = raw(
        &address,
        &format!("POST /api/dlq/purge HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"),
        Duration::from_secs(1),
    );
    assert_eq!(status(refused), 401, "refused without waiting for a body that never comes");
    drop(held);
    for r in readers {
        // Each read ends, in an answer (the cluster cannot be read), not a hung connection.
        assert_eq!(status(r.join().unwrap()), 503);
    }
}

#[test]
fn with_a_token_every_read_needs_it_and_a_foreign_host_is_refused() {
    keyflow::cli::init_tracing(0);
    let server = server();
    let address = server.address.clone();
    let get = |path: &str, host: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        status(raw(&address, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"), Duration::from_secs(30)))
    };
    let reads = [
        "/api/overview",
        "/api/local",
        "/api/health",
        "/api/instances/doc-1",
        "/api/workflows/document-approval/diagram.svg",
        "/api/dlq/0:1",
        "/workflows/doc-1",
    ];
    for path in reads {
        assert_eq!(get(path, &address, None), 401, "{path} without the token");
        assert_eq!(get(path, &address, Some("wrong")), 401, "{path} with a wrong token");
        if !path.starts_with("/api/dlq") {
            // (A dead-letter read would wait for the cluster this test has not got.)
            assert_ne!(get(path, &address, Some(TOKEN)), 401, "{path} with the token");
        }
    }
    assert_eq!(get("/api/overview", &address, Some(TOKEN)), 200);
    // The page and its script hold no data; the probes carry no keys or payloads.
    for open in ["/", "/assets/console.js", "/metrics"] {
        assert_eq!(get(open, &address, None), 200, "{open}");
    }
    assert_eq!(get("/health", &address, None), 503, "answered (no stream thread here), without a token");
    // A page elsewhere whose name resolves to 127.0.0.1 sends its own name: refused, token or not.
    let port = address.rsplit_once(':').unwrap().1;
    for path in ["/api/overview", "/", "/api/dlq/0:1"] {
        assert_eq!(get(path, &format!("rebound.example:{port}"), Some(TOKEN)), 403, "{path}");
    }
    // The probes answer whatever the Host (an orchestrator's own name for the pod); no data.
    assert_eq!(get("/health", &format!("rebound.example:{port}"), None), 503);
    assert_eq!(get("/api/overview", &format!("localhost:{port}"), Some(TOKEN)), 200, "the loopback names are this endpoint's");
}
