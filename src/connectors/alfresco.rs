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

/// What a repository event does to a document, as far as a review cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A document arrived (`node.Created` of a file).
    Created,
    /// Its content changed: a new version (`node.Updated` whose "before" image has content).
    NewVersion,
    /// It was deleted (`node.Deleted` of a file).
    Deleted,
}

/// The one rule for which repository events matter to a document workflow, used by the
/// connectors' ingest and by workflows reading repository events raw (`filter =
/// "alfresco-content"` on an input). `Ok(None)` for everything else: folders, metadata edits
/// (keyflow's own write-back among them: Alfresco's "before" image then holds only the changed
/// properties), moves, associations, permissions.
///
/// # Errors
/// The event lacks `type` or, for a node event, `data.resource`.
pub fn content_change(event: &Value) -> Result<Option<Change>, String> {
    let kind = event.pointer("/type").and_then(Value::as_str).ok_or("event has no `type`")?;
    let change = match kind {
        "org.alfresco.event.node.Created" => Change::Created,
        "org.alfresco.event.node.Updated" => Change::NewVersion,
        "org.alfresco.event.node.Deleted" => Change::Deleted,
        _ => return Ok(None),
    };
    let r = event.pointer("/data/resource").ok_or("event has no `data.resource`")?;
    if r.get("isFile").and_then(Value::as_bool) == Some(false) || r.get("isFolder").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    if change == Change::NewVersion && event.pointer("/data/resourceBefore/content").is_none() {
        return Ok(None);
    }
    Ok(Some(change))
}

/// The `DocumentUploaded` event (v2 fields) for a repository event, `Ok(None)` for events that
/// are not a document's content arriving ([`content_change`] says which: a new version is an
/// upload too, a deletion or a metadata edit is not).
///
/// # Errors
/// The event lacks what a document upload needs; the message names the field.
pub fn document_uploaded(event: &Value) -> Result<Option<Value>, String> {
    let text = |v: &Value, path: &str| v.pointer(path).and_then(Value::as_str).map(str::to_owned);
    let updated = match content_change(event)? {
        Some(Change::Created) => false,
        Some(Change::NewVersion) => true,
        Some(Change::Deleted) | None => return Ok(None),
    };
    let r = event.pointer("/data/resource").ok_or("event has no `data.resource`")?;
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

    /// Sets `properties` and adds `aspects` on the node, if it is still at `version` (when
    /// given). `aspectNames` in a PUT replaces the whole list, so the node is read first and its
    /// aspects kept; the same read tells its current version. Setting the same values again is
    /// harmless, and a node at a later version that already holds them is not refused: the call
    /// is idempotent. (The read and the write are two calls: a version that lands between them
    /// is not seen. Alfresco's API has no conditional update.)
    ///
    /// # Errors
    /// [`CallError`]; a node that no longer exists is `Rejected` (404), and so (409) is a node
    /// whose current version is not `version`: the outcome is about content it no longer has.
    pub fn update_node(
        &self,
        node_id: &str,
        properties: &Map<String, Value>,
        aspects: &[String],
        version: Option<&str>,
    ) -> Result<(), CallError> {
        let url = self.node_url(node_id);
        let mut body = json!({"properties": properties});
        if !aspects.is_empty() || version.is_some() {
            let node = self.credentials.send_json(SERVICE, &self.http, || self.http.get(&url).query(&[("include", "aspectNames")]))?;
            let current = node.pointer("/entry/properties/cm:versionLabel").and_then(Value::as_str);
            // A node that already holds these values took this write-back before (a retry after
            // a lost answer, or a repository that versions on property updates).
            let written = !properties.is_empty()
                && properties.iter().all(|(k, v)| node.pointer("/entry/properties").and_then(|p| p.get(k)) == Some(v));
            if let (Some(wanted), Some(current)) = (version, current) {
                if wanted != current && !written {
                    let outcome = match properties.get("kf:status").and_then(Value::as_str) {
                        Some("approved") => "approval",
                        Some("rejected") => "rejection",
                        Some("quarantined") => "quarantine",
                        _ => "outcome",
                    };
                    return Err(CallError::Rejected {
                        service: SERVICE,
                        status: 409,
                        message: format!(
                            "{outcome} of {wanted} superseded by {current}: node `{node_id}` is at version {current} now, so the outcome for {wanted} is not written to it"
                        ),
                    });
                }
            }
            if !aspects.is_empty() {
                let mut names = super::strings(node.pointer("/entry/aspectNames"));
                for a in aspects {
                    if !names.contains(a) {
                        names.push(a.clone());
                    }
                }
                body["aspectNames"] = json!(names);
            }
        }
        self.credentials.send(SERVICE, &self.http, || self.http.put(&url).json(&body)).map(drop)
    }
}
