//! A recorded-HTTP server (wiremock) for the contract tests: the connectors' blocking clients
//! call it from the test thread, and the test reads back what they sent.
#![allow(dead_code)]

use serde_json::Value;
use wiremock::{Mock, MockServer, Request};

pub struct Recorded {
    rt: tokio::runtime::Runtime,
    server: MockServer,
}

impl Recorded {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(MockServer::start());
        Self { rt, server }
    }
    pub fn url(&self) -> String {
        self.server.uri()
    }
    pub fn mount(&self, mock: Mock) {
        self.rt.block_on(mock.mount(&self.server));
    }
    /// Every request received, oldest first.
    pub fn received(&self) -> Vec<Request> {
        self.rt.block_on(self.server.received_requests()).unwrap_or_default()
    }
    /// The JSON bodies of the requests to path `p`.
    pub fn requests(&self, p: &str) -> Vec<Value> {
        self.received().into_iter().filter(|r| r.url.path() == p).map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null)).collect()
    }
    /// The methods of the requests to path `p`, in order.
    pub fn calls(&self, p: &str) -> Vec<String> {
        self.received().iter().filter(|r| r.url.path() == p).map(|r| r.method.to_string()).collect()
    }
}
