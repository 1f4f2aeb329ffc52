//! Contract tests of the outbound clients: each replays the request and response shapes Camunda 7,
//! Camunda 8 and Alfresco document (recorded HTTP on a wiremock server), errors, token expiry and
//! back-pressure included. `expect(n)` makes a mock fail the test when it is called a different
//! number of times (on drop).
//!
//! One binary, a module per service: `camunda8`, `camunda7`, `alfresco`, and `runs` (the calls
//! runs of an instance need: withdrawing tasks, the versioned write-back, the content rule).

mod alfresco;
mod camunda7;
mod camunda8;
mod runs;

use std::time::Duration;

use keyflow::connectors::alfresco::Alfresco;
use keyflow::connectors::auth::{AuthConfig, Credentials, OAuthConfig};
use keyflow::connectors::decision::{Camunda7, Camunda8, DecisionService};
use keyflow::connectors::http::{client, CallError};
use keyflow::connectors::tasks::{Camunda7Tasks, Camunda8Tasks, Cancelled, Opened, TaskRequest, TaskService};
use keyflow::serde::{AvroSerde, Registry, RegistryConfig, SubjectStrategy};
use serde_json::{json, Map, Value};
use wiremock::matchers::{body_json, body_partial_json, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

#[path = "../common/recorded.rs"]
mod recorded;
use recorded::Recorded;

fn vars(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn http() -> reqwest::blocking::Client {
    client(Duration::from_secs(5)).unwrap()
}

/// keyflow's Camunda 7 tasks on `server`, without credentials.
fn c7_tasks(server: &Recorded) -> Camunda7Tasks {
    Camunda7Tasks {
        base_url: format!("{}/engine-rest", server.url()),
        http: http(),
        credentials: Credentials::None,
        process_key: "keyflow-human-task".into(),
    }
}

/// keyflow's Camunda 8 tasks on `server`, without credentials.
fn c8_tasks(server: &Recorded) -> Camunda8Tasks {
    Camunda8Tasks { base_url: server.url(), http: http(), credentials: Credentials::None, process_id: "keyflow-human-task".into() }
}

fn oauth(server: &Recorded) -> Credentials {
    Credentials::new(
        &AuthConfig::OAuth(OAuthConfig {
            token_url: format!("{}/oauth/token", server.url()),
            client_id: "keyflow".into(),
            client_secret: "s3cret".into(),
            audience: Some("zeebe.camunda.io".into()),
            scope: None,
        }),
        "",
    )
}

fn review_task() -> TaskRequest {
    TaskRequest {
        idempotency_key: "node-1:4:0".into(),
        instance_id: "node-1".into(),
        workflow: "document-approval".into(),
        name: "Review document".into(),
        candidate_groups: vec!["reviewers".into()],
        assignee: None,
        run: Some(1),
    }
}

/// A login that is refused is the credentials' problem, whatever its status: RFC 6749 5.2 answers
/// a bad client with 400 or 401 (`invalid_client`), Alfresco's `POST /tickets` "Login failed"
/// with 403 (`alfresco-auth.yaml`). The command waits for an operator; it must not fail.
#[test]
fn refused_logins_wait_for_an_operator_instead_of_failing_the_command() {
    let s = Recorded::start();
    s.mount(Mock::given(method("POST")).and(path("/oauth/token")).respond_with(
        ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client", "error_description": "Invalid client credentials"})),
    ));
    s.mount(
        Mock::given(method("POST")).and(path("/v2/decision-definitions/evaluation")).respond_with(ResponseTemplate::new(200)).expect(0),
    );
    let c8 = Camunda8 { base_url: s.url(), http: http(), credentials: oauth(&s), tenant_id: None };
    match c8.evaluate("document-routing", &Map::new()) {
        Err(CallError::Transient { service: "oauth", message }) => assert!(message.contains("credentials refused (400)"), "{message}"),
        other => panic!("{other:?}"),
    }

    let s = Recorded::start();
    s.mount(Mock::given(method("POST")).and(path("/alfresco/api/-default-/public/authentication/versions/1/tickets")).respond_with(
        ResponseTemplate::new(403).set_body_json(alfresco::alfresco_error(403, "framework.exception.ApiDefault", "10250004 Login failed")),
    ));
    s.mount(Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).expect(0));
    let repo = Alfresco {
        base_url: s.url(),
        http: http(),
        credentials: Credentials::new(
            &AuthConfig::Ticket { user: "keyflow".into(), password: "wrong".into() },
            &keyflow::connectors::alfresco::ticket_url(&s.url()),
        ),
    };
    match repo.update_node("d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", &Map::new(), &[], None) {
        Err(CallError::Transient { message, .. }) => assert!(message.contains("credentials refused (403)"), "{message}"),
        other => panic!("a refused login is not this node's refusal: {other:?}"),
    }
}
