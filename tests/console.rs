//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against an instance running the document-approval workflow on Apache Kafka. After a known set
//! of events: the diagram and its table show the exact instances per state, one document's page
//! shows its audit trail (and one in review its pending escalation), a dead letter is refused
//! without the token and redriven with it (and the workflow then takes it), and a request from
//! another site is refused. A screenshot of each
//! page is kept in `tests/console/screenshots/` (the README shows them).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{document_approval, wait_until, WorkflowSetup};
use fantoccini::{Client, ClientBuilder, Locator};
use keyflow::console::{Console, DeadLetters};
use keyflow::kafka::{self, TopicSpec};
use keyflow::observe::Server;
use keyflow::ops::dlq::{self as ops, Filter};
use keyflow::runtime::{Guarantee, Instance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

const TOKEN: &str = "console-test-token";

/// chromedriver on a free port, stopped with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(std::env::var("TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by .ci/setup)");
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver listens", Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let binary = std::env::var("TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({"goog:chromeOptions": {"binary": binary,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}});
    ClientBuilder::native().capabilities(caps.as_object().unwrap().clone()).connect(&driver.url).await.expect("a Chromium session")
}

/// Waits until the element's text is `want`.
async fn text_becomes(c: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            last = e.text().await.unwrap_or_default();
            if last == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("`{css}` shows `{last}`, not `{want}`");
}

/// The texts of every element `css` matches. The page redraws its tables every 2 s, so an element
/// found may be replaced before it is read: then the whole read is made again.
async fn texts(c: &Client, css: &str) -> Vec<String> {
    for _ in 0..20 {
        let mut out = Vec::new();
        let mut stale = false;
        for e in c.find_all(Locator::Css(css)).await.unwrap() {
            match e.text().await {
                Ok(t) => out.push(t),
                Err(_) => {
                    stale = true;
                    break;
                }
            }
        }
        if !stale {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` kept being redrawn while read");
}

async fn screenshot(c: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

fn send(p: &BaseProducer, topic: &str, key: &str, value: &str) {
    kafka::send_waiting(p, BaseRecord::to(topic).key(key).payload(value)).unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

fn upload(p: &BaseProducer, node: &str) {
    let v = json!({"id": format!("up-{node}"), "type": "org.alfresco.event.node.Created",
        "data": {"resource": {"id": node, "nodeType": "cm:content", "name": format!("{node}.pdf"),
                 "content": {"mimeType": "application/pdf", "sizeInBytes": 5}, "createdByUser": {"id": "jdoe"}}}});
    send(p, "alfresco.node-events", node, &v.to_string());
}

fn result(p: &BaseProducer, node: &str, id: &str, body: Value) {
    let mut v = body;
    v["id"] = json!(id);
    send(p, "document-services.results", node, &v.to_string());
}

/// A read of the console's API, with the token it needs.
fn get(url: &str) -> Value {
    reqwest::blocking::Client::new().get(url).bearer_auth(TOKEN).send().unwrap().json().unwrap()
}

#[test]
fn the_console_shows_counts_an_audit_trail_and_redrives_a_dead_letter_in_a_real_browser() {
    let WorkflowSetup { kafka: _kafka, bootstrap, config, topology, dir: _dir } = document_approval("console", Guarantee::ExactlyOnceV2);
    let dlq_topic = config.dlq_topic();
    common::create_topics(&bootstrap, &[TopicSpec { name: ops::handled_topic(&dlq_topic), partitions: 1, compacted: true }], &[]);
    let def =
        Arc::new(keyflow::workflow::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies/document-approval.toml")).unwrap());
    let console = |token: Option<&str>| {
        Console::new(&config.application_id, Vec::new())
            .workflow(def.clone())
            .dead_letters(DeadLetters { kafka: (&bootstrap).into(), topic: dlq_topic.clone(), registry: None })
            .token(token.map(Into::into))
    };
    let instance = Instance::start(config.clone(), topology).unwrap();
    let server = Server::start("127.0.0.1:0", console(Some(TOKEN)), instance.status()).unwrap();
    let base = format!("http://{}", server.address);

    // The known events: doc-a classified, doc-b quarantined, doc-c still scanning; doc-d's
    // decision arrives before the document (a dead letter), then doc-d reaches `deciding`.
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("partitioner", "murmur2_random").create().unwrap();
    send(&p, "document-approval.decision-results", "doc-d", &json!({"id": "dec-d", "outcome": {"route": "auto-approve"}}).to_string());
    wait_until("the early decision dead-lettered", Duration::from_secs(60), || {
        ops::list(&bootstrap, &dlq_topic, &Filter::default()).is_ok_and(|l| l.len() == 1)
    });
    for node in ["doc-a", "doc-b", "doc-c", "doc-d"] {
        upload(&p, node);
    }
    for node in ["doc-a", "doc-d"] {
        result(&p, node, &format!("scan-{node}"), json!({"service": "virus-scan", "status": "OK"}));
    }
    result(&p, "doc-b", "scan-doc-b", json!({"service": "virus-scan", "status": "FAILED", "error": "virus_found"}));
    result(&p, "doc-d", "class-doc-d", json!({"service": "classification", "status": "OK", "result": {"class": "invoice"}}));
    let expected = json!({"scanning": 1, "classifying": 1, "quarantined": 1, "deciding": 1});
    let counts = || -> Value {
        let o = get(&format!("{base}/api/overview"));
        o["workflows"][0]["states"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["instances"] != 0)
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s["instances"].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    wait_until("the four documents where their events lead", Duration::from_secs(60), || counts() == expected);
    assert_eq!(ops::list(&bootstrap, &dlq_topic, &Filter::default()).unwrap().len(), 1);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let driver = Driver::start();
    rt.block_on(async {
        let c = browser(&driver).await;

        // With a token set, the console's reads need it too: without it the page says so.
        c.goto(&format!("{base}/#/workflows")).await.unwrap();
        text_becomes(&c, "#banner", "a valid token is needed (Authorization: Bearer <http.auth.token>)").await;
        let field = c.find(Locator::Css("#token")).await.unwrap();
        field.send_keys(&format!("{TOKEN}\u{E007}")).await.unwrap();

        // The diagram with the count on every state, and the same figures in the table.
        for (state, n) in
            [("scanning", "1"), ("classifying", "1"), ("quarantined", "1"), ("deciding", "1"), ("approved", "0"), ("review", "0")]
        {
            text_becomes(&c, &format!("td.count[data-state=\"{state}\"]"), n).await;
        }
        let drawn = texts(&c, "[data-workflow=\"document-approval\"] .diagram svg tspan").await;
        for state in def.states.keys() {
            assert!(drawn.contains(state), "state `{state}` not drawn: {drawn:?}");
        }
        // A state's record in the SVG reads `name | count`: the count follows the name.
        let after = |s: &str| drawn.iter().position(|t| t == s).and_then(|i| drawn.get(i + 1)).cloned();
        assert_eq!(after("quarantined").as_deref(), Some("1"), "{drawn:?}");
        assert_eq!(after("approved").as_deref(), Some("0"), "{drawn:?}");
        screenshot(&c, "workflows").await;

        // A click on a state's count lists its instances, each a link to its page.
        let count = c.wait().for_element(Locator::Css("td.count[data-state=\"quarantined\"] a")).await.unwrap();
        count.click().await.unwrap();
        text_becomes(&c, ".instance-list[data-state=\"quarantined\"] tbody tr td a", "doc-b").await;

        // One document's page: its state and its audit trail.
        c.goto(&format!("{base}/#/instance/doc-b")).await.unwrap();
        text_becomes(&c, "#instance-state", "quarantined").await;
        let trail = texts(&c, "#timeline li").await;
        assert_eq!(trail.len(), 2, "{trail:?}");
        assert!(trail[0].ends_with("new → scanning on org.alfresco.event.node.Created"), "{trail:?}");
        assert!(trail[1].ends_with("scanning → quarantined on error:virus_found"), "{trail:?}");
        screenshot(&c, "instance").await;
        c.goto(&format!("{base}/#/instance/doc-c")).await.unwrap();
        text_becomes(&c, "#instance-state", "scanning").await;
        c.goto(&format!("{base}/#/instance/nobody")).await.unwrap();
        let missing = c.wait().for_element(Locator::Css("#instance-message.error")).await.unwrap().text().await.unwrap();
        assert!(missing.contains("no workflow instance `nobody`"), "{missing}");

        // Dead letters: a wrong token is refused and nothing moves; the right one redrives once.
        c.goto(&format!("{base}/#/dlq")).await.unwrap();
        let row = c.wait().for_element(Locator::Css("#dead-letters tbody tr")).await.unwrap();
        let id = row.attr("data-id").await.unwrap().unwrap();
        let text = row.text().await.unwrap();
        assert!(text.contains("no transition from `new` on event `decision.made`"), "{text}");
        let redrive = |token: &'static str| {
            let c = c.clone();
            let id = id.clone();
            async move {
                let field = c.find(Locator::Css("#token")).await.unwrap();
                field.clear().await.unwrap();
                field.send_keys(token).await.unwrap();
                let pick = c.find(Locator::Css(&format!("input.pick[value=\"{id}\"]"))).await.unwrap();
                if !pick.is_selected().await.unwrap() {
                    pick.click().await.unwrap();
                }
                c.find(Locator::Css("#redrive")).await.unwrap().click().await.unwrap();
                let confirm = c.wait().for_element(Locator::Css("#confirm-text")).await.unwrap().text().await.unwrap();
                assert_eq!(confirm, format!("Redrive 1 dead letter(s): {id}?"));
                c.find(Locator::Css("#confirm-yes")).await.unwrap().click().await.unwrap();
            }
        };
        redrive("wrong-token").await;
        text_becomes(&c, "#dlq-message", "refused: a valid token is needed (Authorization: Bearer <http.auth.token>)").await;
        assert!(ops::list(&bootstrap, &dlq_topic, &Filter::default()).unwrap().len() == 1, "nothing redriven");
        let field = c.find(Locator::Css("#token")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(TOKEN).await.unwrap();
        // One dead letter in full: its headers and the value, decoded.
        c.find(Locator::LinkText(&id)).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let detail = loop {
            let t = c.find(Locator::Css("#dlq-detail")).await.unwrap().text().await.unwrap();
            if t.contains("\"value\"") || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let detail: Value = serde_json::from_str(&detail).unwrap_or_else(|e| panic!("{e}: {detail}"));
        assert_eq!(detail["value"], json!({"id": "dec-d", "outcome": {"route": "auto-approve"}}));
        assert_eq!(detail["headers"]["keyflow.dlq.error.class"], "processing");
        screenshot(&c, "dead-letters").await;
        c.goto(&format!("{base}/#/dlq")).await.unwrap();
        c.wait().for_element(Locator::Css("#dead-letters tbody tr")).await.unwrap();
        redrive(TOKEN).await;
        text_becomes(&c, "#dlq-message", "redrove 1").await;

        // The instance's health, from the same figures as /metrics.
        c.goto(&format!("{base}/#/health")).await.unwrap();
        text_becomes(&c, "#health tr[data-instance=\"this instance\"] td:nth-child(2)", "yes").await;
        // Lag per partition arrives with librdkafka's statistics, every 5 s.
        c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#lag tbody tr")).await.unwrap();
        screenshot(&c, "health").await;
        c.close().await.unwrap();
    });

    // The redriven decision now fits: doc-d is approved, once.
    wait_until("doc-d approved", Duration::from_secs(60), || counts()["approved"] == 1);
    assert_eq!(counts(), json!({"scanning": 1, "classifying": 1, "quarantined": 1, "approved": 1}));
    let all = ops::list(&bootstrap, &dlq_topic, &Filter { include_handled: true, ..Filter::default() }).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].handled.as_ref().unwrap()["action"], "redriven");

    // A document in review shows its escalation timer, due 48 hours after it entered review.
    result(&p, "doc-a", "class-doc-a", json!({"service": "classification", "status": "OK", "result": {"class": "contract"}}));
    wait_until("doc-a deciding", Duration::from_secs(60), || counts()["deciding"] == 1);
    let entered = keyflow::runtime::now_ms();
    send(&p, "document-approval.decision-results", "doc-a", &json!({"id": "dec-a", "outcome": {"route": "manual"}}).to_string());
    wait_until("doc-a in review", Duration::from_secs(60), || counts()["review"] == 1);
    let page = get(&format!("{base}/api/instances/doc-a"));
    assert_eq!(page["instance"]["state"], "review");
    let timers = page["timers"].as_array().unwrap();
    assert_eq!(timers.len(), 1, "{page}");
    assert_eq!(timers[0]["name"], "escalate");
    let due = timers[0]["due"].as_i64().unwrap();
    assert!((entered + 48 * 3_600_000..entered + 48 * 3_600_000 + 60_000).contains(&due), "{due} vs {entered}");

    // From another site, even with the token: refused. Without a configured token: off.
    let http = reqwest::blocking::Client::new();
    let post = |url: &str, origin: &str| {
        http.post(url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Origin", origin)
            .header("Content-Type", "application/json")
            .body(json!({"ids": ["0:0"]}).to_string())
            .send()
            .unwrap()
    };
    // A time bound that does not parse is refused, as the CLI refuses it, not dropped.
    let bad = http.get(format!("{base}/api/dlq?since=yesterday")).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().unwrap()["error"], "`yesterday` is neither RFC 3339 nor ms since the epoch");
    let page = reqwest::blocking::get(format!("{base}/")).unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY", "no other site may frame the console");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let cross = post(&format!("{base}/api/dlq/purge"), "https://elsewhere.example");
    assert_eq!(cross.status(), 403);
    assert_eq!(cross.json::<Value>().unwrap()["error"], "cross-site request refused");
    let read_only = Server::start("127.0.0.1:0", console(None), instance.status()).unwrap();
    let off = post(&format!("http://{}/api/dlq/purge", read_only.address), &format!("http://{}", read_only.address));
    assert_eq!(off.status(), 403);
    assert!(off.json::<Value>().unwrap()["error"].as_str().unwrap().contains("set http.auth.token"));
    assert_eq!(
        ops::list(&bootstrap, &dlq_topic, &Filter { include_handled: true, ..Filter::default() }).unwrap()[0].handled.as_ref().unwrap()
            ["action"],
        "redriven",
        "nothing purged"
    );

    instance.stop();
    instance.join().unwrap();
}
