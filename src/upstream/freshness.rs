//! How long an upstream answer stays fresh, judged by HTTP caching rules
//! (`http-cache-semantics`); only the resulting duration leaves this module.

use std::time::{Duration, SystemTime};

#[cfg(test)]
use http::HeaderValue;
use http::{HeaderMap, StatusCode, header};
use http_cache_semantics::{CacheOptions, CachePolicy};

/// Upstream freshness is capped, so that an absurd `max-age` cannot overflow the clock.
pub(super) const MAX_FRESHNESS: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the answer to a GET of `url` with `request` headers stays fresh; `None` when the
/// answer says nothing about freshness (the caller's default applies). A `304` is judged as
/// the `200` it renews.
pub(super) fn fresh_for(
    url: &str,
    request: &HeaderMap,
    response: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if !has_freshness(response) {
        return None;
    }
    let mut req = http::Request::new(());
    if let Ok(uri) = url.parse() {
        *req.uri_mut() = uri;
    }
    *req.headers_mut() = request.clone();
    let mut resp = http::Response::new(());
    *resp.status_mut() = StatusCode::OK;
    *resp.headers_mut() = response.clone();
    let ttl = CachePolicy::new_options(&req, &resp, now, CacheOptions::default())
        .time_to_live(now)
        .min(MAX_FRESHNESS);
    Some(ttl)
}

/// Whether the response is for one user only (`Cache-Control: private`).
pub(super) fn is_private(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("private")
                || d.get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("private="))
        })
}

/// Whether the response states its freshness (`max-age`, `s-maxage` or `Expires`).
fn has_freshness(headers: &HeaderMap) -> bool {
    let cc = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("max-age") || v.contains("s-maxage"));
    cc || headers.contains_key(header::EXPIRES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
        h
    }

    #[test]
    fn private_answers_are_told_apart() {
        assert!(is_private(&headers("private, max-age=60")));
        assert!(is_private(&headers("max-age=60, PRIVATE")));
        assert!(is_private(&headers("private=\"set-cookie\"")));
        assert!(!is_private(&headers("public, max-age=60")));
        assert!(!is_private(&headers("x-private-thing")));
        assert!(!is_private(&HeaderMap::new()));
    }

    #[test]
    fn freshness_comes_from_the_answer_or_is_left_to_the_caller() {
        let now = SystemTime::now();
        let ttl = |h: &HeaderMap| fresh_for("https://x/a", &HeaderMap::new(), h, now);
        assert_eq!(ttl(&HeaderMap::new()), None);
        assert_eq!(ttl(&headers("public")), None);
        assert_eq!(
            ttl(&headers("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(ttl(&headers("no-cache, max-age=600")), Some(Duration::ZERO));
        assert_eq!(
            ttl(&headers("max-age=18446744073709551615")),
            Some(MAX_FRESHNESS)
        );
    }
}
