//! Who may read and change what on the HTTP endpoint.
//!
//! - **Host.** A request for the console or data must name this endpoint in its `Host` header:
//!   an IP address, `localhost`, or one of `http.allowed.hosts` (the names it is reached by:
//!   a service name, the peers' names for it). A page on another site that rebinds its own name
//!   to this address (DNS rebinding) sends its own name and is refused, so it cannot read the
//!   console even where no token is set. The probes answer whatever the `Host` (orchestrators
//!   and Prometheus use names of their own; they carry no data).
//! - **Reads.** With `http.auth.token` set, every read of data (the console's `/api/...`,
//!   `/workflows/{id}`) needs the token as a bearer credential; the page and its script hold no
//!   data and load without it. The probes (`/health`, `/ready`, `/metrics`) stay open to
//!   orchestrators and Prometheus: they carry counts, no keys or payloads. Without a token the
//!   console is read-only and its reads are open: keep it on loopback or a private network.
//! - **Changes** (redrive, purge): off unless the token is set. Then a change needs the token and
//!   must come from the console's own page: a browser sends `Sec-Fetch-Site` and `Origin` with
//!   every cross-site request, and either naming another site refuses it, so a page elsewhere
//!   cannot make a logged-in operator's browser act (CSRF). A bearer header is not sent by the
//!   browser on its own either; the two checks guard each other's gaps (older browsers, tools).

use std::net::IpAddr;

use crate::config::Secret;

/// Why a change was refused, with the status to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

/// The headers the decision needs.
pub struct Headers<'a> {
    pub authorization: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

const NEED_TOKEN: &str = "a valid token is needed (Authorization: Bearer <http.auth.token>)";

/// The names a request may give in its `Host` header besides IP addresses and `localhost`.
#[derive(Debug)]
pub struct Hosts(Vec<String>);

impl Hosts {
    /// `configured` (`http.allowed.hosts`; a port given with a name is ignored).
    pub fn new(configured: &[String]) -> Hosts {
        Hosts(configured.iter().map(|h| host_name(&h.to_ascii_lowercase()).to_owned()).collect())
    }

    /// # Errors
    /// A [`Refusal`] (403) for a `Host` this endpoint is not known by.
    pub fn allow(&self, host: Option<&str>) -> Result<(), Refusal> {
        let host = host.unwrap_or_default().to_ascii_lowercase();
        let name = host_name(&host);
        let ip = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok();
        if ip || name == "localhost" || self.0.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(Refusal { status: 403, message: "this endpoint is not known by that Host name (add it to http.allowed.hosts)" })
        }
    }
}

/// The name of `name:port`, `[v6]:port`, `[v6]` or a name alone.
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Allows a read of `path`, or says why not.
///
/// # Errors
/// The [`Refusal`].
pub fn allow_read(token: Option<&Secret>, path: &str, h: &Headers<'_>) -> Result<(), Refusal> {
    let Some(token) = token else { return Ok(()) };
    if matches!(path, "/" | "/index.html") || path.starts_with("/assets/") {
        return Ok(());
    }
    bearer(token, h)
}

fn bearer(token: &Secret, h: &Headers<'_>) -> Result<(), Refusal> {
    let given = h.authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal { status: 401, message: NEED_TOKEN })
    }
}

/// Allows a change, or says why not.
///
/// # Errors
/// The [`Refusal`].
pub fn allow_change(token: Option<&Secret>, h: &Headers<'_>) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal { status: 403, message: "changing data from the console is off: set http.auth.token" });
    };
    if h.sec_fetch_site.is_some_and(|s| s != "same-origin" && s != "none") {
        return Err(Refusal { status: 403, message: "cross-site request refused" });
    }
    if let Some(origin) = h.origin {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if Some(origin_host) != h.host {
            return Err(Refusal { status: 403, message: "cross-site request refused" });
        }
    }
    // A form can post cross-site without a preflight; JSON cannot.
    if !h.content_type.is_some_and(|c| c.starts_with("application/json")) {
        return Err(Refusal { status: 415, message: "changes are JSON requests" });
    }
    bearer(token, h)
}

/// Equal or not, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(auth: Option<&'a str>, site: Option<&'a str>, origin: Option<&'a str>) -> Headers<'a> {
        Headers { authorization: auth, sec_fetch_site: site, origin, host: Some("127.0.0.1:8080"), content_type: Some("application/json") }
    }

    #[test]
    fn changes_need_a_configured_token_the_right_one_and_the_same_origin() {
        let token = Secret::from("s3cret");
        let ok = headers(Some("Bearer s3cret"), Some("same-origin"), Some("http://127.0.0.1:8080"));
        assert_eq!(allow_change(Some(&token), &ok), Ok(()));
        assert_eq!(allow_change(None, &ok).unwrap_err().status, 403, "off without a token");
        assert_eq!(allow_change(Some(&token), &headers(Some("Bearer nope"), Some("same-origin"), None)).unwrap_err().status, 401);
        assert_eq!(allow_change(Some(&token), &headers(None, None, None)).unwrap_err().status, 401);
        let cross = headers(Some("Bearer s3cret"), Some("cross-site"), Some("https://evil.example"));
        assert_eq!(allow_change(Some(&token), &cross).unwrap_err().message, "cross-site request refused");
        let other_origin = headers(Some("Bearer s3cret"), None, Some("http://127.0.0.1:9999"));
        assert_eq!(allow_change(Some(&token), &other_origin).unwrap_err().status, 403);
        let form = Headers { content_type: Some("application/x-www-form-urlencoded"), ..headers(Some("Bearer s3cret"), None, None) };
        assert_eq!(allow_change(Some(&token), &form).unwrap_err().status, 415);
        // A tool (curl) sends neither Sec-Fetch-Site nor Origin.
        assert_eq!(allow_change(Some(&token), &headers(Some("Bearer s3cret"), None, None)), Ok(()));
    }

    #[test]
    fn reads_need_the_token_when_one_is_set_except_the_page_itself() {
        let token = Secret::from("s3cret");
        let none = headers(None, None, None);
        for path in ["/api/dlq", "/api/dlq/0:1", "/api/instances/doc-1", "/api/overview", "/workflows/doc-1", "/api/local"] {
            assert_eq!(allow_read(Some(&token), path, &none).unwrap_err().status, 401, "{path}");
            assert_eq!(allow_read(Some(&token), path, &headers(Some("Bearer s3cret"), None, None)), Ok(()), "{path}");
            assert_eq!(allow_read(None, path, &none), Ok(()), "{path}: open without a token");
        }
        for path in ["/", "/index.html", "/assets/console.js"] {
            assert_eq!(allow_read(Some(&token), path, &none), Ok(()), "{path}");
        }
    }

    #[test]
    fn only_addresses_localhost_and_the_configured_names_are_this_endpoints_hosts() {
        let hosts = Hosts::new(&["keyflow-1".into(), "Console.Example:8443".into()]);
        for ok in ["127.0.0.1:8080", "10.1.2.3", "localhost:8080", "LOCALHOST", "[::1]:8080", "[::1]", "keyflow-1:8080", "console.example"]
        {
            assert_eq!(hosts.allow(Some(ok)), Ok(()), "{ok}");
        }
        for refused in ["evil.example:8080", "127.0.0.1.evil.example", "", "localhost.:8080", "keyflow-2:8080"] {
            assert_eq!(hosts.allow(Some(refused)).unwrap_err().status, 403, "{refused}");
        }
        assert!(hosts.allow(None).is_err(), "no Host, no data");
    }
}
