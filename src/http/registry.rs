//! Handlers of the Web API of private registries: publish, yank and unyank, owners, search,
//! and the admin's delete of a version.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::access::{Access, Acting, Admin, ApiRead, base_url};
use super::admin::{JsonBody, json as json_response};
use super::cargo::private;
use crate::app::App;
use crate::names::{CrateName, Version};
use crate::net::ConnInfo;
use crate::registry::{OwnersChange, RegistryError};

/// Runs a change to its end even if the client goes away: a change cut off half-way (its
/// index line written, its record not) is what the registry's ordering guards against in a
/// crash, and a client's disconnect must not be a way to cause one.
async fn to_the_end<T: Send + 'static>(
    app: &Arc<App>,
    change: impl std::future::Future<Output = Result<T, RegistryError>> + Send + 'static,
) -> Result<T, ApiError> {
    // Shutdown waits for it too (`App::settle`).
    let in_flight = app.change_started();
    let change = async move {
        let result = change.await;
        drop(in_flight);
        result
    };
    match tokio::spawn(change).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("a registry change failed: {e}"))),
    }
}

fn ok() -> Response {
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// `PUT /{registry}/api/v1/crates/new`: the framed body of `cargo publish`.
pub(super) async fn publish(
    acting: Acting,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let private = private(&app, &registry)?;
    let base = base_url(
        &app,
        req.uri(),
        req.headers(),
        req.extensions().get::<ConnInfo>(),
    )
    .ok();
    let upload = private
        .receive(&acting.caller, req.into_body().into_data_stream())
        .await?;
    let (private, caller) = (private.clone(), acting.caller);
    let published = to_the_end(&app, async move {
        private.publish(&caller, upload, base.as_deref()).await
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "warnings": {
                "invalid_categories": [],
                "invalid_badges": [],
                "other": published.warnings,
            }
        }),
    ))
}

/// `DELETE .../{name}/{version}/yank`.
pub(super) async fn yank(
    acting: Acting,
    State(app): State<Arc<App>>,
    Path((registry, name, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    set_yanked(acting, app, registry, name, version, true).await
}

/// `PUT .../{name}/{version}/unyank`.
pub(super) async fn unyank(
    acting: Acting,
    State(app): State<Arc<App>>,
    Path((registry, name, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    set_yanked(acting, app, registry, name, version, false).await
}

async fn set_yanked(
    acting: Acting,
    app: Arc<App>,
    registry: String,
    name: String,
    version: String,
    yanked: bool,
) -> Result<Response, ApiError> {
    let private = private(&app, &registry)?.clone();
    let name = CrateName::new(&name)?;
    let version = Version::new(&version)?;
    let caller = acting.caller;
    to_the_end(&app, async move {
        private.yank(&caller, &name, &version, yanked).await
    })
    .await?;
    Ok(ok())
}

/// `GET .../{name}/owners`.
pub(super) async fn owners(
    _: Access<ApiRead>,
    State(app): State<Arc<App>>,
    Path((registry, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let private = private(&app, &registry)?;
    let users = private.owners(&CrateName::new(&name)?).await?;
    Ok(json_response(StatusCode::OK, &json!({ "users": users })))
}

/// The body of `cargo owner --add/--remove` (`users`; crates.io also accepts `owners`).
#[derive(Deserialize)]
pub(super) struct OwnersBody {
    users: Option<Vec<String>>,
    owners: Option<Vec<String>>,
}

pub(super) async fn add_owners(
    acting: Acting,
    State(app): State<Arc<App>>,
    Path((registry, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<OwnersBody>,
) -> Result<Response, ApiError> {
    change_owners(acting, app, registry, name, body, OwnersChange::Add).await
}

pub(super) async fn remove_owners(
    acting: Acting,
    State(app): State<Arc<App>>,
    Path((registry, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<OwnersBody>,
) -> Result<Response, ApiError> {
    change_owners(acting, app, registry, name, body, OwnersChange::Remove).await
}

async fn change_owners(
    acting: Acting,
    app: Arc<App>,
    registry: String,
    name: String,
    body: OwnersBody,
    change: OwnersChange,
) -> Result<Response, ApiError> {
    let private = private(&app, &registry)?;
    let name = CrateName::new(&name)?;
    let logins = body.users.or(body.owners).ok_or_else(|| {
        ApiError::bad_request("the body needs `users`: a list of logins (`team:NAME` for a team)")
    })?;
    let (private, caller) = (private.clone(), acting.caller);
    let msg = to_the_end(&app, async move {
        private.change_owners(&caller, &name, &logins, change).await
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "ok": true, "msg": msg }),
    ))
}

#[derive(Deserialize)]
pub(super) struct SearchParams {
    q: Option<String>,
    per_page: Option<String>,
}

/// `GET /{registry}/api/v1/crates?q=&per_page=`.
pub(super) async fn search(
    access: Access<ApiRead>,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let private = private(&app, &registry)?;
    let per_page = match params.per_page.as_deref() {
        None => 10,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request("per_page must be a number from 1 to 100"))?,
    };
    let q = params.q.unwrap_or_default();
    if q.len() > 200 {
        return Err(ApiError::bad_request("the query is longer than 200 bytes"));
    }
    let found = private
        .search(&q, per_page, access.identity.as_deref())
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "crates": found.hits, "meta": { "total": found.total } }),
    ))
}

/// `DELETE /-/admin/registries/{registry}/crates/{name}/{version}`: an admin's delete of a
/// version (legal takedown); audited.
pub(super) async fn delete_version(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path((registry, name, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let private = private(&app, &registry)?.clone();
    let name = CrateName::new(&name)?;
    let version = Version::new(&version)?;
    let ctx = admin.ctx;
    to_the_end(&app, async move {
        private.delete_version(&ctx, &name, &version).await
    })
    .await?;
    Ok(ok())
}
