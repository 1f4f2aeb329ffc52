//! Camunda 8.8 (Orchestration Cluster REST API): decisions, user tasks, OAuth.

use super::*;

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
fn evaluates_with_an_oauth_token_fetched_once_and_reused() {
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
fn names_a_single_output_by_the_matched_rule() {
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
fn refreshes_an_expired_token_once() {
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
fn errors_are_classified_back_pressure_transient_or_refused() {
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
fn tasks_are_created_once_found_completed_and_read_back() {
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

    let c8 = c8_tasks(&s);
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

/// `truncateValues=false` asks for whole values; one still marked `isTruncated` is not an answer
/// keyflow can pass on: that task is not reported, and is asked about again at the next poll.
#[test]
fn never_passes_on_a_truncated_answer() {
    let s = Recorded::start();
    s.mount(Mock::given(method("POST")).and(path("/v2/user-tasks/search")).respond_with(ResponseTemplate::new(200).set_body_json(
        json!({"items": [{"userTaskKey": "2251799813690009", "processInstanceKey": "2251799813690001", "state": "COMPLETED"}], "page": {"totalItems": 1}}),
    )));
    s.mount(Mock::given(method("POST")).and(path("/v2/user-tasks/2251799813690009/variables/search")).respond_with(
        ResponseTemplate::new(200).set_body_json(
            json!({"items": [{"name": "comment", "value": "\"a long com", "isTruncated": true}], "page": {"totalItems": 1}}),
        ),
    ));
    let c8 = c8_tasks(&s);
    // Not reported: the task stays open and is asked about again; the page's others are not held back.
    let done = c8.completed(&[Opened { task_id: "2251799813690001".into(), idempotency_key: "node-1:4:0".into() }]).unwrap();
    assert!(done.is_empty(), "{done:?}");
}

/// Which of a page of tasks were cancelled in Operate: their process instances `TERMINATED`
/// (8.8 `ProcessInstanceSearchQuery`, `ProcessInstanceStateEnum`), a row per instance.
#[test]
fn tasks_whose_process_instance_was_cancelled_are_found_by_one_search() {
    let s = Recorded::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/v2/process-instances/search"))
            .and(body_json(json!({"filter": {"processInstanceKey": {"$in": ["2251799813690001", "2251799813690002"]}, "state": "TERMINATED"},
                                  "page": {"limit": 2}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [
                {"processInstanceKey": "2251799813690002", "processDefinitionId": "keyflow-human-task", "processDefinitionName": "Human task",
                 "processDefinitionVersion": 1, "processDefinitionKey": "2251799813686001", "state": "TERMINATED", "hasIncident": false,
                 "startDate": "2026-11-25T10:00:00.000Z", "endDate": "2026-11-25T10:04:00.000Z", "tenantId": "<default>"}],
                "page": {"totalItems": 1}})))
            .expect(1),
    );
    let c8 = c8_tasks(&s);
    let asked = ["2251799813690001", "2251799813690002"].map(|k| Opened { task_id: k.into(), idempotency_key: format!("key-{k}") });
    let at = "2026-11-25T10:04:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    assert_eq!(
        c8.cancelled(&asked).unwrap(),
        [Cancelled {
            task_id: "2251799813690002".into(),
            reason: "its process instance 2251799813690002 was cancelled in Camunda 8 (TERMINATED)".into(),
            at: Some(at)
        }]
    );
}
