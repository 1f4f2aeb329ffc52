//! Who may change data from the console: requests that redrive or purge dead letters.
//!
//! Off unless `http.auth.token` is set. Then a change needs the token as a bearer credential and
//! must come from the console's own page: a browser sends `Sec-Fetch-Site` and `Origin` with
//! every cross-site request, and either naming another site refuses it, so a page elsewhere
//! cannot make a logged-in operator's browser act (CSRF). A bearer header is not sent by the
//! browser on its own either; the two checks guard each other's gaps (older browsers, tools).

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
    let given = h.authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        return Err(Refusal { status: 401, message: "a valid token is needed (Authorization: Bearer <http.auth.token>)" });
    }
    Ok(())
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
}
