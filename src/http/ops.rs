//! Operational routes: Prometheus metrics, health checks, and the login page that cargo's
//! "token needed" hint points at.
//!
//! Health checks are open. `/metrics` is open to loopback clients; others send the configured
//! `auth.metrics_token` or a valid user token as a bearer token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::ApiError;
use super::access::base_url;
use crate::app::App;
use crate::auth::{AuthError, PlainToken};
use crate::net::ConnInfo;

pub(super) async fn metrics(State(app): State<Arc<App>>, req: Request) -> Response {
    let peer = req.extensions().get::<ConnInfo>().and_then(|c| c.peer);
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    if let Err(e) = metrics_allowed(&app, peer, authorization).await {
        return e.into_response();
    }
    app.update_gauges();
    let mut resp = app.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// A request without a connection (in-process, as benches make them) counts as local.
async fn metrics_allowed(
    app: &App,
    peer: Option<std::net::SocketAddr>,
    authorization: Option<HeaderValue>,
) -> Result<(), ApiError> {
    if peer.is_none_or(|p| p.ip().is_loopback()) {
        return Ok(());
    }
    let refused = || {
        ApiError::unauthorized(
            "/metrics needs auth.metrics_token or a user's token as a bearer token",
            String::new(),
        )
    };
    let Some(value) = authorization else {
        return Err(refused());
    };
    if let Some(secret) = &app.config.auth.metrics_token {
        let sent = value.as_bytes().trim_ascii();
        let sent = match sent.iter().position(|&b| b == b' ') {
            Some(i) if sent[..i].eq_ignore_ascii_case(b"bearer") => sent[i..].trim_ascii_start(),
            _ => sent,
        };
        if constant_time_eq(sent, secret.expose().as_bytes()) {
            return Ok(());
        }
    }
    if PlainToken::from_header(value.as_bytes()).is_err() {
        return Err(refused());
    }
    match app.auth.authenticate(Some(value.as_bytes()), None).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) | Err(AuthError::Denied(_)) => Err(refused()),
        Err(AuthError::Store(e)) => Err(ApiError::internal(e.to_string())),
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The process is up and serving HTTP.
pub(super) async fn live() -> &'static str {
    "ok\n"
}

/// Ready to take traffic: started, and not shutting down.
/// `/health/ready`: 503 while draining, and while writes to the data folder fail (a probe
/// write tells when they work again, so readiness comes back without traffic).
pub(super) async fn ready(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if !app.readiness.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    if app.metrics.disk_writable.get() == 0 {
        let dir = app.config.storage.data_dir.join("tmp");
        let probe = tokio::task::spawn_blocking(move || crate::app::writable(&dir)).await;
        if !matches!(probe, Ok(Ok(()))) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: writes to the data folder fail\n",
            );
        }
        app.metrics.disk_writable.set(1);
    }
    (StatusCode::OK, "ready\n")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How to get a token, until a web UI brings self-service: from an admin, then
/// `cargo login`.
pub(super) async fn login(State(app): State<Arc<App>>, req: Request) -> Response {
    let base = base_url(
        &app,
        req.uri(),
        req.headers(),
        req.extensions().get::<ConnInfo>(),
    )
    .unwrap_or_else(|_| "https://cratedock.example".to_owned());
    let contact = match app.config.auth.admin_contact.trim() {
        "" => "your cratedock administrator".to_owned(),
        c => escape(c),
    };
    let mut registries = String::new();
    for name in app.registry_names() {
        let auth = if app.auth_required(name) == Some(true) {
            "needs a token"
        } else {
            "open for reading"
        };
        registries.push_str(&format!(
            "<li><code>{name}</code>: <code>sparse+{base}/{name}/index/</code> ({auth})</li>\n",
            base = escape(&base)
        ));
    }
    let first = app.registry_names().next().unwrap_or("crates-io");
    let env = first.to_ascii_uppercase().replace('-', "_");
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cratedock: getting a token</title></head>
<body style="font-family: sans-serif; max-width: 46em; margin: 2em auto; line-height: 1.5">
<h1>Getting a token for cratedock</h1>
<p>Tokens are issued by {contact}. Ask for one, saying which registries you need and whether
it is for you or for CI (CI tokens are usually read-only). An admin creates it with
<code>cratedock admin token create --user LOGIN</code> and sends it to you; it is shown once.</p>
<h2>Registries here</h2>
<ul>
{registries}</ul>
<h2>Using the token with cargo</h2>
<p>In <code>~/.cargo/config.toml</code> (cargo sends tokens for reads only with a credential
provider configured):</p>
<pre>[registry]
global-credential-providers = ["cargo:token"]

[registries.{first}]
index = "sparse+{base}/{first}/index/"</pre>
<p>Then store the token: <code>cargo login --registry {first}</code> (it asks for the token), or
set <code>CARGO_REGISTRIES_{env}_TOKEN</code> in CI. A mirror of crates.io is used through
<code>[source.crates-io] replace-with = "{first}"</code>.</p>
<p>Never paste a token into a chat, a ticket or a command line that others can see; if one
leaks, ask for it to be revoked.</p>
</body></html>
"#,
        base = escape(&base),
    );
    let mut resp = page.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
