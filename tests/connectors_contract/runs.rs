//! Contract tests of the calls runs of an instance need, against recorded services whose
//! requests and answers follow the vendors' published specs (as the other modules):
//! withdrawing a task (Camunda 8.8 `rest-api.yaml`: `POST /v2/process-instances/{key}/cancellation`;
//! Camunda 7.24 REST: `DELETE /process-instance/{id}`), a write-back refused for a superseded
//! version (Alfresco `alfresco-core.yaml`: `GET /nodes/{nodeId}`, `cm:versionLabel` in
//! `properties`), and the one rule for which repository events are content changes.

use keyflow::connectors::alfresco::{self, Change};
use keyflow::workflow::definition::InputFilter;

use super::*;

/// Camunda 8.8 `ProblemDetail`.
fn problem(status: u16, title: &str, detail: &str) -> Value {
    json!({"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": "/v2/process-instances/2251799813690001/cancellation"})
}

#[test]
fn camunda8_withdraws_a_task_by_cancelling_its_process_instance_once_or_finds_it_gone() {
    let s = Recorded::start();
    let cancel = "/v2/process-instances/2251799813690001/cancellation";
    s.mount(Mock::given(method("POST")).and(path(cancel)).respond_with(ResponseTemplate::new(204)).up_to_n_times(1));
    s.mount(Mock::given(method("POST")).and(path(cancel)).respond_with(ResponseTemplate::new(404).set_body_json(problem(
        404,
        "NOT_FOUND",
        "Command 'CANCEL' rejected with code 'NOT_FOUND': Expected to cancel a process instance with key '2251799813690001', but no such process was found",
    ))));
    let busy = "/v2/process-instances/2251799813690002/cancellation";
    s.mount(Mock::given(method("POST")).and(path(busy)).respond_with(ResponseTemplate::new(503).set_body_json(problem(
        503,
        "RESOURCE_EXHAUSTED",
        "Expected to handle REST API request, but the broker is out of resources",
    ))));
    let c8 = c8_tasks(&s);
    c8.withdraw("2251799813690001").unwrap();
    c8.withdraw("2251799813690001").expect("already cancelled: withdrawn all the same");
    assert_eq!(s.calls(cancel), ["POST", "POST"]);
    match c8.withdraw("2251799813690002") {
        Err(CallError::BackPressure { .. } | CallError::Transient { .. }) => {}
        other => panic!("back-pressure is retried, not a refusal: {other:?}"),
    }
}

#[test]
fn camunda7_withdraws_a_task_by_deleting_its_process_instance_and_a_gone_one_is_no_error() {
    let s = Recorded::start();
    let instance = "/engine-rest/process-instance/c7d1e0a4-ed37-11f1-9420-02fc00000001";
    s.mount(Mock::given(method("DELETE")).and(path(instance)).respond_with(ResponseTemplate::new(204)).up_to_n_times(1));
    s.mount(Mock::given(method("DELETE")).and(path(instance)).respond_with(ResponseTemplate::new(404).set_body_json(
        json!({"type": "InvalidRequestException", "message": "No process instance found for id 'c7d1e0a4-ed37-11f1-9420-02fc00000001'"}),
    )));
    let c7 = Camunda7Tasks {
        base_url: format!("{}/engine-rest", s.url()),
        http: http(),
        credentials: Credentials::Basic { user: "demo".into(), password: "demo".into() },
        process_key: "keyflow-human-task".into(),
    };
    c7.withdraw("c7d1e0a4-ed37-11f1-9420-02fc00000001").unwrap();
    c7.withdraw("c7d1e0a4-ed37-11f1-9420-02fc00000001").expect("no longer running: withdrawn all the same");
    assert_eq!(s.calls(instance), ["DELETE", "DELETE"]);
}

const NODE: &str = "d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01";
const NODES: &str = "/alfresco/api/-default-/public/alfresco/versions/1/nodes/d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01";

/// `NodeEntry` (`alfresco-core.yaml`) of a versionable document at `version`.
fn node_at(version: &str) -> Value {
    json!({"entry": {"id": NODE, "name": "contract.pdf", "nodeType": "cm:content", "isFile": true, "isFolder": false,
                     "createdAt": "2026-11-25T10:00:00.000+0000", "createdByUser": {"id": "jdoe", "displayName": "John Doe"},
                     "modifiedAt": "2026-11-26T10:00:00.000+0000", "modifiedByUser": {"id": "asmith", "displayName": "Ann Smith"},
                     "parentId": "93f7edf5-e4d8-4749-9b4c-e45097e2e19d",
                     "content": {"mimeType": "application/pdf", "mimeTypeName": "Adobe PDF Document", "sizeInBytes": 52113, "encoding": "UTF-8"},
                     "aspectNames": ["cm:versionable", "cm:titled"],
                     "properties": {"cm:versionLabel": version, "cm:versionType": "MINOR", "cm:title": "Contract"}}})
}

fn repo(s: &Recorded) -> Alfresco {
    Alfresco { base_url: s.url(), http: http(), credentials: Credentials::Basic { user: "admin".into(), password: "admin".into() } }
}

fn approved() -> Map<String, Value> {
    json!({"kf:status": "approved", "kf:route": "manual"}).as_object().unwrap().clone()
}

#[test]
fn alfresco_write_back_of_a_superseded_version_is_refused_after_reading_the_node_and_never_written() {
    let s = Recorded::start();
    s.mount(Mock::given(method("GET")).and(path(NODES)).respond_with(ResponseTemplate::new(200).set_body_json(node_at("1.1"))));
    s.mount(Mock::given(method("PUT")).and(path(NODES)).respond_with(ResponseTemplate::new(200).set_body_json(node_at("1.1"))));
    match repo(&s).update_node(NODE, &approved(), &["kf:workflow".into()], Some("1.0")) {
        Err(CallError::Rejected { status: 409, message, .. }) => {
            assert!(message.starts_with("approval of 1.0 superseded by 1.1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.calls(NODES), ["GET"], "read, and nothing written");
    // An outcome that only adds an aspect is refused the same way.
    match repo(&s).update_node(NODE, &Map::new(), &["kf:approved".into()], Some("1.0")) {
        Err(CallError::Rejected { status: 409, message, .. }) => {
            assert!(message.starts_with("outcome of 1.0 superseded by 1.1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.calls(NODES), ["GET", "GET"], "nothing written");

    // The version it names is the current one: written, the node's aspects kept.
    repo(&s).update_node(NODE, &approved(), &["kf:workflow".into()], Some("1.1")).unwrap();
    assert_eq!(s.calls(NODES), ["GET", "GET", "GET", "PUT"]);
    let put = s.received().into_iter().find(|r| r.method.as_str() == "PUT").unwrap();
    let body: Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(body["aspectNames"], json!(["cm:versionable", "cm:titled", "kf:workflow"]));
}

#[test]
fn alfresco_write_back_without_a_version_or_to_an_unversioned_node_is_not_checked() {
    let s = Recorded::start();
    let mut unversioned = node_at("x");
    unversioned["entry"]["properties"].as_object_mut().unwrap().remove("cm:versionLabel");
    s.mount(Mock::given(method("GET")).and(path(NODES)).respond_with(ResponseTemplate::new(200).set_body_json(unversioned)));
    s.mount(Mock::given(method("PUT")).and(path(NODES)).respond_with(ResponseTemplate::new(200).set_body_json(node_at("1.0"))));
    repo(&s).update_node(NODE, &approved(), &[], None).unwrap();
    assert_eq!(s.calls(NODES), ["PUT"], "no version named: no read");
    repo(&s).update_node(NODE, &approved(), &[], Some("1.0")).unwrap();
    assert_eq!(s.calls(NODES), ["PUT", "GET", "PUT"], "a node without a version label cannot be behind");
}

/// An event as the Alfresco event gateway publishes it (acs-event-model: `data.resourceBefore`
/// holds only the attributes that changed).
fn event(kind: &str, resource: Value, before: Value) -> Value {
    json!({"specversion": "1.0", "type": format!("org.alfresco.event.{kind}"), "id": "368f7ba9-9c1a-4b2f-8f54-2f3cde1b2a10",
           "source": "/08d9b620-48de-4247-8f33-360988d3b19b", "time": "2026-11-25T10:00:00.123Z",
           "data": {"eventGroupId": "b5b1ebfe", "resource": resource, "resourceBefore": before}})
}

fn file() -> Value {
    json!({"@type": "NodeResource", "id": NODE, "name": "contract.pdf", "nodeType": "cm:content", "isFile": true, "isFolder": false,
           "createdByUser": {"id": "jdoe"}, "createdAt": "2026-11-25T10:00:00.000Z", "modifiedByUser": {"id": "asmith"}, "modifiedAt": "2026-11-26T10:00:00.000Z",
           "content": {"mimeType": "application/pdf", "sizeInBytes": 52113}, "properties": {"cm:versionLabel": "1.1"}, "aspectNames": ["cm:versionable"]})
}

#[test]
fn one_rule_tells_content_changes_from_everything_else_for_the_ingest_and_the_workflow_filter() {
    let folder =
        json!({"@type": "NodeResource", "id": "f-1", "name": "Contracts", "nodeType": "cm:folder", "isFile": false, "isFolder": true});
    let cases = [
        (event("node.Created", file(), Value::Null), Some(Change::Created)),
        (
            event("node.Updated", file(), json!({"modifiedAt": "2026-11-25T10:00:00.000Z", "content": {"sizeInBytes": 100}})),
            Some(Change::NewVersion),
        ),
        (event("node.Updated", file(), json!({"@type": "NodeResource", "properties": {"cm:title": "old"}})), None),
        (
            event("node.Updated", file(), json!({"properties": {"kf:status": null, "kf:route": null}, "aspectNames": ["cm:versionable"]})),
            None,
        ),
        (event("node.Updated", file(), json!({"primaryHierarchy": ["a", "b"]})), None),
        (event("node.Deleted", file(), Value::Null), Some(Change::Deleted)),
        (event("node.Created", folder.clone(), Value::Null), None),
        (event("node.Deleted", folder, Value::Null), None),
        (event("assoc.child.Created", json!({"@type": "ChildAssociationResource", "parentId": "p", "childId": NODE}), Value::Null), None),
        (event("permission.Updated", file(), Value::Null), None),
    ];
    let filter = InputFilter::AlfrescoContent;
    for (e, change) in cases {
        assert_eq!(alfresco::content_change(&e).unwrap(), change, "{e}");
        // The workflow's filter keeps exactly the content changes...
        assert_eq!(filter.skips(&e).is_none(), change.is_some(), "{e}");
        // ...and the ingest uploads exactly the new content.
        let uploaded = alfresco::document_uploaded(&e).unwrap();
        assert_eq!(uploaded.is_some(), matches!(change, Some(Change::Created | Change::NewVersion)), "{e}");
    }
    // What the rule cannot read is kept, so the workflow says what is wrong with it.
    assert!(filter.skips(&json!({"id": "x", "data": {}})).is_none());
    assert!(filter.skips(&json!({"type": "org.alfresco.event.node.Created"})).is_none());
}
