//! The instances in a state, as Operate lists them: `GET /api/workflows/{name}/instances?state=
//! &version=&after=&limit=`, paged by instance id over the whole group (each member reads its
//! own partitions' `instances` store; the one asked merges the pages of its peers).

use std::time::Duration;

use serde_json::{json, Value};

use super::{url_query, Console, Reply, JSON};
use crate::runtime::Status;

/// Entries read from the store per step, and steps per request: a page of a rare state is cut
/// short (with a cursor to go on from) rather than scanning every instance in one request.
const STEP: usize = 500;
const STEPS: usize = 20;
const MAX_LIMIT: usize = 200;
const BUDGET: Duration = Duration::from_secs(2);

impl Console {
    pub(super) fn instances_in_state(&self, name: &str, query: &str, status: &Status, forwarded: bool) -> Reply {
        let q = url_query(query);
        let state = q.get("state").filter(|s| !s.is_empty()).cloned();
        let version: Option<u64> = q.get("version").and_then(|v| v.parse().ok());
        let after = q.get("after").cloned().unwrap_or_default();
        let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50).clamp(1, MAX_LIMIT);
        let filter = |i: &Value| {
            i["workflow"] == name
                && state.as_ref().is_none_or(|s| i["state"] == s.as_str())
                && version.is_none_or(|v| i["version"].as_u64().unwrap_or(1) == v)
        };
        let unavailable = |e: String| (503, JSON, json!({"error": e}).to_string().into_bytes());
        let (mut found, mut scanned_to) = match local(status, &after, limit, filter) {
            Ok(f) => f,
            Err(e) => return unavailable(e),
        };
        if !forwarded {
            let path = format!(
                "/api/workflows/{}/instances?{query}",
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
            );
            // Every peer's page or none: a page without one would move the cursor past its
            // instances.
            let mut pages = Vec::new();
            for (peer, page) in self.peers.iter().zip(self.ask_each_peer(&path)) {
                match page {
                    Some(p) if p["instances"].is_array() => pages.push(p),
                    _ => return unavailable(format!("{peer} did not list its instances; ask again")),
                }
            }
            for peer in pages {
                found.extend(peer["instances"].as_array().into_iter().flatten().cloned());
                // A peer that stopped early (see `local`) bounds how far the page is complete.
                if let Some(to) = peer["scannedTo"].as_str() {
                    scanned_to = Some(scanned_to.map_or(to.to_owned(), |s: String| s.min(to.to_owned())));
                }
            }
        }
        found.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        found.dedup_by(|a, b| a["id"] == b["id"]);
        if let Some(to) = &scanned_to {
            found.retain(|i| i["id"].as_str().is_some_and(|id| id <= to.as_str()));
        }
        found.truncate(limit);
        // Where the next page starts: after the last instance shown, or after what was read.
        let next = if found.len() == limit { found.last().and_then(|i| i["id"].as_str()).map(str::to_owned) } else { scanned_to.clone() };
        (200, JSON, json!({"instances": found, "next": next, "scannedTo": scanned_to}).to_string().into_bytes())
    }
}

/// This member's instances after `after` that pass `filter`, at most `limit`, as summaries;
/// with the last key read if it stopped before the end of its stores.
fn local(status: &Status, after: &str, limit: usize, filter: impl Fn(&Value) -> bool) -> Result<(Vec<Value>, Option<String>), String> {
    let mut cursor = after.as_bytes().to_vec();
    let mut out = Vec::new();
    // Well within a peer's 5 s patience.
    let started = std::time::Instant::now();
    for _ in 0..STEPS {
        if started.elapsed() > BUDGET {
            break;
        }
        let page = status.range(crate::workflow::STORE, &cursor, STEP, Duration::from_secs(5))?;
        let full = page.len() == STEP;
        for (k, v) in page {
            cursor = k;
            let Ok(i) = serde_json::from_slice::<Value>(&v) else { continue };
            if filter(&i) {
                let last = i["history"].as_array().and_then(|h| h.last()).map_or(Value::Null, |h| h["at"].clone());
                out.push(json!({"id": i["id"], "version": i["version"].as_u64().unwrap_or(1), "state": i["state"],
                                "step": i["step"], "finished": i["finished"], "since": last}));
                if out.len() == limit {
                    return Ok((out, None));
                }
            }
        }
        if !full {
            return Ok((out, None));
        }
    }
    Ok((out, Some(String::from_utf8_lossy(&cursor).into_owned())))
}
