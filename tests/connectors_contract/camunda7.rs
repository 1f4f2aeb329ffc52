//! Camunda 7.24 REST API: decisions and human tasks as process instances.

use super::*;

#[test]
fn evaluates_with_typed_variables_and_basic_auth() {
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

/// Camunda 7.24 REST API (docs.camunda.org/rest/camunda-bpm-platform/7.24): `GET
/// /history/process-instance`, `POST /process-definition/key/{key}/start`, `GET /task`, `POST
/// /history/task`, `POST /history/variable-instance`, `POST /task/{id}/assignee|complete`. The same
/// calls run against the real engine in tests/camunda7.rs.
#[test]
fn tasks_are_processes_keyed_by_the_idempotency_key_and_read_back_from_the_history() {
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

    let c7 = c7_tasks(&s);
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

/// Which of a page of tasks were cancelled in Cockpit: their process instances finished
/// `EXTERNALLY_TERMINATED` in the history (`HistoricProcessInstanceQueryDto.processInstanceIds`,
/// `HistoricProcessInstanceDto.state`), a row per instance; one that completed is not.
#[test]
fn tasks_whose_process_instance_was_deleted_are_found_in_the_history() {
    let s = Recorded::start();
    s.mount(
        Mock::given(method("POST"))
            .and(path("/engine-rest/history/process-instance"))
            .and(query_param("maxResults", "3"))
            .and(body_json(json!({"processInstanceIds": ["p-1", "p-2", "p-3"], "finished": true})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": "p-2", "businessKey": "node-2:4:0", "processDefinitionKey": "keyflow-human-task", "startTime": "2026-11-25T10:00:00.000+0000",
                 "endTime": "2026-11-25T10:06:00.000+0000", "deleteReason": "wrong document", "state": "EXTERNALLY_TERMINATED"},
                {"id": "p-3", "businessKey": "node-3:4:0", "processDefinitionKey": "keyflow-human-task", "startTime": "2026-11-25T10:00:00.000+0000",
                 "endTime": "2026-11-25T10:07:00.000+0000", "deleteReason": null, "state": "COMPLETED"}
            ])))
            .expect(1),
    );
    let c7 = c7_tasks(&s);
    let asked = ["p-1", "p-2", "p-3"].map(|p| Opened { task_id: p.into(), idempotency_key: format!("key-{p}") });
    let at = "2026-11-25T10:06:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    assert_eq!(
        c7.cancelled(&asked).unwrap(),
        [Cancelled {
            task_id: "p-2".into(),
            reason: "its process instance p-2 was cancelled in Camunda 7 (EXTERNALLY_TERMINATED)".into(),
            at: Some(at)
        }]
    );
}
