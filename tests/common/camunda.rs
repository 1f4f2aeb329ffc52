//! A real Camunda 7 engine for the tests: Camunda 7.24 Community Edition with its REST API on
//! Spring Boot (`tests/camunda`, packaged by `.ci/setup`), H2 on disk in a directory of the
//! test's own, HTTP basic authentication on. One engine per test; [`Camunda7::stop`] and
//! [`Camunda7::start_again`] make an outage that keeps the database.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const USER: &str = "keyflow";
pub const PASSWORD: &str = "keyflow-secret";

pub struct Camunda7 {
    /// `http://127.0.0.1:<port>/engine-rest`
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::blocking::Client,
}

fn jar() -> PathBuf {
    let jar = std::env::var("TEST_CAMUNDA7_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/camunda/target/keyflow-camunda7.jar"));
    assert!(jar.is_file(), "no Camunda 7 engine at {}: run .ci/setup (it runs mvn -f tests/camunda/pom.xml package)", jar.display());
    jar
}

impl Camunda7 {
    /// Starts an engine and waits until its REST API answers.
    pub fn start() -> Camunda7 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut engine =
            Camunda7 { url: format!("http://127.0.0.1:{port}/engine-rest"), port, dir: tempfile::tempdir().unwrap(), child: None, http };
        engine.start_again();
        engine
    }

    /// Starts the engine's process (again), on the same port and database.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the engine is running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("engine.log")).unwrap();
        let child = Command::new("java")
            .args(["-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar"])
            .arg(jar())
            .arg(format!("--server.port={}", self.port))
            .arg("--server.address=127.0.0.1")
            // WRITE_DELAY=0: H2 otherwise keeps the last half second of commits in memory, and the
            // outage (kill -9) loses tasks the engine had already answered as created, which a
            // production database never does. Measured: 5 tasks created, killed, 2 left.
            .arg(format!("--spring.datasource.url=jdbc:h2:file:{}/camunda;WRITE_DELAY=0", self.dir.path().display()))
            .arg(format!("--camunda.bpm.admin-user.id={USER}"))
            .arg(format!("--camunda.bpm.admin-user.password={PASSWORD}"))
            // Every request the engine serves, one line each (`%r`: method, path and query),
            // unbuffered: the tests count a client's calls where they arrive.
            .arg("--server.tomcat.accesslog.enabled=true")
            .arg(format!("--server.tomcat.accesslog.directory={}", self.dir.path().display()))
            .args(["--server.tomcat.accesslog.prefix=access", "--server.tomcat.accesslog.suffix=.log"])
            .args(["--server.tomcat.accesslog.rotate=false", "--server.tomcat.accesslog.buffered=false"])
            .arg("--server.tomcat.accesslog.pattern=%r %s")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the Camunda 7 engine exited ({status}):\n{}", self.log());
            }
            if self.get("engine", &[]).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the Camunda 7 engine did not answer in 240 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the engine's process at once (kill -9): an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The request lines the engine served so far, with their status (`POST
    /// /engine-rest/history/task?maxResults=200 HTTP/1.1 200`), across its restarts.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// `GET <url>/<path>?<query>` as the admin user; the JSON answer or the status and body.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}/{path}", self.url))
            .basic_auth(USER, Some(PASSWORD))
            .query(query)
            .send()
            .map_err(|e| e.to_string())?;
        answer(r)
    }

    /// `POST <url>/<path>` with a JSON body as the admin user.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let r =
            self.http.post(format!("{}/{path}", self.url)).basic_auth(USER, Some(PASSWORD)).json(body).send().map_err(|e| e.to_string())?;
        answer(r)
    }

    /// `DELETE <url>/<path>` as the admin user.
    pub fn delete(&self, path: &str) -> Result<Value, String> {
        let r = self.http.delete(format!("{}/{path}", self.url)).basic_auth(USER, Some(PASSWORD)).send().map_err(|e| e.to_string())?;
        answer(r)
    }

    /// Deploys a DMN or BPMN file (`POST /deployment/create`, multipart).
    pub fn deploy(&self, file: &std::path::Path) -> Value {
        let form = reqwest::blocking::multipart::Form::new()
            .text("deployment-name", "keyflow-tests")
            .text("deployment-source", "keyflow")
            .file(file.file_name().unwrap().to_string_lossy().into_owned(), file)
            .unwrap();
        let r = self.http.post(format!("{}/deployment/create", self.url)).basic_auth(USER, Some(PASSWORD)).multipart(form).send().unwrap();
        answer(r).unwrap_or_else(|e| panic!("deployment of {} refused: {e}", file.display()))
    }
}

fn answer(r: reqwest::blocking::Response) -> Result<Value, String> {
    let status = r.status();
    let text = r.text().map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("{status}: not JSON: {e}: {text}"))
}

impl Drop for Camunda7 {
    fn drop(&mut self) {
        self.stop();
    }
}
