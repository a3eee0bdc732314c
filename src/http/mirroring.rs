//! The admin API of mirroring: offline mode, prefetch jobs, and the cached files an air-gap
//! bundle is exported from and imported into.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::access::Admin;
use super::admin::json;
use super::cache::{mirror_name, optional_json};
use crate::app::App;
use crate::auth::admin::entry;
use crate::mirror::{Mirror, PrefetchRequest};
use crate::names::{CrateName, Version};

fn mirror<'a>(app: &'a App, registry: &str) -> Result<&'a Arc<Mirror>, ApiError> {
    let name = mirror_name(app, registry)?;
    Ok(app
        .mirror(name.as_str())
        .expect("mirror_name names a mirror"))
}

/// `GET /-/admin/registries/{registry}/offline`.
pub(super) async fn offline(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
) -> Result<Response, ApiError> {
    let m = mirror(&app, &registry)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "registry": m.name().as_str(), "offline": m.is_offline() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineBody {
    offline: bool,
}

/// `PUT /-/admin/registries/{registry}/offline` with `{"offline": true|false}`: switches
/// offline mode at run time (until the next start, which reads the configuration); audited.
pub(super) async fn set_offline(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let m = mirror(&app, &registry)?;
    let body: OfflineBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body must be {{\"offline\": true|false}}: {e}"))
    })?;
    let was = m.set_offline(body.offline);
    let action = if body.offline {
        "mirror.offline"
    } else {
        "mirror.online"
    };
    let mut e = entry(
        &admin.ctx,
        action,
        Some(m.name().as_str()),
        m.name().as_str(),
    );
    e.outcome = if was == body.offline {
        "ok: no change"
    } else {
        "ok"
    }
    .to_owned();
    app.auth.store().append_audit(&e).await?;
    tracing::info!(registry = %m.name(), offline = body.offline, "offline mode switched");
    Ok(json(
        StatusCode::OK,
        &json!({ "registry": m.name().as_str(), "offline": body.offline }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PrefetchBody {
    #[serde(default)]
    crates: Vec<CrateVersion>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    newest: Option<usize>,
    #[serde(default)]
    pin: bool,
}

#[derive(Deserialize)]
struct CrateVersion {
    name: String,
    version: String,
}

/// `POST /-/admin/registries/{registry}/prefetch`: fetches the listed crate files (and their
/// index files) into the cache as a job (`GET /-/admin/jobs/{id}`); audited.
pub(super) async fn prefetch(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let m = mirror(&app, &registry)?.clone();
    let body: PrefetchBody = optional_json(&body)?;
    let mut req = PrefetchRequest {
        newest: body.newest,
        pin: body.pin,
        ..PrefetchRequest::default()
    };
    for c in &body.crates {
        req.crates
            .push((CrateName::new(&c.name)?, Version::new(&c.version)?));
    }
    for n in &body.names {
        req.names.push(CrateName::new(n)?);
    }
    let id = app.jobs.try_start("prefetch").map_err(|running| {
        ApiError::conflict(format!(
            "a prefetch is running already: GET /-/admin/jobs/{running}"
        ))
    })?;
    let mut e = entry(
        &admin.ctx,
        "cache.prefetch",
        Some(m.name().as_str()),
        &format!("job {id}"),
    );
    e.outcome = format!(
        "started: {} versions, {} names{}",
        req.crates.len(),
        req.names.len(),
        if req.pin { ", pinned" } else { "" }
    );
    if let Err(err) = app.auth.store().append_audit(&e).await {
        app.jobs.end(
            id,
            Err(format!(
                "not started: the audit log cannot be written ({err})"
            )),
        );
        return Err(err.into());
    }
    let task = app.clone();
    tokio::spawn(async move {
        let progress = |done, total, r: &crate::mirror::PrefetchReport| {
            let detail = serde_json::to_value(r).unwrap_or_default();
            task.jobs.prefetch_progress(id, done, total, detail);
        };
        // A panic ends the job as failed instead of leaving it running for good.
        let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            m.prefetch(req, &progress),
        ))
        .await;
        match result {
            Ok(report) => {
                let n = report.fetched + report.cached + report.failed.len() as u64;
                let detail = serde_json::to_value(&report).unwrap_or_default();
                task.jobs.prefetch_progress(id, n, n, detail);
                task.jobs.end(id, Ok(()));
            }
            Err(_) => task.jobs.end(
                id,
                Err("the prefetch stopped unexpectedly (see the log)".into()),
            ),
        }
    });
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({ "job": id, "status": format!("/-/admin/jobs/{id}") }),
    ))
}

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    kind: Option<String>,
}

/// `GET /-/admin/jobs[?kind=prefetch]`: the jobs kept, newest first.
pub(super) async fn jobs(
    _: Admin,
    State(app): State<Arc<App>>,
    Query(q): Query<JobsQuery>,
) -> Response {
    json(
        StatusCode::OK,
        &json!({ "jobs": app.jobs.list(q.kind.as_deref()) }),
    )
}

/// `GET /-/admin/registries/{registry}/cached`: the crate files a mirror holds.
pub(super) async fn cached(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
) -> Result<Response, ApiError> {
    let m = mirror(&app, &registry)?;
    let crates: Vec<serde_json::Value> = m
        .cached_crates()
        .await?
        .into_iter()
        .map(|(n, v)| json!({ "name": n.as_str(), "version": v.as_str() }))
        .collect();
    Ok(json(StatusCode::OK, &json!({ "crates": crates })))
}

/// `PUT /-/admin/registries/{registry}/cached/crates/{name}/{version}`: a crate file from a
/// bundle, with its SHA-256 in `x-cratedock-cksum`.
pub(super) async fn import_crate(
    _: Admin,
    State(app): State<Arc<App>>,
    Path((registry, name, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let m = mirror(&app, &registry)?;
    let name = CrateName::new(&name)?;
    let version = Version::new(&version)?;
    let cksum = headers
        .get("x-cratedock-cksum")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("the x-cratedock-cksum header is missing"))?;
    let added = m.import_crate(&name, &version, body, cksum).await?;
    Ok(json(StatusCode::OK, &json!({ "added": added })))
}

/// `PUT /-/admin/registries/{registry}/cached/index/{name}`: index lines from a bundle, merged
/// into the cached index file.
pub(super) async fn import_index(
    _: Admin,
    State(app): State<Arc<App>>,
    Path((registry, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let m = mirror(&app, &registry)?;
    let name = CrateName::new(&name)?;
    let changed = m.import_index(&name, &body).await?;
    Ok(json(StatusCode::OK, &json!({ "changed": changed })))
}
