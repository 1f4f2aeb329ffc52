//! Alfresco Content Services: the write-back, its logins, and repository events.

use keyflow::connectors::alfresco;

use super::*;

/// Alfresco's `Error` (`alfresco-core.yaml`, definitions): `statusCode`, `briefSummary`,
/// `stackTrace` and `descriptionURL` required, `errorKey` and `logId` optional.
pub(super) fn alfresco_error(status: u16, key: &str, summary: &str) -> Value {
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
fn write_back_keeps_the_nodes_aspects_with_basic_auth() {
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
fn refuses_one_node_with_403_without_holding_back_the_others_and_a_401_waits() {
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
fn ticket_auth_logs_in_again_when_the_ticket_expires_and_a_deleted_node_is_refused() {
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
fn events_become_document_uploaded_events_that_fit_the_avro_schema() {
    let doc = alfresco::document_uploaded(&alfresco_event("org.alfresco.event.node.Created", Value::Null)).unwrap().expect("a document");
    assert_eq!(
        doc,
        json!({"eventId": "368f7ba9-9c1a-4b2f-8f54-2f3cde1b2a10", "nodeId": "d1e0c1a3-4b5e-4f2a-9a63-7c2f0d6b1e01", "name": "invoice.pdf",
               "mimeType": "application/pdf", "sizeBytes": 52113, "path": "93f7edf5-e4d8-4749-9b4c-e45097e2e19d/5f355d16-f824-4173-bf4b-b1ec37ef5549",
               "createdBy": "jdoe", "createdAt": 1_795_600_800_000i64, "contentHash": null, "aspects": ["cm:titled", "cm:auditable"]})
    );
    // Through keyflow's Avro serde (Confluent framing, a mock registry) and back, unchanged.
    let schema = apache_avro::Schema::parse_str(include_str!("../../schemas/document/DocumentUploaded.v2.avsc")).unwrap();
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
