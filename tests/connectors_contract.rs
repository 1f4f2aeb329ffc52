//! Contract tests of the outbound clients: each replays the request and response shapes Camunda 7,
//! Camunda 8 and Alfresco document (recorded HTTP on a wiremock server), errors, token expiry and
//! back-pressure included. `expect(n)` makes a mock fail the test when it is called a different
//! number of times (on drop).

use std::time::Duration;

use keyflow::connectors::alfresco::{self, Alfresco};
use keyflow::connectors::auth::{AuthConfig, Credentials, OAuthConfig};
use keyflow::connectors::decision::{Camunda7, Camunda8, DecisionService};
use keyflow::connectors::http::{client, CallError};
use keyflow::connectors::tasks::{Camunda7Tasks, Camunda8Tasks, Opened, TaskRequest, TaskService};
use keyflow::serde::{AvroSerde, Registry, RegistryConfig, SubjectStrategy};
use serde_json::{json, Map, Value};
use wiremock::matchers::{body_json, body_partial_json, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

#[path = "common/recorded.rs"]
mod recorded;
use recorded::Recorded;

fn vars(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn http() -> reqwest::blocking::Client {
    client(Duration::from_secs(5)).unwrap()
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

/// Camunda 8's evaluation response, every field of `EvaluateDecisionResult`,
/// `EvaluatedDecisionResult`, `MatchedDecisionRuleItem` and `Evaluated*Item` of the Orchestration
/// Cluster API 8.8 (`rest-api.yaml`; checked against the models generated from it in
/// `io.camunda:camunda-client-java:8.8.12`). Two outputs: `output` is a JSON object in a string.
fn c8_evaluation(output: &str) -> Value {
    json!({
        "decisionDefinitionId": "document-routing", "decisionDefinitionName": "Route", "decisionDefinitionVersion": 3,
        "decisionRequirementsId": "document-routing-definitions", "output": output, "failedDecisionDefinitionId": "", "failureMessage": "",
        "tenantId": "<default>", "decisionDefinitionKey": "2251799813686749", "decisionRequirementsKey": "2251799813686748",
        "decisionEvaluationKey": "2251799813688092", "decisionInstanceKey": "2251799813688092",
        "evaluatedDecisions": [{"decisionDefinitionId": "document-routing", "decisionDefinitionName": "Route", "decisionDefinitionVersion": 3,
            "decisionDefinitionKey": "2251799813686749", "decisionEvaluationInstanceKey": "2251799813688092-1",
            "decisionDefinitionType": "DECISION_TABLE", "output": output, "tenantId": "<default>",
            "matchedRules": [{"ruleId": "small-invoices", "ruleIndex": 3, "evaluatedOutputs": [{"outputId": "out-route", "outputName": "route", "outputValue": "\"auto-approve\""}]}],
            "evaluatedInputs": [{"inputId": "in-classification", "inputName": "Classification", "inputValue": "\"invoice\""}]}]
    })
}

#[test]
fn camunda8_evaluates_with_an_oauth_token_fetched_once_and_reused() {
    let s = Recorded::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            // The client-credentials grant as Camunda 8 SaaS and Self-Managed (Identity /
            // Keycloak) document it: a form with grant_type, client_id, client_secret, audience.
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains("grant_type=client_credentials"))
            .and(body_string_contains("client_id=keyflow"))
            .and(body_string_contains("client_secret=s3cret"))
            .and(body_string_contains("audience=zeebe.camunda.io"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"access_token": "t1", "token_type": "Bearer", "expires_in": 300})),
            )
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/decision-definitions/evaluation"))
            .and(header("authorization", "Bearer t1"))
            .and(body_json(
                json!({"decisionDefinitionId": "document-routing", "variables": {"classification": "invoice", "sizeBytes": 1200}}),
            ))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(c8_evaluation(r#"{"route":"auto-approve","reason":"invoice under 10 MB"}"#)),
            )
            .expect(2),
    );
    let c8 = Camunda8 { base_url: s.url(), http: http(), credentials: oauth(&s), tenant_id: None };
    for _ in 0..2 {
        let out = c8.evaluate("document-routing", &vars(json!({"classification": "invoice", "sizeBytes": 1200}))).unwrap();
        assert_eq!(Value::Object(out), json!({"route": "auto-approve", "reason": "invoice under 10 MB"}));
    }
}

#[test]
fn camunda8_names_a_single_output_by_the_matched_rule() {
    let s = Recorded::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/decision-definitions/evaluation"))
            .respond_with(ResponseTemplate::new(200).set_body_json(c8_evaluation("\"auto-approve\""))),
    );
    let c8 = Camunda8 { base_url: s.url(), http: http(), credentials: Credentials::None, tenant_id: Some("acme".into()) };
    let out = c8.evaluate("document-routing", &Map::new()).unwrap();
    assert_eq!(Value::Object(out), json!({"route": "auto-approve"}));
    assert_eq!(s.requests("/v2/decision-definitions/evaluation")[0]["tenantId"], "acme");
}

#[test]
fn camunda8_refreshes_an_expired_token_once() {
    let s = Recorded::start();
    // The first token is refused (expired early, revoked): keyflow fetches a second one.
    s.mount(
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "t1", "expires_in": 300})))
            .up_to_n_times(1)
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "t2", "expires_in": 300})))
            .expect(1),
    );
    let unauthorized = json!({"type": "about:blank", "title": "UNAUTHORIZED", "status": 401, "detail": "The token is expired", "instance": "/v2/decision-definitions/evaluation"});
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/decision-definitions/evaluation"))
            .and(header("authorization", "Bearer t1"))
            .respond_with(ResponseTemplate::new(401).set_body_json(unauthorized))
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/decision-definitions/evaluation"))
            .and(header("authorization", "Bearer t2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(c8_evaluation(r#"{"route":"manual"}"#)))
            .expect(1),
    );
    let c8 = Camunda8 { base_url: s.url(), http: http(), credentials: oauth(&s), tenant_id: None };
    assert_eq!(c8.evaluate("document-routing", &Map::new()).unwrap()["route"], "manual");
}

#[test]
fn camunda8_errors_are_classified_back_pressure_transient_or_refused() {
    let s = Recorded::start();
    let problem = |status: u16, title: &str, detail: &str| {
        ResponseTemplate::new(status).set_body_json(json!({"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": "/v2/decision-definitions/evaluation"}))
    };
    s.mount(Mock::given(method("POST")).and(body_partial_json(json!({"decisionDefinitionId": "busy"}))).respond_with(problem(
        503,
        "RESOURCE_EXHAUSTED",
        "Expected to handle REST API request, but the partition is overloaded",
    )));
    s.mount(Mock::given(method("POST")).and(body_partial_json(json!({"decisionDefinitionId": "broken"}))).respond_with(problem(
        500,
        "INTERNAL_SERVER_ERROR",
        "boom",
    )));
    s.mount(Mock::given(method("POST")).and(body_partial_json(json!({"decisionDefinitionId": "unknown"}))).respond_with(problem(
        404,
        "NOT_FOUND",
        "Expected to evaluate decision 'unknown', but no decision found for id 'unknown'",
    )));
    s.mount(
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"decisionDefinitionId": "throttled"})))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7")),
    );
    let failed = json!({"decisionDefinitionId": "feel", "output": "null", "failedDecisionDefinitionId": "feel", "failureMessage": "no variable found for name 'amount'", "evaluatedDecisions": []});
    s.mount(
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"decisionDefinitionId": "feel"})))
            .respond_with(ResponseTemplate::new(200).set_body_json(failed)),
    );
    let c8 = Camunda8 { base_url: s.url(), http: http(), credentials: Credentials::None, tenant_id: None };
    let err = |d: &str| c8.evaluate(d, &Map::new()).unwrap_err();
    assert!(matches!(err("busy"), CallError::BackPressure { retry_after: None, .. }), "{:?}", err("busy"));
    assert!(matches!(err("throttled"), CallError::BackPressure { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
    assert!(matches!(err("broken"), CallError::Transient { .. }));
    match err("unknown") {
        CallError::Rejected { status: 404, message, .. } => assert!(message.contains("no decision found for id 'unknown'"), "{message}"),
        other => panic!("{other:?}"),
    }
    match err("feel") {
        CallError::Rejected { message, .. } => assert!(message.contains("no variable found for name 'amount'"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Nothing listens here: a connection error is transient.
    let dead = Camunda8 { base_url: "http://127.0.0.1:9".into(), http: http(), credentials: Credentials::None, tenant_id: None };
    assert!(matches!(dead.evaluate("x", &Map::new()), Err(CallError::Transient { .. })));
}

#[test]
fn camunda7_evaluates_with_typed_variables_and_basic_auth() {
    let s = Recorded::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/engine-rest/decision-definition/key/document-routing/evaluate"))
            .and(header("authorization", "Basic ZGVtbzpkZW1v"))
            .and(body_json(json!({"variables": {
                "classification": {"value": "contract", "type": "String"},
                "sizeBytes": {"value": 52113, "type": "Integer"},
                "pages": {"value": 12.5, "type": "Double"},
                "urgent": {"value": false, "type": "Boolean"},
                "tags": {"value": "[\"a\"]", "type": "Json"},
            }})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"route": {"type": "String", "value": "manual", "valueInfo": {}}, "reason": {"type": "String", "value": "needs a reviewer", "valueInfo": {}}}])))
            .expect(1),
    );
    s.mount(Mock::given(method("POST")).and(path("/engine-rest/decision-definition/key/collect/evaluate")).respond_with(
        ResponseTemplate::new(200).set_body_json(json!([{"x": {"type": "Integer", "value": 1}}, {"x": {"type": "Integer", "value": 2}}])),
    ));
    s.mount(
        Mock::given(method("POST"))
            .and(path("/engine-rest/decision-definition/key/none/evaluate"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([]))),
    );
    s.mount(Mock::given(method("POST")).and(path("/engine-rest/decision-definition/key/missing/evaluate")).respond_with(
        ResponseTemplate::new(404).set_body_json(
            json!({"type": "RestException", "message": "No matching decision definition with key: missing and no tenant-id"}),
        ),
    ));
    let c7 = Camunda7 {
        base_url: format!("{}/engine-rest", s.url()),
        http: http(),
        credentials: Credentials::new(&AuthConfig::Basic { user: "demo".into(), password: "demo".into() }, ""),
    };
    let v = vars(json!({"classification": "contract", "sizeBytes": 52113, "pages": 12.5, "urgent": false, "tags": ["a"]}));
    assert_eq!(Value::Object(c7.evaluate("document-routing", &v).unwrap()), json!({"route": "manual", "reason": "needs a reviewer"}));
    assert_eq!(Value::Object(c7.evaluate("collect", &Map::new()).unwrap()), json!({"results": [{"x": 1}, {"x": 2}]}));
    assert!(matches!(c7.evaluate("none", &Map::new()), Err(CallError::Rejected { .. })));
    match c7.evaluate("missing", &Map::new()) {
        Err(CallError::Rejected { status: 404, message, .. }) => {
            assert_eq!(message, "RestException: No matching decision definition with key: missing and no tenant-id")
        }
        other => panic!("{other:?}"),
    }
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

#[test]
fn camunda8_tasks_are_created_once_found_completed_and_read_back() {
    let s = Recorded::start();
    let search = "/v2/process-instances/search";
    // The idempotency filter, as Camunda 8.8's REST API defines it (`POST /v2/process-instances/search`,
    // `ProcessInstanceFilter.variables`: `[{name, value}]`, the value a JSON document in a
    // string): only the instance carrying this command's key may be found.
    let by_key = json!({"filter": {"processDefinitionId": "keyflow-human-task",
                                   "variables": [{"name": "keyflowIdempotencyKey", "value": "\"node-1:4:0\""}]},
                        "page": {"limit": 1}});
    // The first search finds nothing, the second (a retry) finds the instance created meanwhile.
    s.mount(
        Mock::given(method("POST"))
            .and(path(search))
            .and(body_json(by_key.clone()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [], "page": {"totalItems": 0}})))
            .up_to_n_times(1)
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path(search))
            .and(body_json(by_key))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"items": [{"processInstanceKey": "2251799813690001", "state": "ACTIVE"}], "page": {"totalItems": 1}}),
            ))
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/process-instances"))
            .and(body_partial_json(json!({"processDefinitionId": "keyflow-human-task", "variables": {"keyflowIdempotencyKey": "node-1:4:0", "keyflowInstanceId": "node-1", "candidateGroups": ["reviewers"]}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"processDefinitionKey": "2251799813686001", "processDefinitionId": "keyflow-human-task", "processDefinitionVersion": 1, "processInstanceKey": "2251799813690001", "tenantId": "<default>"})))
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/user-tasks/search"))
            // Asked about the tasks keyflow opened, by key (8.8's advanced filter `$in`), the completed ones only.
            .and(body_json(json!({"filter": {"processDefinitionId": "keyflow-human-task",
                                             "processInstanceKey": {"$in": ["2251799813690001", "2251799813690002", "2251799813690003"]},
                                             "state": "COMPLETED"},
                                  "page": {"limit": 3}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [
                {"userTaskKey": "2251799813690009", "processInstanceKey": "2251799813690001", "state": "COMPLETED",
                 "assignee": "alice", "completionDate": "2026-11-25T10:05:00.000Z", "name": "Review document", "processDefinitionId": "keyflow-human-task"}],
                "page": {"totalItems": 1}}))),
    );
    // `VariableSearchResult` (8.8): the task's scope sees the process instance's variables too,
    // keyflow's own among them; full values only when asked (`truncateValues=false`); read a page
    // at a time (this server answers two to a page).
    let variable = |name: &str, value: &str| {
        json!({"name": name, "value": value, "isTruncated": false, "variableKey": "2251799813690100", "scopeKey": "2251799813690001",
               "processInstanceKey": "2251799813690001", "tenantId": "<default>"})
    };
    let variables = "/v2/user-tasks/2251799813690009/variables/search";
    s.mount(
        Mock::given(method("POST"))
            .and(path(variables))
            .and(query_param("truncateValues", "false"))
            .and(body_json(json!({"page": {"from": 0, "limit": 100}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "items": [variable("keyflowIdempotencyKey", "\"node-1:4:0\""), variable("approved", "true")],
                "page": {"totalItems": 3, "hasMoreTotalItems": false}}))),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path(variables))
            .and(query_param("truncateValues", "false"))
            .and(body_json(json!({"page": {"from": 2, "limit": 100}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "items": [variable("comment", "\"fine\"")], "page": {"totalItems": 3, "hasMoreTotalItems": false}}))),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/user-tasks/search"))
            .and(body_partial_json(json!({"filter": {"processInstanceKey": "2251799813690001", "state": "CREATED"}})))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"items": [{"userTaskKey": "2251799813690009", "state": "CREATED"}]})),
            ),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/user-tasks/2251799813690009/assignment"))
            .and(body_json(json!({"assignee": "bob", "allowOverride": true})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/user-tasks/2251799813690009/completion"))
            .and(body_json(json!({"variables": {"approved": true}})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1),
    );

    let c8 = Camunda8Tasks { base_url: s.url(), http: http(), credentials: Credentials::None, process_id: "keyflow-human-task".into() };
    assert_eq!(c8.create(&review_task()).unwrap(), "2251799813690001");
    assert_eq!(c8.create(&review_task()).unwrap(), "2251799813690001", "a retried creation finds the first");
    let since = "2026-11-25T10:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let asked = ["2251799813690001", "2251799813690002", "2251799813690003"]
        .map(|k| Opened { task_id: k.into(), idempotency_key: format!("key-{k}") });
    let done = c8.completed(&asked).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].task_id, "2251799813690001");
    assert_eq!(done[0].completed_by.as_deref(), Some("alice"));
    assert_eq!(done[0].completed_at, since + 5 * 60_000);
    assert_eq!(Value::Object(done[0].variables.clone()), json!({"approved": true, "comment": "fine"}));
    c8.assign("2251799813690001", "bob").unwrap();
    c8.complete("2251799813690001", &vars(json!({"approved": true}))).unwrap();
}

/// Camunda 7.24 REST API (docs.camunda.org/rest/camunda-bpm-platform/7.24): `GET
/// /history/process-instance`, `POST /process-definition/key/{key}/start`, `GET /task`, `POST
/// /history/task`, `POST /history/variable-instance`, `POST /task/{id}/assignee|complete`. The same
/// calls run against the real engine in tests/camunda7.rs.
#[test]
fn camunda7_tasks_are_processes_keyed_by_the_idempotency_key_and_read_back_from_the_history() {
    let s = Recorded::start();
    let id = "97ccedc4-ed37-11f1-9420-02fc00000001";
    let user_task = "97e46d6e-ed37-11f1-9420-02fc00000001";
    let found = |body: Value| {
        Mock::given(method("GET"))
            .and(path("/engine-rest/history/process-instance"))
            .and(query_param("processDefinitionKey", "keyflow-human-task"))
            .and(query_param("processInstanceBusinessKey", "node-1:4:0"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
    };
    // The first lookup finds nothing, the second (a retry) the instance started meanwhile.
    s.mount(found(json!([])).up_to_n_times(1));
    s.mount(found(json!([{"id": id, "businessKey": "node-1:4:0", "state": "ACTIVE"}])));
    s.mount(
        Mock::given(method("POST"))
            .and(path("/engine-rest/process-definition/key/keyflow-human-task/start"))
            .and(body_json(json!({"businessKey": "node-1:4:0", "variables": {
                "taskName": {"value": "Review document", "type": "String"}, "candidateGroups": {"value": "reviewers", "type": "String"},
                "assignee": {"value": null, "type": "Null"}, "keyflowIdempotencyKey": {"value": "node-1:4:0", "type": "String"},
                "keyflowInstanceId": {"value": "node-1", "type": "String"}, "keyflowWorkflow": {"value": "document-approval", "type": "String"}}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": id, "businessKey": "node-1:4:0", "ended": false, "suspended": false})))
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/engine-rest/history/task"))
            .and(query_param("maxResults", "4"))
            // The page of keys in the body (`HistoricTaskInstanceQueryDto.processInstanceBusinessKeyIn`).
            .and(body_json(json!({"processDefinitionKey": "keyflow-human-task", "processInstanceBusinessKeyIn": ["node-1:4:0", "node-2:4:0"],
                                  "finished": true, "taskDeleteReason": "completed"})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": user_task, "processInstanceId": id, "name": "Review document", "assignee": "alice", "startTime": "2026-11-25T10:00:00.000+0000", "endTime": "2026-11-25T11:05:00.000+0100", "deleteReason": "completed"},
                {"id": "u-other", "processInstanceId": "p-other", "name": "Review document", "assignee": null, "endTime": "2026-11-25T10:06:00.000+0000", "deleteReason": "deleted"}
            ]))),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path("/engine-rest/history/variable-instance"))
            .and(query_param("firstResult", "0"))
            .and(query_param("maxResults", "1000"))
            // A stable order, or paging with firstResult could skip or repeat a variable.
            .and(body_json(json!({"processInstanceIdIn": [id],
                                  "sorting": [{"sortBy": "instanceId", "sortOrder": "asc"}, {"sortBy": "variableName", "sortOrder": "asc"}]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": "v1", "name": "approved", "type": "Boolean", "value": true, "processInstanceId": id},
                {"id": "v2", "name": "taskName", "type": "String", "value": "Review document", "processInstanceId": id}
            ]))),
    );
    s.mount(Mock::given(method("GET")).and(path("/engine-rest/task")).and(query_param("processInstanceId", id)).respond_with(
        ResponseTemplate::new(200).set_body_json(json!([{"id": user_task, "name": "Review document", "processInstanceId": id}])),
    ));
    s.mount(
        Mock::given(method("POST"))
            .and(path(format!("/engine-rest/task/{user_task}/complete")))
            .and(body_json(json!({"variables": {"approved": {"value": true, "type": "Boolean"}}})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            // Set Assignee, not Claim: a claim is refused (500) when someone else holds the task.
            .and(path(format!("/engine-rest/task/{user_task}/assignee")))
            .and(body_json(json!({"userId": "bob"})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1),
    );

    let c7 = Camunda7Tasks {
        base_url: format!("{}/engine-rest", s.url()),
        http: http(),
        credentials: Credentials::None,
        process_key: "keyflow-human-task".into(),
    };
    assert_eq!(c7.create(&review_task()).unwrap(), id);
    assert_eq!(c7.create(&review_task()).unwrap(), id, "an existing task is not created again");
    let since = "2026-11-25T10:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let asked = [
        Opened { task_id: id.into(), idempotency_key: "node-1:4:0".into() },
        Opened { task_id: "p-other".into(), idempotency_key: "node-2:4:0".into() },
    ];
    let done = c7.completed(&asked).unwrap();
    assert_eq!(done.len(), 1, "a deleted task is not a completion");
    assert_eq!(done[0].task_id, id);
    assert_eq!(done[0].completed_at, since + 5 * 60_000, "+0100 offsets are read");
    assert_eq!(Value::Object(done[0].variables.clone()), json!({"approved": true}), "keyflow's own variables are not the answer");
    c7.assign(id, "bob").unwrap();
    c7.complete(id, &vars(json!({"approved": true}))).unwrap();
}

/// Alfresco's `Error` (`alfresco-core.yaml`, definitions): `statusCode`, `briefSummary`,
/// `stackTrace` and `descriptionURL` required, `errorKey` and `logId` optional.
fn alfresco_error(status: u16, key: &str, summary: &str) -> Value {
    json!({"error": {"errorKey": key, "statusCode": status, "briefSummary": summary,
        "stackTrace": "For security reasons the stack trace is no longer displayed, but the property is kept for previous versions",
        "descriptionURL": "https://api-explorer.alfresco.com", "logId": "1f3c2b6e-6d1d-4a5e-9b4f-0c8e6d2a7f11"}})
}

const NODES: &str = "/alfresco/api/-default-/public/alfresco/versions/1/nodes/d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01";

fn node_entry(aspects: Value) -> Value {
    // `NodeEntry` with every field `Node` requires (`alfresco-core.yaml`).
    json!({"entry": {"id": "d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", "name": "invoice.pdf", "nodeType": "cm:content", "isFile": true, "isFolder": false,
                     "createdAt": "2026-11-25T10:00:00.000+0000", "createdByUser": {"id": "jdoe", "displayName": "John Doe"},
                     "modifiedAt": "2026-11-25T10:00:00.000+0000", "modifiedByUser": {"id": "jdoe", "displayName": "John Doe"},
                     "parentId": "93f7edf5-e4d8-4749-9b4c-e45097e2e19d",
                     "content": {"mimeType": "application/pdf", "mimeTypeName": "Adobe PDF Document", "sizeInBytes": 52113, "encoding": "UTF-8"},
                     "aspectNames": aspects, "properties": {"cm:title": "Invoice"}}})
}

#[test]
fn alfresco_write_back_keeps_the_nodes_aspects_with_basic_auth() {
    let s = Recorded::start();
    s.mount(
        Mock::given(method("GET"))
            .and(path(NODES))
            .and(query_param("include", "aspectNames"))
            .and(header("authorization", "Basic YWRtaW46YWRtaW4="))
            .respond_with(ResponseTemplate::new(200).set_body_json(node_entry(json!(["cm:titled", "cm:auditable"]))))
            .expect(1),
    );
    s.mount(
        Mock::given(method("PUT"))
            .and(path(NODES))
            .and(body_json(json!({"properties": {"kf:status": "approved", "kf:route": "auto"}, "aspectNames": ["cm:titled", "cm:auditable", "kf:workflow"]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(node_entry(json!(["cm:titled", "cm:auditable", "kf:workflow"]))))
            .expect(1),
    );
    let repo = Alfresco {
        base_url: s.url(),
        http: http(),
        credentials: Credentials::new(&AuthConfig::Basic { user: "admin".into(), password: "admin".into() }, ""),
    };
    repo.update_node(
        "d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01",
        &vars(json!({"kf:status": "approved", "kf:route": "auto"})),
        &["kf:workflow".into()],
        None,
    )
    .unwrap();
}

/// Alfresco's core API (`alfresco-core.yaml` of Alfresco/rest-api-explorer, `PUT /nodes/{nodeId}`):
/// 401 "Authentication failed", 403 "Current user does not have permission to update nodeId".
/// A 403 is that node's refusal: the command gives up (its error answer names the reason) and
/// other documents' write-backs go on; a 401 is the credentials', and waits for an operator.
#[test]
fn alfresco_refuses_one_node_with_403_without_holding_back_the_others_and_a_401_waits() {
    let s = Recorded::start();
    let base = "/alfresco/api/-default-/public/alfresco/versions/1/nodes";
    let forbidden = alfresco_error(403, "framework.exception.PermissionDenied", "10250003 Permission was denied");
    s.mount(
        Mock::given(method("PUT")).and(path(format!("{base}/locked"))).respond_with(ResponseTemplate::new(403).set_body_json(forbidden)),
    );
    s.mount(
        Mock::given(method("PUT")).and(path(NODES)).respond_with(ResponseTemplate::new(200).set_body_json(node_entry(json!([])))).expect(1),
    );
    let repo = Alfresco {
        base_url: s.url(),
        http: http(),
        credentials: Credentials::new(&AuthConfig::Basic { user: "keyflow".into(), password: "pw".into() }, ""),
    };
    match repo.update_node("locked", &vars(json!({"kf:status": "approved"})), &[], None) {
        Err(CallError::Rejected { status: 403, message, .. }) => assert!(message.contains("Permission was denied"), "{message}"),
        other => panic!("a 403 refuses this node's write-back: {other:?}"),
    }
    repo.update_node("d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", &vars(json!({"kf:status": "approved"})), &[], None).unwrap();

    let s = Recorded::start();
    let failed = alfresco_error(401, "framework.exception.ApiDefault", "10250001 Authentication failed");
    s.mount(Mock::given(method("PUT")).and(path(NODES)).respond_with(ResponseTemplate::new(401).set_body_json(failed)));
    let repo = Alfresco {
        base_url: s.url(),
        http: http(),
        credentials: Credentials::new(&AuthConfig::Basic { user: "keyflow".into(), password: "wrong".into() }, ""),
    };
    match repo.update_node("d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", &Map::new(), &[], None) {
        Err(CallError::Transient { message, .. }) => assert!(message.contains("credentials refused (401)"), "{message}"),
        other => panic!("refused credentials wait for an operator: {other:?}"),
    }
}

#[test]
fn alfresco_ticket_auth_logs_in_again_when_the_ticket_expires_and_a_deleted_node_is_refused() {
    let s = Recorded::start();
    let tickets = "/alfresco/api/-default-/public/authentication/versions/1/tickets";
    s.mount(
        Mock::given(method("POST"))
            .and(path(tickets))
            .and(body_json(json!({"userId": "keyflow", "password": "pw"})))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"entry": {"id": "TICKET_1", "userId": "keyflow"}})))
            .up_to_n_times(1)
            .expect(1),
    );
    s.mount(
        Mock::given(method("POST"))
            .and(path(tickets))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"entry": {"id": "TICKET_2", "userId": "keyflow"}})))
            .expect(1),
    );
    // base64("TICKET_1") and base64("TICKET_2"), as Alfresco documents ticket use.
    let expired = alfresco_error(401, "framework.exception.ApiDefault", "10250001 Authentication failed");
    s.mount(
        Mock::given(method("PUT"))
            .and(path(NODES))
            .and(header("authorization", "Basic VElDS0VUXzE="))
            .respond_with(ResponseTemplate::new(401).set_body_json(expired))
            .expect(1),
    );
    s.mount(
        Mock::given(method("PUT"))
            .and(path(NODES))
            .and(header("authorization", "Basic VElDS0VUXzI="))
            .respond_with(ResponseTemplate::new(200).set_body_json(node_entry(json!([]))))
            .expect(1),
    );
    let gone = alfresco_error(404, "framework.exception.EntityNotFound", "10250002 The entity with id: missing was not found");
    s.mount(
        Mock::given(method("PUT"))
            .and(path("/alfresco/api/-default-/public/alfresco/versions/1/nodes/missing"))
            .respond_with(ResponseTemplate::new(404).set_body_json(gone)),
    );

    let repo = Alfresco {
        base_url: s.url(),
        http: http(),
        credentials: Credentials::new(
            &AuthConfig::Ticket { user: "keyflow".into(), password: "pw".into() },
            &alfresco::ticket_url(&s.url()),
        ),
    };
    repo.update_node("d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", &vars(json!({"kf:status": "rejected"})), &[], None).unwrap();
    match repo.update_node("missing", &Map::new(), &[], None) {
        Err(CallError::Rejected { status: 404, message, .. }) => assert!(message.contains("was not found"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// An event as the Alfresco event gateway publishes it (CloudEvents 1.0, structured JSON).
fn alfresco_event(kind: &str, before: Value) -> Value {
    json!({
        "specversion": "1.0", "type": kind, "id": "368f7ba9-9c1a-4b2f-8f54-2f3cde1b2a10",
        "source": "/08d9b620-48de-4247-8f33-360988d3b19b", "time": "2026-11-25T10:00:00.123Z",
        "dataschema": "https://api.alfresco.com/schema/event/repo/v1/nodeCreated", "datacontenttype": "application/json",
        "data": {
            "eventGroupId": "b5b1ebfe-45fc-4f86-b71b-421996482881",
            "resource": {"@type": "NodeResource", "id": "d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", "primaryHierarchy": ["5f355d16-f824-4173-bf4b-b1ec37ef5549", "93f7edf5-e4d8-4749-9b4c-e45097e2e19d"],
                "name": "invoice.pdf", "nodeType": "cm:content", "createdByUser": {"id": "jdoe", "displayName": "John Doe"}, "createdAt": "2026-11-25T10:00:00.000Z",
                "modifiedByUser": {"id": "asmith", "displayName": "Ann Smith"}, "modifiedAt": "2026-11-25T11:00:00.000+01:00",
                "content": {"mimeType": "application/pdf", "sizeInBytes": 52113, "encoding": "UTF-8"},
                "properties": {"cm:title": "Invoice"}, "aspectNames": ["cm:titled", "cm:auditable"], "isFolder": false, "isFile": true},
            "resourceBefore": before,
            "resourceReaderAuthorities": ["GROUP_EVERYONE"], "resourceDeniedAuthorities": []
        }
    })
}

#[test]
fn alfresco_events_become_document_uploaded_events_that_fit_the_avro_schema() {
    let doc = alfresco::document_uploaded(&alfresco_event("org.alfresco.event.node.Created", Value::Null)).unwrap().expect("a document");
    assert_eq!(
        doc,
        json!({"eventId": "368f7ba9-9c1a-4b2f-8f54-2f3cde1b2a10", "nodeId": "d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", "name": "invoice.pdf",
               "mimeType": "application/pdf", "sizeBytes": 52113, "path": "93f7edf5-e4d8-4749-9b4c-e45097e2e19d/5f355d16-f824-4173-bf4b-b1ec37ef5549",
               "createdBy": "jdoe", "createdAt": 1_795_600_800_000i64, "contentHash": null, "aspects": ["cm:titled", "cm:auditable"]})
    );
    // Through keyflow's Avro serde (Confluent framing, a mock registry) and back, unchanged.
    let schema = apache_avro::Schema::parse_str(include_str!("../schemas/document/DocumentUploaded.v2.avsc")).unwrap();
    let registry =
        Registry::new(&RegistryConfig { url: "mock://connectors-ingest".into(), basic_auth_user_info: None, bearer_auth_token: None })
            .unwrap();
    let serde = AvroSerde::new(registry, Some(schema), SubjectStrategy::TopicName);
    let bytes = serde.serialize("documents.uploaded", false, &doc).expect("the mapped event fits DocumentUploaded v2");
    assert_eq!(serde.deserialize(&bytes).unwrap(), doc);

    // New content: a new upload by whoever modified it, at the modification time.
    let updated = alfresco::document_uploaded(&alfresco_event(
        "org.alfresco.event.node.Updated",
        json!({"content": {"mimeType": "application/pdf", "sizeInBytes": 100}}),
    ))
    .unwrap()
    .unwrap();
    assert_eq!((updated["createdBy"].as_str(), updated["createdAt"].as_i64()), (Some("asmith"), Some(1_795_600_800_000)));
    // Metadata only (keyflow's own write-back among them): not an upload.
    assert_eq!(
        alfresco::document_uploaded(&alfresco_event("org.alfresco.event.node.Updated", json!({"properties": {"kf:status": null}})))
            .unwrap(),
        None
    );
    let mut folder = alfresco_event("org.alfresco.event.node.Created", Value::Null);
    folder["data"]["resource"]["isFile"] = json!(false);
    assert_eq!(alfresco::document_uploaded(&folder).unwrap(), None);
    assert_eq!(alfresco::document_uploaded(&alfresco_event("org.alfresco.event.node.Deleted", Value::Null)).unwrap(), None);
    let mut broken = alfresco_event("org.alfresco.event.node.Created", Value::Null);
    broken["data"]["resource"]["content"].as_object_mut().unwrap().remove("mimeType");
    assert_eq!(alfresco::document_uploaded(&broken).unwrap_err(), "event has no `data.resource.content.mimeType`");
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
        ResponseTemplate::new(403).set_body_json(alfresco_error(403, "framework.exception.ApiDefault", "10250004 Login failed")),
    ));
    s.mount(Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).expect(0));
    let repo = Alfresco {
        base_url: s.url(),
        http: http(),
        credentials: Credentials::new(
            &AuthConfig::Ticket { user: "keyflow".into(), password: "wrong".into() },
            &alfresco::ticket_url(&s.url()),
        ),
    };
    match repo.update_node("d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", &Map::new(), &[], None) {
        Err(CallError::Transient { message, .. }) => assert!(message.contains("credentials refused (403)"), "{message}"),
        other => panic!("a refused login is not this node's refusal: {other:?}"),
    }
}

/// `truncateValues=false` asks for whole values; one still marked `isTruncated` is not an answer
/// keyflow can pass on: that task is not reported, and is asked about again at the next poll.
#[test]
fn camunda8_never_passes_on_a_truncated_answer() {
    let s = Recorded::start();
    s.mount(Mock::given(method("POST")).and(path("/v2/user-tasks/search")).respond_with(ResponseTemplate::new(200).set_body_json(
        json!({"items": [{"userTaskKey": "2251799813690009", "processInstanceKey": "2251799813690001", "state": "COMPLETED"}], "page": {"totalItems": 1}}),
    )));
    s.mount(Mock::given(method("POST")).and(path("/v2/user-tasks/2251799813690009/variables/search")).respond_with(
        ResponseTemplate::new(200).set_body_json(
            json!({"items": [{"name": "comment", "value": "\"a long com", "isTruncated": true}], "page": {"totalItems": 1}}),
        ),
    ));
    let c8 = Camunda8Tasks { base_url: s.url(), http: http(), credentials: Credentials::None, process_id: "keyflow-human-task".into() };
    // Not reported: the task stays open and is asked about again; the page's others are not held back.
    let done = c8.completed(&[Opened { task_id: "2251799813690001".into(), idempotency_key: "node-1:4:0".into() }]).unwrap();
    assert!(done.is_empty(), "{done:?}");
}
