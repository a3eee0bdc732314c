//! The admin API of the supply-chain policy: the advisory database (status, sync now), the
//! advisory report, and curated mirrors' allow-lists.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::access::Admin;
use super::admin::json;
use super::cache::{mirror_name, optional_json};
use crate::app::App;
use crate::auth::admin::entry;
use crate::names::{CrateGlob, RegistryName};
use crate::policy::{Policy, report};
use crate::store::Curated;

/// `GET /-/admin/advisories`: the database in use and the last refresh.
pub(super) async fn status(_: Admin, State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, &app.advisories().status())
}

/// `POST /-/admin/advisories/sync`: refreshes the database now (from `url`, or `path` again);
/// audited. The database in use stays on failure (502).
pub(super) async fn sync(admin: Admin, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    // In its own task: a client that leaves does not cut a refresh off half-way.
    let source = app.advisories().clone();
    let result = tokio::spawn(async move { source.sync().await })
        .await
        .unwrap_or_else(|e| Err(format!("the refresh task failed: {e}")));
    let mut e = entry(&admin.ctx, "advisories.sync", None, "advisory database");
    e.outcome = match &result {
        Ok((o, n)) => format!("ok: {o:?}, {n} advisories"),
        Err(why) => format!("failed: {why}"),
    };
    app.auth.store().append_audit(&e).await?;
    match result {
        Ok((outcome, n)) => Ok(json(
            StatusCode::OK,
            &json!({ "outcome": outcome, "advisories": n }),
        )),
        Err(why) if !app.advisories().configured() => Err(ApiError::not_found(why)),
        Err(why) => Err(ApiError::BadGateway {
            detail: format!(
                "the advisory database was not refreshed (the one in use stays): {why}"
            ),
            cause: why,
        }),
    }
}

/// `GET /-/admin/advisories/report`: every cached and private crate version affected by an
/// advisory that counts under its registry's settings.
pub(super) async fn report(_: Admin, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let mirrors: BTreeMap<RegistryName, &Policy> = app
        .mirrors()
        .map(|m| (m.name().clone(), m.policy().as_ref()))
        .collect();
    let privates: BTreeMap<RegistryName, &Policy> = app
        .privates()
        .map(|p| (p.name().clone(), p.policy().as_ref()))
        .collect();
    let affected = report::build(
        &mirrors,
        app.book().as_ref(),
        &privates,
        app.packages().as_ref(),
    )
    .await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "database": app.advisories().status(), "affected": affected }),
    ))
}

/// `GET /-/admin/registries/{registry}/curated`.
pub(super) async fn curated(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
) -> Result<Response, ApiError> {
    let registry = mirror_name(&app, &registry)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "curated": app.curation().list(&registry),
            "enforced": curated_on(&app, &registry),
        }),
    ))
}

fn curated_on(app: &App, registry: &RegistryName) -> bool {
    app.config
        .registries
        .get(registry.as_str())
        .is_some_and(|r| r.policy().curated)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CurateBody {
    /// A semver requirement the versions served must match.
    req: Option<String>,
}

/// `PUT /-/admin/registries/{registry}/curated/{name}` with an optional `{"req": "^1"}`: adds
/// a crate (or a `prefix-*` pattern) to a mirror's allow-list, or replaces its requirement;
/// audited, in effect at once.
pub(super) async fn curate(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path((registry, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let registry = mirror_name(&app, &registry)?;
    let name = CrateGlob::new(&name)?;
    let body: CurateBody = optional_json(&body)?;
    let req = body
        .req
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if let Some(r) = &req {
        semver::VersionReq::parse(r).map_err(|e| {
            ApiError::bad_request(format!(
                "`{}` is not a version requirement: {e}",
                crate::names::shown(r)
            ))
        })?;
    }
    let entry_ = Curated {
        registry: registry.clone(),
        name,
        req,
    };
    change(&app, &admin, entry_, true).await
}

/// `DELETE /-/admin/registries/{registry}/curated/{name}`.
pub(super) async fn uncurate(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path((registry, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let registry = mirror_name(&app, &registry)?;
    let entry_ = Curated {
        registry,
        name: CrateGlob::new(&name)?,
        req: None,
    };
    change(&app, &admin, entry_, false).await
}

async fn change(app: &App, admin: &Admin, c: Curated, on: bool) -> Result<Response, ApiError> {
    let held = app.curation().changes.lock().await;
    let changed = app.book().set_curated(&c, on).await?;
    app.curation().set(app.book().curated().await?);
    drop(held);
    let action = if on { "curate.add" } else { "curate.remove" };
    let mut e = entry(&admin.ctx, action, Some(c.registry.as_str()), &c.spec());
    e.krate = Some(c.name.to_string());
    e.outcome = if changed { "ok" } else { "ok: no change" }.to_owned();
    app.auth.store().append_audit(&e).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "entry": c.spec(),
            "changed": changed,
            "enforced": curated_on(app, &c.registry),
        }),
    ))
}
