//! Access checks as extractors: a handler names the permission it needs in its signature
//! (`Access<Read>`, `Admin`), so a route without a check shows in review.
//!
//! The rule this module keeps: the decision is made once, here, and counted once; a refusal
//! says what is wrong and never echoes the token. Sparse-index routes refuse with `401` and
//! cargo's login hint (cargo retries and hints only on `401` there); the Web API and the admin
//! API refuse a bad or insufficient token with `403`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use http::request::Parts;
use http::{HeaderMap, Uri, header};

use super::ApiError;
use crate::app::App;
use crate::auth::admin::Context;
use crate::auth::{AuthError, Denial, Identity};
use crate::index::IndexRequest;
use crate::names::CrateName;
use crate::net::ConnInfo;
use crate::registry::Caller;
use crate::store::{Actor, Permission, now_ms};

/// A permission a handler needs, and how its refusals look.
pub(super) trait Need: Send + Sync + 'static {
    const PERMISSION: Permission;
    /// Sparse-index routes (config.json, index files, downloads) refuse with `401`.
    const SPARSE: bool;
}

/// `read` on a sparse-index route: `config.json`, index files, downloads.
pub(super) struct Read;

impl Need for Read {
    const PERMISSION: Permission = Permission::Read;
    const SPARSE: bool = true;
}

/// `read` on a Web API route (search, and the routes a mirror refuses).
pub(super) struct ApiRead;

impl Need for ApiRead {
    const PERMISSION: Permission = Permission::Read;
    const SPARSE: bool = false;
}

/// Proof that the request may do `N` on its registry (and crate, when the route names one).
/// On a registry without `auth_required`, reads are open.
pub(super) struct Access<N: Need> {
    _need: PhantomData<N>,
    /// Who asked, on a registry that requires auth.
    pub(super) identity: Option<Arc<Identity>>,
}

/// The base URL the client reached cratedock at: the configured public URL, or the scheme of
/// the connection and the Host the client addressed.
pub(super) fn base_url(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    conn: Option<&ConnInfo>,
) -> Result<String, ApiError> {
    if let Some(u) = app.config.public_url() {
        return Ok(u.to_owned());
    }
    let scheme = if conn.is_some_and(|c| c.tls) {
        "https"
    } else {
        "http"
    };
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            ApiError::bad_request("the request has no Host header; set server.public_url")
        })?;
    match authority.parse::<http::uri::Authority>() {
        Ok(a) if !a.as_str().contains('@') => Ok(format!("{scheme}://{}", a.as_str())),
        _ => Err(ApiError::bad_request(
            "the Host header is not a valid host[:port]",
        )),
    }
}

/// The page cargo names in its "token needed" and "token rejected" errors.
pub(super) fn login_url(app: &App, parts: &Parts) -> String {
    let base = base_url(
        app,
        &parts.uri,
        &parts.headers,
        parts.extensions.get::<ConnInfo>(),
    )
    .unwrap_or_default();
    format!("{base}/-/login")
}

/// Resolves who the request is, and puts it in the request's span.
async fn identify(parts: &Parts, app: &App) -> Result<Option<Arc<Identity>>, AuthError> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let principal = parts
        .extensions
        .get::<ConnInfo>()
        .and_then(|c| c.principal.as_ref());
    let who = app.auth.authenticate(authorization, principal).await?;
    if let Some(id) = &who {
        let span = tracing::Span::current();
        if let Some(u) = &id.user {
            span.record("user", &**u);
        }
        if let Some(t) = &id.token_id {
            span.record("token", &**t);
        }
    }
    Ok(who)
}

/// The refusal of `denial`, counted.
fn refuse(app: &App, parts: &Parts, denial: &Denial, sparse: bool) -> ApiError {
    app.auth.count(Err(denial));
    let login = login_url(app, parts);
    match denial {
        Denial::NoToken => ApiError::unauthorized(
            format!("{}; see {login} for how to get one", denial.detail()),
            login,
        ),
        // Not a token at all: unauthenticated, wherever it was sent.
        Denial::Malformed(_) => ApiError::unauthorized(denial.detail(), login),
        _ if sparse => ApiError::unauthorized(denial.detail(), login),
        _ => ApiError::forbidden(denial.detail()),
    }
}

impl<N: Need> FromRequestParts<Arc<App>> for Access<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let open = Self {
            _need: PhantomData,
            identity: None,
        };
        let params = RawPathParams::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
        let Some(registry) = param("registry") else {
            return Err(ApiError::internal(
                "an access check on a route without {registry}",
            ));
        };
        // An unknown registry is answered `404` by the handler; an open one needs nothing.
        if app.auth_required(registry) != Some(true) {
            return Ok(open);
        }
        let identity = match identify(parts, app).await {
            Ok(Some(id)) => id,
            Ok(None) => return Err(refuse(app, parts, &Denial::NoToken, N::SPARSE)),
            Err(AuthError::Denied(d)) => return Err(refuse(app, parts, &d, N::SPARSE)),
            Err(AuthError::Store(e)) => return Err(ApiError::internal(e.to_string())),
        };
        let now = now_ms();
        // The crate a route names matters only to an identity limited to some crates.
        if !identity.allows_every_crate(N::PERMISSION, registry, now) {
            let krate = match (param("name"), param("path")) {
                (Some(name), _) => CrateName::new(name).ok(),
                (None, Some(path)) => match IndexRequest::parse(path) {
                    Ok(IndexRequest::File(name)) => Some(name),
                    _ => None,
                },
                (None, None) => None,
            };
            if !identity.allows(N::PERMISSION, registry, krate.as_ref(), now) {
                let denial = Denial::lacks(N::PERMISSION, registry, krate.as_ref());
                return Err(refuse(app, parts, &denial, N::SPARSE));
            }
        }
        app.auth.count(Ok(()));
        Ok(Self {
            _need: PhantomData,
            identity: Some(identity),
        })
    }
}

/// Who makes a change through the Web API (publish, yank, owners): a token (or a mapped
/// principal) is needed whatever the registry's `auth_required`; what it may do on which
/// crate is the registry's decision, which knows the owners.
pub(super) struct Acting {
    pub(super) caller: Caller,
}

impl FromRequestParts<Arc<App>> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match identify(parts, app).await {
            Ok(Some(identity)) => {
                app.auth.count(Ok(()));
                let ctx = Context {
                    actor: actor_of(&identity),
                    source: source_of(parts),
                };
                Ok(Self {
                    caller: Caller { identity, ctx },
                })
            }
            Ok(None) => Err(refuse(app, parts, &Denial::NoToken, false)),
            Err(AuthError::Denied(d)) => Err(refuse(app, parts, &d, false)),
            Err(AuthError::Store(e)) => Err(ApiError::internal(e.to_string())),
        }
    }
}

fn source_of(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnInfo>()
        .and_then(|c| c.peer)
        .map(|p| p.ip().to_string())
}

/// Proof that the request is an admin's; carries who it is for the audit log.
pub(super) struct Admin {
    pub(super) ctx: Context,
}

fn actor_of(id: &Identity) -> Actor {
    Actor {
        user: id.user.as_deref().map(str::to_owned),
        token: id.token_id.as_deref().map(str::to_owned),
        principal: id.principal.as_deref().map(str::to_owned),
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let source = source_of(parts);
        let (identity, denial) = match identify(parts, app).await {
            Ok(Some(id)) if id.is_admin(now_ms()) => {
                app.auth.count(Ok(()));
                let actor = actor_of(&id);
                return Ok(Self {
                    ctx: Context { actor, source },
                });
            }
            Ok(Some(id)) => {
                let lacks = "`admin` (the admin API needs an admin user's token)".to_owned();
                (Some(id), Denial::Insufficient { lacks })
            }
            Ok(None) => (None, Denial::NoToken),
            Err(AuthError::Denied(d)) => (None, d),
            Err(AuthError::Store(e)) => return Err(ApiError::internal(e.to_string())),
        };
        // A user's refused attempt to change something is worth an audit record. (Refusals of
        // requests without a valid token are only counted: anyone could fill the log with them.)
        if let Some(id) = &identity
            && parts.method != http::Method::GET
            && parts.method != http::Method::HEAD
        {
            let ctx = Context {
                actor: actor_of(id),
                source,
            };
            let action = format!("admin.{}", parts.method.as_str().to_ascii_lowercase());
            let target: String = parts.uri.path().chars().take(200).collect();
            if let Err(e) = app
                .auth
                .record_refusal(&ctx, &action, &target, denial.reason())
                .await
            {
                return Err(ApiError::internal(e.to_string()));
            }
        }
        Err(refuse(app, parts, &denial, false))
    }
}
