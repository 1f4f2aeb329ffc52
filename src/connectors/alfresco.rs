//! Alfresco in and out.
//!
//! In: repository events as CloudEvents JSON (`org.alfresco.event.node.Created` / `Updated`, as
//! the Alfresco event gateway publishes them, bridged into Kafka) become `DocumentUploaded`
//! events (`schemas/document/`), keeping the event id as the idempotency key.
//!
//! Out: a workflow's outcome written back to the node's metadata with the public REST API v1,
//! `PUT .../nodes/{id}` (properties, aspects), basic or ticket authentication.

use reqwest::blocking::Client;
use serde_json::{json, Map, Value};

use super::auth::Credentials;
use super::http::CallError;
use super::tasks::parse_millis;

const SERVICE: &str = "alfresco";
const API: &str = "alfresco/api/-default-/public/alfresco/versions/1";

/// Where tickets come from, for [`super::auth::AuthConfig::Ticket`].
pub fn ticket_url(base_url: &str) -> String {
    format!("{}/alfresco/api/-default-/public/authentication/versions/1/tickets", base_url.trim_end_matches('/'))
}

/// The `DocumentUploaded` event (v2 fields) for a repository event, `Ok(None)` for events that
/// are not a document's content arriving: folders, and updates that did not change the content
/// (metadata edits, keyflow's own write-back among them, which must not start a workflow again).
///
/// # Errors
/// The event lacks what a document upload needs; the message names the field.
pub fn document_uploaded(event: &Value) -> Result<Option<Value>, String> {
    let text = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_str).map(str::to_owned);
    let kind = text(event, "/type").ok_or("event has no `type`")?;
    let updated = match kind.as_str() {
        "org.alfresco.event.node.Created" => false,
        "org.alfresco.event.node.Updated" => true,
        _ => return Ok(None),
    };
    let r = event.pointer("/data/resource").ok_or("event has no `data.resource`")?;
    if r.get("isFile").and_then(Value::as_bool) == Some(false) || r.get("isFolder").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    // An update changed the content only if the "before" image carries a content entry.
    if updated && event.pointer("/data/resourceBefore/content").is_none() {
        return Ok(None);
    }
    let need = |path: &str| text(r, path).ok_or_else(|| format!("event has no `data.resource{}`", path.replace('/', ".")));
    let event_id = text(event, "/id").ok_or("event has no `id`")?;
    let created_at = text(r, "/modifiedAt")
        .filter(|_| updated)
        .or_else(|| text(r, "/createdAt"))
        .or_else(|| text(event, "/time"))
        .ok_or("event has no `data.resource.createdAt`")?;
    let created_at = parse_millis(&created_at).ok_or_else(|| format!("`{created_at}` is not an ISO 8601 time"))?;
    let path = r
        .get("primaryHierarchy")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().rev().filter_map(Value::as_str).collect::<Vec<_>>().join("/"))
        .unwrap_or_default();
    let user = if updated { "/modifiedByUser/id" } else { "/createdByUser/id" };
    Ok(Some(json!({
        "eventId": event_id,
        "nodeId": need("/id")?,
        "name": need("/name")?,
        "mimeType": need("/content/mimeType")?,
        "sizeBytes": r.pointer("/content/sizeInBytes").and_then(Value::as_i64).ok_or("event has no `data.resource.content.sizeInBytes`")?,
        "path": path,
        "createdBy": text(r, user).or_else(|| text(r, "/createdByUser/id")).unwrap_or_default(),
        "createdAt": created_at,
        "contentHash": Value::Null,
        "aspects": r.get("aspectNames").cloned().unwrap_or_else(|| json!([])),
    })))
}

/// The repository's REST API.
pub struct Alfresco {
    /// e.g. `http://alfresco:8080`.
    pub base_url: String,
    pub http: Client,
    pub credentials: Credentials,
}

impl Alfresco {
    fn node_url(&self, node_id: &str) -> String {
        format!("{}/{API}/nodes/{node_id}", self.base_url.trim_end_matches('/'))
    }

    /// Sets `properties` and adds `aspects` on the node. `aspectNames` in a PUT replaces the
    /// whole list, so the node's current aspects are read first and kept. Setting the same
    /// values again is harmless: the call is idempotent.
    ///
    /// # Errors
    /// [`CallError`]; a node that no longer exists is `Rejected` (404).
    pub fn update_node(&self, node_id: &str, properties: &Map<String, Value>, aspects: &[String]) -> Result<(), CallError> {
        let url = self.node_url(node_id);
        let mut body = json!({"properties": properties});
        if !aspects.is_empty() {
            let node = self.credentials.send_json(SERVICE, &self.http, || self.http.get(&url).query(&[("include", "aspectNames")]))?;
            let mut names: Vec<String> = node
                .pointer("/entry/aspectNames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            for a in aspects {
                if !names.contains(a) {
                    names.push(a.clone());
                }
            }
            body["aspectNames"] = json!(names);
        }
        self.credentials.send(SERVICE, &self.http, || self.http.put(&url).json(&body)).map(drop)
    }
}
