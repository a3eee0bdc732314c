//! Handlers of the routes cargo uses on a registry: `config.json`, index files, downloads.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::ApiError;
use super::access::{Access, ApiRead, Read, base_url};
use crate::app::App;
use crate::index::{IndexRequest, served_config};
use crate::mirror::{CrateBody, IndexBody, IndexEntry, Lookup, Mirror, Opened};
use crate::names::{CrateName, Version};
use crate::net::ConnInfo;
use crate::registry::{IndexDoc, Private};
use crate::store::Blob;
use crate::store::now_ms;

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const IMMUTABLE_PRIVATE: HeaderValue =
    HeaderValue::from_static("private, max-age=31536000, immutable");
const CRATE_TYPE: HeaderValue = HeaderValue::from_static("application/gzip");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// A registry of either kind.
pub(super) enum Registry<'a> {
    Mirror(&'a Arc<Mirror>),
    Private(&'a Arc<Private>),
}

pub(super) fn registry_named<'a>(app: &'a App, name: &str) -> Result<Registry<'a>, ApiError> {
    if let Some(m) = app.mirror(name) {
        return Ok(Registry::Mirror(m));
    }
    app.private(name).map(Registry::Private).ok_or_else(|| {
        let name: String = name.chars().take(64).collect();
        ApiError::not_found(format!("no registry named `{name}` is configured"))
    })
}

/// The private registry `name`; a mirror gets the error of an API it does not have.
pub(super) fn private<'a>(app: &'a App, name: &str) -> Result<&'a Arc<Private>, ApiError> {
    match registry_named(app, name)? {
        Registry::Private(p) => Ok(p),
        Registry::Mirror(m) => Err(not_on_a_mirror(m)),
    }
}

fn not_on_a_mirror(m: &Mirror) -> ApiError {
    ApiError::not_found(format!(
        "`{}` is a mirror: it serves index files and downloads only; publish, yank, owner and search are not available on it (publish to a private registry with `--registry <name>`)",
        m.name()
    ))
}

/// `config.json` pointing cargo's downloads and API calls back at cratedock.
pub(super) async fn config_json(
    _: Access<Read>,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let name = match registry_named(&app, &registry)? {
        Registry::Mirror(m) => m.name(),
        Registry::Private(p) => p.name(),
    };
    let base = base_url(
        &app,
        req.uri(),
        req.headers(),
        req.extensions().get::<ConnInfo>(),
    )?;
    let auth_required = app.auth_required(&registry) == Some(true);
    let body = served_config(&base, name.as_str(), auth_required);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

pub(super) async fn index_file(
    access: Access<Read>,
    State(app): State<Arc<App>>,
    Path((registry, path)): Path<(String, String)>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let name = match IndexRequest::parse(&path)? {
        // `config.json` has its own route; this arm serves odd spellings that still parse.
        IndexRequest::Config => return config_json(access, State(app), Path(registry), req).await,
        IndexRequest::File(name) => name,
    };
    let not_found =
        || ApiError::not_found(format!("crate `{name}` does not exist in `{registry}`"));
    match registry_named(&app, &registry)? {
        Registry::Mirror(mirror) => {
            // A large file is opened after its lookup; a refresh that replaced it in between
            // sends the request round once more.
            for _ in 0..3 {
                let entry = match mirror.served_index(&name).await? {
                    Lookup::Found(entry) => entry,
                    Lookup::NotFound => return Err(not_found()),
                };
                let shared = app.auth_required(&registry) != Some(true);
                // A pruned file changes as more versions are cached: always revalidated.
                let cache_control = if mirror.serves_only_cached() {
                    NO_CACHE
                } else {
                    mirror_cache_control(&entry, shared)
                };
                let etag = &entry.meta.etag;
                if let Some(resp) = not_modified(etag, &cache_control, &headers) {
                    return Ok(resp);
                }
                let body = match &entry.body {
                    IndexBody::Memory(b) => Blob::Bytes(b.clone()),
                    // Too large for memory: streamed from disk, never read whole.
                    IndexBody::Stored => match mirror.index_body(&name, &entry).await? {
                        Opened::Body(b) => b,
                        Opened::Replaced => continue,
                    },
                };
                return Ok(body_response(&app, body, etag, cache_control));
            }
            Err(ApiError::Unavailable(format!(
                "the index file of `{name}` kept changing while it was read; try again"
            )))
        }
        Registry::Private(private) => match private.index_file(&name).await? {
            Some(doc) => Ok(private_index_response(&app, &doc, &headers)),
            // Never cached anywhere: the crate may be published the next second.
            None => {
                let mut resp = not_found().into_response();
                resp.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
                Ok(resp)
            }
        },
    }
}

/// A private index file: always revalidated (`no-cache`), with its strong ETag.
fn private_index_response(app: &App, doc: &IndexDoc, headers: &HeaderMap) -> Response {
    not_modified(&doc.etag, &NO_CACHE, headers)
        .unwrap_or_else(|| body_response(app, Blob::Bytes(doc.body.clone()), &doc.etag, NO_CACHE))
}

/// A mirror's index file is fresh for as long as its copy is. `shared`: a shared cache (a
/// corporate proxy) may keep it; not when the registry needs a token (the proxy would hand it
/// to clients without one), nor when the upstream said it is private.
fn mirror_cache_control(entry: &IndexEntry, shared: bool) -> HeaderValue {
    let max_age = entry.meta.record.fresh_until_ms.saturating_sub(now_ms()) / 1000;
    let scope = if shared && !entry.meta.record.private {
        "public"
    } else {
        "private"
    };
    HeaderValue::from_str(&format!("{scope}, max-age={max_age}"))
        .expect("digits are a valid header value")
}

/// cratedock's ETag is hex digits in quotes (shared, not copied); a record that holds
/// anything else goes out without one.
fn etag_header(etag: &Bytes) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(etag.clone()).ok()
}

/// `304` when the client holds the file already.
fn not_modified(
    etag: &Bytes,
    cache_control: &HeaderValue,
    headers: &HeaderMap,
) -> Option<Response> {
    let etag = etag_header(etag)?;
    if !if_none_match(headers, &etag) {
        return None;
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, cache_control.clone());
    Some(resp)
}

/// An index body: from memory without a copy, or streamed from disk with its length.
fn body_response(app: &App, body: Blob, etag: &Bytes, cache_control: HeaderValue) -> Response {
    let (len, body) = match body {
        Blob::Bytes(b) => (b.len() as u64, Body::from(b)),
        Blob::Stream { len, body } => (len, Body::from_stream(body)),
    };
    app.metrics
        .bytes_served
        .with_label_values(&["index"])
        .inc_by(len);
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, TEXT_PLAIN);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(etag) = etag_header(etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, cache_control);
    resp
}

/// A crate body that logs and counts its failure: once the status line is out, a failure can
/// only cut the transfer short, which the client sees as a broken download (cargo retries).
/// `from`: where the bytes come from (`disk`, `upstream`); the cause is taken from the error.
fn watched(
    app: &Arc<App>,
    from: &'static str,
    body: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use futures_util::StreamExt;
    let metrics = app.metrics.clone();
    let span = tracing::Span::current();
    body.inspect(move |item| {
        if let Err(e) = item {
            let text = e.to_string();
            let cause = if text.contains("SHA-256") || text.contains("checksum") {
                "checksum"
            } else if text.contains("timed out") || text.contains("timeout") {
                "timeout"
            } else if text.contains("larger than") || text.contains("too large") {
                "too_large"
            } else {
                from
            };
            metrics
                .responses_cut_short
                .with_label_values(&["crate", cause])
                .inc();
            span.in_scope(|| {
                tracing::warn!(cause, error = %e, "crate download cut short after its status was sent");
            });
        }
    })
}

/// RFC 9110 `If-None-Match` with weak comparison.
fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == ours
        })
    })
}

/// Web API routes that no registry has: a mirror says it is one; a private registry names the
/// routes it has.
pub(super) async fn api_unsupported(
    _: Access<ApiRead>,
    State(app): State<Arc<App>>,
    Path((registry, rest)): Path<(String, String)>,
) -> ApiError {
    match registry_named(&app, &registry) {
        Ok(Registry::Mirror(m)) => not_on_a_mirror(m),
        Ok(Registry::Private(_)) => ApiError::not_found(format!(
            "no such API route: /{registry}/api/v1/{} (cargo's publish, yank, owner and search routes are served)",
            rest.chars().take(100).collect::<String>()
        )),
        Err(e) => e,
    }
}

pub(super) async fn download(
    _: Access<Read>,
    State(app): State<Arc<App>>,
    Path((registry, name, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let name = CrateName::new(&name)?;
    let version = Version::new(&version)?;
    let body = match registry_named(&app, &registry)? {
        Registry::Mirror(mirror) => mirror.crate_file(&name, &version).await?,
        Registry::Private(private) => match private.crate_file(&name, &version).await? {
            Some(Blob::Bytes(bytes)) => CrateBody::Memory(bytes),
            Some(Blob::Stream { len, body }) => CrateBody::Stored { len, body },
            None => {
                return Err(ApiError::not_found(format!(
                    "crate `{name}` has no version `{version}` in `{registry}`"
                )));
            }
        },
    };
    let (body, len) = match body {
        CrateBody::Memory(bytes) => {
            let len = bytes.len() as u64;
            (Body::from(bytes), Some(len))
        }
        CrateBody::Stored { len, body } => {
            (Body::from_stream(watched(&app, "disk", body)), Some(len))
        }
        // Without an announced length it goes out chunked.
        CrateBody::Streaming(s) => (Body::from_stream(watched(&app, "upstream", s.body)), s.len),
    };
    if let Some(len) = len {
        app.metrics
            .bytes_served
            .with_label_values(&["crate"])
            .inc_by(len);
    }
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, CRATE_TYPE);
    // A shared cache must not hand a file that needs a token to whoever asks.
    let cache_control = if app.auth_required(&registry) == Some(true) {
        IMMUTABLE_PRIVATE
    } else {
        IMMUTABLE
    };
    h.insert(header::CACHE_CONTROL, cache_control);
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let etag = HeaderValue::from_static("\"abc\"");
        let check = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            if_none_match(&h, &etag)
        };
        assert!(check("\"abc\""));
        assert!(check("W/\"abc\""));
        assert!(check("\"x\", \"abc\""));
        assert!(check("*"));
        assert!(!check("\"abd\""));
        assert!(!if_none_match(&HeaderMap::new(), &etag));
    }
}
