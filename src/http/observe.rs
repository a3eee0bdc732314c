//! The middleware around every request: request id, tracing span, metrics by matched route,
//! and the one log line of a failed request (with the cause [`ApiError`] carried to it).
//!
//! [`ApiError`]: super::ApiError

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use tracing::Instrument;

use super::ApiError;
use super::error::ErrorCause;
use crate::app::App;
use crate::net::ConnInfo;

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

const REQUEST_ID: &str = "x-request-id";

/// The longest path and query accepted (414 beyond).
const MAX_URL: usize = 8 * 1024;

/// An incoming `x-request-id` is kept when it is short and printable; otherwise one is made.
fn request_id(req: &Request) -> HeaderValue {
    if let Some(v) = req.headers().get(REQUEST_ID)
        && v.len() <= 64
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{:x}-{n:x}", std::process::id()))
        .expect("hex digits are a valid header value")
}

/// The registry of a `/{registry}/...` path: its first segment.
fn span_path_registry(path: &str) -> Option<&str> {
    path.strip_prefix('/')?.split('/').next()
}

pub(super) async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let id = request_id(&req);
    // The registry of a `/{registry}/...` route, for the access log, taken now (the request is
    // handed on below); nothing is copied when the access log is off.
    let registry: Option<String> = route
        .as_deref()
        .filter(|r| r.starts_with("/{registry}/"))
        .filter(|_| tracing::enabled!(target: "cratedock::access", tracing::Level::INFO))
        .and_then(|_| span_path_registry(req.uri().path()))
        .map(str::to_owned);
    let principal = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.principal.clone());
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or_default(),
        method = %req.method(),
        path = req.uri().path(),
        principal = principal.as_deref(),
        // Filled in by the access checks: the user and the token's id, never the token.
        user = tracing::field::Empty,
        token = tracing::field::Empty,
        // Filled in by a mirror: the tier that answered and the cache result.
        tier = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    let version = match req.version() {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "other",
    };
    app.metrics
        .http_versions
        .with_label_values(&[version])
        .inc();
    // No route takes a long URL: cargo's longest are a crate name and a version.
    let too_long = req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().len() > MAX_URL);
    let mut resp = if too_long {
        ApiError::UriTooLong(format!("the URL is longer than {MAX_URL} bytes")).into_response()
    } else {
        next.run(req).instrument(span.clone()).await
    };
    let status = resp.status();
    let route = route.as_deref().unwrap_or("unmatched");
    let m = &app.metrics;
    m.requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        let elapsed_us = started.elapsed().as_micros() as u64;
        let cause = resp.extensions_mut().remove::<ErrorCause>();
        // Logged once, here, where the request ends.
        if let Some(ErrorCause(cause)) = &cause
            && status.is_server_error()
        {
            tracing::warn!(status = status.as_u16(), elapsed_us, cause = %cause, "request failed");
        }
        // The access log: one line per request, under its own target so that it can be
        // turned down alone (`level = "info,cratedock::access=warn"`). The span adds the
        // method, path, request id, user, token id (never the token) and cache result.
        if tracing::enabled!(target: "cratedock::access", tracing::Level::INFO) {
            let bytes = axum::body::HttpBody::size_hint(resp.body()).exact();
            let registry = registry.as_deref();
            tracing::info!(
                target: "cratedock::access",
                status = status.as_u16(),
                route,
                registry,
                bytes,
                elapsed_us,
                refused = cause.as_ref().filter(|_| !status.is_server_error()).map(|c| tracing::field::display(&c.0)),
                "access"
            );
        }
    });
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}
